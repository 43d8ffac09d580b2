"""The stream source of one antenna: replays its streams' queries as real JPEG frames of each stream's
size, at each stream's frame rate, to the antenna's scheduler, and logs one record per query.

Runs inside the antenna's sources host (`python -m live.source --spec RUN_DIR/spec.json --antenna NAME`),
one asyncio loop and one aiohttp session per process. Query k of a stream is sent at start_s + k/fps (times since the run's t0).
Times are the run clock's: virtual under time dilation (the frames leave K times further apart in real time).
One dispatcher sends every stream's queries in (due time, trace row) order: frames due at one instant leave in
trace-row order at every K (one timer per stream would send them in whichever order their timers fired).
A stream's first query waits for the scheduler's answer to opening the stream (a round trip over the radio):
each opening is logged beside the records (`opens_path`, as the run goes), so that the fidelity verdict and the
monitor's early stop measure a query's send lag from when it could leave, not from a schedule the emulated system
itself holds back (live/sendlag.py).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import heapq
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np

from analysis.records import RecordWriter
from live.clock import REAL_CLOCK, DilatedClock
from live.frames import JpegSizer, corrupt
from live.rundir import SCHEDULER_PORT, RunDir, wait_t0
from live.sendlag import append_opens, opens_path
from live.sourcesession import SchedulerSession
from live.spec import read_spec
from workers.lifecycle import announce_ready, ignore_stop_signals, stop_on_signals
from workload.trace import Trace, read_trace

FLUSH_S = 0.5
"""Records are written (and flushed) at least this often (real seconds)."""
STOP_CHECK_S = 0.25
"""The dispatcher waiting for the next query notices a stop request within this time (real seconds)."""

@dataclass
class Records:
    """Buffered record columns, written to the CSV at least every FLUSH_S seconds."""

    writer: RecordWriter
    cols: dict[str, list] = field(default_factory=dict)
    sent: int = 0

    def __post_init__(self) -> None:
        self._clear()

    def _clear(self) -> None:
        from analysis.records import RECORD_COLUMNS

        self.cols = {name: [] for name, _ in RECORD_COLUMNS}

    def add(self, **row: object) -> None:
        for name, values in self.cols.items():
            values.append(
                row.get(name, math.nan if name.startswith("t_") else 0 if name == "batch_size" else "")
            )
        self.sent += 1

    def flush(self) -> None:
        if self.cols["stream_id"]:
            self.writer.write(self.cols)
            self._clear()


@dataclass(eq=False)
class _Stream:
    """One stream while the source replays it: its schedule, its next query, its binding and its answers due."""

    row: int
    """Its row in the trace."""
    start_s: float
    fps: float
    queries: int
    frame_bytes: int
    k: int = 0
    """Its next query (the one the dispatcher holds it for)."""
    binding: dict = field(default_factory=dict)
    """The scheduler's answer to its latest opening (empty: open the stream before the next query)."""
    ready_ms: float = 0.0
    """When its latest opening was answered, counted from that query's due time: queries due before leave at once."""
    tasks: set[asyncio.Task] = field(default_factory=set)
    """Its queries in flight."""
    opening: asyncio.Task | None = None
    closing: asyncio.Task | None = None

    @property
    def due_s(self) -> float:
        """Returns when query k is due (seconds after t0)."""
        return self.start_s + self.k / self.fps

    @property
    def due_key(self) -> tuple[int, int]:
        """Its place in the dispatcher's heap: (due time in whole ns, trace row); due times equal but for
        rounding (0.5 + 1/20 against 11/20) are one instant, so the trace row orders them."""
        return round(self.due_s * 1e9), self.row


