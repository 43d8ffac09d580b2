"""How closely any faithful emulator can follow the simulator, measured on the simulator itself.

A paper-load case compares one testbed run with one simulation of the same trace. Both draw what the trace does
not fix (each packet's link jitter, a random policy's choices) from their own generators, so even a perfect
emulator would not reproduce the simulator's per-window series, only a series like it. Simulating the same trace
again with other run seeds gives that floor of disagreement: the per-window correlation of the simulator against
itself (what a faithful emulator's correlation can be expected to reach; the median, so that a faithful testbed
falls below it about half the time: a strict bar), how many queries one simulation misses that the other does
not, and the range of each pair of policies' success gap over the seeds (a testbed that orders two policies the
other way round by a gap the simulator itself gives under one of its seeds has not broken the ranking). The page
reports them beside the testbed's figures and judges against them where they are below the issue's bars; they come
from the simulator of the page's commit, the testbed's own correlation from the simulator of the case's.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import numpy as np

from analysis.fidelity import other_seeds, self_correlation
from analysis.pairing import one_side
from benchmarks.dilation_resim import case_seed, missed_case, resimulable, simulate_case


@dataclass(frozen=True)
class Ceiling:
    """One policy of one case: the simulator's per-window correlation with itself across run seeds (nan where its
    own series is flat), and its success under its own seed then each other."""

    corr_median: float
    corr_min: float
    success: tuple[float, ...]
    one_side: tuple[int, ...] = ()
    """Per other seed, the queries missed by its own seed's simulation or that seed's alone
    (analysis.pairing.one_side)."""


def ceilings(result: dict, wire_ratio: float = 1.0) -> dict[str, Ceiling]:
    """Returns per policy of a kept paper case the simulator's correlation with itself (its own seed's series, the
    workload's as `compare` runs it, against each of `other_seeds`'; `analysis.fidelity.self_correlation`) and its
    success under each seed (`wire_ratio`: the simulator's, `dilation_resim.simulate_case`); empty where the case
    cannot be simulated again (`resimulable`)."""
    if not resimulable(result):
        return {}
    out: dict[str, Ceiling] = {}
    for p in result["policies"]:
        own, base = simulate_case(result, p, wire_ratio=wire_ratio)
        runs = [simulate_case(result, p, seed, wire_ratio) for seed in other_seeds(case_seed(result))]
        corrs = self_correlation(base, [series for _, series in runs])
        mine = missed_case(result, p, wire_ratio=wire_ratio)
        out[p] = Ceiling(corr_median=statistics.median(corrs) if corrs else float("nan"),
                         corr_min=min(corrs) if corrs else float("nan"),
                         success=(own, *(s for s, _ in runs)),
                         one_side=tuple(one_side(mine, missed_case(result, p, seed, wire_ratio))
                                        for seed in other_seeds(case_seed(result))))
    return out


def gap_within_simulator(a: Ceiling | None, b: Ceiling | None, testbed_gap: float) -> bool:
    """Whether a testbed's success gap between two policies (a - b) is one the simulator itself gives under one of
    its seeds, within its range of a - b over them (False without both ceilings)."""
    if a is None or b is None:
        return False
    gaps = [x - y for x, y in zip(a.success, b.success, strict=True)]
    return min(gaps) <= testbed_gap <= max(gaps)


def window_bar(wanted: float, ceiling: Ceiling | None) -> float:
    """Returns the window correlation a case's testbed must reach: `wanted`, or the simulator's median correlation
    with itself where that is lower (nan ceilings, a flat series under every seed, leave `wanted`)."""
    if ceiling is None or not np.isfinite(ceiling.corr_median):
        return wanted
    return min(wanted, ceiling.corr_median)
