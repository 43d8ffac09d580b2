"""The Mininet classes' commands without building anything: the exact `tc` lines of the netem branch (this
machine's kernel has no netem), the exact `ovs-vsctl` line of the kernel and userspace datapaths (no OVS
kernel module here), the Linux bridge's `ip` lines with STP, the spanning tree worked out in advance, the
qdisc check, the Topo built from a plan, and the measurement's probe spacing and switch-hop fallback."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

import testbed  # noqa: F401  (before Mininet: it keeps logging's logger class)

pytest.importorskip("mininet.net", reason="Mininet (Debian's, linked by scripts/setup.sh)")

from cyclic_topologies import CYCLE, SQUARE  # noqa: E402
from mininet.link import Intf  # noqa: E402

from testbed import sh, shaping  # noqa: E402
from testbed.context import BuildContext  # noqa: E402
from testbed.errors import PreflightError  # noqa: E402
from testbed.links import PlainLink, ShapedIntf, WireLink  # noqa: E402
from testbed.measure import SwitchHop, hop_costs, hop_spreads  # noqa: E402
from testbed.nodes import IpBridge, RecordedOVS  # noqa: E402
from testbed.plan import build_plan  # noqa: E402
from testbed.probes import ProbePlan  # noqa: E402
from testbed.record import CreationRecord  # noqa: E402
from testbed.stp import is_cyclic, plan_stp, spanning_tree, tree_from_states  # noqa: E402
from testbed.topo import TestbedTopo  # noqa: E402
from topologies import LinkShape, load_topology  # noqa: E402


class FakeShell:
    """A node without a shell: the commands Mininet would send it are kept, none runs."""

    def startShell(self, mnopts=None) -> None:  # noqa: N802
        self.pid, self.executed = None, []

    def cmd(self, *args, **_kwargs) -> str:
        self.executed.append(" ".join(str(a) for a in args))
        return ""


class FakeOVS(FakeShell, RecordedOVS):
    isSetup = True  # Mininet's setup would ask a running OVS for its version
    OVSVersion = "3.1"


class FakeBridge(FakeShell, IpBridge):
    pass


class FakeController:
    name, protocol, port = "c0", "tcp", 6653

    def IP(self) -> str:  # noqa: N802
        return "127.0.0.1"


class FakeHost:
    """Just what an interface asks of its node."""

    name, netns, inNamespace = "worker-a", "tbab12-worker-a", False

    def addIntf(self, intf, port=None) -> None:  # noqa: N802
        self.intf = intf


@pytest.fixture
def ctx(tmp_path: Path) -> BuildContext:
    return BuildContext(record=CreationRecord(tmp_path), run_dir=tmp_path, mtu=9000, backend="netem",
                        wire_netns="tbab12-wire", seed=0, spawn=None)  # type: ignore[arg-type]


@pytest.fixture
def commands(monkeypatch) -> list[list[str]]:
    ran: list[list[str]] = []

    def fake_run(argv, **_kwargs):
        ran.append(list(argv))
        return None

    monkeypatch.setattr(sh, "run", fake_run)
    return ran


def test_the_netem_branch_shapes_an_interface_with_these_tc_lines(ctx, commands) -> None:
    shape = LinkShape(delay_ms=5, delay_dev_ms=1, bw_mbps=100, loss_pct=2)
    intf = ShapedIntf("eth0", node=FakeHost(), port=0, ctx=ctx, shape=shape)
    ns = ["ip", "netns", "exec", "tbab12-worker-a"]
    tbf = ns + shlex.split("tc qdisc replace dev eth0 root handle 1: tbf rate 100000000bit burst 24224 latency 50ms")
    netem = ns + shlex.split("tc qdisc replace dev eth0 parent 1:1 handle 10: netem delay 5ms 1ms distribution normal loss 2%")
    assert commands == [ns + shlex.split("ethtool -K eth0 tx off tso off gso off gro off"),
                        ns + shlex.split("ip link set dev eth0 up"), tbf, netem]
    assert [e.kind for e in ctx.record.entries()] == ["qdisc"]  # recorded before the first tc
    commands.clear()
    intf.config(**intf.params)  # what Open vSwitch's start does after add-port: re-shape only
    assert commands == [tbf, netem]


def test_the_wire_branch_leaves_the_delay_to_the_wire(ctx, commands) -> None:
    wire_ctx = BuildContext(**{**ctx.__dict__, "backend": "wire", "mtu": 1500})
    ShapedIntf("eth0", node=FakeHost(), port=0, ctx=wire_ctx, shape=LinkShape(delay_ms=5, bw_mbps=40))
    assert commands[-1][4:] == shlex.split("tc qdisc replace dev eth0 root handle 1: tbf rate 40000000bit burst 24224 latency 50ms")


@pytest.mark.parametrize(("datapath", "type_opt"), [("kernel", ""), ("user", " datapath_type=netdev")])
def test_the_ovs_vsctl_line_of_each_datapath(ctx, datapath: str, type_opt: str) -> None:
    sw = FakeOVS("tabs0", ctx=ctx, dpid=f"{7:016x}", datapath=datapath, failMode="secure",
                 protocols="OpenFlow13", batch=True, inNamespace=False)
    Intf("tabs0p1", node=sw, port=1)
    Intf("tabs0p12", node=sw, port=12)
    sw.start([FakeController()])
    ran: list[str] = []
    RecordedOVS.batchStartup([sw], run=lambda cmd, shell=True: ran.append(cmd) or ("", "", 0))
    assert ran == [
        'ovs-vsctl -- --id=@tabs0c0 create Controller target=\\"tcp:127.0.0.1:6653\\" max_backoff=1000 '
        "-- --if-exists del-br tabs0 -- add-br tabs0 -- set bridge tabs0 controller=[@tabs0c0] "
        "other_config:datapath-id=0000000000000007 fail_mode=secure other-config:disable-in-band=true"
        f"{type_opt} protocols=OpenFlow13 other-config:dp-desc=tabs0 -- set interface tabs0 mtu_request=9000 "
        "-- add-port tabs0 tabs0p1 -- set Interface tabs0p1 ofport_request=1 "
        "-- add-port tabs0 tabs0p12 -- set Interface tabs0p12 ofport_request=12"]
    assert [e.kind for e in ctx.record.entries()] == ["ovs-bridge"]


def test_a_failed_ovs_vsctl_stops_the_build(ctx) -> None:
    from testbed.context import run_checked
    from testbed.errors import CommandError

    with pytest.raises(CommandError, match="exit 1"):
        run_checked("exit 1")


def test_the_linux_bridge_lines_with_stp(ctx, write_yaml) -> None:
    plan = build_plan(load_topology(write_yaml("cyc.yaml", CYCLE)), "ab12")
    tree = plan_stp(plan)
    sw = FakeBridge("tab12s1", ctx=ctx, stp=tree, site="b", inNamespace=False)
    for port in (1, 2, 3):
        Intf(f"tab12s1p{port}", node=sw, port=port)
    assert sw.bridge_commands() == [
        "link add name tab12s1 mtu 9000 type bridge stp_state 1 priority 32769 forward_delay 200 hello_time 100 "
        "max_age 600 ageing_time 30000",
        "link set dev tab12s1p1 master tab12s1",
        "link set dev tab12s1p2 master tab12s1", "link set dev tab12s1p2 type bridge_slave cost 100",
        "link set dev tab12s1p3 master tab12s1", "link set dev tab12s1p3 type bridge_slave cost 200",
        "link set dev tab12s1 up"]


def test_a_cycle_gets_the_tree_that_carries_every_shortest_path(write_yaml) -> None:
    plan = build_plan(load_topology(write_yaml("cyc.yaml", CYCLE)), "ab12")
    assert is_cyclic(plan) and not is_cyclic(build_plan(load_topology("full-edge"), "ab12"))
    tree = plan_stp(plan)
    # a-c (4 ms) is longer than a-b-c (3 ms): the slow trunk is the one blocked
    assert tree.root == "a" and tree.tree == {"a-b", "b-c"}
    assert tree.priority["a"] < min(p for s, p in tree.priority.items() if s != "a")
    # any root gives the same tree here: from c, a is cheaper through b (3 ms) than straight (4 ms)
    assert spanning_tree(plan, "c", {"a": 32768, "b": 32769, "c": 4096}) == tree.tree
    ports = {lk.name: lk for lk in plan.links}
    states = {ports["a-b"].a.ifname: "forwarding", ports["a-b"].b.ifname: "forwarding",
              ports["b-c"].a.ifname: "forwarding", ports["b-c"].b.ifname: "forwarding",
              ports["a-c"].a.ifname: "forwarding", ports["a-c"].b.ifname: "blocking"}
    assert tree_from_states(plan, states) == tree.tree


def test_a_cycle_no_tree_can_carry_is_refused_in_one_line(write_yaml) -> None:
    plan = build_plan(load_topology(write_yaml("square.yaml", SQUARE)), "ab12")
    with pytest.raises(PreflightError) as refused:
        plan_stp(plan)
    message = str(refused.value)
    assert "\n" not in message and "square.yaml" in message and "--controller osken" in message
    assert "a2 -> c2" in message or "a1 -> c2" in message


def test_the_qdisc_check_knows_a_planned_tbf_and_netem_from_anything_else() -> None:
    shape = LinkShape(delay_ms=5, delay_dev_ms=1, bw_mbps=100, loss_pct=2)
    tbf = {"kind": "tbf", "handle": "1:", "root": True, "options": {"rate": 12500000, "burst": 24212}}
    netem = {"kind": "netem", "handle": "10:", "parent": "1:1",  # iproute2 6.1's JSON: seconds, fractions
             "options": {"limit": 1000, "delay": {"delay": 0.005, "jitter": 0.001, "correlation": 0},
                         "loss-random": {"loss": 0.02, "correlation": 0}}}
    assert shaping.qdisc_problem([tbf], shape, "wire") is None
    assert shaping.qdisc_problem([tbf, netem], shape, "netem") is None
    assert "no netem" in shaping.qdisc_problem([tbf], shape, "netem")
    assert "noqueue" in shaping.qdisc_problem([{"kind": "noqueue", "root": True}], shape, "wire")
    assert "none" in shaping.qdisc_problem([], shape, "wire")
    slow = {**tbf, "options": {"rate": 1250000}}
    assert "tbf rate 10 Mbit/s, expected 100" in shaping.qdisc_problem([slow], shape, "wire")
    late = {**netem, "options": {**netem["options"], "delay": {"delay": 0.004, "jitter": 0.001}}}
    assert "netem delay 4 ms" in shaping.qdisc_problem([tbf, late], shape, "netem")
    assert "wire" in shaping.qdisc_problem([tbf, netem], shape, "wire")


def test_the_topo_describes_the_plan_with_its_names_ports_and_link_classes() -> None:
    plan = build_plan(load_topology("tiny"), "ab12")
    topo = TestbedTopo(plan, backend="wire", switch="ovs", datapath="user", controller=True)
    assert topo.hosts() == sorted(h.name for h in plan.hosts)
    assert topo.switches() == ["tab12s0", "tab12s1", "tab12s2"]
    assert topo.nodeInfo("tab12s0")["dpid"] == "0000000000000001"
    assert topo.nodeInfo("worker-ant1")["netns"] == "tbab12-worker-ant1"
    links = {info["link_name"]: info for _, _, info in topo.links(withInfo=True)}
    assert set(links) == {lk.name for lk in plan.links}
    assert links["ant1-dc1"]["cls"] is WireLink and links["local-worker-ant1"]["cls"] is PlainLink
    radio = next(lk for lk in plan.links if lk.name == "radio-ant1")
    assert links["radio-ant1"]["port2"] == radio.b.port_no and links["radio-ant1"]["intfName1"] == "eth0"
    assert links["radio-ant1"]["addr1"] == plan.host("sources-ant1").mac
    netem = TestbedTopo(plan, backend="netem", switch="lxbr")
    assert {info["cls"] for _, _, info in netem.links(withInfo=True)} == {PlainLink}


def test_probes_are_spaced_by_the_jitter_so_that_none_waits_behind_another() -> None:
    probes = ProbePlan(count=100, interval_ms=10, lossy_count=2000, lossy_interval_ms=1)
    assert probes.interval_for(LinkShape(delay_ms=3, delay_dev_ms=3, loss_pct=10)) == 9.0
    assert probes.interval_for(LinkShape(delay_ms=3, delay_dev_ms=0.1, loss_pct=10)) == 1.0
    assert probes.interval_for(LinkShape(delay_ms=3, delay_dev_ms=1)) == 10.0
    assert probes.count_for(LinkShape(delay_ms=3, loss_pct=1)) == 2000 and probes.count_for(None) == 100


def test_a_switch_without_two_hosts_gets_the_median_hop_of_the_others() -> None:
    plan = build_plan(load_topology("tiny"), "ab12")
    hops = [SwitchHop("ant1", "a->b", "worker-ant1", "scheduler-ant1", 0.3, 0.5, 100, 100),
            SwitchHop("ant1", "b->a", "scheduler-ant1", "worker-ant1", 0.5, 0.7, 100, 100)]
    hop_ms, measured = hop_costs(plan, hops)
    assert hop_ms == {"ant1": 0.4, "dc1": 0.4, "cloud": 0.4}
    assert measured == {"ant1": True, "dc1": False, "cloud": False}
    assert hop_spreads(plan, hops) == {"ant1": 0.1, "dc1": 0.1, "cloud": 0.1}  # half of 0.5 - 0.3
    assert hop_spreads(plan, []) == {"ant1": 0.0, "dc1": 0.0, "cloud": 0.0}
    lost = SwitchHop("ant1", "b->a", "scheduler-ant1", "worker-ant1", float("nan"), float("nan"), 100, 0)
    assert hop_costs(plan, [hops[0], lost])[0]["ant1"] == 0.3  # one direction: its cost, but no spread known
    assert hop_spreads(plan, [hops[0], lost]) == {"ant1": 0.0, "dc1": 0.0, "cloud": 0.0}
    assert plan.hop_pair("ant1") is not None and plan.hop_pair("dc1") is None
    assert plan.path_sites("ant1", "cloud") == ("ant1", "dc1", "cloud")


def test_loggers_made_after_mininet_stay_ordinary() -> None:
    """Importing Mininet sets logging's logger class to its own (level 25 and a stream handler on every logger
    created afterwards, so INFO lines vanish and the rest print twice); testbed puts the class back."""
    import logging

    import testbed.net  # noqa: F401

    made = logging.getLogger("tests.made-after-mininet")
    assert type(made) is logging.Logger and made.level == logging.NOTSET and not made.handlers


def test_the_drops_of_ovs_vswitchds_port_sockets_are_read_from_ss_per_socket() -> None:
    from testbed.portcounters import OvsSocket, drops_between, ovs_port_sockets, ovs_socket_drops

    ss = ('Netid Recv-Q Send-Q Local Address:Port Peer Address:PortProcess\n'
          'p_raw 0      0                  *:l3a              *     users:(("ovs-vswitchd",pid=97,fd=40)) '
          'skmem:(r0,rb4194304,t0,tb212992,f0,w0,o0,bl0,d7)\n'
          'p_raw 0      0                  *:l4b              *     users:(("ovs-vswitchd",pid=97,fd=41)) '
          'skmem:(r0,rb4194304,t0,tb212992,f0,w0,o0,bl0,d5)\n'
          'p_raw 0      0                  *:eth0             *     users:(("tcpdump",pid=98,fd=3)) '
          'skmem:(r0,rb212992,t0,tb212992,f0,w0,o0,bl0,d100)\n')
    before = ovs_socket_drops(ss_output=ss)
    assert before == {"*:l3a fd=40": 7, "*:l4b fd=41": 5}  # tcpdump's own drops are not the switch's
    assert ovs_socket_drops({"l4b"}, ss) == {"*:l4b fd=41": 5}  # this run's ports only
    assert ovs_port_sockets({"l3a", "eth0"}, ss) == [OvsSocket("l3a", 97, 40, 7)]  # what the run widens
    assert ovs_socket_drops(ss_output=ss.replace("ovs-vswitchd", "tcpdump")) is None  # no userspace datapath
    # a port's socket reopened (another descriptor) counts from zero; one closed takes its losses with it
    after = {"*:l3a fd=40": 9, "*:l4b fd=44": 3}
    assert drops_between(before, after) == 2 + 3


def test_a_pilots_switch_drops_count_from_the_end_of_its_warm_up(capsys) -> None:
    """The run's start reading is read again once, the first time its clock is past `from_s`, beside the run's
    loop (`at` returns before a slow reading ends; `lost` waits for it); a failed second reading keeps the first; a
    run without sockets, or whole (no `from_s`), never reads again."""
    import threading

    from testbed.portcounters import RunDrops

    first, second = ({"p"}, {"s": 5}), ({"p"}, {"s": 9})
    reads: list[int] = []

    def read(value=second):
        reads.append(1)
        return value

    drops = RunDrops(None, first, from_s=102.0)  # type: ignore[arg-type]
    drops.at(101.999, read)
    assert drops.start == first and not reads
    release = threading.Event()

    def slow_read():
        assert release.wait(10.0)
        return read()

    drops.at(102.0, slow_read)
    assert drops.start == first and drops.from_s is None and not reads  # the loop goes on meanwhile
    release.set()
    drops.settled()
    assert drops.start == second and len(reads) == 1
    drops.at(103.0, read)
    drops.settled()
    assert len(reads) == 1
    failed = RunDrops(None, first, from_s=102.0)  # type: ignore[arg-type]
    failed.at(102.5, lambda: None)
    failed.settled()
    assert failed.start == first and failed.from_s is None

    def broken():
        raise ValueError("unexpected ss line")

    raised = RunDrops(None, first, from_s=102.0)  # type: ignore[arg-type]
    raised.at(102.5, broken)
    raised.settled()
    assert raised.start == first
    assert "second reading failed (ValueError: unexpected ss line); counting from the run's start" in \
        capsys.readouterr().err
    for never in (RunDrops(None, None, from_s=102.0), RunDrops(None, first)):  # type: ignore[arg-type]
        never.at(200.0, read)
    assert len(reads) == 1
