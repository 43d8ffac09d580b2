"""The simulator's batching model and the worker's batcher form the same batches at the same times.

One virtual clock drives both. The simulator's `serve_window` (numba) takes the arrival times as data, in one
call or window by window as the engine calls it; the worker's `DynamicBatcher` runs on an event loop whose
clock is virtual (tests/virtual_clock.py), with replicas that "run" a batch by sleeping, on that clock, the
time the simulator charges for it. Each hand-made arrival pattern goes through both, and the batches
(members, hence sizes, start, end) and the refused queries must be identical, to the bit: every time in the
patterns is a binary fraction of a millisecond and the worker's loop counts pattern milliseconds as its
seconds (the batching rule only compares and adds times), so no time is rounded on either side.

The two models differ in two cases only, both at exact ties, which the last two tests pin down:
- a query arriving exactly at a forming batch's deadline (first query + max_batch_delay): the simulator always
  puts it in that batch; the worker does when its event loop runs the arrival before the deadline's timeout,
  which it may run in either order (callbacks due at one instant have no set order);
- queries arriving at one instant (in one event-loop iteration) while a batch is forming, more of them than
  the queue limit: the simulator hands them to the forming batch first and applies the limit to the rest;
  the worker applies the limit to all of them, since they sit in its queue until the forming batch collects
  them, one per loop iteration.
Random patterns without those ties (300 here, 3,000 once) agreed in every batch and refusal.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
import pytest
from virtual_clock import run_virtual

from simulator.batching import DONE, PENDING_ADMITTED, PENDING_NEW, REJECTED_FULL, serve_window
from workers.batching import DynamicBatcher
from workers.engine import Outcome, Query

MS_PER_S = 1000.0


@dataclass(frozen=True)
class Batch:
    start_ms: float
    end_ms: float
    members: tuple[int, ...]
    """Indices of the queries in the batch, in arrival order."""


@dataclass(frozen=True)
class Served:
    batches: tuple[Batch, ...]
    """Sorted by start, then first member."""
    refused: frozenset[int]
    """Queries refused because the queue was full."""


@dataclass(frozen=True)
class Pattern:
    """One worker (B, K, W, queue limit, batch times) and the queries that reach it."""

    name: str
    arrivals_ms: tuple[float, ...]
    batch: int
    replicas: int
    max_delay_ms: float
    queue_limit: int
    batch_ms: tuple[float, ...]
    """Processing time of a batch of n queries at index n (index 0 unused)."""
    nbytes: tuple[int, ...] = ()
    """Bytes per query (default 1000 each)."""
    input_ms_per_byte: float = 0.0
    by_hand: Served | None = None
    """The timeline worked out by hand, where the pattern gives one."""

    def sizes(self) -> tuple[int, ...]:
        return self.nbytes or (1000,) * len(self.arrivals_ms)

    def run_ms(self, members: tuple[int, ...]) -> float:
        """Returns how long a batch of these queries runs: batch_ms[n] + the input time of its bytes."""
        return self.batch_ms[len(members)] + self.input_ms_per_byte * sum(self.sizes()[i] for i in members)


def _spaced(start_ms: float, step_ms: float, n: int) -> tuple[float, ...]:
    return tuple(start_ms + i * step_ms for i in range(n))


def _served(*batches: tuple[float, float, tuple[int, ...]], refused: tuple[int, ...] = ()) -> Served:
    return Served(tuple(Batch(*b) for b in batches), frozenset(refused))


PATTERNS = [
    Pattern("burst at one instant, larger than the batch", (0.0,) * 10, batch=4, replicas=1, max_delay_ms=2.0,
            queue_limit=100, batch_ms=(0, 5, 6, 7, 8),
            by_hand=_served((0, 8, (0, 1, 2, 3)), (8, 16, (4, 5, 6, 7)), (18, 24, (8, 9)))),
    Pattern("burst spread over 1.125 ms, larger than the batch", _spaced(0.0, 0.125, 10), batch=4, replicas=1,
            max_delay_ms=2.0, queue_limit=100, batch_ms=(0, 5, 6, 7, 8),
            by_hand=_served((0.375, 8.375, (0, 1, 2, 3)), (8.375, 16.375, (4, 5, 6, 7)),
                            (18.375, 24.375, (8, 9)))),
    Pattern("sparse arrivals, each batch waits max_batch_delay", (0.0, 10.0, 10.5, 30.0, 31.0, 31.5, 50.0),
            batch=4, replicas=1, max_delay_ms=2.0, queue_limit=100, batch_ms=(0, 3, 3.5, 4, 4.5),
            by_hand=_served((2, 5, (0,)), (12, 15.5, (1, 2)), (32, 36, (3, 4, 5)), (52, 55, (6,)))),
    Pattern("arrivals join a forming batch until it is full", (0.0, 0.5, 1.0, 1.5, 1.75, 1.875, 2.5, 9.0),
            batch=4, replicas=1, max_delay_ms=2.0, queue_limit=100, batch_ms=(0, 3, 3.5, 4, 4.5)),
    Pattern("zero batching delay takes only what is queued", _spaced(0.0, 0.75, 12) + (20.0, 20.0, 20.0),
            batch=4, replicas=1, max_delay_ms=0.0, queue_limit=100, batch_ms=(0, 2, 2.5, 3, 3.5)),
    Pattern("three replicas, one batch forming at a time", _spaced(0.0, 0.75, 30), batch=2, replicas=3,
            max_delay_ms=1.0, queue_limit=100, batch_ms=(0, 4, 5)),
    Pattern("two replicas, a burst while both are busy", (0.0, 0.125, 0.25, 0.375) + _spaced(1.0625, 0.0625, 9)
            + (25.0, 40.0, 40.25), batch=2, replicas=2, max_delay_ms=1.5, queue_limit=100, batch_ms=(0, 6, 7)),
    Pattern("queue limit overflow, one replica", _spaced(0.0, 0.375, 40), batch=2, replicas=1, max_delay_ms=0.5,
            queue_limit=3, batch_ms=(0, 2.5, 3)),
    Pattern("queue limit overflow, a burst at one instant", (0.0,) * 9 + (30.0,) * 3, batch=2, replicas=2,
            max_delay_ms=1.0, queue_limit=5, batch_ms=(0, 4, 5),
            by_hand=_served((0, 5, (0, 1)), (0, 5, (2, 3)), (6, 10, (4,)), (30, 35, (9, 10)), (31, 35, (11,)),
                            refused=(5, 6, 7, 8))),
    Pattern("input time per byte, frames of different sizes", _spaced(0.0, 0.875, 16), batch=4, replicas=2,
            max_delay_ms=2.0, queue_limit=6, batch_ms=(0, 2, 2.5, 3, 3.5),
            nbytes=tuple(20_000 + 8_192 * (i % 5) for i in range(16)), input_ms_per_byte=2.0**-13),
]


def simulator_served(p: Pattern, window_ms: float | None = None, max_delay_ms: float | None = None) -> Served:
    """Returns what `serve_window` does with the pattern: in one call, or window by window as the engine
    calls it (undecided queries carried with their admitted flag, the last window to infinity)."""
    t_all = np.asarray(p.arrivals_ms, dtype=np.float64)
    bytes_all = np.asarray(p.sizes(), dtype=np.float64)
    free, last_close = np.zeros((1, p.replicas)), np.zeros(1)
    batch_ms = np.asarray([p.batch_ms], dtype=np.float64)
    start, end = np.full(len(t_all), np.nan), np.full(len(t_all), np.nan)
    size, status = np.zeros(len(t_all), dtype=np.int64), np.full(len(t_all), -1, dtype=np.int64)
    pool, admitted = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    horizons = [np.inf] if window_ms is None else \
        [*(np.arange(1, int(t_all.max() // window_ms) + 2) * window_ms), np.inf]
    taken = 0
    for horizon in horizons:
        new = np.arange(taken, int(np.searchsorted(t_all, horizon, side="left")))
        taken += len(new)
        pool = np.concatenate([pool, new])
        admitted = np.concatenate([admitted, np.zeros(len(new), dtype=bool)])
        order = np.lexsort((~admitted, t_all[pool]))  # as the engine sorts: by arrival, admitted first
        pool, admitted = pool[order], admitted[order]
        n = len(pool)
        out_start, out_end, out_batch, out_status = (np.zeros(n), np.zeros(n), np.zeros(n, dtype=np.int64),
                                                     np.zeros(n, dtype=np.int64))
        serve_window(np.array([0, n]), t_all[pool], bytes_all[pool], admitted, np.array([p.replicas]),
                     np.array([p.batch]), batch_ms, np.array([p.input_ms_per_byte]),
                     p.max_delay_ms if max_delay_ms is None else max_delay_ms, np.array([p.queue_limit]), free,
                     last_close, horizon, out_start, out_end, out_batch, out_status)
        decided = (out_status == DONE) | (out_status == REJECTED_FULL)
        q = pool[decided]
        start[q], end[q], size[q], status[q] = (out_start[decided], out_end[decided], out_batch[decided],
                                                out_status[decided])
        pending = (out_status == PENDING_NEW) | (out_status == PENDING_ADMITTED)
        pool, admitted = pool[pending], out_status[pending] == PENDING_ADMITTED
    assert len(pool) == 0 and (status >= 0).all(), "the last window (to infinity) decides every query"
    done = np.flatnonzero(status == DONE)  # a batch takes the queue's head: runs of `size` in arrival order
    batches, k = [], 0
    while k < len(done):
        members = tuple(int(i) for i in done[k:k + size[done[k]]])
        assert len({(start[i], end[i]) for i in members}) == 1
        batches.append(Batch(float(start[members[0]]), float(end[members[0]]), members))
        k += len(members)
    return Served(tuple(sorted(batches, key=lambda b: (b.start_ms, b.members[0]))),
                  frozenset(int(i) for i in np.flatnonzero(status == REJECTED_FULL)))


def worker_served(p: Pattern, late: frozenset[int] = frozenset(), late_after_ms: float = 0.0) -> Served:
    """Returns what the worker's DynamicBatcher does with the pattern on the virtual clock. The arrival timers
    of the queries in `late` are set at `late_after_ms`, the others before anything runs."""

    async def scenario() -> Served:
        loop = asyncio.get_running_loop()
        batches: list[Batch] = []

        class VirtualReplica:
            """Runs a batch by sleeping, on the loop's clock, the time the simulator charges for it."""

            async def run(self, batch: list[Query]) -> list[Outcome]:
                t0 = loop.time()
                members = tuple(int(q.query_id) for q in batch)
                await asyncio.sleep(p.run_ms(members))
                t1 = loop.time()
                batches.append(Batch(t0, t1, members))
                return [Outcome((), None, t0, t1, len(batch), 0.0, 0.0) for _ in batch]

            def warm_up(self, max_batch: int) -> None: ...
            def close(self) -> None: ...

        # The loop's clock counts pattern ms as seconds: the batcher's delay in its ms is W x 1000.
        batcher = DynamicBatcher([VirtualReplica() for _ in range(p.replicas)], p.batch,
                                 p.max_delay_ms * MS_PER_S, p.queue_limit)
        batcher.start()
        refused: set[int] = set()
        futures: list[asyncio.Future] = []

        def arrive(indices: list[int]) -> None:
            for i in indices:  # one request per query, in arrival order
                q = Query("s", str(i), b"\0" * p.sizes()[i], None, loop.time(), batcher.queue_len,
                          loop.create_future())
                if batcher.submit([q]):
                    futures.append(q.future)
                else:
                    refused.add(i)

        def set_timers(indices: list[int]) -> None:
            by_time: dict[float, list[int]] = {}  # one timer per instant: equal timers run in no set order
            for i in indices:
                by_time.setdefault(p.arrivals_ms[i], []).append(i)
            for t_ms, same_instant in by_time.items():
                loop.call_at(t_ms, arrive, same_instant)

        set_timers([i for i in range(len(p.arrivals_ms)) if i not in late])
        if late:
            await asyncio.sleep(late_after_ms)
            set_timers(sorted(late))
        await asyncio.sleep(max(p.arrivals_ms) + 1.0)
        await asyncio.gather(*futures)
        await batcher.stop()
        return Served(tuple(sorted(batches, key=lambda b: (b.start_ms, b.members[0]))), frozenset(refused))

    return run_virtual(scenario())


