"""A short real compare on tiny: the same trace through the simulator and the testbed, and the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scheduler.profiles import read_profile

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


def test_compare_on_tiny_replays_one_trace_on_both_sides(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    # Two streams at ant1 with deadlines any CPU meets, so that queries are served whatever this host's speed (a
    # generated trace's one stream had 130 ms, which mobilenet-ssd timed at 130 ms on one host could not meet).
    trace = tmp_path / "trace.csv"
    trace.write_text("stream_id,antenna,start_s,duration_s,app,fps,frame_bytes,max_delay_ms,min_accuracy,task\n"
                     "0,ant1,0.5,8,cognitive-assistance,3,40000,5000,0.3,object-detection\n"
                     "1,ant1,1.0,8,cognitive-assistance,2,30000,5000,0.3,object-detection\n")
    r = subprocess.run([sys.executable, str(ROOT / "run_testbed.py"), "compare", "--topo", "tiny", "--trace",
                        str(trace), "--seed", "1", "--policies", "closest,least-impedance", "--real-workers", "ant1",
                        "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert [p["policy"] for p in report["policies"]] == ["closest", "least-impedance"]
    for p in report["policies"]:
        # Both sides sent exactly the trace's queries, and each side's ratios add up.
        assert p["simulator"]["queries"] == p["testbed"]["queries"] > 0
        for side in ("simulator", "testbed"):
            total = p[side]["success"] + p[side]["failed"] + p[side]["rejected"]
            assert total == pytest.approx(1.0)
        assert p["success_diff_pts"] == pytest.approx(100 * (p["testbed"]["success"] - p["simulator"]["success"]))
        # the simulator was run again under other seeds: its correlation with itself is a correlation or, where
        # its series is flat (every window on time), undefined
        own = np.array(p["series_simulator"], dtype=float)
        assert (np.isnan(p["simulator_self_correlation"]) if np.nanstd(own) == 0
                else -1 <= p["simulator_self_correlation"] <= 1)
    assert all(p["testbed"]["success"] > 0.5 for p in report["policies"])
    for p, q in zip(report["policies"], report["paired"], strict=True):  # every query paired; outcomes add up
        n = p["simulator"]["queries"]
        assert q["policy"] == p["policy"] and q["paired"] == n and q["only_simulator"] == q["only_testbed"] == 0
        assert q["both_ontime"] + q["testbed_missed"] + q["simulator_missed"] + q["both_missed"] == n
        assert q["simulator_missed"] - q["testbed_missed"] == round(n * (p["testbed"]["success"] - p["simulator"]["success"]))
        assert sum(q["testbed_missed_why"].values()) == q["testbed_missed"]
        assert len(q["simulator_self_one_side"]) == 5 and all(n >= 0 for n in q["simulator_self_one_side"])
    stages = {(s["policy"], s["stage"]) for s in report["stages"]}
    assert ("closest", "network up") in stages and ("closest", "inference") in stages
    up = next(s for s in report["stages"] if s["stage"] == "network up")
    assert up["testbed_p50_ms"] >= 2 * 0.9 and up["simulator_p50_ms"] >= 2.0   # at least the radio's 2 ms
    text = (out / "report.md").read_text()
    assert "Simulator vs testbed: tiny" in text
    for p in report["policies"]:  # each testbed run's verdict, as its own summary keeps it
        own = json.loads((out / "testbed" / p["policy"] / "summary.json").read_text())["extra"]["fidelity"]
        got = report["testbed_fidelity"][p["policy"]]
        assert got["verdict"] == own["verdict"] in ("faithful", "not faithful") and got["tdf"] == own["tdf"] == 1.0
        assert f"{p['policy']}: {own['verdict']} at K 1" in text
    assert (out / "series.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "trace.csv").exists()
    # ant1's SSD ran real ONNX; its model was timed here first and both sides used that profile
    timed = read_profile(out / "profiles-real.yaml").runtime("mobilenet-ssd", "cpu")
    assert "measured on CPU" in timed.source and sorted(timed.batch_latency_ms) == [1, 2, 4, 8]  # the entry's sizes
    for policy in ("closest", "least-impedance"):
        config = json.loads((out / "testbed" / policy / "config.json").read_text())
        assert config["profiles_file"] == str(out / "profiles-real.yaml") and config["profiled_real_workers"] == []
        assert [w["resource"] for w in config["workers"] if w["real"]] == ["mobilenet-ssd-cpu-b1@ant1"]


def test_compare_with_network_events_on_tiny(tmp_path: Path) -> None:
    # tiny's radio slows at 1.5 s and goes down from 3 s to 6 s: both sides apply it (the testbed to its wire
    # and switch port, the simulator to its model), record it, and answer nothing sent while it is down in
    # time (the budgets are at most 1 s: a query sent before 4.9 s waits at least 1.1 s for the radio)
    from analysis.records import read_records

    events = tmp_path / "events.yaml"
    events.write_text("events:\n  - {at_s: 1.5, link: radio-ant1, delay_ms: 6}\n"
                      "  - {at_s: 3, link: radio-ant1, state: down}\n  - {at_s: 6, link: radio-ant1, state: up}\n")
    out = tmp_path / "cmp"
    r = subprocess.run([sys.executable, str(ROOT / "run_testbed.py"), "compare", "--topo", "tiny", "--duration", "12",
                        "--lambda", "30", "--seed", "1", "--policies", "closest", "--events", str(events),
                        "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["policies"][0]["simulator"]["queries"] == report["policies"][0]["testbed"]["queries"] > 0
    live_events = json.loads((out / "testbed" / "closest" / "summary.json").read_text())["extra"]["network"]["events"]
    assert [(e["at_s"], e["link"], e.get("state")) for e in live_events] == [
        (1.5, "radio-ant1", None), (3.0, "radio-ant1", "down"), (6.0, "radio-ant1", "up")]
    assert live_events[0]["delay_ms"] == 6.0 and all(e["t_ms"] >= 1000 * e["at_s"] for e in live_events)
    sim = json.loads((out / "simulator" / "closest" / "summary.json").read_text())["extra"]["network_events"]
    assert [e["at_s"] for e in sim["applied"]] == [1.5, 3.0, 6.0] and sim["file"] == str(events)
    # the testbed's radio is down from when the orchestrator had applied the event (logged right after it)
    down_from_ms = {"simulator": 3000.0, "testbed": live_events[1]["t_ms"]}
    for side in ("simulator", "testbed"):
        rec = read_records(out / side / "closest" / "records.csv")
        sent = rec["t_send_ms"].to_numpy()
        outcome = np.array(rec["outcome"].to_pylist(), dtype=object)
        down = (sent >= down_from_ms[side]) & (sent < 4900)
        assert down.sum() > 0 and not (outcome[down] == "ontime").any(), side
        assert (outcome[sent < 3000] == "ontime").any(), side
