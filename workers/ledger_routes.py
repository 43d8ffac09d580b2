"""A worker's ledger over HTTP: reservations (`PUT /v2/streams/{id}`, `DELETE /v2/streams/{id}`,
`DELETE /v2/streams?owner=NAME`), what the ledger declares (in every load report and frame answer), and its
watch (`GET /v2/ledger`).

The watch is a held request: a scheduler names the ledger version it knows, and the worker answers once the
ledger is at another one (at once if it already is), or after `wait_s` with the same. Each antenna's scheduler
keeps one such request at every worker (live/ledgerwatch.py), so it learns that another antenna reserved a
stream there, or that a stream left, a one-way delay after the ledger changed. Without it a scheduler learns
what other antennas did only from the load reports it polls (`--load-poll`, 2 s) and from the frame answers of
the workers it relays to; the simulator binds every stream knowing every antenna's bindings at that instant.

Times are the worker's clock (virtual under time dilation); a watch waits `wait_s` of it, x K in real time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from aiohttp import web

from topologies.timescale import TimeScale

from .limits import error
from .reservations import Reservations

WATCH_MAX_S = 60.0
"""The longest a watch may ask to be held (worker's seconds)."""


class Ledger:
    """The worker's reservations, its clock, and the watches waiting for the ledger's next change."""

    def __init__(self, now_s: Callable[[], float], scale: TimeScale, book: Reservations | None = None) -> None:
        self.book = book if book is not None else Reservations()
        self.book.on_change = self._changed
        self.now_s = now_s
        self.scale = scale
        self._change = asyncio.Event()
        self.closing = False
        """Set when the worker stops: every watch is answered at once, so that none holds the shutdown."""

    def _changed(self) -> None:
        self._change.set()
        self._change = asyncio.Event()

    def said(self) -> dict:
        """What the ledger declares now (idle streams dropped first) and its version."""
        return {"declared_qps": self.book.declared_qps(self.now_s()), "ledger_epoch": self.book.ledger.epoch,
                "ledger_version": self.book.ledger.version}

    async def watch(self, epoch: str | None, version: int | None, wait_s: float) -> dict:
        """Returns `said()` once the ledger is at another (epoch, version) than the one given, or after `wait_s`
        (the worker's seconds) unchanged, or at once when the worker stops."""
        said = self.said()
        if self.closing or (said["ledger_epoch"], said["ledger_version"]) != (epoch, version):
            return said
        change = self._change
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(change.wait(), self.scale.real_duration(wait_s))
        return self.said()

    def close(self) -> None:
        self.closing = True
        self._changed()


LEDGER = web.AppKey("ledger", Ledger)


def add_ledger_routes(app: web.Application, ledger: Ledger) -> None:
    """Adds the ledger's routes to a worker's application, and its watches' release at shutdown."""
    app[LEDGER] = ledger

    async def on_shutdown(app: web.Application) -> None:
        app[LEDGER].close()

    app.on_shutdown.append(on_shutdown)
    app.add_routes([
        web.get("/v2/ledger", watch),
        web.put("/v2/streams/{stream}", reserve),
        web.delete("/v2/streams/{stream}", release),
        web.delete("/v2/streams", release_owner),
    ])


async def watch(request: web.Request) -> web.Response:
    """GET /v2/ledger?epoch=E&version=V&wait_s=S: the ledger (declared_qps, ledger_epoch, ledger_version) once
    it is at another version than (E, V), at most `wait_s` later (default 10, at most 60); without E and V at
    once."""
    q = request.query
    try:
        wait_s = float(q.get("wait_s", "10"))
        if not 0 < wait_s <= WATCH_MAX_S:
            raise ValueError
        version = int(q["version"]) if "version" in q else None
    except ValueError:
        return error(400, "bad_request", f"ledger watch: wait_s in (0, {WATCH_MAX_S:g}], version an integer")
    return web.json_response(await request.app[LEDGER].watch(q.get("epoch"), version, wait_s))


async def reserve(request: web.Request) -> web.Response:
    """PUT /v2/streams/{stream} {load_qps, check_qps, capacity_qps, owner}: reserves a stream's load against the
    capacity its scheduler sends (workers/reservations.py); {granted, declared_qps, ledger_epoch, ledger_version},
    200 either way."""
    ledger = request.app[LEDGER]
    try:
        body = await request.json()
        grant = ledger.book.reserve(request.match_info["stream"], float(body["load_qps"]), float(body["check_qps"]),
                                    float(body["capacity_qps"]), ledger.now_s(), str(body.get("owner", "")))
    except (ValueError, KeyError, TypeError) as exc:
        return error(400, "bad_request", f"reservation: {exc}")
    return web.json_response({"granted": grant.granted, "declared_qps": grant.declared_qps,
                              "ledger_epoch": ledger.book.ledger.epoch, "ledger_version": grant.version})


async def release(request: web.Request) -> web.Response:
    """DELETE /v2/streams/{stream}: releases a stream's reservation (200 whether or not it had one)."""
    return web.json_response({"released": request.app[LEDGER].book.release(request.match_info["stream"])})


async def release_owner(request: web.Request) -> web.Response:
    """DELETE /v2/streams?owner=NAME: releases every stream that scheduler reserved."""
    owner = request.query.get("owner", "")
    if not owner:
        return error(400, "bad_request", "owner: the scheduler whose reservations to release")
    return web.json_response({"released": request.app[LEDGER].book.release_owner(owner)})
