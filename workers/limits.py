"""What one request may cost a worker: its body's bytes within a per-worker budget, counted before memory
is committed; a deadline for the body; a nesting limit for JSON. The header deadline is a connection's
(workers/connections.py). `RequestLimits` holds the settings, `RequestGuard` the budget and the counts."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass

import numpy as np
from aiohttp import web

from .metrics import Page

try:
    from asyncio import timeout as _deadline_after  # Python 3.11+
except ImportError:  # Python 3.10, where aiohttp depends on async-timeout
    from async_timeout import timeout as _deadline_after

_log = logging.getLogger("workers.limits")
MIB = 2**20


def error(status: int, code: str, detail: str, **extra) -> web.Response:
    """Returns a JSON error answer: {"error": code, "detail": text, ...}."""
    return web.json_response({"error": code, "detail": detail, **extra}, status=status)


@dataclass(frozen=True)
class RequestLimits:
    """A worker's limits on what requests may hold and how slowly they may arrive."""

    body_budget_bytes: int = 64 * MIB
    """Bodies in flight (being read, queued or in a batch), all requests together."""
    prealloc_max_bytes: int = 4 * MIB
    """Largest announced body read into one buffer of its size; larger ones grow as bytes arrive."""
    prealloc_share: float = 0.5
    """Share of the budget that preallocated buffers may hold, so that slow senders which announced
    large bodies cannot starve the requests that follow."""
    header_timeout_s: float = 10.0
    """From a connection's first byte of a request (or its opening) to the end of its headers."""
    body_timeout_s: float = 30.0
    """From the end of the headers to the end of the body."""
    json_max_depth: int = 64
    """Deepest nesting of arrays and objects in a JSON request (a v2 request needs about 8)."""

    def __post_init__(self) -> None:
        if not (self.body_budget_bytes > 0 and self.prealloc_max_bytes >= 0 and 0 <= self.prealloc_share <= 1
                and self.header_timeout_s > 0 and self.body_timeout_s > 0 and self.json_max_depth > 0):
            raise ValueError(f"bad request limits {self}: budget, timeouts and depth must be > 0, the "
                             "preallocation cap >= 0 and its share in [0, 1]")


class Rejected(Exception):
    """A request refused before it reached the batcher, its body left unread. `close`: the connection
    closes after the answer (aiohttp first reads and drops what the client still sends, for at most its
    lingering time, so that the client gets the answer); `abort`: it closes as soon as the answer is
    written (a slow sender, which would hold it through the lingering too)."""

    def __init__(self, status: int, code: str, detail: str, close: bool = False, abort: bool = False,
                 **extra) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.extra = status, code, detail, extra
        self.close, self.abort = close or abort, abort


@dataclass
class _Held:
    """The body bytes one request holds against the budget."""

    total: int = 0
    preallocated: int = 0


_HELD = "workers.limits.held"  # the request's _Held, released when its answer is ready


class RequestGuard:
    """The worker's body budget and the counts of what its limits refused or closed."""

    def __init__(self, limits: RequestLimits, max_body_bytes: int) -> None:
        self.limits = limits
        self.max_body_bytes = max_body_bytes
        self.in_flight_bytes = 0
        self.preallocated_bytes = 0
        self.refused_budget = 0
        self.timeouts = {"header": 0, "body": 0}
        self.disconnects = 0

    def reserve(self, request: web.BaseRequest, nbytes: int, preallocate: bool = False) -> bool:
        """Counts `nbytes` more held by `request`, or returns False when they would pass the budget
        (or, for a preallocated buffer, its share of it)."""
        lim = self.limits
        if self.in_flight_bytes + nbytes > lim.body_budget_bytes:
            return False
        if preallocate and self.preallocated_bytes + nbytes > lim.body_budget_bytes * lim.prealloc_share:
            return False
        held = request.get(_HELD)
        if held is None:
            held = request[_HELD] = _Held()
        held.total += nbytes
        self.in_flight_bytes += nbytes
        if preallocate:
            held.preallocated += nbytes
            self.preallocated_bytes += nbytes
        return True

    def release(self, request: web.BaseRequest, nbytes: int | None = None) -> None:
        """Releases `nbytes` that `request` held (not preallocated ones), or all it holds."""
        held = request.get(_HELD)
        if held is None:
            return
        if nbytes is None:
            self.in_flight_bytes -= held.total
            self.preallocated_bytes -= held.preallocated
            held.total = held.preallocated = 0
            return
        held.total -= nbytes
        self.in_flight_bytes -= nbytes

    def on_header_timeout(self) -> None:
        self.timeouts["header"] += 1

    def add_metrics(self, page: Page) -> None:
        """Adds the budget's and the limits' families to a metrics page."""
        page.gauge("worker_body_budget_bytes", "bytes that request bodies in flight may hold, all together",
                   self.limits.body_budget_bytes)
        page.gauge("worker_body_in_flight_bytes", "bytes request bodies in flight hold (read, queued or in a "
                   "batch)", self.in_flight_bytes)
        page.counter("worker_body_budget_refused_total", "requests refused (503 body_budget) because their "
                     "body would pass the budget", self.refused_budget)
        page.counter("worker_request_timeouts_total", "connections closed because a request's headers or "
                     "body came too slowly", [({"phase": k}, v) for k, v in self.timeouts.items()])
        page.counter("worker_client_disconnects_total", "requests whose client dropped the connection before "
                     "its body was in", self.disconnects)


