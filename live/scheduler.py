"""The live scheduler of one antenna: binds each new stream with `scheduler.core.Scheduler.decide`, relays
its frames to the bound worker and the answers back, and learns the workers' load from their reports.

Runs inside the antenna's scheduler host (`python -m live.scheduler ...`), listening only on that host's
emulated address. The policy of each decision window comes from a pluggable `PolicyChooser`: a static
policy, or an ASET agent that is handed, at the end of every window (aligned on the run's t0), the same
`WindowMeasurement` the simulator builds (see `LiveScheduler.measure` for how each field is estimated here).
Every window's policy and counts go to the windows log (`--windows-log`, one CSV row per window).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
from aiohttp import web

from scheduler.core import ASET, POLICY_NAMES, LoadState, Scheduler, StreamRequest, check_policy, policy_index
from scheduler.profiles import load_profiles
from scheduler.system import SystemModel, build_system
from scheduler.window import N_CLASSES, WindowMeasurement, stream_class
from topologies import load_topology

PolicyChooser = Callable[[WindowMeasurement], int]
"""Given the window just ended, returns the policy index (into POLICY_NAMES) for the next window."""
DOWN_LOAD_QPS = math.inf
"""Load given to a resource whose worker does not answer, so that `decide` never picks it."""
SLOW_POLLS_DOWN = 5
"""Load reports timed out in a row before a worker counts as down (a refused connection: 2)."""
STREAM_IDLE_S = 10.0
"""A stream that sent nothing for this long is released (its source died or forgot to close it)."""
SAMPLES_KEPT = 200_000
"""Overhead and decision times kept for the percentiles (the most recent ones)."""
REJECTED_STREAM_MAX_S = 600.0
"""A stream rejected when it opened and never closed is forgotten after this long (its source died)."""
WINDOW_COLUMNS = (
    "antenna", "window", "t_start_ms", "t_end_ms", "policy", "decide_us", "decide_cpu_us", "sent", "ontime", "failed",
    "rejected", "streams_new", "streams_rejected", "streams_all", "responses_all_per_s",
)
"""Columns of the windows log (README: file formats)."""


def static_policy(index: int) -> PolicyChooser:
    """Returns a chooser that always answers the same static policy."""
    return lambda _window: index


@dataclass
class LiveStream:
    """A stream this scheduler bound (or rejected) and what it sends."""

    request: StreamRequest
    resource: int
    reason: str
    last_seen_s: float


@dataclass
class WorkerState:
    """What the scheduler knows of one resource's worker: where it is, whether it answers, its load."""

    url: str
    model: str
    up: bool = True
    reported_qps: float = 0.0
    reported_at_s: float = 0.0
    declared_since_report_qps: float = 0.0
    failures: int = 0
    streams_bound: int = 0
    """Streams the worker saw a frame of recently (every antenna's), from its last report."""
    served_total: float | None = None
    """Answers since the worker started, from its last report (None: it does not report totals)."""
    bytes_total: float | None = None
    snapshot: tuple[float, float, float] | None = None
    """(report time, served_total, bytes_total) used at the previous window's end."""
    rates: tuple[float, float] | None = None
    """(answers/s, bytes/s) over the last span between two window ends with a fresh report."""


@dataclass
class Counters:
    """Queries and streams handled, for the window measurement and the final statistics."""

    ontime: int = 0
    failed: int = 0
    rejected: int = 0
    streams_new: int = 0
    streams_rejected: int = 0
    responses: np.ndarray = field(default_factory=lambda: np.zeros(0))
    bytes_in: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sent_per_class: np.ndarray = field(default_factory=lambda: np.zeros(0))


