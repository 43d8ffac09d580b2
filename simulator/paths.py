"""Queues on the links of the paths: a message crossing the path between an antenna's site and a resource's waits
at each link of it while that link direction sends the messages that entered it before (at the link's rate), as the
testbed's wires do. A path's links are shared by several paths (on full-edge, co1-dc1 carries every frame from
co1's antennas to dc1 and the cloud), so one antenna's frames wait for another's, and a link narrowed under a load
it cannot carry builds a queue that grows while the load lasts (docs/fidelity.md, "A full link").

`PathQueues.advance(flights, horizon)` takes the messages entering their paths and returns those through every link
of their paths, each with its wait at the links, added to its path leg (delay, jitter and transmission,
simulator.engine). A message enters its k-th link after the delays and transmissions of the links before it and
their waits (its path's jitter is drawn once for the whole leg, after the queues). A message that enters a link at
or after the call's horizon (the earliest a later call's messages enter) stays on its path, walked no further, and
is taken up again by the call whose horizon passes that entry: every message entering a link before a call's
horizon is then walked in that call, in order of entry, and the links are exact FIFO queues across windows (a
message resent after a link came back, seconds later, waits for every message that entered before it). The link
directions are walked in levels that rise along every path, so that when a level is walked every message's waits
before it are known; each link direction keeps when it is free to send again across calls. A path is factorised
as `topologies.routes` gives it (the antenna's link to its gateway, the gateways' path through the core, the
resource's site's link from its gateway; as scheduler.pathfigures does), so nothing of size antennas x resources
is built: a leaf's link towards its gateway is level 0 (a path's first), a core link direction is 1 + its place in
a topological order of the core paths (it comes after every core direction some core path crosses just before it),
and a gateway's link to a leaf comes last.
Where the core paths make a cycle (a network with routes through two link directions in both orders), a core link
is walked at its position in the core path instead: a direction at several positions still sends one message at a
time, but takes them position by position, not always in the order they entered.

Uplink and downlink keep queues of their own (the simulator sends a window's queries before it serves them, and
each set of queues takes its messages in time order): a link direction that carries queries of one path and
answers of another (on full-edge, a binding across the hierarchy) queues them apart.
"""

from __future__ import annotations

import warnings

import numpy as np
from numba import njit

from scheduler.timeline import SystemTimeline
from simulator.links import entry_order


