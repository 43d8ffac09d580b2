"""A source sends the frames of its streams in (due time, trace row) order, the same at every dilation factor K:
frames of several streams due at one instant leave in trace-row order, not in whichever order their timers fire
(which changed with K). The source runs on a virtual clock (tests/virtual_clock.py), its scheduler's answers
replaced by coroutines that answer at once, so the order is the source's own and the test takes no real time."""

from __future__ import annotations

from pathlib import Path

import pytest
from virtual_clock import VirtualClockLoop

from live.clock import DilatedClock
from live.source import Records, Source
from topologies.timescale import TimeScale
from workload.trace import read_trace

# Every 50 ms several streams are due at once: five at 0, 100 and 200 ms, with stream 0 (from 100 ms on); stream 2
# ends at 100 ms. The trace's rows are sorted by start, then stream id (workload/trace.py): stream 0 is the last row.
TRACE = """stream_id,antenna,start_s,duration_s,app,fps,frame_bytes,max_delay_ms,min_accuracy,task
5,ant1,0.0,0.3,ar-vr,20,2000,1000,0.2,object-detection
3,ant1,0.0,0.3,ar-vr,10,2000,1000,0.2,object-detection
9,ant1,0.0,0.3,ar-vr,20,2000,1000,0.2,object-detection
2,ant1,0.0,0.15,ar-vr,20,2000,1000,0.2,object-detection
0,ant1,0.1,0.2,ar-vr,10,2000,1000,0.2,object-detection
1,ant1,0.0,0.3,ar-vr,10,2000,1000,0.2,object-detection
"""
T0_S = 1000.0
"""The run's t0 (virtual epoch seconds); the clock starts one virtual second before."""


def _sent_order(trace_file: Path, k: float) -> list[tuple[int, int]]:
    """Returns (stream id, query) of every frame the source sent, in the order it sent them, at dilation K."""
    loop = VirtualClockLoop()
    clock = DilatedClock(TimeScale(k, 0.0), real_time=lambda: (T0_S - 1.0) * k + loop.time())
    sent: list[tuple[int, int]] = []

    class Probe(Source):
        async def _open(self, i: int) -> dict:
            return {"cluster": "ant1", "variant": "v"}

        async def _query(self, i: int, k: int, frame: bytes, binding: dict, retried: bool = False) -> None:
            sent.append((int(self.trace.stream_id[i]), k))  # the send coroutine's first step: the request leaves

        async def _close(self, i: int) -> None:
            pass

    source = Probe(read_trace(trace_file), "http://x", T0_S, 1.0, Records(None), 5.0,  # type: ignore[arg-type]
                   clock=clock)
    try:
        loop.run_until_complete(source.run())
    finally:
        loop.close()
    return sent


def _due_then_row(trace_file: Path) -> list[tuple[float, int, int]]:
    """Returns (due time, stream id, query) of every frame of the trace, in (due time, trace row) order."""
    tr = read_trace(trace_file)
    frames = []
    for row in range(len(tr)):
        start, fps, end = float(tr.start_s[row]), float(tr.fps[row]), float(tr.end_s[row])
        n = round((end - start) * fps)
        frames += [(start + q / fps, row, int(tr.stream_id[row]), q) for q in range(n)]
    return [(due, sid, q) for due, _, sid, q in sorted(frames)]


@pytest.mark.parametrize("k", [1.0, 10.0])
def test_frames_due_at_one_instant_leave_in_trace_row_order(tmp_path: Path, k: float) -> None:
    trace_file = tmp_path / "trace.csv"
    trace_file.write_text(TRACE)
    expected = _due_then_row(trace_file)
    assert len(expected) == 6 + 3 + 6 + 3 + 2 + 3
    # at 100 ms six streams are due: stream 0, which starts then, is the trace's last row
    assert [(sid, q) for due, sid, q in expected if due == 0.1] == [(1, 1), (2, 2), (3, 1), (5, 2), (9, 2), (0, 0)]
    assert _sent_order(trace_file, k) == [(sid, q) for _, sid, q in expected]


def test_the_order_is_the_same_at_k_1_and_k_10(tmp_path: Path) -> None:
    trace_file = tmp_path / "trace.csv"
    trace_file.write_text(TRACE)
    assert _sent_order(trace_file, 1.0) == _sent_order(trace_file, 10.0)


def test_an_unexpected_error_of_the_last_opening_ends_the_source(tmp_path: Path) -> None:
    """One stream whose opening fails with an error that is not the scheduler's (a bug): the source does not end
    quietly with its queries unsent, it raises it (the run records `source-failed`)."""
    trace_file = tmp_path / "trace.csv"
    trace_file.write_text("stream_id,antenna,start_s,duration_s,app,fps,frame_bytes,max_delay_ms,min_accuracy,task\n"
                          "4,ant1,0.0,0.2,ar-vr,10,2000,1000,0.2,object-detection\n")
    loop = VirtualClockLoop()
    clock = DilatedClock(TimeScale(1.0, 0.0), real_time=lambda: T0_S - 1.0 + loop.time())

    class Broken(Source):
        async def _open(self, i: int) -> dict:
            raise KeyError("cluster")

        async def _close(self, i: int) -> None:
            pass

    source = Broken(read_trace(trace_file), "http://x", T0_S, 1.0, Records(None), 5.0,  # type: ignore[arg-type]
                    clock=clock)
    try:
        with pytest.raises(KeyError, match="cluster"):
            loop.run_until_complete(source.run())
    finally:
        loop.close()


def test_due_times_equal_but_for_rounding_are_one_instant(tmp_path: Path) -> None:
    """Stream 1's query 8 (0 + 8/10 s) and stream 2's query 7 (0.1 + 7/10 s) are due at 0.8 s; in floating point
    the second is one ulp earlier (0.7999999999999999), yet the trace row orders them, at every K."""
    trace_file = tmp_path / "trace.csv"
    trace_file.write_text("stream_id,antenna,start_s,duration_s,app,fps,frame_bytes,max_delay_ms,min_accuracy,task\n"
                          "1,ant1,0.0,1.0,ar-vr,10,2000,1000,0.2,object-detection\n"
                          "2,ant1,0.1,0.9,ar-vr,10,2000,1000,0.2,object-detection\n")
    assert 0.1 + 7 / 10 < 8 / 10
    for k in (1.0, 10.0):
        sent = _sent_order(trace_file, k)
        assert sent.index((1, 8)) + 1 == sent.index((2, 7)), sent
