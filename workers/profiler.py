"""The profiler: measures each profile model's batch latency (median, p99, spread over several runs)
with ONNX Runtime on this host, timing the zoo model that stands for it (`workers.zoo.PROFILE_MODELS`:
the published architecture) with the intra-op threads one replica is given, the cost of preparing a JPEG
frame and its answer (a fixed term per frame plus one per MB, fitted by least squares over frames of several
sizes), and the memory one replica takes; it writes a profile file with its provenance
(machine, date, command, versions, commit) in `origin`. It never writes a committed profile
(`scheduler/profiles/default.yaml`, `provisional.yaml`, `gpu-h100.yaml`): its default output is
`scheduler/profiles/measured-local.yaml`, which no command reads unless asked (`--profiles measured-local`)."""

from __future__ import annotations

import io
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

from scheduler.profiles import (
    DEFAULT_PROFILE,
    LOCAL_PROFILE,
    PROFILE_DIR,
    PROFILE_VERSION,
    PROVISIONAL_PROFILE,
    ModelProfile,
    ProfileFile,
    RuntimeProfile,
    read_profile,
    write_profile,
)

from .modelconfig import REPO_ROOT, ModelConfig, load_model
from .prepost import postprocess, prepare_jpeg
from .runtime import DeviceUnavailable, make_session, providers_for
from .zoo import PROFILE_MODELS

DEFAULT_OUT = LOCAL_PROFILE
PROVISIONAL = PROVISIONAL_PROFILE
SHIPPED_GPU = PROFILE_DIR / "gpu-h100.yaml"
"""GPU entries measured on an NVIDIA H100 (workers/gpu_profile.py); used where this host has no GPU."""
COMMITTED = (DEFAULT_PROFILE, PROVISIONAL_PROFILE, SHIPPED_GPU)
"""Profiles under version control, which the profiler refuses to overwrite."""
REPLICA_THREADS = {"mobilenet-ssd": 1, "tiny-yolov2": 2, "yolov3": 2}
"""Intra-op threads (= cores in the placement) of one CPU replica of each profile model; others get 1.
YOLOv3 gets 2, not the provisional 4: the machines this project is profiled on have 2 cores, and a
replica's figures are only measured with the threads it declares."""
FRAME_SIZES = ((160, 120), (320, 240), (320, 320), (640, 480), (1280, 720), (1920, 1080))
"""Synthetic camera frames the input cost is fitted on: small ones too, where the fixed per-frame term dominates."""
BUSY_NOTE = ": the host was busy, latencies are inflated; profile again on an idle host"


@dataclass(frozen=True)
class ProfileTarget:
    """One model of the profile and how it is timed."""

    model: str
    """The profile's name for it (variants `{model}-{device}-b{n}`)."""
    zoo_model: str
    """The zoo model timed for it (default: `workers.zoo.PROFILE_MODELS`, else the same name)."""
    threads: int
    """Intra-op threads of one replica, which its CPU entry declares as its cores."""

    @staticmethod
    def parse(spec: str, threads: int | None = None) -> ProfileTarget:
        """Returns the target of `NAME` or `NAME=ZOO_MODEL`, with `threads` (default: REPLICA_THREADS)."""
        name, _, zoo_model = spec.partition("=")
        if not name:
            raise ValueError(f"model {spec!r}: expected NAME or NAME=ZOO_MODEL")
        return ProfileTarget(name, zoo_model or PROFILE_MODELS.get(name, name),
                             REPLICA_THREADS.get(name, 1) if threads is None else threads)


DEFAULT_TARGETS = tuple(ProfileTarget.parse(m) for m in PROFILE_MODELS)


