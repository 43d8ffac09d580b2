"""Service start-up and shut-down, written once for every process that serves: an aiohttp application on
host:port, announced with `READY <url>` when the caller says it is ready, stopped by SIGTERM or SIGINT.

The workers and the live run's antenna schedulers serve through `serving`; the live run's sources, which
serve nothing, use `stop_on_signals` and `announce_ready` (live may import workers, workers not live).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .connections import DeadlineAppRunner

RUN_KEEPALIVE_S = 3600.0
"""How long (run seconds, x K in real time) a live run's services and clients keep an idle connection open: longer
than a run, so that connections opened ahead of the frames (live/warmpool.py) are there when the frames come."""


def stop_on_signals(event: asyncio.Event | None = None) -> asyncio.Event:
    """Returns an event (`event`, or a new one) that SIGTERM and SIGINT set, on the running loop."""
    stop = event if event is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def ignore_stop_signals() -> None:
    """From now on SIGTERM and SIGINT are ignored: the running loop's handlers (`stop_on_signals`) are removed,
    the signals blocked meanwhile, so that none arriving in between (nor once the loop is closed, when they would
    take their default action) kills a process that is already stopping before it has written its last words."""
    loop = asyncio.get_running_loop()
    sigs = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        for sig in sigs:
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, sigs)


def announce_ready(url: str = "", say: Callable[..., None] = print) -> None:
    """Prints the line the orchestrator waits for: `READY <url>` (`READY` alone for a process with no URL)."""
    say(f"READY {url}" if url else "READY", flush=True)


def ready_address(line: str) -> str | None:
    """Returns what a `READY <address>` line announces ('' for `READY` alone); None for any other line."""
    words = line.split()
    if not words or words[0] != "READY":
        return None
    return words[1] if len(words) > 1 else ""


def read_ready(proc: subprocess.Popen, what: str, timeout_s: float = 120.0) -> str:
    """Returns the address a process announced on its stdout pipe (a text pipe; other lines are skipped);
    raises RuntimeError naming `what` if it exits first or has not announced after `timeout_s`."""
    assert proc.stdout is not None, "read_ready needs stdout=subprocess.PIPE, text=True"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{what} exited before it was ready (status {proc.wait()})")
        address = ready_address(line)
        if address is not None:
            return address
    raise RuntimeError(f"{what} not ready in {timeout_s:.0f} s")


@dataclass
class Service:
    """An application being served: its address and the event that asks it to stop."""

    url: str
    stop: asyncio.Event

    def announce(self, say: Callable[..., None] = print) -> None:
        announce_ready(self.url, say)


@asynccontextmanager
async def serving(app: web.Application, host: str, port: int, shutdown_timeout_s: float = 60.0,
                  header_timeout_s: float | None = None, on_header_timeout: Callable[[], None] | None = None,
                  keepalive_timeout_s: float | None = None) -> AsyncIterator[Service]:
    """Serves `app` on host:port (port 0: the OS picks) until the block ends; SIGTERM or SIGINT set the
    service's `stop`. The block announces READY when the service is ready and waits for `stop`.
    With `header_timeout_s`, a connection whose request headers are not complete that long after it
    opened or the request began is closed, and `on_header_timeout` called (workers/connections.py). An idle
    connection is closed after `keepalive_timeout_s` (real seconds; aiohttp's 75 without it)."""
    options: dict[str, Any] = dict(access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout_s)
    if keepalive_timeout_s is not None:
        options["keepalive_timeout"] = keepalive_timeout_s
    runner = (web.AppRunner(app, **options) if header_timeout_s is None else
              DeadlineAppRunner(app, header_timeout_s=header_timeout_s, on_header_timeout=on_header_timeout,
                                **options))
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        bound_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url_host = f"[{host}]" if ":" in host else host
        yield Service(url=f"http://{url_host}:{bound_port}", stop=stop_on_signals())
    finally:
        await runner.cleanup()
