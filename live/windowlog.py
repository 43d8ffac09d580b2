"""The windows log of an antenna scheduler: one CSV row per decision window (its policy, what choosing it
cost, its counts; docs/file-formats.md) and, with an ASET agent, the state and Q-values it saw per window.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from scheduler.core import POLICY_NAMES
from scheduler.window import WindowMeasurement

if TYPE_CHECKING:
    from live.antenna import AntennaScheduler

WINDOW_COLUMNS = (
    "antenna", "window", "t_start_ms", "t_end_ms", "policy", "decide_us", "decide_cpu_us", "sent", "ontime", "failed",
    "rejected", "streams_new", "streams_rejected", "streams_all", "responses_all_per_s",
)
"""Columns of the windows log (docs/file-formats.md: decision windows)."""


def log_window(path: Path, live: AntennaScheduler, c: WindowMeasurement, m: WindowMeasurement, end_s: float) -> None:
    """Appends the row of the window ending at `end_s`: `c` its own counts, `m` its measurement."""
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(WINDOW_COLUMNS)
        w.writerow((
            live.antenna, live.window_index, f"{(live.window_start_s - live.t0_s) * 1000:.1f}",
            f"{(end_s - live.t0_s) * 1000:.1f}", POLICY_NAMES[live.policy],
            *(("", "") if live.window_policy_us is None else (f"{x:.1f}" for x in live.window_policy_us)),
            c.sent, c.ontime, c.failed, c.rejected, c.streams_new, c.streams_rejected,
            int(m.streams.sum()), f"{m.responses.sum() / max(m.duration_s, 1e-9):.2f}",
        ))


def log_state(path: Path, live: AntennaScheduler) -> None:
    """With an ASET agent: appends the window's encoded features and Q-values to `<windows log>.state.jsonl`
    (to compare the live state with the simulator's, e.g. experiments/aset_live_state.py)."""
    controller = getattr(live.chooser, "__self__", None)  # AsetController.decide, bound
    features = getattr(controller, "last_features", None)
    if features is None:
        return
    q = getattr(controller, "last_q", None)
    entry = {"antenna": live.antenna, "window": live.window_index,
             "features": [round(float(x), 5) for x in features],
             "q": None if q is None else [round(float(x), 5) for x in q],
             "greedy": None if q is None else POLICY_NAMES[int(np.argmax(q))]}
    with path.with_suffix(".state.jsonl").open("a") as f:
        f.write(json.dumps(entry) + "\n")