@dataclass(frozen=True)
class ProfileRequest:
    """What to measure and how hard."""

    targets: tuple[ProfileTarget, ...] = DEFAULT_TARGETS
    batches: tuple[int, ...] = (1, 2, 4, 8)
    runs: int = 5
    threads: int = 1  # of `profile_runtime`'s one runtime; `run_profile` takes each target's
    min_iterations: int = 3  # per run and batch size
    budget_s: float = 1.0  # per run and batch size, once min_iterations are done
    idle_ms: tuple[float, float] = (0.0, 0.0)
    """Idle time before each timed batch, uniform in [low, high] ms: a worker between a live run's arrivals, whose
    core idles (a batch after 20-50 ms of idle core took 7.0-8.3 ms against 5.7 ms back to back: tiny-yolov2,
    batch 1, one thread); (0, 0): back to back, a saturated worker."""
    seed: int = 0
    """Seeds the idle times."""
    out: Path = DEFAULT_OUT
    models_dir: Path | None = None
    gpu_profile: Path | None = SHIPPED_GPU  # GPU entries to keep when this host has none (None: provisional)
    command: str = "run_testbed.py profile"  # as recorded in the file's provenance


@dataclass(frozen=True)
class BatchTiming:
    median_ms: float
    p99_ms: float
    spread_ms: float  # std of the per-run medians


def _rss_mib() -> float:
    """Returns this process's resident memory in MiB."""
    return psutil.Process().memory_info().rss / 2**20


def time_batches(run_once: Callable[[int], None], req: ProfileRequest,
                 idle: IdleGaps | None = None) -> dict[int, BatchTiming]:
    """Returns per batch size the median and p99 over all samples and the spread of run medians; each timed batch
    after an idle time (`idle`, default: `req.idle_ms`)."""
    idle = idle or IdleGaps(req.idle_ms, req.seed)
    samples: dict[int, list[float]] = {b: [] for b in req.batches}
    run_medians: dict[int, list[float]] = {b: [] for b in req.batches}
    for b in req.batches:
        run_once(b)  # warm-up: allocations and kernel choice for this shape
    for _ in range(req.runs):
        for b in req.batches:  # interleaved, so that slow drifts of the host show as spread
            times: list[float] = []
            started = time.perf_counter()
            while len(times) < req.min_iterations or (time.perf_counter() - started < req.budget_s
                                                      and len(times) < 200):
                idle.wait()
                t0 = time.perf_counter()
                run_once(b)
                times.append((time.perf_counter() - t0) * 1000.0)
            samples[b] += times
            run_medians[b].append(statistics.median(times))
    sizes = sorted(req.batches)
    medians = dict(zip(sizes, np.maximum.accumulate([statistics.median(samples[b]) for b in sizes]),
                       strict=True))  # noise must not make a bigger batch look faster than a smaller one
    return {b: BatchTiming(float(medians[b]), float(np.percentile(samples[b], 99)),
                           statistics.pstdev(run_medians[b]) if len(run_medians[b]) > 1 else 0.0)
            for b in req.batches}


class IdleGaps:
    """Sleeps a random idle time before a timed call (uniform in [low, high] ms, from a seeded Generator)."""

    def __init__(self, idle_ms: tuple[float, float], seed: int = 0) -> None:
        self.low_ms, self.high_ms = idle_ms
        self.rng = np.random.default_rng(seed)
        self.slept_s = 0.0
        """Idle time so far (s of wall-clock)."""

    def wait(self) -> None:
        if self.high_ms > 0:
            t0 = time.perf_counter()
            time.sleep(self.rng.uniform(self.low_ms, self.high_ms) / 1000.0)
            self.slept_s += time.perf_counter() - t0