def memberships(s: Served) -> tuple[tuple[tuple[int, ...], ...], frozenset[int]]:
    return tuple(b.members for b in s.batches), s.refused


def assert_same(sim: Served, worker: Served) -> None:
    """Same refusals, same batches (members, hence sizes) with the same start and end, to the bit."""
    assert sim.refused == worker.refused
    assert [b.members for b in sim.batches] == [b.members for b in worker.batches]
    assert sim.batches == worker.batches


@pytest.mark.parametrize("pattern", PATTERNS, ids=[p.name for p in PATTERNS])
def test_simulator_and_worker_form_the_same_batches_at_the_same_times(pattern: Pattern) -> None:
    sim = simulator_served(pattern)
    # No arrival sits exactly on a batching deadline (the first tie below): a nudge of W changes no batch.
    assert memberships(simulator_served(pattern, max_delay_ms=pattern.max_delay_ms + 2.0**-20)) == memberships(sim)
    if pattern.by_hand is not None:
        assert sim == pattern.by_hand
    assert_same(sim, worker_served(pattern))


@pytest.mark.parametrize("window_ms", [1.0, 3.75])
@pytest.mark.parametrize("pattern", PATTERNS, ids=[p.name for p in PATTERNS])
def test_the_simulator_forms_the_same_batches_window_by_window(pattern: Pattern, window_ms: float) -> None:
    assert simulator_served(pattern, window_ms) == simulator_served(pattern)


