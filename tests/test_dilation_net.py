"""Time dilation on the network side, against hand-computed values (no root): the tc lines, the wire's timing, the
hosts' TCP settings, link measurements judged in virtual time, the controller's rates, the network events' times
and the pcap rewrite to virtual time."""

from __future__ import annotations

import json
import struct
import time
import types
from pathlib import Path

import numpy as np
import pytest

import run_testbed
from testbed import events, measure, shaping
from testbed.mncli import dilation_banner
from testbed.nodes import host_sysctls, local_drop_note, static_arp_lines, subnet_route_line, tcp_retries2
from testbed.pcaptime import MAGIC_NS, MAGIC_US, PcapError, rewrite
from testbed.plan import build_plan
from testbed.probes import ProbePlan, ProbeStream
from testbed.wire import WireSpec, _Direction
from topologies import LinkShape, load_topology
from topologies.events import LinkEvent
from topologies.timescale import TimeScale

RADIO = LinkShape(delay_ms=4, delay_dev_ms=1, bw_mbps=400)


def test_tbf_at_k25_runs_the_radio_at_a_25th_of_its_rate_with_the_nominal_burst_and_a_25_times_longer_queue() -> None:
    # 400 Mbit/s / 25 = 16 Mbit/s; burst = 1 ms of the NOMINAL rate = 400e6 / 8 * 0.001 = 50 000 bytes (more than
    # the 16 x 1514 = 24 224 floor; 1 ms of the dilated rate would be 2 000); latency 50 ms x 25 = 1250 ms.
    tbf = shaping._tbf("eth0", RADIO, 9000, 25)
    assert " ".join(tbf[9:]) == "rate 16000000bit burst 50000 latency 1250ms"
    assert " ".join(shaping._tbf("eth0", RADIO, 9000)[9:]) == "rate 400000000bit burst 50000 latency 50ms"


def test_netem_at_k10_holds_frames_ten_times_the_delay_and_jitter() -> None:
    tbf, netem = shaping.netem_commands("eth0", RADIO, 1500, 10)
    assert netem[netem.index("delay"):] == ["delay", "40ms", "10ms", "distribution", "normal"]
    assert tbf[tbf.index("rate") + 1] == "40000000bit"
    lossy = shaping.commands("eth0", LinkShape(delay_ms=3, bw_mbps=100, loss_pct=2), "netem", 1500, 4)[1]
    assert lossy[lossy.index("delay"):] == ["delay", "12ms", "loss", "2%"]  # loss is a share, not a time


def test_an_interface_of_a_dilated_network_is_shaped_with_the_dilated_lines(tmp_path: Path, monkeypatch) -> None:
    from testbed import sh
    from testbed.context import BuildContext
    from testbed.links import ShapedIntf
    from testbed.record import CreationRecord

    ran: list[list[str]] = []
    monkeypatch.setattr(sh, "run", lambda argv, **_kw: ran.append(list(argv)))
    host = types.SimpleNamespace(name="sources-ant1", netns=None, inNamespace=False,
                                 addIntf=lambda intf, port=None: None)
    ctx = BuildContext(record=CreationRecord(tmp_path), run_dir=tmp_path, mtu=9000, backend="netem",
                       wire_netns="w", seed=0, spawn=None, tdf=25)  # type: ignore[arg-type]
    ShapedIntf("eth0", node=host, port=0, ctx=ctx, shape=RADIO)
    assert ran[-2][ran[-2].index("rate"):] == ["rate", "16000000bit", "burst", "50000", "latency", "1250ms"]
    assert ran[-1][ran[-1].index("delay"):] == ["delay", "100ms", "25ms", "distribution", "normal"]


