"""Queues on the paths' links in the simulator (simulator.paths): each path's link directions in order and walked in
a topological order, waits by hand where two antennas' frames meet on one link, and in a whole simulation a narrowed
link sends one frame at a time, across antennas, as the testbed's wire does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scheduler.core import policy_index
from scheduler.profiles import load_profiles
from scheduler.system import build_system
from scheduler.timeline import SystemTimeline
from simulator.engine import SimConfig, Simulation
from simulator.paths import PathQueues, _core_levels
from topologies import load_topology
from workload.arrivals import RateSchedule, generate_trace

ROOT = Path(__file__).resolve().parents[1]


def _direction(topo, a: str, b: str) -> int:
    """The link direction id of crossing the link between sites a and b from a."""
    for i, lk in enumerate(topo.links):
        if (lk.a, lk.b) == (a, b):
            return 2 * i
        if (lk.a, lk.b) == (b, a):
            return 2 * i + 1
    raise KeyError((a, b))


def _resource(system, site: str) -> int:
    return next(r.index for r in system.resources if r.site == site)


def _path(q: PathQueues, ant: int, res: int) -> tuple[list[int], list[int]]:
    """One path's link directions and levels, the gaps (-1) of the factorised form left out."""
    hops, level = q.hops(np.array([ant]), np.array([res]))
    keep = hops[0] >= 0
    return hops[0][keep].tolist(), level[0][keep].tolist()


def test_each_path_crosses_its_links_in_order_at_rising_levels() -> None:
    system = build_system(load_topology("full-edge"), load_profiles())
    topo, timeline = system.topology, SystemTimeline.build(system, None)
    up, down = PathQueues(timeline, up=True), PathQueues(timeline, up=False)
    a1, cloud, co1, dc1, here = (system.antenna_index("ant1"), _resource(system, "cloud"), _resource(system, "co1"),
                                 _resource(system, "dc1"), _resource(system, "ant1"))
    want = [_direction(topo, "ant1", "co1"), _direction(topo, "co1", "dc1"), _direction(topo, "dc1", "cloud")]
    hops, levels = _path(up, a1, cloud)
    assert hops == want and levels == sorted(set(levels)) and levels[0] == 0
    back = [_direction(topo, "cloud", "dc1"), _direction(topo, "dc1", "co1"), _direction(topo, "co1", "ant1")]
    assert _path(down, a1, cloud)[0] == back
    assert _path(up, a1, co1)[0] == [want[0]] and _path(up, a1, here) == ([], [])  # no path at its own site
    # dc1 -> co1 is the first link down from dc1 and the second from the cloud: the same level on both paths
    from_dc1, from_cloud = _path(down, a1, dc1), _path(down, a1, cloud)
    assert from_dc1[0] == back[1:] and from_dc1[1][0] == from_cloud[1][1]
    # every path of every pair: levels rise along it, and a link direction has one level wherever it is crossed
    ants = np.repeat(np.arange(len(system.antennas)), system.n_resources)
    ress = np.tile(np.arange(system.n_resources), len(system.antennas))
    for q in (up, down):
        hops, level = q.hops(ants, ress)
        for h, lv in zip(hops, level, strict=True):
            assert np.all(np.diff(lv[h >= 0]) > 0)
        pairs = {(int(h), int(v)) for h, v in zip(hops[hops >= 0], level[hops >= 0], strict=True)}
        assert len(pairs) == len({h for h, _ in pairs})
        assert q.n_levels == q.top + 1


def test_core_levels_fall_back_to_positions_where_the_core_paths_make_a_cycle() -> None:
    core = np.array([[[0, 2, -1], [2, 0, 4]]])  # 0 before 2 on one path, 2 before 0 on the other
    levels, cyclic = _core_levels(core, 6)
    assert levels.tolist() == [[[1, 2, -1], [1, 2, 3]]] and cyclic
    levels, cyclic = _core_levels(np.array([[[0, 2, -1], [2, 4, -1]]]), 6)
    assert levels.tolist() == [[[1, 2, -1], [2, 3, -1]]] and not cyclic


