"""Time for the live services, read in one place: the run clock (`Clock`: the real one, the dilated one of a
run slowed down K times, or a manual one that tests move by hand) and the `Stopwatch` that measures what a
piece of work cost (always real: a decision's cost is CPU and wall time spent, not run time).

Under time dilation (topologies/timescale.py) the run clock reads virtual time: `now_s` is the virtual epoch,
`monotonic_s` advances one second per virtual second, and sleeps last K times their virtual length in real time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from topologies import wallclock
from topologies.timescale import TimeScale


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

    async def sleep(self, seconds: float) -> None:
        """Returns once `seconds` of the clock's time have passed."""
        ...


class DilatedClock:
    """The machine's clocks seen through a run's time scale: virtual epoch seconds (from the wall clock as
    topologies/wallclock.py reads it, deaf to its steps), a monotonic time that runs K times slower than the
    machine's, sleeps K times longer in real time. The real-time functions are injectable (tests)."""

    def __init__(self, scale: TimeScale, real_time: Callable[[], float] = wallclock.time_s,
                 real_monotonic: Callable[[], float] = time.monotonic,
                 real_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.scale = scale
        self._time = real_time
        self._monotonic = real_monotonic
        self._sleep = real_sleep

    def now_s(self) -> float:
        return self.scale.virtual_s(self._time())

    def monotonic_s(self) -> float:
        return self.scale.virtual_duration(self._monotonic())

    def real_until_s(self, now_s: float) -> float:
        """Returns the real seconds from now until the clock reads `now_s` (negative once past)."""
        return self.scale.real_s(now_s) - self._time()

    async def sleep_until(self, now_s: float) -> None:
        await self._sleep(max(0.0, self.real_until_s(now_s)))

    async def sleep(self, seconds: float) -> None:
        await self._sleep(self.scale.real_duration(seconds))


class RealClock(DilatedClock):
    """The machine's clocks (time dilation factor 1: virtual time is real time)."""

    def __init__(self) -> None:
        super().__init__(TimeScale())


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

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self._now_s + seconds)


REAL_CLOCK = RealClock()


def real_duration_s(clock: Clock, seconds: float) -> float:
    """Returns how long `seconds` of `clock` last in real time: x K on a dilated clock; a test's clock, as given."""
    return clock.scale.real_duration(seconds) if isinstance(clock, DilatedClock) else seconds


def time_dilation_record(scale: TimeScale, t0_virtual_s: float | None = None) -> dict:
    """Returns what a run records of its time scale (config.json, pcap/time.json): K and the anchor, and with
    t0 the run's start both as its virtual epoch (the t0 file, records' origin) and as the real one, and how far
    the machine's wall clock (tcpdump's stamps) was then ahead of the run's (`wall_step_s`, topologies/wallclock.py:
    0 unless it was stepped since the run's processes took their base)."""
    out: dict = {"factor": scale.factor, "anchor_epoch_s": scale.anchor_s}
    if t0_virtual_s is not None:
        out.update(t0_virtual_epoch_s=t0_virtual_s, t0_real_epoch_s=scale.real_s(t0_virtual_s),
                   wall_step_s=round(wallclock.step_ns() / 1e9, 6))
    return out


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
