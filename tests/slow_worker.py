"""Test helper: a stand-in worker that answers every frame after a fixed real delay and reports a light load."""

from __future__ import annotations

import asyncio

from aiohttp import web


def slow_worker(delay_s: float) -> web.Application:
    """Returns the application of a worker whose frames route answers after `delay_s` of real time."""

    async def frames(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(delay_s)
        return web.json_response({"t_arrival_ms": 1000.0})

    async def load(request: web.Request) -> web.Response:
        return web.json_response({"queries_in_per_s": 1.0})

    app = web.Application()
    app.add_routes([web.post("/v2/models/{name}/frames", frames), web.get("/v2/load", load)])
    return app
