"""Measures whether this host holds the speed of the core real inference runs on, with nothing of a live run
beside it: the control for the fidelity monitor's "real-inference overrun" (live/verdict.py). A live run's real
worker is judged against the profile timed just before it (live/realprofile.py); where the core itself slows
down for seconds (a virtual machine's host, its other tenants, its clock), every batch in those seconds overruns
and the run is judged not faithful with the cause "the core itself ran slower (the host)". This benchmark runs
the same model alone, one thread pinned to the real workers' CPU, one batch after each idle time of a dilated
run's real replica (at K = 4 the demonstration's computes ~55 ms a frame, stays busy until 4x that while its
batch's virtual time passes, and takes the next of its ~10 frames a virtual second: 250-350 ms idle between batches),
and reports the spread a run would have been judged on: p95 over the median, the medians of 4 s windows (one
virtual second at K = 4) and the stretches of windows slower than SLOW_SHARE over the whole median. With
`--also MODEL` a second model takes turns with the first, batch by batch: where both slow down in the same windows,
by the same share, the core itself ran slower, not the one model.

    .venv/bin/python benchmarks/bench_core_steadiness.py [--model mobilenet-ssd] [--also tiny-yolov2]
                                                         [--seconds 180] [--idle-ms 250,350] [--results-page]
"""

from __future__ import annotations

import argparse
import itertools
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
    return time_alternating([model], seconds, idle_ms, cpu, seed)[model]


