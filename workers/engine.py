"""What one replica does with a batch: the real processor decodes the frames, runs ONNX Runtime
off the event loop (its own thread; ORT releases the GIL) and post-processes; the profile-driven
processor sleeps the profiled delay instead. Both return one Outcome per query. A real replica's thread loads
and warms its session itself, after moving into the worker's inference cgroup if it has one (a live run's
reserved core), so that only inference runs there: ONNX Runtime's intra-op threads, made by it, follow it.

Under time dilation (factor K) a replica is busy K times its batch's time in real time: the profile-driven one
sleeps until its batch's nominal end (K x the profile after its nominal start, workers/schedule.py), the real one
pads its measured time to K x; outcome times are virtual."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np

from scheduler.profiles import RuntimeProfile
from topologies import wallclock
from topologies.timescale import TimeScale

from .modelconfig import ModelConfig
from .prepost import Detection, FrameError, Prepared, postprocess, prepare_jpeg
from .runtime import INFERENCE_THREAD_PREFIX, join_cgroup, make_session, name_this_thread
from .schedule import NominalSchedule
from .timers import sleep_precise

UNDILATED = TimeScale()
T = TypeVar("T")


def now_ms(scale: TimeScale = UNDILATED) -> float:
    """Returns the epoch time in ms on the run's time scale (wall-clock without dilation; the live run's logs
    compare these across hosts, which share the scale)."""
    return scale.virtual_s(wallclock.time_s()) * 1000.0


@dataclass(eq=False)
class Query:
    """One frame waiting for, or in, a batch: either a JPEG or an already prepared tensor."""

    stream: str
    query_id: str
    jpeg: bytes | None
    tensor: np.ndarray | None  # [3, H, W] float32 or uint8, for the v2 tensor route
    t_arrival_ms: float
    queue_len_at_arrival: int
    future: asyncio.Future | None = field(default=None, repr=False)

    @property
    def nbytes(self) -> int:
        return len(self.jpeg) if self.jpeg is not None else int(self.tensor.nbytes)


@dataclass(frozen=True)
class Outcome:
    """What happened to one query in its batch; `error` set means the frame was rejected (400)."""

    detections: tuple[Detection, ...]
    error: str | None
    t_infer_start_ms: float
    t_infer_end_ms: float
    batch_size: int
    input_ms: float  # decoding and preparing this batch's frames
    compute_ms: float  # the network itself, whole batch
    real: bool = False
    """Answered by a replica running the real network (ONNX Runtime), not by one sleeping the profile."""


class Processor(Protocol):
    async def run(self, batch: list[Query]) -> list[Outcome]: ...
    def warm_up(self, max_batch: int) -> None: ...
    def close(self) -> None: ...


class OnnxProcessor:
    """One replica of the real worker: an ONNX Runtime session and the thread that runs it. The session is
    made (and warmed up) on that thread, which first moves into `cgroup` when one is given: the replica's
    inference, ONNX Runtime's intra-op threads included, runs there, the worker's event loop where it was started.
    In a mixed worker it notes each batch it takes in the worker's `NominalSchedule` (`schedule`), so that the
    profile-driven replicas' batches behind it start after it closed, as in the simulator."""

    schedule: NominalSchedule | None = None

    def __init__(self, config: ModelConfig, device: str, threads: int, scale: TimeScale = UNDILATED,
                 cgroup: Path | None = None) -> None:
        self.config = config
        self.scale = scale
        self._thread = ReplicaThread(f"{INFERENCE_THREAD_PREFIX}{config.name}")
        try:
            self.session = self._thread.call(functools.partial(self._open, device, threads, cgroup))
        except BaseException:
            self._thread.close()
            raise
        self.input_name = self.session.get_inputs()[0].name
        self._inputs: np.ndarray | None = None  # the batch buffer, see _batch_input

    def _open(self, device: str, threads: int, cgroup: Path | None):
        """Returns the replica's session, made on the replica's thread (in `cgroup` first, if given)."""
        if cgroup is not None:
            join_cgroup(cgroup)
        return make_session(self.config.onnx_path, device, threads)

    def warm_up(self, max_batch: int) -> None:
        """Runs a batch of 1 and of `max_batch` on the replica's thread (blocks until done)."""
        self._thread.call(functools.partial(self._warm_up, max_batch))

    def _warm_up(self, max_batch: int) -> None:
        self._batch_input(max_batch)
        for n in sorted({1, max_batch}):
            self.session.run(None, {self.input_name: self._batch_input(n)})

    def _batch_input(self, n: int) -> np.ndarray:
        """Returns the replica's input buffer [n, 3, H, W] float32, reused across batches (no fresh pages
        per batch); grown when a batch is larger than any before."""
        if self._inputs is None or len(self._inputs) < n:
            self._inputs = np.zeros((n, 3, self.config.input_height, self.config.input_width), np.float32)
        return self._inputs[:n]

    async def run(self, batch: list[Query]) -> list[Outcome]:
        if self.schedule is not None:
            self.schedule.closed_at(now_ms(self.scale))
        if not self.scale.dilated:
            return await self._thread.submit(self.process, batch)
        r0 = time.monotonic()
        outcomes = await self._thread.submit(self.process, batch)
        return await pad_dilated(outcomes, time.monotonic() - r0, self.scale)

    def process(self, batch: list[Query]) -> list[Outcome]:
        """Returns one outcome per query: prepare every frame into the batch buffer, one network run,
        post-process."""
        t_start = now_ms()
        slots = self._batch_input(len(batch))
        prepared: list[Prepared | str] = []
        n_good = 0  # good frames fill the first slots, in order
        for q in batch:
            if q.tensor is not None:
                prepared.append(Prepared(self._float_input(q.tensor, slots[n_good]), self.config.input_height,
                                         self.config.input_width, 1.0))
            else:
                try:
                    prepared.append(prepare_jpeg(q.jpeg, self.config, slots[n_good]))
                except FrameError as exc:
                    prepared.append(str(exc))
                    continue
            n_good += 1
        t_input = now_ms()
        raw = self.session.run(None, {self.input_name: slots[:n_good]})[0] if n_good else np.empty((0,))
        t_compute = now_ms()
        results: list[tuple[Detection, ...] | str] = []
        k = 0
        for p in prepared:
            if isinstance(p, str):
                results.append(p)
                continue
            results.append(tuple(postprocess(raw[k], self.config, p.frame_per_input_px,
                                             (p.frame_height, p.frame_width))))
            k += 1
        t_end = now_ms()
        return [Outcome(r if isinstance(r, tuple) else (), r if isinstance(r, str) else None, t_start, t_end,
                        len(batch), t_input - t_start, t_compute - t_input, real=True) for r in results]

    def _float_input(self, tensor: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Writes a v2 tensor into `out` as the network's float input (UINT8 pixels scaled as `pre`
        says) in one pass; returns `out`."""
        np.copyto(out, tensor, casting="unsafe")
        if tensor.dtype == np.uint8 and self.config.pre == "rgb01":
            out *= np.float32(1 / 255.0)
        return out

    def close(self) -> None:
        self._thread.close()


class ReplicaThread:
    """The one thread a replica's batches run on, named `name` in the kernel too (what the fidelity monitor
    finds it by). A batch goes in through a SimpleQueue and its result comes back to the event loop with one
    `call_soon_threadsafe`: lighter than a ThreadPoolExecutor and `run_in_executor` (no condition variable, no
    chained futures), which the low-load latency pays for on every query."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable, arg) -> asyncio.Future:
        """Returns a future of the running loop that gets `fn(arg)`, run on this thread, or its exception."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._jobs.put((loop, future, fn, arg))
        return future

    def call(self, fn: Callable[[], T]) -> T:
        """Returns `fn()` run on this thread, waiting for it (from another thread: loading, warm-up); raises what
        it raised."""
        done: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((None, done, fn, None))
        return done.result()

    def _serve(self) -> None:
        name_this_thread(self._thread.name)
        while (job := self._jobs.get()) is not None:
            loop, future, fn, arg = job
            if loop is None:  # a blocking `call`
                try:
                    future.set_result(fn())
                except BaseException as exc:  # handed to the caller, which raises it
                    future.set_exception(exc)
                continue
            if future.cancelled():  # its caller is gone (stopping)
                continue
            try:
                result, exc = fn(arg), None
            except Exception as e:  # handed to the caller, which answers its queries
                result, exc = None, e
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, future, result, exc)

    def close(self) -> None:
        """Cancels the batches not started, lets the running one finish and joins the thread."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                loop, future = job[0], job[1]
                if loop is None:
                    future.cancel()
                elif not loop.is_closed():
                    loop.call_soon_threadsafe(future.cancel)
        self._jobs.put(None)
        self._thread.join()