def test_the_queues_of_a_large_topology_are_built_from_its_core() -> None:
    """10,000 antennas (100 central offices, 10 data centres): the tables are per antenna, per resource and per pair
    of core sites, nothing per antenna and resource."""
    import tempfile
    from pathlib import Path as P

    from topologies.synthetic import write_full_edge_like

    with tempfile.TemporaryDirectory() as d:
        topo = load_topology(write_full_edge_like(P(d) / "big.yaml", 10_000))
    system = build_system(topo, load_profiles())
    q = PathQueues(SystemTimeline.build(system, None), up=True)
    assert q.core.shape[:2] == (111, 111) and q.first.shape == (10_000,) and q.last.shape == (system.n_resources,)
    hops, _ = q.hops(np.array([0]), np.array([system.n_resources - 1]))
    assert (hops >= 0).sum() >= 2


@pytest.mark.parametrize("ratio", [1.0, 1.5])
def test_two_antennas_frames_wait_for_each_other_on_the_link_they_share(ratio: float) -> None:
    """ant1 and ant2 hang off co1 by equal links (1 ms, 1 Gbit/s); their frames to dc1 meet on co1 -> dc1
    (4 ms, 1 Gbit/s). By hand: both enter co1 -> dc1 at 1 + tx; the second (in the order given) waits the first's
    transmission there; a third, from ant1 0.1 ms later, waits on ant1 -> co1 for the first and on co1 -> dc1 for
    both; ant2's frame to co1, given after its frame to dc1, waits for it on ant2 -> co1 and nowhere else. Each
    transmission is of `ratio` x the payload (the wire's bytes)."""
    system = build_system(load_topology("full-edge"), load_profiles())
    q = PathQueues(SystemTimeline.build(system, None), up=True, wire_ratio=ratio)
    a1, a2 = system.antenna_index("ant1"), system.antenna_index("ant2")
    dc1, co1 = _resource(system, "dc1"), _resource(system, "co1")
    nbytes = np.full(4, 40_000.0)
    tx = 40_000 * ratio * 8 / 1e6  # ms at 1 Gbit/s
    out = q.advance(_flights([a1, a2, a1, a2], [dc1, dc1, dc1, co1], nbytes, [0.0, 0.0, 0.1, 0.0]), np.inf)
    # third: ant1 -> co1 free at tx, entered at 0.1: waits tx - 0.1; it reaches co1 -> dc1 at 1 + 2 tx, when the
    # link is busy until 1 + 3 tx (first, then second): waits tx more
    assert out["id"].tolist() == [0, 1, 2, 3]
    assert out["wait"] == pytest.approx([0.0, tx, (tx - 0.1) + tx, tx], abs=1e-9)
    # left its last link: the first at 1 + 2 tx (after ant1 -> co1's 1 ms and both transmissions), the others after
    # their waits; the fourth's path is ant2 -> co1 alone
    assert out["left"] == pytest.approx([1 + 2 * tx, 1 + 3 * tx, 0.1 + 1 + 2 * tx + (tx - 0.1) + tx, 2 * tx], abs=1e-9)


def _flights(ant: list[int], res: list[int], nbytes, enter: list[float]) -> dict[str, np.ndarray]:
    n = len(ant)
    return dict(id=np.arange(n), ant=np.array(ant), res=np.array(res), nbytes=np.asarray(nbytes, dtype=float),
                enter=np.array(enter), state=np.zeros(n, dtype=np.int64))


def test_a_message_entering_a_link_after_the_horizon_waits_for_the_next_calls_before_it(tmp_path: Path) -> None:
    """co1 -> dc1 at 20 Mbit/s. Call 1 (horizon 10): A, 200 kB from ant1, enters its path at 9.5 and co1 -> dc1 at
    12.1 (1.6 ms on ant1 -> co1, 1 ms on), after the horizon: it stays on its path. Call 2 (horizon 20): B, 10 kB
    from ant2, enters at 10 and co1 -> dc1 at 11.08, before A: B sends first (4 ms) and A waits for it, 2.98 ms.
    Decided in call 1, A would have waited for nothing and shared the link with B."""
    topo = load_topology(_narrowed(tmp_path))
    system = build_system(topo, load_profiles())
    q = PathQueues(SystemTimeline.build(system, None), up=True)
    a1, a2, dc1 = system.antenna_index("ant1"), system.antenna_index("ant2"), _resource(system, "dc1")
    first = q.advance(_flights([a1], [dc1], [200_000.0], [9.5]), 10.0)
    assert len(first["id"]) == 0 and q.pending_min("enter") == 9.5
    second = q.advance({**_flights([a2], [dc1], [10_000.0], [10.0]), "id": np.array([1])}, 20.0)
    assert second["id"].tolist() == [0, 1] and q.pending_min("enter") == np.inf
    assert second["wait"] == pytest.approx([2.98, 0.0], abs=1e-9)
    assert second["left"] == pytest.approx([11.08 + 4.0 + 80.0, 11.08 + 4.0], abs=1e-9)