def time_alternating(models: list[str], seconds: float, idle_ms: tuple[float, float], cpu: int, seed: int = 1
                     ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """As `time_alone`, the batches taking turns among `models` (each after its idle time), so that they see the
    same seconds of the core; returns each model's starts (s) and durations (ms)."""
    from workers.modelconfig import load_model
    from workers.runtime import make_session

    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        feeds = []
        for model in models:
            config = load_model(model)
            session = make_session(config.onnx_path, "cpu", 1)
            x = np.random.default_rng(seed).uniform(0, 255, (1, 3, config.input_height, config.input_width)
                                                    ).astype(np.float32)
            feed = {session.get_inputs()[0].name: x}
            for _ in range(30):  # warm-up: allocations, kernel choice, the caches
                session.run(None, feed)
            feeds.append((model, session, feed))
        rng = np.random.default_rng(seed)
        times: dict[str, tuple[list[float], list[float]]] = {m: ([], []) for m in models}
        t0 = time.perf_counter()
        for turn in itertools.count():
            time.sleep(rng.uniform(*idle_ms) / 1000.0)
            a = time.perf_counter()
            if a - t0 >= seconds:  # no batch starts past the last whole window
                break
            model, session, feed = feeds[turn % len(feeds)]
            session.run(None, feed)
            times[model][0].append(a - t0)
            times[model][1].append((time.perf_counter() - a) * 1000.0)
    finally:
        os.sched_setaffinity(0, before)  # the page's machine line counts this process's cores
    return {m: (np.asarray(t), np.asarray(d)) for m, (t, d) in times.items()}


def window_agreement(a: Steadiness, b: Steadiness) -> tuple[float, float]:
    """Returns how two models timed in turns (`time_alternating`) slowed down together: the correlation of their
    window medians, each over its own median, over the windows both have, and `b`'s mean of that ratio in `a`'s
    slow windows (NaN where there is none). The same slowdown in both says the core itself ran slower, whatever
    ran on it."""
    n = min(len(a.window_medians_ms), len(b.window_medians_ms))
    ra = np.asarray(a.window_medians_ms[:n]) / a.median_ms
    rb = np.asarray(b.window_medians_ms[:n]) / b.median_ms
    both = np.isfinite(ra) & np.isfinite(rb)
    corr = float(np.corrcoef(ra[both], rb[both])[0, 1]) if both.sum() > 2 and ra[both].std() and rb[both].std() \
        else float("nan")
    slow = [i for i in a.slow_windows if i < n and both[i]]
    return corr, float(rb[slow].mean()) if slow else float("nan")


def report(s: Steadiness, model: str, cpu: int, idle_ms: tuple[float, float], seconds: float,
           beside: str | None = None) -> list[str]:
    """Returns the lines saying `s` of `model` (`beside`: the model it took turns with, if any)."""
    marks = "".join("#" if i in s.slow_windows else " " if m != m else "." for i, m in enumerate(s.window_medians_ms))
    return [
        f"{model} {'in turns with ' + beside if beside else 'alone'} on CPU {cpu} (one thread), one frame per batch "
        f"after {idle_ms[0]:g}-{idle_ms[1]:g} ms idle"
        + (f" (its own batches about twice as far apart, {beside}'s between them)" if beside else "")
        + f", {seconds:g} s: {s.batches} batches, median {s.median_ms:.1f} ms",
        f"  p95 {1.0 + s.p95_share:.3f}x the median: a run's real inference would overrun its profile by "
        f"{s.p95_share:.3f} at p95 on this core with nothing of a run beside it (the monitor's limit "
        f"{THRESHOLDS.real_overrun_p95_share:g})",
        f"  {WINDOW_S:g} s windows slower than {1.0 + SLOW_SHARE:g}x the median: {len(s.slow_windows)} of "
        f"{len(s.window_medians_ms)}, the longest stretch {s.longest_slow_s:g} s",
        f"  windows ('#' slow): {marks}",
        "  window medians (ms): " + " ".join(f"{m:.0f}" if m == m else "-" for m in s.window_medians_ms),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mobilenet-ssd", help="zoo model (default: the demonstration's real worker's)")
    ap.add_argument("--also", default=None, metavar="MODEL",
                    help="a second zoo model timed in turns with --model, batch by batch (default: none)")
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
    models = [args.model] + ([args.also] if args.also else [])
    if len(set(models)) < len(models):
        ap.error(f"--also {args.also!r}: the same model as --model")
    from workers.modelconfig import load_model

    for option, model in zip(("--model", "--also"), models, strict=False):
        try:
            load_model(model)
        except KeyError as e:
            ap.error(f"{option} {model!r}: {e.args[0]}")
    started = time.perf_counter()
    timed = time_alternating(models, args.seconds, (low, high), cpu)
    found = {m: steadiness(*timed[m]) for m in models}
    lines = [line for m in models for line in report(found[m], m, cpu, (low, high), args.seconds,
                                                      next((o for o in models if o != m), None))]
    if args.also:
        corr, also_slow = window_agreement(found[args.model], found[args.also])
        lines += [f"{args.model} and {args.also} in turns: their {WINDOW_S:g} s window medians (each over its own "
                  "median) " + (f"correlate at {corr:.3f}" if corr == corr else "are too few or too flat to correlate")
                  + "; " + (f"in {args.model}'s slow windows {args.also}'s were {also_slow:.3f}x its median"
                            if also_slow == also_slow else f"{args.model} had no slow window")]
    print("\n".join(lines))
    if args.results_page:
        body = ("The core real inference runs on, with nothing of a live run beside it: the demonstration's real model "
                f"timed{'' if args.also else ' alone'} as its real replica works under time dilation (live/realprofile.py times it before each "
                "run; the fidelity monitor then judges the run's batches against that profile). Windows slower than "
                "the whole run's median are the host's doing here, since nothing else of the project runs: where a "
                "live run's verdict names 'the core itself ran slower (the host)', this is the control."
                + (f" Here a second model, {args.also}, took turns with it batch by batch (each model's own batches "
                   "about twice as far apart as a lone replica's): a slowdown both show in the same windows is the "
                   "core's, not one model's." if args.also else "") + "\n\n"
                "```text\n" + "\n".join(lines) + "\n```\n\n"
                f"The benchmark took {time.perf_counter() - started:.0f} s.\n")
        path = write_results_page(args.results_page, "Steadiness of the real-inference core", body)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
