"""Calibrated simulation: workers and links that behave unlike the figures the schedulers decide with."""

from __future__ import annotations

import pytest

from scheduler.profiles import load_profiles
from scheduler.system import build_system
from simulator.engine import SimConfig
from tests.test_simulator import ONE_SITE, make_trace, one_site, run_records
from topologies import load_topology


def test_processing_scale_slows_the_batches_but_not_the_decisions(write_yaml, test_profile) -> None:
    # Same timeline as the hand-computed batching test, with batches taking twice the profile's 10/14 ms:
    # the first batch (three frames, opened at 3, closed at 8) ends at 8 + 28 = 36 instead of 22.
    system = one_site(write_yaml, test_profile, "fast-cpu-b4")
    trace = make_trace([0.0, 0.001, 0.002, 0.010], 1.5)
    nominal = run_records(system, trace, SimConfig(max_batch_delay_ms=5.0))
    slow = run_records(system, trace, SimConfig(max_batch_delay_ms=5.0, processing_scale=(("fast-cpu-b4", 2.0),)))
    assert (slow["variant"] == nominal["variant"]).all() and (slow["outcome"] != "rejected").all()
    took = slow["t_infer_end_ms"] - slow["t_infer_start_ms"]
    assert took[:3] == pytest.approx([28.0] * 3)
    assert took[:3] == pytest.approx(2 * (nominal["t_infer_end_ms"] - nominal["t_infer_start_ms"])[:3])
    assert slow["t_infer_end_ms"][0] == pytest.approx(36.0)


def test_processing_scale_slows_the_input_time_too(write_yaml, test_profile) -> None:
    # fast's input at 800 ms per MB: 1 ms per 1,250-byte frame, 3 ms for the first batch of three (14 + 3 = 17 ms).
    # Scaled x2, the whole batch takes 34 ms, its input time too.
    profile = write_yaml("input.yaml", test_profile.read_text().replace(
        "batch_latency_ms: {1: 10.0, 4: 16.0}, input_ms_per_mb: 0", "batch_latency_ms: {1: 10.0, 4: 16.0}, "
        "input_ms_per_mb: 800"))
    system = one_site(write_yaml, profile, "fast-cpu-b4")
    trace = make_trace([0.0, 0.001, 0.002, 0.010], 1.5)
    nominal = run_records(system, trace, SimConfig(max_batch_delay_ms=5.0))
    slow = run_records(system, trace, SimConfig(max_batch_delay_ms=5.0, processing_scale=(("fast-cpu-b4", 2.0),)))
    assert (nominal["t_infer_end_ms"] - nominal["t_infer_start_ms"])[:3] == pytest.approx([17.0] * 3)
    assert (slow["t_infer_end_ms"] - slow["t_infer_start_ms"])[:3] == pytest.approx([34.0] * 3)


def test_physics_links_delay_the_queries_with_the_same_bindings(write_yaml, test_profile) -> None:
    system = one_site(write_yaml, test_profile, "fast-cpu-b4")
    slower = build_system(load_topology(write_yaml("slow.yaml", ONE_SITE.replace("VARIANT", "fast-cpu-b4")
                                                   .replace("delay_ms: 2", "delay_ms: 7"))),
                          load_profiles(test_profile))
    trace = make_trace([0.0, 0.001, 0.002, 0.010], 1.5)
    nominal = run_records(system, trace, SimConfig(max_batch_delay_ms=5.0))
    measured = run_records(system, trace, SimConfig(max_batch_delay_ms=5.0), physics=slower)
    assert (measured["variant"] == nominal["variant"]).all()
    assert measured["t_worker_ms"] - measured["t_send_ms"] == pytest.approx([8.0] * 8)  # 7 ms + 1 ms sending
    assert nominal["t_worker_ms"] - nominal["t_send_ms"] == pytest.approx([3.0] * 8)


def test_bad_physics_and_scales_are_refused_naming_them(write_yaml, test_profile) -> None:
    system = one_site(write_yaml, test_profile, "fast-cpu-b4")
    other = one_site(write_yaml, test_profile, "fast-cpu-b1")
    trace = make_trace([0.0], 1.0)
    with pytest.raises(ValueError, match="physics"):
        run_records(system, trace, SimConfig(), physics=other)
    with pytest.raises(ValueError, match="no deployed variant named nope-cpu-b1"):
        run_records(system, trace, SimConfig(processing_scale=(("nope-cpu-b1", 2.0),)))
    with pytest.raises(ValueError, match="processing_scale of 'fast-cpu-b4'"):
        SimConfig(processing_scale=(("fast-cpu-b4", 0.0),))


def test_a_scaled_profile_slows_every_batch_and_nothing_else(tmp_path) -> None:
    from scheduler.profiles import PROVISIONAL_PROFILE, ProfileError, write_scaled_profile

    base = load_profiles(PROVISIONAL_PROFILE)
    slow = load_profiles(write_scaled_profile(PROVISIONAL_PROFILE, 8.0, tmp_path / "x8.yaml"))
    assert set(slow.variants) == set(base.variants)
    for name, v in base.variants.items():
        assert slow.variants[name].batch_ms[1:] == pytest.approx([8 * ms for ms in v.batch_ms[1:]])
        assert slow.variants[name].capacity_qps == pytest.approx(v.capacity_qps / 8)
        assert slow.variants[name].accuracy == v.accuracy
    assert "x8" in slow.source
    with pytest.raises(ProfileError, match="must be a finite number > 0"):
        write_scaled_profile(PROVISIONAL_PROFILE, 0.0, tmp_path / "x0.yaml")
