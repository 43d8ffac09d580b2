"""ASET's environment and state: the Gymnasium checker, shapes, determinism, termination, episodes that vary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from scheduler.aset.state import FEATURE_CLIP, StateBuilder, StateSpec, encode_window
from scheduler.profiles import PROVISIONAL_PROFILE, load_profiles
from scheduler.system import build_system
from scheduler.window import WindowMeasurement
from simulator.gym_env import AsetEnv, EnvConfig
from topologies import load_topology
from workload.apps import APP_NAMES
from workload.arrivals import RateSchedule
from workload.scenario import mixed_trace


@pytest.fixture(scope="module")
def system():
    return build_system(load_topology("dc-cloud"), load_profiles(PROVISIONAL_PROFILE))


def test_env_passes_gymnasium_checker(system):
    env = AsetEnv(system, EnvConfig(episode_s=30.0, lambda_range_per_min=(20.0, 40.0)))
    check_env(env, skip_render_check=True)


def test_observation_shape_is_k_windows_of_per_resource_and_class_features(system):
    env = AsetEnv(system, EnvConfig(history=3, episode_s=30.0))
    r = system.n_resources
    assert env.observation_space.shape == (3, 4 * r + 9 + 5)
    obs, _ = env.reset(seed=1)
    assert not obs.any()  # nothing has happened yet
    for _ in range(3):
        obs, reward, *_ = env.step(1)
    assert obs.shape == (3, 4 * r + 9 + 5) and obs.dtype == np.float32
    assert env.observation_space.contains(obs)
    assert obs[-1, 4 * r: 4 * r + 9].sum() > 0  # queries are arriving
    assert 0.0 <= reward <= 1.0


def test_same_seed_same_episode_other_seed_other_lambda(system):
    cfg = EnvConfig(episode_s=20.0, lambda_range_per_min=(10.0, 100.0))

    def rollout(seed: int) -> tuple[str, list[float]]:
        env = AsetEnv(system, cfg)
        _, info = env.reset(seed=seed)
        return info["lambda"], [env.step(a)[1] for a in (0, 1, 2, 3)]

    assert rollout(5) == rollout(5)
    assert len({rollout(s)[0] for s in (1, 2, 3)}) == 3


def test_terminates_below_theta_and_truncates_at_horizon(system):
    env = AsetEnv(system, EnvConfig(episode_s=20.0, decision_window_s=5.0, theta=1.01))
    env.reset(seed=2)
    flags = []
    for _ in range(4):
        _, _, terminated, truncated, info = env.step(0)
        flags.append((terminated, truncated, info["decided"] > 0))
        if terminated:
            break
    assert flags[-1][0] and not flags[-1][1]  # the first window with decided queries is below 1.01
    env = AsetEnv(system, EnvConfig(episode_s=20.0, decision_window_s=5.0, theta=0.0))
    env.reset(seed=2)
    ends = [env.step(1)[2:4] for _ in range(4)]
    assert ends == [(False, False)] * 3 + [(False, True)]  # H = 20 s / 5 s = 4 decisions


def test_perturbed_mix_keeps_total_rate_and_changes_shares(system):
    rng = np.random.default_rng(3)
    weight = np.array([1.0, 0.0, 0.0, 0.0])  # only the first application
    trace = mixed_trace(system.antennas, RateSchedule.constant(60.0), 600.0, weight, rng)
    assert set(trace.app.tolist()) == {APP_NAMES[0]}
    expected = 60.0 / 60.0 * 600.0 * len(system.antennas)
    assert abs(len(trace) - expected) < 5 * np.sqrt(expected)


def test_window_encoding_normalises_by_capacity():
    spec = StateSpec(topology="t", n_resources=2, n_classes=9, n_antennas=1, history=2, capacity_qps=(100.0, 50.0))
    m = WindowMeasurement(duration_s=2.0, ontime=30, failed=10, rejected=0, streams_new=4, streams_rejected=1,
                          responses=np.array([200.0, 50.0]), bytes_in=np.array([100 * 2 * 50_000.0, 0.0]),
                          streams=np.array([3.0, 0.0]), load_qps=np.array([50.0, 100.0]),
                          sent_per_class=np.r_[300.0, np.zeros(8)])
    x = encode_window(spec, m)
    np.testing.assert_allclose(x[:2], [3 / (100 / 15), 0.0], rtol=1e-6)  # streams at capacity
    np.testing.assert_allclose(x[2:4], [1.0, 0.5])  # responses per s / capacity
    np.testing.assert_allclose(x[4:6], [1.0, 0.0])  # input bytes per s / (capacity * 50 kB)
    np.testing.assert_allclose(x[6:8], [0.5, 2.0])  # declared load
    np.testing.assert_allclose(x[8], 300 / 2 / 150)
    np.testing.assert_allclose(x[-5:], [0.75, 0.25, 0.0, 0.25, 2 * 60 / 100], rtol=1e-6)
    builder = StateBuilder(spec)
    obs = builder.push(m)
    assert not obs[0].any() and np.array_equal(obs[1], x)  # idle history before the first window
    m.load_qps = np.array([1e6, 0.0])
    assert builder.push(m)[1, 6] == FEATURE_CLIP


def test_merge_sums_counts_and_keeps_last_stream_state():
    a = WindowMeasurement(1.0, 5, 1, 0, 2, 0, np.ones(2), np.ones(2), np.array([1.0, 2.0]), np.array([10.0, 0.0]),
                          np.ones(9))
    b = WindowMeasurement(1.0, 7, 0, 3, 1, 1, np.ones(2), np.zeros(0), np.array([4.0, 2.0]), np.array([5.0, 5.0]),
                          np.ones(9))
    m = WindowMeasurement.merge([a, b])
    assert (m.duration_s, m.ontime, m.failed, m.rejected, m.streams_new, m.streams_rejected) == (2.0, 12, 1, 3, 3, 1)
    np.testing.assert_array_equal(m.responses, [2.0, 2.0])
    np.testing.assert_array_equal(m.bytes_in, [1.0, 1.0])
    np.testing.assert_array_equal(m.streams, [4.0, 2.0])
    assert m.success_ratio == 12 / 16


def test_decision_path_imports_without_torch():
    code = ("import sys; import scheduler.aset.policy, training.evaluate, simulator.gym_env, "
            "training.cli; print('torch' in sys.modules)")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "False"


def test_baseline_reward_is_zero_when_the_agent_plays_the_baseline(system):
    cfg = EnvConfig(episode_s=150.0, lambda_range_per_min=(100.0, 100.0), baseline_policy="load-balancing",
                    theta=0.0)
    env = AsetEnv(system, cfg)
    check_env(env, skip_render_check=True)
    env.reset(seed=4)
    same = [env.step(1) for _ in range(3)]
    assert all(r == 0.0 and info["decided"] > 0 for _, r, _, _, info in same)
    env.reset(seed=4)
    other = [env.step(0)[1] for _ in range(30)]
    assert min(other) < -0.01  # closest falls behind load-balancing once the system fills up
    with pytest.raises(ValueError, match="theta = 0"):
        EnvConfig(baseline_policy="load-balancing", theta=0.2)