def _settle(future: asyncio.Future, result, exc: BaseException | None) -> None:
    if future.cancelled():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


async def pad_dilated(outcomes: list[Outcome], real_s: float, scale: TimeScale) -> list[Outcome]:
    """Returns a real batch's outcomes on a dilated time scale: the batch took `real_s` of real time, which is
    its virtual time too (the computation itself cannot be slowed down), so the replica stays busy K x as long
    (sleeps the rest) and each outcome starts at the virtual time of its real start and lasts what it measured
    (`outcomes` carry real epoch ms, as `now_ms()` reads them undilated)."""
    await sleep_precise(scale.real_duration(real_s) - real_s)
    out = []
    for o in outcomes:
        start = scale.virtual_s(o.t_infer_start_ms / 1000.0) * 1000.0
        out.append(dataclasses.replace(o, t_infer_start_ms=start,
                                       t_infer_end_ms=start + (o.t_infer_end_ms - o.t_infer_start_ms)))
    return out


class ProfileProcessor:
    """One replica of the profile-driven worker: busy batch_latency_ms[n] plus, per frame, its input cost
    (`RuntimeProfile.input_ms`: input_ms_per_frame + input_ms_per_mb x the frame's MB) (x K under time dilation;
    on a timerfd: asyncio.sleep's whole-ms wake-ups added up to +1 ms), and answers no detections. With a
    `NominalSchedule` (the worker's, shared by its profile-driven replicas) a batch starts when the model
    starts it and the replica sleeps until its nominal end, so late wake-ups do not add up (workers/schedule.py);
    without one it sleeps the profile from when it took the batch."""

    def __init__(self, runtime: RuntimeProfile, scale: TimeScale = UNDILATED,
                 schedule: NominalSchedule | None = None) -> None:
        self.runtime = runtime
        self.scale = scale
        self.schedule = schedule
        self._free_ms = -math.inf  # nominal end of this replica's last batch (virtual epoch ms)

    def warm_up(self, max_batch: int) -> None:
        return None

    async def run(self, batch: list[Query]) -> list[Outcome]:
        t_start = now_ms(self.scale)
        if self.schedule is not None:
            t_start = self.schedule.batch_start_ms(self._free_ms, [q.t_arrival_ms for q in batch], t_start)
        errors = [_jpeg_markers_error(q.jpeg) if q.jpeg is not None else None for q in batch]
        input_ms = sum(self.runtime.input_ms(q.nbytes) for q, e in zip(batch, errors, strict=True)
                       if e is None and q.jpeg is not None)
        good = sum(e is None for e in errors)
        compute_ms = self.runtime.latency_ms(good) if good else 0.0
        busy_ms = input_ms + compute_ms
        if self.schedule is not None:  # until the nominal end, however late this replica took the batch
            self._free_ms = t_start + busy_ms
            busy_ms = self._free_ms - now_ms(self.scale)
        await sleep_precise(self.scale.real_duration(busy_ms) / 1000.0)
        t_end = now_ms(self.scale)
        return [Outcome((), e, t_start, t_end, len(batch), input_ms, compute_ms) for e in errors]

    def close(self) -> None:
        return None


def _jpeg_markers_error(data: bytes) -> str | None:
    """Returns why a body is not a whole JPEG (SOI and EOI markers), without decoding it."""
    if not data.startswith(b"\xff\xd8"):
        return "body is not a JPEG (no SOI marker)"
    if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        return "corrupt or truncated JPEG: no EOI marker"
    return None
