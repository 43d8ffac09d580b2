"""The profiler: measures every zoo model's batch latency (median, p99, spread over several runs)
with ONNX Runtime on this host, the per-MB cost of preparing JPEG frames, and the memory one replica
takes, and writes the profile file the scheduler and the simulator read."""

from __future__ import annotations

import io
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
    MEASURED_PROFILE,
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
from .prepost import prepare_jpeg
from .runtime import DeviceUnavailable, make_session, providers_for

DEFAULT_OUT = MEASURED_PROFILE
PROVISIONAL = PROVISIONAL_PROFILE
SHIPPED_GPU = PROFILE_DIR / "gpu-h100.yaml"
"""GPU entries measured on an NVIDIA H100 (workers/gpu_profile.py); used where this host has no GPU."""
FRAME_SIZES = ((320, 240), (640, 480), (1280, 720), (1920, 1080))
BUSY_NOTE = ": the host was busy, latencies are inflated; profile again on an idle host"


@dataclass(frozen=True)
class ProfileRequest:
    """What to measure and how hard."""

    models: tuple[str, ...] = ("mobilenet-ssd", "tiny-yolov2", "yolov3")
    batches: tuple[int, ...] = (1, 2, 4, 8)
    runs: int = 5
    threads: int = 1
    min_iterations: int = 3  # per run and batch size
    budget_s: float = 1.0  # per run and batch size, once min_iterations are done
    out: Path = DEFAULT_OUT
    models_dir: Path | None = None
    gpu_profile: Path | None = SHIPPED_GPU  # GPU entries to keep when this host has none (None: provisional)


@dataclass(frozen=True)
class BatchTiming:
    median_ms: float
    p99_ms: float
    spread_ms: float  # std of the per-run medians


def _rss_mib() -> float:
    """Returns this process's resident memory in MiB."""
    return psutil.Process().memory_info().rss / 2**20


def time_batches(run_once: Callable[[int], None], req: ProfileRequest) -> dict[int, BatchTiming]:
    """Returns per batch size the median and p99 over all samples and the spread of run medians."""
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


def input_ms_per_mb(config: ModelConfig, frames: list[bytes], repeats: int = 5) -> float:
    """Returns the least-squares slope (through 0) of per-frame preparation time against frame MB."""
    sizes_mb, times_ms = [], []
    for frame in frames:
        prepare_jpeg(frame, config)
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            prepare_jpeg(frame, config)
            runs.append((time.perf_counter() - t0) * 1000.0)
        sizes_mb.append(len(frame) / 1e6)
        times_ms.append(statistics.median(runs))
    x, y = np.asarray(sizes_mb), np.asarray(times_ms)
    return float((x @ y) / (x @ x))


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


def profile_runtime(config: ModelConfig, device: str, req: ProfileRequest, frames: list[bytes]) -> RuntimeProfile:
    """Returns the measured runtime profile of one model on one device."""
    session = make_session(config.onnx_path, device, req.threads)
    name = session.get_inputs()[0].name
    inputs = {b: np.random.default_rng(b).uniform(0, 255, (b, 3, config.input_height, config.input_width))
              .astype(np.float32) for b in req.batches}
    cpu0, wall0 = time.process_time(), time.perf_counter()
    timings = time_batches(lambda b: session.run(None, {name: inputs[b]}), req)
    cores_busy = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    busy_host = cores_busy < 0.85 * req.threads and device == "cpu"
    memory = replica_memory_mib(config, device, req.threads, max(req.batches))
    return RuntimeProfile(
        model=config.name, device=device, threads=req.threads, cpu_cores=float(req.threads) if device == "cpu"
        else 1.0, gpus=1 if device == "gpu" else 0, memory_mib=round(max(memory, 0.0), 1),
        batch_latency_ms={b: t.median_ms for b, t in timings.items()},
        batch_latency_p99_ms={b: t.p99_ms for b, t in timings.items()},
        batch_latency_spread_ms={b: t.spread_ms for b, t in timings.items()},
        input_ms_per_mb=round(input_ms_per_mb(config, frames), 3),
        source=(f"measured: onnxruntime {_ort_version()} {device}, {req.threads} intra-op thread(s), "
                f"{req.runs} runs, >= {req.min_iterations} batches per run and size, inference only "
                f"({cores_busy:.2f} cores busy while timing{BUSY_NOTE if busy_host else ''}); "
                f"input cost from {len(frames)} synthetic JPEG frames {FRAME_SIZES[0]}..{FRAME_SIZES[-1]}"))


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
    if rt.input_ms_per_mb == 0.0 and rt.model in cpu:
        return replace(rt, input_ms_per_mb=cpu[rt.model].input_ms_per_mb)
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


def run_profile(req: ProfileRequest, log: Callable[[str], None] = print) -> ProfileFile:
    """Measures every requested model (CPU, and GPU when CUDA is available), writes `req.out`."""
    host = socket.gethostname()
    configs = [load_model(m, req.models_dir) for m in req.models]
    frames = synthetic_frames()
    devices = ["cpu"]
    try:
        providers_for("gpu")
        devices.append("gpu")
    except DeviceUnavailable:
        pass
    gpu_kept: list[RuntimeProfile] = []
    if "gpu" not in devices and req.gpu_profile is not None:  # read before minutes of measuring
        gpu_kept = gpu_entries_from(req.gpu_profile, req.models, {})
    runtimes: list[RuntimeProfile] = []
    for config in configs:
        for device in devices:
            started = time.monotonic()
            rt = profile_runtime(config, device, req, frames)
            runtimes.append(rt)
            table = ", ".join(f"b{b}: {rt.batch_latency_ms[b]:.1f} ms (±{rt.batch_latency_spread_ms[b]:.1f}, "
                              f"{b / rt.batch_latency_ms[b] * 1000:.1f} q/s)" for b in req.batches)
            log(f"[profile] {config.name} {device}: {table}; input {rt.input_ms_per_mb:.1f} ms/MB "
                f"({time.monotonic() - started:.0f} s)")
            if BUSY_NOTE in rt.source:
                log(f"[profile] WARNING {config.name} {device}{BUSY_NOTE}")
    if gpu_kept:
        cpu = {rt.model: rt for rt in runtimes if rt.device == "cpu"}
        runtimes += [with_input_cost(rt, cpu) for rt in gpu_kept]
        log(f"[profile] no GPU here: GPU entries from {req.gpu_profile}")
    elif "gpu" not in devices:
        runtimes += _provisional_gpu(req.models, host, log)
    models = {c.name: ModelProfile(c.task, (c.input_height, c.input_width), c.card.accuracy, c.card.accuracy_source)
              for c in configs}
    stamp = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    profile = ProfileFile(PROFILE_VERSION, f"measured on {host} {stamp} by run_testbed.py profile ({req.runs} runs)",
                          models, tuple(runtimes))
    write_profile(profile, req.out)
    log(f"[profile] wrote {req.out}")
    return profile
