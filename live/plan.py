"""The process plan of a live run: which replicas run real ONNX inference and which are profile-driven
(at the site a simulated dry run of the trace keeps busiest, as many replicas as the core of real inference
carries, one each), each worker's port and command line, and the table printed at start.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from live.realprofile import (
    REAL_INFERENCE_CORES,
    REAL_THREADS_PER_REPLICA,
    real_cores_needed,
    real_worker_cpu,
)
from live.spec import RunSpec
from scheduler.core import policy_index
from scheduler.profiles import ProfileSet
from scheduler.system import SystemModel
from simulator.engine import SimConfig, Simulation
from topologies import Topology
from topologies.events import NetworkEvents
from workload.trace import Trace

WORKER_BASE_PORT = 8000


@dataclass(frozen=True)
class WorkerPlan:
    """One worker process: a resource of the system model, real or profile-driven, and its address."""

    resource: str
    site: str
    model: str
    device: str
    batch: int
    replicas: int
    real: bool
    port: int
    queue_limit: int
    note: str = ""
    real_replicas: int = 0
    """Of `replicas`, those running real ONNX, the first in the worker's batcher (`real` when any; fewer than
    `replicas`: a mixed worker, its others sleeping the run's profile, where the real ones' figures are measured)."""

    def __post_init__(self) -> None:
        if self.real != (self.real_replicas > 0) or not 0 <= self.real_replicas <= self.replicas:
            raise ValueError(f"{self.resource}: real {self.real} with {self.real_replicas} of {self.replicas} "
                             "replicas real")


def smallest_cluster(topo: Topology, profiles: ProfileSet, system: SystemModel) -> str:
    """Returns the cluster with the fewest cores that hosts a CPU variant (file order breaks ties)."""
    cpu_sites = {r.site for r in system.resources if r.variant.device == "cpu"}
    sites = [s for s in topo.clusters if s.name in cpu_sites]
    if not sites:
        raise ValueError(f"{topo.source}: no cluster hosts a CPU variant that could run real inference")
    return min(sites, key=lambda s: s.compute.cpu_cores).name  # type: ignore[union-attr]


def busiest_cpu_cluster(
    system: SystemModel,
    trace: Trace,
    policy: str,
    duration_s: float,
    seed: int,
    capacity_headroom: float,
    real_cores: float = REAL_INFERENCE_CORES,
    events: NetworkEvents | None = None,
) -> tuple[str | None, dict[str, int]]:
    """Returns the cluster whose CPU variants that real inference can carry (`real_resources`) the policy
    gives the most queries in a simulated dry run of the same trace and network `events`; failing that, the cluster whose CPU
    variants it gives the most queries (None if it gives them none); and the queries per resource."""
    per_resource: dict[str, int] = {}

    def sink(cols: dict[str, np.ndarray]) -> None:
        for cluster, variant in zip(cols["cluster"], cols["variant"], strict=True):
            if cluster:
                key = f"{variant}@{cluster}"
                per_resource[key] = per_resource.get(key, 0) + 1

    sim = Simulation(system, trace, SimConfig(duration_s=duration_s, capacity_headroom=capacity_headroom), seed=seed, record_sink=sink,
                     events=events)
    sim.run(policy_index(policy))
    return choose_real_site(system, per_resource, real_cores), per_resource


def choose_real_site(system: SystemModel, queries: dict[str, int], real_cores: float) -> str | None:
    """Returns the cluster whose real replicas (`real_resources`) the dry run's `queries` reach most, a variant's
    queries shared evenly among its replicas (its batcher takes turns among them); failing that, the cluster
    whose CPU variants have the most; None if no CPU variant has any."""
    replicas = {r.name: r.replicas for r in system.resources}
    carried: dict[str, float] = {}
    for site in dict.fromkeys(r.site for r in system.resources):
        real = real_resources(system, (site,), queries, real_cores)
        carried[site] = sum(queries.get(name, 0) * n / replicas[name] for name, n in real.items())
    if max(carried.values(), default=0) == 0:
        carried = {}
        for r in system.resources:
            if r.variant.device == "cpu":
                carried[r.site] = carried.get(r.site, 0) + queries.get(r.name, 0)
    best = max(carried, key=lambda k: carried[k], default=None)
    return best if best is not None and carried[best] > 0 else None


def real_resources(
    system: SystemModel, sites: tuple[str, ...], queries: dict[str, int] | None, real_cores: float
) -> dict[str, int]:
    """Returns, for every CPU variant at `sites`, how many of its replicas run real ONNX: one busy replica per
    core real inference has (one intra-op thread each; oversubscribed, the replicas would starve each other and
    miss their profile), to the variants whose replicas the dry run gives the most `queries` each first (file
    order breaks ties). A variant with more replicas than cores left gets as many real replicas as they carry,
    its others profile-driven (a mixed worker); a variant with none left gets none."""
    candidates = [r for r in system.resources if r.site in sites and r.variant.device == "cpu"]
    candidates.sort(key=lambda r: -(queries or {}).get(r.name, 0) / r.replicas)
    real, left = {}, real_cores
    for r in candidates:
        n = min(r.replicas, int((left + 1e-9) // REAL_THREADS_PER_REPLICA))
        real[r.name] = n
        left -= real_cores_needed(r, n)
    return real


def plan_workers(
    system: SystemModel,
    real_sites: tuple[str, ...],
    spec: RunSpec,
    queries: dict[str, int] | None = None,
    real_cores: float = REAL_INFERENCE_CORES,
) -> list[WorkerPlan]:
    """Returns one worker per resource: real ONNX on the replicas of the CPU variants at the real sites that the
    cores of real inference carry (`real_resources`, the variants a dry run gives the most `queries` per replica
    first), a worker with some replicas real and the others profile-driven being mixed; every other worker is
    profile-driven."""
    known = {s.name for s in system.topology.clusters}
    for site in real_sites:
        if site not in known:
            raise ValueError(
                f"--real-workers: {site!r} is not a cluster of {system.topology.source} "
                f"(clusters: {', '.join(sorted(known))})"
            )
    real_replicas = {name: n for name, n in real_resources(system, real_sites, queries, real_cores).items() if n}
    taken = sum(real_cores_needed(r, real_replicas[r.name]) for r in system.resources if r.name in real_replicas)
    plans, next_port = [], {}
    for r in system.resources:
        v = r.variant
        port = next_port.get(r.site, WORKER_BASE_PORT)
        next_port[r.site] = port + 1
        n_real = real_replicas.get(r.name, 0)
        note = ""
        if r.site in real_sites and v.device != "cpu":
            note = "no GPU on this machine: profile-driven"
        elif r.site in real_sites and n_real:
            note = "one real replica per core of real inference" if n_real < r.replicas else ""
        elif r.site in real_sites:
            note = (f"{r.replicas} replica(s) need {real_cores_needed(r):g} core(s); real inference has "
                    f"{real_cores:g}, {taken:g} taken")
        plans.append(
            WorkerPlan(
                resource=r.name,
                site=r.site,
                model=v.model,
                device=v.device,
                batch=v.batch_size,
                replicas=r.replicas,
                real=n_real > 0,
                port=port,
                queue_limit=spec.queue_limit_per_replica * v.batch_size * r.replicas,
                note=note,
                real_replicas=n_real,
            )
        )
    return plans


def worker_argv(plan: WorkerPlan, ip: str, profiles_path: str, spec: RunSpec,
                inference_cgroup: str | None = None, real_batch_log: Path | None = None) -> list[str]:
    """Returns the command line of a worker: `python -m workers.serve` with the plan's deployment (the worker
    keeps its own options, those of `run_testbed.py worker`: workers/ may not read a live run's spec). A real
    worker's inference threads move into `inference_cgroup` (the run's cpuset of real inference, live/cores.py);
    without one the whole worker is pinned to the last CPU. A mixed worker's other replicas sleep the run's
    profile (`--real-instances`); a real worker logs its real replicas' batches to `real_batch_log`."""
    argv = [sys.executable, "-m", "workers.serve", "--model", plan.model, "--host", ip, "--port", str(plan.port),
            "--batch", str(plan.batch), "--instances", str(plan.replicas), "--device", plan.device,
            "--max-batch-delay-ms", str(spec.max_batch_delay_ms), "--queue-limit", str(plan.queue_limit)]
    if plan.real:  # one core for real inference: the emulation keeps the rest
        argv += ["--threads", str(REAL_THREADS_PER_REPLICA)] + (
            ["--inference-cgroup", inference_cgroup] if inference_cgroup else ["--cpus", str(real_worker_cpu())])
        argv += ["--real-batch-log", str(real_batch_log)] if real_batch_log is not None else []
    if plan.real_replicas < plan.replicas:
        argv += ["--profile-driven", profiles_path]
        argv += ["--real-instances", str(plan.real_replicas)] if plan.real else []
    if spec.tdf != 1.0:  # the run's time scale: the worker's times are virtual, its delays x K
        argv += ["--tdf", repr(spec.tdf), "--tdf-anchor-s", repr(spec.tdf_anchor_s)]
    return argv


def format_worker_table(plans: list[WorkerPlan]) -> str:
    """Returns the worker table printed at the start of a run."""
    rows = [("resource", "site", "mode", "replicas", "batch", "port")]
    rows += [
        (
            p.resource,
            p.site,
            _mode(p) + (f" ({p.note})" if p.note else ""),
            str(p.replicas),
            str(p.batch),
            str(p.port),
        )
        for p in plans
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def _mode(plan: WorkerPlan) -> str:
    if not plan.real:
        return "profile-driven"
    if plan.real_replicas == plan.replicas:
        return "real ONNX"
    return f"{plan.real_replicas} real ONNX + {plan.replicas - plan.real_replicas} profile-driven"
