"""A real worker that did (almost) no inference has no inference to delay: its run-queue waiting share is then a
warning, not a hard invariant; from THRESHOLDS.real_wait_min_busy_ms of time on or waiting for a CPU it is judged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.records import RECORD_NAMES
from live.verdict import THRESHOLDS, judge

TRACE = """stream_id,antenna,start_s,duration_s,app,fps,frame_bytes,max_delay_ms,min_accuracy,task
1,ant1,0.0,10,ar-vr,10,30000,300,0.2,object-detection
"""


def _run_dir(path: Path, real: list[tuple[float, float]]) -> Path:
    """A run directory with one record and monitor samples whose real worker ran and waited `real` (ms)."""
    (path / "trace.csv").write_text(TRACE)
    (path / "config.json").write_text(json.dumps({"workers": [{"resource": "r@ant4", "real": True}]}))
    row = {"stream_id": 1, "query": 0, "antenna": "ant1", "app": "ar-vr", "cluster": "ant1", "variant": "v",
           "t_send_ms": 0.5, "t_sched_ms": "", "t_worker_ms": "", "t_infer_start_ms": "", "t_infer_end_ms": "",
           "t_response_ms": "", "batch_size": 1, "outcome": "ontime", "reason": ""}
    (path / "records.csv").write_text(",".join(RECORD_NAMES) + "\n" + ",".join(str(row[n]) for n in RECORD_NAMES) + "\n")
    samples = [{"t_ms": 1000.0 * i + 500.0, "real_s": 1.0, "host_cores": 0.05, "host_some_pct": None,
                "run_some_pct": None, "procs": {"worker r@ant4 (7)": {"group": "workers", "cores": 0.0,
                                                                      "run_ms": run, "wait_ms": wait}}}
               for i, (run, wait) in enumerate(real)]
    (path / "monitor.jsonl").write_text("".join(json.dumps(x) + "\n" for x in samples))
    return path


def _wait(fid: dict) -> dict:
    return next(f for f in fid["figures"] if f["invariant"] == "run-queue delay of real inference")


def test_an_idle_real_worker_waiting_is_a_warning(tmp_path: Path) -> None:
    fid = judge(_run_dir(tmp_path, [(0.0, 0.0), (2.2, 0.8), (4.5, 3.7), (0.0, 0.0)]))  # 11.2 ms in all
    wait = _wait(fid)
    assert wait["value"] == pytest.approx(4.5 / 11.2, abs=1e-4) and not wait["hard"]
    assert fid["verdict"] == "faithful" and [w["invariant"] for w in fid["warnings"]] == [wait["invariant"]]
    assert fid["diagnostics"]["run_ms"]["real workers"] == 6.7


def test_a_busy_real_worker_waiting_is_judged(tmp_path: Path) -> None:
    busy = THRESHOLDS.real_wait_min_busy_ms
    fid = judge(_run_dir(tmp_path, [(busy * 0.9, busy * 0.1)]))
    wait = _wait(fid)
    assert wait["hard"] and wait["value"] == pytest.approx(0.1)
    assert fid["verdict"] == "not faithful" and [v["invariant"] for v in fid["violations"]] == [wait["invariant"]]
