"""A stream's first queries wait for the scheduler's answer to opening the stream: the source logs each opening
beside its records, and the fidelity verdict measures those queries' send lag from the answer, not from their
schedule (the round trip is the emulated system's, not the host falling behind). A real aiohttp scheduler that
answers the opening late, a real Source, its files read back by the verdict."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
from aiohttp import web
from aiohttp.test_utils import TestServer

from analysis.records import RecordWriter
from live.sendlag import OPENS_COLUMNS, opens_path, read_opens
from live.source import Records, Source
from live.verdict import record_columns, send_lag
from workload.trace import read_trace

OPEN_DELAY_S = 0.12
"""How long the scheduler takes to answer the opening: queries 0, 1 and 2 (due at 0, 50 and 100 ms) wait for it."""


def _scheduler() -> web.Application:
    async def open_stream(request: web.Request) -> web.Response:
        await asyncio.sleep(OPEN_DELAY_S)
        return web.json_response({"cluster": "ant1", "variant": "v"})

    async def frame(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"ok": True, "cluster": "ant1", "variant": "v", "batch_size": 1})

    async def close(request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/streams", open_stream)
    app.router.add_post("/streams/{sid}/frames", frame)
    app.router.add_delete("/streams/{sid}", close)
    return app


def test_the_opening_round_trip_is_not_counted_as_send_lag(tmp_path: Path) -> None:
    trace_file = tmp_path / "trace.csv"
    trace_file.write_text("stream_id,antenna,start_s,duration_s,app,fps,frame_bytes,max_delay_ms,min_accuracy,task\n"
                          "7,ant1,0.2,0.5,ar-vr,20,2000,1000,0.2,object-detection\n")
    records_file = tmp_path / "records" / "ant1.csv"

    async def scenario() -> Source:
        async with TestServer(_scheduler()) as server:
            with RecordWriter(records_file) as writer:
                source = Source(read_trace(trace_file), f"http://127.0.0.1:{server.port}", 0.0, 0.7,
                                Records(writer), 5.0, opens_file=opens_path(records_file))
                source.t0_s = source.clock.now_s()  # t0 is now: the stream opens 200 ms later
                await source.run()
                return source

    source = asyncio.run(scenario())
    assert opens_path(records_file) == tmp_path / "records" / "ant1.opens.csv"
    assert opens_path(records_file).read_text().splitlines()[0] == ",".join(OPENS_COLUMNS)
    opens = read_opens(tmp_path)
    assert opens.shape == (1, 4) and tuple(opens[0, :2]) == (7.0, 0.0)
    t_open, t_bound = opens[0, 2], opens[0, 3]
    assert t_open >= 200.0 and t_bound - t_open >= OPEN_DELAY_S * 1000.0
    rec = record_columns(records_file)
    assert sorted(rec["query"]) == list(range(10)) and set(rec["outcome"]) == {"ontime"}
    schedule = 200.0 + rec["query"] * 50.0
    due, lag = send_lag(rec, trace_file, opens)
    # held queries are due one opening round trip after the opening was due (t0 + 200 ms)
    assert np.allclose(due, np.maximum(schedule, 200.0 + t_bound - t_open), rtol=0, atol=1e-9)
    assert set(rec["query"][schedule < 200.0 + t_bound - t_open]) >= {0, 1, 2}
    assert (rec["t_send_ms"] >= due - 1e-9).all()
    _, lag_by_schedule = send_lag(rec, trace_file)
    first = rec["query"] == 0
    assert lag_by_schedule[first][0] >= OPEN_DELAY_S * 1000.0 > lag[first][0]
    assert len(source.lag_ms) == 10


def test_a_reopened_stream_is_held_from_its_latest_opening(tmp_path: Path) -> None:
    """Stream 1 opens at 0 (answered at 30 ms) and again before query 5 (due 500 ms, answered at 580 ms);
    stream 2 never waited. Each query is due at max(schedule, the answer to its latest opening at or before it)."""
    trace_file = tmp_path / "trace.csv"
    trace_file.write_text("stream_id,antenna,start_s,duration_s,app,fps,frame_bytes,max_delay_ms,min_accuracy,task\n"
                          "1,ant1,0,1,ar-vr,10,2000,1000,0.2,object-detection\n"
                          "2,ant1,0,1,ar-vr,10,2000,1000,0.2,object-detection\n")
    q = np.array([0, 1, 4, 5, 6, 0, 5])
    rec = {"stream_id": np.array([1, 1, 1, 1, 1, 2, 2]), "query": q,
           "t_send_ms": np.array([31.0, 100.0, 400.0, 581.0, 600.0, 0.5, 500.5]),
           "outcome": np.array(["ontime"] * 7, dtype=object), "reason": np.array([""] * 7, dtype=object)}
    opens = np.array([[1, 5, 500.0, 580.0], [1, 0, 0.0, 30.0]])  # any order
    due, lag = send_lag(rec, trace_file, opens)
    assert due.tolist() == [30.0, 100.0, 400.0, 580.0, 600.0, 0.0, 500.0]
    assert lag.tolist() == [1.0, 0.0, 0.0, 1.0, 0.0, 0.5, 0.5]
    assert send_lag(rec, trace_file)[1].max() == 81.0
    # a source that woke 300 ms late to open stream 1 is late by as much: only the round trip (30 ms) is excused
    late = {**rec, "t_send_ms": np.array([331.0, 331.0, 400.0, 581.0, 600.0, 0.5, 500.5])}
    _, lag = send_lag(late, trace_file, np.array([[1, 0, 300.0, 330.0], [1, 5, 500.0, 580.0]]))
    assert lag[:2].tolist() == [301.0, 231.0]


def test_queries_rejected_at_binding_or_never_opened_are_not_sent(tmp_path: Path) -> None:
    """Stream 1's opening is rejected (answered at 40 ms): its queries are recorded at their schedule (0, 100 and
    200 ms), never sent, and none counts, though query 0 is due before the answer (lag -40 ms if counted). A
    query whose opening failed on a scheduler down is recorded when it failed, not sent either. A query rejected
    by a worker after it was sent (queue full) counts."""
    trace_file = tmp_path / "trace.csv"
    trace_file.write_text("stream_id,antenna,start_s,duration_s,app,fps,frame_bytes,max_delay_ms,min_accuracy,task\n"
                          "1,ant1,0,0.3,ar-vr,10,2000,1000,0.2,object-detection\n"
                          "2,ant1,0,0.3,ar-vr,10,2000,1000,0.2,object-detection\n")
    rec = {"stream_id": np.array([1, 1, 1, 2, 2, 2]), "query": np.array([0, 1, 2, 0, 1, 2]),
           "t_send_ms": np.array([0.0, 100.0, 200.0, 21.0, 100.4, 200.2]),
           "outcome": np.array(["rejected"] * 4 + ["ontime", "rejected"], dtype=object),
           "reason": np.array(["capacity"] * 3 + ["scheduler-down", "", "queue-full"], dtype=object)}
    opens = np.array([[1, 0, 0.0, 40.0], [2, 1, 25.0, 25.3]])
    due, lag = send_lag(rec, trace_file, opens)
    assert np.allclose(due, [100.3, 200.0]) and np.allclose(lag, [0.1, 0.2])  # query 1 held by its reopening
