"""A live source's one HTTP session to its antenna scheduler, and the connections it keeps open ahead of its
requests: `warm_connections` opened before t0 (GET /health) and more whenever the requests in flight grow
(live/warmpool.py, as each scheduler keeps to its workers), again after the scheduler dropped them (down, or
restarted), and idle ones kept as long as the scheduler keeps its own. So no frame waits for a TCP handshake the
simulator does not model: without them, 0.18 % of the frames of a lambda 60 run at K 16 reached the scheduler
about one radio round trip late."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Iterator

import aiohttp

from live.clock import DilatedClock
from live.warmpool import WarmPool, warm, warm_in_background
from workers.lifecycle import RUN_KEEPALIVE_S

WARM_TIMEOUT_S = 10.0
"""The longest a warm-up's requests wait for the scheduler (real seconds, whatever K and --timeout)."""
HEALTH_PATH = "/health"
"""The scheduler's route that answers at once (live/scheduler.py)."""


class SchedulerSession:
    """The session (open between `open` and `close`), its requests in flight and its warm connections."""

    def __init__(self, url: str, timeout: aiohttp.ClientTimeout, clock: DilatedClock, warm_connections: int,
                 stopping: asyncio.Event) -> None:
        self.url = url
        self.timeout = timeout
        self.clock = clock
        self.stopping = stopping
        self.session: aiohttp.ClientSession | None = None
        self.pool = WarmPool(spare=warm_connections)
        self.warming: set[asyncio.Task] = set()

    async def open(self) -> None:
        """Opens the session (once) and `warm_connections` connections in it, within WARM_TIMEOUT_S or until
        `stopping` is set."""
        if self.session is not None:
            return
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=self.clock.scale.real_duration(RUN_KEEPALIVE_S))
        self.session = aiohttp.ClientSession(connector=connector, timeout=self.timeout)
        if not self.pool.start():
            return
        warming = asyncio.ensure_future(warm(self.session, self.url + HEALTH_PATH, self.pool.spare,
                                             self._warm_timeout()))
        stopped = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({warming, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (warming, stopped):
                task.cancel()
            await asyncio.gather(warming, stopped, return_exceptions=True)
            self.pool.warmed()

    async def close(self) -> None:
        """Stops the warm-ups on their way and closes the session (if open)."""
        for task in self.warming:
            task.cancel()
        await asyncio.gather(*self.warming, return_exceptions=True)
        if self.session is not None and not self.session.closed:
            await self.session.close()

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        """Counts a request to the scheduler while it runs, opening more connections ahead when due."""
        if self.pool.enter():
            self._warm()
        try:
            yield
        finally:
            self.pool.leave()

    def lost(self) -> None:
        """Opens `warm_connections` again: the scheduler did not answer, or restarted, and its connections are
        gone with it."""
        if self.pool.start():
            self._warm()

    def _warm(self) -> None:
        if self.session is None or self.session.closed:
            self.pool.warmed()
            return
        warm_in_background(self.pool, self._spawn, self.session, self.url + HEALTH_PATH, self._warm_timeout())

    def _warm_timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=min(self.timeout.total or WARM_TIMEOUT_S, WARM_TIMEOUT_S))

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self.warming.add(task)
        task.add_done_callback(self.warming.discard)
