"""When a stream's capacity is given back: a source closes a bound stream at its end in the trace, when the
simulator releases it, not once its last answers are in (a real Source against an aiohttp scheduler that answers
the last frame late); one rejected at binding at once; and a live scheduler still relays a frame of a stream its
source has closed (a real scheduler service and a real profile-driven worker)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from test_reservations import _worker_and_two_schedulers
from worker_profile import write_worker_profile

from analysis.records import RecordWriter
from live.source import Records, Source
from workers.deployment import WorkerSettings
from workload.trace import read_trace

LAST_ANSWER_LATE_S = 1.0
"""How long the scheduler holds the answer to stream 7's last frame."""


def test_a_bound_stream_closes_at_its_end_and_a_rejected_one_at_once(tmp_path: Path) -> None:
    """Stream 7 is bound: 10 frames at 10 fps from 0.1 s, its end at 1.1 s; its last frame is answered 1 s late,
    after its close (before, it closed after that answer). Stream 8 is rejected when it opens: its three queries
    are due at 0.1, 1.1 and 2.1 s and it closes then, before its end (3.1 s), as it did before."""
    trace_file = tmp_path / "trace.csv"
    trace_file.write_text("stream_id,antenna,start_s,duration_s,app,fps,frame_bytes,max_delay_ms,min_accuracy,task\n"
                          "7,ant1,0.1,1.0,ar-vr,10,2000,5000,0.2,object-detection\n"
                          "8,ant1,0.1,3.0,ar-vr,1,2000,5000,0.2,object-detection\n")
    log: list[tuple[str, int, float]] = []
    t0 = [0.0]

    async def open_stream(request: web.Request) -> web.Response:
        sid = int((await request.json())["stream_id"])
        return web.json_response({"cluster": "ant1", "variant": "v"} if sid == 7 else {"rejected": "capacity"})

    async def frame(request: web.Request) -> web.Response:
        await request.read()
        if request.query["query"] == "9":
            await asyncio.sleep(LAST_ANSWER_LATE_S)
            log.append(("last-answer", int(request.match_info["sid"]), time.time() - t0[0]))
        return web.json_response({"ok": True, "cluster": "ant1", "variant": "v", "batch_size": 1})

    async def close(request: web.Request) -> web.Response:
        log.append(("close", int(request.match_info["sid"]), time.time() - t0[0]))
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/streams", open_stream)
    app.router.add_post("/streams/{sid}/frames", frame)
    app.router.add_delete("/streams/{sid}", close)

    async def scenario() -> None:
        async with TestServer(app) as server:
            with RecordWriter(tmp_path / "records.csv") as writer:
                source = Source(read_trace(trace_file), f"http://127.0.0.1:{server.port}", 0.0, 3.1,
                                Records(writer), 5.0)
                source.t0_s = t0[0] = time.time()
                await source.run()

    asyncio.run(scenario())
    order = [(what, sid) for what, sid, _ in log]
    at = {(what, sid): t for what, sid, t in log}
    assert order.index(("close", 7)) < order.index(("last-answer", 7))  # not held for its last answer
    assert at[("close", 7)] >= 1.1  # nor closed before its end
    assert 2.1 <= at[("close", 8)] < 3.1  # rejected: closed once its last query was due, before its end


def test_a_scheduler_relays_a_frame_of_a_stream_its_source_closed(tiny_system, tmp_path: Path) -> None:
    """A frame that reaches the scheduler after its stream's close (sent before it) is relayed to the worker the
    stream was bound to, as the simulator serves every query sent before a stream's end; a stream never opened
    is still unknown (404)."""
    _, _, system = tiny_system
    settings = WorkerSettings(model="tiny-yolov2", profile_driven=write_worker_profile(
        tmp_path / "p.yaml", "tiny-yolov2", {1: 10.0}))
    jpeg = b"\xff\xd8" + bytes(100) + b"\xff\xd9"

    async def scenario() -> list:
        wr, _, runners, urls, lives, _ = await _worker_and_two_schedulers(system, settings)
        body = {"stream_id": 1, "fps": 1.0, "frame_bytes": 1000, "max_delay_ms": 1e6, "min_accuracy": 0.0}
        out = []
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{urls[0]}/streams", json=body):
                pass
            async with s.delete(f"{urls[0]}/streams/1"):
                pass
            for sid in (1, 2):
                async with s.post(f"{urls[0]}/streams/{sid}/frames", data=jpeg, params={"query": "0"},
                                  headers={"Content-Type": "image/jpeg", "X-Send-Ms": "0"}) as r:
                    out.append((r.status, await r.json()))
            out.append((len(lives[0].streams), list(lives[0].closed)))
        for runner in (*runners, wr):
            await runner.cleanup()
        return out

    (closed_code, closed_answer), (unknown_code, unknown), after = asyncio.run(scenario())
    assert closed_code == 200 and closed_answer["ok"] and closed_answer["cluster"] == system.resources[0].site
    assert unknown_code == 404 and unknown["error"] == "unknown_stream"
    assert after == (0, [1])  # released (its load gone), still known for its last frames