def test_the_qdisc_check_expects_the_dilated_shape() -> None:
    tbf = {"kind": "tbf", "root": True, "options": {"rate": 16e6 / 8}}  # tc -j: bytes per second
    netem = {"kind": "netem", "options": {"delay": {"delay": 0.1, "jitter": 0.025}}}  # seconds
    assert shaping.qdisc_problem([tbf, netem], RADIO, "netem", 25) is None
    assert "expected 400" in shaping.qdisc_problem([tbf, netem], RADIO, "netem")
    nominal = {"kind": "tbf", "root": True, "options": {"rate": 400e6 / 8}}
    assert "expected 16" in shaping.qdisc_problem([nominal], RADIO, "wire", 25)


def test_the_wire_holds_frames_k_times_the_delay_and_judges_bursts_at_the_dilated_rate() -> None:
    def direction(tdf: float) -> _Direction:
        return _Direction(WireSpec("radio", "a", "b", RADIO, tdf=tdf), None, None, "a->b",  # type: ignore[arg-type]
                          np.random.default_rng(0))
    d1, d25 = direction(1.0), direction(25.0)
    assert (d1.delay_ns, d1.dev_ns, d1.ns_per_byte) == (4_000_000, 1_000_000, 30.0)  # 1.5 x 8000 / 400
    assert (d25.delay_ns, d25.dev_ns, d25.ns_per_byte) == (100_000_000, 25_000_000, 750.0)  # 1.5 x 8000 / 16
    d25.reshape(LinkShape(delay_ms=10, bw_mbps=100))  # a network event: the new shape dilated too
    assert (d25.delay_ns, d25.dev_ns, d25.ns_per_byte) == (250_000_000, 0.0, 3000.0)
    # lateness is measured in real time and reported in virtual microseconds beside K
    d25.late_counts[5] = 1  # one frame 50-60 us late (real)
    stats = d25.finish()
    assert (stats.tdf, stats.late_p50_us, stats.late_max_us) == (25.0, 2.0, 2.0)
    assert WireSpec.from_json(json.loads(json.dumps({"name": "x", "if_a": "a", "if_b": "b", "seed": 1, "tdf": 4.0,
                                                     "shape": {"delay_ms": 1.0, "bw_mbps": 10.0}}))).tdf == 4.0


def test_the_wire_keeps_when_its_frames_were_due_and_which_left_late() -> None:
    sent: list[bytes] = []
    tx = types.SimpleNamespace(send=sent.append)
    d = _Direction(WireSpec("radio", "a", "b", RADIO, tdf=4.0), None, tx, "b->a",  # type: ignore[arg-type]
                   np.random.default_rng(0))
    s = 1_000_000_000
    d.queue.extend([(10 * s + 100, b"x"), (10 * s + 200, b"y"), (11 * s, b"z")])
    d.acks.append((10 * s + 150, b"ack"))
    assert d.send_due(10 * s + 1_000_100) == 11 * s  # the first three at most 1 ms real late: 250 virtual us
    assert d.send_due(11 * s + 1_000_000 + 20_000) is None  # 1.02 ms real late: 255 virtual us
    assert sent == [b"x", b"ack", b"y", b"z"]
    stats = d.finish()
    # per second: frames due, then how many left later than 250, 500, 1000, 2000 and 5000 virtual us
    assert stats.sent_per_s == [[10, 3, 0, 0, 0, 0, 0], [11, 1, 1, 0, 0, 0, 0]]
    assert stats.late_events == [[11000.0, 255.0]]  # due epoch ms (real), virtual us


