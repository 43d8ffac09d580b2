"""Application classes: per class the distributions of frame rate, frame size, delay budget and accuracy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AppClass:
    """One kind of application opening streams; each range is sampled uniformly per stream."""

    name: str
    share: float
    """Fraction of new streams that belong to this class."""
    task: str
    fps_range: tuple[int, int]
    frame_kb_range: tuple[float, float]
    max_delay_ms_range: tuple[float, float]
    min_accuracy_range: tuple[float, float]
    mean_duration_s: float
    """Stream lifetimes are exponential with this mean (at least 5 s)."""


# Budgets follow the usual figures for each kind of application (AR/VR motion-to-photon tens of ms,
# assistance a few hundred ms, surveillance up to a second); accuracies against the models' COCO AP50.
APPS: tuple[AppClass, ...] = (
    AppClass("ar-vr", 0.25, "object-detection", (15, 30), (20, 40), (50, 100), (0.15, 0.30), 50.0),
    AppClass("cognitive-assistance", 0.25, "object-detection", (5, 15), (30, 60), (100, 300), (0.20, 0.35), 50.0),
    AppClass("video-surveillance", 0.30, "object-detection", (10, 25), (40, 80), (300, 1000), (0.40, 0.55), 50.0),
    AppClass("smart-traffic", 0.20, "object-detection", (20, 30), (20, 50), (80, 150), (0.20, 0.35), 50.0),
)
APP_NAMES = tuple(a.name for a in APPS)
MIN_DURATION_S = 5.0


def app_by_name(name: str) -> AppClass:
    for a in APPS:
        if a.name == name:
            return a
    raise KeyError(f"unknown application {name!r}; known: {', '.join(APP_NAMES)}")


def _mix_mean(per_stream: Callable[[AppClass], float]) -> float:
    """Returns the mean over the application mix (weighted by share) of a per-class expectation."""
    return sum(a.share * per_stream(a) for a in APPS) / sum(a.share for a in APPS)


def _mean_queries(a: AppClass) -> float:
    return (a.fps_range[0] + a.fps_range[1]) / 2 * (MIN_DURATION_S + a.mean_duration_s)


def mean_queries_per_stream() -> float:
    """Returns the expected number of queries of one new stream, over the application mix."""
    return _mix_mean(_mean_queries)


def mean_bits_per_stream() -> float:
    """Returns the expected bits one new stream sends over its lifetime (lifetime x fps x frame size, drawn
    independently), over the application mix."""
    return _mix_mean(lambda a: _mean_queries(a) * (a.frame_kb_range[0] + a.frame_kb_range[1]) / 2 * 1000 * 8)


def sample_streams(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Returns n streams' attributes drawn from the application mix (columns of the trace format)."""
    shares = np.array([a.share for a in APPS])
    which = rng.choice(len(APPS), size=n, p=shares / shares.sum())
    u = rng.random((n, 5))
    lo = lambda f: np.array([f(a)[0] for a in APPS])[which]  # noqa: E731
    hi = lambda f: np.array([f(a)[1] for a in APPS])[which]  # noqa: E731
    fps_lo, fps_hi = lo(lambda a: a.fps_range), hi(lambda a: a.fps_range)
    fps = np.floor(fps_lo + u[:, 0] * (fps_hi - fps_lo + 1)).astype(np.int64)
    kb = lo(lambda a: a.frame_kb_range) + u[:, 1] * (hi(lambda a: a.frame_kb_range) - lo(lambda a: a.frame_kb_range))
    delay = lo(lambda a: a.max_delay_ms_range) + u[:, 2] * (
        hi(lambda a: a.max_delay_ms_range) - lo(lambda a: a.max_delay_ms_range))
    acc = lo(lambda a: a.min_accuracy_range) + u[:, 3] * (
        hi(lambda a: a.min_accuracy_range) - lo(lambda a: a.min_accuracy_range))
    mean_dur = np.array([a.mean_duration_s for a in APPS])[which]
    duration = MIN_DURATION_S + rng.exponential(1.0, size=n) * mean_dur
    return {
        "app": np.array(APP_NAMES, dtype=object)[which],
        "task": np.array([a.task for a in APPS], dtype=object)[which],
        "fps": fps.astype(np.float64),
        "frame_bytes": np.round(kb * 1000).astype(np.int64),
        "max_delay_ms": np.round(delay, 1),
        "min_accuracy": np.round(acc, 3),
        "duration_s": np.round(duration, 3),
    }
