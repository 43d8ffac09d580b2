"""Keeps a client's connections to one peer ahead of its requests, so that no query pays a TCP handshake.

The simulator's links carry messages on connections that already exist. On the testbed, a request that finds
no idle connection in its aiohttp session's pool opens one and waits a round trip for the handshake first: to
the cloud at full-edge, 70-80 virtual ms. A scheduler's requests to a worker grow with the streams bound to it
(up to 82 in flight from one antenna to the cloud at lambda 60), so each new high paid one handshake, most of
them in a run's first tens of seconds: at lambda 60 under load-balancing, 50 queries per 10 s took a round trip
longer to reach their worker than in the simulator, and the first seconds lost about 2 points of success.

A `WarmPool` counts its peer's requests in flight. At start, and whenever they have used half of the spare
connections the pool was last warmed with, it sends `spare` cheap requests at once (`warm`): with the others
busy they cannot share a connection, so the pool then holds at least the requests in flight plus `spare`.
The session must keep idle connections for the whole run (and so must the peer's server), or the pool shrinks
behind the count. The decisions are here; the requests are the caller's (`warm` is a coroutine it runs)."""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

SPARE_CONNECTIONS = 16
"""Connections a pool keeps ahead of its requests in flight (at most about twice that many more are opened
at once, and only when half of them are in use)."""


@dataclass
class WarmPool:
    """One peer's requests in flight and the level the pool was last warmed for."""

    spare: int = SPARE_CONNECTIONS
    in_flight: int = 0
    warmed_for: int = 0
    """Requests in flight when the pool was last warmed (it then held at least that many plus `spare`)."""
    warming: bool = False
    warmings: int = 0
    """How many times the pool was warmed (the first, at start, included)."""

    def enter(self) -> bool:
        """Counts a request going out; returns whether the pool is to be warmed now (then `warming` is set, until
        `warmed`)."""
        self.in_flight += 1
        return self._due()

    def leave(self) -> None:
        self.in_flight -= 1

    def start(self) -> bool:
        """Returns whether the pool is to be warmed at start (`spare` > 0); sets `warming` then."""
        return self._due(first=True)

    def _due(self, first: bool = False) -> bool:
        if self.spare <= 0 or self.warming:
            return False
        if not first and self.in_flight < self.warmed_for + (self.spare + 1) // 2:
            return False
        self.warming = True
        self.warmed_for = self.in_flight
        self.warmings += 1
        return True

    def warmed(self) -> None:
        self.warming = False


async def warm(session: aiohttp.ClientSession, url: str, count: int, timeout: aiohttp.ClientTimeout) -> int:
    """Sends `count` GET `url` at once on `session`, each read to its end (its connection back in the pool);
    returns how many were answered. A peer that does not answer is the requests' business, not this."""

    async def one() -> bool:
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, OSError):
            async with session.get(url, timeout=timeout) as r:
                await r.read()
                return True
        return False

    return sum(await asyncio.gather(*(one() for _ in range(count))))


def warm_in_background(pool: WarmPool, spawn: Callable[[Awaitable[None]], None], session: aiohttp.ClientSession,
                       url: str, timeout: aiohttp.ClientTimeout) -> None:
    """Runs `warm` for `pool` through `spawn` and clears its `warming` when done."""

    async def go() -> None:
        try:
            await warm(session, url, pool.spare, timeout)
        finally:
            pool.warmed()

    spawn(go())


def raise_open_files_limit() -> int:
    """Raises this process's soft limit on open files to its hard limit (a warm pool holds hundreds of
    connections; Debian's default soft limit is 1024); returns the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
