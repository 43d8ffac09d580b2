"""Switches: Open vSwitch bridges (kernel datapath if the module is loaded, userspace otherwise) or
Linux bridges; creating one is recorded first, and fails loudly.

OVS bridges speak OpenFlow 1.3 to the run's controller with fail-mode secure, or run standalone
(MAC learning) when there is no controller. Ports get the OpenFlow numbers the plan gave them.
"""

from __future__ import annotations

from pathlib import Path

from testbed import sh
from testbed.errors import PreflightError
from testbed.plan import NetworkPlan, SwitchPlan
from testbed.record import Created, CreationRecord

SWITCH_KINDS = ("ovs", "lxbr")
OVS_CTL = Path("/usr/share/openvswitch/scripts/ovs-ctl")


def ovs_datapath() -> str:
    """Returns 'system' when the openvswitch kernel module is loaded, else 'netdev' (userspace)."""
    return "system" if Path("/sys/module/openvswitch").exists() else "netdev"


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


def _ports(plan: NetworkPlan, sw: SwitchPlan) -> list[tuple[str, int]]:
    ends = [end for link in plan.links for end in (link.a, link.b) if end.switch == sw.site]
    return sorted(((e.ifname, e.port_no) for e in ends), key=lambda p: p[1])  # type: ignore[arg-type,return-value]


def add_ovs_bridge(plan: NetworkPlan, sw: SwitchPlan, record: CreationRecord, datapath: str,
                   controller_port: int | None, mtu: int = 1500) -> None:
    """Creates one OVS bridge with its ports; secure and controlled, or standalone without a controller.

    The ports are veths made at the network's MTU; the bridge's own (internal) interface is asked for it
    too, as OVS would leave it at 1500."""
    record.add(Created("ovs-bridge", sw.bridge))
    argv = ["ovs-vsctl", "--timeout=20", "--", "add-br", sw.bridge, "--", "set", "bridge", sw.bridge,
            f"datapath_type={datapath}", f"other-config:datapath-id={sw.dpid:016x}",
            "other-config:disable-in-band=true", "protocols=OpenFlow13",
            f"fail-mode={'secure' if controller_port else 'standalone'}",
            "--", "set", "interface", sw.bridge, f"mtu_request={mtu}"]
    for ifname, port_no in _ports(plan, sw):
        argv += ["--", "add-port", sw.bridge, ifname, "--", "set", "interface", ifname, f"ofport_request={port_no}"]
    if controller_port:
        argv += ["--", "set-controller", sw.bridge, f"tcp:127.0.0.1:{controller_port}",
                 "--", "set", "controller", sw.bridge, "max_backoff=1000"]
    sh.run(argv)


def add_linux_bridge(plan: NetworkPlan, sw: SwitchPlan, record: CreationRecord, mtu: int = 1500) -> list[str]:
    """Returns the `ip` batch lines making a Linux bridge at an MTU and enslaving its ports (recorded first)."""
    record.add(Created("lx-bridge", sw.bridge))
    lines = [f"link add name {sw.bridge} mtu {mtu} type bridge forward_delay 0 stp_state 0 ageing_time 30000"]
    lines += [f"link set dev {ifname} master {sw.bridge}" for ifname, _ in _ports(plan, sw)]
    lines.append(f"link set dev {sw.bridge} up")
    return lines


def check_switch_kind(kind: str, controller: str) -> None:
    if kind not in SWITCH_KINDS:
        raise PreflightError(f"unknown switch {kind!r}; choose ovs or lxbr")
    if kind == "lxbr" and controller != "none":
        raise PreflightError("--controller osken needs --switch ovs (Linux bridges speak no OpenFlow); "
                             "use --controller none with --switch lxbr")
