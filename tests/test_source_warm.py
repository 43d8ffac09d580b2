"""A source opens its connections to the scheduler before t0 (`--warm-connections`): every stream opening and every
frame then goes out on a connection that already exists, as the simulator's messages do, not after a TCP handshake;
with none warmed, the first request opens one. A stand-in scheduler on loopback (aiohttp) notes the client port of
each request."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from analysis.records import RecordWriter, read_records
from live.source import Records, Source
from workload.trace import read_trace

TRACE = """stream_id,antenna,start_s,duration_s,app,fps,frame_bytes,max_delay_ms,min_accuracy,task
0,ant1,0.0,0.6,ar-vr,10,3000,1000,0.2,object-detection
1,ant1,0.05,0.6,ar-vr,10,3000,1000,0.2,object-detection
"""


async def _replay(trace_file: Path, out: Path, warm: int) -> list[tuple[str, int]]:
    """Runs a source against a stand-in scheduler; returns (what, client port) of every request it got, in order."""
    seen: list[tuple[str, int]] = []

    def note(what: str, request: web.Request) -> None:
        seen.append((what, request.transport.get_extra_info("peername")[1]))  # type: ignore[union-attr]

    async def health(request: web.Request) -> web.Response:
        note("health", request)
        return web.Response(text="ok")

    async def open_stream(request: web.Request) -> web.Response:
        note("open", request)
        return web.json_response({"cluster": "ant1", "variant": "v"})

    async def frame(request: web.Request) -> web.Response:
        note("frame", request)
        await request.read()
        return web.json_response({"ok": True, "cluster": "ant1", "variant": "v", "batch_size": 1})

    async def close(request: web.Request) -> web.Response:
        note("close", request)
        return web.json_response({})

    app = web.Application()
    app.add_routes([web.get("/health", health), web.post("/streams", open_stream),
                    web.post("/streams/{sid}/frames", frame), web.delete("/streams/{sid}", close)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        with RecordWriter(out) as writer:
            source = Source(read_trace(trace_file), f"http://127.0.0.1:{port}", 0.0, 1.0, Records(writer), 5.0,
                            warm_connections=warm)
            await source.open_session()  # before t0, as `replay` does
            source.t0_s = source.clock.now_s() + 0.1
            await source.run()
    finally:
        await runner.cleanup()
    return seen


def test_every_request_goes_out_on_a_connection_warmed_before_t0(tmp_path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text(TRACE)
    seen = asyncio.run(_replay(trace, tmp_path / "warm.csv", warm=4))
    warmed = {p for what, p in seen[:4] if what == "health"}
    assert [what for what, _ in seen[:4]] == ["health"] * 4 and len(warmed) == 4  # 4 connections before t0
    work = [(what, p) for what, p in seen if what != "health"]
    assert {what for what, _ in work} == {"open", "frame", "close"} and sum(w == "frame" for w, _ in work) == 12
    assert {p for _, p in work} <= warmed  # none opened its own
    assert (read_records(tmp_path / "warm.csv").column("outcome").to_pylist()) == ["ontime"] * 12

    cold = asyncio.run(_replay(trace, tmp_path / "cold.csv", warm=0))
    assert cold[0][0] == "open" and not any(what == "health" for what, _ in cold)  # the first request opens one