class Source:
    """Replays the streams of one antenna against its scheduler."""

    def __init__(
        self,
        trace: Trace,
        scheduler_url: str,
        t0_s: float,
        duration_s: float,
        records: Records,
        timeout_s: float,
        corrupt_every: int = 0,
        clock: DilatedClock = REAL_CLOCK,
        opens_file: Path | None = None,
        warm_connections: int = 0,
    ) -> None:
        self.trace = trace
        self.url = scheduler_url.rstrip("/")
        self.t0_s = t0_s
        self.duration_s = duration_s
        self.records = records
        self.clock = clock
        self.timeout = aiohttp.ClientTimeout(total=clock.scale.real_duration(timeout_s))
        self.corrupt_every = corrupt_every
        self.sizer = JpegSizer()
        self.in_flight: set[asyncio.Task] = set()
        self.frames_sent = 0
        self.lag_ms: list[float] = []
        """How late each frame left against when it could leave (its schedule, or its stream's opening answered),
        virtual ms: the source fell behind, the testbed overloaded."""
        self.opens: list[tuple[int, int, float, float]] = []
        """(stream id, query, t_open_ms, t_bound_ms) of every opening a stream's queries waited for."""
        self.opens_file = opens_file
        self.opens_written = 0
        """How many of `opens` the openings log has."""
        self.stopping = asyncio.Event()
        self.scheduler = SchedulerSession(self.url, self.timeout, clock, warm_connections, self.stopping)
        """The session to the scheduler and its warm connections (live/sourcesession.py)."""
        self.scheduler_down: collections.Counter[str] = collections.Counter()
        """What each query recorded `scheduler-down` met: the error's type (an HTTP status with it; its errno where
        the socket gave one), counted: in the DONE line, so that a run says which failure it was."""
        self.due: list[tuple[int, int]] = []
        """`_Stream.due_key` (due ns, trace row) of every stream's next query: the dispatcher's heap, one entry per
        stream."""
        self.closings: list[asyncio.Task] = []
        self.closed_rows: set[int] = set()
        """Trace rows of the streams closed (a restarted scheduler's 404 does not open them again)."""
        self.error: Exception | None = None
        """What an opening raised that is not the scheduler failing to answer: it ends the source."""
        self._waking: asyncio.Future | None = None

    def now_ms(self) -> float:
        return (self.clock.now_s() - self.t0_s) * 1000.0

    async def run(self) -> None:
        await self.scheduler.open()
        flusher = asyncio.create_task(self._flush_loop())
        try:
            await self._dispatch()
            await asyncio.gather(*self.closings)
            if self.in_flight:
                await asyncio.wait(self.in_flight)
        finally:
            flusher.cancel()
            self._flush()
            await self.scheduler.close()

    def _flush(self) -> None:
        """Writes out the openings, then the records: a record read is never ahead of its opening (the monitor's
        early stop reads both as they grow)."""
        if self.opens_file is not None and (self.opens_written < len(self.opens) or not self.opens_file.exists()):
            append_opens(self.opens_file, self.opens[self.opens_written:])
            self.opens_written = len(self.opens)
        self.records.flush()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            self._flush()

    def _row(self, i: int, k: int) -> dict:
        tr = self.trace
        return {
            "stream_id": int(tr.stream_id[i]),
            "query": k,
            "antenna": str(tr.antenna[i]),
            "app": str(tr.app[i]),
        }

    def _down(self, exc: BaseException, row: dict, t_send_ms: float) -> None:
        """Records a query the scheduler did not answer (`scheduler-down`) and counts the error behind it
        (`scheduler_down`)."""
        what = type(exc).__name__
        if isinstance(exc, aiohttp.ClientResponseError):
            what += f" {exc.status}"
        elif isinstance(exc, OSError) and exc.errno is not None:
            what += f" errno {exc.errno}"
        self.scheduler_down[what] += 1
        self.records.add(**row, t_send_ms=t_send_ms, outcome="rejected", reason="scheduler-down")

    async def _open(self, i: int) -> dict:
        """Returns the scheduler's answer to opening stream i ({cluster, variant} or {rejected}); raises
        aiohttp.ClientError when the scheduler does not answer."""
        tr = self.trace
        body = {
            "stream_id": int(tr.stream_id[i]),
            "fps": float(tr.fps[i]),
            "frame_bytes": int(tr.frame_bytes[i]),
            "max_delay_ms": float(tr.max_delay_ms[i]),
            "min_accuracy": float(tr.min_accuracy[i]),
            "task": str(tr.task[i]),
        }
        with self.scheduler.request():
            async with self.scheduler.session.post(f"{self.url}/streams", json=body) as r:  # type: ignore[union-attr]
                if r.status != 200:
                    raise aiohttp.ClientResponseError(r.request_info, (), status=r.status, message=await r.text())
                return await r.json()

    async def _dispatch(self) -> None:
        """Takes every stream's queries at their due times, in (due time, trace row) order, until the last is taken
        or the source is told to stop (queries not taken by then are never sent, nor recorded); each stream closes
        at its end (`_closing`)."""
        tr = self.trace
        streams = []
        for i in range(len(tr)):
            start, fps = float(tr.start_s[i]), float(tr.fps[i])
            n = max(0, math.ceil((min(float(tr.end_s[i]), self.duration_s) - start) * fps - 1e-9))
            if n > 0:
                streams.append(_Stream(i, start, fps, n, int(tr.frame_bytes[i])))
        by_row = {s.row: s for s in streams}
        self.due = [s.due_key for s in streams]
        heapq.heapify(self.due)
        while not self.stopping.is_set() and (self.due or any(s.opening is not None for s in streams)):
            if self.error is not None:
                raise self.error
            delay = self.clock.real_until_s(self.t0_s + self.due[0][0] / 1e9) if self.due else STOP_CHECK_S
            if delay > 0:
                await self._nap(min(delay, STOP_CHECK_S))
                continue
            self._take(by_row[heapq.heappop(self.due)[1]])
        if self.error is not None:  # the last opening failed unexpectedly after the last check
            raise self.error
        for s in streams:
            self._finish(s)

    async def _nap(self, seconds: float) -> None:
        """Sleeps `seconds` (real), or less if an opening is answered meanwhile (`_wake`: its query is due)."""
        loop = asyncio.get_running_loop()
        self._waking = loop.create_future()
        timer = loop.call_later(seconds, self._wake)
        try:
            await self._waking
        finally:
            timer.cancel()

    def _wake(self) -> None:
        if self._waking is not None and not self._waking.done():
            self._waking.set_result(None)

    def _take(self, s: _Stream) -> None:
        """Takes query k of stream s, due now: opens the stream first (the query is taken again once the opening
        is answered), records it unsent if the opening was rejected, or sends it."""
        if not s.binding:
            s.opening = asyncio.create_task(self._opening(s))
            return
        due_ms = s.due_s * 1000.0
        if "rejected" in s.binding:  # rejected at binding: queries recorded, not sent (as simulated)
            self.records.add(**self._row(s.row, s.k), t_send_ms=due_ms, outcome="rejected",
                             reason=str(s.binding["rejected"]))
        else:
            self.lag_ms.append(self.now_ms() - max(due_ms, s.ready_ms))
            frame = self.sizer.frame(s.frame_bytes)
            bad = self.corrupt_every > 0 and (self.frames_sent + 1) % self.corrupt_every == 0
            task = asyncio.create_task(self._query(s.row, s.k, corrupt(frame) if bad else frame, s.binding))
            for tasks in (self.in_flight, s.tasks):
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            self.frames_sent += 1
        self._advance(s)

    def _advance(self, s: _Stream) -> None:
        """Moves stream s on to its next query (due in the heap), or closes it after its last."""
        s.k += 1
        if s.k < s.queries:
            heapq.heappush(self.due, s.due_key)
        else:
            self._finish(s)

    async def _opening(self, s: _Stream) -> None:
        """Opens stream s for its query k (a round trip over the radio): the query is then due again; if the
        scheduler does not answer, the query is recorded as rejected and the stream's next one opens again."""
        t_open = self.now_ms()
        try:
            s.binding.update(await self._open(s.row))
            t_bound = self.now_ms()
            s.ready_ms = s.due_s * 1000.0 + (t_bound - t_open)  # a late wake-up stays late
            self.opens.append((int(self.trace.stream_id[s.row]), s.k, t_open, t_bound))
            heapq.heappush(self.due, s.due_key)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            self._down(exc, self._row(s.row, s.k), self.now_ms())
            self._advance(s)
        except Exception as exc:  # as it ended the stream's own loop, it ends the source
            self.error = exc
        finally:
            s.opening = None
            self._wake()

    def _finish(self, s: _Stream) -> None:
        """Closes stream s (once) when its opening and its queries in flight are answered."""
        if s.closing is None:
            s.closing = asyncio.create_task(self._closing(s))
            self.closings.append(s.closing)

    async def _closing(self, s: _Stream) -> None:
        """Closes stream s once its opening is answered: a bound stream at its end in the trace, when the simulator
        releases its capacity, whether or not its last answers are in (its scheduler still relays the frames of a
        stream it closed); one rejected, or whose opening got no answer, at once (it holds nothing). Closed after
        its last answer instead, a stream held its variant tens of ms longer than in the simulator, and streams
        opening meanwhile were bound elsewhere (docs/fidelity.md, "Who knows the load")."""
        if s.opening is not None:
            await asyncio.wait([s.opening])
        if s.binding and "rejected" not in s.binding:
            end_s = min(float(self.trace.end_s[s.row]), self.duration_s)
            with contextlib.suppress(asyncio.TimeoutError):  # a source told to stop closes at once
                await asyncio.wait_for(self.stopping.wait(), max(0.0, self.clock.real_until_s(self.t0_s + end_s)))
        self.closed_rows.add(s.row)
        await self._close(s.row)

    async def _close(self, i: int) -> None:
        try:
            url = f"{self.url}/streams/{int(self.trace.stream_id[i])}"
            async with self.scheduler.session.delete(url):  # type: ignore[union-attr]
                pass
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass  # a scheduler that is down forgets the stream by itself

    async def _query(self, i: int, k: int, frame: bytes, binding: dict, retried: bool = False) -> None:
        """Sends one frame and records its outcome; clears `binding` when the scheduler does not answer."""
        tr = self.trace
        sid = int(tr.stream_id[i])
        t_send = self.now_ms()
        row = self._row(i, k)
        try:
            with self.scheduler.request():
                async with self.scheduler.session.post(  # type: ignore[union-attr]
                    f"{self.url}/streams/{sid}/frames",
                    data=frame,
                    params={"query": str(k)},
                    headers={"Content-Type": "image/jpeg", "X-Send-Ms": f"{t_send:.3f}"},
                ) as r:
                    answer = await r.json(content_type=None)
                    code = r.status
        except asyncio.TimeoutError:
            self.records.add(
                **row,
                t_send_ms=t_send,
                cluster=binding.get("cluster", ""),
                variant=binding.get("variant", ""),
                outcome="failed",
                reason="timeout",
            )
            return
        except (aiohttp.ClientError, ValueError) as exc:
            self._down(exc, row, t_send)
            binding.clear()
            self.scheduler.lost()  # its connections are gone with it
            return
        t_response = self.now_ms()
        if code == 404 and answer.get("error") == "unknown_stream" and not retried and i not in self.closed_rows:
            # the scheduler restarted and lost its bindings: open the stream again and resend this query (not
            # once the stream has closed: it would stay bound there until idle)
            self.scheduler.lost()  # and the connections to the old one are gone
            try:
                binding.clear()
                binding.update(await self._open(i))
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                self._down(exc, row, t_send)
                return
            if "rejected" in binding:
                self.records.add(**row, t_send_ms=t_send, outcome="rejected", reason=str(binding["rejected"]))
                return
            if i in self.closed_rows:  # it closed while opening again: close it again
                await self._close(i)
            await self._query(i, k, frame, binding, retried=True)
            return
        times = {
            key: answer[key]
            for key in ("t_sched_ms", "t_worker_ms", "t_infer_start_ms", "t_infer_end_ms")
            if isinstance(answer.get(key), (int, float))
        }
        common = {
            **row,
            **times,
            "t_send_ms": t_send,
            "cluster": answer.get("cluster", ""),
            "variant": answer.get("variant", ""),
            "batch_size": int(answer.get("batch_size") or 0),
        }
        if code != 200:
            self.records.add(**common, outcome="rejected", reason=f"scheduler-http-{code}")
        elif answer.get("ok"):
            late = t_response - t_send > float(tr.max_delay_ms[i])
            self.records.add(
                **common,
                t_response_ms=t_response,
                outcome="failed" if late else "ontime",
                reason="deadline" if late else "",
            )
        else:
            self.records.add(**common, outcome="rejected", reason=str(answer.get("reason", "")))