def _narrowed(tmp_path: Path) -> Path:
    """full-edge without jitter, co1-dc1 at 20 Mbit/s."""
    text = (ROOT / "topologies" / "full-edge.yaml").read_text()
    text = text.replace("{a: co1, b: dc1, delay_ms: 4, delay_dev_ms: 0.5, bw_mbps: 1000}",
                        "{a: co1, b: dc1, delay_ms: 4, delay_dev_ms: 0, bw_mbps: 20}")
    for dev in ("0.2", "0.5", "3", "4", "1.0", "1.5", "2.0", "2.5"):
        text = text.replace(f"delay_dev_ms: {dev},", "delay_dev_ms: 0,")
    path = tmp_path / "full-edge-narrow.yaml"
    path.write_text(text.replace("name: full-edge\n", "name: full-edge-narrow\n"))
    return path


@pytest.mark.parametrize("queueing", [True, False])
def test_a_narrowed_path_link_sends_one_frame_at_a_time_across_antennas(tmp_path: Path, queueing: bool) -> None:
    """co1 -> dc1 at 20 Mbit/s, no jitter anywhere: with the paths' queues, frames of ant1 and ant2 to dc1 finish
    crossing it (their arrival at dc1 less its 4 ms) at least their own transmission time apart; without them,
    frames from the two antennas overlap on it (the check can fail)."""
    topo = load_topology(_narrowed(tmp_path))
    system = build_system(topo, load_profiles())
    assert float(np.max(system.net_dev_ms)) == 0.0 and float(np.max(system.radio_dev_ms)) == 0.0
    trace = generate_trace(system.antennas, RateSchedule.constant(20), 20, np.random.default_rng(5))
    recs: list = []
    sim = Simulation(system, trace, SimConfig(duration_s=20, path_queueing=queueing), seed=6, record_sink=recs.append)
    sim.run(policy_index("load-balancing"))
    rec = {k: np.concatenate([r[k] for r in recs]) for k in recs[0]}
    at_dc1 = rec["cluster"].astype(str) == "dc1"
    ants = np.isin(rec["antenna"].astype(str), ["ant1", "ant2"])
    m = np.flatnonzero(at_dc1 & ants & np.isfinite(rec["t_worker_ms"]))
    finish = rec["t_worker_ms"][m] - 4.0
    tx = trace.frame_bytes[np.searchsorted(trace.stream_id, rec["stream_id"][m])] * 8 / (20 * 1000.0)
    order = np.argsort(finish, kind="stable")
    gaps = np.diff(finish[order])
    short = int((gaps < tx[order][1:] - 1e-6).sum())
    assert len(m) > 200 and len(np.unique(rec["antenna"][m])) == 2
    assert short == 0 if queueing else short > 20


