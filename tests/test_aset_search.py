"""The evidence tools behind ASET's goal: the clairvoyant oracle and its refinement, the failure breakdown and
the input-time what-if's profile copy (experiments/oracle_search.py, failure_sites.py, admission_whatif.py)."""

from __future__ import annotations

import numpy as np
import pytest

from experiments import admission_whatif, failure_sites, oracle_search
from scheduler.core import policy_index
from scheduler.profiles import load_profiles
from scheduler.system import build_system
from simulator.engine import SimConfig, Simulation
from topologies import load_topology
from training.rollout import EvalCase, run_static


@pytest.fixture(scope="module")
def full_edge():
    return build_system(load_topology("full-edge"), load_profiles(None))


def test_oracle_is_the_first_sweep_from_all_base_and_refine_chains_exactly(full_edge):
    """On a case where the greedy oracle leaves load-balancing: one sweep from all load-balancing makes the
    oracle's choices, a second never lowers the count, and the final sequence replays to its count."""
    cfg, _ = oracle_search.env_config(None)
    case = EvalCase(100.0, 1, 60.0)
    base = policy_index(oracle_search.BASE)
    make = lambda: oracle_search.agent_sim(full_edge, case, cfg)  # noqa: E731
    lb = oracle_search.ontime(run_static(full_edge, case.trace(full_edge), case, base, cfg.sim_window_s))
    sim = make()
    res = oracle_search.oracle(sim, cfg.sim_steps_per_decision, None, base, verify_reuse=True)
    first = oracle_search.ontime(sim)
    assert any(a != base for a in res["actions"]) and first > lb
    n = len(res["actions"])
    swept, one = oracle_search.refine(make, cfg.sim_steps_per_decision, [base] * n, base)
    assert one["actions"] == res["actions"] and oracle_search.ontime(swept) == first
    assert one["passes"][0]["start_ontime"] == lb
    refined, two = oracle_search.refine(make, cfg.sim_steps_per_decision, res["actions"], base, passes=2)
    p1, p2 = two["passes"]
    assert p1["start_ontime"] == first  # the sweep replays the oracle's sequence exactly
    assert first <= p1["end_ontime"] == p2["start_ontime"] <= p2["end_ontime"] == oracle_search.ontime(refined)
    replay = make()
    oracle_search.follow(replay, two["actions"], cfg.sim_steps_per_decision, base)
    assert oracle_search.ontime(replay) == p2["end_ontime"]


def test_refine_climbs_from_a_poor_sequence(full_edge):
    cfg, _ = oracle_search.env_config(None)
    case = EvalCase(60.0, 1, 40.0)
    closest = policy_index("closest")
    n = 8
    _, res = oracle_search.refine(lambda: oracle_search.agent_sim(full_edge, case, cfg), cfg.sim_steps_per_decision,
                                [closest] * n, policy_index(oracle_search.BASE))
    p = res["passes"][0]
    assert p["changed"] > 0 and p["end_ontime"] > p["start_ontime"]
    assert sum(a != closest for a in res["actions"]) == p["changed"]


def test_refine_refuses_an_empty_sequence(full_edge):
    cfg, _ = oracle_search.env_config(None)
    with pytest.raises(ValueError, match="empty"):
        oracle_search.refine(lambda: oracle_search.agent_sim(full_edge, EvalCase(60.0, 1, 10.0), cfg),
                           cfg.sim_steps_per_decision, [], policy_index("load-balancing"))


def test_refine_rejects_a_sequence_longer_than_the_episode(full_edge):
    cfg, _ = oracle_search.env_config(None)
    case = EvalCase(60.0, 1, 10.0)
    with pytest.raises(ValueError, match="ended before decision"):
        oracle_search.refine(lambda: oracle_search.agent_sim(full_edge, case, cfg), cfg.sim_steps_per_decision,
                           [1] * 5, policy_index("load-balancing"))


def test_admission_whatif_profile_copy_sets_only_the_key(tmp_path):
    from scheduler.profiles import PROVISIONAL_PROFILE, load_profiles

    path = admission_whatif.profile_with_frame_kb(PROVISIONAL_PROFILE, 60.0, tmp_path / "p.yaml")
    plain, counted = load_profiles(PROVISIONAL_PROFILE), load_profiles(path)
    assert counted.capacity_frame_kb == 60.0
    assert sorted(plain.variants) == sorted(counted.variants)
    for name, v in plain.variants.items():
        w = counted.variants[name]
        assert (w.batch_ms, w.input_ms_per_mb) == (v.batch_ms, v.input_ms_per_mb)
        assert w.capacity_qps == pytest.approx(
            v.batch_size * 1000.0 / (v.batch_ms[v.batch_size] + v.batch_size * v.input_ms_per_mb * 0.06))


def test_admission_whatif_profile_copy_under_input_time_accounting(tmp_path):
    from scheduler.profiles import INPUT_TIME, PROVISIONAL_PROFILE, load_profiles

    path = admission_whatif.profile_with_frame_kb(PROVISIONAL_PROFILE, 50.0, tmp_path / "p.yaml", INPUT_TIME)
    p = load_profiles(path)
    assert (p.load_accounting, p.capacity_frame_kb) == (INPUT_TIME, 50.0)
    v = p.variant("yolov3-gpu-b8")
    assert v.eta(50_000) == pytest.approx(1.0) and v.eta(80_000) > 1.0 > v.eta(20_000)


def test_failure_sites_names_the_over_admitted_resource(tmp_path):
    """A run long enough to saturate the cloud's YOLOv3 GPU replicas under rate accounting (the provisional
    profile, pinned: the over-admission is the point): the breakdown must find the served capacity below the
    declared one (the input time) and most failed queries there."""
    from analysis.records import RecordWriter
    from scheduler.profiles import PROVISIONAL_PROFILE

    full_edge = build_system(load_topology("full-edge"), load_profiles(PROVISIONAL_PROFILE))
    assert full_edge.profiles.load_accounting == "rate"
    case = EvalCase(100.0, 1, 90.0)
    path = tmp_path / "records.parquet"
    sink = RecordWriter(path)
    sim = Simulation(full_edge, case.trace(full_edge), SimConfig(duration_s=case.duration_s), seed=1,
                     record_sink=sink.write)
    sim.run(policy_index("load-balancing"))
    sink.close()
    rows = failure_sites.breakdown(path, "full-edge", str(PROVISIONAL_PROFILE), 0.0)
    top = rows[0]
    assert (top["cluster"], top["variant"]) == ("cloud", "yolov3-gpu-b8")
    assert float(top["served_qps"]) < float(top["declared_qps"]) * 0.97
    assert float(top["share_of_failed"]) > 0.5
    assert abs(sum(float(r["share_of_failed"]) for r in rows) - 1.0) < 1e-9
    assert np.isfinite(float(top["failed_wait_p50_ms"]))
    # every query that reached a worker is counted (on time ones have no reason: a null in the records)
    from analysis.records import read_records

    outcome = read_records(path)["outcome"].to_numpy(zero_copy_only=False)
    reason = read_records(path)["reason"].to_numpy(zero_copy_only=False)
    reached = (outcome != "rejected") | (reason == "queue-full")
    assert sum(int(r["queries"]) for r in rows) == int(reached.sum()) > int((outcome == "failed").sum())
