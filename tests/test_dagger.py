"""DAgger on a scenario (training/dagger.py): the expert's labels follow the scenario's phases on the states the
learner visits, the learner takes over as beta falls, and the agent comes out as `train` writes it; and a
configuration with a scenario is written as plain JSON."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from scheduler.core import POLICY_NAMES, policy_index
from scheduler.profiles import PROVISIONAL_PROFILE, load_profiles
from scheduler.system import build_system
from simulator.gym_env import AsetEnv
from topologies import load_topology
from training.config import DQNConfig
from training.dagger import collect, dagger, mixing, phase_experts
from training.rollout import ScenarioCase, run_static, success_of
from workload.scenario import load_scenario

CYCLE = """
name: flaky
phases:
  - {duration_s: 60, lambda_per_min: 8}
  - {duration_s: 40, lambda_per_min: 3}
network_events:
  - {at_s: 70, link: dc1-cloud, state: down}
  - {at_s: 90, link: dc1-cloud, state: up}
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    p = tmp_path_factory.mktemp("dagger") / "flaky.yaml"
    p.write_text(CYCLE)
    sc = load_scenario(p)
    system = build_system(load_topology("tiny"), load_profiles(PROVISIONAL_PROFILE))
    cfg = DQNConfig(topology="tiny", seed=3, env=replace(DQNConfig().env, scenario=sc, episode_s=100.0),
                    validation_seeds=(5,), validation_duration_s=100.0, guard_margins=(0.0, math.inf), progress=False)
    return sc, system, cfg


def expected_labels(sc, cfg, experts, rng_seed: int, episodes: int, learner: bool = False) -> list[int]:
    """The expert's labels worked out by hand: each episode's cycle shift read from a twin environment reset with
    the seed `collect` draws (after one uniform draw per decision of the episode before when a learner mixes in),
    the phase (60 s, then 40 s) of every 5-s window's middle."""
    env = AsetEnv(build_system(load_topology("tiny"), load_profiles(PROVISIONAL_PROFILE)),
                  replace(cfg.env, baseline_policy=None, theta=0.0))
    rng, out = np.random.default_rng(rng_seed), []
    for _ in range(episodes):
        env.reset(seed=int(rng.integers(2**31)))
        shifted = [(env.episode_offset_s + 5.0 * j + 2.5) % 100.0 for j in range(20)]
        if learner:
            rng.random(20)
        out += [experts[0] if x < 60.0 else experts[1] for x in shifted]
    return out


def test_the_experts_labels_are_the_phase_policies_at_each_decision(setup):
    sc, system, cfg = setup
    experts = [policy_index("closest"), policy_index("farthest")]
    v = collect(system, cfg, experts, None, 1.0, 2, np.random.default_rng(0))
    assert v.obs.shape == (40, *v.obs.shape[1:]) and set(v.labels.tolist()) == set(experts)
    want = expected_labels(sc, cfg, experts, 0, 2)
    assert v.labels.tolist() == want and v.actions.tolist() == want  # beta 1: the expert drives every decision
    unshifted = [experts[0]] * 12 + [experts[1]] * 8
    assert want[:20] != unshifted and want[20:] != unshifted  # a dropped cycle shift would show


class Always(torch.nn.Module):
    """A learner that picks one policy in every state."""

    def __init__(self, policy: int) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.full((x.shape[0],), self.policy), len(POLICY_NAMES)).float()


@pytest.mark.parametrize("beta", [0.0, 0.25, 1.0])
def test_the_learner_takes_a_decision_with_probability_one_minus_beta(setup, beta):
    sc, system, cfg = setup
    experts = [policy_index("closest"), policy_index("farthest")]
    v = collect(system, cfg, experts, Always(policy_index("load-balancing")), beta, 4, np.random.default_rng(1))
    taken = float(np.mean(v.actions == policy_index("load-balancing")))  # never an expert's label here
    assert v.agreement == 0.0 and v.overrides == taken
    assert v.labels.tolist() == expected_labels(sc, cfg, experts, 1, 4, learner=True)  # whoever drives
    # 80 decisions: 1 - beta of them the learner's, within 3 standard deviations of a binomial draw
    assert abs(taken - (1 - beta)) <= 3 * (beta * (1 - beta) / 80) ** 0.5 + 1e-9


def test_phase_experts_are_the_per_phase_best_statics(setup):
    sc, system, _ = setup
    experts, success = phase_experts(system, sc, [1], 100.0)
    assert success.shape == (len(POLICY_NAMES), 2)
    assert experts == [int(np.argmax(success[:, 0])), int(np.argmax(success[:, 1]))]
    case = ScenarioCase.of(sc, 1, 100.0)
    whole = success_of(run_static(system, case.trace(system), case, experts[0]))
    assert min(success[experts[0]]) <= whole <= max(success[experts[0]]) + 1e-12  # phases pool to the whole run


def test_dagger_writes_an_agent_with_its_rounds(setup, tmp_path):
    sc, system, cfg = setup
    cfg = replace(cfg, out_dir=str(tmp_path), channels=8, hidden=16)
    result, history = dagger(system, cfg, [policy_index("closest"), policy_index("farthest")], 2, 1, 30)
    assert [h["pairs"] for h in history] == [20, 40] and history[0]["learner_agreement_on_visited"] is None
    assert 0.0 <= history[1]["learner_agreement_on_visited"] <= 1.0
    assert [h["beta"] for h in history] == [1.0, 0.5] and history[0]["learner_overrides"] == 0.0
    assert [mixing(i) for i in range(4)] == [1.0, 0.5, 0.25, 0.125]
    t = json.loads((tmp_path / "train.json").read_text())
    assert t["config"]["env"]["scenario"] == str(Path(sc.source)) and t["guard"]["cases"] == [[sc_lambda(sc), 5]]
    assert (tmp_path / "agent.onnx").is_file() and result.meta.load_accounting == "rate"
    assert result.meta.profiles == t["meta"]["profiles"] == "scheduler/profiles/provisional.yaml"


def sc_lambda(sc) -> float:
    return sum(p.lambda_per_min * p.duration_s for p in sc.phases) / sc.period_s
