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

from scheduler.core import POLICY_NAMES, policy_index
from scheduler.profiles import PROVISIONAL_PROFILE, load_profiles
from scheduler.system import build_system
from topologies import load_topology
from training.config import DQNConfig
from training.dagger import collect, dagger, phase_experts
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


def test_the_experts_labels_are_the_phase_policies_at_each_decision(setup):
    sc, system, cfg = setup
    experts = [policy_index("closest"), policy_index("farthest")]
    x, y, _ = collect(system, cfg, experts, None, 1.0, 2, np.random.default_rng(0))
    assert x.shape == (40, *x.shape[1:]) and set(y.tolist()) == set(experts)
    # 20 decisions of 5 s per 100-s episode: the first label of each episode is its phase's at the drawn shift
    assert np.count_nonzero(y == experts[1]) in range(12, 21)  # 40 % of the cycle, up to the windows at edges


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
    t = json.loads((tmp_path / "train.json").read_text())
    assert t["config"]["env"]["scenario"] == str(Path(sc.source)) and t["guard"]["cases"] == [[sc_lambda(sc), 5]]
    assert (tmp_path / "agent.onnx").is_file() and result.meta.load_accounting == "rate"


def sc_lambda(sc) -> float:
    return sum(p.lambda_per_min * p.duration_s for p in sc.phases) / sc.period_s
