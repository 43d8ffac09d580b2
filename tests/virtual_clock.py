"""Test helper: an asyncio event loop on a virtual clock, so code that waits through its loop runs in
virtual time, exactly and at once.

The loop never sleeps: when nothing is ready it jumps its clock to the next scheduled timer. Whatever reads
time through the loop (`loop.time()`, `asyncio.sleep`, `asyncio.wait(timeout=...)`, `loop.call_at`) then sees
that one clock; code that reads a real clock (`time.monotonic`, a timerfd) is not virtualised.
"""

from __future__ import annotations

import asyncio
import selectors


class _JumpingSelector(selectors.SelectSelector):
    """A selector that waits for nothing: a wait of `timeout` seconds moves the loop's clock to its next timer."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualClockLoop | None = None

    def select(self, timeout: float | None = None) -> list:
        assert self.loop is not None
        if timeout is None:  # nothing ready, no timer: real time would wait forever
            raise RuntimeError("virtual clock: the loop waits for nothing (deadlock)")
        if timeout > 0:
            # Jump exactly to the next timer's due time (not now + timeout, which may round).
            self.loop.now_s = max(self.loop.now_s, self.loop._scheduled[0]._when)
        return []


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose `time()` is virtual seconds, starting at 0."""

    def __init__(self) -> None:
        selector = _JumpingSelector()
        super().__init__(selector=selector)
        selector.loop = self
        self.now_s = 0.0

    def time(self) -> float:
        return self.now_s


def run_virtual(coro):
    """Runs a coroutine to completion on a fresh VirtualClockLoop and returns its result."""
    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()