def random_pattern(rng: np.random.Generator, simultaneous: bool) -> Pattern:
    """Returns a random worker and Poisson-like arrivals on a 1/8 ms grid, with W off that grid (no deadline
    ties); with `simultaneous`, arrivals may share an instant and the queue is unbounded, else the instants
    are distinct and the queue limit small."""
    b = int(rng.integers(1, 6))
    arrivals = np.round(rng.exponential(float(rng.choice([0.25, 1.0, 3.0])), int(rng.integers(5, 60))).cumsum() * 8) / 8
    if not simultaneous:
        arrivals = np.unique(arrivals)
    return Pattern("random", tuple(float(t) for t in arrivals), batch=b, replicas=int(rng.integers(1, 4)),
                   max_delay_ms=float(rng.choice([0.0, 0.5 + 2.0**-10, 2.0 + 2.0**-10])),
                   queue_limit=10**6 if simultaneous else int(rng.integers(1, 12)),
                   batch_ms=(0.0, *(float(2 + k + rng.integers(0, 2)) for k in range(1, b + 1))))


@pytest.mark.parametrize("simultaneous", [False, True])
def test_random_patterns_without_ties_agree(simultaneous: bool) -> None:
    rng = np.random.default_rng(14 + simultaneous)
    for _ in range(150):
        p = random_pattern(rng, simultaneous)
        assert_same(simulator_served(p), worker_served(p))