class LiveScheduler:
    """Binding, relaying and load learning for one antenna; the aiohttp app is built by `create_app`."""

    def __init__(
        self,
        system: SystemModel,
        antenna: str,
        workers: dict[str, tuple[str, str]],
        chooser: PolicyChooser,
        first_policy: int,
        seed: int,
        t0_s: float,
        eta: float = 1.0,
        window_s: float = 1.0,
        log: Callable[[str], None] = print,
        t0_known: bool = True,
        windows_log: Path | None = None,
        arrival_scale: float | None = None,
    ) -> None:
        self.system = system
        self.antenna = antenna
        self.antenna_index = system.antenna_index(antenna)
        self.scheduler = Scheduler(system, np.random.default_rng(seed), eta=eta)
        names = [r.name for r in system.resources]
        self.workers: list[WorkerState | None] = [
            WorkerState(url=workers[n][0], model=workers[n][1]) if n in workers else None for n in names
        ]
        self.load = LoadState.empty(system.n_resources)
        self.streams: dict[int, LiveStream] = {}
        self.chooser = chooser
        self.policy = first_policy
        self.t0_s = t0_s
        self.t0_known = t0_known
        """False until the run's t0 is read: decision windows are aligned on it."""
        self.window_s = window_s
        self.log = log
        self.window = self._fresh_counters()
        self.totals = self._fresh_counters()
        self.overhead_us: deque[float] = deque(maxlen=SAMPLES_KEPT)
        self.decide_us: deque[float] = deque(maxlen=SAMPLES_KEPT)
        self.window_decide_us: deque[float] = deque(maxlen=SAMPLES_KEPT)
        """Per window: building the measurement and choosing the next window's policy (state + agent), wall."""
        self.window_decide_cpu_us: deque[float] = deque(maxlen=SAMPLES_KEPT)
        """The same in CPU time of the scheduler's thread: without the waits for a core on a busy machine."""
        self.session: aiohttp.ClientSession | None = None
        self.events: list[dict] = []
        self.arrival_scale = float(arrival_scale if arrival_scale is not None else len(system.antennas))
        """This antenna's counts times this estimate every antenna's (the simulator's agent sees them all)."""
        self.poll_interval_s = 2.0
        self.rejected_open: dict[int, list] = {}
        """Streams rejected when they opened, still open: [request, opened (epoch s), queries counted]."""
        self.window_index = 0
        self.window_start_s = 0.0
        self.window_policy_us: tuple[float, float] | None = None
        """What choosing the current window's policy cost, wall and CPU us (None: chosen at start, idle state)."""
        self.policy_windows: dict[str, int] = {}
        self.windows_log = windows_log

    def _fresh_counters(self) -> Counters:
        n = self.system.n_resources
        return Counters(responses=np.zeros(n), bytes_in=np.zeros(n), sent_per_class=np.zeros(N_CLASSES))

    def count_sent(self, request: StreamRequest) -> None:
        """Counts a query in its stream class (delay-budget bin x rate bin, as the simulator's ASET state)."""
        k = stream_class(request.max_delay_ms, request.fps)
        self.window.sent_per_class[k] += 1
        self.totals.sent_per_class[k] += 1

    # -- streams rejected at binding: their queries are not sent, but the simulator counts them ------

    def open_rejected(self, stream_id: int, request: StreamRequest) -> None:
        """Counts a stream rejected at binding: its queries (not sent) are rejected queries of their windows."""
        self.rejected_open[stream_id] = [request, time.time(), 0]

    def _count_rejected(self, entry: list, upto_s: float, closing: bool) -> None:
        request, opened, counted = entry
        x = max(0.0, upto_s - opened) * request.fps
        # queries k = 0, 1, ... go out at opened + k/fps: before upto_s, or all of them up to the close
        n = math.floor(x + 1e-6) + 1 if closing else math.ceil(x - 1e-9)
        add = max(0, n - counted)
        if add:
            entry[2] = counted + add
            self.window.rejected += add
            self.window.sent_per_class[stream_class(request.max_delay_ms, request.fps)] += add

    def close_rejected(self, stream_id: int) -> None:
        entry = self.rejected_open.pop(stream_id, None)
        if entry is not None:
            self._count_rejected(entry, time.time(), closing=True)

    # -- load ----------------------------------------------------------------------------------------

    def load_estimate(self) -> np.ndarray:
        """Returns load_qps per resource: the larger of own bindings and the worker's report (plus own
        bindings made since that report); infinite for a worker that does not answer."""
        est = self.load.load_qps.copy()
        for j, w in enumerate(self.workers):
            if w is None or not w.up:
                est[j] = DOWN_LOAD_QPS
            else:
                est[j] = max(est[j], w.reported_qps + w.declared_since_report_qps)
        return est

    def bind(self, stream_id: int, request: StreamRequest) -> LiveStream:
        """Returns the stream bound by the current policy (or rejected), with its load declared."""
        t = time.perf_counter()
        decision = self.scheduler.decide(request, self.policy, self.load_estimate())
        self.decide_us.append((time.perf_counter() - t) * 1e6)
        stream = LiveStream(request, decision.resource, decision.reason, time.monotonic())
        if not decision.rejected:
            self.load.bind(decision.resource, request.fps)
            w = self.workers[decision.resource]
            assert w is not None
            w.declared_since_report_qps += request.fps
        self.streams[stream_id] = stream
        return stream

    def warm_up(self) -> None:
        """Runs one decision on a dummy stream (numpy's first calls are slow), leaving no trace."""
        req = StreamRequest(
            antenna=self.antenna_index, fps=1.0, frame_bytes=1000.0, max_delay_ms=1e9, min_accuracy=0.0
        )
        Scheduler(self.system, np.random.default_rng(0)).decide(req, self.policy, self.load_estimate())
        np.percentile(np.zeros(3), [50, 99])

    def release(self, stream_id: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is not None and stream.resource >= 0:
            self.load.release(stream.resource, stream.request.fps)

    def mark_down(self, resource: int, why: str) -> None:
        """Marks a worker down and rebinds every stream bound to it."""
        w = self.workers[resource]
        if w is None or not w.up:
            return
        w.up = False
        self.event("worker-down", resource=self.system.resources[resource].name, why=why)
        for sid, s in list(self.streams.items()):
            if s.resource == resource:
                self.load.release(resource, s.request.fps)
                new = self.bind(sid, s.request)
                self.event("rebind", stream=sid, to=self._name(new.resource) or f"rejected ({new.reason})")

    def event(self, kind: str, **what: object) -> None:
        entry = {"t_ms": round(self.now_ms(), 1), "event": kind, **what}
        self.events.append(entry)
        self.log(json.dumps(entry))

    def now_ms(self) -> float:
        return (time.time() - self.t0_s) * 1000.0

    def _name(self, resource: int) -> str:
        return self.system.resources[resource].name if resource >= 0 else ""

    async def poll_loads(self, interval_s: float) -> None:
        """Polls every worker's GET /v2/load; a worker that fails twice in a row is marked down."""
        assert self.session is not None
        timeout = aiohttp.ClientTimeout(total=max(0.5, 2 * interval_s))
        window = f"{min(10.0, max(0.1, interval_s)):g}"  # the report's rate over the poll period
        self.poll_interval_s = interval_s

        async def one(j: int, w: WorkerState) -> None:
            try:
                async with self.session.get(
                    f"{w.url}/v2/load", params={"window_s": window}, timeout=timeout
                ) as r:
                    report = await r.json()
                w.reported_qps = float(report["queries_in_per_s"])
                w.reported_at_s = time.monotonic()
                w.streams_bound = int(report.get("streams_bound", 0))
                totals = report.get("totals")
                if isinstance(totals, dict) and "served" in totals:
                    w.served_total = float(totals["served"])
                    w.bytes_total = float(totals["bytes_in"]) if "bytes_in" in totals else None
                w.declared_since_report_qps = 0.0
                w.failures = 0
                if not w.up:
                    w.up = True
                    self.event("worker-up", resource=self._name(j))
            except asyncio.TimeoutError as exc:  # slow under load is not dead: only a long silence is
                w.failures += 1
                if w.failures >= SLOW_POLLS_DOWN:
                    self.mark_down(j, f"load report: {type(exc).__name__} {w.failures} times in a row")
            except (
                aiohttp.ClientError,
                ConnectionError,
                ValueError,
                KeyError,
            ) as exc:  # refused, reset, garbage
                w.failures += 1
                if w.failures >= 2:
                    self.mark_down(j, f"load report: {type(exc).__name__}")

        while True:
            await asyncio.gather(*(one(j, w) for j, w in enumerate(self.workers) if w is not None))
            self._release_idle()
            await asyncio.sleep(interval_s)

    def _release_idle(self) -> None:
        now = time.monotonic()
        for sid in [sid for sid, s in self.streams.items() if now - s.last_seen_s > STREAM_IDLE_S]:
            self.release(sid)

    def measure(self, c: Counters, duration_s: float) -> WindowMeasurement:
        """Returns the window's measurement in the simulator's terms (scheduler.aset.state, simulator.engine).

        The simulator's agent sees the whole system; a scheduler sees its own antenna, so:
        - per resource, streams served, answers and input bytes come from the workers' load reports, which
          count every antenna's queries: streams = the larger of this scheduler's bindings and the streams
          the worker saw a frame of in its last seconds; answers and bytes = the growth of the worker's
          totals between the reports read at the previous and at this window's end (for the first window:
          since t0, when the totals were zero), as a rate times the window. Without a fresh report: the last
          such rate, else this scheduler's own counts;
        - declared load = the scheduler's load estimate (own bindings or the worker's reported arrival rate,
          the larger), as used to bind; a worker that does not answer: own bindings only;
        - query outcomes, stream arrivals and queries sent per class are this antenna's, times
          `arrival_scale` (the number of antennas: every antenna gets the same load in generated workloads).
        """
        n = self.system.n_resources
        responses, bytes_in = c.responses.copy(), c.bytes_in.copy()
        streams = self.load.streams.astype(np.float64)
        load = self.load.load_qps.copy()
        est = self.load_estimate()
        now = time.monotonic()
        for j, w in enumerate(self.workers):
            if w is None or not w.up:
                continue
            load[j] = est[j]
            if w.reported_at_s <= 0.0:
                continue
            if now - w.reported_at_s <= 3 * self.poll_interval_s + 1.0:
                streams[j] = max(streams[j], float(w.streams_bound))
            if w.served_total is None:
                continue
            snap = w.snapshot
            if snap is None and self.t0_known:  # first window: workers start the run with zero totals
                snap = (now - (time.time() - self.t0_s), 0.0, 0.0)
            if snap is not None and w.reported_at_s > snap[0]:
                dt = w.reported_at_s - snap[0]
                d_served = w.served_total - snap[1]
                d_bytes = (w.bytes_total - snap[2]) if w.bytes_total is not None else math.nan
                if d_served >= 0:  # a worker restarted in between starts its totals from zero
                    w.rates = (d_served / dt, d_bytes / dt if d_bytes >= 0 else math.nan)
            if snap is None or w.reported_at_s > snap[0]:
                w.snapshot = (w.reported_at_s, w.served_total,
                              w.bytes_total if w.bytes_total is not None else math.nan)
            if w.rates is not None:
                responses[j] = w.rates[0] * duration_s
                if math.isfinite(w.rates[1]):
                    bytes_in[j] = w.rates[1] * duration_s
        k = self.arrival_scale
        return WindowMeasurement(
            duration_s=duration_s,
            ontime=round(c.ontime * k),
            failed=round(c.failed * k),
            rejected=round(c.rejected * k),
            streams_new=round(c.streams_new * k),
            streams_rejected=round(c.streams_rejected * k),
            responses=responses[:n],
            bytes_in=bytes_in[:n],
            streams=streams,
            load_qps=load,
            sent_per_class=c.sent_per_class * k,
        )

    def close_window(self, end_s: float, decide: bool = True) -> WindowMeasurement:
        """Ends the current window at `end_s` (epoch s): measures it, logs its row and, with `decide`,
        hands it to the chooser and applies the policy of the next window."""
        t, t_cpu = time.perf_counter(), time.thread_time()
        for sid, entry in list(self.rejected_open.items()):
            self._count_rejected(entry, end_s, closing=False)
            if end_s - entry[1] > REJECTED_STREAM_MAX_S:
                del self.rejected_open[sid]
        c, self.window = self.window, self._fresh_counters()
        m = self.measure(c, max(end_s - self.window_start_s, 1e-3))
        policy = int(self.chooser(m)) if decide else self.policy
        cost_us = (time.perf_counter() - t) * 1e6
        cost_cpu_us = (time.thread_time() - t_cpu) * 1e6
        self._log_window(c, m, end_s)
        if decide:
            self._log_state()
        name = POLICY_NAMES[self.policy]
        self.policy_windows[name] = self.policy_windows.get(name, 0) + 1
        if decide:
            self.window_decide_us.append(cost_us)
            self.window_decide_cpu_us.append(cost_cpu_us)
            if policy != self.policy:
                self.event("policy", policy=POLICY_NAMES[policy], window=self.window_index + 1)
                self.policy = policy
            self.window_policy_us = (cost_us, cost_cpu_us)
            self.window_index += 1
            self.window_start_s = end_s
        return m

    def _log_window(self, c: Counters, m: WindowMeasurement, end_s: float) -> None:
        if self.windows_log is None:
            return
        new = not self.windows_log.exists()
        with self.windows_log.open("a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(WINDOW_COLUMNS)
            w.writerow((
                self.antenna, self.window_index, f"{(self.window_start_s - self.t0_s) * 1000:.1f}",
                f"{(end_s - self.t0_s) * 1000:.1f}", POLICY_NAMES[self.policy],
                *(("", "") if self.window_policy_us is None else (f"{x:.1f}" for x in self.window_policy_us)),
                int(c.sent_per_class.sum()), c.ontime, c.failed, c.rejected, c.streams_new, c.streams_rejected,
                int(m.streams.sum()), f"{m.responses.sum() / max(m.duration_s, 1e-9):.2f}",
            ))

    def _log_state(self) -> None:
        """With an ASET agent: appends the window's encoded features and Q-values to `<windows log>.state.jsonl`
        (to compare the live state with the simulator's, e.g. experiments/aset_live_state.py)."""
        controller = getattr(self.chooser, "__self__", None)  # AsetController.decide, bound
        features = getattr(controller, "last_features", None)
        if self.windows_log is None or features is None:
            return
        q = getattr(controller, "last_q", None)
        entry = {"antenna": self.antenna, "window": self.window_index,
                 "features": [round(float(x), 5) for x in features],
                 "q": None if q is None else [round(float(x), 5) for x in q],
                 "greedy": None if q is None else POLICY_NAMES[int(np.argmax(q))]}
        with self.windows_log.with_suffix(".state.jsonl").open("a") as f:
            f.write(json.dumps(entry) + "\n")

    async def windows(self) -> None:
        """Decision windows aligned on t0 (window k is [t0 + k T, t0 + (k+1) T)): at each one's end, hands
        its measurement to the chooser and applies the policy it answers for the next window."""
        while not self.t0_known:
            await asyncio.sleep(0.01)
        now = time.time()
        self.window_index = max(0, math.floor((now - self.t0_s) / self.window_s))  # > 0 after a restart
        self.window_start_s = max(now, self.t0_s)
        while True:
            end = self.t0_s + (self.window_index + 1) * self.window_s
            await asyncio.sleep(max(0.0, end - time.time()))
            self.close_window(end)

    def count(self, outcome: str, resource: int = -1, nbytes: int = 0) -> None:
        for c in (self.window, self.totals):
            setattr(c, outcome, getattr(c, outcome) + 1)
            if resource >= 0:
                c.bytes_in[resource] += nbytes
                if outcome != "rejected":
                    c.responses[resource] += 1

    def statistics(self) -> dict:
        """Returns the counters, the overhead percentiles and the events, as plain JSON."""

        def pct(xs: deque[float]) -> dict:
            if not xs:
                return {"n": 0}
            a = np.asarray(xs)
            return {
                "n": len(a),
                "p50": float(np.percentile(a, 50)),
                "p99": float(np.percentile(a, 99)),
                "mean": float(a.mean()),
            }

        t = self.totals
        return {
            "antenna": self.antenna,
            "policy": POLICY_NAMES[self.policy],
            "cpu_s": round(time.process_time(), 2),
            "queries": {"ontime": t.ontime, "failed": t.failed, "rejected": t.rejected},
            "streams": {"new": t.streams_new, "rejected": t.streams_rejected, "open": len(self.streams)},
            "overhead_us": pct(self.overhead_us),
            "decide_us": pct(self.decide_us),
            "window_decide_us": pct(self.window_decide_us),
            "window_decide_cpu_us": pct(self.window_decide_cpu_us),
            "windows": {"n": sum(self.policy_windows.values()), "window_s": self.window_s,
                        "policies": dict(sorted(self.policy_windows.items()))},
            "workers_down": [self._name(j) for j, w in enumerate(self.workers) if w is not None and not w.up],
            "events": self.events,
        }


LIVE = web.AppKey("live", LiveScheduler)


def create_app(live: LiveScheduler, poll_interval_s: float = 1.0) -> web.Application:
    """Returns the scheduler's application: stream open/close, frame relay, status."""
    app = web.Application(client_max_size=16 * 2**20)
    app[LIVE] = live

    async def background(app: web.Application):
        live.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        tasks = [asyncio.create_task(live.poll_loads(poll_interval_s)), asyncio.create_task(live.windows())]
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await live.session.close()

    app.cleanup_ctx.append(background)
    app.add_routes(
        [
            web.post("/streams", open_stream),
            web.delete("/streams/{sid}", close_stream),
            web.post("/streams/{sid}/frames", relay_frame),
            web.get("/status", status),
        ]
    )
    return app


_REQUEST_KEYS = ("fps", "frame_bytes", "max_delay_ms", "min_accuracy")


async def open_stream(request: web.Request) -> web.Response:
    """POST /streams {stream_id, fps, frame_bytes, max_delay_ms, min_accuracy, task}: binds the stream."""
    live = request.app[LIVE]
    try:
        body = await request.json()
        sid = int(body["stream_id"])
        values = {k: float(body[k]) for k in _REQUEST_KEYS}
    except (ValueError, KeyError, TypeError) as exc:
        return web.json_response(
            {"error": "bad_request", "detail": f"stream attributes: {exc!r}"}, status=400
        )
    task = live.system.task_index(str(body.get("task", "object-detection")))
    req = StreamRequest(antenna=live.antenna_index, task=task, **values)
    live.release(sid)  # a re-open (after a restart or a worker's death) replaces the old binding
    live.close_rejected(sid)
    stream = live.bind(sid, req)
    live.event(
        "bind",
        stream=sid,
        to=live._name(stream.resource) or f"rejected ({stream.reason})",
        policy=POLICY_NAMES[live.policy],
    )
    live.window.streams_new += 1
    live.totals.streams_new += 1
    if stream.resource < 0:
        live.window.streams_rejected += 1
        live.totals.streams_rejected += 1
        live.open_rejected(sid, req)
        return web.json_response({"stream_id": sid, "rejected": stream.reason})
    res = live.system.resources[stream.resource]
    return web.json_response(
        {
            "stream_id": sid,
            "cluster": res.site,
            "variant": res.variant.name,
            "policy": POLICY_NAMES[live.policy],
        }
    )


async def close_stream(request: web.Request) -> web.Response:
    live = request.app[LIVE]
    sid = int(request.match_info["sid"])
    live.release(sid)
    live.close_rejected(sid)
    return web.json_response({"closed": True})


async def status(request: web.Request) -> web.Response:
    return web.json_response(request.app[LIVE].statistics())


async def relay_frame(request: web.Request) -> web.Response:
    """POST /streams/{sid}/frames?query=K (JPEG; header X-Send-Ms): relays to the bound worker and answers
    the timestamps and outcome: {ok, cluster, variant, t_sched_ms, t_worker_ms, ..., reason}."""
    t_in = time.perf_counter()
    live = request.app[LIVE]
    t_sched = live.now_ms()
    try:
        sid = int(request.match_info["sid"])
    except ValueError:
        return web.json_response({"error": "bad_request", "detail": "stream ids are integers"}, status=400)
    stream = live.streams.get(sid)
    if stream is None:
        return web.json_response({"error": "unknown_stream", "stream_id": sid}, status=404)
    stream.last_seen_s = time.monotonic()
    live.count_sent(stream.request)
    t_read = time.perf_counter()
    body = await request.read()  # the body crosses the radio link: not the scheduler's overhead
    t_in += time.perf_counter() - t_read
    answer: dict = {"t_sched_ms": t_sched, "cluster": "", "variant": ""}
    if stream.resource < 0:
        answer.update(ok=False, reason=stream.reason)
        live.count("rejected")
        return _answer(live, answer, t_in, 0.0)
    j = stream.resource
    res, w = live.system.resources[j], live.workers[j]
    assert w is not None
    answer.update(cluster=res.site, variant=res.variant.name)
    url = f"{w.url}/v2/models/{w.model}/frames"
    params = {"stream": str(sid), "query": request.query.get("query", "")}
    t_out = time.perf_counter()
    try:
        async with live.session.post(
            url,
            data=body,
            params=params,  # type: ignore[union-attr]
            headers={"Content-Type": "image/jpeg"},
        ) as r:
            raw = await r.read()
            code = r.status
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:  # refused, reset, dropped: it is gone
        waited = time.perf_counter() - t_out
        live.mark_down(j, f"{type(exc).__name__} relaying a frame")
        answer.update(ok=False, reason="worker-down")
        live.count("rejected")
        return _answer(live, answer, t_in, waited)
    waited = time.perf_counter() - t_out
    try:
        reply = json.loads(raw)
    except ValueError:  # an answer that is not JSON: the worker is alive, the query is lost
        reply = {}
    if not isinstance(reply, dict):
        reply = {}
    for key in ("t_arrival_ms", "t_infer_start_ms", "t_infer_end_ms"):
        if isinstance(reply.get(key), (int, float)):
            answer["t_worker_ms" if key == "t_arrival_ms" else key] = reply[key] - live.t0_s * 1000.0
    answer["batch_size"] = int(reply.get("batch_size") or 0)
    if code == 200:
        late = (
            live.now_ms()
            + live.system.radio_ms[live.antenna_index]
            - float(request.headers.get("X-Send-Ms", t_sched))
            > stream.request.max_delay_ms
        )
        answer.update(ok=True, reason="")
        live.count("failed" if late else "ontime", j, len(body))
    else:
        reason = {503: "queue-full", 400: "bad-frame"}.get(code, f"worker-http-{code}")
        answer.update(ok=False, reason=reason)
        live.count("rejected", j, len(body))
    return _answer(live, answer, t_in, waited)


def _answer(live: LiveScheduler, answer: dict, t_in: float, waited_s: float) -> web.Response:
    live.overhead_us.append((time.perf_counter() - t_in - waited_s) * 1e6)
    return web.json_response(answer)


def choose_policy(
    system: SystemModel, policy: str | None, agent: Path | None, window_s: float
) -> tuple[PolicyChooser, int, float]:
    """Returns (chooser, first policy, window length): a static policy, or an ASET agent file's controller
    (its policy per decision window, the window it was trained with; a mismatched agent is refused)."""
    policy = check_policy(policy, agent, default="least-impedance")
    if policy != ASET:
        first = policy_index(policy)
        return static_policy(first), first, window_s
    assert agent is not None
    from scheduler.aset.policy import AsetController

    controller = AsetController.for_system(agent, system)
    return controller.decide, controller.first_action(), controller.decision_window_s


def read_workers(path: Path) -> dict[str, tuple[str, str]]:
    """Returns {resource name: (worker base URL, model name)} from the orchestrator's workers file."""
    raw = json.loads(Path(path).read_text())
    try:
        return {name: (str(w["url"]), str(w["model"])) for name, w in raw.items()}
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: each entry needs 'url' and 'model': {exc!r}") from None


async def read_t0(path: Path, timeout_s: float = 600.0) -> float:
    """Returns the run's t0 (epoch seconds) once the orchestrator has written it to `path`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return float(path.read_text())
        except (OSError, ValueError):  # not written yet, or half written
            await asyncio.sleep(0.01)
    raise TimeoutError(f"{path}: no t0 after {timeout_s:.0f} s")


async def serve(
    live: LiveScheduler,
    host: str,
    port: int,
    poll_interval_s: float,
    stats_path: Path | None,
    t0_file: Path | None = None,
) -> int:
    """Runs the scheduler until SIGTERM/SIGINT; writes its statistics; returns the exit status."""
    live.warm_up()
    runner = web.AppRunner(create_app(live, poll_interval_s), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # port 0: the OS picks
    print(f"READY http://{host}:{bound_port}", flush=True)
    try:
        if t0_file is not None:
            live.t0_s = await read_t0(t0_file)
            live.t0_known = True
        await stop.wait()
    finally:
        now = time.time()
        if live.t0_known and now > live.window_start_s > 0.0:  # the window under way when stopped
            live.close_window(now, decide=False)
        if stats_path is not None:
            stats_path.write_text(json.dumps(live.statistics(), indent=1) + "\n")
        await runner.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m live.scheduler", description=__doc__)
    p.add_argument("--topo", required=True)
    p.add_argument("--profiles", type=Path, default=None)
    p.add_argument("--antenna", required=True)
    p.add_argument(
        "--host", required=True, help="address to listen on (the scheduler host's emulated address)"
    )
    p.add_argument("--port", type=int, default=7000)
    p.add_argument("--workers", type=Path, required=True, help="JSON {resource: {url, model}}")
    p.add_argument("--policy", default=None,
                   help=f"one of {', '.join(POLICY_NAMES)}, or aset with --agent (default least-impedance; "
                   "with --agent: aset)")
    p.add_argument(
        "--agent",
        type=Path,
        default=None,
        help="an exported ASET agent (ONNX): it picks the policy of every decision window",
    )
    p.add_argument("--seed", type=int, default=0)
    t0 = p.add_mutually_exclusive_group(required=True)
    t0.add_argument("--t0", type=float, help="the run's start (epoch seconds)")
    t0.add_argument("--t0-file", type=Path, help="read the run's start from this file once it is written")
    p.add_argument("--eta", type=float, default=1.0)
    p.add_argument("--window-s", type=float, default=1.0)
    p.add_argument(
        "--load-poll-s", type=float, default=2.0, help="seconds between polls of every worker's load"
    )
    p.add_argument("--stats", type=Path, default=None, help="write the statistics (JSON) here on exit")
    p.add_argument("--windows-log", type=Path, default=None,
                   help="append one CSV row per decision window here (policy, counts, decision time)")
    args = p.parse_args(argv)
    try:
        system = build_system(load_topology(args.topo), load_profiles(args.profiles))
        chooser, first, window_s = choose_policy(system, args.policy, args.agent, args.window_s)
        live = LiveScheduler(
            system,
            args.antenna,
            read_workers(args.workers),
            chooser,
            first,
            args.seed,
            args.t0 if args.t0 is not None else time.time(),
            eta=args.eta,
            window_s=window_s,
            log=lambda line: print(line, flush=True),
            t0_known=args.t0 is not None,
            windows_log=args.windows_log,
        )
        return asyncio.run(serve(live, args.host, args.port, args.load_poll_s, args.stats, args.t0_file))
    except (KeyError, ValueError, OSError) as exc:
        print(f"scheduler: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
