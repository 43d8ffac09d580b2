"""A deadline for a request's headers on an aiohttp server, which has none of its own: a connection that
opens, or starts a request, and has not finished its headers `header_timeout_s` later is closed (Go's
ReadHeaderTimeout). Without it a client sending headers a byte at a time holds its connection forever.

`DeadlineAppRunner` is an `AppRunner` whose connections carry that deadline. It reaches into aiohttp's
request handler (aiohttp 3.13, pinned): the handler waits on `_waiter` for the next parsed request."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

_log = logging.getLogger("workers.connections")


class _HeaderDeadlineHandler(RequestHandler):
    """aiohttp's request handler, closing its connection when a request's headers come too slowly."""

    __slots__ = ("_header_timeout_s", "_header_timer", "_on_header_timeout")

    def __init__(self, manager: web.Server, *, header_timeout_s: float,
                 on_header_timeout: Callable[[], None] | None, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout_s = header_timeout_s
        self._header_timer: asyncio.TimerHandle | None = None
        self._on_header_timeout = on_header_timeout

    def _awaiting_headers(self) -> bool:
        """Whether the handler waits for a request that has not been parsed whole yet."""
        return self._waiter is not None and not self._waiter.done()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._header_timer = self._loop.call_later(self._header_timeout_s, self._headers_too_slow)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._awaiting_headers():  # part of a request's headers: the deadline runs from its first byte
            if self._header_timer is None:
                self._header_timer = self._loop.call_later(self._header_timeout_s, self._headers_too_slow)
        elif self._header_timer is not None:  # headers complete (or a body arriving)
            self._header_timer.cancel()
            self._header_timer = None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self._awaiting_headers() or self.transport is None:
            return
        peer = self.transport.get_extra_info("peername")
        _log.info("closing the connection from %s: no complete request headers within %g s", peer,
                  self._header_timeout_s)
        if self._on_header_timeout is not None:
            self._on_header_timeout()
        self.force_close()


class _DeadlineServer(web.Server):
    """aiohttp's low-level server, making connections with a header deadline."""

    def __init__(self, *args: Any, header_timeout_s: float, on_header_timeout: Callable[[], None] | None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout_s = header_timeout_s
        self._on_header_timeout = on_header_timeout

    def __call__(self) -> RequestHandler:
        return _HeaderDeadlineHandler(self, header_timeout_s=self._header_timeout_s,
                                      on_header_timeout=self._on_header_timeout, loop=self._loop, **self._kwargs)


class DeadlineAppRunner(web.AppRunner):
    """An AppRunner whose connections are closed when a request's headers are not complete
    `header_timeout_s` after the connection opened or the request's first byte arrived;
    `on_header_timeout` is called for each one closed so."""

    def __init__(self, app: web.Application, *, header_timeout_s: float,
                 on_header_timeout: Callable[[], None] | None = None, **kwargs: Any) -> None:
        if header_timeout_s <= 0:
            raise ValueError(f"header_timeout_s must be > 0, not {header_timeout_s}")
        super().__init__(app, **kwargs)
        self._header_timeout_s = header_timeout_s
        self._on_header_timeout = on_header_timeout

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        return _DeadlineServer(made.request_handler, request_factory=made.request_factory,
                               handler_cancellation=made.handler_cancellation, loop=made._loop,
                               header_timeout_s=self._header_timeout_s,
                               on_header_timeout=self._on_header_timeout, **made._kwargs)
