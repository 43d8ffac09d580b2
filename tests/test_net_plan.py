"""The network plan (pure: no root needed): names, addresses, ports, next hops, backend choice."""

from __future__ import annotations

import pytest

from testbed.errors import PreflightError
from testbed.plan import MAX_IFNAME, build_plan
from testbed.shaping import choose_backend, netem_commands, rate_commands
from topologies import load_topology


def test_tiny_plan_hosts_addresses_and_links() -> None:
    plan = build_plan(load_topology("tiny"), "ab12")
    assert [h.name for h in plan.hosts] == ["worker-ant1", "scheduler-ant1", "sources-ant1", "worker-dc1",
                                            "worker-cloud"]
    assert [h.ip for h in plan.hosts] == [f"10.0.0.{i}" for i in range(1, 6)]
    assert plan.host_for("sources", "ant1").netns == "tbab12-sources-ant1"
    kinds = {lk.name: lk.kind for lk in plan.links}
    assert kinds["radio-ant1"] == "radio" and kinds["ant1-dc1"] == "trunk" and kinds["dc1-cloud"] == "trunk"
    radio = next(lk for lk in plan.links if lk.kind == "radio")
    assert radio.shape is not None and radio.shape.delay_ms == 2.0 and radio.shape.bw_mbps == 100.0
    assert [lk.name for lk in plan.shaped_links] == ["radio-ant1", "ant1-dc1", "dc1-cloud"]
    # the hosts a link is measured between cross that link and no other shaped one
    assert [h.name for h in plan.measure_pair(radio)] == ["sources-ant1", "scheduler-ant1"]
    trunk = next(lk for lk in plan.links if lk.name == "dc1-cloud")
    assert [h.name for h in plan.measure_pair(trunk)] == ["worker-dc1", "worker-cloud"]


def test_plan_is_deterministic_and_names_fit_linux() -> None:
    topo = load_topology("full-edge")
    a, b = build_plan(topo, "zz99"), build_plan(topo, "zz99")
    assert a.hosts == b.hosts and a.links == b.links
    names = [e.ifname for lk in a.links for e in (lk.a, lk.b)] + [s.bridge for s in a.switches]
    assert max(len(n) for n in names) <= MAX_IFNAME
    root_names = [e.ifname for lk in a.links for e in (lk.a, lk.b) if e.netns is None]
    assert len(root_names) == len(set(root_names))
    assert len({h.mac for h in a.hosts}) == len(a.hosts) == 17


def test_next_hops_follow_the_shortest_path() -> None:
    plan = build_plan(load_topology("full-edge"), "ab12")
    conf = plan.controller_config()
    ant1, co1 = plan.switch("ant1").dpid, plan.switch("co1").dpid
    cloud_mac = plan.host_for("worker", "cloud").mac
    up = next(lk for lk in plan.links if lk.name == "ant1-co1")
    # ant1 sends cloud-bound frames up its trunk to co1; co1 sends them on towards dc1
    assert conf["next_port"][str(ant1)][cloud_mac] == up.a.port_no
    towards_dc1 = next(lk for lk in plan.links if lk.name == "co1-dc1")
    assert conf["next_port"][str(co1)][cloud_mac] == towards_dc1.a.port_no
    own = plan.host_for("worker", "ant1")
    local = next(lk for lk in plan.links if lk.a.host == own.name)
    assert conf["next_port"][str(ant1)][own.mac] == local.b.port_no
    assert conf["ports"][str(ant1)][str(up.a.port_no)]["link"] == "ant1-co1"


def test_probe_host_for_a_site_without_compute(write_yaml) -> None:
    path = write_yaml("bare.yaml", """
        name: bare
        sites:
          - {name: a1, layer: antenna, radio: {delay_ms: 1}}
          - {name: co, layer: co}
          - {name: dc, layer: dc, compute: {cpu_cores: 1}}
        links:
          - {a: a1, b: co, delay_ms: 1}
          - {a: co, b: dc, delay_ms: 2}
    """)
    plan = build_plan(load_topology(path), "ab12")
    assert plan.site_host("co").name == "probe-co"
    assert plan.site_host("a1").name == "scheduler-a1"


def test_backend_choice_and_tc_commands() -> None:
    assert choose_backend("auto", False, "unknown") == "wire"
    assert choose_backend("auto", True, "ok") == "netem"
    assert choose_backend("wire", True, "ok") == "wire"
    with pytest.raises(PreflightError, match="no netem"):
        choose_backend("netem", False, "Specified qdisc kind is unknown.")
    from topologies import LinkShape
    tbf, netem = netem_commands("p1", LinkShape(delay_ms=5, delay_dev_ms=1, bw_mbps=100, loss_pct=2))
    assert "100000000bit" in tbf and netem[netem.index("delay") + 1:netem.index("delay") + 3] == ["5ms", "1ms"]
    assert netem[netem.index("loss") + 1] == "2%"
    assert rate_commands("p1", LinkShape(delay_ms=5, bw_mbps=40))[0][-5] == "40000000bit"
    # TBF's bucket holds 16 standard frames, and at least two full frames of any MTU
    burst = {mtu: int(rate_commands("p1", LinkShape(delay_ms=5, bw_mbps=40), mtu)[0][-3]) for mtu in (1500, 9000, 65535)}
    assert burst == {1500: 16 * 1514, 9000: 16 * 1514, 65535: 2 * (65535 + 14)}
