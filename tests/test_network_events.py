"""Network events: the file format and its checks against a topology, the network's states over time, and the
simulator deciding and moving queries with the network as it is at each time (timelines worked out by hand)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import run_testbed
from scheduler.profiles import load_profiles
from scheduler.system import build_system
from scheduler.timeline import SystemTimeline
from simulator.engine import SimConfig, Simulation
from tests.test_simulator import make_trace
from topologies import load_topology
from topologies.events import EventsError, load_events, network_states
from workload.trace import write_trace

ROOT = Path(__file__).resolve().parents[1]
THREE_SITES = """
name: three
sites:
  - {name: a1, layer: antenna, radio: {delay_ms: 2, bw_mbps: 1000}}
  - {name: dc1, layer: dc, compute: {cpu_cores: 1}}
  - {name: cloud, layer: cloud, compute: {cpu_cores: 1}}
links:
  - {a: a1, b: dc1, delay_ms: 5, bw_mbps: 1000}
  - {a: dc1, b: cloud, delay_ms: 20, bw_mbps: 1000}
deployments:
  - {site: dc1, variant: fast-cpu-b1}
  - {site: cloud, variant: fast-cpu-b1}
"""


@pytest.fixture
def three(write_yaml, test_profile):
    """Returns (topology, system, a function writing an events file and loading it against the topology)."""
    topo = load_topology(write_yaml("three.yaml", THREE_SITES))
    system = build_system(topo, load_profiles(test_profile))

    def events(text: str):
        return load_events(write_yaml("events.yaml", text), topo)

    return topo, system, events


def records(system, trace, events, policy: str = "closest", config: SimConfig | None = None) -> dict:
    recs: list[dict] = []
    from scheduler.core import policy_index

    sim = Simulation(system, trace, config or SimConfig(), seed=1, record_sink=recs.append, events=events)
    sim.run(policy_index(policy))
    cat = {k: np.concatenate([r[k] for r in recs]) for k in recs[0]}
    order = np.lexsort((cat["stream_id"], cat["t_send_ms"]))
    return {k: v[order] for k, v in cat.items()}


# -- the file --------------------------------------------------------------------------------------------------

def test_the_example_file_loads_against_tiny() -> None:
    ev = load_events(ROOT / "examples" / "network-events-tiny.yaml", load_topology("tiny"))
    assert [(e.at_s, e.link) for e in ev.events] == [(10, "radio-ant1"), (20, "ant1-dc1"), (30, "dc1-cloud"),
                                                     (36, "dc1-cloud"), (45, "radio-ant1")]
    assert ev.events[1].changes == {"delay_ms": 25.0, "bw_mbps": 50.0} and ev.events[2].state == "down"


@pytest.mark.parametrize(("text", "message"), [
    ("events:\n  - {at_s: 1, link: a1-dc9, delay_ms: 3}\n",
     "events[0].link: 'a1-dc9' is no link of three; links: radio-a1, a1-dc1, dc1-cloud"),
    ("events:\n  - {at_s: 1, link: a1-dc1, delay: 3}\n", "events[0].delay: unknown key (did you mean 'delay_ms'?"),
    ("events:\n  - {at_s: -1, link: a1-dc1, delay_ms: 3}\n", "events[0].at_s: -1"),
    ("events:\n  - {at_s: 1, link: a1-dc1, loss_pct: 120}\n", "events[0].loss_pct: 120"),
    ("events:\n  - {at_s: 1, link: a1-dc1, bw_mbps: 0}\n", "events[0].bw_mbps: 0"),
    ("events:\n  - {at_s: 1, link: a1-dc1, state: gone}\n", "events[0].state: 'gone' is not one of down, up"),
    ("events:\n  - {at_s: 1, link: a1-dc1}\n", "events[0]: changes nothing"),
    ("events:\n  - {at_s: 1, link: a1-dc1, state: up}\n", "events[0].state: a1-dc1 is up at 1 s"),
    ("events:\n  - {at_s: 1, link: a1-dc1, state: down}\n  - {at_s: 2, link: dc1-a1, state: down}\n",
     "events[1].state: a1-dc1 is down already at 2 s"),
    ("events: []\n", "events"),
])
def test_a_bad_file_is_refused_in_one_line_naming_the_key(three, text: str, message: str) -> None:
    _, _, events = three
    with pytest.raises(EventsError) as err:
        events(text)
    assert message in str(err.value) and "events.yaml: " in str(err.value) and "\n" not in str(err.value)


def test_the_command_line_refuses_an_unknown_link_with_exit_2(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("events:\n  - {at_s: 1, link: ant1-cloud, state: down}\n")
    code = run_testbed.main(["simulate", "--topo", "tiny", "--duration", "5", "--events", str(bad)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == (f"error: {bad}: events[0].link: 'ant1-cloud' is no link of tiny; "
                                 "links: radio-ant1, ant1-dc1, dc1-cloud")


# -- the states ------------------------------------------------------------------------------------------------

def test_states_follow_the_events_and_keep_the_paths(three) -> None:
    topo, _, events = three
    ev = events("events:\n"
                "  - {at_s: 2, link: dc1-cloud, state: down}\n"
                "  - {at_s: 1, link: dc1-a1, delay_ms: 15, delay_dev_ms: 1}\n"  # either order; sorted by time
                "  - {at_s: 2, link: radio-a1, loss_pct: 10}\n"
                "  - {at_s: 3, link: dc1-cloud, state: up, bw_mbps: 50}\n")
    states = network_states(topo, ev)
    assert [s.at_s for s in states] == [0, 1, 2, 3]
    assert [len(s.events) for s in states] == [0, 1, 2, 1]  # events at one time make one state
    cloud = [s.topology.path("a1", "cloud") for s in states]
    assert [p.delay_ms for p in cloud] == [25, 35, math.inf, 35]
    assert cloud[3].bottleneck_mbps == 50 and cloud[1].delay_dev_ms == 1
    assert states[2].down == frozenset({"dc1-cloud"}) and states[2].topology.path("a1", "dc1").delay_ms == 15
    assert states[2].topology.site("a1").radio.loss_pct == 10 and states[1].topology.site("a1").radio.loss_pct == 0


def test_the_timeline_keeps_the_resources_and_changes_the_delays(three) -> None:
    _, system, events = three
    tl = SystemTimeline.build(system, events("events:\n  - {at_s: 1, link: a1-dc1, delay_ms: 15}\n"))
    assert tl.starts_s == (0, 1) and tl.at(0.999) is system and tl.index_at(1.0) == 1
    assert tl.at(5).net_ms[0].tolist() == [15, 35] and system.net_ms[0].tolist() == [5, 25]
    assert [r.name for r in tl.at(5).resources] == [r.name for r in system.resources]



def test_events_at_0_s_are_the_first_state_and_the_simulator_decides_with_them(three) -> None:
    # a1 -> dc1 at 15 ms from the start: the first state has it (the simulator's decisions and links and the live
    # schedulers' `at(0)`, as the live network does); a tight stream (24.036 ms at 5 ms, 44.036 at 15, against 40)
    # is rejected
    _, system, events = three
    tl = SystemTimeline.build(system, events("events:\n  - {at_s: 0, link: a1-dc1, delay_ms: 15}\n"))
    assert tl.starts_s == (0,) and tl.static and tl.at(0).net_ms[0].tolist() == [15, 35]
    ev = events("events:\n  - {at_s: 0, link: a1-dc1, delay_ms: 15}\n")
    rec = records(system, make_trace([0.0], 2.5, max_delay_ms=40.0), ev)
    assert set(rec["outcome"]) == {"rejected"} and set(rec["reason"]) == {"delay"}
    assert set(records(system, make_trace([0.0], 2.5, max_delay_ms=40.0), None)["outcome"]) == {"ontime"}


# -- the simulator ---------------------------------------------------------------------------------------------

def test_a_link_down_moves_new_streams_elsewhere_until_it_is_back(three) -> None:
    # farthest binds to the cloud; with dc1-cloud down from 1 s to 3 s, a stream opened at 2 s goes to dc1
    _, system, events = three
    ev = events("events:\n  - {at_s: 1, link: dc1-cloud, state: down}\n  - {at_s: 3, link: dc1-cloud, state: up}\n")
    trace = make_trace([0.0, 2.0, 4.0], 0.5)
    rec = records(system, trace, ev, policy="farthest")
    assert rec["cluster"].tolist() == ["cloud", "dc1", "cloud"] and set(rec["outcome"]) == {"ontime"}
    assert records(system, trace, None, policy="farthest")["cluster"].tolist() == ["cloud"] * 3


def test_a_delay_increase_fails_running_tight_streams_and_rejects_new_ones(three) -> None:
    # a1 -> dc1 at 5 ms: 2 x (2 + 5) + 10 ms + 4 x 0.01 ms sending 1250 bytes up (radio, link) less 0.004 for the
    # 1000-byte answer down = 24.036 ms < 40; at 15 ms: 44.036 > 40
    _, system, events = three
    ev = events("events:\n  - {at_s: 1, link: a1-dc1, delay_ms: 15}\n")
    rec = records(system, make_trace([0.0, 2.5], 2.5, max_delay_ms=40.0), ev)
    assert rec["t_send_ms"].tolist() == [0, 1000, 2000, 2500, 3500, 4500]
    assert rec["outcome"].tolist() == ["ontime", "failed", "failed", "rejected", "rejected", "rejected"]
    assert rec["reason"].tolist() == ["", "deadline", "deadline", "delay", "delay", "delay"]
    assert (rec["t_response_ms"] - rec["t_send_ms"])[:3] == pytest.approx([24.036, 44.036, 44.036])
    assert set(records(system, make_trace([0.0, 2.5], 2.5, max_delay_ms=40.0), None)["outcome"]) == {"ontime"}


def test_a_query_meeting_a_link_down_is_retransmitted_until_it_is_back(three) -> None:
    # a1-dc1 down from 1.0 s to 1.5 s: the query sent at 1.0 s is tried again at 1.2 s (down) and at
    # 1.0 + 0.2 + 0.4 = 1.6 s, which gets through: 600 ms waited on the way up, then 2 + 5 ms + 0.02 sending
    _, system, events = three
    ev = events("events:\n  - {at_s: 1, link: a1-dc1, state: down}\n  - {at_s: 1.5, link: a1-dc1, state: up}\n")
    rec = records(system, make_trace([0.0], 3.0), ev)
    assert (rec["t_worker_ms"] - rec["t_send_ms"]).tolist() == pytest.approx([7.02, 607.02, 7.02])
    assert rec["outcome"].tolist() == ["ontime"] * 3  # the default budget is 1000 ms
    tight = records(system, make_trace([0.0], 3.0, max_delay_ms=100.0), ev)
    assert tight["outcome"].tolist() == ["ontime", "failed", "ontime"] and tight["reason"][1] == "deadline"


def test_queries_of_one_window_meeting_a_link_down_each_wait_for_their_own_first_try_after_it(three) -> None:
    # a1-dc1 down 1.0-1.55 s and 1.75-1.85 s; ten streams (1 fps) send at 1.0, 1.1, ..., 1.9 s, one window. Tries
    # after 200, 600, 1400 ms: 1.0 -> 1.2 down, 1.6 up (600); 1.2 -> 1.4 down, 1.8 down again, 2.6 up (1400);
    # 1.3 -> 1.5 down, 1.9 up (600); 1.4 -> 1.6 up (200); 1.8 -> 2.0 up (200); 1.6, 1.7, 1.9 find it up.
    # Messages entering the radio at one time wait for each other's transmission (0.01 ms each at 1000 Mbit/s),
    # tries first: at 1.6 the tries of 1.0 and 1.4, then 1.6's; at 1.7 those of 1.1 and 1.5, then 1.7's; at 1.9
    # that of 1.3, then 1.9's.
    _, system, events = three
    ev = events("events:\n  - {at_s: 1, link: a1-dc1, state: down}\n  - {at_s: 1.55, link: a1-dc1, state: up}\n"
                "  - {at_s: 1.75, link: a1-dc1, state: down}\n  - {at_s: 1.85, link: a1-dc1, state: up}\n")
    rec = records(system, make_trace([0.1 * i for i in range(10)], 3.0), ev)
    second = (rec["t_send_ms"] >= 999.0) & (rec["t_send_ms"] < 1999.0)
    assert rec["t_send_ms"][second] == pytest.approx([1000.0 + 100.0 * i for i in range(10)])
    waited = rec["t_worker_ms"][second] - rec["t_send_ms"][second] - 7.02
    assert waited.tolist() == pytest.approx([600, 600, 1400, 600, 200.01, 200.01, 0.02, 0.02, 200, 0.01], abs=1e-6)


def test_a_query_meeting_a_link_that_never_comes_back_times_out(three) -> None:
    _, system, events = three
    ev = events("events:\n  - {at_s: 1, link: a1-dc1, state: down}\n")
    rec = records(system, make_trace([0.0], 3.0), ev)
    assert rec["outcome"].tolist() == ["ontime", "failed", "failed"]
    assert rec["reason"].tolist() == ["", "timeout", "timeout"] and np.isnan(rec["t_response_ms"][1:]).all()


def test_a_stream_opened_while_its_radio_is_down_is_bound_when_it_is_back(three) -> None:
    # radio down 0.5-0.9 s: the stream opening at 0.6 s is bound with the network it finds at 0.9 s (dc1), its
    # first query waits for the radio (tries at 0.8 s, down, then 1.2 s)
    _, system, events = three
    ev = events("events:\n  - {at_s: 0.5, link: radio-a1, state: down}\n  - {at_s: 0.9, link: radio-a1, state: up}\n")
    rec = records(system, make_trace([0.6], 2.0), ev)
    assert rec["cluster"].tolist() == ["dc1", "dc1"] and rec["outcome"].tolist() == ["ontime", "ontime"]
    assert (rec["t_sched_ms"] - rec["t_send_ms"]).tolist() == pytest.approx([602.01, 2.01])


def test_an_event_that_changes_nothing_leaves_every_record_as_it_was(three) -> None:
    _, system, events = three
    ev = events("events:\n  - {at_s: 0.5, link: a1-dc1, delay_ms: 5}\n  - {at_s: 1.5, link: radio-a1, delay_ms: 2}\n")
    trace = make_trace([0.0, 0.3, 1.2], 2.0)
    a, b = records(system, trace, ev), records(system, trace, None)
    for key in ("t_worker_ms", "t_response_ms", "cluster", "outcome"):
        assert a[key].tolist() == b[key].tolist()


def test_simulate_records_the_events_it_applied_in_its_summary(tmp_path: Path, capsys) -> None:
    """A 40-s run: the example's event at 45 s never happened, so the summary does not list it."""
    trace = make_trace([0.0], 40.0)
    trace.antenna[:] = "ant1"
    write_trace(trace, tmp_path / "t.csv")
    code = run_testbed.main(["simulate", "--topo", "tiny", "--trace", str(tmp_path / "t.csv"), "--policy", "closest",
                             "--events", str(ROOT / "examples" / "network-events-tiny.yaml"),
                             "--out", str(tmp_path / "sim")])
    capsys.readouterr()
    assert code == 0
    extra = json.loads((tmp_path / "sim" / "summary.json").read_text())["extra"]
    applied = extra["network_events"]["applied"]
    assert applied[0] == {"at_s": 10.0, "link": "radio-ant1", "delay_ms": 8.0, "delay_dev_ms": 2.0, "loss_pct": 0.5}
    assert [e.get("state") for e in applied] == [None, None, "down", "up"]


