"""Checks made before anything is built: root, programs and modules (Mininet among them), OVS, a sound option
combination, and on a cyclic topology without a controller the spanning tree the Linux bridges would use.

Each failure is one `PreflightError` whose message says what is wrong and what to do about it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil

from testbed import stp, switches
from testbed.errors import PreflightError
from testbed.plan import NetworkPlan, build_plan
from topologies import Topology

PROGRAMS = {"ip": "iproute2", "tc": "iproute2", "ethtool": "ethtool", "mnexec": "mininet"}
OVS_PROGRAMS = {"ovs-vsctl": "openvswitch-switch"}
CONTROLLERS = ("osken", "none")
PIP = {"os_ken": "pip install os-ken", "numpy": "pip install numpy",
       "mininet": "apt-get install mininet, linked into the virtualenv"}


def mininet_version() -> str:
    """Returns the version of the Mininet the network is built on ('not installed' without it)."""
    try:
        return str(importlib.import_module("mininet.net").VERSION)
    except ImportError:
        return "not installed"


def check(topo: Topology, *, switch: str, controller: str, plan: NetworkPlan | None = None) -> stp.StpPlan | None:
    """Raises PreflightError if this machine or these options cannot build the topology's network; returns the
    spanning tree the Linux bridges will use on a cyclic topology without a controller (else None)."""
    if os.geteuid() != 0:
        raise PreflightError("the emulated network needs root (namespaces, veths, Open vSwitch): "
                             "run it with sudo")
    if controller not in CONTROLLERS:
        raise PreflightError(f"unknown controller {controller!r}; choose osken or none")
    switches.check_switch_kind(switch, controller)
    needed = PROGRAMS | (OVS_PROGRAMS if switch == "ovs" else {})
    missing = sorted({pkg for prog, pkg in needed.items() if shutil.which(prog) is None})
    if missing:
        raise PreflightError(f"missing programs; install the Debian packages: apt-get install {' '.join(missing)}")
    modules = ["numpy", "mininet"] + (["os_ken"] if controller == "osken" else [])
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    if absent:
        raise PreflightError("missing Python packages: " + "; ".join(f"{m} ({PIP[m]})" for m in absent)
                             + "; scripts/setup.sh sets them up")
    plan = plan or build_plan(topo, "x")
    tree = None
    if stp.is_cyclic(plan) and controller == "none":
        if switch != "lxbr":
            raise PreflightError(f"{topo.source}: the links form a cycle, and standalone Open vSwitch bridges "
                                 "would loop broadcasts forever; use --controller osken (shortest-path "
                                 "forwarding) or --switch lxbr (Linux bridges running STP)")
        tree = stp.plan_stp(plan)
    if switch == "ovs":
        switches.ensure_ovs()
    return tree