def test_every_host_gets_reno_and_tcp_timers_k_times_linux_s_at_k25() -> None:
    assert host_sysctls(25)[-5:] == ["net.ipv4.tcp_congestion_control=reno", "net.ipv4.tcp_rto_min_us=5000000",
                                     "net.ipv4.tcp_comp_sack_delay_ns=25000000",
                                     "net.ipv4.tcp_comp_sack_slack_ns=2500000", "net.ipv4.tcp_retries2=255"]
    assert "net.ipv4.tcp_retries2=150" in host_sysctls(10)  # 15 x K up to the kernel's 255
    assert [tcp_retries2(k) for k in (0.01, 1, 17, 18)] == [1, 15, 255, 255]
    assert local_drop_note(17) is None and "gives up after 7.1 virtual s" in local_drop_note(18)
    assert "gives up after 3.2 virtual s" in local_drop_note(40)  # 255 x 0.5 s real / 40
    # K = 1: Linux's own values, reno still
    assert {"net.ipv4.tcp_rto_min_us=200000", "net.ipv4.tcp_retries2=15"} <= set(host_sysctls())
    assert subnet_route_line("10.0.0.0/16", "eth0", "10.0.0.3", 25) == (
        "route replace 10.0.0.0/16 dev eth0 proto kernel scope link src 10.0.0.3 initcwnd 64 initrwnd 64 "
        "quickack 1 rto_min 5000ms congctl reno")
    assert subnet_route_line("10.0.0.0/16", "eth0", "10.0.0.3").endswith("quickack 1 rto_min 200ms congctl reno")
    assert static_arp_lines("eth0", [("10.0.0.2", "02:00:00:00:00:02")]) == [
        "neigh replace 10.0.0.2 lladdr 02:00:00:00:00:02 dev eth0 nud permanent"]


def test_links_are_probed_at_the_plan_s_virtual_pace_and_judged_in_virtual_ms() -> None:
    plan = build_plan(load_topology("tiny"), "ab12", "10.0.0.0/16")
    radio = next(lk for lk in plan.shaped_links if lk.kind == "radio")  # tiny: 2 ms, no jitter
    assert ProbePlan().interval_for(radio.shape, 10) == 100.0  # 10 ms virtual
    assert ProbePlan().interval_for(RADIO, 10) == 100.0  # max(10, 3 x 1 ms) x 10
    assert ProbePlan().interval_for(LinkShape(delay_ms=4, delay_dev_ms=5, bw_mbps=1), 10) == 150.0
    real_ns = [20_000_000 + k * 10_000 for k in range(100)]  # 20.00-20.99 ms real at K 10: 2.0-2.099 virtual
    stream = ProbeStream(radio, "ant1", "a->b", "x", "y", None, None, 100, 100_000_000,  # type: ignore[arg-type]
                         real_ns, tdf=10.0)
    m = measure.judge(stream, measure.Tolerance(), {"ant1": 0.05})  # the switch hop, already virtual
    assert (m.median_delay_ms, m.tdf, m.switch_share_ms, m.ok) == (2.05, 10.0, 0.05, True)
    assert abs(m.shaping_error_ms) < 1e-9
    hop = measure.hop(ProbeStream(None, "ant1", "a->b", "x", "y", None, None, 1, 1,  # type: ignore[arg-type]
                                 [400_000], tdf=4.0))
    assert hop.median_delay_ms == 0.1  # 0.4 ms real / 4
    assert "time dilation factor 10" in measure.format_table([m])
    # A switch hop 1.3 ms one way and 0.8 the other (mean 1.05) leaves the link's shaping error uncertain by
    # 0.25 ms: the tolerance (0.5 + 3 % of 2 ms) widens by that, no more.
    late = ProbeStream(radio, "ant1", "a->b", "x", "y", None, None, 100, 100_000_000,  # type: ignore[arg-type]
                       [int((2.0 + 1.05 + 0.7) * 1e7)] * 100, tdf=10.0)  # 0.7 ms above configured + hop
    assert not measure.judge(late, measure.Tolerance(), {"ant1": 1.05}).ok
    widened = measure.judge(late, measure.Tolerance(), {"ant1": 1.05}, {"ant1": 0.25})
    assert (widened.ok, widened.tolerance_delay_ms, widened.switch_spread_ms) == (True, 0.81, 0.25)
    late.delays_ns = [int((2.0 + 1.05 + 0.85) * 1e7)] * 100
    assert not measure.judge(late, measure.Tolerance(), {"ant1": 1.05}, {"ant1": 0.25}).ok
    trunk = next(lk for lk in plan.shaped_links if len(lk.switch_sites) == 2)  # crosses both its sites' switches
    both = ProbeStream(trunk, trunk.site_a, "a->b", "x", "y", None, None, 100, 100_000_000,  # type: ignore[arg-type]
                       [int(trunk.shape.delay_ms * 1e6)] * 100)
    m = measure.judge(both, measure.Tolerance(), {}, {s: 0.1 for s in trunk.switch_sites})
    assert m.switch_spread_ms == 0.2 and m.tolerance_delay_ms == pytest.approx(
        0.5 + 0.03 * trunk.shape.delay_ms + 4 * trunk.shape.delay_dev_ms / 10 + 0.2, abs=1e-4)


