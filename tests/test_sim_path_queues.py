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
from simulator.paths import PathQueues, _levels
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


def test_each_path_crosses_its_links_in_order_at_rising_levels() -> None:
    system = build_system(load_topology("full-edge"), load_profiles())
    topo, timeline = system.topology, SystemTimeline.build(system, None)
    up, down = PathQueues(timeline, up=True), PathQueues(timeline, up=False)
    a1, cloud, co1, here = (system.antenna_index("ant1"), _resource(system, "cloud"), _resource(system, "co1"),
                            _resource(system, "ant1"))
    want = [_direction(topo, "ant1", "co1"), _direction(topo, "co1", "dc1"), _direction(topo, "dc1", "cloud")]
    rest = [-1] * (up.hops.shape[-1] - 3)  # the longest paths: across the hierarchy, ant1 to a resource at ant3
    assert up.hops.shape[-1] == 6
    assert up.hops[a1, cloud].tolist() == want + rest and up.level[a1, cloud].tolist() == [0, 1, 2] + rest
    back = [_direction(topo, "cloud", "dc1"), _direction(topo, "dc1", "co1"), _direction(topo, "co1", "ant1")]
    assert down.hops[a1, cloud].tolist() == back + rest
    assert up.hops[a1, co1].tolist() == [want[0]] + [-1] * 5 and up.level[a1, co1].tolist() == [0] + [-1] * 5
    assert (up.hops[a1, here] == -1).all()  # a resource at the antenna's own site: no path
    # dc1 -> co1 is the first link down from dc1 and the second from the cloud: walked after cloud -> dc1, and the
    # levels rise along every path
    dc1 = _resource(system, "dc1")
    assert down.hops[a1, dc1].tolist()[:2] == back[1:]
    assert down.level[a1, dc1, 0] > down.level[a1, cloud, 0]
    for q in (up, down):
        both = (q.hops[..., 1:] >= 0) & (q.hops[..., :-1] >= 0)
        assert (np.diff(q.level, axis=-1)[both] > 0).all() and both.any()


def test_levels_fall_back_to_positions_where_the_paths_make_a_cycle() -> None:
    hops = np.array([[[0, 2, -1], [2, 0, 4]]])  # 0 before 2 on one path, 2 before 0 on the other
    assert _levels(hops, 6).tolist() == [[[0, 1, -1], [0, 1, 2]]]
    assert _levels(np.array([[[0, 2, -1], [2, 4, -1]]]), 6).tolist() == [[[0, 1, -1], [1, 2, -1]]]


def test_two_antennas_frames_wait_for_each_other_on_the_link_they_share() -> None:
    """ant1 and ant2 hang off co1 by equal links (1 ms, 1 Gbit/s); their frames to dc1 meet on co1 -> dc1
    (4 ms, 1 Gbit/s). By hand: both enter co1 -> dc1 at 1 + tx; the second (in the order given) waits the first's
    transmission there; a third, from ant1 0.1 ms later, waits on ant1 -> co1 for the first and on co1 -> dc1 for
    both; ant2's frame to co1, given after its frame to dc1, waits for it on ant2 -> co1 and nowhere else."""
    system = build_system(load_topology("full-edge"), load_profiles())
    q = PathQueues(SystemTimeline.build(system, None), up=True)
    a1, a2 = system.antenna_index("ant1"), system.antenna_index("ant2")
    dc1, co1 = _resource(system, "dc1"), _resource(system, "co1")
    nbytes = np.full(4, 40_000.0)
    tx = 40_000 * 8 / 1e6  # ms at 1 Gbit/s
    wait = q.waits(np.array([a1, a2, a1, a2]), np.array([dc1, dc1, dc1, co1]), nbytes,
                   np.array([0.0, 0.0, 0.1, 0.0]), np.zeros(4, dtype=np.int64), horizon_ms=np.inf)
    # third: ant1 -> co1 free at tx, entered at 0.1: waits tx - 0.1; it reaches co1 -> dc1 at 1 + 2 tx, when the
    # link is busy until 1 + 3 tx (first, then second): waits tx more
    assert wait == pytest.approx([0.0, tx, (tx - 0.1) + tx, tx], abs=1e-9)


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