async def replay(source: Source, t0_file: Path) -> None:
    """Announces READY (imports done, frames encoded: the orchestrator then sets t0), waits for t0 and
    replays the streams; SIGTERM or SIGINT stop it (queries not sent by then are never sent), and are ignored from
    then on."""
    stop_on_signals(source.stopping)
    try:
        await source.scheduler.open()  # its connections warm before t0 (the scheduler is up before any source starts)
        announce_ready()
        t0_s = await wait_t0(t0_file, stop=source.stopping)
        if t0_s is not None:
            source.t0_s = t0_s
        await source.run()
    finally:  # stopping: a later signal must not cut its records' end and its DONE line
        ignore_stop_signals()
        await source.scheduler.close()  # where run() did not (no t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m live.source", description=__doc__)
    p.add_argument("--spec", type=Path, required=True, help="the run's spec.json; its folder is the run dir")
    p.add_argument("--antenna", required=True, help="the antenna whose streams this source replays")
    p.add_argument("--scheduler", default=None,
                   help="the antenna scheduler's base URL (default: its host in the run's network.json, "
                        f"port {SCHEDULER_PORT})")
    args = p.parse_args(argv)
    try:
        spec = read_spec(args.spec)
        run = RunDir(args.spec.resolve().parent)
        trace = read_trace(run.trace)
        url = args.scheduler if args.scheduler is not None else run.scheduler_url(args.antenna)
    except (ValueError, OSError) as exc:
        print(f"source: {exc}", file=sys.stderr)
        return 2
    if spec.duration_s is None:
        print(f"source: {args.spec}: duration_s: the run's spec gives the duration", file=sys.stderr)
        return 2
    mine = trace.antenna == args.antenna
    trace = Trace(**{k: getattr(trace, k)[mine] for k in Trace.__dataclass_fields__})
    with RecordWriter(run.source_records(args.antenna)) as writer:
        source = Source(trace, url, 0.0, spec.duration_s, Records(writer), spec.timeout_s, spec.corrupt_every,
                        DilatedClock(spec.time_scale), opens_path(run.source_records(args.antenna)),
                        spec.warm_connections)
        asyncio.run(replay(source, run.t0))
    lag = np.asarray(source.lag_ms or [0.0])
    print(
        "DONE "
        + json.dumps(
            {
                "records": source.records.sent,
                "frames_sent": source.frames_sent,
                "lag_p50_ms": round(float(np.percentile(lag, 50)), 2),
                "lag_p99_ms": round(float(np.percentile(lag, 99)), 2),
                "lag_max_ms": round(float(lag.max()), 2),
                "cpu_s": round(time.process_time(), 2),
                "scheduler_down": dict(sorted(source.scheduler_down.items())),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
