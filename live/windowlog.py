"""The windows log of an antenna scheduler: one CSV row per decision window (its policy, what choosing it
cost, its counts; docs/file-formats.md) and, with an ASET agent, the state and Q-values it saw per window.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from scheduler.core import POLICY_NAMES
from scheduler.window import WindowMeasurement

if TYPE_CHECKING:  # onnxruntime: imported only by a scheduler that runs an agent
    from scheduler.aset.policy import AsetController

WINDOW_COLUMNS = (
    "antenna", "window", "t_start_ms", "t_end_ms", "policy", "decide_us", "decide_cpu_us", "sent", "ontime", "failed",
    "rejected", "streams_new", "streams_rejected", "streams_all", "responses_all_per_s", "t_closed_ms",
)
"""Columns of the windows log (docs/file-formats.md: decision windows)."""


@dataclass(frozen=True)
class ClosedWindow:
    """A decision window that just ended (`AntennaScheduler.close_window`): what its row says."""

    antenna: str
    index: int
    t_start_ms: float
    """Run time (ms since t0) of its start and end."""
    t_end_ms: float
    policy: int
    """The policy it ran (an index into POLICY_NAMES)."""
    policy_cost_us: tuple[float, float] | None
    """What choosing its policy cost, wall and CPU us (None: chosen at start, on an idle state)."""
    counts: WindowMeasurement
    """This antenna's own counts."""
    measurement: WindowMeasurement
    """The counts in the simulator's terms (`live.antenna.AntennaScheduler.measure`): what the chooser was handed."""
    decided: bool
    """Whether the chooser picked the next window's policy from it (not when the service stops)."""
    t_closed_ms: float = math.nan
    """Run time at which it was closed and the next window's policy was in force (the monitor's lateness)."""


@dataclass(frozen=True)
class WindowsLog:
    """Where one scheduler logs its windows, and the agent whose state it logs beside them (None: static)."""

    path: Path
    controller: AsetController | None = None

    def write(self, closed: ClosedWindow) -> None:
        """Appends the window's row and, if it was decided on by an agent, the agent's state."""
        self.write_row(closed)
        if closed.decided and self.controller is not None:
            self.write_state(closed, self.controller)

    def write_row(self, closed: ClosedWindow) -> None:
        c, m = closed.counts, closed.measurement
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(WINDOW_COLUMNS)
            w.writerow((
                closed.antenna, closed.index, f"{closed.t_start_ms:.1f}", f"{closed.t_end_ms:.1f}",
                POLICY_NAMES[closed.policy],
                *(("", "") if closed.policy_cost_us is None else (f"{x:.1f}" for x in closed.policy_cost_us)),
                c.sent, c.ontime, c.failed, c.rejected, c.streams_new, c.streams_rejected,
                int(m.streams.sum()), f"{m.responses.sum() / max(m.duration_s, 1e-9):.2f}",
                "" if math.isnan(closed.t_closed_ms) else f"{closed.t_closed_ms:.1f}",
            ))

    def write_state(self, closed: ClosedWindow, controller: AsetController) -> None:
        """Appends the window's encoded features and Q-values to `<windows log>.state.jsonl` (to compare the
        live state with the simulator's, e.g. experiments/aset_live_state.py)."""
        features, q = controller.last_features, controller.last_q
        if features is None:
            return
        entry = {"antenna": closed.antenna, "window": closed.index,
                 "features": [round(float(x), 5) for x in features],
                 "q": None if q is None else [round(float(x), 5) for x in q],
                 "greedy": None if q is None else POLICY_NAMES[int(np.argmax(q))]}
        with self.path.with_suffix(".state.jsonl").open("a") as f:
            f.write(json.dumps(entry) + "\n")
