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


def test_timerfd_is_used_on_linux() -> None:
    assert timers.timerfd_available()


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


def test_zero_and_negative_delays_yield_once() -> None:
    async def scenario() -> None:
        await timers.sleep_precise(0)
        await timers.sleep_precise(-1.0)

    asyncio.run(scenario())


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
