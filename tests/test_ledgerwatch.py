"""A scheduler's watch of one worker's ledger (live/ledgerwatch.py) against workers that misbehave: one whose
answers the scheduler does not take (an older epoch than the one it holds) is asked with the version it answered,
so it holds the next request instead of answering it at once forever; one that fails (500) is asked again
after the retry interval, not given up; one without a ledger route (404) is given up."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from live.clock import REAL_CLOCK
from live.ledgerwatch import watch_one
from live.workerstate import WorkerState

OWN = {"declared_qps": 3.0, "ledger_epoch": "00000000000000000001-aaaaaa", "ledger_version": 5}
"""The worker's ledger: an epoch that sorts before the one the scheduler holds."""


def _worker(fail_first: int = 0, status: int = 200) -> tuple[web.Application, list]:
    asked: list[dict] = []

    async def ledger(request: web.Request) -> web.Response:
        asked.append(dict(request.query))
        if status != 200:
            return web.json_response({"error": "x"}, status=status)
        if len(asked) <= fail_first:
            return web.json_response({"error": "internal"}, status=500)
        if (request.query.get("epoch"), request.query.get("version")) == (OWN["ledger_epoch"], "5"):
            await asyncio.sleep(float(request.query["wait_s"]))  # unchanged: held
        return web.json_response(OWN)

    app = web.Application()
    app.router.add_get("/v2/ledger", ledger)
    return app, asked


async def _watch(app: web.Application, w: WorkerState, for_s: float) -> bool:
    """Watches for `for_s`; returns whether the watch was still running then (not given up)."""
    async with TestServer(app) as server, aiohttp.ClientSession() as session:
        w.url = f"http://127.0.0.1:{server.port}"
        task = asyncio.create_task(watch_one(SimpleNamespace(clock=REAL_CLOCK), session, w, retry_s=0.2,
                                             hold_s=5.0))
        await asyncio.sleep(for_s)
        running = not task.done()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return running


def test_a_watch_the_scheduler_does_not_take_is_held_not_spun() -> None:
    app, asked = _worker()
    w = WorkerState("", "m", declared_qps=9.0, ledger=("99999999999999999999-bbbbbb", 1))
    assert asyncio.run(_watch(app, w, 0.5))
    assert w.ledger == ("99999999999999999999-bbbbbb", 1) and w.declared_qps == 9.0  # the older epoch not taken
    assert len(asked) == 2 and asked[1]["epoch"] == OWN["ledger_epoch"], asked  # the second held


def test_a_failing_worker_is_asked_again_and_one_without_a_ledger_given_up() -> None:
    app, asked = _worker(fail_first=2)
    w = WorkerState("", "m")
    assert asyncio.run(_watch(app, w, 1.5))  # two failures 0.2 s apart, the answer, the held one
    assert len(asked) == 4 and w.ledger == (OWN["ledger_epoch"], 5) and w.watch_answers == 1, asked
    app, asked = _worker(status=404)
    assert not asyncio.run(_watch(app, WorkerState("", "m"), 0.3)) and len(asked) == 1