def synthetic_frames(seed: int = 0) -> list[bytes]:
    """Returns JPEG frames (quality 90) of common camera sizes with smooth, photo-like content."""
    rng = np.random.default_rng(seed)
    frames = []
    for width, height in FRAME_SIZES:
        coarse = rng.uniform(0, 255, (height // 16 + 1, width // 16 + 1, 3)).astype(np.uint8)
        img = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
        noisy = np.asarray(img, np.int16) + rng.integers(-12, 13, (height, width, 3))
        buf = io.BytesIO()
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
        frames.append(buf.getvalue())
    return frames


@dataclass(frozen=True)
class InputCost:
    """A frame's input cost: `ms_per_frame` + `ms_per_mb` x its MB (`RuntimeProfile.input_ms`)."""

    ms_per_frame: float
    ms_per_mb: float


def fit_input_cost(sizes_mb: list[float], times_ms: list[float]) -> InputCost:
    """Returns the least-squares line (intercept and slope, neither negative) of times against frame sizes:
    a negative term is set to 0 and the other refitted alone."""
    x, y = np.asarray(sizes_mb, float), np.asarray(times_ms, float)
    if len(x) > 1 and np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, y, 1)
        if slope >= 0 and intercept >= 0:
            return InputCost(float(intercept), float(slope))
        if slope < 0:
            return InputCost(max(float(y.mean()), 0.0), 0.0)
    return InputCost(0.0, max(float((x @ y) / (x @ x)), 0.0) if x @ x > 0 else 0.0)


def input_cost(config: ModelConfig, frames: list[bytes], network: Callable[[np.ndarray], np.ndarray],
               repeats: int = 7, idle: IdleGaps | None = None) -> InputCost:
    """Returns the fitted input cost of `frames` (`fit_input_cost` over each frame's median time): what a real
    worker does per frame besides the network, preparing the JPEG into its batch slot and post-processing the
    network's answer for it (`network`: a batch [n, 3, H, W] -> its raw output); each timing after `idle`."""
    idle = idle or IdleGaps((0.0, 0.0))
    slot = np.zeros((1, 3, config.input_height, config.input_width), np.float32)
    sizes_mb, times_ms = [], []
    for frame in frames:
        prepare_jpeg(frame, config, slot[0])
        raw = network(slot)[0]

        def per_frame(frame: bytes = frame, raw: np.ndarray = raw) -> None:
            p = prepare_jpeg(frame, config, slot[0])
            postprocess(raw, config, p.frame_per_input_px, (p.frame_height, p.frame_width))

        per_frame()
        runs = []
        for _ in range(repeats):
            idle.wait()
            t0 = time.perf_counter()
            per_frame()
            runs.append((time.perf_counter() - t0) * 1000.0)
        sizes_mb.append(len(frame) / 1e6)
        times_ms.append(statistics.median(runs))
    return fit_input_cost(sizes_mb, times_ms)


_REPLICA_MEMORY_SCRIPT = """
import sys, numpy as np
from workers.profiler import _rss_mib
from workers.runtime import make_session
path, device, threads, batch, h, w = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
x = np.random.default_rng(0).uniform(0, 255, (batch, 3, h, w)).astype(np.float32)
before = _rss_mib()
session = make_session(path, device, threads)
for _ in range(2):
    session.run(None, {session.get_inputs()[0].name: x})
print(_rss_mib() - before)
"""


def replica_memory_mib(config: ModelConfig, device: str, threads: int, batch: int) -> float:
    """Returns the memory one replica takes (RSS growth from creating its session and running two batches
    of `batch`), measured in a fresh Python process: in the profiler's own process, memory freed by
    earlier sessions is reused and the growth reads as ~0."""
    argv = [sys.executable, "-c", _REPLICA_MEMORY_SCRIPT, str(config.onnx_path), device, str(threads), str(batch),
            str(config.input_height), str(config.input_width)]
    done = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"measuring the memory of {config.name} on {device} failed: {done.stderr.strip()[-500:]}")
    return max(float(done.stdout.split()[-1]), 0.0)


