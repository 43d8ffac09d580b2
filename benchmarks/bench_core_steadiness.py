"""Measures whether this host holds the speed of the core real inference runs on, with nothing of a live run
beside it: the control for the fidelity monitor's "real-inference overrun" (live/verdict.py). A live run's real
worker is judged against the profile timed just before it (live/realprofile.py); where the core itself slows
down for seconds (a virtual machine's host, its other tenants, its clock), every batch in those seconds overruns
and the run is judged not faithful with the cause "the core itself ran slower (the host)". This benchmark runs
the same model alone, one thread pinned to the real workers' CPU, one batch after each idle time of a dilated
run's real replica (at K = 4 the demonstration's computes ~55 ms a frame, stays busy until 4x that while its
batch's virtual time passes, and takes the next of its ~10 frames a virtual second: 250-350 ms idle between batches),
and reports the spread a run would have been judged on: p95 over the median, the medians of 4 s windows (one
virtual second at K = 4) and the stretches of windows slower than SLOW_SHARE over the whole median.

    .venv/bin/python benchmarks/bench_core_steadiness.py [--model mobilenet-ssd] [--seconds 180]
                                                         [--idle-ms 250,350] [--results-page]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.resultspage import add_results_page_argument, write_results_page  # noqa: E402
from live.verdict import THRESHOLDS  # noqa: E402

WINDOW_S = 4.0
"""Seconds per window: one virtual second of a run at K = 4 (the demonstration's)."""
SLOW_SHARE = 0.12
"""A window is slow when its median is over the whole run's median by more than this share."""


@dataclass(frozen=True)
class Steadiness:
    """What the timings say about the core's speed (ms; shares of the median)."""

    batches: int
    median_ms: float
    p95_share: float
    """p95 / median - 1: what the monitor compares with its real_overrun_p95_share (against the timed profile, a median)."""
    window_medians_ms: list[float]
    slow_windows: list[int]
    """Indices of the windows whose median is over (1 + SLOW_SHARE) x the median."""
    longest_slow_s: float
    """The longest run of consecutive slow windows (s)."""


def steadiness(t_s: np.ndarray, batch_ms: np.ndarray, window_s: float = WINDOW_S,
               slow_share: float = SLOW_SHARE) -> Steadiness:
    """Returns the steadiness of batches that started at `t_s` (s from the start, at least 0) and took `batch_ms`;
    window i covers [i, i + 1) x `window_s` (NaN where no batch started in it: not slow, and it breaks a stretch).
    Raises ValueError naming the argument at fault."""
    t_s, batch_ms = np.asarray(t_s, dtype=float), np.asarray(batch_ms, dtype=float)
    if t_s.shape != batch_ms.shape or t_s.ndim != 1:
        raise ValueError(f"t_s and batch_ms: one value per batch in each (shapes {t_s.shape} and {batch_ms.shape})")
    if not len(batch_ms):
        raise ValueError("no batch was timed")
    if not np.isfinite(t_s).all() or (t_s < 0).any():
        raise ValueError("t_s: every start must be finite and at least 0 s")
    if not np.isfinite(batch_ms).all() or (batch_ms <= 0).any():
        raise ValueError("batch_ms: every batch time must be finite and above 0 ms")
    if not (window_s > 0 and np.isfinite(window_s)):
        raise ValueError(f"window_s: {window_s!r} is not a positive number of seconds")
    median = float(np.median(batch_ms))
    window = np.floor(t_s / window_s).astype(np.int64)
    medians = [float(np.median(batch_ms[window == w])) if (window == w).any() else float("nan")
               for w in range(int(window.max()) + 1)]
    slow = [i for i, m in enumerate(medians) if m > (1.0 + slow_share) * median]
    longest = run = 0
    for i in range(len(medians)):
        run = run + 1 if i in slow else 0
        longest = max(longest, run)
    return Steadiness(len(batch_ms), median, float(np.percentile(batch_ms, 95)) / median - 1.0, medians, slow,
                      longest * window_s)


def time_alone(model: str, seconds: float, idle_ms: tuple[float, float], cpu: int, seed: int = 1
               ) -> tuple[np.ndarray, np.ndarray]:
    """Times batches of one frame of zoo model `model` (one intra-op thread) on CPU `cpu`, each after a uniform
    idle time in `idle_ms`, for `seconds`; returns their start (s) and duration (ms)."""
    from workers.modelconfig import load_model
    from workers.runtime import make_session

    config = load_model(model)
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        session = make_session(config.onnx_path, "cpu", 1)
        name = session.get_inputs()[0].name
        x = np.random.default_rng(seed).uniform(0, 255, (1, 3, config.input_height, config.input_width)
                                                ).astype(np.float32)
        for _ in range(30):  # warm-up: allocations, kernel choice, the caches
            session.run(None, {name: x})
        rng = np.random.default_rng(seed)
        starts, took = [], []
        t0 = time.perf_counter()
        while True:
            time.sleep(rng.uniform(*idle_ms) / 1000.0)
            a = time.perf_counter()
            if a - t0 >= seconds:  # no batch starts past the last whole window
                break
            session.run(None, {name: x})
            starts.append(a - t0)
            took.append((time.perf_counter() - a) * 1000.0)
    finally:
        os.sched_setaffinity(0, before)  # the page's machine line counts this process's cores
    return np.asarray(starts), np.asarray(took)


def report(s: Steadiness, model: str, cpu: int, idle_ms: tuple[float, float], seconds: float) -> list[str]:
    marks = "".join("#" if i in s.slow_windows else " " if m != m else "." for i, m in enumerate(s.window_medians_ms))
    return [
        f"{model} alone on CPU {cpu} (one thread), one frame per batch after {idle_ms[0]:g}-{idle_ms[1]:g} ms idle, "
        f"{seconds:g} s: {s.batches} batches, median {s.median_ms:.1f} ms",
        f"  p95 {1.0 + s.p95_share:.3f}x the median: a run's real inference would overrun its profile by "
        f"{s.p95_share:.3f} at p95 on this core alone (the monitor's limit {THRESHOLDS.real_overrun_p95_share:g})",
        f"  {WINDOW_S:g} s windows slower than {1.0 + SLOW_SHARE:g}x the median: {len(s.slow_windows)} of "
        f"{len(s.window_medians_ms)}, the longest stretch {s.longest_slow_s:g} s",
        f"  windows ('#' slow): {marks}",
        "  window medians (ms): " + " ".join(f"{m:.0f}" if m == m else "-" for m in s.window_medians_ms),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mobilenet-ssd", help="zoo model (default: the demonstration's real worker's)")
    ap.add_argument("--seconds", type=float, default=180.0,
                    help="how long to time (default 180: the demonstration's real time at K = 4)")
    ap.add_argument("--idle-ms", default="250,350", help="idle time before each batch, LOW,HIGH ms (default: the "
                    "demonstration's real replica at K = 4, about 10 frames a virtual second)")
    add_results_page_argument(ap, "core-steadiness")
    args = ap.parse_args()
    try:
        low, high = (float(v) for v in args.idle_ms.split(","))
    except ValueError:
        ap.error(f"--idle-ms {args.idle_ms!r}: expected LOW,HIGH in ms")
    if not 0 <= low <= high < float("inf"):
        ap.error(f"--idle-ms {args.idle_ms!r}: expected 0 <= LOW <= HIGH, finite")
    if not 0 < args.seconds < float("inf"):
        ap.error(f"--seconds {args.seconds!r}: expected a positive number of seconds")
    from live.realprofile import real_worker_cpu

    cpu = real_worker_cpu()
    started = time.perf_counter()
    s = steadiness(*time_alone(args.model, args.seconds, (low, high), cpu))
    lines = report(s, args.model, cpu, (low, high), args.seconds)
    print("\n".join(lines))
    if args.results_page:
        body = ("The core real inference runs on, with nothing of a live run beside it: the demonstration's real model "
                "timed alone as its real replica works under time dilation (live/realprofile.py times it before each "
                "run; the fidelity monitor then judges the run's batches against that profile). Windows slower than "
                "the whole run's median are the host's doing here, since nothing else of the project runs: where a "
                "live run's verdict names 'the core itself ran slower (the host)', this is the control.\n\n"
                "```text\n" + "\n".join(lines) + "\n```\n\n"
                f"The benchmark took {time.perf_counter() - started:.0f} s.\n")
        path = write_results_page(args.results_page, "Steadiness of the real-inference core", body)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
