"""The state of one antenna's live scheduler: stream bindings (and closed streams whose last frames may come), the
load it learns from the workers' ledgers and reports, workers up and down, streams rejected at binding,
decision windows and their measurement, statistics.

No HTTP and no sleeping: the service (live/scheduler.py) calls it, and it reads time only from its `Clock`,
so a test drives it with a `ManualClock`, and under time dilation every time and span below is virtual. The
window measurement is the simulator's `WindowMeasurement`.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from live.clock import REAL_CLOCK, Clock, Stopwatch, process_cpu_s
from live.rejected import RejectedStreams
from live.windowlog import ClosedWindow
from live.workerstate import WorkerState
from scheduler.core import POLICY_NAMES, LoadState, Scheduler, StreamRequest
from scheduler.system import SystemModel
from scheduler.timeline import SystemTimeline
from scheduler.window import WindowMeasurement, stream_class

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
    """When it last sent a frame (the clock's monotonic seconds)."""
    load_qps: float = 0.0
    """eta x rho: the load it declares on its resource (scheduler.core.Decision.load_qps)."""


class AntennaScheduler:
    """Binding, load learning and decision windows for one antenna (the aiohttp service is live.scheduler's)."""

    def __init__(
        self,
        system: SystemModel,
        antenna: str,
        workers: dict[str, tuple[str, str]],
        chooser: PolicyChooser,
        first_policy: int,
        seed: int,
        t0_s: float | None = None,
        capacity_headroom: float = 1.0,
        window_s: float = 1.0,
        log: Callable[[str], None] = print,
        arrival_scale: float | None = None,
        clock: Clock = REAL_CLOCK,
    ) -> None:
        self.system = system
        self.antenna = antenna
        self.antenna_index = system.antenna_index(antenna)
        self.clock = clock
        self.scheduler = Scheduler(system, np.random.default_rng(seed), capacity_headroom=capacity_headroom)
        names = [r.name for r in system.resources]
        self.workers: list[WorkerState | None] = [
            WorkerState(url=workers[n][0], model=workers[n][1]) if n in workers else None for n in names
        ]
        self.load = LoadState.empty(system.n_resources)
        self.streams: dict[int, LiveStream] = {}
        self.chooser = chooser
        self.policy = first_policy
        self.t0_known = t0_s is not None
        """False until the run's t0 is known (`set_t0`): decision windows are aligned on it."""
        self.t0_s = t0_s if t0_s is not None else clock.now_s()
        self.window_s = window_s
        self.log = log
        self.window = WindowMeasurement.empty(system.n_resources, policy=first_policy)
        """The counts of the window under way (this antenna's own; `measure` turns them into the simulator's)."""
        self.totals = WindowMeasurement.empty(system.n_resources)
        self.overhead_us: deque[float] = deque(maxlen=SAMPLES_KEPT)
        self.decide_us: deque[float] = deque(maxlen=SAMPLES_KEPT)
        self.window_decide_us: deque[float] = deque(maxlen=SAMPLES_KEPT)
        """Per window: building the measurement and choosing the next window's policy (state + agent), wall."""
        self.window_decide_cpu_us: deque[float] = deque(maxlen=SAMPLES_KEPT)
        """The same in CPU time of the scheduler's thread: without the waits for a core on a busy machine."""
        self.events: list[dict] = []
        self.closed: dict[int, LiveStream] = {}
        """Streams closed by their source, whose last frames may still arrive (forgotten once idle)."""
        self.rebound: list[int] = []
        """Streams bound again (their worker down) and not reserved yet (`take_rebound`)."""
        self.arrival_scale = float(arrival_scale if arrival_scale is not None else len(system.antennas))
        """This antenna's counts times this estimate every antenna's (the simulator's agent sees them all)."""
        self.poll_interval_s = 2.0
        self.rejected = RejectedStreams()
        """Streams rejected when they opened, still open: their queries count as rejected in their windows."""
        self.window_index = 0
        self.window_start_s = 0.0
        self.window_policy_us: tuple[float, float] | None = None
        """What choosing the current window's policy cost, wall and CPU us (None: chosen at start, idle state)."""
        self.policy_windows: dict[str, int] = {}
        self.timeline: SystemTimeline | None = None
        """The network's changes (`--events`): a stream is bound with the network as it is when it opens."""

    def set_t0(self, t0_s: float) -> None:
        self.t0_s, self.t0_known = t0_s, True

    def now_ms(self) -> float:
        """Returns the run's time: milliseconds since t0."""
        return (self.clock.now_s() - self.t0_s) * 1000.0

    def resource_name(self, resource: int) -> str:
        return self.system.resources[resource].name if resource >= 0 else ""

    def event(self, kind: str, **what: object) -> None:
        entry = {"t_ms": round(self.now_ms(), 1), "event": kind, **what}
        self.events.append(entry)
        self.log(json.dumps(entry))

    # -- streams -------------------------------------------------------------------------------------

    def load_estimate(self) -> np.ndarray:
        """Returns load_qps per resource, in the simulator's unit (eta x rho summed): the larger of own bindings and
        what the worker stands for (`WorkerState.learnt_qps`); infinite for a worker that does not answer."""
        est = self.load.load_qps.copy()
        for j, w in enumerate(self.workers):
            if w is None or not w.up:
                est[j] = DOWN_LOAD_QPS
            else:
                est[j] = max(est[j], w.learnt_qps())
        return est

    def bind(self, stream_id: int, request: StreamRequest) -> LiveStream:
        """Returns the stream bound by the current policy (or rejected), with its load declared."""
        watch = Stopwatch()
        if self.timeline is not None:
            self.scheduler.system = self.timeline.at(self.now_ms() / 1000.0)
        decision = self.scheduler.decide(request, self.policy, self.load_estimate())
        self.decide_us.append(watch.wall_us())
        stream = LiveStream(request, decision.resource, decision.reason, self.clock.monotonic_s(),
                            decision.load_qps)
        if not decision.rejected:
            self.load.bind(decision.resource, decision.load_qps)
            w = self.workers[decision.resource]
            assert w is not None
            w.since_report[stream_id] = decision.load_qps
        self.streams[stream_id] = stream
        return stream

    def open_stream(self, stream_id: int, request: StreamRequest) -> LiveStream:
        """Returns a new stream bound (or rejected) and counted; a re-open (after a restart or a worker's
        death) replaces the old binding."""
        self.release(stream_id)
        self.rejected.closed(stream_id, self.clock.now_s(), self.window)
        self.closed.pop(stream_id, None)
        stream = self.bind(stream_id, request)
        self.event("bind", stream=stream_id, to=self.resource_name(stream.resource) or f"rejected ({stream.reason})",
                   policy=POLICY_NAMES[self.policy])
        for c in (self.window, self.totals):
            c.streams_new += 1
            if stream.resource < 0:
                c.streams_rejected += 1
        if stream.resource < 0:
            self.rejected.opened(stream_id, request, self.clock.now_s())
        return stream

    def refused(self, stream_id: int, declared_qps: float, answer: dict | None = None) -> LiveStream:
        """Takes a worker's refusal of a stream's reservation (it did not fit: `declared_qps` is declared there
        without it) and binds the stream again with that knowledge, or rejects it; returns the new binding.
        The stream's source was told it was bound and sends on: a stream rejected now has each frame rejected
        by the relay (and counted there)."""
        old = self.streams[stream_id]
        w = self.workers[old.resource]
        assert w is not None
        self.release(stream_id)
        w.take_answer(stream_id, declared_qps, answer)
        stream = self.bind(stream_id, old.request)
        self.event("reservation-refused", stream=stream_id, at=self.resource_name(old.resource),
                   declared_qps=round(declared_qps, 3), to=self.resource_name(stream.resource)
                   or f"rejected ({stream.reason})")
        if stream.resource < 0:
            for c in (self.window, self.totals):
                c.streams_rejected += 1
        return stream

    def granted(self, stream_id: int, resource: int, declared_qps: float, answer: dict | None = None) -> None:
        """Takes a worker's grant of a stream's reservation: what is declared there now, this stream included."""
        w = self.workers[resource]
        assert w is not None
        w.take_answer(stream_id, declared_qps, answer)

    def reserving(self, stream_id: int, stream: LiveStream) -> None:
        """Notes a stream's reservation on its way to its worker (its load counts there until the answer)."""
        w = self.workers[stream.resource]
        assert w is not None
        w.pending[stream_id] = stream.load_qps

    def unanswered(self, stream_id: int, resource: int) -> None:
        """Notes a reservation that got no answer: a binding that stays counts as unreserved there."""
        w = self.workers[resource]
        if w is not None:
            w.pending.pop(stream_id, None)
            stream = self.streams.get(stream_id)
            if stream is not None and stream.resource == resource:
                w.unreserved[stream_id] = stream.load_qps

    def take_rebound(self) -> list[int]:
        """Returns (and forgets) the streams bound again since the last call without a reservation (their worker
        went down): the service reserves them."""
        out, self.rebound = self.rebound, []
        return out

    def close_stream(self, stream_id: int) -> None:
        """Releases a stream (its source closed it at its end); its frames still on their way are relayed."""
        stream = self.streams.get(stream_id)
        self.release(stream_id)
        self.rejected.closed(stream_id, self.clock.now_s(), self.window)
        if stream is not None:
            self.closed[stream_id] = stream

    def seen(self, stream: LiveStream) -> None:
        """Notes that a stream sent a frame (idle streams are released) and counts the query as sent."""
        stream.last_seen_s = self.clock.monotonic_s()
        self.count_sent(stream.request)

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
            self.load.release(stream.resource, stream.load_qps)
            self.workers[stream.resource].forget(stream_id)  # type: ignore[union-attr]

    def release_idle(self) -> None:
        now = self.clock.monotonic_s()
        for sid in [sid for sid, s in self.streams.items() if now - s.last_seen_s > STREAM_IDLE_S]:
            self.release(sid)
        for sid in [sid for sid, s in self.closed.items() if now - s.last_seen_s > STREAM_IDLE_S]:
            del self.closed[sid]

    # -- queries -------------------------------------------------------------------------------------

    def count_sent(self, request: StreamRequest) -> None:
        """Counts a query in its stream class (delay-budget bin x rate bin, as the simulator's ASET state)."""
        k = stream_class(request.max_delay_ms, request.fps)
        self.window.sent_per_class[k] += 1
        self.totals.sent_per_class[k] += 1

    def count(self, outcome: str, resource: int = -1, nbytes: int = 0) -> None:
        """Counts a query's outcome ('ontime', 'failed' or 'rejected'), and the bytes that reached a resource."""
        for c in (self.window, self.totals):
            setattr(c, outcome, getattr(c, outcome) + 1)
            if resource >= 0:
                c.bytes_in[resource] += nbytes
                if outcome != "rejected":
                    c.responses[resource] += 1

    def answered(self, stream: LiveStream, code: int, sent_ms: float, nbytes: int) -> tuple[bool, str]:
        """Returns (ok, reason) of a worker's answer with HTTP status `code` to a query sent at `sent_ms`
        (run time, by the source), and counts it: on time or failed (late), or rejected by the worker."""
        j = stream.resource
        if code == 200:
            late = self.now_ms() + self.system.radio_ms[self.antenna_index] - sent_ms > stream.request.max_delay_ms
            self.count("failed" if late else "ontime", j, nbytes)
            return True, ""
        self.count("rejected", j, nbytes)
        return False, {503: "queue-full", 400: "bad-frame"}.get(code, f"worker-http-{code}")

    # -- workers ---------------------------------------------------------------------------------------

    def mark_down(self, resource: int, why: str) -> None:
        """Marks a worker down and rebinds every stream bound to it."""
        w = self.workers[resource]
        if w is None or not w.up:
            return
        w.up = False
        self.event("worker-down", resource=self.resource_name(resource), why=why)
        for sid, s in list(self.streams.items()):
            if s.resource == resource:
                self.load.release(resource, s.load_qps)
                w.forget(sid)
                new = self.bind(sid, s.request)
                self.rebound.append(sid)
                self.event("rebind", stream=sid, to=self.resource_name(new.resource) or f"rejected ({new.reason})")

    def apply_report(self, resource: int, report: object) -> None:
        """Takes a worker's load report (GET /v2/load, `WorkerState.take_report`); raises ValueError, KeyError or
        TypeError on garbage, leaving the state as it was."""
        w = self.workers[resource]
        assert w is not None
        r = self.system.resources[resource]
        w.take_report(report, r.variant, r.replicas, self.clock.monotonic_s())
        if not w.up:
            w.up = True
            self.event("worker-up", resource=self.resource_name(resource))

    def report_failed(self, resource: int, exc: BaseException, timed_out: bool) -> None:
        """Counts a load report that did not come: slow under load is not dead (a worker is down after
        SLOW_POLLS_DOWN timeouts in a row); refused, reset or garbage twice in a row is."""
        w = self.workers[resource]
        assert w is not None
        w.failures += 1
        if timed_out and w.failures >= SLOW_POLLS_DOWN:
            self.mark_down(resource, f"load report: {type(exc).__name__} {w.failures} times in a row")
        elif not timed_out and w.failures >= 2:
            self.mark_down(resource, f"load report: {type(exc).__name__}")

    # -- decision windows ------------------------------------------------------------------------------

    def begin_windows(self) -> None:
        """Starts the window under way now (window k is [t0 + k T, t0 + (k+1) T)); k > 0 after a restart."""
        now = self.clock.now_s()
        self.window_index = max(0, math.floor((now - self.t0_s) / self.window_s))
        self.window_start_s = max(now, self.t0_s)

    def next_window_end_s(self) -> float:
        return self.t0_s + (self.window_index + 1) * self.window_s

    def measure(self, c: WindowMeasurement, duration_s: float) -> WindowMeasurement:
        """Returns the window's measurement in the simulator's terms (scheduler.aset.state, simulator.engine).

        The simulator's agent sees the whole system; a scheduler sees its own antenna, so:
        - per resource, streams served, answers and input bytes come from the workers' load reports, which
          count every antenna's queries: streams = the larger of this scheduler's bindings and the streams
          the worker saw a frame of in its last seconds; answers and bytes = the growth of the worker's
          totals between the reports read at the previous and at this window's end (for the first window:
          since t0, when the totals were zero), as a rate times the window. Without a fresh report: the last
          such rate, else this scheduler's own counts;
        - declared load = the scheduler's load estimate (`load_estimate`: own bindings, or what the worker
          stands for, its ledger of every antenna's reservations, the larger), as used to bind; a worker that
          does not answer: own bindings only;
        - query outcomes, stream arrivals and queries sent per class are this antenna's, times
          `arrival_scale` (the number of antennas: every antenna gets the same load in generated workloads).
        """
        n = self.system.n_resources
        responses, bytes_in = c.responses.copy(), c.bytes_in.copy()
        streams = self.load.streams.astype(np.float64)
        load = self.load.load_qps.copy()
        est = self.load_estimate()
        now = self.clock.monotonic_s()
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
                snap = (now - (self.clock.now_s() - self.t0_s), 0.0, 0.0)
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
            t_start_s=self.window_start_s - self.t0_s,
            policy=self.policy,
        )

    def close_window(self, end_s: float, decide: bool = True) -> ClosedWindow:
        """Returns the current window ended at `end_s` (the clock's `now_s`), measured; with `decide`, hands
        the measurement to the chooser and applies the policy of the next window."""
        watch = Stopwatch(cpu=True)
        self.rejected.window_ends(end_s, self.window)
        c = self.window
        self.window = WindowMeasurement.empty(self.system.n_resources, end_s - self.t0_s, policy=self.policy)
        m = self.measure(c, max(end_s - self.window_start_s, 1e-3))
        policy = int(self.chooser(m)) if decide else self.policy
        cost_us, cost_cpu_us = watch.wall_us(), watch.cpu_us()
        closed = ClosedWindow(self.antenna, self.window_index, (self.window_start_s - self.t0_s) * 1000.0,
                              (end_s - self.t0_s) * 1000.0, self.policy, self.window_policy_us, c, m, decide)
        name = POLICY_NAMES[self.policy]
        self.policy_windows[name] = self.policy_windows.get(name, 0) + 1
        if decide:
            self.window_decide_us.append(cost_us)
            self.window_decide_cpu_us.append(cost_cpu_us)
            if policy != self.policy:
                self.event("policy", policy=POLICY_NAMES[policy], window=self.window_index + 1)
                self.policy = policy
                self.window.policy = policy
            self.window_policy_us = (cost_us, cost_cpu_us)
            self.window_index += 1
            self.window_start_s = end_s
        return replace(closed, t_closed_ms=(self.clock.now_s() - self.t0_s) * 1000.0)

    def stop(self) -> ClosedWindow | None:
        """Returns the window under way, ended now without choosing a next one (stopping); None before t0."""
        now = self.clock.now_s()
        if self.t0_known and now > self.window_start_s > 0.0:
            return self.close_window(now, decide=False)
        return None

    def statistics(self) -> dict:
        """Returns the counters, the overhead percentiles and the events, as plain JSON."""
        def pct(xs: deque[float]) -> dict:
            if not xs:
                return {"n": 0}
            a = np.asarray(xs)
            return {"n": len(a), "p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
                    "mean": float(a.mean())}

        t = self.totals
        return {
            "antenna": self.antenna,
            "policy": POLICY_NAMES[self.policy],
            "cpu_s": round(process_cpu_s(), 2),
            "queries": {"ontime": t.ontime, "failed": t.failed, "rejected": t.rejected},
            "streams": {"new": t.streams_new, "rejected": t.streams_rejected, "open": len(self.streams)},
            "overhead_us": pct(self.overhead_us), "decide_us": pct(self.decide_us),
            "window_decide_us": pct(self.window_decide_us), "window_decide_cpu_us": pct(self.window_decide_cpu_us),
            "windows": {"n": sum(self.policy_windows.values()), "window_s": self.window_s,
                        "policies": dict(sorted(self.policy_windows.items()))},
            "workers_down": [self.resource_name(j) for j, w in enumerate(self.workers) if w is not None and not w.up],
            "ledger_watch_answers": sum(w.watch_answers for w in self.workers if w is not None),
            "busy_fraction_peak": {self.resource_name(j): round(w.busy_fraction_peak, 3)
                                   for j, w in enumerate(self.workers) if w is not None and w.busy_fraction_peak > 0},
            "events": self.events,
        }
