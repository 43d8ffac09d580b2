"""Checks made before anything is built: root, programs and modules, OVS, a sound option combination.

Each failure is one `PreflightError` whose message says what is wrong and what to do about it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil

from testbed import switches
from testbed.errors import PreflightError
from topologies import Topology

PROGRAMS = {"ip": "iproute2", "tc": "iproute2", "ethtool": "ethtool"}
OVS_PROGRAMS = {"ovs-vsctl": "openvswitch-switch"}
CONTROLLERS = ("osken", "none")


def check(topo: Topology, *, switch: str, controller: str) -> None:
    """Raises PreflightError if this machine or these options cannot build the topology's network."""
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
    modules = ["numpy"] + (["os_ken"] if controller == "osken" else [])
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    if absent:
        pip = {"os_ken": "os-ken", "numpy": "numpy"}
        raise PreflightError(f"missing Python packages: pip install {' '.join(pip[m] for m in absent)} "
                             "(scripts/setup.sh installs them)")
    cyclic = len(topo.links) > len(topo.sites) - 1
    if cyclic and controller == "none":
        raise PreflightError(f"{topo.source}: the links form a cycle, and standalone switches would loop "
                             "broadcasts forever; use --controller osken (shortest-path forwarding)")
    if switch == "ovs":
        switches.ensure_ovs()
