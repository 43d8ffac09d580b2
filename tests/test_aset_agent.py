"""ASET's agent: TD loss falls, a toy where one policy is clearly best is learnt, ONNX matches PyTorch,
checkpoints for another topology are refused, the guard falls back, and the CLI trains and evaluates."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis import resultspage
from scheduler.aset.meta import AgentMeta, AgentMismatchError
from scheduler.aset.policy import AsetController, OnnxPolicy, guarded_action
from scheduler.aset.state import StateSpec
from scheduler.core import POLICY_NAMES, policy_index
from scheduler.profiles import PROVISIONAL_PROFILE, load_profiles
from scheduler.system import build_system
from scheduler.window import WindowMeasurement
from simulator.gym_env import AsetEnv, EnvConfig
from topologies import load_topology
from training import cli as aset_cli
from training.checkpoint import load_checkpoint, save_checkpoint
from training.config import DQNConfig
from training.export import export_onnx
from training.network import QNetwork
from training.replay import ReplayBatch, ReplayBuffer
from training.rollout import EvalCase, run_agent, run_static, success_of
from training.train import greedy, train

# One antenna; the near cluster sits behind a link that loses 40% of packets (each loss costs a 200-ms
# retransmission, which feasibility does not foresee), the far data centre is clean and roomy. Only
# `farthest` sends every stream it can to the data centre; `cheaper` is steered to the near one by its cost.
TOY = """
name: aset-toy
description: one antenna; a near cluster behind a lossy link, a far clean data centre
sites:
  - {name: ant1, layer: antenna, radio: {delay_ms: 2, delay_dev_ms: 0, bw_mbps: 1000}}
  - {name: co1, layer: co, compute: {cpu_cores: 4, gpus: 2, core_cost: 0.01, gpu_cost: 0.1}}
  - {name: dc1, layer: dc, compute: {cpu_cores: 4, gpus: 3}}
links:
  - {a: ant1, b: co1, delay_ms: 1, delay_dev_ms: 0, bw_mbps: 1000, loss_pct: 40}
  - {a: ant1, b: dc1, delay_ms: 12, delay_dev_ms: 0, bw_mbps: 1000}
deployments:
  - {site: co1, variant: mobilenet-ssd-gpu-b4, replicas: 2}
  - {site: dc1, variant: mobilenet-ssd-gpu-b4, replicas: 3}