def test_known_difference_an_arrival_exactly_at_the_deadline() -> None:
    """Query 1 arrives exactly when the batch query 0 opened closes (0 + W = 2 ms). The simulator puts it in
    that batch (t <= deadline); the worker does only if its loop runs the arrival before the timeout due at
    the same instant: here, when the arrival's timer was set first. Otherwise query 1 waits for the replica
    (free at 5 ms), then W for company, and is answered at 10 ms instead of 5.5 ms."""
    p = Pattern("tie at the deadline", (0.0, 2.0), batch=4, replicas=1, max_delay_ms=2.0, queue_limit=100,
                batch_ms=(0, 3, 3.5, 4, 4.5))
    together = _served((2, 5.5, (0, 1)))
    assert simulator_served(p) == together
    assert worker_served(p) == together  # the arrival's timer was set before the deadline's
    assert worker_served(p, late=frozenset({1}), late_after_ms=1.0) == _served((2, 5, (0,)), (7, 10, (1,)))


def test_known_difference_simultaneous_arrivals_beyond_the_queue_limit_while_a_batch_forms() -> None:
    """Queries 1-3 arrive at one instant while query 0's batch forms (B 4, queue limit 2). The simulator hands
    all three to the forming batch, which is then full; the worker queues them first, refuses the third (the
    queue holds two), and its batch of three closes at the deadline, 1 ms later."""
    p = Pattern("one instant, small queue", (0.0, 1.0, 1.0, 1.0), batch=4, replicas=1, max_delay_ms=2.0,
                queue_limit=2, batch_ms=(0, 3, 3.5, 4, 4.5))
    assert simulator_served(p) == _served((1, 5.5, (0, 1, 2, 3)))
    assert worker_served(p) == _served((2, 6, (0, 1, 2)), refused=(3,))
