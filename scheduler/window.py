"""One decision window's record, and the stream classes it counts queries in.

Written once, filled by the simulator (`simulator.engine`) and by every live scheduler (`live/`), read by
ASET's state encoding (`scheduler.aset.state`) and the time series: both environments measure a window
into the same dataclass.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

BUDGET_BINS_MS: tuple[float, ...] = (100.0, 300.0)
"""Edges of the delay-budget classes (ms): a stream's class is its budget bin x its rate bin."""
RATE_BINS_FPS: tuple[float, ...] = (12.0, 22.0)
"""Edges of the data-rate classes (frames per second)."""
N_CLASSES = (len(BUDGET_BINS_MS) + 1) * (len(RATE_BINS_FPS) + 1)
"""Stream classes: (delay-budget bins) x (rate bins), flattened budget-major."""


def stream_class(max_delay_ms: float, fps: float) -> int:
    """Returns the class of one stream (scalar; bisect, ~40x cheaper than numpy for one value)."""
    b = bisect.bisect_right(BUDGET_BINS_MS, max_delay_ms)
    return b * (len(RATE_BINS_FPS) + 1) + bisect.bisect_right(RATE_BINS_FPS, fps)


def stream_classes(max_delay_ms: np.ndarray, fps: np.ndarray) -> np.ndarray:
    """Returns the class of every stream (vectorised `stream_class`)."""
    b = np.searchsorted(np.asarray(BUDGET_BINS_MS), max_delay_ms, side="right")
    r = np.searchsorted(np.asarray(RATE_BINS_FPS), fps, side="right")
    return (b * (len(RATE_BINS_FPS) + 1) + r).astype(np.int64)


@dataclass
class WindowMeasurement:
    """What happened in one decision window (arrays per resource), from the simulator or measured live.

    Counts accumulate while the window runs (`empty` starts one); `streams` and `load_qps` are the state at
    its end. `policy` is the index (scheduler.core.POLICY_NAMES) in force during the window, -1 if unknown.
    A live scheduler also keeps its totals since its start in one (`live.antenna.AntennaScheduler.totals`:
    the counts only; its duration, start and end-of-window state stay unset).
    """

    duration_s: float
    ontime: int = 0
    failed: int = 0
    rejected: int = 0
    streams_new: int = 0
    streams_rejected: int = 0
    responses: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Answers completed per resource in the window."""
    bytes_in: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Bytes of the queries that reached each resource in the window."""
    streams: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Streams bound to each resource at the window's end."""
    load_qps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Declared load of each resource at the window's end."""
    sent_per_class: np.ndarray = field(default_factory=lambda: np.zeros(N_CLASSES))
    """Queries sent in the window per stream class (`stream_class`)."""
    t_start_s: float = 0.0
    """Start of the window, in seconds of the run (virtual time)."""
    policy: int = -1

    @staticmethod
    def empty(n_resources: int, t_start_s: float = 0.0, duration_s: float = 0.0,
              policy: int = -1) -> WindowMeasurement:
        """Returns a window with every count at zero and arrays sized for `n_resources`."""
        return WindowMeasurement(
            duration_s=duration_s, responses=np.zeros(n_resources), bytes_in=np.zeros(n_resources),
            streams=np.zeros(n_resources), load_qps=np.zeros(n_resources), sent_per_class=np.zeros(N_CLASSES),
            t_start_s=t_start_s, policy=policy,
        )

    @property
    def sent(self) -> int:
        """Queries sent in the window (every class)."""
        return int(round(float(np.sum(self.sent_per_class))))

    @property
    def decided(self) -> int:
        return self.ontime + self.failed + self.rejected

    @property
    def success_ratio(self) -> float:
        return self.ontime / self.decided if self.decided else 1.0

    @staticmethod
    def merge(parts: Sequence[WindowMeasurement]) -> WindowMeasurement:
        """Returns one measurement over consecutive windows: sums of counts, end-of-window stream state."""
        if not parts:
            raise ValueError("merge needs at least one window")
        n = len(parts[-1].streams)
        return WindowMeasurement(
            duration_s=sum(p.duration_s for p in parts),
            ontime=sum(p.ontime for p in parts), failed=sum(p.failed for p in parts),
            rejected=sum(p.rejected for p in parts), streams_new=sum(p.streams_new for p in parts),
            streams_rejected=sum(p.streams_rejected for p in parts),
            responses=np.sum([as_vector(p.responses, n) for p in parts], axis=0),
            bytes_in=np.sum([as_vector(p.bytes_in, n) for p in parts], axis=0),
            streams=np.asarray(parts[-1].streams, dtype=np.float64),
            load_qps=np.asarray(parts[-1].load_qps, dtype=np.float64),
            sent_per_class=np.sum([p.sent_per_class for p in parts], axis=0),
            t_start_s=parts[0].t_start_s, policy=parts[-1].policy,
        )


def as_vector(x: np.ndarray, n: int) -> np.ndarray:
    """Returns x as a float vector of length n (an empty array, as a window with no traffic gives, is zeros)."""
    x = np.asarray(x, dtype=np.float64)
    return np.zeros(n) if x.size == 0 else x
