"""How closely any faithful emulator can follow the simulator, measured on the simulator itself.

A paper-load case compares one testbed run with one simulation of the same trace. Both draw what the trace does
not fix (each packet's link jitter, a random policy's choices) from their own generators, so even a perfect
emulator would not reproduce the simulator's per-window series, only a series like it. Simulating the same trace
again with other run seeds gives that floor of disagreement: the per-window correlation of the simulator against
itself (its "ceiling": a correlation an emulator cannot be expected to beat) and the policy orders that hold under
every seed ("settled"; an order that another seed reverses is a coin toss, not a ranking). The page reports both
beside the testbed's figures, judged against them where they are below the issue's bars.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import numpy as np

from analysis.fidelity import SELF_SEEDS, self_correlation
from benchmarks.dilation_resim import resimulable, simulate_case


@dataclass(frozen=True)
class Ceiling:
    """One policy of one case: the simulator's per-window correlation with itself across run seeds (nan where its
    own series is flat), and the range of its success over them."""

    corr_median: float
    corr_min: float
    success_min: float
    success_max: float


def ceilings(result: dict) -> tuple[dict[str, Ceiling], set[tuple[str, str]]]:
    """Returns per policy of a kept paper case the simulator's correlation with itself (its own seed's series, the
    workload's as `compare` runs it, against each of SELF_SEEDS'; `analysis.fidelity.self_correlation`), and the
    pairs (a, b) it orders a > b under its own seed and reverses under some other (unsettled orders); empty where
    the case cannot be simulated again (`resimulable`)."""
    if not resimulable(result):
        return {}, set()
    out: dict[str, Ceiling] = {}
    success: dict[str, list[float]] = {}
    for p in result["policies"]:
        own, base = simulate_case(result, p)
        runs = [simulate_case(result, p, seed) for seed in SELF_SEEDS]
        corrs = self_correlation(base, [series for _, series in runs])
        success[p] = [own] + [s for s, _ in runs]
        out[p] = Ceiling(corr_median=statistics.median(corrs), corr_min=min(corrs),
                         success_min=min(success[p]), success_max=max(success[p]))
    unsettled = {(a, b) for a in success for b in success
                 if success[a][0] > success[b][0] and any(x < y for x, y in zip(success[a], success[b], strict=True))}
    return out, unsettled


def window_bar(wanted: float, ceiling: Ceiling | None) -> float:
    """Returns the window correlation a case's testbed must reach: `wanted`, or the simulator's median correlation
    with itself where that is lower (nan ceilings, a flat series under every seed, leave `wanted`)."""
    if ceiling is None or not np.isfinite(ceiling.corr_median):
        return wanted
    return min(wanted, ceiling.corr_median)
