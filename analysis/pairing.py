"""The testbed against the simulator query by query, on one trace: each query's outcome on both sides, paired by
(stream_id, query), and for the queries the testbed missed while the simulator answered them in time, why (the
stage whose latency grew most against the same query in the simulator, no answer, or the reason given), where
(cluster) and when (how they bunch into windows). Ratios and window series say how far the two sides are apart;
this says which queries make the gap.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

    from analysis.records import QueryBatch

PAIR_STAGES: tuple[tuple[str, str, str], ...] = (
    ("to scheduler", "t_send_ms", "t_sched_ms"),
    ("to worker", "t_sched_ms", "t_worker_ms"),
    ("queueing", "t_worker_ms", "t_infer_start_ms"),
    ("inference", "t_infer_start_ms", "t_infer_end_ms"),
    ("network down", "t_infer_end_ms", "t_response_ms"),
)
"""Each stage of a query's path as (name, start column, end column) of the per-query log."""
NO_ANSWER = "no answer"
"""A testbed miss whose log has no response time: the query or its answer never came back."""
TOP_WINDOW_SHARE = 0.1
"""The worst tenth of the windows (by testbed-only misses) is where `PairedMisses.share_in_worst_windows` looks."""


@dataclass(frozen=True)
class PairedMisses:
    """One policy's queries paired across the two sides' logs, and the testbed's extra misses explained."""

    policy: str
    paired: int
    """Queries in both logs (the same stream and query number)."""
    only_simulator: int
    """Queries in the simulator's log alone (never sent, or lost from the testbed's log)."""
    only_testbed: int
    both_ontime: int
    testbed_missed: int
    """Missed (failed or rejected) on the testbed, on time in the simulator."""
    simulator_missed: int
    """On time on the testbed, missed in the simulator."""
    both_missed: int
    testbed_missed_why: dict[str, int]
    """The testbed's extra misses by cause: for a failed query the stage that grew most against the simulator's
    same query ("network down", ...) or NO_ANSWER; for a rejected one "rejected: <reason>"."""
    testbed_missed_where: dict[str, int]
    """The testbed's extra misses by the cluster the testbed sent them to ("none": rejected before placement)."""
    median_excess_ms: dict[str, float]
    """Per stage, the median testbed-minus-simulator latency over the testbed's extra failed misses answered on
    both sides: how far that stage moved for them."""
    worst_windows: list[tuple[int, int]]
    """(window index, testbed-only misses) of the five windows with the most, most first."""
    share_in_worst_windows: float
    """Share of the testbed's extra misses that fall in the worst TOP_WINDOW_SHARE of windows (nan: none)."""
    simulator_self_one_side: float = float("nan")
    """The simulator against itself: queries missed by one of two simulations of the trace alone (its own run seed
    and another of analysis.fidelity.SELF_SEEDS), the median over those seeds; nan where not simulated again. What
    `one_side` can be expected to be for a faithful testbed."""

    @property
    def net_missed(self) -> int:
        """Testbed's extra misses less the simulator's: success on the testbed is this many queries below."""
        return self.testbed_missed - self.simulator_missed

    @property
    def one_side(self) -> int:
        """Queries missed by one side alone, whichever."""
        return self.testbed_missed + self.simulator_missed


