"""A scheduler's watch of every worker's ledger: one request held at each worker (`GET /v2/ledger`,
workers/ledger_routes.py) that the worker answers when its ledger changes; the answer is taken
(`WorkerState.take_ledger`) and the request sent again with the version now known.

The simulator binds each stream knowing every antenna's bindings at that instant. A live scheduler knows its
own at once, and learns the others' from the worker's ledger: with the watch, a one-way delay after another
antenna reserved a stream there or a stream left; without it, from the load reports it polls (`--load-poll`)
and from the frame answers of the workers it relays to. At lambda 60 on full-edge, a stream opening at one
antenna tens of milliseconds after another antenna's stream left a variant was bound farther away on the
testbed for want of the watch, and the two sides' bindings drifted apart from there (docs/fidelity.md, "Who
knows the load").

Times are the scheduler's clock's (virtual under time dilation).
"""

from __future__ import annotations

import asyncio

import aiohttp

from live.antenna import AntennaScheduler
from live.clock import real_duration_s
from live.workerstate import WorkerState

HOLD_S = 10.0
"""How long a worker holds a watch with no change before answering it unchanged (virtual seconds)."""


async def watch_ledgers(live: AntennaScheduler, session: aiohttp.ClientSession, retry_s: float,
                        hold_s: float = HOLD_S) -> None:
    """Watches every worker's ledger until cancelled; a worker that does not answer is asked again `retry_s`
    later (the poll interval: the polls find it down)."""
    await asyncio.gather(*(watch_one(live, session, w, retry_s, hold_s) for w in live.workers if w is not None))


async def watch_one(live: AntennaScheduler, session: aiohttp.ClientSession, w: WorkerState, retry_s: float,
                    hold_s: float = HOLD_S) -> None:
    """Watches one worker's ledger until cancelled, or until the worker shows it keeps none (404 or 405, or an
    answer without a version). Each request names the version of the worker's last answer, so the worker holds
    it even where that answer was not taken (an older epoch than one already taken: a worker restarted after
    the wall clock stepped back); a worker that fails or answers garbage is asked again `retry_s` later."""
    timeout = aiohttp.ClientTimeout(total=real_duration_s(live.clock, hold_s + max(2.0, retry_s)))
    last = w.ledger
    while True:
        params = {"wait_s": f"{hold_s:g}"}
        if last is not None:
            params.update(epoch=last[0], version=str(last[1]))
        try:
            async with session.get(f"{w.url}/v2/ledger", params=params, timeout=timeout) as r:
                if r.status in (404, 405):
                    return
                said = await r.json() if r.status == 200 else None
            if isinstance(said, dict):
                epoch, version = said.get("ledger_epoch"), said.get("ledger_version")
                if not isinstance(epoch, str) or not isinstance(version, int):
                    return
                w.take_ledger(said)
                w.watch_answers += 1
                last = (epoch, version)
                continue
        except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError, ValueError, KeyError, TypeError):
            pass
        await live.clock.sleep(retry_s)
