"""tiny.yaml brought up for real at time dilation factor 4 (root): every host's TCP settings and static ARP, the
links K times slower in real time and as configured in virtual time."""

from __future__ import annotations

import json
import os
import re

import pytest

from testbed import EmulatedNetwork, sh
from testbed.leftovers import leftovers
from testbed.nodes import host_sysctls

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

K = 4.0


@pytest.fixture(scope="module")
def tiny_k4(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("tiny-k4") / "run"
    net = EmulatedNetwork("tiny", run_dir=run_dir, controller="none", log=lambda _: None, tdf=K)
    with net:
        yield net
    procs = [(e.pid, e.start_ticks) for e in net.record.entries() if e.kind == "process"]
    assert leftovers(net.run_id, procs) == []


def test_every_host_runs_reno_without_delayed_acks_and_a_k_times_longer_minimum_rto(tiny_k4) -> None:
    for host in tiny_k4.hosts:
        route = sh.run(["ip", "-n", host.netns, "route", "show", tiny_k4.plan.subnet]).stdout
        assert "quickack 1" in route and "congctl reno" in route, route
        assert re.search(r"rto_min (lock )?800ms", route), route  # 200 ms x 4
        got = host.cmd(["sysctl", "-n", "net.ipv4.tcp_congestion_control", "net.ipv4.tcp_rto_min_us",
                        "net.ipv4.tcp_comp_sack_delay_ns", "net.ipv4.tcp_retries2",
                        "net.ipv4.tcp_timestamps"]).split()
        assert got == ["reno", "800000", "4000000", "60", "1"]


@pytest.mark.parametrize("tdf", [1.0, 17.0, 40.0])
def test_the_kernel_takes_every_host_setting_at_high_k(tdf: float) -> None:
    # a setting the kernel refuses at some K stops the bring-up (tcp_retries2 above 255: EINVAL)
    ns = f"tbtest-sysctl-{os.getpid()}"
    sh.run(["ip", "netns", "add", ns])
    try:
        sh.run(sh.in_netns(ns, ["sysctl", "-q", "-w", *host_sysctls(tdf)]))
        got = sh.run(sh.in_netns(ns, ["sysctl", "-n", "net.ipv4.tcp_retries2"])).stdout.split()
        assert got == [str(min(round(15 * tdf), 255))]
    finally:
        sh.run(["ip", "netns", "del", ns])


def test_every_host_knows_every_other_host_s_address_permanently(tiny_k4) -> None:
    plans = tiny_k4.plan.hosts
    for host in plans:
        shown = json.loads(sh.run(["ip", "-n", host.netns, "-j", "neigh", "show"]).stdout or "[]")
        permanent = {(n["dst"], n.get("lladdr")) for n in shown if "PERMANENT" in n.get("state", [])}
        assert permanent == {(o.ip, o.mac) for o in plans if o.name != host.name}, host.name


def test_links_run_k_times_slower_in_real_time_and_as_configured_in_virtual_time(tiny_k4) -> None:
    results = tiny_k4.measure_links()  # raises beyond tolerance, judged in virtual ms
    expected_ms = {"radio-ant1": 2.0, "ant1-dc1": 5.0, "dc1-cloud": 20.0}
    for m in results:
        assert m.tdf == K and abs(m.median_delay_ms - expected_ms[m.link]) <= 0.5 + 0.03 * expected_ms[m.link]
    saved = json.loads((tiny_k4.run_dir / "link_measurements.json").read_text())
    assert saved["meta"]["tdf"] == K
    # ping's round trip is real time: sources-ant1 -> worker-ant1 crosses the radio (2 ms) both ways, x 4
    src, dst = tiny_k4.host_for("sources", "ant1"), tiny_k4.host_for("worker", "ant1")
    out = src.cmd(["ping", "-n", "-q", "-c", "5", "-i", "0.2", dst.ip], timeout_s=30)
    rtt_min_ms = float(re.search(r"= ([\d.]+)/", out).group(1))
    assert 2 * 2.0 * K * 0.97 <= rtt_min_ms <= 2 * 2.0 * K + 2 * 2.0, out  # 16 ms, not the 4 ms undilated
