"""Running one episode on a fixed trace with any policy: a static index or an agent's state-to-action map.

Shared by training (validation of the guard) and evaluation, so that the agent and the static policies see
exactly the same trace and simulator seed. Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from scheduler.system import SystemModel
from simulator.engine import SimConfig, Simulation
from simulator.gym_env import AsetEnv, EnvConfig
from topologies.events import NetworkEvents
from workload.arrivals import RateSchedule, generate_trace, workload_rng
from workload.scenario import Scenario
from workload.trace import Trace

Chooser = Callable[[np.ndarray], int]

SIM_WINDOW_S = 1.0
"""The simulator step of evaluation runs (`evaluate`, the guard's validation, the experiments)."""


@dataclass(frozen=True)
class EvalCase:
    """One evaluation run's workload: a constant lambda and the seed of its trace and of the simulator."""

    lambda_per_min: float
    seed: int
    duration_s: float

    @property
    def relative_cost(self) -> float:
        """Returns lambda x duration: the run's streams, to which its run time is about proportional (a sweep
        hands the costliest cases out first)."""
        return self.lambda_per_min * self.duration_s

    def trace(self, system: SystemModel) -> Trace:
        """Returns the trace `run_testbed.py simulate --lambda L --seed S` generates (same seed derivation)."""
        return generate_trace(system.antennas, RateSchedule.constant(self.lambda_per_min), self.duration_s,
                              workload_rng(self.seed))

    def events(self, system: SystemModel) -> NetworkEvents | None:
        """Returns the network's changes during the run (None: none; a scenario's case has its own)."""
        return None


@dataclass(frozen=True)
class ScenarioCase(EvalCase):
    """An evaluation case drawn from a scenario (workload/scenario.py): its trace (seed S: `workload_rng(S)`, the
    cycle unshifted, nominal lambdas and mix) and its network events; simulator seed S. `lambda_per_min` is the
    scenario's time-averaged lambda (for a sweep's cost order and file names)."""

    scenario: Scenario | None = None

    def trace(self, system: SystemModel) -> Trace:
        assert self.scenario is not None
        return self.scenario.trace(system.antennas, self.duration_s, workload_rng(self.seed))

    def events(self, system: SystemModel) -> NetworkEvents | None:
        assert self.scenario is not None
        return self.scenario.events(system.topology, self.duration_s)

    @staticmethod
    def of(scenario: Scenario, seed: int, duration_s: float) -> ScenarioCase:
        return ScenarioCase(mean_lambda(scenario), seed, duration_s, scenario)


def mean_lambda(scenario: Scenario) -> float:
    """Returns the scenario's time-averaged lambda (new streams per minute per antenna)."""
    return sum(p.lambda_per_min * p.duration_s for p in scenario.phases) / scenario.period_s


def run_static(system: SystemModel, trace: Trace, case: EvalCase, policy: int,
               sim_window_s: float = SIM_WINDOW_S) -> Simulation:
    """Returns the finished simulation of one static policy."""
    sim = Simulation(system, trace, SimConfig(window_s=sim_window_s, duration_s=case.duration_s), seed=case.seed,
                     events=case.events(system))
    sim.run(policy)
    return sim


def agent_env(system: SystemModel, trace: Trace, case: EvalCase, env_config: EnvConfig) -> tuple[AsetEnv, np.ndarray]:
    """Returns the environment an agent is evaluated in, reset on the case's trace and simulator seed (no shadow
    baseline, no early end), and its first observation."""
    env = AsetEnv(system, replace(env_config, baseline_policy=None, theta=0.0))
    obs, _ = env.reset(seed=case.seed, options={"trace": trace, "sim_seed": case.seed, "events": case.events(system),
                                                "duration_s": case.duration_s, "lambda": case.lambda_per_min})
    return env, obs


def run_agent(system: SystemModel, trace: Trace, case: EvalCase, choose: Chooser,
              env_config: EnvConfig) -> tuple[Simulation, list[int]]:
    """Returns the finished simulation driven by `choose` (state -> policy index) and its actions per window."""
    env, obs = agent_env(system, trace, case, env_config)
    actions = env.play(choose, obs)
    assert env.sim is not None
    return env.sim, actions


def success_of(sim: Simulation) -> float:
    """Returns the share of the run's queries answered on time."""
    c = sim.tally.counts.reshape(-1, 3).sum(axis=0)
    return float(c[0] / c.sum()) if c.sum() else float("nan")
