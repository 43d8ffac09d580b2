"""Sub-millisecond sleeps on an asyncio loop, for the profile-driven worker.

`asyncio.sleep` wakes on the loop's epoll timeout, which Python rounds up to whole milliseconds, so a
profiled 3.34 ms batch took ~4.3 ms. `sleep_precise` arms a Linux timerfd (CLOCK_MONOTONIC, an hrtimer
with ns resolution) and waits for it to become readable on the loop, so the wake-up comes when the timer
fires plus the scheduler's wake-up of the loop; where timerfd is unavailable it falls back to
`asyncio.sleep`. It never returns before the delay has passed."""

from __future__ import annotations

import asyncio
import ctypes
import os
import time

CLOCK_MONOTONIC = 1
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = os.O_CLOEXEC


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _load_libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols: glibc's or musl's
        libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.timerfd_settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _load_libc()


def timerfd_available() -> bool:
    """Whether `sleep_precise` uses a timerfd (Linux) rather than `asyncio.sleep`."""
    return _LIBC is not None


def _armed_timerfd(seconds: float) -> int:
    """Returns a non-blocking timerfd that becomes readable once, `seconds` from now."""
    fd = _LIBC.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "timerfd_create failed")
    ns = max(1, round(seconds * 1e9))  # 0 would disarm the timer
    spec = _Itimerspec(_Timespec(0, 0), _Timespec(ns // 1_000_000_000, ns % 1_000_000_000))
    if _LIBC.timerfd_settime(fd, 0, ctypes.byref(spec), None) != 0:
        err = ctypes.get_errno()
        os.close(fd)
        raise OSError(err, "timerfd_settime failed")
    return fd


async def sleep_precise(seconds: float) -> None:
    """Sleeps `seconds` on the running loop with a timerfd's resolution (see the module docstring)."""
    if seconds <= 0:
        await asyncio.sleep(0)
        return
    if _LIBC is None:
        await asyncio.sleep(seconds)
        return
    loop = asyncio.get_running_loop()
    fired = loop.create_future()
    deadline = time.monotonic() + seconds
    fd = _armed_timerfd(seconds)
    try:
        loop.add_reader(fd, lambda: fired.done() or fired.set_result(None))
        try:
            await fired
        finally:
            loop.remove_reader(fd)
    finally:
        os.close(fd)
    left = deadline - time.monotonic()  # the timerfd and time.monotonic share CLOCK_MONOTONIC; belt and braces
    if left > 0:
        await asyncio.sleep(left)
