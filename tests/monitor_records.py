"""A two-stream trace and a records.csv writer for the fidelity monitor's and the early stop's tests."""

from __future__ import annotations

from pathlib import Path

from analysis.records import RECORD_NAMES

TRACE = """stream_id,antenna,start_s,duration_s,app,fps,frame_bytes,max_delay_ms,min_accuracy,task
1,ant1,0.0,10,ar-vr,10,30000,300,0.2,object-detection
2,ant1,0.5,10,video-surveillance,4,45000,400,0.2,object-detection
"""


def write_records(path: Path, rows: list[dict]) -> None:
    """Writes records.csv with `rows` over defaults: an on-time answer at ant1, times left empty."""
    lines = [",".join(RECORD_NAMES)]
    for r in rows:
        full = {"antenna": "ant1", "app": "ar-vr", "cluster": "ant1", "variant": "v", "t_sched_ms": "",
                "t_worker_ms": "", "t_infer_start_ms": "", "t_infer_end_ms": "", "t_response_ms": "",
                "batch_size": 1, "outcome": "ontime", "reason": "", **r}
        lines.append(",".join(str(full[n]) for n in RECORD_NAMES))
    path.write_text("\n".join(lines) + "\n")
