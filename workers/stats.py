"""The worker's load accounting: sliding-window rates for the load report that schedulers poll
(`GET /v2/load`) and cumulative counters and histograms for Prometheus (`GET /metrics`, base units), with the
share the real replicas (ONNX Runtime) served; and the log of the real replicas' batches."""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from topologies.timescale import TimeScale

from .engine import Outcome, Query
from .metrics import LATENCY_BUCKETS_S, Histogram, Page, batch_size_buckets

HISTORY_S = 10.0


@dataclass
class _Totals:
    arrivals: int = 0
    bytes_in: int = 0
    """Bytes of the request bodies that arrived (frames or tensors), overloads included."""
    served: int = 0
    served_real: int = 0
    """Of `served`, the queries a replica running the real network answered."""
    bad_input: int = 0
    overloads: int = 0
    batches: int = 0
    batches_real: int = 0
    """Of `batches`, those a real replica ran."""
    input_duration_s: float = 0.0
    compute_duration_s: float = 0.0
    busy_ms: float = 0.0
    """Replica time spent running batches (start to end of each batch, summed over replicas); the load report
    gives its rate over a span (`busy_ms_per_s`)."""


def virtual_monotonic(scale: TimeScale) -> Callable[[], float]:
    """Returns a monotonic clock in virtual seconds (time.monotonic itself without dilation), so that rates and
    busy time per second are per virtual second."""
    if not scale.dilated:
        return time.monotonic
    return lambda: scale.virtual_duration(time.monotonic())


