"""The platform floor for bench_worker's low-load latency: the smallest HTTP servers that take the same
body and answer after the same pause as the worker's batch, with nothing else (no batcher, no thread
hand-off, no detections). Two kinds: a bare aiohttp handler (the framework the worker is built on) and a
plain asyncio protocol (no framework). Each answers {"n": body bytes, "pause_ms": the pause as slept},
so the client can subtract the pause per query exactly as it subtracts the worker's own batch time.

    .venv/bin/python benchmarks/bare_server.py --kind aiohttp|asyncio --pause-ms 12 [--cpu 1]

prints `READY <port>` once listening on 127.0.0.1 and serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.runtime import keep_freed_memory  # noqa: E402


def _answer(nbytes: int, started: float) -> bytes:
    return json.dumps({"n": nbytes, "pause_ms": (time.perf_counter() - started) * 1000.0}).encode()


async def serve_aiohttp(pause_s: float) -> None:
    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        started = time.perf_counter()
        await asyncio.sleep(pause_s)
        return web.Response(body=_answer(len(body), started), content_type="application/json")

    app = web.Application(client_max_size=64 << 20)
    app.add_routes([web.post("/{tail:.*}", handle)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print("READY", site._server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


class _Protocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive with Content-Length bodies only: enough for the benchmark's client."""

    def __init__(self, pause_s: float) -> None:
        self.pause_s = pause_s
        self.buf = bytearray()
        self.need: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.need is None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buf[:end]).lower()
                at = head.find(b"content-length:")
                length = int(head[at + 15:].split(b"\r\n", 1)[0]) if at >= 0 else 0
                self.need = end + 4 + length
            if len(self.buf) < self.need:
                return
            nbytes = self.need
            del self.buf[:nbytes]
            self.need = None
            asyncio.get_running_loop().call_later(self.pause_s, self._reply, nbytes, time.perf_counter())

    def _reply(self, nbytes: int, started: float) -> None:
        out = _answer(nbytes, started)
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(out), out))


async def serve_asyncio(pause_s: float) -> None:
    server = await asyncio.get_running_loop().create_server(lambda: _Protocol(pause_s), "127.0.0.1", 0)
    print("READY", server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=("aiohttp", "asyncio"), required=True)
    parser.add_argument("--pause-ms", type=float, required=True)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU, as the worker is")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    keep_freed_memory()  # malloc tuned as the worker's (workers/runtime.py): no fresh pages per large body
    serve = serve_aiohttp if args.kind == "aiohttp" else serve_asyncio
    asyncio.run(serve(args.pause_ms / 1000.0))


if __name__ == "__main__":
    main()