def test_network_events_with_an_agent_are_refused_by_the_live_run_spec(tmp_path: Path) -> None:
    from live.spec import RunSpec

    spec = RunSpec(topo="tiny", events=ROOT / "examples" / "network-events-tiny.yaml", agent=tmp_path / "agent.onnx")
    with pytest.raises(ValueError, match="runs without network events"):
        spec.check()


@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="the live run checks root first")
def test_the_live_run_refuses_a_bad_events_file_before_anything_starts(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("events:\n  - {at_s: 1, link: radio-dc1, loss_pct: 5}\n")
    code = run_testbed.main(["--topo", "tiny", "--duration", "5", "--events", str(bad), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"error: {bad}: events[0].link: 'radio-dc1' is no link of tiny; "
                                 "links: radio-ant1, ant1-dc1, dc1-cloud"]
    assert not (tmp_path / "run").exists()


def test_with_netem_an_event_replaces_each_end_s_tbf_and_netem() -> None:
    # What `ShapedIntf.config` runs on each end for an event on the netem backend (not runnable here: no netem)
    from testbed import shaping

    tiny = load_topology("tiny")
    ev = load_events(ROOT / "examples" / "network-events-tiny.yaml", tiny).events[1]  # ant1-dc1: 25 ms, 50 Mbit/s
    shape = ev.shape_after(tiny.links[0].shape)
    assert shaping.commands("t1s0p4", shape, "netem", 9000) == [
        ["tc", "qdisc", "replace", "dev", "t1s0p4", "root", "handle", "1:", "tbf", "rate", "50000000bit",
         "burst", "24224", "latency", "50ms"],
        ["tc", "qdisc", "replace", "dev", "t1s0p4", "parent", "1:1", "handle", "10:", "netem", "delay", "25ms"]]


def test_a_live_scheduler_binds_with_the_network_as_it_is_when_the_stream_opens(three) -> None:
    # The live antenna scheduler on a manual clock: farthest binds to the cloud, to dc1 while dc1-cloud is down
    from live.antenna import AntennaScheduler, static_policy
    from live.clock import ManualClock
    from scheduler.core import StreamRequest, policy_index

    _, system, events = three
    far = policy_index("farthest")
    clock = ManualClock()
    live = AntennaScheduler(system, "a1", {r.name: ("http://127.0.0.1:1", "m") for r in system.resources},
                            static_policy(far), far, seed=0, t0_s=0.0, log=lambda _: None, clock=clock)
    live.timeline = SystemTimeline.build(system, events(
        "events:\n  - {at_s: 1, link: dc1-cloud, state: down}\n  - {at_s: 3, link: dc1-cloud, state: up}\n"))
    req = StreamRequest(0, fps=1, frame_bytes=1250, max_delay_ms=1000, min_accuracy=0)
    bound = []
    for sid, t_s in enumerate((0.5, 2.0, 3.5)):
        clock.advance(t_s - clock.now_s())
        bound.append(live.resource_name(live.open_stream(sid, req).resource))
    assert bound == ["fast-cpu-b1@cloud", "fast-cpu-b1@dc1", "fast-cpu-b1@cloud"]