@pytest.mark.parametrize("policy", ["farthest", "closest"])
def test_no_link_direction_sends_two_messages_at_once_across_windows(policy: str) -> None:
    """The demonstration's events (metro links narrowed to 20 Mbit/s, the cloud cut off from 15 s to 40 s: messages
    resent seconds later), lambda 6 for 45 s: every send on every path link direction, gathered from every call of
    every window, starts after the one before it on that direction has ended, in the order they entered (queries
    and answers queue apart)."""
    from topologies.events import load_events
    from workload.args import Workload

    topo = load_topology("full-edge")
    system = build_system(topo, load_profiles())
    trace, _ = Workload(lambda_per_min="6", duration_s=45.0, seed=1, trace=None,
                        default_duration_s=45.0).build(system.antennas)
    sim = Simulation(system, trace, SimConfig(duration_s=45.0), seed=1,
                     events=load_events(ROOT / "examples" / "demo-full-edge.yaml", topo))
    for q in sim.path_queues.values():
        q.sends = []
    sim.run(policy_index(policy))
    assert all(q._pending is None for q in sim.path_queues.values())  # every message came off its path
    assert int(sim.tally.counts.sum()) == sim.queries_done
    assert sim.queries_done == sum(int(np.ceil((min(e, 45.0) - s) * f - 1e-9))
                                   for s, e, f in zip(trace.start_s, trace.end_s, trace.fps, strict=True))
    sends = [(d * 2 + int(up), *x) for up, q in sim.path_queues.items() for d, *x in q.sends]  # apart
    link, enter, start, end = (np.concatenate([x[j] for x in sends]) for j in range(4))
    overlaps, overtaken = 0, 0
    for d in np.unique(link):
        m = np.flatnonzero(link == d)
        m = m[np.argsort(start[m], kind="stable")]
        overlaps += int((start[m][1:] < end[m][:-1] - 1e-6).sum())
        overtaken += int((enter[m][1:] < enter[m][:-1] - 1e-6).sum())  # sent before one that entered earlier
    assert len(link) > 1000 and overlaps == 0 and overtaken == 0


@pytest.mark.parametrize("name", ["tiny", "dc-cloud", "co-dc-cloud", "full-edge"])
def test_the_factorised_hops_are_the_routes_links(name: str) -> None:
    """Every antenna-to-resource pair of every bundled topology, both ways: the hops `PathQueues.hops` gives are the
    link directions of `routes.links`, in order."""
    system = build_system(load_topology(name), load_profiles())
    topo, timeline = system.topology, SystemTimeline.build(system, None)
    ants = np.repeat(np.arange(len(system.antennas)), system.n_resources)
    ress = np.tile(np.arange(system.n_resources), len(system.antennas))
    for up in (True, False):
        hops, _ = PathQueues(timeline, up).hops(ants, ress)
        for a, r, h in zip(ants, ress, hops, strict=True):
            x, y = system.antennas[a], system.resources[r].site
            frm, to = (x, y) if up else (y, x)
            want, at = [], frm
            for lk in topo.routes.links(frm, to):
                want.append(_direction(topo, at, lk.other(at)))
                at = lk.other(at)
            assert h[h >= 0].tolist() == want, (name, up, x, y)


def test_a_link_at_two_levels_still_sends_one_message_at_a_time() -> None:
    """A cyclic core walks a link direction at each of its positions (levels 1 and 2 here): the second level's
    message, entering before the first level's ended its send, waits for it (taken position by position, so it is
    overtaken by one that entered after it), and no two sends overlap; a message entering at a time that is not
    finite is refused."""
    from simulator.paths import _walk

    hops = np.array([[0, -1], [2, 0]])  # direction 0 first on one path, second on the other
    level = np.array([[1, -1], [1, 2]])
    state, nbytes = np.zeros(2, np.int64), np.array([1000.0, 1000.0])
    delay_ms, ms_per_byte = np.array([[0.5, 0.5]]), np.array([[0.01, 0.01]])  # 10 ms per message per link
    left, wait = np.array([0.0, -10.8]), np.zeros(2)
    nxt, through, free = np.zeros(2, np.int64), np.ones(2, bool), np.full(4, -np.inf)
    start = np.full((3, 2, 2), np.nan)
    _walk(hops, level, state, nbytes, delay_ms, ms_per_byte, left, wait, nxt, through, np.inf, free, 3, start)
    # the second enters direction 0 at -10.8 + 10 + 0.5 = -0.3, before the first (at 0), but is walked a level
    # later: it waits until the first has sent, at 10 (overtaken), and the two sends do not overlap
    assert start[1, 0, 0] == 0.0 and start[2, 0, 0] == pytest.approx(10.0)
    assert start[0, 1, 1] == pytest.approx(-0.3) and start[1, 1, 1] == pytest.approx(10.0)
    assert wait.tolist() == pytest.approx([0.0, 10.3])
    system = build_system(load_topology("full-edge"), load_profiles())
    q = PathQueues(SystemTimeline.build(system, None), up=True)
    with pytest.raises(ValueError, match="not finite"):
        q.advance(_flights([0], [0], [1000.0], [np.nan]), 10.0)
