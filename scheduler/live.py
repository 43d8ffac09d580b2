"""The live scheduler of one antenna: binds each new stream with `scheduler.core.Scheduler.decide`, relays
its frames to the bound worker and the answers back, and learns the workers' load from their reports.

Runs inside the antenna's scheduler host (`python -m scheduler.live ...`), listening only on that host's
emulated address. The policy of each decision window comes from a pluggable `PolicyChooser`.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
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

from scheduler.aset.state import WindowMeasurement
from scheduler.core import POLICY_NAMES, LoadState, Scheduler, StreamRequest, policy_index
from scheduler.profiles import load_profiles
from scheduler.system import SystemModel, build_system
from simulator.engine import SimConfig
from topologies import load_topology

PolicyChooser = Callable[[WindowMeasurement], int]
"""Given the window just ended, returns the policy index (into POLICY_NAMES) for the next window."""
DOWN_LOAD_QPS = math.inf
"""Load given to a resource whose worker does not answer, so that `decide` never picks it."""
SLOW_POLLS_DOWN = 5
"""Load reports timed out in a row before a worker counts as down (a refused connection: 2)."""
STREAM_IDLE_S = 10.0
"""A stream that sent nothing for this long is released (its source died or forgot to close it)."""
BUDGET_BINS_MS = tuple(SimConfig.budget_bins_ms)
RATE_BINS_FPS = tuple(SimConfig.rate_bins_fps)
"""Stream classes of the ASET state, as the simulator draws them."""
SAMPLES_KEPT = 200_000
"""Overhead and decision times kept for the percentiles (the most recent ones)."""


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
        self.window_s = window_s
        self.log = log
        self.window = self._fresh_counters()
        self.totals = self._fresh_counters()
        self.overhead_us: deque[float] = deque(maxlen=SAMPLES_KEPT)
        self.decide_us: deque[float] = deque(maxlen=SAMPLES_KEPT)
        self.session: aiohttp.ClientSession | None = None
        self.events: list[dict] = []

    def _fresh_counters(self) -> Counters:
        n = self.system.n_resources
        classes = (len(BUDGET_BINS_MS) + 1) * (len(RATE_BINS_FPS) + 1)
        return Counters(responses=np.zeros(n), bytes_in=np.zeros(n), sent_per_class=np.zeros(classes))

    def count_sent(self, request: StreamRequest) -> None:
        """Counts a query in its stream class (delay-budget bin x rate bin, as the simulator's ASET state)."""
        b = bisect.bisect_right(BUDGET_BINS_MS, request.max_delay_ms)  # (numpy costs ~40 us a call here)
        r = bisect.bisect_right(RATE_BINS_FPS, request.fps)
        k = b * (len(RATE_BINS_FPS) + 1) + r
        self.window.sent_per_class[k] += 1
        self.totals.sent_per_class[k] += 1

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

        async def one(j: int, w: WorkerState) -> None:
            try:
                async with self.session.get(
                    f"{w.url}/v2/load", params={"window_s": window}, timeout=timeout
                ) as r:
                    report = await r.json()
                w.reported_qps = float(report["queries_in_per_s"])
                w.reported_at_s = time.monotonic()
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

    async def windows(self) -> None:
        """Every window: hands the window's measurement to the chooser and applies its policy."""
        while True:
            await asyncio.sleep(self.window_s)
            c, self.window = self.window, self._fresh_counters()
            m = WindowMeasurement(
                duration_s=self.window_s,
                ontime=c.ontime,
                failed=c.failed,
                rejected=c.rejected,
                streams_new=c.streams_new,
                streams_rejected=c.streams_rejected,
                responses=c.responses,
                bytes_in=c.bytes_in,
                streams=self.load.streams.copy(),
                load_qps=self.load.load_qps.copy(),
                sent_per_class=c.sent_per_class,
            )
            policy = int(self.chooser(m))
            if policy != self.policy:
                self.event("policy", policy=POLICY_NAMES[policy])
                self.policy = policy

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
    request.app[LIVE].release(int(request.match_info["sid"]))
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
    system: SystemModel, policy: str, agent: Path | None, window_s: float
) -> tuple[PolicyChooser, int, float]:
    """Returns (chooser, first policy, window length): a static policy, or an ASET agent file's controller
    (its policy per decision window, the window it was trained with; a mismatched agent is refused)."""
    if agent is None:
        first = policy_index(policy)
        return static_policy(first), first, window_s
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
        await stop.wait()
    finally:
        if stats_path is not None:
            stats_path.write_text(json.dumps(live.statistics(), indent=1) + "\n")
        await runner.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scheduler.live", description=__doc__)
    p.add_argument("--topo", required=True)
    p.add_argument("--profiles", type=Path, default=None)
    p.add_argument("--antenna", required=True)
    p.add_argument(
        "--host", required=True, help="address to listen on (the scheduler host's emulated address)"
    )
    p.add_argument("--port", type=int, default=7000)
    p.add_argument("--workers", type=Path, required=True, help="JSON {resource: {url, model}}")
    p.add_argument("--policy", default="least-impedance", help=f"one of {', '.join(POLICY_NAMES)}")
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
        )
        return asyncio.run(serve(live, args.host, args.port, args.load_poll_s, args.stats, args.t0_file))
    except (KeyError, ValueError, OSError) as exc:
        print(f"scheduler: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
