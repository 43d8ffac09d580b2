"""The testbed against the simulator query by query, on one trace: each query's outcome on both sides, paired by
(stream_id, query), and for the queries the testbed missed while the simulator answered them in time, why (the
stage whose latency grew most against the same query in the simulator, no answer, or the reason given), where
(cluster) and when (how they bunch into windows). Ratios and window series say how far the two sides are apart;
this says which queries make the gap. And the same count between two simulations of the trace under different run
seeds (`MissedKeys`, `one_side`): how often the simulator misses other queries than itself.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from analysis.records import PATH_STAGES

if TYPE_CHECKING:
    import pyarrow as pa

    from analysis.records import QueryBatch

NO_ANSWER = "no answer"
"""A testbed miss whose log has no response time: the query or its answer never came back."""
NONE_GREW = "no stage slower"
"""A testbed miss answered on both sides whose every stage was as fast or faster than the simulator's: late by what
the two sides' deadlines or clocks make of the same times."""
STREAM_MAX = 1 << 31
QUERY_MAX = 1 << 32
"""`query_keys` packs a stream id below STREAM_MAX and a query number below QUERY_MAX into one int64."""


@dataclass(frozen=True)
class PairedMisses:
    """One policy's queries paired across the two sides' logs, and the testbed's extra misses explained."""

    policy: str
    paired: int
    """Queries in both logs (the same stream and query number)."""
    only_simulator: int
    """Queries in the simulator's log alone: missing from the testbed's (never sent, or lost), not counted below."""
    only_testbed: int
    both_ontime: int
    testbed_missed: int
    """Missed (failed or rejected) on the testbed, on time in the simulator."""
    simulator_missed: int
    """On time on the testbed, missed in the simulator."""
    both_missed: int
    testbed_missed_why: dict[str, int]
    """The testbed's extra misses by cause: for a failed query the stage that grew most against the simulator's
    same query (PATH_STAGES' names; NONE_GREW where none did) or NO_ANSWER; for a rejected one
    "rejected: <reason>"."""
    testbed_missed_where: dict[str, int]
    """The testbed's extra misses by the cluster the testbed sent them to ("none": rejected before placement)."""
    median_excess_ms: dict[str, float]
    """Per stage, the median testbed-minus-simulator latency over the testbed's extra failed misses answered on
    both sides: how far that stage moved for them."""
    worst_windows: list[tuple[int, int]]
    """(window index, testbed-only misses) of the five windows with the most, most first."""
    dispersion_testbed: float
    """Variance over mean of the testbed's extra misses per window, over every window of the run: 1 where they fall
    independently of each other (Poisson), above 1 where they bunch (nan: none)."""
    dispersion_simulator: float
    """The same of the simulator's extra misses: how much misses bunch at this load by themselves."""
    simulator_self_one_side: list[int] = field(default_factory=list)
    """The simulator against itself: per other run seed (analysis.fidelity.SELF_SEEDS), the queries missed by one
    of two simulations of the trace alone (its own seed's and that seed's); empty where not simulated again. What
    `one_side` is when two runs differ only by chance."""

    @property
    def net_missed(self) -> int:
        """Testbed's extra misses less the simulator's: success on the testbed is this many queries below."""
        return self.testbed_missed - self.simulator_missed

    @property
    def one_side(self) -> int:
        """Queries missed by one side alone, whichever."""
        return self.testbed_missed + self.simulator_missed