def profile_runtime(config: ModelConfig, device: str, req: ProfileRequest, frames: list[bytes],
                    model: str | None = None) -> RuntimeProfile:
    """Returns the measured runtime profile of zoo model `config` on one device, named `model` (default:
    the zoo model's name) in the profile, with `req.threads` intra-op threads."""
    session = make_session(config.onnx_path, device, req.threads)
    name = session.get_inputs()[0].name
    inputs = {b: np.random.default_rng(b).uniform(0, 255, (b, 3, config.input_height, config.input_width))
              .astype(np.float32) for b in req.batches}
    idle = IdleGaps(req.idle_ms, req.seed)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    timings = time_batches(lambda b: session.run(None, {name: inputs[b]}), req, idle)
    cores_busy = (time.process_time() - cpu0) / (time.perf_counter() - wall0 - idle.slept_s)
    busy_host = cores_busy < 0.85 * req.threads and device == "cpu"
    cost = input_cost(config, frames, lambda x: session.run(None, {name: x})[0], idle=idle)
    memory = replica_memory_mib(config, device, req.threads, max(req.batches))
    timed = "" if model is None else f"zoo model {config.name} ({config.card.weights} weights), "
    return RuntimeProfile(
        model=model or config.name, device=device, threads=req.threads,
        cpu_cores=float(req.threads) if device == "cpu" else 1.0, gpus=1 if device == "gpu" else 0,
        memory_mib=round(max(memory, 0.0), 1),
        batch_latency_ms={b: t.median_ms for b, t in timings.items()},
        batch_latency_p99_ms={b: t.p99_ms for b, t in timings.items()},
        batch_latency_spread_ms={b: t.spread_ms for b, t in timings.items()},
        input_ms_per_mb=round(cost.ms_per_mb, 3), input_ms_per_frame=round(cost.ms_per_frame, 4),
        source=(f"measured: {timed}onnxruntime {_ort_version()} {device}, {req.threads} intra-op thread(s), "
                f"{req.runs} runs, >= {req.min_iterations} batches per run and size, inference only, "
                f"{_idle_text(req.idle_ms)} ({cores_busy:.2f} cores busy while timing"
                f"{BUSY_NOTE if busy_host else ''}); input cost (JPEG preparation and post-processing) fitted on "
                f"{len(frames)} JPEG frames of {min(map(len, frames)) / 1000:.1f}..{max(map(len, frames)) / 1000:.1f} kB"))


def _idle_text(idle_ms: tuple[float, float]) -> str:
    return f"each after {idle_ms[0]:g}-{idle_ms[1]:g} ms idle" if idle_ms[1] > 0 else "back to back"


def _ort_version() -> str:
    import onnxruntime
    return onnxruntime.__version__


def gpu_entries_from(path: Path, models: tuple[str, ...], cpu: dict[str, RuntimeProfile]) -> list[RuntimeProfile]:
    """Returns the GPU entries of profile file `path` for `models`, each taking its JPEG preparation cost
    (input_ms_per_mb, a CPU cost) from this host's CPU entry of the same model when it has none."""
    profile = read_profile(path)
    kept = [with_input_cost(replace(rt, source=f"{rt.source} (from {path.name})"), cpu)
            for rt in profile.runtimes if rt.device == "gpu" and rt.model in models]
    missing = sorted(set(models) - {rt.model for rt in kept})
    if missing:
        raise ValueError(f"{path}: no GPU entry for {', '.join(missing)}")
    return kept


def with_input_cost(rt: RuntimeProfile, cpu: dict[str, RuntimeProfile]) -> RuntimeProfile:
    """Returns a GPU entry measured without JPEG preparation with that cost taken from the CPU entry."""
    if rt.input_ms_per_mb == 0.0 and rt.input_ms_per_frame == 0.0 and rt.model in cpu:
        return replace(rt, input_ms_per_mb=cpu[rt.model].input_ms_per_mb,
                       input_ms_per_frame=cpu[rt.model].input_ms_per_frame)
    return rt


def _provisional_gpu(models: tuple[str, ...], host: str, log: Callable[[str], None]) -> list[RuntimeProfile]:
    if not PROVISIONAL.is_file():
        log(f"[profile] no GPU here and no {PROVISIONAL}: the profile has no GPU entries")
        return []
    kept = []
    for rt in read_profile(PROVISIONAL).runtimes:
        if rt.device == "gpu" and rt.model in models:
            kept.append(replace(rt, source=f"provisional, kept from {PROVISIONAL.name} (no GPU on {host}): {rt.source}"))
    log(f"[profile] no GPU here: kept {len(kept)} GPU entries from {PROVISIONAL}")
    return kept


def check_out(out: Path) -> None:
    """Raises ValueError when `out` is a committed profile, which only a reviewed commit may change."""
    if Path(out).resolve() in {p.resolve() for p in COMMITTED}:
        raise ValueError(f"{out} is a committed profile; the profiler never overwrites it: write another file "
                         f"(--out, default {DEFAULT_OUT}) and replace it by a reviewed commit")


