"""The run's own profile for a live run with real ONNX workers: their models are timed on this host's
CPU (one thread, pinned to the CPU the real workers get) before the run, and the run's profile is the
given one with those models' CPU batch latencies and input cost replaced, so that the schedulers decide
with the speed the real workers will have, not with a profile measured elsewhere or on another network
(the default profile times the published SSD300 for 'mobilenet-ssd'; a real worker runs the trained
512x512 face SSD, 2.5 times its compute: `workers.zoo.PROFILE_MODELS`). The replaced entries keep every
batch size they had (all are timed) and their cores and memory (threads becomes 1, as timed); everything
else in the profile (other models, GPU entries, accuracy) is kept. Where a topology leaves placement to
the greedy packing, it packs by capacity and may choose variants differently with the new figures, so
the timing repeats until every model with a real worker under the final profile is timed.

It is timed as the live run's real worker works: each batch after an idle time like the gaps between a light
run's arrivals (IDLE_MS; its core idles in between, and a batch after idle takes longer than back to back), and
the input cost (a fixed term per frame and one per MB) fitted on the frames the sources send (`JpegSizer`,
SOURCE_FRAME_KB).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from live.frames import JpegSizer
from scheduler.profiles import ProfileFile, read_profile, write_profile
from scheduler.system import Resource, SystemModel
from workers.modelconfig import load_model
from workers.profiler import ProfileRequest, profile_runtime

RUNS = 3
"""Interleaved runs per model (their spread is recorded in the profile)."""
MIN_BATCHES = 8
"""Batches timed per run and batch size at least."""
BUDGET_S = 0.3
"""Seconds per run and batch size once MIN_BATCHES are timed."""
IDLE_MS = (10.0, 60.0)
"""Idle time before each timed batch, uniform (ms): a real worker between a light run's arrivals (20-50 frames/s).
Not scaled by the run's K, although a dilated run's real worker idles longer in real time: timed after 40-240 ms
at K 4, tiny-yolov2's profile was too slow for the light run it was timed for (median overrun -0.34 and -0.42 of
it), against -0.08 and +0.07 timed after 10-60 ms (two runs each, alternated, 2026-12-05)."""
SEED = 0
"""Seeds the idle times."""
SOURCE_FRAME_KB = (5, 10, 20, 30, 40, 60, 80, 100)
"""Frame sizes (kB) the input cost is fitted on, as the sources make them (`JpegSizer`): the workload's 20-80 kB
(workload/apps.py) and smaller and larger ones, so that both terms are fitted."""
REAL_INFERENCE_CORES = 1.0
"""Cores the real ONNX workers get together: the last CPU (the emulation keeps the others)."""
REAL_THREADS_PER_REPLICA = 1
"""Intra-op threads of a real worker's replica (and of the timing here)."""


def real_worker_cpu() -> int:
    """Returns the CPU the real ONNX workers are pinned to: the last this process may run on (the
    emulation keeps the others)."""
    return max(os.sched_getaffinity(0))


def real_cores_needed(resource: Resource, real_replicas: int | None = None) -> float:
    """Cores a resource's real worker takes when busy: one per real replica (one intra-op thread each; its
    profile-driven replicas only sleep, off these cores); `real_replicas`: how many are real (None: all)."""
    return (resource.replicas if real_replicas is None else real_replicas) * REAL_THREADS_PER_REPLICA


def real_model_batches(system: SystemModel, real_resources: set[str]) -> dict[str, tuple[int, ...]]:
    """Returns, per model with a real worker among `real_resources`, the batch sizes to time: 1 and every
    size of that model's CPU variants in the system (their profile-driven workers sleep the same entry;
    `measure_real_models` adds the sizes the profile has)."""
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
    input_ms_per_frame: float = 0.0

    def describe(self) -> str:
        sizes = ", ".join(f"b{b} {ms:.1f} ms (profile {self.profile_ms[b]:.1f})"
                          for b, ms in sorted(self.measured_ms.items()))
        return f"{self.model} cpu: {sizes}; input {self.input_ms_per_frame:.2f} ms + {self.input_ms_per_mb:.1f} ms/MB"


def source_frames() -> list[bytes]:
    """Returns JPEG frames as the live sources send them, one of each SOURCE_FRAME_KB."""
    sizer = JpegSizer()
    return [sizer.frame(kb * 1000) for kb in SOURCE_FRAME_KB]


