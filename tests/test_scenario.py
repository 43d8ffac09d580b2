"""Scenarios (workload/scenario.py): the phases' mixes and rates in a drawn trace, the file's errors, and ASET's
environment drawing its episodes from a scenario."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler.profiles import load_profiles
from scheduler.system import build_system
from simulator.gym_env import AsetEnv, EnvConfig
from topologies import load_topology
from workload.apps import APP_NAMES
from workload.arrivals import workload_rng
from workload.scenario import SCENARIO_DIR, Phase, Scenario, ScenarioError, load_scenario

ANTENNAS = ("a1", "a2", "a3", "a4")
ONLY = lambda app: tuple(1.0 if a == app else 0.0 for a in APP_NAMES)  # noqa: E731


def test_every_stream_opens_in_a_phase_that_has_its_application_at_the_phase_rate():
    sc = Scenario("t", "", (Phase(60.0, 120.0, ONLY("ar-vr")), Phase(30.0, 30.0, ONLY("video-surveillance"))))
    tr = sc.trace(ANTENNAS, 900.0, workload_rng(3), offset_s=20.0)
    phase = np.array([sc.phase_at(t, 20.0) for t in tr.start_s])
    assert set(tr.app[phase == 0]) == {"ar-vr"} and set(tr.app[phase == 1]) == {"video-surveillance"}
    assert np.all(np.diff(tr.start_s) >= 0) and np.array_equal(tr.stream_id, np.arange(len(tr)))
    # 900 s shifted by 20 s: phase 0 covers 600 s, phase 1 300 s; expected streams = lambda/60 * s * antennas
    for i, (lam, secs) in enumerate(((120.0, 600.0), (30.0, 300.0))):
        expected = lam / 60.0 * secs * len(ANTENNAS)
        assert abs((phase == i).sum() - expected) < 4 * np.sqrt(expected)


def test_the_same_seed_draws_the_same_trace_and_the_scale_scales_the_rate():
    sc = load_scenario("day-cycle")
    a = sc.trace(ANTENNAS, 600.0, workload_rng(1))
    b = sc.trace(ANTENNAS, 600.0, workload_rng(1))
    assert np.array_equal(a.start_s, b.start_s) and list(a.app) == list(b.app)
    half = sc.trace(ANTENNAS, 600.0, workload_rng(1), lambda_scale=0.5)
    assert 0.4 < len(half) / len(a) < 0.6


def test_shipped_scenarios_load():
    names = sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))
    assert names
    for n in names:
        assert load_scenario(n).period_s > 0


@pytest.mark.parametrize(("text", "fault"), [
    ("phases: []\n", "phases: expected a non-empty list"),
    ("phases: [{duration_s: 10, lambda_per_min: 5, mix: {nope: 1}}]\n", "phases[0].mix.nope: 'nope' is not one of"),
    ("phases: [{duration_s: 0, lambda_per_min: 5}]\n", "phases[0].duration_s: 0 must be > 0"),
    ("phases: [{duration_s: 10, lambda_per_min: -1}]\n", "phases[0].lambda_per_min: -1 must be >= 0"),
    ("phases: [{duration_s: 10, lambda_per_min: '20'}]\n", "phases[0].lambda_per_min: '20' is not a number"),
    ("phases: [{duration_s: 10, lambda_per_min: 5, mix: {ar-vr: 0}}]\n", "phases[0].mix: every weight is 0"),
    ("name: x\nphase: []\n", "phase: unknown key; allowed: description, name, network_events, phases"),
    ("phases: [{duration_s: 10, lambda: 5}]\n", "phases[0].lambda: unknown key (did you mean 'lambda_per_min'?"),
    ("name: x\nphases: [{duration_s: 10, lambda_per_min: 5\n", "line 3, column 1: invalid YAML"),
    ("name: x\nname: y\nphases: [{duration_s: 10, lambda_per_min: 5}]\n", "line 2, column 1: invalid YAML: "
                                                                            "duplicate key 'name'"),
])
def test_a_bad_scenario_file_gives_one_line_naming_file_key_and_value(tmp_path, text, fault):
    p = tmp_path / "s.yaml"
    p.write_text(text)
    with pytest.raises(ScenarioError) as err:
        load_scenario(p)
    assert str(err.value).startswith(f"{p}: ") and fault in str(err.value) and "\n" not in str(err.value)


def test_the_environment_draws_its_episodes_from_the_scenario():
    system = build_system(load_topology("full-edge"), load_profiles(None))
    sc = Scenario("t", "", (Phase(40.0, 80.0, ONLY("smart-traffic")), Phase(40.0, 0.0, ONLY("ar-vr"))))
    env = AsetEnv(system, EnvConfig(scenario=sc, episode_s=120.0, mix_sigma=0.0))
    _, info = env.reset(seed=5)
    assert info["lambda"].startswith("t x")
    tr = env.sim.trace
    assert len(tr) > 0 and set(tr.app) == {"smart-traffic"}
