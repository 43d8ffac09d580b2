"""A source opens its connections to the scheduler before t0 (`--warm-connections`, live/sourcesession.py): every
stream opening and frame then goes out on a connection that already exists, as the simulator's messages do, not
after a TCP handshake; with none warmed, the first request opens one. More are opened as the frames in flight grow,
and again once the scheduler has dropped them; idle ones are kept for the run. A stand-in scheduler on loopback
(aiohttp) notes the client port of each request."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest
from aiohttp import web

from analysis.records import RecordWriter, read_records
from live.source import Records, Source, replay
from workers.lifecycle import RUN_KEEPALIVE_S
from workload.trace import read_trace

TRACE = """stream_id,antenna,start_s,duration_s,app,fps,frame_bytes,max_delay_ms,min_accuracy,task
0,ant1,0.0,0.6,ar-vr,10,3000,1000,0.2,object-detection
1,ant1,0.05,0.6,ar-vr,10,3000,1000,0.2,object-detection
"""


class Scheduler:
    """A stand-in antenna scheduler answering at once, or each frame after `frame_delay_s`."""

    def __init__(self, frame_delay_s: float = 0.0) -> None:
        self.seen: list[tuple[str, int]] = []
        """(what, client port) of every request, in order."""
        self.frame_delay_s = frame_delay_s
        self.app = web.Application()
        self.app.add_routes([web.get("/health", self.health), web.post("/streams", self.open),
                             web.post("/streams/{sid}/frames", self.frame), web.delete("/streams/{sid}", self.close)])

    def note(self, what: str, request: web.Request) -> None:
        self.seen.append((what, request.transport.get_extra_info("peername")[1]))  # type: ignore[union-attr]

    async def health(self, request: web.Request) -> web.Response:
        self.note("health", request)
        return web.Response(text="ok")

    async def open(self, request: web.Request) -> web.Response:
        self.note("open", request)
        return web.json_response({"cluster": "ant1", "variant": "v"})

    async def frame(self, request: web.Request) -> web.Response:
        self.note("frame", request)
        await request.read()
        await asyncio.sleep(self.frame_delay_s)
        return web.json_response({"ok": True, "cluster": "ant1", "variant": "v", "batch_size": 1})

    async def close(self, request: web.Request) -> web.Response:
        self.note("close", request)
        return web.json_response({})

    async def serve(self, work) -> None:  # noqa: ANN001 (a coroutine function of the URL)
        runner = web.AppRunner(self.app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            await work(f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}")  # type: ignore[union-attr]
        finally:
            await runner.cleanup()


def _source(tmp_path: Path, url: str, writer: RecordWriter, warm: int) -> Source:
    trace = tmp_path / "trace.csv"
    trace.write_text(TRACE)
    return Source(read_trace(trace), url, 0.0, 1.0, Records(writer), 5.0, warm_connections=warm)


@pytest.fixture
def signals_restored():
    """`replay` leaves SIGTERM and SIGINT ignored (a source stopping keeps them off), which children spawned by later
    tests would inherit: put back as they were."""
    kept = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in kept.items():
        signal.signal(sig, handler)


def test_every_request_goes_out_on_a_connection_warmed_before_t0(tmp_path, signals_restored) -> None:
    for warm in (8, 0):
        scheduler = Scheduler()

        async def work(url: str, warm: int = warm) -> None:
            with RecordWriter(tmp_path / f"warm{warm}.csv") as writer:
                source = _source(tmp_path, url, writer, warm)
                t0 = tmp_path / f"t0-{warm}"
                t0.write_text(f"{time.time() + 0.3:.6f}")  # as the orchestrator writes it, after READY
                await replay(source, t0)

        asyncio.run(scheduler.serve(work))
        seen = scheduler.seen
        assert sum(what == "frame" for what, _ in seen) == 12
        assert read_records(tmp_path / f"warm{warm}.csv").column("outcome").to_pylist() == ["ontime"] * 12
        if warm:  # 8 connections before t0, and every opening, frame and closing on one of them
            assert [what for what, _ in seen[:8]] == ["health"] * 8 and len({p for _, p in seen[:8]}) == 8
            assert {p for what, p in seen if what != "health"} <= {p for _, p in seen[:8]}
        else:  # the first request opens its own
            assert seen[0][0] == "open" and not any(what == "health" for what, _ in seen)


def test_more_connections_as_frames_in_flight_grow_and_again_once_the_scheduler_dropped_them(tmp_path) -> None:
    scheduler = Scheduler(frame_delay_s=0.35)  # about 7 frames in flight at once

    async def work(url: str) -> None:
        with RecordWriter(tmp_path / "slow.csv") as writer:
            source = _source(tmp_path, url, writer, 4)
            await source.scheduler.open()
            connector = source.scheduler.session.connector  # type: ignore[union-attr]
            assert connector._keepalive_timeout == RUN_KEEPALIVE_S  # idle ones kept for the run (K = 1)
            source.t0_s = source.clock.now_s()
            await source.run()
            warmed = sum(what == "health" for what, _ in scheduler.seen)
            assert warmed > 4  # warmed again as the frames in flight passed the first warm-up's level
            source.scheduler.session = None  # closed: a scheduler that dropped the connections is warmed again
            await source.scheduler.open()
            source.scheduler.lost()
            await asyncio.gather(*source.scheduler.warming)
            await source.scheduler.close()
            assert sum(what == "health" for what, _ in scheduler.seen) == warmed + 4 + 4  # opened, then lost

    asyncio.run(scheduler.serve(work))