class PathQueues:
    """The link queues of every antenna-to-resource path, one way (`up`: from the antenna's site to the resource's;
    else back), over the states of a timeline (each state's link delays and rates; the paths keep their links)."""

    def __init__(self, timeline: SystemTimeline, up: bool, wire_ratio: float = 1.0) -> None:
        system = timeline.systems[0]
        topo, routes = system.topology, system.topology.routes
        index = {(lk.a, lk.b): i for i, lk in enumerate(topo.links)}

        def direction(a: str, b: str) -> int:
            """The direction id of the link between neighbours a and b, crossed from a."""
            return 2 * index[(a, b)] if (a, b) in index else 2 * index[(b, a)] + 1

        def leaf(site: str, outwards: bool) -> int:
            """A leaf's link to its gateway (outwards: from the gateway to the leaf); -1 for a core site."""
            gw = routes.gateway[site]
            return -1 if routes.hop[site] is None else (direction(gw, site) if outwards else direction(site, gw))

        sites = [r.site for r in system.resources]
        ants = list(system.antennas)
        site_id = {n: i for i, n in enumerate(routes.names)}
        self.up = up
        self.first = np.array([leaf(x, False) for x in (ants if up else sites)], dtype=np.int64)
        """[antenna] up, [resource] down: the path's first link direction (the leaf's link to its gateway), or -1."""
        self.last = np.array([leaf(x, True) for x in (sites if up else ants)], dtype=np.int64)
        """[resource] up, [antenna] down: the path's last link direction (the gateway's link to the leaf), or -1."""
        self.ant_gateway = np.array([routes.core_index[routes.gateway[a]] for a in ants], dtype=np.int64)
        self.res_gateway = np.array([routes.core_index[routes.gateway[s]] for s in sites], dtype=np.int64)
        self._ant_site = np.array([site_id[a] for a in ants], dtype=np.int64)
        self._res_site = np.array([site_id[s] for s in sites], dtype=np.int64)
        core = routes.core
        paths: dict[tuple[int, int], list[int]] = {}
        for i, a in enumerate(core):
            for j, b in enumerate(core):
                at, out = a, []
                for lk in (routes.core_links(a, b) if i != j else ()):
                    out.append(direction(at, lk.other(at)))
                    at = lk.other(at)
                paths[(i, j)] = out
        width = max((len(p) for p in paths.values()), default=0)
        self.core = np.full((len(core), len(core), width), -1, dtype=np.int64)
        """[from gateway, to gateway, k]: the k-th link direction of the core path, -1 past its end."""
        for (i, j), p in paths.items():
            self.core[i, j, : len(p)] = p
        self.core_level, cyclic = _core_levels(self.core, 2 * len(topo.links))
        """[from gateway, to gateway, k]: the level each core hop is walked at, from 1 (-1 past the path's end)."""
        if cyclic:
            warnings.warn(f"{topo.source}: the core paths cross link directions in both orders (a cycle): a core link "
                          "takes its messages position by position in the path, not always in the order they entered",
                          stacklevel=2)
        self.top = int(self.core_level.max(initial=0)) + 1
        """The level of a path's last link (the gateway's link to the leaf)."""
        self.delay_ms = np.array([[lk.delay_ms for lk in s.topology.links] for s in timeline.systems]).reshape(
            len(timeline.systems), len(topo.links))
        """[state, link]: one-way delay (infinite while the link is down)."""
        self.ms_per_byte = np.array([[8.0 / (lk.bw_mbps * 1000.0) * wire_ratio for lk in s.topology.links]
                                     for s in timeline.systems]).reshape(len(timeline.systems), len(topo.links))
        """[state, link]: transmission time per byte of payload (`wire_ratio`: bytes on the wire per byte of it)."""
        self.n_levels = self.top + 1 if topo.links else 0
        self.free_ms = np.full(2 * len(topo.links), -np.inf)
        """[link direction]: when it is free to send again (every message that entered it before the last call's
        horizon walked)."""
        self.sends: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] | None = None
        """When a list: each call appends (link direction, entry, start, end) of the sends it walked (for checks)."""
        self._pending: dict[str, np.ndarray] | None = None
        """The messages still on their paths (`advance`'s flights, with their waits so far and `next`, the hop they
        enter next)."""

    def hops(self, ant: np.ndarray, res: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Returns the link directions of the paths [ant, res] in order and the level of each ([n, hops]; -1 past a
        path's end, and in its middle where it has no such link: a core site's own, an empty core path)."""
        width = self.core.shape[2] + 2
        hops, level = np.empty((len(ant), width), np.int64), np.empty((len(ant), width), np.int64)
        _fill(np.asarray(ant, np.int64), np.asarray(res, np.int64), self.up, self.first, self.last, self.core,
              self.core_level, self.ant_gateway, self.res_gateway, self._ant_site, self._res_site, self.top, hops,
              level)
        return hops, level

    def advance(self, flights: dict[str, np.ndarray], horizon_ms: float) -> dict[str, np.ndarray]:
        """Takes the messages entering their paths (`flights`: an array per message of `ant`, `res`, `nbytes`, `enter`
        (ms, finite), `state` (the timeline's state they cross in) and whatever the caller carries with them),
        walks them and those still on their paths from earlier calls through every link they enter before
        `horizon_ms`, and returns those through their paths' last links (earlier calls' first), the same arrays and
        `wait` (ms at the links) and `left` (when it finished sending on its path's last link; `enter` without
        links); where every message is through, the arrays are the ones given (not copies). Later calls' messages
        must enter at or after `horizon_ms`."""
        if not np.isfinite(flights["enter"]).all():
            raise ValueError("PathQueues.advance: a message entering its path at a time that is not finite (one "
                             "across a link that is down is the caller's to leave out)")
        n_new = len(flights["enter"])
        new = {**flights, "wait": np.zeros(n_new), "next": np.zeros(n_new, dtype=np.int64)}
        f = new if self._pending is None else {key: np.concatenate([self._pending[key], new[key]]) for key in new}
        n = len(f["enter"])
        through = np.ones(n, dtype=bool)
        left = f["enter"].astype(np.float64, copy=True)
        if n and self.n_levels:
            hops, level = self.hops(f["ant"], f["res"])
            record = self.sends is not None
            start = np.full((3, n, hops.shape[1]) if record else (3, 0, 0), np.nan)
            _walk(hops, level, np.asarray(f["state"], np.int64), np.asarray(f["nbytes"], np.float64), self.delay_ms,
                  self.ms_per_byte, left, f["wait"], f["next"], through, float(horizon_ms), self.free_ms,
                  self.n_levels, start)
            if record:
                sent = np.isfinite(start[1])
                self.sends.append((hops[sent], start[0][sent], start[1][sent], start[2][sent]))
        if through.all():
            self._pending = None
            out = f
            del out["next"]
        else:
            self._pending = {key: v[~through] for key, v in f.items()}
            out = {key: v[through] for key, v in f.items() if key != "next"}
        out["left"] = left[through]
        return out

    def pending_min(self, key: str) -> float:
        """Returns the smallest `key` of the messages still on their paths (inf: none)."""
        return float(self._pending[key].min(initial=np.inf)) if self._pending is not None else np.inf


def _core_levels(core: np.ndarray, n_directions: int) -> tuple[np.ndarray, bool]:
    """Returns the level of every core hop, from 1: 1 + the longest chain of core link directions before its own over
    every core path (Kahn's order), or, where the core paths make a cycle, 1 + its position in its path; and whether
    they do."""
    nxt: dict[int, set[int]] = {}
    for p in core.reshape(-1, core.shape[-1]) if core.size else ():
        p = p[p >= 0]
        for d in p:
            nxt.setdefault(int(d), set())
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
    if seen < len(nxt):  # a cycle: by position
        positions = np.broadcast_to(np.arange(1, core.shape[-1] + 1), core.shape)
        return np.where(core >= 0, positions, -1), True
    lookup = np.full(n_directions + 1, -1, dtype=np.int64)
    for d, v in depth.items():
        lookup[d] = v + 1
    return lookup[np.where(core >= 0, core, n_directions)], False


@njit(cache=True)
def _fill(ant: np.ndarray, res: np.ndarray, up: bool, first: np.ndarray, last: np.ndarray, core: np.ndarray,
          core_level: np.ndarray, ant_gw: np.ndarray, res_gw: np.ndarray, ant_site: np.ndarray, res_site: np.ndarray,
          top: int, hops: np.ndarray, level: np.ndarray) -> None:
    """Fills each message's row of `hops` and `level` ([n, core hops + 2]): its first leaf's link to its gateway
    (level 0), the core path between the gateways (its levels), the gateway's link to the last leaf (level `top`);
    -1 where a path has no such link, and all -1 for a resource at the antenna's own site."""
    hc = core.shape[2]
    for i in range(len(ant)):
        a, r = ant[i], res[i]
        for k in range(hc + 2):
            hops[i, k] = -1
            level[i, k] = -1
        if ant_site[a] == res_site[r]:
            continue
        if up:
            f, x, g1, g2 = first[a], last[r], ant_gw[a], res_gw[r]
        else:
            f, x, g1, g2 = first[r], last[a], res_gw[r], ant_gw[a]
        if f >= 0:
            hops[i, 0], level[i, 0] = f, 0
        for k in range(hc):
            if core[g1, g2, k] >= 0:
                hops[i, k + 1], level[i, k + 1] = core[g1, g2, k], core_level[g1, g2, k]
        if x >= 0:
            hops[i, hc + 1], level[i, hc + 1] = x, top


@njit(cache=True)
def _walk(hops: np.ndarray, level: np.ndarray, state: np.ndarray, nbytes: np.ndarray, delay_ms: np.ndarray,
          ms_per_byte: np.ndarray, left: np.ndarray, wait: np.ndarray, nxt: np.ndarray, through: np.ndarray,
          horizon_ms: float, free: np.ndarray, n_levels: int, start: np.ndarray) -> None:
    """Walks messages through the links of their paths, level by level (`hops`, `level`: [n, hops]; each link's
    delay and transmission from the [state, link] tables; `left` holds each message's entry into its path and gets
    when it finished sending on its last link): at each level, the messages whose hop there they enter before the
    horizon, in order of entry (ties in the order given), each waiting until its link direction is free (`free`,
    kept across calls) and keeping it busy for its transmission (`wait` adds up the waits); one that enters at or
    after the horizon stops there (`through` false, `nxt` that hop). Where `start` [3, n, hops] is not empty, it
    gets each walked hop's entry, start and end of sending."""
    n, h = hops.shape
    before = np.zeros((n, h))  # from the path's entry to each hop's, without waits
    tx = np.zeros((n, h))
    count = np.zeros(n_levels + 1, np.int64)
    for i in range(n):
        acc = 0.0
        for k in range(h):
            before[i, k] = acc
            d = hops[i, k]
            if d >= 0:
                tx[i, k] = ms_per_byte[state[i], d >> 1] * nbytes[i]
                acc += delay_ms[state[i], d >> 1] + tx[i, k]
                if k >= nxt[i]:
                    count[level[i, k] + 1] += 1
    for lv in range(n_levels):
        count[lv + 1] += count[lv]
    pair_i = np.empty(count[n_levels], np.int64)
    pair_k = np.empty(count[n_levels], np.int64)
    fill = count.copy()
    for i in range(n):
        for k in range(nxt[i], h):
            if hops[i, k] >= 0:
                j = fill[level[i, k]]
                pair_i[j], pair_k[j] = i, k
                fill[level[i, k]] += 1
    enter = np.empty(n)
    at = np.empty(n, np.int64)
    for lv in range(n_levels):
        m = 0
        for j in range(count[lv], count[lv + 1]):
            i, k = pair_i[j], pair_k[j]
            if not through[i]:
                continue
            e = left[i] + before[i, k] + wait[i]
            if e >= horizon_ms:  # entered after this call's horizon: a later call walks it on from here
                through[i] = False
                nxt[i] = k
            else:
                enter[m], at[m] = e, j
                m += 1
        if m == 0:
            continue
        for q in entry_order(enter[:m]):
            i, k = pair_i[at[q]], pair_k[at[q]]
            d = hops[i, k]
            w = free[d] - enter[q]
            if not w > 0.0:
                w = 0.0
            free[d] = enter[q] + w + tx[i, k]
            wait[i] += w
            if start.shape[1]:
                start[0, i, k], start[1, i, k], start[2, i, k] = enter[q], enter[q] + w, free[d]
    for i in range(n):
        if not through[i]:
            continue
        for k in range(h - 1, -1, -1):
            if hops[i, k] >= 0:
                left[i] = left[i] + before[i, k] + tx[i, k] + wait[i]
                break
