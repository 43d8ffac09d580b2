"""The schedule a profile-driven worker keeps: when each batch starts on the device its replicas emulate.

A replica that sleeps its profile wakes a little late every time (the timer's and the event loop's wake-up,
tenths of a real ms on a busy host), and the next batch, taken only once it is awake, starts that much later.
On a saturated worker those delays add up batch after batch: the queue grows as if the device were slower
than its profile (docs/workers.md#profile-driven-workers gives what it measured).
The device being emulated has no such gap, so the worker keeps the model's schedule instead
(simulator/batching.py): a batch's first query is taken at

    s0 = max(the replica's nominal free time, the query's arrival, the previous batch's close)

and the batch closes at s1 = s0 when it is full (or at the arrival of its last query, if later), else at
s0 + W; it then runs its profiled time from s1. The replica sleeps until s1 + that time, so a late wake-up
delays only its own answer, never the batches behind it. The outcome starts at s1 (never after now) and
ends when the answer is actually released: its excess over the profile is what the fidelity monitor's
"worker overshoot" measures, and a replica that falls behind (a stalled host) shows there.
All times are the run's virtual epoch ms, as the queries' arrivals are."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class NominalSchedule:
    """One worker's batching schedule, shared by its profile-driven replicas (one batch forms at a time)."""

    max_batch_size: int
    max_batch_delay_ms: float
    last_close_ms: float = -math.inf

    def batch_start_ms(self, replica_free_ms: float, arrivals_ms: list[float], now_ms: float) -> float:
        """Returns when the model starts a batch of queries that arrived at `arrivals_ms` (in the order the
        batcher took them) on a replica nominally free at `replica_free_ms`, and records its close."""
        if not arrivals_ms:
            raise ValueError("a batch has at least one query")
        s0 = max(replica_free_ms, arrivals_ms[0], self.last_close_ms)
        close = s0 if len(arrivals_ms) >= self.max_batch_size else s0 + self.max_batch_delay_ms
        start = min(max(close, max(arrivals_ms)), now_ms)
        self.last_close_ms = max(self.last_close_ms, start)
        return start

    def closed_at(self, now_ms: float) -> None:
        """Records a batch a real replica of a mixed worker took at `now_ms` (its real close)."""
        self.last_close_ms = max(self.last_close_ms, now_ms)
