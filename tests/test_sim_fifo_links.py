"""Links keep order in the simulator (simulator.links): by hand, against a brute force across windows, and in a
whole simulation, where no message overtakes another on its antenna's radio or on its path."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler.core import policy_index
from scheduler.profiles import load_profiles
from scheduler.system import build_system
from simulator.batching import serve_order
from simulator.engine import SimConfig, Simulation
from simulator.links import FifoLinks, entry_order
from topologies import load_topology
from workload.arrivals import RateSchedule, generate_trace


def test_order_by_hand() -> None:
    links = FifoLinks()
    # Link 0: entered at 0, 1, 2 with dues 10, 5, 12 -> 10, 10, 12; link 1 is on its own; an infinite due (a link
    # that is down) takes no part.
    out = links.order(np.array([0, 0, 1, 0, 0]), np.array([0.0, 1.0, 1.5, 2.0, 2.5]),
                      np.array([10.0, 5.0, 3.0, 12.0, np.inf]), horizon_ms=3.0)
    assert out.tolist() == [10.0, 10.0, 3.0, 12.0, np.inf]
    # The next call enters from 3 on: link 0's latest due before the horizon (12) still holds, link 1's (3) is
    # over and dropped.
    assert sorted(zip(links.base_link.tolist(), links.base_due_ms.tolist(), strict=True)) == [(0, 12.0)]
    assert len(links.link) == 0  # nothing entered after the horizon
    out = links.order(np.array([0, 1, 0]), np.array([3.0, 3.0, 13.0]), np.array([4.0, 3.5, 14.0]), horizon_ms=6.0)
    assert out.tolist() == [12.0, 3.5, 14.0]


def test_carried_entries_after_the_horizon_are_met_in_entry_order() -> None:
    links = FifoLinks()
    # A message that entered after the horizon (at 8, due 20) holds back a later call's message entering after it
    # (at 9), not one entering before it (at 7).
    links.order(np.array([0, 0]), np.array([1.0, 8.0]), np.array([2.0, 20.0]), horizon_ms=5.0)
    out = links.order(np.array([0, 0]), np.array([7.0, 9.0]), np.array([7.5, 9.5]), horizon_ms=10.0)
    assert out.tolist() == [7.5, 20.0]


def test_transmission_queueing_by_hand() -> None:
    links = FifoLinks()
    # Three 0.8 ms transmissions entering link 0 at 0, 0.1 and 0.2, each 5 ms of delay after it: idle dues 5.8,
    # 5.9 and 6.0. The second waits 0.7 for the first (sent 0.8-1.6), the third 1.4 (sent 1.6-2.4). Link 1's
    # message is on its own.
    out = links.order(np.array([0, 0, 1, 0]), np.array([0.0, 0.1, 0.15, 0.2]), np.array([5.8, 5.9, 5.95, 6.0]),
                      horizon_ms=1.0, tx_ms=np.array([0.8, 0.8, 0.8, 0.8]))
    np.testing.assert_allclose(out, [5.8, 6.6, 5.95, 7.4])
    # Across the horizon: link 0 is free at 2.4 and its latest due is 7.4 (link 1: 0.95 and 5.95). A message
    # entering at 1.5 waits 0.9 (sent 2.4-3.2); one entering at 3.0 with a short draw waits 0.2 (sent 3.2-4.0, due
    # 4.2) and still leaves after it.
    kept = sorted(zip(links.base_link.tolist(), links.base_free_ms.tolist(), links.base_due_ms.tolist(), strict=True))
    np.testing.assert_allclose(kept, [(0, 2.4, 7.4), (1, 0.95, 5.95)])
    out = links.order(np.array([0, 0]), np.array([1.5, 3.0]), np.array([7.3, 4.0]), horizon_ms=4.0,
                      tx_ms=np.array([0.8, 0.8]))
    np.testing.assert_allclose(out, [8.2, 8.2])
    # Without transmission times the same entries keep order only.
    out = FifoLinks().order(np.array([0, 0, 1, 0]), np.array([0.0, 0.1, 0.15, 0.2]),
                            np.array([5.8, 5.9, 5.95, 6.0]), horizon_ms=1.0)
    assert out.tolist() == [5.8, 5.9, 5.95, 6.0]


def _brute_force(link: np.ndarray, enter: np.ndarray, due: np.ndarray, tx: np.ndarray | None = None) -> np.ndarray:
    """Each link's messages one after the other in entry order (ties in index order): wait while the link sends
    the ones before, then keep order."""
    tx = np.zeros(len(link)) if tx is None else tx
    out = due.copy()
    for key in np.unique(link):
        free, last = -np.inf, -np.inf
        for i in np.flatnonzero(link == key)[np.argsort(enter[link == key], kind="stable")]:
            wait = max(free - enter[i], 0.0)
            free = enter[i] + wait + tx[i]
            last = max(last, due[i] + wait)
            out[i] = last
    return out


def _in_calls(link: np.ndarray, enter: np.ndarray, due: np.ndarray, call: np.ndarray, edges: np.ndarray,
              tx: np.ndarray | None = None, shuffle: np.random.Generator | None = None) -> np.ndarray:
    """Returns the dues one FifoLinks gives when entry i comes in call `call[i]`, whose horizon is
    `edges[call + 1]` (each call's entries in index order, or shuffled)."""
    links, got = FifoLinks(), np.empty(len(link))
    for c in range(len(edges) - 1):
        m = np.flatnonzero(call == c)
        m = m if shuffle is None else shuffle.permutation(m)
        got[m] = links.order(link[m], enter[m], due[m], horizon_ms=edges[c + 1],
                             tx_ms=None if tx is None else tx[m])
    return got


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_transmission_queueing_across_windows_is_exact_before_the_horizon(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 800
    link = rng.integers(0, 3, n)
    edges = np.array([0.0, 25.0, 50.0, 75.0, 100.0])
    call = rng.integers(0, 4, n)
    # About 2.7 messages per ms per link of 0.05-0.3 ms each: links about 0.5 busy, queues build up and drain
    # (a link's due at or before a horizon is dropped from what is carried).
    enter = edges[call] + rng.uniform(0, 25, n) + np.where(rng.random(n) < 0.2, rng.uniform(0, 10, n), 0.0)
    tx = rng.uniform(0.05, 0.3, n)
    due = enter + tx + rng.uniform(0, 5, n)
    got = _in_calls(link, enter, due, call, edges, tx, shuffle=rng)
    want = _brute_force(link, enter, due, tx)
    assert (want - due).mean() > 0.1  # queueing shows
    before = enter < edges[call + 1]
    np.testing.assert_allclose(got[before], want[before], rtol=0, atol=1e-9)
    after = ~before
    assert after.sum() > 10
    assert (got[after] >= due[after]).all() and (got[after] <= want[after] + 1e-9).all()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_entries_across_the_horizon_are_exact_before_it_and_bounded_after(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 800
    link = rng.integers(0, 4, n)
    # Entries spill up to 30 ms past their call's horizon (answers still on their path at a window's end).
    edges = np.array([0.0, 25.0, 50.0, 75.0, 100.0])
    call = np.minimum(rng.integers(0, 4, n), 3)
    enter = edges[call] + rng.uniform(0, 25, n) + np.where(rng.random(n) < 0.3, rng.uniform(0, 30, n), 0.0)
    due = enter + rng.uniform(0, 15, n)
    got = _in_calls(link, enter, due, call, edges)
    want = _brute_force(link, enter, due)
    before = enter < edges[call + 1]
    np.testing.assert_array_equal(got[before], want[before])
    after = ~before
    assert after.sum() > 100
    assert (got[after] >= due[after]).all() and (got[after] <= want[after]).all()
    assert (got[after] < want[after]).any()  # the one-way approximation shows


def test_entry_order_is_a_stable_sort_on_edge_cases() -> None:
    for enter in ([], [3.0], [-np.inf, -np.inf], [5.0, 5.0, 5.0, 1.0], [0.0, 1e9, 1.0, -np.inf, 1e9, 0.5],
                  list(np.repeat([7.0, 2.0, 9.0], 50))):
        e = np.array(enter, dtype=float)
        np.testing.assert_array_equal(entry_order(e), np.argsort(e, kind="stable"))


def test_entry_order_falls_back_to_a_merge_sort_on_a_crowded_bucket() -> None:
    """An outlier puts the other 2,000 keys, given in falling order with ties, in one bucket: the insertions would
    shift about 2 million times; the order is the stable one either way."""
    e = np.concatenate([np.repeat(np.linspace(1.0, 0.0, 1000), 2), [1e9, -np.inf, 0.5]])
    np.testing.assert_array_equal(entry_order(e), np.argsort(e, kind="stable"))


def test_serve_order_is_the_lexsort_it_replaces() -> None:
    """The batcher's window order (simulator.batching.serve_order): by resource, arrival, admitted first."""
    rng = np.random.default_rng(0)
    for n in range(3):  # empty, one, two queries
        args = (np.zeros(n, np.int64), np.arange(n, dtype=float)[::-1].copy(), np.arange(n) % 2 == 1)
        np.testing.assert_array_equal(serve_order(*args, 1), np.lexsort((~args[2], args[1], args[0])))
    for _ in range(300):
        n, n_res = int(rng.integers(0, 400)), int(rng.integers(1, 6))
        res = rng.integers(0, n_res, n)
        arrive = np.round(rng.random(n) * rng.choice([1.0, 10.0, 1000.0]), 1)  # ties, within and across resources
        admitted = rng.random(n) < 0.3
        np.testing.assert_array_equal(serve_order(res, arrive, admitted, n_res),
                                      np.lexsort((~admitted, arrive, res)))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_windows_agree_with_one_pass_over_everything(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 600
    link = rng.integers(0, 5, n)
    enter = np.sort(rng.uniform(0, 100, n))
    due = enter + rng.uniform(0, 15, n)
    # Entries of one call are in no particular order; each call holds those entering in [edge, next edge).
    edges = np.array([0.0, 20.0, 45.0, 70.0, 100.0])
    links, got = FifoLinks(), np.empty(n)
    for lo, hi in zip(edges, edges[1:], strict=False):
        m = np.flatnonzero((enter >= lo) & (enter < hi))
        m = rng.permutation(m)
        got[m] = links.order(link[m], enter[m], due[m], horizon_ms=hi)
    np.testing.assert_array_equal(got, _brute_force(link, enter, due))


@pytest.fixture(scope="module")
def full_edge_runs():
    system = build_system(load_topology("full-edge"), load_profiles())
    trace = generate_trace(system.antennas, RateSchedule.constant(60), 20, np.random.default_rng(5))
    out = {}
    for fifo in (True, False):
        recs: list = []
        sim = Simulation(system, trace, SimConfig(duration_s=20, fifo_links=fifo), seed=2, record_sink=recs.append)
        sim.run(policy_index("least-impedance"))
        out[fifo] = {k: np.concatenate([r[k] for r in recs]) for k in recs[0]}
    return out


def _overtaken(rec: dict[str, np.ndarray], group: np.ndarray, by: np.ndarray, then: np.ndarray) -> int:
    """How many messages leave (`then`) earlier than one of the same group that entered (`by`) before them."""
    order = np.lexsort((by, group))
    g, t = group[order], then[order]
    count = 0
    for key in np.unique(g):
        seq = t[g == key]
        count += int((seq < np.maximum.accumulate(seq)).sum())
    return count


def test_no_query_overtakes_another_on_its_radio_or_path(full_edge_runs) -> None:
    for fifo, rec in full_edge_runs.items():
        served = np.isfinite(rec["t_worker_ms"])
        r = {k: v[served] for k, v in rec.items()}
        ant = r["antenna"].astype(str)
        path = np.char.add(np.char.add(ant, "/"), np.char.add(r["cluster"].astype(str), r["variant"].astype(str)))
        radio = _overtaken(r, ant, r["t_send_ms"], r["t_sched_ms"])
        on_path = _overtaken(r, path, r["t_sched_ms"], r["t_worker_ms"])
        if fifo:
            assert radio == 0 and on_path == 0
        else:  # independent draws: jitter lets messages overtake (the check can fail)
            assert radio > 1000 and on_path > 100


def test_keeping_order_makes_legs_longer_not_shorter(full_edge_runs) -> None:
    fifo, free = full_edge_runs[True], full_edge_runs[False]
    up = {k: np.nanmean(r["t_sched_ms"] - r["t_send_ms"]) for k, r in ((True, fifo), (False, free))}
    # full-edge's radios: 4-10 ms with 1-2.5 ms of jitter; lambda 60's load builds up over these 20 s (0.27 ms more
    # on average here).
    assert up[True] > up[False] + 0.1
    assert len(fifo["t_send_ms"]) == len(free["t_send_ms"])


@pytest.mark.parametrize("queueing", [True, False])
def test_a_radio_sends_one_frame_at_a_time(queueing: bool) -> None:
    """Radios without jitter at 100 Mbit/s (a 40 kB frame takes 3.2 ms): with queueing, the frames of one antenna
    reach its scheduler at least their own transmission time apart, as they leave a link that sends one at a
    time; without it, frames sent close together arrive closer than that (the check can fail)."""
    system = build_system(load_topology("full-edge"), load_profiles())
    system.radio_dev_ms[:] = 0.0
    system.radio_ms_per_byte[:] = 8e-3 / 100.0
    trace = generate_trace(system.antennas, RateSchedule.constant(20), 20, np.random.default_rng(3))
    recs: list = []
    sim = Simulation(system, trace, SimConfig(duration_s=20, radio_queueing=queueing), seed=4,
                     record_sink=recs.append)
    sim.run(policy_index("least-impedance"))
    rec = {k: np.concatenate([r[k] for r in recs]) for k in recs[0]}
    served = np.isfinite(rec["t_sched_ms"])
    tx_ms = trace.frame_bytes[np.searchsorted(trace.stream_id, rec["stream_id"])] * 8e-3 / 100.0
    short, frames = 0, 0
    for ant in np.unique(rec["antenna"][served]):
        m = np.flatnonzero(served & (rec["antenna"] == ant))
        m = m[np.argsort(rec["t_sched_ms"][m], kind="stable")]
        gaps = np.diff(rec["t_sched_ms"][m])
        short += int((gaps < tx_ms[m[1:]] - 1e-6).sum())
        frames += len(m)
    assert frames > 3000
    assert short == 0 if queueing else short > 100


def test_the_links_carry_the_wire_ratio_times_the_payload() -> None:
    """Radios without jitter or queue: a frame reaches its scheduler its radio's delay plus the transmission of
    wire_ratio x its payload after its send, the same frames under 1.0 and 1.25 (the draws are the same)."""
    system = build_system(load_topology("full-edge"), load_profiles())
    system.radio_dev_ms[:] = 0.0
    trace = generate_trace(system.antennas, RateSchedule.constant(10), 10, np.random.default_rng(3))
    up: dict[float, np.ndarray] = {}
    for ratio in (1.0, 1.25):
        recs: list = []
        Simulation(system, trace, SimConfig(duration_s=10, radio_queueing=False, wire_ratio=ratio), seed=4,
                   record_sink=recs.append).run(policy_index("closest"))
        rec = {k: np.concatenate([r[k] for r in recs]) for k in recs[0]}
        order = np.lexsort((rec["query"], rec["stream_id"]))
        rec = {k: v[order] for k, v in rec.items()}
        served = np.isfinite(rec["t_sched_ms"])
        ant = np.array([system.antenna_index(a) for a in rec["antenna"][served]])
        nbytes = trace.frame_bytes[np.searchsorted(trace.stream_id, rec["stream_id"][served])]
        lag = rec["t_sched_ms"][served] - rec["t_send_ms"][served]
        assert lag == pytest.approx(system.radio_ms[ant] + system.radio_ms_per_byte[ant] * nbytes * ratio, abs=1e-6)
        up[ratio] = lag
    assert len(up[1.0]) == len(up[1.25]) > 100 and (up[1.25] > up[1.0]).all()


@pytest.mark.parametrize("ratio", [0.9, float("nan"), float("inf")])
def test_a_wire_ratio_below_one_is_refused(ratio: float) -> None:
    with pytest.raises(ValueError, match="wire_ratio .*: must be a finite number >= 1"):
        SimConfig(wire_ratio=ratio)


def test_the_paths_carry_the_wire_ratio_and_the_workers_the_payload() -> None:
    """Links without order or queues, the same draws under 1.0 and 1.25: a frame's path (scheduler to worker) takes
    the transmission of 0.25 x its payload longer under 1.25; a batch of one takes the same time under both (the
    worker's input cost is the payload's)."""
    system = build_system(load_topology("full-edge"), load_profiles())
    trace = generate_trace(system.antennas, RateSchedule.constant(10), 10, np.random.default_rng(3))
    index = {r.name: j for j, r in enumerate(system.resources)}
    runs = {}
    for ratio in (1.0, 1.25):
        recs: list = []
        Simulation(system, trace, SimConfig(duration_s=10, fifo_links=False, wire_ratio=ratio), seed=4,
                   record_sink=recs.append).run(policy_index("least-impedance"))
        rec = {k: np.concatenate([r[k] for r in recs]) for k in recs[0]}
        at = np.isfinite(rec["t_worker_ms"])
        runs[ratio] = {(int(s), int(q)): (a, index[f"{v}@{c}"], w - sch, e - b if n == 1 else None)
                       for s, q, a, v, c, sch, w, b, e, n in zip(
                           *(rec[k][at] for k in ("stream_id", "query", "antenna", "variant", "cluster", "t_sched_ms",
                                                  "t_worker_ms", "t_infer_start_ms", "t_infer_end_ms", "batch_size")),
                           strict=True)}
    both = [k for k in sorted(set(runs[1.0]) & set(runs[1.25])) if runs[1.0][k][:2] == runs[1.25][k][:2]]
    assert len(both) > 100
    ant = np.array([system.antenna_index(runs[1.0][k][0]) for k in both])
    res = np.array([runs[1.0][k][1] for k in both])
    nbytes = trace.frame_bytes[np.searchsorted(trace.stream_id, [k[0] for k in both])]
    longer = np.array([runs[1.25][k][2] - runs[1.0][k][2] for k in both])
    assert longer == pytest.approx(system.path_ms_per_byte[ant, res] * nbytes * 0.25, abs=1e-6)
    ones = [k for k in both if runs[1.0][k][3] is not None and runs[1.25][k][3] is not None]
    assert len(ones) > 100
    assert [runs[1.25][k][3] for k in ones] == pytest.approx([runs[1.0][k][3] for k in ones], abs=1e-9)