def test_controller_rates_are_per_virtual_second(monkeypatch) -> None:
    from testbed.controller.portstats import PortStatsPoller

    class Sink(list):
        def write(self, text: str) -> None:
            self.append(json.loads(text))

        def flush(self) -> None:
            pass

    poller = object.__new__(PortStatsPoller)  # its handler alone: no os-ken hub
    poller.ports = {"1": {"2": {"link": "ant1-dc1", "kind": "trunk", "peer": "dc1", "bw_mbps": 100.0}}}
    poller.previous, poller.tdf = {}, 4.0
    poller.stats_file, poller.util_file = Sink(), Sink()
    clock = iter([1000.0, 1004.0])  # two replies 4 real seconds apart: 1 virtual second at K 4
    monkeypatch.setattr("testbed.controller.portstats.wallclock", types.SimpleNamespace(time_s=lambda: next(clock)))
    for tx in (0, 1_000_000):
        st = types.SimpleNamespace(port_no=2, rx_bytes=0, tx_bytes=tx, rx_packets=0, tx_packets=0, rx_dropped=0,
                                   tx_dropped=0)
        ev = types.SimpleNamespace(msg=types.SimpleNamespace(datapath=types.SimpleNamespace(id=1), body=[st]))
        poller.on_port_stats(ev)
    (util,) = poller.util_file
    assert (util["out_mbps"], util["out_utilisation"], util["tdf"]) == (8.0, 0.08, 4.0)  # 1 MB per virtual s


def test_network_events_fire_k_times_later_in_real_time(monkeypatch) -> None:
    applied: list[float] = []
    monkeypatch.setattr(events, "apply_link_event", lambda net, ev: applied.append(time.monotonic()) or {})
    net = types.SimpleNamespace(tdf=20.0)
    player = events.EventPlayer(net, [LinkEvent(at_s=0.01, link="l", key="events[0]", delay_ms=1.0)],  # type: ignore[arg-type]
                                lambda _line: None)
    t0 = time.monotonic()
    player.start()
    player.join(10)
    assert applied and applied[0] - t0 >= 0.2  # 0.01 virtual s = 0.2 real s at K 20
    assert player.applied[0]["t_s"] >= 0.01 and player.error is None


def test_the_cli_banner_says_what_it_shows_is_real_time() -> None:
    assert "time dilation factor 10" in dilation_banner(10) and "real time, 10 x" in dilation_banner(10)


# -- pcap to virtual time ---------------------------------------------------------------------------------------

ANCHOR_S, K = 1_700_000_000.5, 4.0


def _pcap(magic: int, order: str, records: list[tuple[int, int, bytes]]) -> bytes:
    out = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, 1)
    for sec, frac, payload in records:
        out += struct.pack(order + "IIII", sec, frac, len(payload), len(payload) + 7) + payload
    return out


