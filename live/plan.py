"""The process plan of a live run: which resource runs real ONNX inference and which is profile-driven
(the site a simulated dry run of the trace keeps busiest, as far as the core of real inference carries it),
each worker's port and command line, and the table printed at start.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

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
    """Returns the cluster whose CPU variants that real inference can carry have the most `queries`;
    failing that, the cluster whose CPU variants have the most; None if no CPU variant has any."""
    carried: dict[str, int] = {}
    for site in dict.fromkeys(r.site for r in system.resources):
        real = real_resources(system, (site,), queries, real_cores)
        carried[site] = sum(queries.get(name, 0) for name, ok in real.items() if ok)
    if max(carried.values(), default=0) == 0:
        carried = {}
        for r in system.resources:
            if r.variant.device == "cpu":
                carried[r.site] = carried.get(r.site, 0) + queries.get(r.name, 0)
    best = max(carried, key=lambda k: carried[k], default=None)
    return best if best is not None and carried[best] > 0 else None


def real_resources(
    system: SystemModel, sites: tuple[str, ...], queries: dict[str, int] | None, real_cores: float
) -> dict[str, bool]:
    """Returns, for every CPU variant at `sites`, whether it runs real ONNX: as far as the cores real
    inference has carry their replicas (one intra-op thread each: one core when busy; oversubscribed, the
    replicas would starve each other and miss their profile), the variants with the most `queries` first
    (file order breaks ties)."""
    candidates = [r for r in system.resources if r.site in sites and r.variant.device == "cpu"]
    candidates.sort(key=lambda r: -(queries or {}).get(r.name, 0))
    real, left = {}, real_cores
    for r in candidates:
        need = real_cores_needed(r)
        real[r.name] = need <= left + 1e-9
        if real[r.name]:
            left -= need
    return real


def plan_workers(
    system: SystemModel,
    real_sites: tuple[str, ...],
    spec: RunSpec,
    queries: dict[str, int] | None = None,
    real_cores: float = REAL_INFERENCE_CORES,
) -> list[WorkerPlan]:
    """Returns one worker per resource: real ONNX on the CPU variants at the real sites that the cores of
    real inference carry (`real_resources`, the variants a dry run gives the most `queries` first); every
    other worker is profile-driven."""
    known = {s.name for s in system.topology.clusters}
    for site in real_sites:
        if site not in known:
            raise ValueError(
                f"--real-workers: {site!r} is not a cluster of {system.topology.source} "
                f"(clusters: {', '.join(sorted(known))})"
            )
    real_names = {name for name, ok in real_resources(system, real_sites, queries, real_cores).items() if ok}
    taken = sum(real_cores_needed(r) for r in system.resources if r.name in real_names)
    plans, next_port = [], {}
    for r in system.resources:
        v = r.variant
        port = next_port.get(r.site, WORKER_BASE_PORT)
        next_port[r.site] = port + 1
        real = r.name in real_names
        note = ""
        if r.site in real_sites and v.device != "cpu":
            note = "no GPU on this machine: profile-driven"
        elif r.site in real_sites and not real:
            note = (f"{r.replicas} replica(s) need {real_cores_needed(r):g} core(s); real "
                    f"inference has {real_cores:g}, {taken:g} taken")
        plans.append(
            WorkerPlan(
                resource=r.name,
                site=r.site,
                model=v.model,
                device=v.device,
                batch=v.batch_size,
                replicas=r.replicas,
                real=real,
                port=port,
                queue_limit=spec.queue_limit_per_replica * v.batch_size * r.replicas,
                note=note,
            )
        )
    return plans


def worker_argv(plan: WorkerPlan, ip: str, profiles_path: str, spec: RunSpec,
                inference_cgroup: str | None = None) -> list[str]:
    """Returns the command line of a worker: `python -m workers.serve` with the plan's deployment (the worker
    keeps its own options, those of `run_testbed.py worker`: workers/ may not read a live run's spec). A real
    worker's inference threads move into `inference_cgroup` (the run's cpuset of real inference, live/cores.py);
    without one the whole worker is pinned to the last CPU."""
    argv = [sys.executable, "-m", "workers.serve", "--model", plan.model, "--host", ip, "--port", str(plan.port),
            "--batch", str(plan.batch), "--instances", str(plan.replicas), "--device", plan.device,
            "--max-batch-delay-ms", str(spec.max_batch_delay_ms), "--queue-limit", str(plan.queue_limit)]
    if plan.real:  # one core for real inference: the emulation keeps the rest
        argv += ["--threads", str(REAL_THREADS_PER_REPLICA)] + (
            ["--inference-cgroup", inference_cgroup] if inference_cgroup else ["--cpus", str(real_worker_cpu())])
    else:
        argv += ["--profile-driven", profiles_path]
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
            ("real ONNX" if p.real else "profile-driven") + (f" ({p.note})" if p.note else ""),
            str(p.replicas),
            str(p.batch),
            str(p.port),
        )
        for p in plans
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
