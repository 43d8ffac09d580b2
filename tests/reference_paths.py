"""The all-pairs reference for topologies.routes and scheduler.pathfigures: Dijkstra from every site to every
site, and the [antenna, resource] figures filled pair by pair from those paths. Quadratic in sites; the
tests compare Routes and build_system with it on small topologies, benchmarks/bench_large_topology.py
times it against them."""

from __future__ import annotations

import heapq
import math

import numpy as np

from scheduler.system import SystemModel
from topologies.model import Link, PathMetrics, Topology


def all_pairs_paths(names: list[str], links: tuple[Link, ...]) -> dict[tuple[str, str], PathMetrics]:
    """Returns the shortest path by delay between every two sites (a tie raises ValueError)."""
    adjacency: dict[str, list[Link]] = {n: [] for n in names}
    for link in links:
        adjacency[link.a].append(link)
        adjacency[link.b].append(link)
    eps = 1e-9
    paths: dict[tuple[str, str], PathMetrics] = {}
    for src in names:
        dist = {src: 0.0}
        heap = [(0.0, src)]
        order: list[str] = []
        while heap:
            d, node = heapq.heappop(heap)
            if node in order:
                continue
            order.append(node)
            for link in adjacency[node]:
                nxt = link.other(node)
                if d + link.delay_ms < dist.get(nxt, math.inf) - eps:
                    dist[nxt] = d + link.delay_ms
                    heapq.heappush(heap, (dist[nxt], nxt))
        count = {src: 1}
        via: dict[str, tuple[Link, ...]] = {src: ()}
        for node in order:
            for link in adjacency[node]:
                nxt = link.other(node)
                if nxt != src and abs(dist[node] + link.delay_ms - dist[nxt]) <= eps and link not in via[node]:
                    count[nxt] = count.get(nxt, 0) + count[node]
                    via.setdefault(nxt, via[node] + (link,))
        for dst in names:
            if dst not in dist:
                raise ValueError(f"site {dst!r} is not reachable from {src!r}")
            if count[dst] > 1:
                raise ValueError(f"two paths of equal delay join {src!r} and {dst!r}")
            paths[(src, dst)] = PathMetrics.of(via[dst])
    return paths


def pairwise_figures(topo: Topology, system: SystemModel) -> dict[str, np.ndarray]:
    """Returns the system model's [antenna, resource] figures filled pair by pair from `all_pairs_paths`."""
    paths = all_pairs_paths([s.name for s in topo.sites], topo.links)
    n_a, n_r = len(system.antennas), system.n_resources
    net_ms, net_dev, loss, path_bpb = (np.zeros((n_a, n_r)) for _ in range(4))
    for i, a in enumerate(system.antennas):
        for j, res in enumerate(system.resources):
            p = paths[(a, res.site)]
            net_ms[i, j], net_dev[i, j], loss[i, j] = p.delay_ms, p.delay_dev_ms, p.loss_pct / 100.0
            path_bpb[i, j] = sum(8.0 / (link.bw_mbps * 1000.0) for link in p.links)
    proc_full = np.array([r.variant.batch_ms[r.variant.batch_size] for r in system.resources])
    input_bpb = np.array([r.variant.batch_size * r.variant.input_ms_per_mb / 1e6 for r in system.resources])
    static = 2.0 * (system.radio_ms[:, None] + net_ms + 2.0 * net_dev) + proc_full[None, :]
    per_byte = system.radio_ms_per_byte[:, None] + path_bpb + input_bpb[None, :]
    return {"net_ms": net_ms, "net_dev_ms": net_dev, "path_loss": loss, "path_ms_per_byte": path_bpb,
            "static_ms": static, "ms_per_byte": per_byte}