def _records(data: bytes, order: str) -> list[tuple[int, int, bytes, int]]:
    pos, got = 24, []
    while pos < len(data):
        sec, frac, incl, orig = struct.unpack_from(order + "IIII", data, pos)
        got.append((sec, frac, data[pos + 16:pos + 16 + incl], orig - incl))
        pos += 16 + incl
    return got


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize(("magic", "per_s"), [(MAGIC_US, 10**6), (MAGIC_NS, 10**9)])
def test_a_pcap_is_rewritten_to_virtual_time(tmp_path: Path, order: str, magic: int, per_s: int) -> None:
    half, tick = per_s // 2, 4  # 4 us, or 4 ns
    # real: A, A + 2 s + 4 ticks, A + 10 s (A = ...000.5)
    src = _pcap(magic, order, [(1_700_000_000, half, b"one"), (1_700_000_002, half + tick, b"two"),
                               (1_700_000_010, half, b"three")])
    (tmp_path / "in.pcap").write_bytes(src)
    done = rewrite(tmp_path / "in.pcap", tmp_path / "out.pcap", TimeScale(K, ANCHOR_S))
    out = (tmp_path / "out.pcap").read_bytes()
    assert out[:24] == src[:24] and done.records_out == 3 and done.nanosecond == (magic == MAGIC_NS)
    # virtual = A + (r - A) / 4: A, A + 0.5 s + 1 tick, A + 2.5 s
    assert _records(out, order) == [(1_700_000_000, half, b"one", 7), (1_700_000_001, tick // 4, b"two", 7),
                                    (1_700_000_003, 0, b"three", 7)]
    # since t0 = A + 0.5 s (virtual): the first record falls before it and is left out
    done = rewrite(tmp_path / "in.pcap", tmp_path / "t0.pcap", TimeScale(K, ANCHOR_S), t0_s=1_700_000_001.0)
    assert (done.records_in, done.records_out, done.before_t0) == (3, 2, 1)
    assert _records((tmp_path / "t0.pcap").read_bytes(), order) == [(0, tick // 4, b"two", 7), (2, 0, b"three", 7)]


def test_pcap_virtual_reads_the_run_s_time_file_and_refuses_bad_input(tmp_path: Path, capsys) -> None:
    pcap = tmp_path / "pcap"
    pcap.mkdir()
    (pcap / "h.pcap").write_bytes(_pcap(MAGIC_US, "<", [(1_700_000_010, 500_000, b"x")]))
    (pcap / "time.json").write_text(json.dumps({"factor": K, "anchor_epoch_s": ANCHOR_S,
                                                "t0_virtual_epoch_s": 1_700_000_001.0}))
    assert run_testbed.main(["pcap-virtual", str(pcap / "h.pcap"), str(tmp_path / "v.pcap"), "--since-t0"]) == 0
    assert _records((tmp_path / "v.pcap").read_bytes(), "<") == [(2, 0, b"x", 7)]
    capsys.readouterr()
    # the machine's wall clock (tcpdump's) 2 s ahead of the run's at t0 (stepped: topologies/wallclock.py)
    (pcap / "time.json").write_text(json.dumps({"factor": K, "anchor_epoch_s": ANCHOR_S,
                                                "t0_virtual_epoch_s": 1_700_000_001.0, "wall_step_s": 2.0}))
    assert run_testbed.main(["pcap-virtual", str(pcap / "h.pcap"), str(tmp_path / "s.pcap"), "--since-t0"]) == 0
    assert _records((tmp_path / "s.pcap").read_bytes(), "<") == [(1, 500_000, b"x", 7)]  # (8 s - 0.5) / 4 - 0.5
    assert "less the wall clock step +2.000000 s" in capsys.readouterr().out
    bad = {"not-a-pcap": b"hello, this is no pcap file at all",
           "truncated": _pcap(MAGIC_US, "<", [(1, 0, b"abcdef")])[:-2],
           "pcapng": bytes.fromhex("0a0d0d0a") + bytes(40)}
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
        code = run_testbed.main(["pcap-virtual", str(tmp_path / name), str(tmp_path / "o"), "--tdf", "4",
                                 "--anchor-s", "0"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and name in err, (name, err)
    with pytest.raises(PcapError, match="pcapng"):
        rewrite(tmp_path / "pcapng", tmp_path / "o", TimeScale(K))
    for argv in (["--tdf", "0", "--anchor-s", "0"], ["--tdf", "4"], ["--time-json", str(tmp_path / "none.json")]):
        code = run_testbed.main(["pcap-virtual", str(pcap / "h.pcap"), str(tmp_path / "o"), *argv])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, (argv, err)
