"""Time for the live services, read in one place: the run clock (`Clock`: the real one, or a manual one that
tests and virtual time move by hand) and the `Stopwatch` that measures what a piece of work cost (always
real: a decision's cost is CPU and wall time spent, not run time).
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """The run's time as a service reads it."""

    def now_s(self) -> float:
        """Returns the time on the run's scale (epoch seconds: the run's t0 is on it)."""
        ...

    def monotonic_s(self) -> float:
        """Returns a time that never goes back (ages and report times; another origin than `now_s`)."""
        ...

    async def sleep_until(self, now_s: float) -> None:
        """Returns once `now_s()` has reached `now_s`."""
        ...


class RealClock:
    """The machine's clocks."""

    def now_s(self) -> float:
        return time.time()

    def monotonic_s(self) -> float:
        return time.monotonic()

    async def sleep_until(self, now_s: float) -> None:
        await asyncio.sleep(max(0.0, now_s - time.time()))


class ManualClock:
    """A clock that moves only when told (`advance`, or a `sleep_until` jumping to its target): a state driven
    by it gives the same answer however busy the machine is."""

    def __init__(self, now_s: float = 0.0, monotonic_s: float = 0.0) -> None:
        self._now_s = now_s
        self._monotonic_s = monotonic_s

    def now_s(self) -> float:
        return self._now_s

    def monotonic_s(self) -> float:
        return self._monotonic_s

    def advance(self, seconds: float) -> None:
        self._now_s += seconds
        self._monotonic_s += seconds

    async def sleep_until(self, now_s: float) -> None:
        if now_s > self._now_s:
            self.advance(now_s - self._now_s)
        await asyncio.sleep(0)  # lets the other tasks run, as a real sleep would


REAL_CLOCK = RealClock()


class Stopwatch:
    """Wall time since it started, less the spans run under `with watch.excluding():` (waits that are not the
    work's cost), and, with `cpu`, the CPU time of this thread."""

    __slots__ = ("_cpu", "_excluded", "_paused", "_wall")

    def __init__(self, cpu: bool = False) -> None:
        self._wall = time.perf_counter()
        self._cpu = time.thread_time() if cpu else None
        self._excluded = 0.0
        self._paused = 0.0

    def excluding(self) -> Stopwatch:
        """Returns the stopwatch as a context that leaves its block out of `wall_us`."""
        self._paused = time.perf_counter()
        return self

    def __enter__(self) -> Stopwatch:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._excluded += time.perf_counter() - self._paused

    def wall_us(self) -> float:
        return (time.perf_counter() - self._wall - self._excluded) * 1e6

    def cpu_us(self) -> float:
        """Returns this thread's CPU time since the start (needs `cpu=True`)."""
        assert self._cpu is not None, "Stopwatch(cpu=True) measures CPU time"
        return (time.thread_time() - self._cpu) * 1e6


def process_cpu_s() -> float:
    """Returns the CPU seconds this process has used (user + system)."""
    return time.process_time()
