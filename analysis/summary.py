"""Tallies of outcomes per window and per application, and the run summary computed from them.

A `Tally` counts queries by (send window, application, outcome) as records stream past, so that the
summary and the time series never need the records in memory.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from analysis.records import OUTCOMES


@dataclass
class Tally:
    """Counts [window, app, outcome] of queries, windows by send time."""

    window_s: float
    apps: tuple[str, ...]
    counts: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 3), dtype=np.int64))

    def __post_init__(self) -> None:
        if self.counts.shape[1:] != (len(self.apps), 3):
            self.counts = np.zeros((0, len(self.apps), 3), dtype=np.int64)

    def add(self, t_send_ms: np.ndarray, app: np.ndarray, outcome: np.ndarray) -> None:
        """Counts queries; `app` and `outcome` are indices into `apps` and OUTCOMES."""
        if len(t_send_ms) == 0:
            return
        w = (np.asarray(t_send_ms) / (self.window_s * 1000.0)).astype(np.int64)
        n_w = int(w.max()) + 1
        if n_w > self.counts.shape[0]:
            grown = np.zeros((max(n_w, 2 * self.counts.shape[0]), len(self.apps), 3), dtype=np.int64)
            grown[: self.counts.shape[0]] = self.counts
            self.counts = grown
        flat = (w * len(self.apps) + app) * 3 + outcome
        self.counts.reshape(-1)[:] += np.bincount(flat, minlength=self.counts.size)[: self.counts.size]

    def trimmed(self, n_windows: int) -> np.ndarray:
        out = np.zeros((n_windows, len(self.apps), 3), dtype=np.int64)
        k = min(n_windows, self.counts.shape[0])
        out[:k] = self.counts[:k]
        return out


@dataclass(frozen=True)
class Ratios:
    """Shares of queries answered on time, answered late (failed) and rejected."""

    queries: int
    success: float
    failed: float
    rejected: float

    @staticmethod
    def of(counts: np.ndarray) -> Ratios:
        c = np.asarray(counts).reshape(-1, 3).sum(axis=0)
        total = int(c.sum())
        if total == 0:
            return Ratios(0, float("nan"), float("nan"), float("nan"))
        return Ratios(total, c[0] / total, c[1] / total, c[2] / total)


@dataclass(frozen=True)
class RunSummary:
    """What a run reports: overall and per-application ratios, and the per-window time series."""

    environment: str
    topology: str
    policy: str
    seed: int | None
    lambda_per_min: str
    duration_s: float
    window_s: float
    overall: Ratios
    per_app: dict[str, Ratios]
    series_success: list[float]
    series_failed: list[float]
    series_rejected: list[float]
    extra: dict = field(default_factory=dict)

    @staticmethod
    def from_tally(tally: Tally, n_windows: int, **meta: object) -> RunSummary:
        counts = tally.trimmed(n_windows)
        per_window = counts.sum(axis=1)
        totals = per_window.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            shares = np.where(totals > 0, per_window / np.maximum(totals, 1), np.nan)
        return RunSummary(
            overall=Ratios.of(counts),
            per_app={a: Ratios.of(counts[:, i]) for i, a in enumerate(tally.apps)},
            series_success=[_num(x) for x in shares[:, 0]],
            series_failed=[_num(x) for x in shares[:, 1]],
            series_rejected=[_num(x) for x in shares[:, 2]],
            window_s=tally.window_s,
            **meta,  # type: ignore[arg-type]
        )

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1, allow_nan=True) + "\n")


def _num(x: float) -> float:
    return float(x) if np.isfinite(x) else float("nan")


def outcome_index(names: np.ndarray) -> np.ndarray:
    """Returns the OUTCOMES index of each outcome name."""
    lookup = {name: i for i, name in enumerate(OUTCOMES)}
    return np.array([lookup[n] for n in names], dtype=np.int64)
