"""workers/timers.py: the profile-driven worker's timerfd sleep never wakes early, leaks no
descriptor (also when cancelled) and falls back to asyncio.sleep without timerfd."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from workers import timers


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_timerfd_is_armed_for_every_sleep_on_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    armed: list[float] = []
    real = timers._armed_timerfd

    def spy(seconds: float) -> int:
        armed.append(seconds)
        return real(seconds)

    monkeypatch.setattr(timers, "_armed_timerfd", spy)

    async def scenario() -> None:
        for delay_s in (0.002, 0.0031):
            await timers.sleep_precise(delay_s)

    assert timers.timerfd_available()
    asyncio.run(scenario())
    assert armed == [0.002, 0.0031]


@pytest.mark.parametrize("use_timerfd", [True, False])
def test_never_wakes_before_the_delay(monkeypatch: pytest.MonkeyPatch, use_timerfd: bool) -> None:
    if not use_timerfd:
        monkeypatch.setattr(timers, "_LIBC", None)

    async def slept(delay_s: float) -> float:
        t0 = time.monotonic()
        await timers.sleep_precise(delay_s)
        return time.monotonic() - t0

    async def scenario() -> list[tuple[float, float]]:
        return [(d, await slept(d)) for d in (0.0001, 0.00334, 0.0061, 0.0142) for _ in range(5)]

    before = open_fds()
    for delay_s, took_s in asyncio.run(scenario()):
        assert took_s >= delay_s, (delay_s, took_s)
    assert open_fds() == before


def test_zero_and_negative_delays_yield_to_the_loop_without_a_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timers, "_armed_timerfd", lambda seconds: pytest.fail("armed a timer"))

    async def scenario() -> list[str]:
        order: list[str] = []

        async def other() -> None:
            order.append("other")

        for delay_s in (0.0, -1.0):
            task = asyncio.create_task(other())
            await timers.sleep_precise(delay_s)
            order.append(f"after {delay_s}")
            await task
        return order

    assert asyncio.run(scenario()) == ["other", "after 0.0", "other", "after -1.0"]


def test_a_cancelled_sleep_closes_its_timer() -> None:
    async def scenario() -> None:
        task = asyncio.create_task(timers.sleep_precise(10.0))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    before = open_fds()
    asyncio.run(scenario())
    assert open_fds() == before


def test_concurrent_sleeps_each_wake_at_their_own_time() -> None:
    async def scenario() -> list[str]:
        order: list[str] = []

        async def sleeper(name: str, delay_s: float) -> None:
            await timers.sleep_precise(delay_s)
            order.append(name)

        await asyncio.gather(sleeper("late", 0.03), sleeper("early", 0.005), sleeper("middle", 0.015))
        return order

    assert asyncio.run(scenario()) == ["early", "middle", "late"]