def check_threads(targets: tuple[ProfileTarget, ...]) -> None:
    """Raises ValueError when a replica's threads exceed this host's cores: its figures would not be measured."""
    cores = len(os.sched_getaffinity(0))
    over = [f"{t.model} ({t.threads})" for t in targets if t.threads > cores]
    if over:
        raise ValueError(f"this host has {cores} cores: cannot time {', '.join(over)} threads per replica; "
                         "pass --threads")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.split("\n")
        changed = [line[3:] for line in dirty if line.strip()]
        return sha + (f" (uncommitted changes in {', '.join(changed)})" if changed else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"


def provenance(req: ProfileRequest, stamp: str) -> str:
    """Returns where a profile's CPU figures come from: machine, date, command, versions, commit, method."""
    import torch  # the zoo's exporter: it made the ONNX files timed here
    cores = len(os.sched_getaffinity(0))
    memory_gib = psutil.virtual_memory().total / 2**30
    timed = ", ".join(f"{t.model} = zoo {t.zoo_model} x {t.threads} thread(s)" for t in req.targets)
    return (f"CPU entries measured {stamp} by `{req.command}` on {socket.gethostname()}: {_cpu_model()}, "
            f"{cores} cores, {memory_gib:.0f} GiB, {platform.system()} {platform.release()}; onnxruntime "
            f"{_ort_version()}, torch {torch.__version__} (ONNX export), numpy {np.__version__}, Python "
            f"{platform.python_version()}; commit {_git_commit()}; {req.runs} runs, batches "
            f"{','.join(map(str, req.batches))}; timed: {timed}")


def run_profile(req: ProfileRequest, log: Callable[[str], None] = print) -> ProfileFile:
    """Measures every requested model (CPU, and GPU when CUDA is available), writes `req.out`."""
    check_out(req.out)
    check_threads(req.targets)
    host = socket.gethostname()
    configs = {t.model: load_model(t.zoo_model, req.models_dir) for t in req.targets}
    models = tuple(t.model for t in req.targets)
    frames = synthetic_frames()
    devices = ["cpu"]
    try:
        providers_for("gpu")
        devices.append("gpu")
    except DeviceUnavailable:
        pass
    gpu_kept: list[RuntimeProfile] = []
    if "gpu" not in devices and req.gpu_profile is not None:  # read before minutes of measuring
        gpu_kept = gpu_entries_from(req.gpu_profile, models, {})
    origin = provenance(req, datetime.now(timezone.utc).replace(microsecond=0).isoformat())  # what is timed
    runtimes: list[RuntimeProfile] = []
    for target in req.targets:
        config = configs[target.model]
        for device in devices:
            started = time.monotonic()
            rt = profile_runtime(config, device, replace(req, threads=target.threads if device == "cpu" else 1),
                                 frames, model=target.model)
            runtimes.append(rt)
            table = ", ".join(f"b{b}: {rt.batch_latency_ms[b]:.1f} ms (±{rt.batch_latency_spread_ms[b]:.1f}, "
                              f"{b / rt.batch_latency_ms[b] * 1000:.1f} q/s)" for b in req.batches)
            log(f"[profile] {target.model} ({config.name}, {rt.threads} thread(s)) {device}: {table}; input "
                f"{rt.input_ms_per_frame:.2f} ms + {rt.input_ms_per_mb:.1f} ms/MB ({time.monotonic() - started:.0f} s)")
            if BUSY_NOTE in rt.source:
                log(f"[profile] WARNING {target.model} {device}{BUSY_NOTE}")
    if gpu_kept:
        cpu = {rt.model: rt for rt in runtimes if rt.device == "cpu"}
        runtimes += [with_input_cost(rt, cpu) for rt in gpu_kept]
        origin += f"; GPU entries from {Path(req.gpu_profile).name} ({read_profile(req.gpu_profile).origin})"
        log(f"[profile] no GPU here: GPU entries from {req.gpu_profile}")
    elif "gpu" not in devices:
        runtimes += _provisional_gpu(models, host, log)
        origin += f"; GPU entries provisional ({PROVISIONAL.name})"
    profile_models = {m: ModelProfile(c.task, (c.input_height, c.input_width), c.card.accuracy,
                                      c.card.accuracy_source) for m, c in configs.items()}
    profile = ProfileFile(PROFILE_VERSION, origin, profile_models, tuple(runtimes))
    write_profile(profile, req.out)
    log(f"[profile] wrote {req.out}")
    return profile