"""
TOY_ENV = EnvConfig(episode_s=120.0, decision_window_s=5.0, history=3, lambda_change_prob=0.0)


@pytest.fixture(scope="module")
def toy_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("aset") / "toy.yaml"
    path.write_text(TOY)
    return path


@pytest.fixture(scope="module")
def toy_system(toy_path):
    return build_system(load_topology(toy_path), load_profiles(PROVISIONAL_PROFILE))


def toy_config(toy_path: Path, **kw) -> DQNConfig:
    base = dict(topology=str(toy_path), env=TOY_ENV, lambda_per_min=80.0, lambda_low_factor=0.75,
                lambda_high_factor=1.25, learning_starts=200, exploration_fraction=0.5, prior_policy=None,
                target_update_every=200, guard_margins=(), progress=False, seed=1, channels=32, hidden=64,
                learning_rate=1e-3, buffer_size=5000)
    return DQNConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def toy_agent(toy_path, toy_system):
    return train(toy_config(toy_path, total_steps=1000), toy_system)


def test_toy_statics_have_one_clear_winner(toy_system):
    case = EvalCase(80.0, 7, 120.0)
    trace = case.trace(toy_system)
    success = [success_of(run_static(toy_system, trace, case, p)) for p in range(len(POLICY_NAMES))]
    ranked = np.argsort(success)[::-1]
    assert POLICY_NAMES[ranked[0]] == "farthest"
    assert success[ranked[0]] - success[ranked[1]] > 0.1


def test_trained_agent_picks_the_best_policy_on_the_toy(toy_agent, toy_system):
    case = EvalCase(80.0, 7, 120.0)
    trace = case.trace(toy_system)
    sim, actions = run_agent(toy_system, trace, case, lambda o: int(np.argmax(greedy(toy_agent.net, o))), TOY_ENV)
    share = np.bincount(actions, minlength=len(POLICY_NAMES)) / len(actions)
    assert share[policy_index("farthest")] >= 0.8
    best_static = success_of(run_static(toy_system, trace, case, policy_index("farthest")))
    assert success_of(sim) > best_static - 0.03


def test_td_loss_falls_against_a_fixed_target(toy_path, toy_system):
    cfg = toy_config(toy_path, total_steps=400, learning_starts=100, target_update_every=10_000, seed=3)
    result = train(cfg, toy_system)
    assert len(result.losses) == 300
    early, late = np.mean(result.losses[:50]), np.mean(result.losses[-50:])
    assert late < 0.5 * early


def test_training_is_reproducible_from_the_seed(toy_path, toy_system):
    a = train(toy_config(toy_path, total_steps=250, learning_starts=100), toy_system)
    b = train(toy_config(toy_path, total_steps=250, learning_starts=100), toy_system)
    assert a.losses == b.losses and a.episode_returns == b.episode_returns


def test_onnx_export_matches_pytorch_and_runs_without_torch_api(toy_agent, toy_system, tmp_path):
    path = export_onnx(toy_agent.net, toy_agent.meta, tmp_path / "agent.onnx")
    spec = AsetEnv(toy_system, TOY_ENV).spec_state
    policy = OnnxPolicy(path, spec)
    states = np.random.default_rng(0).random((16, *spec.shape), dtype=np.float32) * 2.0
    with torch.no_grad():
        expected = toy_agent.net(torch.from_numpy(states)).numpy()
    np.testing.assert_allclose(policy.q_values(states), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(policy.q_values(states[0]), expected[0], rtol=1e-4, atol=1e-5)
    assert policy.meta == toy_agent.meta


def test_checkpoint_round_trip_and_other_topology_refused(toy_agent, toy_system, tmp_path):
    path = save_checkpoint(tmp_path / "agent.pt", toy_agent.net, toy_agent.meta)
    spec = AsetEnv(toy_system, TOY_ENV).spec_state
    net, meta = load_checkpoint(path, spec)
    x = torch.rand((2, *spec.shape))
    assert torch.equal(net(x), toy_agent.net(x)) and meta == toy_agent.meta
    other = AsetEnv(build_system(load_topology("dc-cloud"), load_profiles(PROVISIONAL_PROFILE)), TOY_ENV).spec_state
    with pytest.raises(AgentMismatchError, match="trained on topology 'aset-toy'.*cannot drive topology 'dc-cloud'"):
        load_checkpoint(path, other)
    onnx_path = export_onnx(toy_agent.net, toy_agent.meta, tmp_path / "agent.onnx")
    with pytest.raises(AgentMismatchError, match="'dc-cloud'"):
        OnnxPolicy(onnx_path, other)
    reprofiled = replace(spec, capacity_qps=tuple(2 * c for c in spec.capacity_qps), profiles="measured.yaml")
    with pytest.raises(AgentMismatchError, match="capacities of profile file .*provisional.yaml"):
        load_checkpoint(path, reprofiled)


def test_guard_falls_back_unless_the_agent_beats_the_fallback_by_the_margin():
    q = np.array([0.0, 1.0, 1.04, 0.0])
    assert guarded_action(q, fallback=1, margin=0.0) == 2
    assert guarded_action(q, fallback=1, margin=0.03) == 2
    assert guarded_action(q, fallback=1, margin=0.05) == 1
    assert guarded_action(q, fallback=1, margin=float("inf")) == 1


def test_controller_turns_live_windows_into_policies(toy_agent, toy_system, tmp_path):
    meta = replace(toy_agent.meta, fallback_policy=policy_index("closest"), guard_margin=float("inf"))
    path = export_onnx(toy_agent.net, meta, tmp_path / "guarded.onnx")
    spec = StateSpec.of(toy_system, history=3)
    ctl = AsetController.load(path, spec)
    n = toy_system.n_resources
    window = WindowMeasurement(5.0, 100, 0, 0, 3, 0, np.full(n, 20.0), np.full(n, 1e6), np.ones(n), np.full(n, 30.0),
                               np.ones(9))
    assert ctl.first_action() == policy_index("closest")
    assert ctl.decide(window) == policy_index("closest")  # the guard never lets the agent override
    assert ctl.builder.observation()[-1].any()
    same = AsetController.for_system(path, toy_system)
    assert same.decision_window_s == 5.0 and same.builder.spec == spec
    with pytest.raises(AgentMismatchError, match="cannot drive topology 'dc-cloud'"):
        AsetController.for_system(path, build_system(load_topology("dc-cloud"), load_profiles(PROVISIONAL_PROFILE)))


def test_replay_batch_is_typed_and_keeps_terminated_apart():
    buf = ReplayBuffer(4, (2, 3), np.random.default_rng(0))
    for i in range(6):
        buf.add(np.full((2, 3), i, np.float32), i % 7, float(i), np.full((2, 3), i + 1, np.float32), i == 5)
    assert len(buf) == 4
    batch = buf.sample(32)
    assert isinstance(batch, ReplayBatch) and batch.obs.shape == (32, 2, 3) and batch.actions.dtype == torch.int64
    assert set(batch.rewards.tolist()) <= {2.0, 3.0, 4.0, 5.0}
    torch.testing.assert_close(batch.terminated, (batch.rewards == 5.0).float())
    torch.testing.assert_close(batch.next_obs, batch.obs + 1)


def test_config_refuses_known_bad_combinations():
    with pytest.raises(ValueError, match="history=2 is too short"):
        DQNConfig(env=EnvConfig(history=2), kernel_size=2)
    with pytest.raises(ValueError, match="learning_starts"):
        DQNConfig(learning_starts=10, batch_size=64)
    with pytest.raises(ValueError, match="whole multiple"):
        EnvConfig(decision_window_s=2.5, sim_window_s=1.0)


def test_network_maps_k_windows_to_one_q_value_per_policy():
    net = QNetwork(history=4, n_features=10, n_actions=7, channels=8, hidden=16)
    assert net(torch.zeros((5, 4, 10))).shape == (5, 7)
    meta = AgentMeta("t", (4, 10), 2, POLICY_NAMES, 5.0, 8, 2, 16, True, 1, float("inf"))
    assert AgentMeta.from_json(meta.to_json()) == meta


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    aset_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_trains_then_evaluates_against_the_statics(toy_path, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert _cli(["train", "--topo", str(toy_path), "--lambda", "80", "--steps", "1100", "--out", str(out),
                 "--no-progress", "--validation-duration", "60", "--profiles", str(PROVISIONAL_PROFILE)]) == 0
    assert {p.name for p in out.iterdir()} >= {"agent.pt", "agent.onnx", "train_log.csv", "train.json"}
    summary = json.loads((out / "train.json").read_text())
    assert summary["steps"] == 1100 and summary["guard"]["fallback_policy"] == "farthest"
    header = (out / "train_log.csv").read_text().splitlines()[0]
    assert header.split(",")[:8] == ["episode", "step", "return", "mean_reward", "length", "terminated", "epsilon",
                                     "loss"]
    ev_dir = tmp_path / "eval"
    monkeypatch.setattr(resultspage, "RESULTS_DIR", tmp_path / "results")
    assert _cli(["evaluate", "--agent", str(out), "--topo", str(toy_path), "--lambdas", "80", "--seeds", "1",
                 "--duration", "60", "--out", str(ev_dir), "--results-page", "toy-eval"]) == 0
    text = capsys.readouterr().out
    assert "aset - best static (farthest)" in text
    page = (tmp_path / "results" / "toy-eval.md").read_text()
    assert page.startswith("# ASET evaluation on aset-toy\n") and "- commit: " in page
    assert "aset - best static (farthest)" in page and "with its fallback guard" in page
    report = json.loads((ev_dir / "aset-toy_evaluation.json").read_text())
    policies = report["lambdas"]["80"]["policies"]
    assert set(policies) == {*POLICY_NAMES, "aset"}
    assert policies["aset"]["overall"]["success"] >= policies["farthest"]["overall"]["success"] - 0.03
    assert (ev_dir / "aset-toy_success_over_time_lambda80.png").stat().st_size > 10_000


def test_epsilon_decays_with_steps_or_with_the_time_budget_used():
    from training.train import epsilon_at

    cfg = DQNConfig(total_steps=1000, exploration_fraction=0.5, epsilon_start=1.0, epsilon_end=0.1)
    assert epsilon_at(cfg, 0) == 1.0
    assert epsilon_at(cfg, 250) == pytest.approx(0.55)
    assert epsilon_at(cfg, 900) == pytest.approx(0.1)
    timed = replace(cfg, total_steps=10**9, time_budget_s=100.0)
    assert epsilon_at(timed, 10, elapsed_s=25.0) == pytest.approx(0.55)
