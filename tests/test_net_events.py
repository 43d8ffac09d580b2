"""Network events on tiny brought up for real: a wire's delay changed at run time and measured by ping, a link
taken down (ping gets nothing) and brought back (ping answers again, its qdiscs as planned)."""

from __future__ import annotations

import os
import re
import select
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from testbed import EmulatedNetwork
from testbed.events import apply_link_event, link_states
from topologies.events import LinkEvent

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


def _rtts_ms(src, dst, count: int = 10) -> list[float]:
    """Returns the round-trip times ping measured (none when nothing came back)."""
    out = src.cmd(["ping", "-n", "-c", str(count), "-i", "0.05", "-W", "1", dst.ip], check=False, timeout_s=30)
    return [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]


@pytest.fixture(scope="module")
def tiny_net(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("tiny-events") / "run"
    with EmulatedNetwork("tiny", run_dir=run_dir, log=lambda _: None, controller="none") as net:
        yield net


@pytest.fixture(scope="module")
def rest_ms(tiny_net) -> float:
    """What the path ant1 -> dc1 adds to a round trip beyond its links' delays (5 ms each way) at rest: the switches'
    and processes' wake-ups on this host, 1-4 ms here. Round trips are judged against it, measured in the same run."""
    extra = statistics.median(_rtts_ms(tiny_net.host_for("worker", "ant1"), tiny_net.host_for("worker", "dc1"))) - 10.0
    assert 0.0 <= extra < 5.0, extra
    return extra


def _assert_round_trips(rtts: list[float], one_way_ms: float, rest_ms: float) -> None:
    """Round trips over a path of `one_way_ms` each way: none under its delay, their median its delay plus the
    path's cost at rest, less 1 ms to more 3 (that cost grows a little with the time the path sleeps between
    packets: 1.3 ms at 10 ms, 1.8 at 50 here)."""
    excess = statistics.median(rtts) - 2 * one_way_ms - rest_ms if rtts else float("nan")
    assert rtts and min(rtts) >= 2 * one_way_ms and -1.0 < excess < 3.0, (one_way_ms, rest_ms, rtts)


def test_a_delay_change_takes_effect_and_a_link_goes_down_and_comes_back(tiny_net, rest_ms) -> None:
    ant, dc = tiny_net.host_for("worker", "ant1"), tiny_net.host_for("worker", "dc1")
    _assert_round_trips(_rtts_ms(ant, dc), 5.0, rest_ms)  # ant1-dc1: 5 ms each way

    done = apply_link_event(tiny_net, LinkEvent(at_s=0.0, link="ant1-dc1", key="events[0]", delay_ms=25.0))
    assert done["delay_ms"] == 25.0
    _assert_round_trips(_rtts_ms(ant, dc), 25.0, rest_ms)
    assert tiny_net.mn.shaping_problems() == []  # the TBFs (100 Mbit/s) untouched

    apply_link_event(tiny_net, LinkEvent(at_s=1.0, link="ant1-dc1", key="events[1]", state="down"))
    assert link_states(tiny_net, "ant1-dc1") == ["DOWN", "DOWN"]
    assert _rtts_ms(ant, dc, count=5) == []
    cloud = tiny_net.host_for("worker", "cloud")
    assert _rtts_ms(dc, cloud, count=3)  # the other link still carries

    apply_link_event(tiny_net, LinkEvent(at_s=2.0, link="ant1-dc1", key="events[2]", state="up"))
    assert link_states(tiny_net, "ant1-dc1") == ["UP", "UP"]
    assert tiny_net.mn.shaping_problems({"ant1-dc1"}) == [] and tiny_net.mn.shaping_problems({"nowhere"}) == []
    _assert_round_trips(_rtts_ms(ant, dc), 25.0, rest_ms)  # back up with the shape it had
    assert tiny_net.mn.shaping_problems() == []


def test_a_local_wire_that_does_not_answer_its_sighup_is_put_back_and_answers_the_next_event_itself(
        tiny_net, rest_ms, monkeypatch) -> None:
    """A wire stopped (SIGSTOP) misses its reshape: the error names it, the link's old shape is put back; woken, it
    answers late, with the restore's config generation, and that line does not answer the next reshape."""
    from testbed import links
    from testbed.errors import NetworkError

    ant, dc = tiny_net.host_for("worker", "ant1"), tiny_net.host_for("worker", "dc1")
    wire = next(lk for lk in tiny_net.mn.links if getattr(lk, "link_name", "") == "ant1-dc1")
    apply_link_event(tiny_net, LinkEvent(at_s=0.0, link="ant1-dc1", key="events[0]", delay_ms=15.0))
    taken = wire.generation
    monkeypatch.setattr(links, "WIRE_RESHAPE_S", 1.0)
    os.kill(wire.proc.pid, signal.SIGSTOP)
    try:
        with pytest.raises(NetworkError) as err:
            apply_link_event(tiny_net, LinkEvent(at_s=1.0, link="ant1-dc1", key="events[1]", delay_ms=8.0))
    finally:
        os.kill(wire.proc.pid, signal.SIGCONT)
    lines = str(err.value).splitlines()
    assert lines[0].startswith("wire-ant1-dc1 did not take its new shape within 1 s") and lines[-1] == (
        "ant1-dc1 is back to its old shape (its ends' TBF and its wire's config)"), lines
    assert wire.shape.delay_ms == 15.0 and wire.generation == taken + 2 and tiny_net.mn.shaping_problems() == []
    assert select.select([wire.proc.stdout], [], [], 10)[0], "the woken wire never answered"  # late, unread
    _assert_round_trips(_rtts_ms(ant, dc), 15.0, rest_ms)  # with the restored config
    monkeypatch.setattr(links, "WIRE_RESHAPE_S", 3.0)
    monkeypatch.setattr(wire.proc, "send_signal", lambda _sig: None)  # this SIGHUP never reaches it
    with pytest.raises(NetworkError, match=r"did not take its new shape within 3 s \(said 'reshaped "
                                           rf"{taken + 2}'"):  # the late line was read and did not answer it
        wire.reshape(wire.shape)
    monkeypatch.undo()
    wire.reshape(wire.shape)  # a SIGHUP that reaches it: its own line answers
    _assert_round_trips(_rtts_ms(ant, dc), 15.0, rest_ms)


def test_a_link_that_comes_back_up_without_its_shaping_is_named(tiny_net) -> None:
    """`up` checks the link's own ends (and its wire) against its plan: an end's TBF gone meanwhile is an error
    naming the link; the other links are not read."""
    from testbed.errors import NetworkError
    from testbed.links import ShapedIntf

    link = next(lk for lk in tiny_net.mn.links if getattr(lk, "link_name", "") == "dc1-cloud")
    end = next(i for i in (link.intf1, link.intf2) if isinstance(i, ShapedIntf) and i.shape is not None)
    apply_link_event(tiny_net, LinkEvent(at_s=0.0, link="dc1-cloud", key="events[0]", state="down"))
    subprocess.run(["ip", "netns", "exec", end.netns, "tc", "qdisc", "del", "dev", end.name, "root"]
                   if end.netns else ["tc", "qdisc", "del", "dev", end.name, "root"], check=True)
    try:
        with pytest.raises(NetworkError, match=r"^dc1-cloud came back up not shaped as planned: dc1-cloud at "):
            apply_link_event(tiny_net, LinkEvent(at_s=1.0, link="dc1-cloud", key="events[1]", state="up"))
    finally:
        end.config(ctx=end.ctx, shape=link.shape)
    assert tiny_net.mn.shaping_problems() == []


def test_net_applies_an_events_file_while_the_cli_runs(tmp_path: Path) -> None:
    """ant1-dc1 (5 ms each way) takes 25 ms at 2.5 s while the CLI pings before and after (from 4 s after its start):
    the round trip grows by 2 x 20 ms against the one measured before it in the same run (this host's switches and
    wake-ups add 1-4 ms to a round trip at rest, more the longer the path sleeps between packets), and never
    undercuts the configured 50 ms."""
    events = tmp_path / "events.yaml"
    events.write_text("events:\n  - {at_s: 2.5, link: dc1-ant1, delay_ms: 25}\n  - {at_s: 60, link: dc1-cloud, state: down}\n")
    script = tmp_path / "cli.txt"
    ping = "worker-ant1 ping -n -c 10 -i 0.05 worker-dc1\n"
    script.write_text(ping + "sh sleep 4\n" + ping)
    r = subprocess.run([sys.executable, str(ROOT / "run_testbed.py"), "net", "--topo", "tiny", "--controller", "none",
                        "--events", str(events), "--cli-script", str(script), "--out", str(tmp_path / "run")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "network event: link=ant1-dc1 delay_ms=25.0" in r.stdout
    assert "dc1-cloud" not in r.stdout.split("network event:", 1)[1].split("\n", 1)[0]  # not due by the end
    rtts = [float(x) for x in re.findall(r"time=([\d.]+) ms", r.stdout)]
    assert len(rtts) == 20, r.stdout
    before, after = rtts[:10], rtts[10:]
    assert statistics.median(before) < 2 * 25.0 and min(after) >= 2 * 25.0, (before, after)
    assert -1.0 < statistics.median(after) - statistics.median(before) - 2 * 20.0 < 3.0, (before, after)