def time_real_workers(profile_path: Path, out_path: Path,
                      real_models_of: Callable[[Path], dict[str, tuple[int, ...]]],
                      log: Callable[[str], None] = print) -> tuple[Path, list[MeasuredModel]]:
    """Times the models that `real_models_of(profile file)` says have real workers, writing the run's
    profile to `out_path`, until every model it names under the resulting profile is timed (new figures
    may change a greedy placement, and with it which variants run real). Returns the profile to decide
    with (`profile_path` when nothing was timed) and what was measured."""
    path, measured = Path(profile_path), {}
    for _ in range(3):
        wanted = {m: b for m, b in real_models_of(path).items() if m not in measured}
        if not wanted:
            return path, list(measured.values())
        for m in measure_real_models(path, wanted, out_path, log):
            measured[m.model] = m
        path = Path(out_path)
    raise RuntimeError(f"{out_path}: timing the real workers kept changing which models run real "
                       f"(timed {sorted(measured)}); pass the profile with --profiles and --no-profile-real-workers")


def measure_real_models(profile_path: Path, batches: dict[str, tuple[int, ...]], out_path: Path,
                        log: Callable[[str], None] = print, cpu: int | None = None) -> list[MeasuredModel]:
    """Times each model of `batches` (model -> batch sizes) on CPU `cpu` (default: the real workers'),
    writes the given profile with those models' CPU entries replaced to `out_path`, and returns what was
    measured. Raises KeyError naming the model when the profile has no CPU entry for it, RuntimeError
    naming it when it cannot be timed (its ONNX file missing or broken)."""
    nominal = read_profile(profile_path)
    entries = {m: nominal.runtime(m, "cpu") for m in batches}  # refuses a model without a CPU entry first
    # every size the entry has is timed too, or its variants at those sizes would leave the profile
    batches = {m: tuple(sorted(set(sizes) | set(entries[m].batch_latency_ms))) for m, sizes in batches.items()}
    cpu = real_worker_cpu() if cpu is None else cpu
    frames = source_frames()
    before = os.sched_getaffinity(0)
    measured: dict[str, MeasuredModel] = {}
    runtimes = {}
    os.sched_setaffinity(0, {cpu})
    try:
        for model, sizes in batches.items():
            req = ProfileRequest(batches=tuple(sorted(set(sizes))), runs=RUNS, threads=REAL_THREADS_PER_REPLICA,
                                 min_iterations=MIN_BATCHES, budget_s=BUDGET_S, idle_ms=IDLE_MS, seed=SEED,
                                 out=out_path)
            try:
                rt = profile_runtime(load_model(model), "cpu", req, frames)
            except Exception as exc:  # a missing or broken ONNX file: the real worker could not start either
                raise RuntimeError(f"timing {model} for its real worker failed: {exc}") from exc
            old = entries[model]
            runtimes[model] = replace(
                old, threads=REAL_THREADS_PER_REPLICA, batch_latency_ms=rt.batch_latency_ms,
                batch_latency_p99_ms=rt.batch_latency_p99_ms, batch_latency_spread_ms=rt.batch_latency_spread_ms,
                input_ms_per_mb=rt.input_ms_per_mb, input_ms_per_frame=rt.input_ms_per_frame,
                source=f"measured on CPU {cpu} before this live run ({rt.source}); cores and memory as "
                       f"{Path(profile_path).name}")
            measured[model] = MeasuredModel(model, {b: round(ms, 3) for b, ms in rt.batch_latency_ms.items()},
                                            {b: old.latency_ms(b) for b in rt.batch_latency_ms}, rt.input_ms_per_mb,
                                            rt.input_ms_per_frame)
            log(f"[profile] {measured[model].describe()}")
    finally:
        os.sched_setaffinity(0, before)
    merged = ProfileFile(
        nominal.version,
        f"{nominal.origin}; CPU entries of {', '.join(sorted(batches))} measured on this host before the live run",
        nominal.models,
        tuple(runtimes.get(rt.model, rt) if rt.device == "cpu" else rt for rt in nominal.runtimes),
        nominal.capacity_frame_kb,
        nominal.load_accounting,
    )
    write_profile(merged, out_path)
    return list(measured.values())
