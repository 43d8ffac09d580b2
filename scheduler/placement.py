"""Placement: which model variants run on which cluster, with how many replicas (the orchestrator's job).

Either the topology file lists its deployments, or `greedy_placement` packs every cluster:
1. Per layer, one batch size: small batches at the edge (latency), large ones in DCs and cloud (throughput):
   antenna 1, co 2, dc 4, cloud 8 (GPU); CPU variants use half of that, at least 1.
2. Models in order of increasing cost (cheapest processing first), GPU runtimes on GPU sites first.
3. Round robin over the models: add one replica of each model that still fits the site's GPUs, cores and
   memory, until no replica of any model fits. So every cluster offers as many models (accuracy levels)
   as it can, then scales them up to its resources.
"""

from __future__ import annotations

from collections import Counter

from scheduler.profiles import ProfileSet, Variant
from topologies.model import Deployment, Site, Topology

GPU_BATCH_BY_LAYER = {"antenna": 1, "co": 2, "dc": 4, "cloud": 8}


def _candidates(site: Site, profiles: ProfileSet) -> list[Variant]:
    """Returns the variants to try on a site, GPU runtimes first, cheapest model first."""
    gpu_batch = GPU_BATCH_BY_LAYER[site.layer]
    cpu_batch = max(1, gpu_batch // 2)
    out: list[Variant] = []
    for device, batch in (("gpu", gpu_batch), ("cpu", cpu_batch)):
        if device == "gpu" and (site.compute is None or site.compute.gpus == 0):
            continue
        chosen = [v for v in profiles.variants.values() if v.device == device and v.batch_size == batch]
        out.extend(sorted(chosen, key=lambda v: v.batch_ms[1]))
    return out


def greedy_placement(topo: Topology, profiles: ProfileSet) -> tuple[Deployment, ...]:
    """Returns the deployments of the documented greedy packing, in site order."""
    result: list[Deployment] = []
    for site in topo.clusters:
        assert site.compute is not None
        cores, gpus, mem = site.compute.cpu_cores, site.compute.gpus, site.compute.memory_gib * 1024
        replicas: Counter[str] = Counter()
        candidates = _candidates(site, profiles)
        placed = True
        while placed:
            placed = False
            for v in candidates:
                fits = v.cpu_cores <= cores + 1e-9 and v.gpus <= gpus and (mem == 0 or v.memory_mib <= mem)
                if fits:
                    cores -= v.cpu_cores
                    gpus -= v.gpus
                    mem = mem - v.memory_mib if mem else 0
                    replicas[v.name] += 1
                    placed = True
        result.extend(Deployment(site=site.name, variant=name, replicas=n) for name, n in replicas.items())
    return tuple(result)


def placement_for(topo: Topology, profiles: ProfileSet) -> tuple[Deployment, ...]:
    """Returns the file's deployments if it lists them (checking they fit), else the greedy packing."""
    if topo.deployments is None:
        return greedy_placement(topo, profiles)
    used: dict[str, list[float]] = {}
    for d in topo.deployments:
        v = profiles.variant(d.variant)
        site = topo.site(d.site)
        assert site.compute is not None
        u = used.setdefault(d.site, [0.0, 0.0])
        u[0] += v.cpu_cores * d.replicas
        u[1] += v.gpus * d.replicas
        if u[0] > site.compute.cpu_cores + 1e-9 or u[1] > site.compute.gpus:
            raise ValueError(f"{topo.source}: deployments on {d.site!r} need {u[0]:g} cores and {u[1]:g} GPUs, "
                             f"the site has {site.compute.cpu_cores:g} and {site.compute.gpus}")
    return topo.deployments