class WorkerStats:
    """Counts arrivals, answers, overloads and batches; `clock` is monotonic seconds (injectable)."""

    def __init__(self, model: str, variant: str, stream_ttl_s: float = 5.0, clock=time.monotonic,
                 max_batch_size: int = 8, real_instances: int = 0) -> None:
        self.model = model
        self.real_instances = real_instances
        """Replicas running the real network (the load report and the metrics say so)."""
        self.variant = variant
        self.stream_ttl_s = stream_ttl_s
        self._clock = clock
        self.totals = _Totals()
        self.request_duration_s = Histogram(LATENCY_BUCKETS_S)
        self.queue_duration_s = Histogram(LATENCY_BUCKETS_S)
        self.batch_duration_s = Histogram(LATENCY_BUCKETS_S)
        self.batch_size = Histogram(batch_size_buckets(max_batch_size))
        self._arrivals: deque[float] = deque()
        self._arrival_bytes: deque[tuple[float, int]] = deque()  # time, bytes of one arrival event
        self._served: deque[float] = deque()
        self._overloads: deque[float] = deque()
        self._batches: deque[tuple[float, int, float]] = deque()  # time, size, processing ms
        self._streams: dict[str, float] = {}

    def now_s(self) -> float:
        """Returns this worker's monotonic clock (virtual seconds under time dilation)."""
        return self._clock()

    def _prune(self, now: float) -> None:
        for dq in (self._arrivals, self._served, self._overloads):
            while dq and dq[0] < now - HISTORY_S:
                dq.popleft()
        while self._arrival_bytes and self._arrival_bytes[0][0] < now - HISTORY_S:
            self._arrival_bytes.popleft()
        while self._batches and self._batches[0][0] < now - HISTORY_S:
            self._batches.popleft()
        if len(self._streams) > 1024 or (self._streams and min(self._streams.values()) < now - self.stream_ttl_s):
            self._streams = {s: t for s, t in self._streams.items() if t >= now - self.stream_ttl_s}

    def on_arrival(self, stream: str, count: int = 1, nbytes: int = 0) -> None:
        now = self._clock()
        self.totals.arrivals += count
        self.totals.bytes_in += nbytes
        self._arrivals.extend([now] * count)
        if nbytes:
            self._arrival_bytes.append((now, nbytes))
        if stream:
            self._streams[stream] = now
        self._prune(now)

    def on_overload(self, count: int = 1) -> None:
        self.totals.overloads += count
        self._overloads.extend([self._clock()] * count)

    def on_batch(self, batch: list[Query], outcomes: list[Outcome]) -> None:
        now = self._clock()
        first = outcomes[0]
        t = self.totals
        t.batches += 1
        t.batches_real += first.real
        self.batch_size.observe(len(batch))
        self.batch_duration_s.observe((first.t_infer_end_ms - first.t_infer_start_ms) / 1000.0)
        t.input_duration_s += first.input_ms / 1000.0
        t.compute_duration_s += first.compute_ms / 1000.0
        for q, o in zip(batch, outcomes, strict=True):
            self.queue_duration_s.observe(max(0.0, o.t_infer_start_ms - q.t_arrival_ms) / 1000.0)
            if o.error is None:
                t.served += 1
                t.served_real += o.real
                self._served.append(now)
            else:
                t.bad_input += 1
        t.busy_ms += first.t_infer_end_ms - first.t_infer_start_ms
        self._batches.append((now, len(batch), first.t_infer_end_ms - first.t_infer_start_ms))

    def on_answer(self, request_ms: float) -> None:
        self.request_duration_s.observe(max(0.0, request_ms) / 1000.0)

    def load_report(self, queue_len: int, queue_limit: int, window_s: float = 1.0) -> dict:
        """Returns the load report: rates over the last `window_s` and 10 s, queue, streams, timings.

        What a scheduler reads as the load (scheduler.profiles.Variant.load_qps): the arrival rate and the
        byte rate of the arrivals, which give the sum of the queries' eta per second; and the busy time
        (replica-ms per second of the batches run in the span, measured: the real worker's own, the
        profile-driven worker's sleeps), which over 1000 x replicas is the busy fraction."""
        now = self._clock()
        self._prune(now)

        def rate(dq: deque[float], span: float) -> float:
            return sum(1 for ts in dq if ts >= now - span) / span

        def byte_rate(span: float) -> float:
            return sum(n for ts, n in self._arrival_bytes if ts >= now - span) / span

        def busy_ms_per_s(span: float) -> float:
            # a batch ran from end - ms to end (end: when it was counted, in s); its overlap with the span
            lo = now - span
            return sum(max(0.0, min(end, now) - max(end - ms / 1000.0, lo)) for end, _n, ms in self._batches) \
                * 1000.0 / span

        recent = [b for b in self._batches if b[0] >= now - HISTORY_S]
        frames = sum(b[1] for b in recent)
        batch_ms = sum(b[2] for b in recent)
        return {
            "model": self.model,
            "variant": self.variant,
            "window_s": window_s,
            "queries_in_per_s": rate(self._arrivals, window_s),
            "queries_served_per_s": rate(self._served, window_s),
            "overloads_per_s": rate(self._overloads, window_s),
            "bytes_in_per_s": byte_rate(window_s),
            "busy_ms_per_s": busy_ms_per_s(window_s),
            "queries_in_per_s_10s": rate(self._arrivals, HISTORY_S),
            "queries_served_per_s_10s": rate(self._served, HISTORY_S),
            "overloads_per_s_10s": rate(self._overloads, HISTORY_S),
            "bytes_in_per_s_10s": byte_rate(HISTORY_S),
            "busy_ms_per_s_10s": busy_ms_per_s(HISTORY_S),
            "queue_len": queue_len,
            "queue_limit": queue_limit,
            "streams_bound": sum(1 for t in self._streams.values() if t >= now - self.stream_ttl_s),
            "stream_ttl_s": self.stream_ttl_s,
            "batches_10s": len(recent),
            "mean_batch_size_10s": frames / len(recent) if recent else 0.0,
            "processing_ms_per_batch_10s": batch_ms / len(recent) if recent else 0.0,
            "processing_ms_per_query_10s": batch_ms / frames if frames else 0.0,
            "real_instances": self.real_instances,
            "totals": {"arrivals": self.totals.arrivals, "bytes_in": self.totals.bytes_in,
                       "served": self.totals.served, "served_real": self.totals.served_real,
                       "bad_input": self.totals.bad_input, "overloads": self.totals.overloads,
                       "batches": self.totals.batches, "batches_real": self.totals.batches_real},
        }

    def metrics_page(self, queue_len: int, ready: bool) -> Page:
        """Returns the worker's Prometheus families (more may be added before the page is written)."""
        page = Page({"model": self.model, "variant": self.variant})
        t = self.totals
        page.gauge("worker_ready", "1 once warmed up", int(ready))
        page.gauge("worker_queue_length", "queries waiting for a replica", queue_len)
        page.counter("worker_requests_total", "queries received", t.arrivals)
        page.counter("worker_received_bytes_total", "bytes of request bodies received (frames or tensors)",
                     t.bytes_in)
        page.counter("worker_success_total", "queries answered with detections", t.served)
        page.gauge("worker_real_instances", "replicas running the real network (ONNX Runtime); the others sleep "
                   "the profile", self.real_instances)
        page.counter("worker_real_success_total", "queries answered by a replica running the real network",
                     t.served_real)
        page.counter("worker_bad_input_total", "queries whose frame a replica rejected as undecodable", t.bad_input)
        page.counter("worker_overload_total", "queries refused because the queue was full", t.overloads)
        page.counter("worker_batches_total", "batches run", t.batches)
        page.counter("worker_input_duration_seconds_total", "batch time spent decoding and preparing inputs",
                     t.input_duration_s)
        page.counter("worker_compute_duration_seconds_total", "batch time spent in the network",
                     t.compute_duration_s)
        page.histogram("worker_request_duration_seconds", "time from a request's arrival (its whole body "
                       "received) to its answer", self.request_duration_s)
        page.histogram("worker_queue_duration_seconds", "time a query waited from arrival to its batch's start",
                       self.queue_duration_s)
        page.histogram("worker_batch_duration_seconds", "time a batch ran (inputs, network, post-processing)",
                       self.batch_duration_s)
        page.histogram("worker_batch_size", "queries per batch run", self.batch_size)
        return page

    def prometheus(self, queue_len: int, ready: bool) -> str:
        """Returns the metrics in Prometheus text exposition format."""
        return self.metrics_page(queue_len, ready).text()


class RealBatchLog:
    """Appends each batch a real replica ran to a file as one JSON line: `start_ms` and `end_ms` (the outcome's
    epoch ms, virtual under time dilation), `size` (queries), `served` (answered with detections) and
    `frames_bytes` (the bodies of its JPEG frames): the real inference a live run judges and counts."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", buffering=1)  # a line per batch reaches the file at once (a killed worker's too)

    def on_batch(self, batch: list[Query], outcomes: list[Outcome]) -> None:
        first = outcomes[0]
        if not first.real:
            return
        self._file.write(json.dumps({
            "start_ms": round(first.t_infer_start_ms, 3), "end_ms": round(first.t_infer_end_ms, 3),
            "size": len(batch), "served": sum(o.error is None for o in outcomes),
            "frames_bytes": sum(q.nbytes for q in batch if q.jpeg is not None)}) + "\n")

    def close(self) -> None:
        self._file.close()