def query_keys(stream_id: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Returns one int64 per query from its stream and number (a query's identity in both logs)."""
    return np.asarray(stream_id, dtype=np.int64) * (1 << 32) + np.asarray(query, dtype=np.int64)


def _keys(table: pa.Table) -> np.ndarray:
    return query_keys(np.asarray(table.column("stream_id")), np.asarray(table.column("query")))


def missed_keys(table: pa.Table) -> np.ndarray:
    """Returns the sorted keys (`query_keys`) of the queries a log has not on time."""
    missed = np.asarray(table.column("outcome").to_pylist(), dtype=object) != "ontime"
    return np.sort(_keys(table)[missed])


class MissedKeys:
    """A simulation's record sink that keeps only the keys of the queries not on time (a few where a whole log
    would be millions of rows): `keys()` once the simulation is over."""

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []

    def __call__(self, batch: QueryBatch) -> None:
        missed = batch["outcome"] != "ontime"
        self._parts.append(query_keys(batch["stream_id"][missed], batch["query"][missed]))

    def keys(self) -> np.ndarray:
        return np.sort(np.concatenate(self._parts)) if self._parts else np.zeros(0, dtype=np.int64)


def one_side(a: np.ndarray, b: np.ndarray) -> int:
    """Returns how many queries one of two runs of the same trace missed and the other did not (keys from
    `missed_keys` or `MissedKeys`)."""
    return len(np.setxor1d(a, b))


def _floats(table: pa.Table, name: str, at: np.ndarray) -> np.ndarray:
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)[at]


def _strings(table: pa.Table, name: str, at: np.ndarray) -> np.ndarray:
    return np.asarray(table.column(name).to_pylist(), dtype=object)[at]


def pair_misses(policy: str, simulator: pa.Table, testbed: pa.Table, window_s: float = 1.0) -> PairedMisses:
    """Returns `simulator` and `testbed` (the same trace's per-query logs under `policy`) paired query by query;
    windows by the simulator's send time, as the window series."""
    ks, kt = _keys(simulator), _keys(testbed)
    common, at_s, at_t = np.intersect1d(ks, kt, assume_unique=False, return_indices=True)
    ok_s = _strings(simulator, "outcome", at_s) == "ontime"
    ok_t = _strings(testbed, "outcome", at_t) == "ontime"
    extra = ok_s & ~ok_t
    why: Counter[str] = Counter()
    excess: dict[str, list[float]] = {name: [] for name, _, _ in PAIR_STAGES}
    outcome_t = _strings(testbed, "outcome", at_t)[extra]
    reason_t = _strings(testbed, "reason", at_t)[extra]
    grew = np.stack([_floats(testbed, end, at_t)[extra] - _floats(testbed, start, at_t)[extra]
                     - (_floats(simulator, end, at_s)[extra] - _floats(simulator, start, at_s)[extra])
                     for _, start, end in PAIR_STAGES], axis=1) if extra.any() else np.zeros((0, len(PAIR_STAGES)))
    for i in range(len(outcome_t)):
        if outcome_t[i] == "rejected":
            why[f"rejected: {reason_t[i] or 'no reason'}"] += 1
        elif not np.isfinite(grew[i]).all():
            why[NO_ANSWER] += 1
        else:
            why[PAIR_STAGES[int(np.argmax(grew[i]))][0]] += 1
            for j, (name, _, _) in enumerate(PAIR_STAGES):
                excess[name].append(float(grew[i, j]))
    windows = (_floats(simulator, "t_send_ms", at_s)[extra] / (window_s * 1000.0)).astype(np.int64)
    per_window = Counter(windows.tolist())
    n_windows = int(np.ceil(np.nanmax(_floats(simulator, "t_send_ms", at_s)) / (window_s * 1000.0))) if len(common) else 0
    worst_n = max(1, int(round(TOP_WINDOW_SHARE * n_windows)))
    worst = per_window.most_common()
    return PairedMisses(
        policy=policy, paired=len(common), only_simulator=len(ks) - len(common), only_testbed=len(kt) - len(common),
        both_ontime=int((ok_s & ok_t).sum()), testbed_missed=int(extra.sum()), simulator_missed=int((~ok_s & ok_t).sum()),
        both_missed=int((~ok_s & ~ok_t).sum()), testbed_missed_why=dict(why.most_common()),
        testbed_missed_where=dict(Counter(c or "none" for c in _strings(testbed, "cluster", at_t)[extra]).most_common()),
        median_excess_ms={k: float(np.median(v)) for k, v in excess.items() if v},
        worst_windows=[(int(w), int(n)) for w, n in worst[:5]],
        share_in_worst_windows=sum(n for _, n in worst[:worst_n]) / int(extra.sum()) if extra.any() else float("nan"))


def markdown_lines(rows: list[PairedMisses], window_s: float) -> list[str]:
    """Returns the report's section on the paired queries, a table and a line of causes per policy."""
    lines = ["## Query by query", "",
             "Each query paired across both logs. *Testbed missed*: on time in the simulator, missed on the testbed; "
             "*sim missed*: the other way round. A testbed miss's cause is the stage that grew most against the "
             f"simulator's same query. *Worst {TOP_WINDOW_SHARE:.0%}*: the share of the testbed's misses in the "
             f"tenth of the {window_s:g} s windows that hold most of them (a tenth: spread evenly).", "",
             "*One side alone*: testbed missed plus sim missed; beside it the same count for the simulator against "
             "itself (its own run seed against each other, the median): a testbed that misses other queries than the "
             "simulator no more often than the simulator does under another seed differs from it by chance.", "",
             "| policy | paired | both on time | testbed missed | sim missed | both missed | one side alone | "
             "sim vs itself | worst 10 % | causes |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        causes = ", ".join(f"{k} {v}" for k, v in r.testbed_missed_why.items()) or "none"
        lines.append(f"| {r.policy} | {r.paired} | {r.both_ontime} | {r.testbed_missed} | {r.simulator_missed} | "
                     f"{r.both_missed} | {r.one_side} | {r.simulator_self_one_side:g} | "
                     f"{r.share_in_worst_windows:.2f} | {causes} |")
    for r in rows:
        if r.median_excess_ms:
            grew = ", ".join(f"{k} {v:+.2f}" for k, v in r.median_excess_ms.items())
            where = ", ".join(f"{k} {v}" for k, v in r.testbed_missed_where.items())
            lines.append(f"\n{r.policy}: the testbed's failed misses by cluster: {where}; median growth per stage "
                         f"(ms): {grew}; worst windows: "
                         + ", ".join(f"{w} ({n})" for w, n in r.worst_windows) + ".")
    return lines
