"""The simulation: streams bound by the scheduler brain, queries through network, queues and batches.

Virtual time advances one window at a time. In each window the stream events (arrivals, departures)
are handled in time order by `scheduler.core.Scheduler`, the window's queries are generated in bulk,
cross the network (radio + path delay, jitter, transmission, loss as a TCP retransmission; each antenna's radio
and each antenna-to-resource path keeps order per direction, and a radio and each link of a path send one message
at a time: `simulator.crossing`, `simulator.links`, `simulator.paths`) and are served by
`simulator.batching`. Everything random comes from generators spawned from one seed.
Network events (`events`) change the system model at their times (`scheduler.timeline`): a stream is decided
with the network as it is when it opens (when its radio is down, as it is when the radio is back: its request
waits for it), a query crosses the links as they are when it is sent (its answer as they are when it leaves the
worker); a message meeting a link that is down is retransmitted as TCP does (timeouts from `rto_ms`, doubling)
until the first try after the link is back, and fails (`timeout`) if it never is.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from analysis.records import FAILED, ONTIME, OUTCOMES, REJECTED, QueryBatch
from analysis.summary import Tally
from scheduler.core import POLICY_NAMES, REJECT_REASONS, Decision, LoadState, Scheduler, StreamRequest
from scheduler.system import RESPONSE_BYTES, SystemModel
from scheduler.timeline import SystemTimeline
from scheduler.window import N_CLASSES, WindowMeasurement, stream_classes
from simulator.batching import DONE, PENDING_ADMITTED, PENDING_NEW, REJECTED_FULL, serve_order, serve_window
from simulator.crossing import Crossing
from simulator.links import FifoLinks
from simulator.paths import PathQueues
from topologies.events import NetworkEvents
from workload.trace import Trace


@dataclass(frozen=True)
class SimConfig:
    """Knobs of the simulation that are not part of the topology, the profiles or the workload."""

    window_s: float = 1.0
    """Length of a step: stream events are decided, queries generated and served per window."""
    duration_s: float | None = None
    """Queries are sent until this time (None: until the last stream of the trace ends)."""
    capacity_headroom: float = 1.0
    """Factor on a stream's load in the capacity constraint (>= 1 over-reserves; the paper's eta is the
    profile's per-variant weight, not this)."""
    max_batch_delay_ms: float = 2.0
    """W: how long a forming batch waits for more queries."""
    queue_limit_per_replica: int = 16
    """Queued queries per replica (times the batch size) before a worker answers overload."""
    rto_ms: float = 200.0
    """Delay added when a packet of a query is lost: TCP's minimum retransmission timeout on Linux."""
    overhead_up_ms: float = 0.0
    """Constant software delay on the way to the worker (HTTP, relay at the scheduler); from calibration."""
    overhead_down_ms: float = 0.0
    """Constant software delay on the way back to the source; from calibration."""
    processing_scale: tuple[tuple[str, float], ...] = ()
    """(variant name, factor) pairs: that variant's batches take factor x the profile's time (batch latency and
    input time) when served, while the schedulers still decide with the profile (a testbed whose workers run
    slower than profiled)."""
    fifo_links: bool = True
    """Links keep order (simulator.links): a message leaves a link no earlier than one that entered it before, per
    antenna's radio and per antenna-to-resource path, each way, as on the testbed's wires (across windows one way
    only: simulator/links.py). False: every message's jitter is drawn on its own and messages overtake each
    other."""
    radio_queueing: bool = True
    """With `fifo_links`: a message waits while its antenna's radio sends the messages that entered it before (at
    the radio's rate, simulator.links), as on a real link and the testbed's wire. False: each message is sent at
    once."""
    path_queueing: bool = True
    """With `fifo_links`: a message waits at each link of its path while that link direction sends the messages
    that entered it before, from every path crossing it (simulator.paths; docs/fidelity.md, "A full link"). False:
    the paths' links send each message at once."""
    wire_ratio: float = 1.0
    """Bytes a message takes on a link per byte of its payload: every link (radio and path) transmits a message's
    payload x this (TCP/IP and HTTP headers; the testbed's wires at MTU 9000 count 1.013-1.014 x the frames'
    payload, docs/results/radio-sharing.md). The workers' input cost and the schedulers' figures keep the payload.
    1.0: the payload alone (what the simulator charges by default)."""

    def __post_init__(self) -> None:
        for name in ("window_s", "duration_s"):
            value = getattr(self, name)
            if value is not None and not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} {value!r}: must be a finite number of seconds > 0")
        for name in ("capacity_headroom", "max_batch_delay_ms", "rto_ms", "overhead_up_ms", "overhead_down_ms"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{name} {value!r}: must be a finite number >= 0")
        for name, factor in self.processing_scale:
            if not (np.isfinite(factor) and factor > 0):
                raise ValueError(f"processing_scale of {name!r}: {factor!r} must be a finite number > 0")
        if not (np.isfinite(self.wire_ratio) and self.wire_ratio >= 1.0):
            raise ValueError(f"wire_ratio {self.wire_ratio!r}: must be a finite number >= 1 (bytes on the wire per "
                             "byte of payload)")
        if self.queue_limit_per_replica < 1:
            raise ValueError(f"queue_limit_per_replica {self.queue_limit_per_replica!r}: must be at least 1")


RecordSink = Callable[[QueryBatch], None]
"""Gets each window's records as one batch (a mapping of columns, rows in no order; `settled_ms` says which
are final)."""
RECORD_BATCH_ROWS = 50_000
"""Records gathered over windows before the sink gets them: a sink's per-call costs are paid once per ~15 windows
of full-edge at lambda 60, not per window."""
LINK_DOWN_REASON = "timeout"
"""Why a query that met a link that stays down failed: as the live run's sources record it (no answer)."""
REASONS = (*REJECT_REASONS, "queue-full", "deadline", LINK_DOWN_REASON)
"""Every reason the simulator records (its records' reason codes index this)."""
QUEUE_FULL, DEADLINE, LINK_DOWN = (REASONS.index(r) for r in ("queue-full", "deadline", LINK_DOWN_REASON))


class Simulation(Crossing):
    """One run over a trace; `step(policy)` advances one window, `run(policy)` to the end."""

    def __init__(self, system: SystemModel, trace: Trace, config: SimConfig, seed: int,
                 record_sink: RecordSink | None = None, physics: SystemModel | None = None,
                 events: NetworkEvents | None = None) -> None:
        """`system` is what the schedulers decide with; `physics` (default: the same) gives the links'
        actual delays, jitter and loss, e.g. a testbed's measured ones, with the same resources; `events`
        change both at their times."""
        self.system, self.trace, self.config = system, trace, config
        self.physics = system if physics is None else physics
        if [r.name for r in self.physics.resources] != [r.name for r in system.resources] or \
                self.physics.antennas != system.antennas:
            raise ValueError("physics: its resources and antennas must be the decision system's, in order")
        self.timeline = SystemTimeline.build(system, events)
        self.physics_timeline = self.timeline if physics is None else SystemTimeline.build(self.physics, events)
        rng_policy, self.rng_net = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
        self.scheduler = Scheduler(self.timeline.systems[0], rng_policy, capacity_headroom=config.capacity_headroom)
        self.sink = record_sink
        self.apps = tuple(sorted(set(trace.app.tolist())))
        self.tally = Tally(config.window_s, self.apps)
        n = len(trace)
        self.end_s = config.duration_s if config.duration_s is not None else float(trace.end_s.max(initial=0.0))
        self.s_ant = np.array([system.antenna_index(a) for a in trace.antenna], dtype=np.int64)
        self.s_app = np.array([self.apps.index(a) for a in trace.app], dtype=np.int64)
        self.s_task = np.array([system.task_index(t) for t in trace.task], dtype=np.int64)
        self.s_end = np.minimum(trace.end_s, self.end_s)
        self.s_res = np.full(n, -1, dtype=np.int64)
        self.s_load = np.zeros(n)
        """eta x rho of each bound stream on its resource: what its departure releases."""
        self.s_reason = np.full(n, -1, dtype=np.int64)
        """Each rejected stream's reason, an index into REASONS."""
        self.s_class = stream_classes(trace.max_delay_ms, trace.fps)
        self.load = LoadState.empty(system.n_resources)
        self.departures: list[tuple[float, int]] = []
        self.next_stream = 0
        self.active = np.zeros(0, dtype=np.int64)
        self.t_s = 0.0
        res = system.resources
        self.replicas = np.array([r.replicas for r in res], dtype=np.int64)
        self.batch = np.array([r.variant.batch_size for r in res], dtype=np.int64)
        self.batch_ms = np.zeros((len(res), int(self.batch.max(initial=1)) + 1))
        scale = dict(config.processing_scale)
        unknown = sorted(set(scale) - {r.variant.name for r in res})
        if unknown:
            raise ValueError(f"processing_scale: no deployed variant named {', '.join(unknown)}")
        for j, r in enumerate(res):
            self.batch_ms[j, : r.variant.batch_size + 1] = np.asarray(r.variant.batch_ms) * scale.get(r.variant.name, 1.0)
        self.input_ms_per_byte = np.array([r.variant.input_ms_per_mb / 1e6 * scale.get(r.variant.name, 1.0)
                                           for r in res])
        self.queue_limit = self.replicas * self.batch * config.queue_limit_per_replica
        self.free = np.zeros((len(res), int(self.replicas.max(initial=1))))
        self.last_close = np.zeros(len(res))
        self.pool = _empty_pool()
        self.radio_up, self.path_up, self.path_down, self.radio_down = (FifoLinks() for _ in range(4))
        queued = config.fifo_links and config.path_queueing
        self.path_queues = {up: PathQueues(self.physics_timeline, up, config.wire_ratio) if queued else None
                            for up in (True, False)}
        self.windows = 0
        self.queries_done = 0
        self._parts: list[dict[str, np.ndarray]] = []

    @property
    def done(self) -> bool:
        return self.t_s >= self.end_s

    # -- streams ---------------------------------------------------------------------------------
    def _release_until(self, t_s: float) -> None:
        while self.departures and self.departures[0][0] <= t_s:
            _, s = heapq.heappop(self.departures)
            self.load.release(int(self.s_res[s]), float(self.s_load[s]))

    def _bind_streams(self, t1_s: float, policy: int, stats: WindowMeasurement) -> np.ndarray:
        tr = self.trace
        first = self.next_stream
        while self.next_stream < len(tr) and tr.start_s[self.next_stream] < t1_s:
            s = self.next_stream
            self.next_stream += 1
            self._release_until(float(tr.start_s[s]))
            d = self._decide(s, policy)
            stats.streams_new += 1
            if d.rejected:
                self.s_reason[s] = REASONS.index(d.reason)
                stats.streams_rejected += 1
            else:
                self.s_res[s] = d.resource
                self.s_load[s] = d.load_qps
                self.load.bind(d.resource, d.load_qps)
                heapq.heappush(self.departures, (float(self.s_end[s]), s))
        self._release_until(t1_s)
        return np.arange(first, self.next_stream, dtype=np.int64)

    def _decide(self, s: int, policy: int) -> Decision:
        tr = self.trace
        if self.s_task[s] < 0:
            return Decision(-1, "task", float("nan"))
        req = StreamRequest(antenna=int(self.s_ant[s]), fps=float(tr.fps[s]), frame_bytes=float(tr.frame_bytes[s]),
                            max_delay_ms=float(tr.max_delay_ms[s]), min_accuracy=float(tr.min_accuracy[s]),
                            task=int(self.s_task[s]))
        if not self.timeline.static:
            t, a = float(tr.start_s[s]), int(self.s_ant[s])
            back = self.timeline.first_from(t, lambda system: bool(np.isfinite(system.radio_ms[a])))
            self.scheduler.system = self.timeline.systems[back if back is not None else self.timeline.index_at(t)]
        return self.scheduler.decide(req, policy, self.load.load_qps)

    # -- queries ---------------------------------------------------------------------------------
    def _queries(self, t0_s: float, t1_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Returns (stream, index) of every query sent in [t0, t1)."""
        act = self.active
        start, fps = self.trace.start_s[act], self.trace.fps[act]
        lo = np.ceil((np.maximum(t0_s, start) - start) * fps - 1e-9).astype(np.int64)
        hi = np.ceil((np.minimum(t1_s, self.s_end[act]) - start) * fps - 1e-9).astype(np.int64)
        counts = np.maximum(hi - lo, 0)
        total = int(counts.sum())
        streams = np.repeat(act, counts)
        offsets = np.repeat(np.cumsum(counts) - counts, counts)
        k = np.repeat(lo, counts) + (np.arange(total, dtype=np.int64) - offsets)
        return streams, k

    def step(self, policy: int) -> WindowMeasurement:
        """Advances one window with `policy` (an index into POLICY_NAMES) binding the new streams."""
        if not 0 <= policy < len(POLICY_NAMES):
            raise ValueError(f"policy index {policy} out of range 0..{len(POLICY_NAMES) - 1}")
        t0 = self.t_s
        # From the window count, not by adding window after window: the last window ends exactly at end_s.
        t1 = min((self.windows + 1) * self.config.window_s, self.end_s)
        if self.end_s - t1 < 1e-9:
            t1 = self.end_s
        stats = WindowMeasurement.empty(self.system.n_resources, t_start_s=t0, duration_s=t1 - t0, policy=policy)
        new = self._bind_streams(t1, policy, stats)
        act = self.active
        self.active = np.concatenate([act[self.s_end[act] > t0], new])
        streams, k = self._queries(t0, t1)
        stats.sent_per_class = np.bincount(self.s_class[streams], minlength=N_CLASSES).astype(np.float64)
        last = t1 >= self.end_s - 1e-9
        self._send(streams, k, np.inf if last else t1 * 1000.0, stats)
        self._serve(t0 * 1000.0, np.inf if last else t1 * 1000.0, stats)
        stats.streams = self.load.streams.copy()
        stats.load_qps = self.load.load_qps.copy()
        self.t_s = t1
        self.windows += 1
        self._flush_records()
        return stats

    def run(self, policy: int) -> None:
        while not self.done:
            self.step(policy)

    def _send(self, streams: np.ndarray, k: np.ndarray, t1_ms: float, stats: WindowMeasurement) -> None:
        """Sends the window's queries (every later window's are sent from t1_ms on)."""
        tr = self.trace
        send_ms = (tr.start_s[streams] + k / tr.fps[streams]) * 1000.0
        res = self.s_res[streams]
        rej = res < 0
        if rej.any():
            self._emit(streams[rej], k[rej], send_ms[rej], None, None, None, None, REJECTED,
                       self.s_reason[streams[rej]])
            stats.rejected += int(rej.sum())
        ok = ~rej
        streams, k, send_ms, res = streams[ok], k[ok], send_ms[ok], res[ok]
        nbytes = tr.frame_bytes[streams].astype(np.float64)
        ant = self.s_ant[streams]
        legs = self._one_way(ant, res, nbytes, send_ms)
        sched = self._radio(ant, send_ms + legs.resend_wait_ms, legs.radio_wait_ms, legs.radio_ms, legs.radio_tx_ms,
                            True, t1_ms)
        enter = sched + legs.path_wait_ms
        cut = ~np.isfinite(enter + legs.path_ms)  # met a link that is down
        if cut.any():
            self._emit(streams[cut], k[cut], send_ms[cut], np.where(np.isfinite(sched[cut]), sched[cut], np.nan),
                       None, None, None, FAILED, LINK_DOWN, res=res[cut])
            stats.failed += int(cut.sum())
        ok = ~cut
        state = self.physics_timeline.indices_at((send_ms[ok] + legs.resend_wait_ms[ok]) / 1000.0)
        f = self._path(dict(stream=streams[ok], k=k[ok], send=send_ms[ok], sched=sched[ok], res=res[ok],
                            nbytes=nbytes[ok], ant=ant[ok], enter=enter[ok], leg=legs.path_ms[ok], state=state),
                       True, t1_ms)
        self.pool = _concat(self.pool, dict(stream=f["stream"], k=f["k"], send=f["send"], sched=f["sched"],
                                            arrive=f["out"] + self.config.overhead_up_ms, res=f["res"],
                                            nbytes=f["nbytes"], admitted=np.zeros(len(f["k"]), dtype=bool)))

    def _serve(self, t0_ms: float, horizon_ms: float, stats: WindowMeasurement) -> None:
        p = self.pool
        now = p["arrive"] < horizon_ms
        later = {key: v[~now] for key, v in p.items()}
        q = {key: v[now] for key, v in p.items()}
        order = serve_order(q["res"], q["arrive"], q["admitted"], self.system.n_resources)
        q = {key: v[order] for key, v in q.items()}
        n = len(order)
        fresh = ~q["admitted"] & (q["arrive"] >= t0_ms)  # held back by the batcher: counted already
        np.add.at(stats.bytes_in, q["res"][fresh], q["nbytes"][fresh])
        seg = np.searchsorted(q["res"], np.arange(self.system.n_resources + 1))
        start, end = np.zeros(n), np.zeros(n)
        batch = np.zeros(n, dtype=np.int64)
        status = np.zeros(n, dtype=np.int64)
        serve_window(seg, q["arrive"], q["nbytes"], q["admitted"], self.replicas, self.batch, self.batch_ms,
                     self.input_ms_per_byte, self.config.max_batch_delay_ms, self.queue_limit, self.free,
                     self.last_close, horizon_ms, start, end, batch, status)
        pend = (status == PENDING_NEW) | (status == PENDING_ADMITTED)
        carry = {key: v[pend] for key, v in q.items()}
        carry["admitted"] = status[pend] == PENDING_ADMITTED
        self.pool = _concat(later, carry)
        full = status == REJECTED_FULL
        if full.any():
            self._emit(q["stream"][full], q["k"][full], q["send"][full], q["sched"][full], q["arrive"][full],
                       None, None, REJECTED, QUEUE_FULL, res=q["res"][full])
            stats.rejected += int(full.sum())
        done = status == DONE
        s, n = q["stream"][done], int(done.sum())
        ant, res = self.s_ant[s], q["res"][done]
        legs = self._one_way(ant, res, float(RESPONSE_BYTES), end[done])
        enter = end[done] + legs.resend_wait_ms + legs.path_wait_ms
        answers = dict(stream=s, k=q["k"][done], send=q["send"][done], sched=q["sched"][done], arrive=q["arrive"][done],
                       start=start[done], end=end[done], batch=batch[done], res=res, ant=ant,
                       nbytes=np.full(n, float(RESPONSE_BYTES)), enter=enter, leg=legs.path_ms,
                       radio_ms=legs.radio_ms, radio_wait=legs.radio_wait_ms, radio_tx=legs.radio_tx_ms)
        cut = ~np.isfinite(enter + legs.path_ms)  # the answer met a path link that is down
        if cut.any():
            self._emit(s[cut], answers["k"][cut], answers["send"][cut], answers["sched"][cut], answers["arrive"][cut],
                       (start[done][cut], end[done][cut], batch[done][cut]), None, FAILED, LINK_DOWN, res=res[cut])
            stats.failed += int(cut.sum())
        answers = {key: v[~cut] for key, v in answers.items()}
        answers["state"] = self.physics_timeline.indices_at((answers["end"] + legs.resend_wait_ms[~cut]) / 1000.0)
        f = self._path(answers, False, horizon_ms)
        if len(f["stream"]):
            s, res = f["stream"], f["res"]
            response = self._radio(f["ant"], f["out"], f["radio_wait"], f["radio_ms"], f["radio_tx"], False,
                                   horizon_ms) + self.config.overhead_down_ms
            cut = ~np.isfinite(response)  # the answer met a link that is down
            late = (response - f["send"] > self.trace.max_delay_ms[s]) | cut
            outcome = np.where(late, FAILED, ONTIME)
            reason = np.where(cut, LINK_DOWN, np.where(late, DEADLINE, -1))
            response = np.where(cut, np.nan, response)
            self._emit(s, f["k"], f["send"], f["sched"], f["arrive"], (f["start"], f["end"], f["batch"]), response,
                       outcome, reason, res=res)
            stats.failed += int(late.sum())
            stats.ontime += int((~late).sum())
            stats.responses = np.bincount(res, minlength=self.system.n_resources).astype(np.float64)

    def _emit(self, streams: np.ndarray, k: np.ndarray, send: np.ndarray, sched: np.ndarray | None,
              arrive: np.ndarray | None, infer: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
              response: np.ndarray | None, outcome: int | np.ndarray, reason: int | np.ndarray,
              res: np.ndarray | None = None) -> None:
        """Counts queries and keeps their records for the window's batch; `reason` codes REASONS (-1: none)."""
        n = len(streams)
        outcome_arr = np.broadcast_to(np.asarray(outcome, dtype=np.int64), (n,))
        self.tally.add(send, self.s_app[streams], outcome_arr)
        self.queries_done += n
        if self.sink is None:
            return
        nan = np.full(n, np.nan)
        self._parts.append({
            "stream_id": self.trace.stream_id[streams], "query": k, "antenna": self.s_ant[streams],
            "app": self.s_app[streams], "resource": np.full(n, -1, dtype=np.int64) if res is None else res,
            "t_send_ms": send, "t_sched_ms": nan if sched is None else sched,
            "t_worker_ms": nan if arrive is None else arrive,
            "t_infer_start_ms": nan if infer is None else infer[0],
            "t_infer_end_ms": nan if infer is None else infer[1],
            "t_response_ms": nan if response is None else response,
            "batch_size": np.zeros(n, dtype=np.int64) if infer is None else infer[2],
            "outcome": outcome_arr, "reason": np.broadcast_to(np.asarray(reason, dtype=np.int64), (n,)),
        })

    def _flush_records(self) -> None:
        """Hands the records of the windows so far to the sink as one batch (once RECORD_BATCH_ROWS have gathered,
        and at the end), with the send time before which all are final."""
        if self.sink is None or (not self.done and sum(len(p["query"]) for p in self._parts) < RECORD_BATCH_ROWS):
            return
        parts, self._parts = self._parts, []
        cat = {key: np.concatenate([p[key] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
               for key in _RECORD_PARTS}
        # Every later record is a query still in the pool or on a path, or one sent from the next window on.
        settled_ms = min(self.t_s * 1000.0, float(self.pool["send"].min(initial=np.inf)),
                         *(q.pending_min("send") for q in self.path_queues.values() if q is not None))
        res = cat.pop("resource")
        labels = self._labels()
        values = {key: v for key, v in cat.items() if key not in labels}
        values["stream_id"] = values["stream_id"].astype(np.int64, copy=False)
        codes = {key: (cat[key], labels[key]) for key in ("antenna", "app", "outcome", "reason")}
        codes["cluster"] = (res, labels["cluster"])
        codes["variant"] = (res, labels["variant"])
        self.sink(QueryBatch(values, codes, settled_ms=settled_ms if not self.done else np.inf))

    def _labels(self) -> dict[str, np.ndarray]:
        """Returns the labels the records' string codes index: antennas, apps, the resources' clusters and
        variants, outcomes and reasons."""
        if not hasattr(self, "_label_arrays"):
            res = self.system.resources
            self._label_arrays = {key: np.array(values, dtype=object) for key, values in (
                ("antenna", self.system.antennas), ("app", self.apps), ("cluster", [r.site for r in res]),
                ("variant", [r.variant.name for r in res]), ("outcome", OUTCOMES), ("reason", REASONS))}
        return self._label_arrays


_RECORD_PARTS = ("stream_id", "query", "antenna", "app", "resource", "t_send_ms", "t_sched_ms", "t_worker_ms",
                 "t_infer_start_ms", "t_infer_end_ms", "t_response_ms", "batch_size", "outcome", "reason")


_POOL_KEYS = ("stream", "k", "send", "sched", "arrive", "res", "nbytes", "admitted")


def _empty_pool() -> dict[str, np.ndarray]:
    ints = {"stream", "k", "res"}
    return {key: np.zeros(0, dtype=np.int64 if key in ints else bool if key == "admitted" else np.float64)
            for key in _POOL_KEYS}


def _concat(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {key: np.concatenate([a[key], b[key]]) for key in _POOL_KEYS}
