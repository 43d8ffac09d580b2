"""The switch kinds and what they need on this machine: Open vSwitch running (started if it is installed),
its datapath (kernel where the module is loaded, userspace otherwise), a sound switch/controller pair.
The switch classes themselves are Mininet nodes (nodes.py).
"""

from __future__ import annotations

from pathlib import Path

from testbed import sh
from testbed.errors import PreflightError

SWITCH_KINDS = ("ovs", "lxbr")


def controller_for(switch: str, controller: str | None = None) -> str:
    """Returns the controller given, or the one that goes with the switches: none for Linux bridges (they speak
    no OpenFlow), os-ken for Open vSwitch."""
    return controller if controller is not None else ("none" if switch == "lxbr" else "osken")
OVS_CTL = Path("/usr/share/openvswitch/scripts/ovs-ctl")


def ovs_datapath() -> str:
    """Returns 'system' when the openvswitch kernel module is loaded, else 'netdev' (userspace)."""
    return "system" if Path("/sys/module/openvswitch").exists() else "netdev"


def mininet_datapath(datapath: str) -> str:
    """Returns Mininet's name ('kernel', 'user') for an OVS datapath type ('system', 'netdev')."""
    return {"system": "kernel", "netdev": "user"}[datapath]


def ovs_running() -> tuple[bool, str]:
    done = sh.run(["ovs-vsctl", "--timeout=3", "show"], check=False)
    return done.returncode == 0, done.stderr.strip()


def ensure_ovs() -> None:
    """Starts Open vSwitch if it is installed but not running; raises PreflightError when it cannot."""
    ok, why = ovs_running()
    if ok:
        return
    if OVS_CTL.exists():
        sh.run([str(OVS_CTL), "start", "--system-id=random", "--no-mlockall"], check=False, timeout_s=60)
        ok, why2 = ovs_running()
        if ok:
            return
        why = f"{why}; starting it with {OVS_CTL} failed too: {why2}"
    raise PreflightError(f"Open vSwitch is not running and could not be started ({why}); run "
                         "`sudo scripts/setup.sh`, or use --switch lxbr (Linux bridges, no controller)")


def check_switch_kind(kind: str, controller: str) -> None:
    if kind not in SWITCH_KINDS:
        raise PreflightError(f"unknown switch {kind!r}; choose ovs or lxbr")
    if kind == "lxbr" and controller != "none":
        raise PreflightError("--controller osken needs --switch ovs (Linux bridges speak no OpenFlow); "
                             "use --controller none with --switch lxbr")
