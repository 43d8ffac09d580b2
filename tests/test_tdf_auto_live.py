"""`--tdf auto` on tiny: pilot runs of the trace's busiest second, each judged by the fidelity monitor, walk the
ladder from the estimate, and the run follows at the K their verdicts choose; config.json says how."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from live.autotdf import MAX_PILOTS, first_k, search
from workload.trace import read_trace

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]
REPO = Path(__file__).resolve().parents[1]
TRACE = """stream_id,antenna,start_s,duration_s,app,fps,frame_bytes,max_delay_ms,min_accuracy,task
1,ant1,0.0,6,video-analytics,10,20000,1000,0.2,object-detection
2,ant1,2.0,6,video-analytics,5,20000,1000,0.2,object-detection
"""


def test_tdf_auto_pilots_the_busiest_second_and_runs_at_the_k_they_choose(tmp_path: Path) -> None:
    (tmp_path / "trace.csv").write_text(TRACE)
    out = tmp_path / "run"
    argv = [sys.executable, str(REPO / "run_testbed.py"), "run", "--topo", "tiny", "--trace", str(tmp_path / "trace.csv"),
            "--out", str(out), "--real-workers", "none", "--no-measure", "--pcap", "none", "--switch", "lxbr",
            "--controller", "none", "--policy", "closest", "--tdf", "auto"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    auto = json.loads((out / "config.json").read_text())["time_dilation"]["auto"]
    assert auto["peak_at_s"] == 2.0 and auto["peak_queries_per_s"] == 15.0  # both streams alive from 2 s
    cores = max(1, len(os.sched_getaffinity(0)) - 1)
    assert auto["estimate"] == first_k(15.0, cores, "lxbr")
    pilot = read_trace(tmp_path / "run-pilots" / "trace.csv")
    assert list(pilot.start_s) == [0.0, 1.0] and list(pilot.duration_s) == [6.0, 7.0]  # over a 2 s warm-up
    verdicts = {}
    for p in auto["pilots"]:  # each pilot's verdict is its own run's
        fid = json.loads((tmp_path / "run-pilots" / f"k{p['tdf']:g}" / "summary.json").read_text())["extra"]["fidelity"]
        assert fid["tdf"] == p["tdf"] and (fid["verdict"] == "faithful") == p["faithful"]
        verdicts[p["tdf"]] = p["faithful"]
    assert 1 <= len(verdicts) <= MAX_PILOTS
    chosen = search(auto["estimate"], lambda k: verdicts[k])
    assert [(p["tdf"], p["faithful"]) for p in auto["pilots"]] == list(chosen.pilots)
    assert auto["tdf"] == chosen.tdf
    assert json.loads((out / "spec.json").read_text())["tdf"] == chosen.tdf
    assert json.loads((out / "summary.json").read_text())["extra"]["fidelity"]["tdf"] == chosen.tdf
    assert "--tdf auto: K " in done.stdout
