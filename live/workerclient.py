"""The live scheduler's one client session to its workers: how long a relayed frame may wait, each worker's clock
offset, the reservations and releases on their way, and each worker's warm connections (live/warmpool.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp

from live.warmpool import WarmPool, warm_in_background

if TYPE_CHECKING:
    from live.workerstate import WorkerState


@dataclass
class Client:
    """The service's one client session (to the workers), open while the application runs, and how long a
    relayed frame may wait for its worker."""

    relay_timeout: aiohttp.ClientTimeout
    session: aiohttp.ClientSession | None = None
    worker_clock_ms: dict[int, float] = field(default_factory=dict)
    """Per resource index, how far its worker's clock is ahead of this scheduler's (a worker on another server)."""
    pending: set[asyncio.Task] = field(default_factory=set)
    """Reservations, releases and connection warm-ups on their way to the workers."""
    pools: dict[int, WarmPool] = field(default_factory=dict)
    """Per resource index, its worker's requests in flight and warm connections (live/warmpool.py)."""

    def warm_up(self, workers: Sequence[WorkerState | None], spare: int) -> None:
        """Opens `spare` connections to each worker now, and keeps that many ahead of the frames in flight."""
        for j, w in enumerate(workers):
            if w is not None:
                pool = self.pools[j] = WarmPool(spare=spare)
                if pool.start():
                    self._warm(pool, w.url)

    def _warm(self, pool: WarmPool, url: str) -> None:
        if self.session is None:  # not open (yet): nothing to warm, and the pool is not left waiting for it
            pool.warmed()
            return
        warm_in_background(pool, self.spawn, self.session, f"{url}/v2/health/live", self.relay_timeout)

    @contextlib.contextmanager
    def in_flight(self, j: int, url: str) -> Iterator[None]:
        """Counts a request to resource j's worker (at `url`) while it runs, warming its pool when due."""
        pool = self.pools.get(j)
        if pool is None:
            yield
            return
        if pool.enter():
            self._warm(pool, url)
        try:
            yield
        finally:
            pool.leave()

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Runs `work` in the background (kept until it ends)."""
        task = asyncio.create_task(work)
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    def release_at(self, url: str, sid: int) -> None:
        """Releases a stream's reservation at a worker, without waiting for the answer (a worker gone or
        without reservations: nothing to release; an idle reservation also expires there)."""
        if self.session is None:
            return

        async def release() -> None:
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                session = self.session
                assert session is not None
                async with session.delete(f"{url}/v2/streams/{sid}", timeout=self.relay_timeout):
                    pass

        self.spawn(release())
