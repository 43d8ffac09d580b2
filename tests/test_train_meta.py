"""An agent's metadata as training writes it (training.train.agent_meta, shared by DQN, imitation and DAgger) and
as `evaluate` reads its profile back: the profile file is stored relative to the repository root when it lies
inside it, and read whether relative or absolute; the shipped agents hold it relative."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from analysis.resultspage import REPO_ROOT
from scheduler.aset.meta import AgentMeta
from scheduler.aset.policy import OnnxPolicy
from scheduler.aset.state import StateSpec
from scheduler.core import POLICY_NAMES, policy_index
from scheduler.profiles import DEFAULT_PROFILE, PROVISIONAL_PROFILE, load_profiles
from scheduler.system import build_system
from topologies import load_topology
from training.config import DQNConfig
from training.evaluate import trained_profiles
from training.train import GuardReport, agent_meta


def spec_of(profile: Path) -> StateSpec:
    return StateSpec.of(build_system(load_topology("tiny"), load_profiles(profile)), history=4)


def test_the_meta_names_a_profile_in_the_repository_relative_to_its_root(tmp_path):
    cfg = DQNConfig(topology="tiny", channels=8, hidden=16)
    guard = GuardReport(cases=[], static_success=[], agent_success={}, fallback_policy=policy_index("cheaper"),
                        guard_margin=math.inf)
    meta = agent_meta(spec_of(PROVISIONAL_PROFILE), cfg, cfg.env, guard, 120, 3.04)
    assert meta.profiles == "scheduler/profiles/provisional.yaml"
    assert (meta.fallback_policy, meta.guard_margin, meta.trained_steps, meta.train_s) == (3, math.inf, 120, 3.0)
    assert (meta.channels, meta.hidden, meta.topology, meta.policy_names) == (8, 16, "tiny", POLICY_NAMES)
    unguarded = agent_meta(spec_of(PROVISIONAL_PROFILE), cfg, cfg.env, None, 1, 0.0, unguarded_fallback=1)
    assert (unguarded.fallback_policy, unguarded.guard_margin) == (1, 0.0)
    outside = tmp_path / "mine.yaml"
    shutil.copy(PROVISIONAL_PROFILE, outside)
    assert agent_meta(spec_of(outside), cfg, cfg.env, guard, 1, 0.0).profiles == str(outside)


def meta_with(profiles: str) -> AgentMeta:
    return AgentMeta(topology="tiny", state_shape=(4, 10), n_resources=1, policy_names=POLICY_NAMES,
                     decision_window_s=5.0, channels=8, kernel_size=3, hidden=16, dueling=True, fallback_policy=1,
                     guard_margin=0.0, profiles=profiles)


@pytest.mark.parametrize("recorded, found", [
    ("scheduler/profiles/provisional.yaml", PROVISIONAL_PROFILE),  # as the writer stores it
    (str(PROVISIONAL_PROFILE), PROVISIONAL_PROFILE),  # absolute, as older files hold it
    ("/nowhere/scheduler/profiles/default.yaml", None),  # another machine's checkout
    ("", None),
])
def test_evaluate_reads_the_agents_profile_relative_or_absolute(recorded, found):
    got = trained_profiles(meta_with(recorded))
    assert got == (None if found is None else str(found))


@pytest.mark.parametrize("topology", ["full-edge", "co-dc-cloud", "dc-cloud"])
def test_the_shipped_agents_record_the_default_profile_relative(topology):
    folder = REPO_ROOT / "agents" / topology
    meta = OnnxPolicy(str(folder / "agent.onnx")).meta
    recorded = json.loads((folder / "train.json").read_text())["meta"]["profiles"]
    assert meta.profiles == recorded == "scheduler/profiles/default.yaml"
    assert trained_profiles(meta) == str(DEFAULT_PROFILE)
