"""Scenarios that change the network (workload/scenario.py `network_events`): the events of a run worked out by
hand for a shifted cycle, the file's checks, and the same events applied wherever a run is made: a static run,
an agent's environment (evaluation, training episodes) and `simulate --agent --events`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from scheduler.aset.meta import AgentMeta
from scheduler.core import POLICY_NAMES, policy_index
from scheduler.profiles import PROVISIONAL_PROFILE, load_profiles
from scheduler.system import SystemModel, build_system
from simulator.engine import SimConfig
from simulator.gym_env import AsetEnv, EnvConfig
from simulator.run import simulate_aset, simulate_policy
from topologies import load_topology
from topologies.events import NetworkEvents
from training.export import export_onnx
from training.network import QNetwork
from training.rollout import EvalCase, run_agent, run_static
from workload.scenario import Scenario, ScenarioError, load_scenario

# tiny: ant1 - dc1 - cloud. A 100-s cycle: the cloud link down from 20 to 30 s, the radio slower from 50 to 70 s.
CYCLE = """
name: flaky
phases:
  - {duration_s: 60, lambda_per_min: 40}
  - {duration_s: 40, lambda_per_min: 10}
network_events:
  - {at_s: 20, link: cloud-dc1, state: down}
  - {at_s: 30, link: dc1-cloud, state: up}
  - {at_s: 50, link: radio-ant1, delay_ms: 9}
  - {at_s: 70, link: radio-ant1, delay_ms: 2}
"""


@pytest.fixture(scope="module")
def tiny() -> SystemModel:
    return build_system(load_topology("tiny"), load_profiles(PROVISIONAL_PROFILE))


def scenario(tmp_path: Path, text: str = CYCLE) -> Scenario:
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return load_scenario(p)


def plain(events: NetworkEvents | None) -> list[tuple]:
    return [(e.at_s, e.link, e.delay_ms, e.state) for e in events.events] if events else []


def test_a_shifted_cycle_starts_with_the_links_as_the_cycle_left_them(tmp_path, tiny):
    sc = scenario(tmp_path)
    assert tiny.topology.links[-1].a == "dc1"  # the testbed's name is dc1-cloud
    # shifted by 125 s: the run starts at cycle time 25 (link down), so the cycle's 30 s is the run's 5 s
    assert plain(sc.events(tiny.topology, 150.0, offset_s=125.0)) == [
        (0.0, "dc1-cloud", None, "down"), (5.0, "dc1-cloud", None, "up"), (25.0, "radio-ant1", 9.0, None),
        (45.0, "radio-ant1", 2.0, None), (95.0, "dc1-cloud", None, "down"), (105.0, "dc1-cloud", None, "up"),
        (125.0, "radio-ant1", 9.0, None), (145.0, "radio-ant1", 2.0, None)]
    assert plain(sc.events(tiny.topology, 60.0, offset_s=60.0)) == [  # cycle time 60: the radio still slow
        (0.0, "radio-ant1", 9.0, None), (10.0, "radio-ant1", 2.0, None)]
    assert plain(sc.events(tiny.topology, 15.0)) == []  # nothing in the first 15 s: no events at all
    assert sc.events(tiny.topology, 15.0) is None


@pytest.mark.parametrize(("extra", "fault"), [
    ("  - {at_s: 100, link: dc1-cloud, state: down}\n", "network_events[4].at_s: 100 is not within the cycle"),
    ("  - {at_s: 80, link: radio-ant1, loss_pct: 1}\n", "the cycle must leave every link as it found it; at its "
                                                         "end radio-ant1 differ"),
    ("  - {at_s: 80, link: dc1-nowhere, state: down}\n", "network_events: events[4].link: 'dc1-nowhere' is no link"),
    ("  - {at_s: 80, link: dc1-cloud, colour: red}\n", "network_events[4].colour: unknown key"),
])
def test_a_bad_network_event_in_a_scenario_is_refused_in_one_line(tmp_path, tiny, extra, fault):
    with pytest.raises(ScenarioError) as err:
        scenario(tmp_path, CYCLE + extra).events(tiny.topology, 300.0)
    assert fault in str(err.value) and str(err.value).startswith(str(tmp_path / "s.yaml")) and "\n" not in str(err.value)


@dataclass(frozen=True)
class FlakyCase(EvalCase):
    """A constant-lambda case under the scenario's network events (offset 0)."""

    sc: Scenario | None = None

    def events(self, system: SystemModel) -> NetworkEvents | None:
        assert self.sc is not None
        return self.sc.events(system.topology, self.duration_s)