def query_keys(stream_id: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Returns one int64 per query from its stream and number (a query's identity in both logs); ValueError where
    a stream id or query number is out of STREAM_MAX or QUERY_MAX."""
    sid, q = np.asarray(stream_id, dtype=np.int64), np.asarray(query, dtype=np.int64)
    if len(sid) and (sid.min() < 0 or sid.max() >= STREAM_MAX or q.min() < 0 or q.max() >= QUERY_MAX):
        raise ValueError(f"stream ids {sid.min()}..{sid.max()} or query numbers {q.min()}..{q.max()} out of the "
                         f"range paired (streams below {STREAM_MAX}, queries below {QUERY_MAX})")
    return sid * QUERY_MAX + q


class _Log:
    """The columns of one side's log that pairing reads, each converted once."""

    def __init__(self, table: pa.Table, side: str) -> None:
        self.keys = query_keys(np.asarray(table.column("stream_id")), np.asarray(table.column("query")))
        uniq, counts = np.unique(self.keys, return_counts=True)
        if (counts > 1).any():
            k = int(uniq[counts > 1][0])
            raise ValueError(f"the {side}'s log has stream {k // QUERY_MAX} query {k % QUERY_MAX} "
                             f"{int(counts.max())} times: a query is logged once")
        self.table = table
        self.outcome = np.asarray(table.column("outcome").to_pylist(), dtype=object)
        self._floats: dict[str, np.ndarray] = {}

    def floats(self, name: str) -> np.ndarray:
        if name not in self._floats:
            self._floats[name] = np.asarray(self.table.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)
        return self._floats[name]

    def strings(self, name: str) -> np.ndarray:
        return np.asarray(self.table.column(name).to_pylist(), dtype=object)


def missed_keys(table: pa.Table) -> np.ndarray:
    """Returns the sorted keys (`query_keys`) of the queries a log has not on time."""
    log = _Log(table, "run")
    return np.sort(log.keys[log.outcome != "ontime"])


class MissedKeys:
    """A simulation's record sink that keeps only the keys of the queries not on time (a few where a whole log
    would be millions of rows): `keys()` once the simulation is over."""

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []

    def __call__(self, batch: QueryBatch) -> None:
        codes, labels = batch.codes["outcome"]
        ontime = np.flatnonzero(labels == "ontime")
        missed = codes != (ontime[0] if len(ontime) else -2)  # -2: no code; every query missed
        self._parts.append(query_keys(batch["stream_id"][missed], batch["query"][missed]))

    def keys(self) -> np.ndarray:
        return np.sort(np.concatenate(self._parts)) if self._parts else np.zeros(0, dtype=np.int64)


def one_side(a: np.ndarray, b: np.ndarray) -> int:
    """Returns how many queries one of two runs of the same trace missed and the other did not (keys from
    `missed_keys` or `MissedKeys`)."""
    return len(np.setxor1d(a, b))


def _dispersion(windows: np.ndarray, n_windows: int) -> float:
    if len(windows) == 0 or n_windows == 0:
        return float("nan")
    counts = np.bincount(windows, minlength=n_windows)
    return float(counts.var() / counts.mean())


def pair_misses(policy: str, simulator: pa.Table, testbed: pa.Table, window_s: float = 1.0) -> PairedMisses:
    """Returns `simulator` and `testbed` (the same trace's per-query logs under `policy`) paired query by query;
    windows of `window_s` by the simulator's send time, as the window series, as many as it has; ValueError where
    a log has a query twice."""
    sim, tb = _Log(simulator, "simulator"), _Log(testbed, "testbed")
    common, at_s, at_t = np.intersect1d(sim.keys, tb.keys, assume_unique=True, return_indices=True)
    ok_s, ok_t = sim.outcome[at_s] == "ontime", tb.outcome[at_t] == "ontime"
    extra, theirs = ok_s & ~ok_t, ~ok_s & ok_t
    at_se, at_te = at_s[extra], at_t[extra]
    grew = np.stack([(tb.floats(end)[at_te] - tb.floats(start)[at_te])
                     - (sim.floats(end)[at_se] - sim.floats(start)[at_se]) for _, start, end in PATH_STAGES], axis=1)
    why: Counter[str] = Counter()
    excess: dict[str, list[float]] = {name: [] for name, _, _ in PATH_STAGES}
    for outcome, reason, row in zip(tb.outcome[at_te], tb.strings("reason")[at_te], grew, strict=True):
        if outcome == "rejected":
            why[f"rejected: {reason or 'no reason'}"] += 1
        elif not np.isfinite(row).all():
            why[NO_ANSWER] += 1
        else:
            why[PATH_STAGES[int(np.argmax(row))][0] if row.max() > 0 else NONE_GREW] += 1
            for (name, _, _), x in zip(PATH_STAGES, row, strict=True):
                excess[name].append(float(x))
    sent = sim.floats("t_send_ms")[at_s]
    window = (sent / (window_s * 1000.0)).astype(np.int64)  # as analysis.summary.Tally windows them
    n_windows = int(window.max()) + 1 if len(window) else 0
    worst = Counter(window[extra].tolist()).most_common(5)
    return PairedMisses(
        policy=policy, paired=len(common), only_simulator=len(sim.keys) - len(common),
        only_testbed=len(tb.keys) - len(common), both_ontime=int((ok_s & ok_t).sum()), testbed_missed=int(extra.sum()),
        simulator_missed=int(theirs.sum()), both_missed=int((~ok_s & ~ok_t).sum()),
        testbed_missed_why=dict(why.most_common()),
        testbed_missed_where=dict(Counter(c or "none" for c in tb.strings("cluster")[at_te]).most_common()),
        median_excess_ms={k: float(np.median(v)) for k, v in excess.items() if v},
        worst_windows=[(int(w), int(n)) for w, n in worst],
        dispersion_testbed=_dispersion(window[extra], n_windows),
        dispersion_simulator=_dispersion(window[theirs], n_windows))


def self_cell(counts: list[int]) -> str:
    """Returns "MEDIAN (MIN-MAX)" of the simulator's one-side-alone counts against itself, or "-" where none."""
    if not counts:
        return "-"
    return f"{float(np.median(counts)):g} ({min(counts)}-{max(counts)})"


def _number(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{x:.2f}"


def markdown_lines(rows: list[PairedMisses], window_s: float) -> list[str]:
    """Returns the report's section on the paired queries, a table and a line of causes per policy."""
    lines = ["## Query by query", "",
             "Each query paired across both logs. *Testbed missed*: on time in the simulator, missed on the testbed; "
             "*sim missed*: the other way round; *not in testbed log*: queries the simulator logged and the testbed "
             "did not (counted nowhere else). *One side alone*: testbed missed plus sim missed; beside it the same "
             "count for the simulator against itself, its own run seed against each other (median, min-max): a "
             "testbed whose count is within that range misses other queries than the simulator about as often as "
             "the simulator does under another seed. *Dispersion*: variance over mean of those misses per "
             f"{window_s:g} s window (1: independent of each other; above: bunched), the testbed's and the "
             "simulator's. A testbed miss's cause is the stage that grew most against the simulator's same query.",
             "", "| policy | paired | not in testbed log | both on time | testbed missed | sim missed | both missed | "
             "one side alone | sim vs itself | dispersion testbed / sim | causes |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        causes = ", ".join(f"{k} {v}" for k, v in r.testbed_missed_why.items()) or "none"
        lines.append(f"| {r.policy} | {r.paired} | {r.only_simulator} | {r.both_ontime} | {r.testbed_missed} | "
                     f"{r.simulator_missed} | {r.both_missed} | {r.one_side} | {self_cell(r.simulator_self_one_side)} | "
                     f"{_number(r.dispersion_testbed)} / {_number(r.dispersion_simulator)} | {causes} |")
    for r in rows:
        if r.testbed_missed:
            where = ", ".join(f"{k} {v}" for k, v in r.testbed_missed_where.items())
            grew = ", ".join(f"{k} {v:+.2f}" for k, v in r.median_excess_ms.items()) or "none answered on both"
            lines.append(f"\n{r.policy}: the testbed's extra misses by cluster: {where}; median growth per stage of "
                         f"those answered on both sides (ms): {grew}; the windows with most: "
                         + ", ".join(f"{w} ({n})" for w, n in r.worst_windows) + ".")
    return lines
