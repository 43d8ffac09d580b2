"""Queues on the links of the paths: a message crossing the path between an antenna's site and a resource's waits
at each link of it while that link direction sends the messages that entered it before (at the link's rate), as the
testbed's wires do. A path's links are shared by several paths (on full-edge, co1-dc1 carries every frame from
co1's antennas to dc1 and the cloud), so one antenna's frames wait for another's, and a link narrowed under a load
it cannot carry builds a queue that grows while the load lasts (docs/fidelity.md, "A full link").

`PathQueues.waits(...)` returns each message's wait at the links of its path, added to its path leg (delay, jitter
and transmission, simulator.engine). A message enters its k-th link after the delays and transmissions of the links
before it and their waits (its path's jitter is drawn once for the whole leg, after the queues). The link
directions are walked in a topological order of the paths (a link direction comes after every one that some path
crosses just before it; on a tree such as full-edge every path's links are in that order), one `FifoLinks` per
level, so that when a level is walked every message's waits before it are known. Where the paths' links make a
cycle (a network with several routes through one link direction in both orders), each link is walked at its
position in the path instead, and a link direction at several positions keeps a queue per position.

Uplink and downlink keep queues of their own (the simulator sends a window's queries before it serves them, and
each set of queues takes its messages in time order): a link direction that carries queries of one path and
answers of another (on full-edge, a binding across the hierarchy) queues them apart.
"""

from __future__ import annotations

import numpy as np

from scheduler.timeline import SystemTimeline
from simulator.links import FifoLinks
from topologies.model import Topology


class PathQueues:
    """The link queues of every antenna-to-resource path, one way (`up`: from the antenna's site to the resource's;
    else back), over the states of a timeline (each state's link delays and rates; the paths keep their links)."""

    def __init__(self, timeline: SystemTimeline, up: bool) -> None:
        system = timeline.systems[0]
        topo = system.topology
        index = {(lk.a, lk.b): i for i, lk in enumerate(topo.links)}
        sites = [r.site for r in system.resources]
        paths = [[_directions(topo, index, a, s) if up else _directions(topo, index, s, a) for s in sites]
                 for a in system.antennas]
        hops = max((len(p) for row in paths for p in row), default=0)
        self.hops = np.full((len(system.antennas), len(sites), hops), -1, dtype=np.int64)
        """[antenna, resource, k]: the k-th link direction of the path (2 x link index + 1 when crossed from the
        link's b to its a), -1 past its end."""
        for i, row in enumerate(paths):
            for j, p in enumerate(row):
                self.hops[i, j, : len(p)] = p
        self.delay_ms = np.array([[lk.delay_ms for lk in s.topology.links] for s in timeline.systems]).reshape(
            len(timeline.systems), len(topo.links))
        """[state, link]: one-way delay (infinite while the link is down)."""
        self.ms_per_byte = np.array([[8.0 / (lk.bw_mbps * 1000.0) for lk in s.topology.links]
                                     for s in timeline.systems]).reshape(len(timeline.systems), len(topo.links))
        """[state, link]: transmission time per byte."""
        self.level = _levels(self.hops, 2 * len(topo.links))
        """[antenna, resource, k]: the level each hop is walked at (-1 past the path's end)."""
        self.queues = [FifoLinks() for _ in range(int(self.level.max(initial=-1)) + 1)]

    def waits(self, ant: np.ndarray, res: np.ndarray, nbytes: np.ndarray, enter_ms: np.ndarray, state: np.ndarray,
              horizon_ms: float) -> np.ndarray:
        """Returns the wait in ms of each message entering its path at `enter_ms` (finite) with `nbytes`, under the
        timeline state `state`, at the links of its path; `horizon_ms`: later calls' messages enter from then on."""
        n = len(ant)
        wait = np.zeros(n)
        if not self.queues or n == 0:
            return wait
        hops, level = self.hops[ant, res], self.level[ant, res]
        on = hops >= 0
        link = np.where(on, hops >> 1, 0)
        delay = np.where(on, self.delay_ms[state[:, None], link], 0.0)
        tx = np.where(on, self.ms_per_byte[state[:, None], link] * nbytes[:, None], 0.0)
        before = np.cumsum(delay + tx, axis=1) - (delay + tx)  # from the path's entry to each hop's
        for lv, queue in enumerate(self.queues):
            i, k = np.nonzero(level == lv)
            if not len(i):
                continue
            enter = enter_ms[i] + before[i, k] + wait[i]
            done = queue.order(hops[i, k], enter, enter + tx[i, k], horizon_ms, tx[i, k])
            wait[i] += np.maximum(done - enter - tx[i, k], 0.0)
        return wait


def _directions(topo: Topology, index: dict[tuple[str, str], int], a: str, b: str) -> list[int]:
    """Returns the link directions of the path from site a to site b, in order."""
    out, at = [], a
    for lk in topo.routes.links(a, b):
        out.append(2 * index[(lk.a, lk.b)] + (0 if lk.a == at else 1))
        at = lk.other(at)
    return out


def _levels(hops: np.ndarray, n_directions: int) -> np.ndarray:
    """Returns the level of every hop: the longest chain of link directions before its own over every path (Kahn's
    order), or, where the paths make a cycle, its position in its path."""
    nxt: dict[int, set[int]] = {d: set() for d in range(n_directions)}
    for p in hops.reshape(-1, hops.shape[-1]) if hops.size else ():
        p = p[p >= 0]
        for x, y in zip(p[:-1], p[1:], strict=True):
            nxt[int(x)].add(int(y))
    into = {d: 0 for d in nxt}
    for ys in nxt.values():
        for y in ys:
            into[y] += 1
    depth = {d: 0 for d in nxt}
    ready = [d for d, c in into.items() if c == 0]
    seen = 0
    while ready:
        d = ready.pop()
        seen += 1
        for y in nxt[d]:
            depth[y] = max(depth[y], depth[d] + 1)
            into[y] -= 1
            if into[y] == 0:
                ready.append(y)
    positions = np.broadcast_to(np.arange(hops.shape[-1]), hops.shape)
    if seen < len(nxt):  # a cycle: by position
        return np.where(hops >= 0, positions, -1)
    lookup = np.array([depth[d] for d in range(n_directions)] + [-1], dtype=np.int64)
    return lookup[np.where(hops >= 0, hops, n_directions)]