def counts(sim) -> np.ndarray:
    return sim.tally.counts.reshape(-1, 3).sum(axis=0)


def test_static_runs_and_the_agents_environment_apply_the_cases_events(tmp_path, tiny):
    sc = scenario(tmp_path)
    case, calm = FlakyCase(5.0, 3, 100.0, sc), EvalCase(5.0, 3, 100.0)
    far = policy_index("farthest")
    trace = case.trace(tiny)
    static = counts(run_static(tiny, trace, case, far))
    assert not np.array_equal(static, counts(run_static(tiny, trace, calm, far)))  # the outage costs queries
    env_cfg = EnvConfig(decision_window_s=5.0, sim_window_s=1.0)
    sim, _ = run_agent(tiny, trace, case, lambda obs: far, env_cfg)
    assert np.array_equal(counts(sim), static)


def test_training_episodes_from_a_scenario_carry_its_events_with_the_cycles_shift(tmp_path, tiny):
    sc = scenario(tmp_path)
    env = AsetEnv(tiny, EnvConfig(scenario=sc, episode_s=150.0))
    for seed in range(4):
        _, info = env.reset(seed=seed)
        offset = float(info["lambda"].split("+")[1].rstrip("s"))
        starts = env.sim.timeline.starts_s
        assert len(starts) > 1
        # every state change falls on a cycle event time (20, 30, 50, 70) shifted by the episode's offset,
        # up to the offset's rounding in the label, or at the run's start
        for t in starts[1:]:
            phase = (t + offset) % 100.0
            assert min(abs(phase - c) for c in (20, 30, 50, 70)) <= 0.5 + 1e-9


def test_simulate_runs_an_agent_under_network_events(tmp_path, tiny):
    sc = scenario(tmp_path)
    env = AsetEnv(tiny, EnvConfig())
    k, f = env.spec_state.shape
    far = policy_index("farthest")
    meta = AgentMeta(topology="tiny", state_shape=(k, f), n_resources=tiny.n_resources, policy_names=POLICY_NAMES,
                     decision_window_s=5.0, channels=8, kernel_size=2, hidden=16, dueling=False,
                     fallback_policy=far, guard_margin=math.inf, resource_names=env.spec_state.resource_names,
                     capacity_qps=env.spec_state.capacity_qps, profiles=env.spec_state.profiles,
                     load_accounting=env.spec_state.load_accounting)
    agent = export_onnx(QNetwork(k, f, len(POLICY_NAMES), 8, 2, 16, False), meta, tmp_path / "agent.onnx")
    case = FlakyCase(5.0, 3, 100.0, sc)
    trace, events = case.trace(tiny), case.events(tiny)
    config = SimConfig(window_s=1.0, duration_s=100.0)
    run = simulate_aset(tiny, trace, agent, config, 3, "5", tmp_path / "aset", write_records=False, events=events)
    static = simulate_policy(tiny, trace, "farthest", config, 3, "5", None, write_records=False, events=events)
    assert run.summary.overall == static.summary.overall  # the guard always falls back to farthest
    assert run.summary.extra["network_events"]["applied"][0] == {"at_s": 20.0, "link": "dc1-cloud", "state": "down"}


def test_an_agent_trained_on_a_scenario_has_its_guard_calibrated_on_the_scenarios_runs(tmp_path, tiny):
    from training.config import DQNConfig
    from training.rollout import ScenarioCase, mean_lambda, success_of
    from training.train import calibrate_guard

    sc = scenario(tmp_path)
    env_cfg = EnvConfig(scenario=sc)
    k, f = AsetEnv(tiny, env_cfg).spec_state.shape
    net = QNetwork(k, f, len(POLICY_NAMES), 8, 2, 16, False)
    cfg = DQNConfig(topology="tiny", validation_seeds=(4,), validation_duration_s=60.0, guard_margins=(0.0, math.inf))
    g = calibrate_guard(net, tiny, cfg, env_cfg)
    assert g.cases == [(mean_lambda(sc), 4)]
    case = ScenarioCase.of(sc, 4, 60.0)
    assert case.events(tiny) is not None
    assert [s[0] for s in g.static_success] == [success_of(run_static(tiny, case.trace(tiny), case, p))
                                                for p in range(len(POLICY_NAMES))]
