"""Stream arrivals: a Poisson process of lambda clients per minute at each antenna, lambda piecewise constant.

A rate schedule `0:20,300:60` means 20 clients/min from t=0 s and 60 from t=300 s. Arrivals of one
antenna never depend on another's, and attributes come from the application mix (workload.apps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workload.apps import sample_streams
from workload.trace import Trace


@dataclass(frozen=True)
class RateSchedule:
    """Piecewise-constant lambda (clients per minute per antenna): (start_s, lambda) pairs, sorted."""

    segments: tuple[tuple[float, float], ...]

    @staticmethod
    def constant(lambda_per_min: float) -> RateSchedule:
        if not lambda_per_min >= 0:
            raise ValueError(f"lambda must be >= 0 clients per minute, got {lambda_per_min!r}")
        return RateSchedule(((0.0, float(lambda_per_min)),))

    @staticmethod
    def parse(text: str) -> RateSchedule:
        """Returns the schedule written as `60` or `START_S:LAMBDA,START_S:LAMBDA,...` (first start 0)."""
        text = text.strip()
        if ":" not in text:
            try:
                return RateSchedule.constant(float(text))
            except ValueError:
                raise ValueError(f"lambda {text!r}: expected a number or START_S:LAMBDA,...") from None
        segments = []
        for part in text.split(","):
            try:
                start, lam = (float(x) for x in part.split(":"))
            except ValueError:
                raise ValueError(f"rate schedule {text!r}: {part!r} is not START_S:LAMBDA") from None
            if start < 0 or lam < 0:
                raise ValueError(f"rate schedule {text!r}: {part!r} has a negative value")
            segments.append((start, lam))
        if segments[0][0] != 0 or any(b[0] <= a[0] for a, b in zip(segments, segments[1:], strict=False)):
            raise ValueError(f"rate schedule {text!r}: starts must begin at 0 and increase")
        return RateSchedule(tuple(segments))

    def lambda_at(self, t_s: float) -> float:
        lam = self.segments[0][1]
        for start, value in self.segments:
            if t_s >= start:
                lam = value
        return lam

    def __str__(self) -> str:
        if len(self.segments) == 1:
            return f"{self.segments[0][1]:g}"
        return ",".join(f"{s:g}:{v:g}" for s, v in self.segments)


def workload_rng(seed: int) -> np.random.Generator:
    """Returns the generator that draws a run's workload from its seed (the same in every command)."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])


def check_duration(duration_s: float, what: str = "--duration") -> float:
    """Returns the duration if it is a finite number of seconds > 0; raises ValueError naming it."""
    if not (isinstance(duration_s, (int, float)) and np.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"{what} {duration_s!r}: must be a finite number of seconds > 0")
    return float(duration_s)


def arrival_times(schedule: RateSchedule, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """Returns sorted Poisson arrival times in [0, duration_s) following the schedule."""
    out = []
    bounds = [s for s, _ in schedule.segments] + [duration_s]
    for (start, lam), end in zip(schedule.segments, bounds[1:], strict=True):
        end = min(end, duration_s)
        if end <= start or lam == 0:
            continue
        n = rng.poisson(lam / 60.0 * (end - start))
        out.append(np.sort(start + rng.random(n) * (end - start)))
    return np.concatenate(out) if out else np.zeros(0)


def generate_trace(antennas: tuple[str, ...], schedule: RateSchedule, duration_s: float,
                   rng: np.random.Generator) -> Trace:
    """Returns the streams that open at the antennas in [0, duration_s) (they may last beyond it)."""
    check_duration(duration_s, "duration")
    starts, names = [], []
    for a in antennas:
        t = arrival_times(schedule, duration_s, rng)
        starts.append(t)
        names.append(np.full(len(t), a, dtype=object))
    start = np.concatenate(starts) if starts else np.zeros(0)
    attrs = sample_streams(len(start), rng)
    order = np.argsort(start, kind="stable")
    return Trace(
        stream_id=np.arange(len(start), dtype=np.int64),
        antenna=np.concatenate(names)[order] if names else np.zeros(0, dtype=object),
        start_s=np.round(start[order], 6),
        duration_s=attrs["duration_s"][order],
        app=attrs["app"][order],
        fps=attrs["fps"][order],
        frame_bytes=attrs["frame_bytes"][order],
        max_delay_ms=attrs["max_delay_ms"][order],
        min_accuracy=attrs["min_accuracy"][order],
        task=attrs["task"][order],
    )
