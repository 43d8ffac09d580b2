"""A profile-driven worker keeps its model's schedule however late its replicas wake (workers/schedule.py).

The hand-computed cases pin `NominalSchedule` down. The agreement tests run the real `DynamicBatcher` and
`ProfileProcessor` on a virtual clock (tests/virtual_clock.py) as tests/test_batching_agreement.py does, but
every sleep of a replica wakes late, as a timer on a busy host does: the batches must still start and end,
nominally, exactly when the simulator's batching model (`serve_window`) starts and ends them, while the
answers are released late by that one wake-up only. Without the schedule the same runs drift behind the
model, batch after batch: that is what the schedule removes.

Where the late wake-ups can still change a batch, the tests stay out: a query arriving between a batch's
nominal close and the late replica's real one joins it (so these patterns' batches are either of one query
or filled from the queue), a late replica may refuse a query the model queues (the queues are unbounded
here), and replicas waking in another order than their nominal one take each other's batches (the lateness
is the same for every replica where there are several)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from test_batching_agreement import Batch, Pattern, Served, _spaced, simulator_served
from virtual_clock import run_virtual

from scheduler.profiles import RuntimeProfile
from workers import engine
from workers.batching import DynamicBatcher
from workers.engine import ProfileProcessor, Query
from workers.schedule import NominalSchedule

MS_PER_S = 1000.0
JPEG = b"\xff\xd8" + b"\x00" * 64 + b"\xff\xd9"


def test_a_batch_waiting_for_a_late_replica_starts_at_the_replicas_nominal_end() -> None:
    s = NominalSchedule(max_batch_size=1, max_batch_delay_ms=2.0)
    assert s.batch_start_ms(-np.inf, [10.0], now_ms=10.25) == 10.0  # idle replica: at the arrival
    assert s.batch_start_ms(37.7, [20.0], now_ms=38.6) == 37.7  # waited: at the nominal end, not 38.6
    assert s.batch_start_ms(65.4, [70.0], now_ms=70.5) == 70.0  # arrived after the nominal end
    assert s.last_close_ms == 70.0


def test_a_partial_batch_closes_w_after_its_first_query_and_a_full_one_at_its_last() -> None:
    s = NominalSchedule(max_batch_size=4, max_batch_delay_ms=2.0)
    assert s.batch_start_ms(-np.inf, [0.0, 0.5], now_ms=3.0) == 2.0  # partial: 0 + W
    assert s.batch_start_ms(8.0, [3.0, 4.0, 5.0, 6.0], now_ms=9.0) == 8.0  # full from the queue: at once
    assert s.batch_start_ms(14.0, [13.0, 14.5, 15.0, 15.25], now_ms=15.5) == 15.25  # full at its 4th arrival


def test_one_batch_forms_at_a_time_and_a_start_is_never_in_the_future() -> None:
    s = NominalSchedule(max_batch_size=2, max_batch_delay_ms=1.0)
    assert s.batch_start_ms(-np.inf, [0.0, 0.0], now_ms=0.0) == 0.0
    assert s.batch_start_ms(-np.inf, [0.0, 0.0], now_ms=0.5) == 0.0  # a second replica, same instant
    assert s.batch_start_ms(-np.inf, [0.0], now_ms=0.75) == 0.75  # its close (0 + W = 1) has not come yet
    assert s.batch_start_ms(-np.inf, [0.25], now_ms=5.0) == 1.75  # after the previous close (0.75) + W
    with pytest.raises(ValueError, match="at least one query"):
        s.batch_start_ms(0.0, [], now_ms=1.0)


def test_a_real_replicas_batch_closes_in_the_same_schedule() -> None:
    """A mixed worker: a real replica took a batch at 103; the profile-driven replica's next batch, of a query
    that arrived at 102 while that batch was forming, starts after it (one batch forms at a time)."""
    s = NominalSchedule(max_batch_size=1, max_batch_delay_ms=0.0)
    s.closed_at(103.0)
    assert s.batch_start_ms(100.0, [102.0], now_ms=104.0) == 103.0


def _runtime(p: Pattern) -> RuntimeProfile:
    latency = {n: float(ms) for n, ms in enumerate(p.batch_ms) if n}
    return RuntimeProfile("m", "cpu", 1, 1.0, 0, 10.0, latency, {}, {}, 0.0, "test")


def served_late(p: Pattern, lateness_ms: list[float], monkeypatch: pytest.MonkeyPatch,
                scheduled: bool = True) -> tuple[Served, float]:
    """Returns the batches (nominal start and end) of real ProfileProcessors behind the real batcher on the
    virtual clock, each replica's k-th wake-up `lateness_ms[k % len]` late, and the largest release delay
    (answer released minus nominal end)."""
    released: list[float] = []

    async def scenario() -> Served:
        loop = asyncio.get_running_loop()
        wakeups = iter(lateness_ms * 1000)

        async def late_sleep(pattern_ms: float) -> None:  # the timer plus a late wake-up, on the loop's clock
            await asyncio.sleep(max(0.0, pattern_ms) + next(wakeups))

        monkeypatch.setattr(engine, "now_ms", lambda scale=None: loop.time())  # pattern ms as loop seconds
        monkeypatch.setattr(engine, "sleep_precise", lambda s: late_sleep(s * MS_PER_S))
        schedule = NominalSchedule(p.batch, p.max_delay_ms) if scheduled else None
        replicas = [ProfileProcessor(_runtime(p), schedule=schedule) for _ in range(p.replicas)]
        batches: list[Batch] = []

        def on_batch(batch: list[Query], outcomes: list) -> None:
            o = outcomes[0]
            nominal_end = o.t_infer_start_ms + p.run_ms(tuple(int(q.query_id) for q in batch))
            batches.append(Batch(o.t_infer_start_ms, nominal_end, tuple(int(q.query_id) for q in batch)))
            released.append(o.t_infer_end_ms - nominal_end)

        batcher = DynamicBatcher(replicas, p.batch, p.max_delay_ms * MS_PER_S, p.queue_limit, on_batch=on_batch)
        batcher.start()
        futures = []

        def arrive(indices: list[int]) -> None:
            for i in indices:  # in arrival order
                q = Query("s", str(i), JPEG, None, loop.time(), batcher.queue_len, loop.create_future())
                assert batcher.submit([q])
                futures.append(q.future)

        by_time: dict[float, list[int]] = {}  # one timer per instant: equal timers run in no set order
        for i, t_ms in enumerate(p.arrivals_ms):
            by_time.setdefault(t_ms, []).append(i)
        for t_ms, same_instant in by_time.items():
            loop.call_at(t_ms, arrive, same_instant)
        await asyncio.sleep(max(p.arrivals_ms) + 1.0)
        await asyncio.gather(*futures)
        await batcher.stop()
        return Served(tuple(sorted(batches, key=lambda b: (b.start_ms, b.members[0]))), frozenset())

    served = run_virtual(scenario())
    return served, max(released)


SATURATED = [
    Pattern("one replica, B 1, arrivals faster than service", _spaced(0.0, 25.0, 40), batch=1, replicas=1,
            max_delay_ms=2.0, queue_limit=10**6, batch_ms=(0, 27.75)),
    Pattern("one replica, B 4, a burst drained in full batches", (0.0,) * 4 + (0.5,) * 20, batch=4, replicas=1,
            max_delay_ms=2.0, queue_limit=10**6, batch_ms=(0, 5, 6, 7, 8)),
    Pattern("three replicas, B 1", _spaced(0.0, 2.5, 60), batch=1, replicas=3, max_delay_ms=0.0,
            queue_limit=10**6, batch_ms=(0, 8.5)),
]


@pytest.mark.parametrize("pattern", SATURATED, ids=[p.name for p in SATURATED])
def test_late_wakeups_do_not_delay_the_batches_behind_them(pattern: Pattern, monkeypatch) -> None:
    lateness = [0.75] if pattern.replicas > 1 else [0.25, 1.5, 0.5, 0.875]
    sim = simulator_served(pattern)
    worker, release_ms = served_late(pattern, lateness, monkeypatch)
    assert worker == sim
    assert release_ms == max(lateness)  # each answer late by its own wake-up only


@pytest.mark.parametrize("pattern", SATURATED, ids=[p.name for p in SATURATED])
def test_without_the_schedule_late_wakeups_add_up(pattern: Pattern, monkeypatch) -> None:
    sim = simulator_served(pattern)
    worker, _ = served_late(pattern, [0.75], monkeypatch, scheduled=False)
    drift = [w.start_ms - s.start_ms for w, s in zip(worker.batches, sim.batches, strict=True)]
    assert [b.members for b in worker.batches] == [b.members for b in sim.batches] or pattern.batch > 1
    assert drift[-1] >= 0.75 * (len(drift) // pattern.replicas - 1)


def test_random_single_query_batches_agree_with_the_model_despite_late_wakeups(monkeypatch) -> None:
    rng = np.random.default_rng(16)
    for _ in range(40):
        n = int(rng.integers(5, 60))
        arrivals = np.unique(np.round(rng.exponential(float(rng.choice([2.0, 6.0, 12.0])), n).cumsum() * 8) / 8)
        p = Pattern("random", tuple(float(t) for t in arrivals), batch=1, replicas=1,
                    max_delay_ms=float(rng.choice([0.0, 2.0])), queue_limit=10**6,
                    batch_ms=(0.0, float(rng.integers(4, 10)) + 0.5))
        lateness = [float(x) for x in np.round(rng.uniform(0.0, 2.0, 7) * 8) / 8]
        worker, release_ms = served_late(p, lateness, monkeypatch)
        assert worker == simulator_served(p)
        assert release_ms <= max(lateness)
