"""A live run on tiny.yaml (one real ONNX worker, two profile-driven), with a worker killed, the scheduler
restarted and corrupt frames sent mid-run: every query accounted, stages ordered and no faster than
the links, pcap readable, and nothing left behind. The scheduler runs a constant ASET agent (it always
picks closest, the default static policy): its choice is logged for every decision window."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from aset_agents import constant_agent

from analysis.records import read_records
from live.orchestrate import LiveRun, run_live
from live.report import LiveInterrupted
from live.rundir import SCHEDULER_PORT
from live.spec import RunSpec
from scheduler.profiles import load_profiles
from scheduler.system import build_system
from testbed.capture import dropped_by_kernel
from testbed.leftovers import leftovers
from testbed.record import CreationRecord
from topologies import load_topology
from workload.trace import TraceError, read_trace

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

RADIO_MS, ANT1_DC1_MS = 2.0, 5.0  # tiny.yaml
KILL_S, RESTART_S, DURATION_S = 5.0, 9.0, 24.0
CORRUPT_EVERY = 25
# A binds to mobilenet@ant1 (profile-driven); B no longer fits there (the default profile, input-time: A's
# 30 fps of 30 kB weigh 29.7 nominal q/s, B's 20 fps of 45 kB 20.0; together above the capacity, 47.4)
# and binds to tiny-yolov2@dc1 (real ONNX); C needs yolov3's accuracy, whose delay exceeds its budget.
TRACE = """stream_id,antenna,start_s,duration_s,app,fps,frame_bytes,max_delay_ms,min_accuracy,task
1,ant1,0.0,30,ar-vr,30,30000,300,0.2,object-detection
2,ant1,0.5,30,video-surveillance,20,45000,400,0.2,object-detection
3,ant1,1.0,3,video-surveillance,10,60000,1000,0.5,object-detection
"""
EPS_MS = 0.05  # clock reads on one machine; the wire never delivers early
AGENT_WINDOW_S = 2.0


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    base = tmp_path_factory.mktemp("live")
    (base / "trace.csv").write_text(TRACE)
    system = build_system(load_topology("tiny"), load_profiles())
    agent = constant_agent(base / "agent.onnx", system, "closest", window_s=AGENT_WINDOW_S)
    config = RunSpec(
        topo="tiny",
        agent=agent,
        trace=base / "trace.csv",
        duration_s=DURATION_S,
        out=base / "run",
        real_sites=("dc1",),
        kill_worker=(("tiny-yolov2-cpu-b4@dc1", KILL_S),),
        restart_scheduler=(("ant1", RESTART_S),),
        corrupt_every=CORRUPT_EVERY,
        seed=1,
    )
    lines: list[str] = []
    midway: dict[str, float] = {}

    def peek() -> None:  # records.csv while the run goes on: rows whose send time is that far behind
        t0_file = base / "run" / "t0"
        while not t0_file.exists():
            time.sleep(0.05)
        t0 = float(t0_file.read_text())
        time.sleep(max(0.0, t0 + 4.0 - time.time()))
        rows = (base / "run" / "records.csv").read_text().splitlines()[1:]
        midway["now_ms"] = (time.time() - t0) * 1000.0
        midway["latest_send_ms"] = max((float(r.split(",")[6]) for r in rows), default=-1.0)

    threading.Thread(target=peek, daemon=True).start()
    result = run_live(config, log=lines.append)
    result.midway = midway  # type: ignore[attr-defined]
    table = read_records(result.out / "records.csv")
    cols = {
        n: (
            table.column(n).to_numpy()
            if n.startswith("t_")
            else np.array(table.column(n).to_pylist(), dtype=object)
        )
        for n in table.column_names
    }
    return result, cols, lines


def test_every_query_sent_has_exactly_one_record(live) -> None:
    result, c, _ = live
    trace = read_trace(result.out / "trace.csv")
    expected = {
        (int(s), k)
        for s, start, end, fps in zip(trace.stream_id, trace.start_s, trace.end_s, trace.fps, strict=True)
        for k in range(int(np.ceil((min(end, DURATION_S) - start) * fps - 1e-9)))
    }
    got = list(zip(c["stream_id"].tolist(), c["query"].tolist(), strict=True))
    assert len(got) == len(set(got)) == result.recorded_queries == result.expected_queries
    assert set(got) == expected
    assert set(c["outcome"]) <= {"ontime", "failed", "rejected"}
    summary = json.loads((result.out / "summary.json").read_text())
    assert summary["overall"]["queries"] == len(expected)
    assert all(c["reason"][c["outcome"] == "rejected"] != "")


def test_records_reach_the_log_as_the_run_goes(live) -> None:
    result, _, _ = live
    m = result.midway
    # sources flush every 0.5 s and the orchestrator merges at once: the log trails by ~1 s, plus an answer
    assert m["latest_send_ms"] > 0 and m["now_ms"] - m["latest_send_ms"] < 2000.0, m


def test_answered_queries_have_ordered_stages_no_faster_than_the_links(live) -> None:
    _, c, _ = live
    ans = c["outcome"] != "rejected"
    ans &= np.isfinite(c["t_response_ms"])
    assert ans.sum() > 200
    stages = [
        c[k][ans]
        for k in (
            "t_send_ms",
            "t_sched_ms",
            "t_worker_ms",
            "t_infer_start_ms",
            "t_infer_end_ms",
            "t_response_ms",
        )
    ]
    for earlier, later in zip(stages, stages[1:], strict=False):
        assert np.all(later >= earlier - EPS_MS)
    assert np.all(stages[1] - stages[0] >= RADIO_MS - EPS_MS)  # source -> scheduler: the radio
    at_dc1 = c["cluster"][ans] == "dc1"
    assert at_dc1.sum() > 20 and (~at_dc1).sum() > 100
    assert np.all((stages[2] - stages[1])[at_dc1] >= ANT1_DC1_MS - EPS_MS)  # scheduler -> dc1
    assert np.all((stages[5] - stages[4])[at_dc1] >= ANT1_DC1_MS + RADIO_MS - EPS_MS)  # back to the source
    assert np.all((stages[5] - stages[4])[~at_dc1] >= RADIO_MS - EPS_MS)
    ok = c["outcome"][ans] == "ontime"
    budget = np.where(c["stream_id"][ans] == 1, 300.0, 400.0)
    assert np.array_equal(ok, (stages[5] - stages[0]) <= budget)


def test_the_real_worker_ran_onnx_and_the_bindings_follow_the_policy(live) -> None:
    result, c, _ = live
    workers = json.loads((result.out / "workers.json").read_text())
    assert workers["tiny-yolov2-cpu-b4@dc1"]["real"] and not workers["mobilenet-ssd-cpu-b1@ant1"]["real"]
    first = (c["stream_id"] == 1) & (c["t_send_ms"] < KILL_S * 1000)
    second = (c["stream_id"] == 2) & (c["t_send_ms"] < KILL_S * 1000 - 500)
    assert set(c["variant"][first & (c["outcome"] != "rejected")]) == {"mobilenet-ssd-cpu-b1"}
    assert set(c["variant"][second & (c["outcome"] != "rejected")]) == {"tiny-yolov2-cpu-b4"}
    third = c["stream_id"] == 3
    assert set(c["reason"][third]) == {"delay"} and np.isnan(c["t_sched_ms"][third]).all()


def test_killed_worker_and_restarted_scheduler_are_survived_and_accounted(live) -> None:
    result, c, _ = live
    kinds = [e["event"] for e in result.events]
    assert "worker-killed" in kinds and "scheduler-restarted" in kinds
    # stream 2's worker died: later queries are rejected (worker-down, then no feasible binding: capacity)
    after = (
        (c["stream_id"] == 2) & (c["t_send_ms"] > KILL_S * 1000 + 1500) & (c["t_send_ms"] < RESTART_S * 1000)
    )
    assert after.sum() > 40
    assert set(c["outcome"][after]) == {"rejected"}
    assert set(c["reason"][after]) <= {"worker-down", "capacity", "scheduler-down"}
    assert "worker-down" in set(c["reason"][c["stream_id"] == 2]) or "capacity" in set(c["reason"][after])
    # service goes on after the restart: the fresh scheduler rebinds both streams in the order they
    # come back, so one of them is served on time at ant1 and the other finds no capacity left
    back_ms = next(e["t_ms"] for e in result.events if e["event"] == "scheduler-restarted")
    # A fresh scheduler process takes seconds to come back on a loaded 2-core machine (7.7 s was seen);
    # the run lasts long enough after it for the checks below.
    assert back_ms > RESTART_S * 1000
    late = np.isin(c["stream_id"], (1, 2)) & (c["t_send_ms"] > back_ms + 1000)
    served = [(c["outcome"][late & (c["stream_id"] == s)] == "ontime").mean() for s in (1, 2)]
    assert late.sum() > 40 and max(served) > 0.8, served
    assert set(c["reason"][late & (c["outcome"] == "rejected")]) <= {
        "capacity",
        "worker-down",
        "scheduler-down",
        "bad-frame",
    }
    assert (result.out / "schedulers" / "ant1.json").exists() and (
        result.out / "schedulers" / "ant1.1.json"
    ).exists()
    # the source counts the error behind each scheduler-down record, by type (live/source.py `_down`); the
    # scheduler's seconds away make some (65 connections refused and 2 disconnected in a run of 2026-12-05)
    down = result.summary.extra["sources"]["ant1"]["scheduler_down"]
    assert sum(down.values()) == int((c["reason"] == "scheduler-down").sum()) > 0, down
    assert all(k.split()[0].endswith("Error") for k in down), down


def test_corrupt_frames_are_counted_as_bad_frames(live) -> None:
    result, c, _ = live
    bad = int((c["reason"] == "bad-frame").sum())
    frames = int(np.isfinite(c["t_sched_ms"]).sum())
    assert 1 <= bad <= frames // CORRUPT_EVERY + 1
    assert set(c["outcome"][c["reason"] == "bad-frame"]) == {"rejected"}
    assert np.isfinite(c["t_worker_ms"][c["reason"] == "bad-frame"]).all()


FRAME_BYTES = {1: 30000, 2: 45000, 3: 60000}
TCP_LINE = re.compile(r" IP (\d+\.\d+\.\d+\.\d+)\.\d+ > (\d+\.\d+\.\d+\.\d+)\.(\d+): .*length (\d+)$")


def tcp_payload_bytes(pcap: Path, dst: str, port: int) -> int:
    """Returns the TCP payload bytes a capture holds towards dst:port (`tcpdump -r` must read it)."""
    done = subprocess.run(["tcpdump", "-r", str(pcap), "-n"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    total = 0
    for line in done.stdout.splitlines():
        m = TCP_LINE.search(line)
        if m and m.group(2) == dst and int(m.group(3)) == port:
            total += int(m.group(4))
    return total


def test_pcap_is_readable_and_holds_the_frames(live) -> None:
    # Byte counts, not request lines: with a 200-byte snap length a request line that follows the
    # previous frame's body inside one TCP segment is cut off, but every payload byte is still counted.
    result, c, _ = live
    workers = json.loads((result.out / "workers.json").read_text())
    worker_url = workers["tiny-yolov2-cpu-b4@dc1"]["url"].removeprefix("http://")
    worker_ip, worker_port = worker_url.split(":")
    network = json.loads((result.out / "network.json").read_text())
    sched = next(h["ip"] for h in network["hosts"] if h["name"] == "scheduler-ant1")
    frame_bytes = np.array([FRAME_BYTES[int(s)] for s in c["stream_id"]])
    frame_bytes[c["reason"] == "bad-frame"] //= 2  # the sources send corrupt frames cut in half
    for host, dst, port, reached in (
        ("worker-dc1", worker_ip, int(worker_port), (c["cluster"] == "dc1") & np.isfinite(c["t_worker_ms"])),
        ("sources-ant1", sched, SCHEDULER_PORT, np.isfinite(c["t_sched_ms"])),
    ):
        pcap = result.out / "pcap" / f"{host}.pcap"
        dropped = dropped_by_kernel(result.out / "pcap" / f"{host}.tcpdump.log")
        assert dropped is not None
        # the frames that got there: captured, or in packets the kernel dropped (<= MTU each). 5 % slack:
        # queries the scheduler answered without the frame (stream rejected on rebinding) still have t_sched.
        captured = tcp_payload_bytes(pcap, dst, port) + dropped * network["mtu"]
        assert captured >= 0.95 * int(frame_bytes[reached].sum()) > 0


def test_run_dir_holds_the_documented_files(live) -> None:
    result, _, lines = live
    for name in (
        "config.json",
        "summary.json",
        "timeseries.csv",
        "timeseries_per_app.csv",
        "success.png",
        "events.jsonl",
        "link_measurements.json",
        "port_stats.jsonl",
        "port_counters.jsonl",
        "workers.json",
        "trace.csv",
        "cpu.json",
        "simulated/table.md",
        "simulated/closest/summary.json",
    ):
        assert (result.out / name).stat().st_size > 0, name
    simulated = json.loads((result.out / "summary.json").read_text())["extra"]["simulated"]
    assert len(simulated) == 7 and all(0.0 <= v["success"] <= 1.0 for v in simulated.values())
    config = json.loads((result.out / "config.json").read_text())
    assert config["versions"]["aiohttp"] and config["real_sites"] == ["dc1"]
    assert any("real ONNX" in line for line in lines) and any("profile-driven" in line for line in lines)


def test_services_listen_only_on_emulated_addresses(live) -> None:
    result, _, _ = live
    hosts = {h["name"]: h["ip"] for h in json.loads((result.out / "network.json").read_text())["hosts"]}
    workers = json.loads((result.out / "workers.json").read_text())
    for name, w in workers.items():
        assert w["url"].startswith(f"http://{hosts['worker-' + name.split('@')[1]]}:"), w
    for log in (result.out / "logs").glob("scheduler-*.log"):
        assert log.read_text().splitlines()[0] == f"READY http://{hosts['scheduler-ant1']}:7000"
    events = [json.loads(line) for line in (result.out / "events.jsonl").read_text().splitlines()]
    assert any(e["event"] == "worker-down" and e.get("source") == "scheduler ant1" for e in events)


def test_nothing_is_left_behind(live) -> None:
    result, _, _ = live
    record = CreationRecord(result.out)
    assert record.is_torn_down()
    run_id = record.run_entry().name
    procs = [(e.pid, e.start_ticks) for e in record.entries() if e.kind == "process"]
    assert len(procs) >= 3 + 1 + 1 + 1 + 4  # workers, scheduler (twice), source, captures
    assert leftovers(run_id, procs) == []
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(result.out) not in ps


def test_malformed_trace_is_refused_before_anything_starts(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        TRACE.replace("2,ant1,0.5,30,video-surveillance,20,", "2,ant1,0.5,30,video-surveillance,fast,")
    )
    out = tmp_path / "run"
    with pytest.raises(TraceError, match=r"bad.csv: line 3, column 'fps'"):
        LiveRun(RunSpec(topo="tiny", trace=bad, out=out), log=lambda _: None)
    assert not (out / "created.jsonl").exists()


def test_sigterm_mid_run_tears_down_and_keeps_what_was_recorded(tmp_path: Path) -> None:
    (tmp_path / "trace.csv").write_text(TRACE)
    out = tmp_path / "run"
    config = RunSpec(
        topo="tiny",
        trace=tmp_path / "trace.csv",
        duration_s=DURATION_S,
        out=out,
        real_sites=(),
        pcap="none",
        measure_links=False,
    )

    def kill_after_t0() -> None:  # only once t0 exists is the network up, with its SIGTERM handler
        while not (out / "t0").exists():
            time.sleep(0.05)
        time.sleep(3.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=kill_after_t0, daemon=True).start()
    with pytest.raises(LiveInterrupted) as stopped:
        run_live(config, log=lambda _: None)
    result = stopped.value.result
    assert result.interrupted and 0 < result.recorded_queries < result.expected_queries
    table = read_records(out / "records.csv")
    keys = list(zip(table.column("stream_id").to_pylist(), table.column("query").to_pylist(), strict=True))
    assert len(keys) == len(set(keys)) == result.recorded_queries
    assert max(table.column("t_send_ms").to_pylist()) < 6000.0  # nothing recorded that was never sent
    record = CreationRecord(out)
    assert record.is_torn_down()
    procs = [(e.pid, e.start_ticks) for e in record.entries() if e.kind == "process"]
    assert leftovers(record.run_entry().name, procs) == []


def test_the_agents_choice_is_logged_for_every_window(live) -> None:
    result, _, _ = live
    rows = list(csv.DictReader((result.out / "windows.csv").open()))
    assert rows and {r["antenna"] for r in rows} == {"ant1"} and {r["policy"] for r in rows} == {"closest"}
    # every window the scheduler was up for is there: all but those wholly within its restart
    stopped = next(e["t_ms"] for e in result.events if e["event"] == "scheduler-stopped")
    back = next(e["t_ms"] for e in result.events if e["event"] == "scheduler-restarted")
    got = [int(r["window"]) for r in rows]
    step = AGENT_WINDOW_S * 1000
    for k in range(int(DURATION_S / AGENT_WINDOW_S)):
        if (k + 1) * step <= stopped or k * step >= back - 500:  # 0.5 s: the fresh scheduler reads t0
            assert k in got, (k, got)
    assert len(got) - len(set(got)) <= 1  # the window of a quick restart: once before and once after it
    for r in rows:  # rows tile time: full windows on the grid, partial ones only around the restart
        t0_ms, t1_ms = float(r["t_start_ms"]), float(r["t_end_ms"])
        assert int(r["window"]) * step - 1 <= t0_ms < t1_ms <= (int(r["window"]) + 1) * step + 1000
    assert sum(int(r["streams_new"]) for r in rows) >= 3
    assert sum(int(r["rejected"]) for r in rows) > 0  # stream 3: rejected at binding, its queries counted
    assert sum(1 for r in rows if r["decide_us"] == "") == 2  # one per scheduler process: its first window
    summary = json.loads((result.out / "summary.json").read_text())
    assert summary["policy"] == "aset"
    assert summary["extra"]["policy_windows"]["policies"] == {"closest": len(rows)}
    assert summary["extra"]["policy_windows"]["decide_us"]["n"] == len(rows) - 2
    assert (result.out / "windows" / "ant1.csv").exists() and (result.out / "windows" / "ant1.1.csv").exists()
