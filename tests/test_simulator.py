"""The simulator: exact timelines computed by hand, batching, overload, determinism, conservation."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.records import RecordWriter, read_records
from scheduler.core import policy_index
from scheduler.profiles import load_profiles
from scheduler.system import build_system
from simulator.engine import SimConfig, Simulation
from topologies import load_topology
from workload.arrivals import RateSchedule, generate_trace
from workload.trace import Trace

# Radio: 2 ms one way, 10 Mbit/s, so a 1250-byte frame takes 1 ms to send and a 1000-byte answer 0.8 ms.
# The cluster sits at the antenna itself: no path delay.
ONE_SITE = """
name: one
sites:
  - {name: a1, layer: antenna, radio: {delay_ms: 2, bw_mbps: 10}, compute: {cpu_cores: 4}}
links: []
deployments:
  - {site: a1, variant: VARIANT, replicas: 1}
"""


def make_trace(starts_s: list[float], duration_s: float, max_delay_ms: float = 1000.0) -> Trace:
    n = len(starts_s)
    return Trace(
        stream_id=np.arange(n), antenna=np.array(["a1"] * n, dtype=object), start_s=np.array(starts_s),
        duration_s=np.full(n, duration_s), app=np.array(["app"] * n, dtype=object), fps=np.ones(n),
        frame_bytes=np.full(n, 1250), max_delay_ms=np.full(n, max_delay_ms), min_accuracy=np.zeros(n),
        task=np.array(["object-detection"] * n, dtype=object))


def run_records(system, trace, config, seed=1, policy="closest", physics=None) -> dict[str, np.ndarray]:
    recs: list[dict] = []
    sim = Simulation(system, trace, config, seed=seed, record_sink=recs.append, physics=physics)
    sim.run(policy_index(policy))
    cat = {k: np.concatenate([r[k] for r in recs]) for k in recs[0]}
    order = np.lexsort((cat["stream_id"], cat["t_send_ms"]))
    return {k: v[order] for k, v in cat.items()}


def one_site(write_yaml, test_profile, variant: str):
    topo = load_topology(write_yaml("one.yaml", ONE_SITE.replace("VARIANT", variant)))
    return build_system(topo, load_profiles(test_profile))


def test_batching_timeline_by_hand(write_yaml, test_profile) -> None:
    # Batch size 4, batches of 1/3 take 10/14 ms, W = 5 ms. Frames reach the worker at 3, 4, 5 and 13 ms:
    # the first batch opens at 3, closes at 3 + 5 = 8 with three frames and ends at 22; the next opens when
    # the replica is free (22), waits until 27 and ends at 37. Answers take 2 + 0.8 ms back, the radio sending one
    # at a time: the three answers of the first batch leave it 0.8 ms apart.
    system = one_site(write_yaml, test_profile, "fast-cpu-b4")
    rec = run_records(system, make_trace([0.0, 0.001, 0.002, 0.010], 1.5), SimConfig(max_batch_delay_ms=5.0))
    assert rec["t_send_ms"] == pytest.approx([0, 1, 2, 10, 1000, 1001, 1002, 1010])
    assert rec["t_sched_ms"] == pytest.approx(rec["t_send_ms"] + 3.0)
    assert rec["t_worker_ms"] == pytest.approx(rec["t_send_ms"] + 3.0)
    assert rec["t_infer_start_ms"] == pytest.approx([8, 8, 8, 27, 1008, 1008, 1008, 1027])
    assert rec["t_infer_end_ms"] == pytest.approx([22, 22, 22, 37, 1022, 1022, 1022, 1037])
    assert rec["batch_size"].tolist() == [3, 3, 3, 1, 3, 3, 3, 1]
    assert rec["t_response_ms"] == pytest.approx([24.8, 25.6, 26.4, 39.8, 1024.8, 1025.6, 1026.4, 1039.8])
    assert set(rec["outcome"]) == {"ontime"}
    assert set(rec["cluster"]) == {"a1"} and set(rec["variant"]) == {"fast-cpu-b4"}


def test_full_queue_rejects_and_late_answers_fail(write_yaml, test_profile) -> None:
    # One replica taking 100 ms per frame, one queued frame at most. Frames arrive at 3, 4, 5 ms:
    # 3 runs at once (answer 105.8), 4 waits (runs 103..203, answer 205.8 > 200: failed), 5 finds the
    # queue full and is rejected.
    system = one_site(write_yaml, test_profile, "slow-cpu-b1")
    rec = run_records(system, make_trace([0.0, 0.001, 0.002], 0.5, max_delay_ms=200.0),
                      SimConfig(queue_limit_per_replica=1, max_batch_delay_ms=0.0))
    assert rec["outcome"].tolist() == ["ontime", "failed", "rejected"]
    assert rec["reason"].tolist() == ["", "deadline", "queue-full"]
    assert rec["t_response_ms"][:2] == pytest.approx([105.8, 205.8])
    assert np.isnan(rec["t_infer_start_ms"][2])


def test_infeasible_stream_is_rejected_with_its_reason(write_yaml, test_profile) -> None:
    system = one_site(write_yaml, test_profile, "fast-cpu-b1")
    rec = run_records(system, make_trace([0.0], 3.0, max_delay_ms=10.0), SimConfig())
    assert rec["outcome"].tolist() == ["rejected"] * 3
    assert set(rec["reason"]) == {"delay"}


def test_window_boundaries_do_not_change_the_timeline(write_yaml, test_profile) -> None:
    system = one_site(write_yaml, test_profile, "fast-cpu-b4")
    trace = make_trace(list(np.linspace(0, 0.9, 40)), 3.0)
    a = run_records(system, trace, SimConfig(window_s=1.0, max_batch_delay_ms=5.0))
    b = run_records(system, trace, SimConfig(window_s=0.013, max_batch_delay_ms=5.0))
    for col in ("t_infer_start_ms", "t_infer_end_ms", "t_response_ms", "batch_size"):
        assert a[col] == pytest.approx(b[col])


@pytest.fixture(scope="module")
def full_edge():
    return build_system(load_topology("full-edge"), load_profiles())


def _full_edge_run(system, seed: int, policy: str = "random-proportional-latency"):
    trace = generate_trace(system.antennas, RateSchedule.constant(30), 30, np.random.default_rng(7))
    return trace, run_records(system, trace, SimConfig(duration_s=60), seed=seed, policy=policy)


def test_same_seed_same_records_other_seed_differs(full_edge) -> None:
    _, a = _full_edge_run(full_edge, seed=3)
    _, b = _full_edge_run(full_edge, seed=3)
    _, c = _full_edge_run(full_edge, seed=4)
    for col in a:
        if a[col].dtype == object:
            assert (a[col] == b[col]).all()
        else:
            np.testing.assert_array_equal(a[col], b[col])
    assert not np.allclose(a["t_response_ms"], c["t_response_ms"], equal_nan=True)


def test_every_query_is_accounted_and_ordered(full_edge) -> None:
    trace, rec = _full_edge_run(full_edge, seed=1, policy="least-impedance")
    assert len(rec["stream_id"]) == trace.expected_queries(until_s=60)
    served = rec["outcome"] != "rejected"
    stages = [rec[c][served] for c in ("t_send_ms", "t_sched_ms", "t_worker_ms", "t_infer_start_ms",
                                       "t_infer_end_ms", "t_response_ms")]
    for earlier, later in zip(stages, stages[1:], strict=False):
        assert (later >= earlier).all()
    budget = trace.max_delay_ms[np.searchsorted(trace.stream_id, rec["stream_id"])]
    on_time = rec["outcome"] == "ontime"
    assert (rec["t_response_ms"][on_time] - rec["t_send_ms"][on_time] <= budget[on_time]).all()
    assert (rec["t_response_ms"][rec["outcome"] == "failed"] - rec["t_send_ms"][rec["outcome"] == "failed"]
            > budget[rec["outcome"] == "failed"]).all()


def test_records_round_trip_through_csv(full_edge, tmp_path) -> None:
    trace = generate_trace(full_edge.antennas, RateSchedule.constant(10), 10, np.random.default_rng(2))
    path = tmp_path / "records.csv"
    with RecordWriter(path) as w:
        sim = Simulation(full_edge, trace, SimConfig(duration_s=15), seed=1, record_sink=w.write)
        sim.run(policy_index("closest"))
    table = read_records(path)
    assert table.num_rows == sim.queries_done == trace.expected_queries(until_s=15)
    counts = sim.tally.counts.sum(axis=(0, 1))
    outcomes = table.column("outcome").to_pylist()
    assert [outcomes.count(o) for o in ("ontime", "failed", "rejected")] == counts.tolist()


def test_exact_timeline_on_tiny_yaml_by_hand() -> None:
    # tiny.yaml with the provisional profile: a stream needing accuracy 0.5 can only use yolov3-cpu-b8
    # in the cloud, 25 ms from ant1 over two 100 Mbit/s links. A 12500-byte frame: radio 2 ms + 1 ms
    # transmission (t_sched 3), path 25 ms + 2 x 1 ms (worker at 30); the batch of B = 8 waits W = 2 ms
    # for company (starts 32), a batch of 1 takes 180 ms + 8 ms/MB x 0.0125 MB (ends 212.1); the 1000-byte
    # answer takes 25 + 2 x 0.08 and 2 + 0.08 ms back: 239.34 ms after sending.
    from scheduler.profiles import PROVISIONAL_PROFILE

    system = build_system(load_topology("tiny"), load_profiles(PROVISIONAL_PROFILE))
    trace = make_trace([0.0], 1.5, max_delay_ms=2000.0)
    trace = Trace(**{**trace.__dict__, "antenna": np.array(["ant1"], dtype=object),
                     "frame_bytes": np.array([12500]), "min_accuracy": np.array([0.5])})
    rec = run_records(system, trace, SimConfig(max_batch_delay_ms=2.0))
    assert rec["cluster"].tolist() == ["cloud", "cloud"] and set(rec["variant"]) == {"yolov3-cpu-b8"}
    first = {k: v[0] for k, v in rec.items()}
    assert first["t_sched_ms"] == pytest.approx(3.0)
    assert first["t_worker_ms"] == pytest.approx(30.0)
    assert first["t_infer_start_ms"] == pytest.approx(32.0)
    assert first["t_infer_end_ms"] == pytest.approx(212.1)
    assert first["t_response_ms"] == pytest.approx(239.34)
    assert rec["t_response_ms"][1] == pytest.approx(1239.34)
    assert rec["outcome"].tolist() == ["ontime", "ontime"]
