"""Shortest paths between sites, by delay, without computing every pair: `Routes`.

A site with one link whose other end has more (a leaf: an antenna under its central office) reaches every
other site through that link, so only the other sites (the core) need shortest paths among themselves:
one Dijkstra per core site over the core, which also finds every ambiguity (two shortest paths of equal
delay join two sites only if they join two core sites). A path between any two sites is then a leaf's link,
a core path and a leaf's link; `path(a, b)` builds it on demand, and `core_sums` / `attachment` give the
system model additive figures of every antenna-to-cluster path as arrays. Cost: the core's size squared,
whatever the number of leaves.
"""

from __future__ import annotations

import copy
import heapq
import math
from collections.abc import Callable, Mapping

import numpy as np

from topologies.model import Link, PathMetrics

EPS_MS = 1e-9
"""Two path delays closer than this are equal (a tie makes the path ambiguous)."""


class Routes:
    """The unique shortest path between every two sites of a topology, derived lazily from its core."""

    def __init__(self, source: str, names: list[str], links: tuple[Link, ...],
                 error: Callable[[str], Exception] = ValueError) -> None:
        """Checks that every site is reachable and no shortest path is ambiguous; raises `error(message)` with
        `source` and the two sites at fault otherwise."""
        self.names = list(names)
        adjacency: dict[str, list[Link]] = {n: [] for n in names}
        for link in links:
            adjacency[link.a].append(link)
            adjacency[link.b].append(link)
        self._check_connected(source, adjacency, error)
        degree = {n: len(adj) for n, adj in adjacency.items()}
        self.hop: dict[str, Link | None] = {}
        """The link from a leaf to its gateway (None for a core site, its own gateway)."""
        self.gateway: dict[str, str] = {}
        for n in names:
            if degree[n] == 1 and degree[adjacency[n][0].other(n)] > 1:
                self.hop[n], self.gateway[n] = adjacency[n][0], adjacency[n][0].other(n)
            else:
                self.hop[n], self.gateway[n] = None, n
        self.core = [n for n in names if self.hop[n] is None]
        self.core_index = {n: i for i, n in enumerate(self.core)}
        core_adj = {n: [lk for lk in adjacency[n] if self.hop[lk.other(n)] is None] for n in self.core}
        self._via: list[dict[str, Link]] = []
        """Per core source: the last link of the shortest path to each core site."""
        self._order: list[list[str]] = []
        """Per core source: the core sites in order of distance."""
        for src in self.core:
            via, order = _dijkstra(source, src, core_adj, error)
            self._via.append(via)
            self._order.append(order)
        self._paths: dict[tuple[str, str], PathMetrics] = {}

    def with_links(self, replace: Mapping[Link, Link]) -> Routes:
        """Returns these routes over the links `replace` maps each link to (its delay changed, or it went down):
        every path keeps its links, as a network whose forwarding does not reroute; nothing is recomputed."""
        new = copy.copy(self)
        new.hop = {n: None if lk is None else replace[lk] for n, lk in self.hop.items()}
        new._via = [{n: replace[lk] for n, lk in via.items()} for via in self._via]
        new._paths = {}
        return new

    @staticmethod
    def _check_connected(source: str, adjacency: dict[str, list[Link]], error: Callable[[str], Exception]) -> None:
        names = list(adjacency)
        seen, stack = {names[0]}, [names[0]]
        while stack:
            node = stack.pop()
            for link in adjacency[node]:
                nxt = link.other(node)
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        for dst in names:
            if dst not in seen:
                raise error(f"{source}: links: site {dst!r} is not reachable from {names[0]!r}")

    def core_links(self, a: str, b: str) -> tuple[Link, ...]:
        """Returns the links of the shortest path between two core sites, from a to b."""
        via = self._via[self.core_index[a]]
        out: list[Link] = []
        node = b
        while node != a:
            out.append(via[node])
            node = via[node].other(node)
        return tuple(reversed(out))

    def links(self, a: str, b: str) -> tuple[Link, ...]:
        """Returns the links of the shortest path from site a to site b, in order (empty if a == b)."""
        if a == b:
            return ()
        ga, gb = self.gateway[a], self.gateway[b]
        first = (self.hop[a],) if self.hop[a] is not None else ()
        last = (self.hop[b],) if self.hop[b] is not None else ()
        if b == ga:  # a leaf to its own gateway
            return first
        if a == gb:
            return last
        return (*first, *self.core_links(ga, gb), *last)  # type: ignore[arg-type]

    def path(self, a: str, b: str) -> PathMetrics:
        """Returns the one-way metrics of the path from a to b (computed once per pair asked for)."""
        key = (a, b)
        if key not in self._paths:
            if a not in self.gateway or b not in self.gateway:
                raise KeyError(f"no site named {(a if a not in self.gateway else b)!r}")
            self._paths[key] = PathMetrics.of(self.links(a, b))
        return self._paths[key]

    def core_sums(self, weight: Callable[[Link], float]) -> np.ndarray:
        """Returns [core site, core site]: the sum of `weight(link)` over each core path."""
        k = len(self.core)
        out = np.zeros((k, k))
        for i, src in enumerate(self.core):
            via, row = self._via[i], {src: 0.0}
            for node in self._order[i][1:]:
                link = via[node]
                row[node] = row[link.other(node)] + weight(link)
            out[i] = [row[n] for n in self.core]
        return out

    def attachment(self, names: list[str] | tuple[str, ...], weight: Callable[[Link], float]
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Returns, per site named, the index of its gateway among the core sites and `weight` of its link to
        the gateway (0 for a core site)."""
        gateway = np.array([self.core_index[self.gateway[n]] for n in names], dtype=np.int64)
        hop = np.array([0.0 if self.hop[n] is None else weight(self.hop[n]) for n in names])  # type: ignore[arg-type]
        return gateway, hop


def _dijkstra(source: str, src: str, adjacency: dict[str, list[Link]], error: Callable[[str], Exception]
              ) -> tuple[dict[str, Link], list[str]]:
    """Returns (last link of the path to each site, sites in order of distance) from `src`; raises `error` when
    two paths of equal delay join src and a site."""
    dist = {src: 0.0}
    heap = [(0.0, src)]
    order: list[str] = []
    done: set[str] = set()
    while heap:
        d, node = heapq.heappop(heap)
        if node in done:
            continue
        done.add(node)
        order.append(node)
        for link in adjacency[node]:
            nxt = link.other(node)
            if d + link.delay_ms < dist.get(nxt, math.inf) - EPS_MS:
                dist[nxt] = d + link.delay_ms
                heapq.heappush(heap, (dist[nxt], nxt))
    # Count shortest paths in order of distance; keep the one path where the count is 1.
    count = {src: 1}
    via: dict[str, Link] = {}
    for node in order:
        for link in adjacency[node]:
            nxt = link.other(node)
            if nxt != src and abs(dist[node] + link.delay_ms - dist[nxt]) <= EPS_MS and via.get(node) is not link:
                count[nxt] = count.get(nxt, 0) + count[node]
                via.setdefault(nxt, link)
    for dst in adjacency:
        if count[dst] > 1:
            raise error(f"{source}: links: two paths of equal delay join {src!r} and {dst!r}: "
                        "a cycle makes the path ambiguous")
    return via, order
