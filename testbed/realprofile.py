"""The run's own profile for a live run with real ONNX workers: their models are timed on this host's
CPU (one thread, pinned to the CPU the real workers get) before the run, and the run's profile is the
given one with those models' CPU batch latencies and JPEG cost replaced, so that the schedulers decide
with the speed the real workers will have, not with a profile measured elsewhere (the provisional
figures put the 512x512 SSD at 22 ms a frame; this CPU takes ~70). Everything else in the profile
(other models, GPU entries, cores, memory, accuracy) is kept; where a topology leaves placement to the
greedy packing, it packs by capacity and may order or choose variants differently with the new figures.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from scheduler.system import SystemModel
from workers.modelconfig import load_model
from workers.profilefile import ProfileFile, read_profile, write_profile
from workers.profiler import ProfileRequest, profile_runtime, synthetic_frames

RUNS = 3
"""Interleaved runs per model (their spread is recorded in the profile)."""
BUDGET_S = 0.2
"""Seconds per run and batch size once 3 batches are timed (the SSD at b1/b2/b4 and tiny-yolov2 took
~10 s together on the 2-core machine)."""
REAL_INFERENCE_CORES = 1.0
"""Cores the real ONNX workers get together: the last CPU (the emulation keeps the others)."""
REAL_THREADS_PER_REPLICA = 1
"""Intra-op threads of a real worker's replica (and of the timing here)."""


def real_worker_cpu() -> int:
    """Returns the CPU the real ONNX workers are pinned to (the last: the emulation keeps the others)."""
    return (os.cpu_count() or 1) - 1


def real_model_batches(system: SystemModel, real_resources: set[str]) -> dict[str, tuple[int, ...]]:
    """Returns, per model with a real worker among `real_resources`, the batch sizes to time: 1 and every
    size of that model's CPU variants in the system (their profile-driven workers sleep the same entry)."""
    models = sorted({r.variant.model for r in system.resources if r.name in real_resources})
    return {m: tuple(sorted({1} | {r.variant.batch_size for r in system.resources
                                   if r.variant.model == m and r.variant.device == "cpu"})) for m in models}


@dataclass(frozen=True)
class MeasuredModel:
    """One model's CPU batch latencies (ms) as measured here and as the given profile had them."""

    model: str
    measured_ms: dict[int, float]
    profile_ms: dict[int, float]
    input_ms_per_mb: float

    def describe(self) -> str:
        sizes = ", ".join(f"b{b} {ms:.1f} ms (profile {self.profile_latency(b):.1f})"
                          for b, ms in sorted(self.measured_ms.items()))
        return f"{self.model} cpu: {sizes}; JPEG {self.input_ms_per_mb:.1f} ms/MB"

    def profile_latency(self, batch: int) -> float:
        if batch in self.profile_ms:
            return self.profile_ms[batch]
        sizes = sorted(self.profile_ms)
        nearest = min(sizes, key=lambda s: abs(s - batch))
        return self.profile_ms[nearest] * batch / nearest


def measure_real_models(profile_path: Path, batches: dict[str, tuple[int, ...]], out_path: Path,
                        log: Callable[[str], None] = print, cpu: int | None = None) -> list[MeasuredModel]:
    """Times each model of `batches` (model -> batch sizes) on CPU `cpu` (default: the real workers'),
    writes the given profile with those models' CPU entries replaced to `out_path`, and returns what was
    measured. Raises KeyError naming the model when the profile has no CPU entry for it, RuntimeError
    naming it when it cannot be timed (its ONNX file missing or broken)."""
    nominal = read_profile(profile_path)
    entries = {m: nominal.runtime(m, "cpu") for m in batches}  # refuses a model without a CPU entry first
    cpu = real_worker_cpu() if cpu is None else cpu
    frames = synthetic_frames()
    before = os.sched_getaffinity(0)
    measured: dict[str, MeasuredModel] = {}
    runtimes = {}
    os.sched_setaffinity(0, {cpu})
    try:
        for model, sizes in batches.items():
            req = ProfileRequest(models=(model,), batches=tuple(sorted(set(sizes))), runs=RUNS,
                                 threads=REAL_THREADS_PER_REPLICA, budget_s=BUDGET_S, out=out_path)
            try:
                rt = profile_runtime(load_model(model), "cpu", req, frames)
            except Exception as exc:  # a missing or broken ONNX file: the real worker could not start either
                raise RuntimeError(f"timing {model} for its real worker failed: {exc}") from exc
            old = entries[model]
            runtimes[model] = replace(
                old, threads=REAL_THREADS_PER_REPLICA, batch_latency_ms=rt.batch_latency_ms,
                batch_latency_p99_ms=rt.batch_latency_p99_ms, batch_latency_spread_ms=rt.batch_latency_spread_ms,
                input_ms_per_mb=rt.input_ms_per_mb,
                source=f"measured on CPU {cpu} before this live run ({rt.source}); cores and memory as "
                       f"{Path(profile_path).name}")
            measured[model] = MeasuredModel(model, {b: round(ms, 3) for b, ms in rt.batch_latency_ms.items()},
                                            dict(old.batch_latency_ms), rt.input_ms_per_mb)
            log(f"[profile] {measured[model].describe()}")
    finally:
        os.sched_setaffinity(0, before)
    merged = ProfileFile(
        nominal.version,
        f"{nominal.origin}; CPU entries of {', '.join(sorted(batches))} measured on this host before the live run",
        nominal.models,
        tuple(runtimes.get(rt.model, rt) if rt.device == "cpu" else rt for rt in nominal.runtimes),
    )
    write_profile(merged, out_path)
    return list(measured.values())