async def read_body(request: web.BaseRequest, guard: RequestGuard) -> bytes | bytearray:
    """Returns the body within the guard's limits, or raises Rejected (413 over the size limit, 503 over
    the budget, 408 past the body deadline). A body announced with a Content-Length up to the
    preallocation cap is read into one buffer of that size (one copy, where aiohttp's `read` grows a
    buffer and copies it again: ~1 ms for a 2 MB tensor); any other is kept as it arrives and joined once."""
    limit, size = guard.max_body_bytes, request.content_length
    if size is not None and size > limit:
        raise Rejected(413, "body_too_large", f"body of {size} bytes exceeds {limit}", limit_bytes=limit)
    received = [0]
    try:
        async with _deadline_after(guard.limits.body_timeout_s):
            if size and size <= guard.limits.prealloc_max_bytes and guard.reserve(request, size, preallocate=True):
                return await _read_into_buffer(request, size, received)
            return await _read_as_it_arrives(request, guard, received)
    except (TimeoutError, asyncio.TimeoutError):  # one class from Python 3.11 on
        guard.timeouts["body"] += 1
        _log.info("closing the connection from %s: %s %s sent %d of %s body bytes in %.0f s", request.remote,
                  request.method, request.path, received[0], size if size is not None else "?",
                  guard.limits.body_timeout_s)
        raise Rejected(408, "body_timeout", f"the body did not arrive within {guard.limits.body_timeout_s:g} s "
                       f"({received[0]} of {size if size is not None else 'unknown'} bytes)", abort=True) from None


async def _read_into_buffer(request: web.BaseRequest, size: int, received: list[int]) -> bytearray:
    body = bytearray(size)
    view, filled = memoryview(body), 0
    try:
        while filled < size:
            chunk = await request.content.readany()
            if not chunk:
                break
            take = min(len(chunk), size - filled)
            view[filled:filled + take] = chunk[:take] if take < len(chunk) else chunk
            filled += take
            received[0] = filled
    finally:
        view.release()
    return body if filled == size else body[:filled]


async def _read_as_it_arrives(request: web.BaseRequest, guard: RequestGuard, received: list[int]) -> bytes:
    chunks: list[bytes] = []
    got = 0
    while chunk := await request.content.readany():
        got += len(chunk)
        received[0] = got
        if got > guard.max_body_bytes:
            raise Rejected(413, "body_too_large", f"body exceeds {guard.max_body_bytes} bytes",
                           close=True, limit_bytes=guard.max_body_bytes)
        if not guard.reserve(request, len(chunk)):
            _refuse_over_budget(request, guard, got)
        chunks.append(chunk)
    if len(chunks) <= 1:
        return chunks[0] if chunks else b""
    if not guard.reserve(request, got):  # the joined copy, before the chunks are let go
        _refuse_over_budget(request, guard, got)
    body = b"".join(chunks)
    guard.release(request, got)
    return body


def _refuse_over_budget(request: web.BaseRequest, guard: RequestGuard, got: int) -> None:
    guard.refused_budget += 1
    budget = guard.limits.body_budget_bytes
    raise Rejected(503, "body_budget", f"request bodies in flight would exceed the worker's budget of {budget} "
                   f"bytes ({guard.in_flight_bytes} held, this body {got} so far)", close=True,
                   budget_bytes=budget, in_flight_bytes=guard.in_flight_bytes)


# Strings first (their brackets do not nest), then every byte but the brackets goes.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth_error(text: bytes | bytearray, max_depth: int) -> str | None:
    """Returns why a JSON text nests arrays and objects deeper than `max_depth`, or None. Linear and in C
    (counting, a regular expression, numpy), so that the parser never recurses that deep."""
    if text.count(b"[") + text.count(b"{") <= max_depth:  # the common case: too few to nest that deep
        return None
    brackets = np.frombuffer(_JSON_STRING.sub(b"", text).translate(None, _NOT_BRACKETS), np.uint8)
    depth = int(np.cumsum(np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1)).max(initial=0))
    if depth <= max_depth:
        return None
    return f"JSON nested {depth} deep; at most {max_depth} levels of arrays and objects are accepted"
