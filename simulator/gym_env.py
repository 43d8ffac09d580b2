"""The Gymnasium environment over the simulator: ASET picks a static policy every decision window.

Owns the episode (trace drawn with a random lambda, application mix and seed from the environment's own
generator), the step loop (T seconds of simulator windows per decision) and the reward; the state
encoding itself lives in `scheduler.aset.state`, shared with the live schedulers.

Importing this module registers the environment with Gymnasium as `EdgeInference-v0`:
`gymnasium.make("EdgeInference-v0", topo="full-edge")` (keywords: `make_env`'s); without importing it first,
`gymnasium.make("simulator.gym_env:EdgeInference-v0", topo=...)` imports it (Gymnasium 1.x reads no plugin
entry points from installed packages).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from scheduler.aset.meta import AgentMeta
from scheduler.aset.state import FEATURE_CLIP, StateBuilder, StateSpec
from scheduler.core import POLICY_NAMES, policy_index
from scheduler.profiles import load_profiles
from scheduler.system import SystemModel, build_system
from scheduler.window import WindowMeasurement
from simulator.engine import SimConfig, Simulation
from topologies import load_topology
from topologies.events import NetworkEvents
from workload.apps import APPS
from workload.arrivals import RateSchedule
from workload.scenario import Scenario, mixed_trace
from workload.trace import Trace


@dataclass(frozen=True)
class EnvConfig:
    """How episodes are drawn and how a decision window is turned into an observation and a reward."""

    lambda_range_per_min: tuple[float, float] = (30.0, 110.0)
    """Each episode's lambda (clients/min per antenna) is drawn uniformly in this range."""
    lambda_change_prob: float = 0.5
    """Probability that an episode's lambda jumps once, at a uniform time in its middle half, to a new draw."""
    mix_sigma: float = 0.3
    """Log-normal perturbation of the application shares per episode (0: the nominal mix)."""
    episode_s: float = 300.0
    """Simulated seconds of one episode; the trace opens streams until then."""
    decision_window_s: float = 5.0
    """T: one decision (policy choice) per this many simulated seconds."""
    sim_window_s: float = 1.0
    """The simulator's step; T is a whole number of them."""
    history: int = 4
    """K: decision windows stacked in the observation."""
    theta: float = 0.2
    """The episode terminates when a window's success ratio falls below this (0 disables)."""
    failed_penalty: float = 0.0
    """Reward = success ratio - failed_penalty * failed share of the window's decided queries."""
    baseline_policy: str | None = None
    """If set, a shadow simulation runs this static policy on the same trace and seed, and its window reward
    is subtracted: a control variate that removes the load's effect (it does not depend on the actions, so
    the greedy policy is unchanged) at twice the simulation cost. Use with theta = 0: with a baseline, ending
    an episode early would no longer be a penalty."""
    scenario: Scenario | None = None
    """If set, episodes are drawn from this scenario (workload/scenario.py) instead of a constant lambda with one
    jump: its cycle shifted by a uniform offset, every phase's lambda times one factor drawn uniformly in
    `scenario_scale_range`, its mix perturbed by `mix_sigma` (lambda_range_per_min and lambda_change_prob unused);
    the scenario's network events, if any, shifted with the cycle."""
    scenario_scale_range: tuple[float, float] = (0.8, 1.2)
    """The range of a scenario episode's lambda factor."""

    def __post_init__(self) -> None:
        steps = self.decision_window_s / self.sim_window_s
        if steps < 1 or abs(steps - round(steps)) > 1e-9:
            raise ValueError(f"decision_window_s={self.decision_window_s} must be a whole multiple of "
                             f"sim_window_s={self.sim_window_s}")
        if self.baseline_policy is not None and self.theta > 0:
            raise ValueError("baseline_policy needs theta = 0: with a baseline, rewards can be negative and "
                             "terminating early would become a way to escape them")
        lo, hi = self.lambda_range_per_min
        if not 0 <= lo <= hi:
            raise ValueError(f"lambda_range_per_min={self.lambda_range_per_min} must satisfy 0 <= lo <= hi")

    @staticmethod
    def for_agent(meta: AgentMeta, sim_window_s: float) -> EnvConfig:
        """Returns the environment an exported agent runs in: its decision window T and history K, no early end."""
        return EnvConfig(decision_window_s=meta.decision_window_s, sim_window_s=sim_window_s,
                         history=meta.state_shape[0], theta=0.0)

    @property
    def sim_steps_per_decision(self) -> int:
        return round(self.decision_window_s / self.sim_window_s)

    @property
    def horizon(self) -> int:
        """H: decisions per episode."""
        return int(np.ceil(self.episode_s / self.decision_window_s - 1e-9))


class AsetEnv(gym.Env):
    """Observation: [K, features] float32 (see scheduler.aset.state); action: index into POLICY_NAMES.

    `reset(options={"trace": Trace, "sim_seed": int, "duration_s": float})` replays a given trace instead
    of drawing one (evaluation on the same traces as the static policies), with `"events"` (NetworkEvents) the
    network's changes during it; `"record_sink"` gets its records.
    """

    metadata = {"render_modes": []}

    def __init__(self, system: SystemModel, config: EnvConfig | None = None) -> None:
        self.system = system
        self.config = config or EnvConfig()
        self.sim_config = SimConfig(window_s=self.config.sim_window_s, duration_s=self.config.episode_s)
        self.spec_state = StateSpec.of(system, self.config.history)
        self.observation_space = gym.spaces.Box(0.0, FEATURE_CLIP, shape=self.spec_state.shape, dtype=np.float32)
        self.action_space = gym.spaces.Discrete(len(POLICY_NAMES))
        self.builder = StateBuilder(self.spec_state)
        self.sim: Simulation | None = None
        self.shadow: Simulation | None = None
        self.baseline = policy_index(self.config.baseline_policy) if self.config.baseline_policy else None
        self.decisions = 0
        self.horizon = self.config.horizon
        self.episode_lambda = ""
        self.episode_offset_s = 0.0
        """The shift of the scenario's cycle in the running episode (0 without a drawn scenario episode)."""

    def _draw_trace(self) -> tuple[Trace, float, NetworkEvents | None]:
        cfg, rng = self.config, self.np_random
        if cfg.scenario is not None:
            scale = float(rng.uniform(*cfg.scenario_scale_range))
            offset = float(rng.uniform(0.0, cfg.scenario.period_s))
            noise = np.exp(cfg.mix_sigma * rng.standard_normal(len(APPS)))
            trace_rng = np.random.default_rng(int(rng.integers(2**63)))
            self.episode_lambda = f"{cfg.scenario.name} x{scale:.2f} +{offset:.0f}s"
            self.episode_offset_s = offset
            trace = cfg.scenario.trace(self.system.antennas, cfg.episode_s, trace_rng, scale, offset, noise)
            return trace, cfg.episode_s, cfg.scenario.events(self.system.topology, cfg.episode_s, offset)
        self.episode_offset_s = 0.0
        lam = rng.uniform(*cfg.lambda_range_per_min)
        segments = [(0.0, lam)]
        if rng.random() < cfg.lambda_change_prob:
            segments.append((float(rng.uniform(0.25, 0.75) * cfg.episode_s), rng.uniform(*cfg.lambda_range_per_min)))
        schedule = RateSchedule(tuple((s, float(v)) for s, v in segments))
        weight = np.exp(cfg.mix_sigma * rng.standard_normal(len(APPS)))
        trace_rng = np.random.default_rng(int(rng.integers(2**63)))
        self.episode_lambda = str(schedule)
        return mixed_trace(self.system.antennas, schedule, cfg.episode_s, weight, trace_rng), cfg.episode_s, None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        if "trace" in options:
            trace, duration = options["trace"], float(options.get("duration_s", self.config.episode_s))
            self.episode_offset_s = 0.0
            events = options.get("events")
            self.episode_lambda = str(options.get("lambda", ""))
        else:
            trace, duration, events = self._draw_trace()
        sim_seed = int(options.get("sim_seed", self.np_random.integers(2**31)))
        sim_config = SimConfig(**{**self.sim_config.__dict__, "duration_s": duration})
        physics = options.get("physics")  # the links as they behave, where not as the system says
        self.sim = Simulation(self.system, trace, sim_config, seed=sim_seed, record_sink=options.get("record_sink"),
                              physics=physics, events=events)
        if self.baseline is not None:
            self.shadow = Simulation(self.system, trace, sim_config, seed=sim_seed, physics=physics, events=events)
        self.horizon = int(np.ceil(duration / self.config.decision_window_s - 1e-9))
        self.decisions = 0
        self.builder.reset()
        return self.builder.observation(), {"lambda": self.episode_lambda, "streams": len(trace)}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.sim is None:
            raise RuntimeError("call reset() before step()")
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in 0..{len(POLICY_NAMES) - 1}")
        parts = []
        shadow_ontime = shadow_decided = 0
        for _ in range(self.config.sim_steps_per_decision):
            if self.sim.done:
                break
            parts.append(self.sim.step(int(action)))
            if self.shadow is not None and self.baseline is not None:
                st = self.shadow.step(self.baseline)
                shadow_ontime, shadow_decided = shadow_ontime + st.ontime, shadow_decided + st.decided
        self.decisions += 1
        if not parts:  # stepping past the end: an empty window
            parts = [WindowMeasurement.empty(self.system.n_resources, t_start_s=self.sim.t_s, policy=int(action))]
        m = WindowMeasurement.merge(parts)
        obs = self.builder.push(m)
        failed_share = m.failed / m.decided if m.decided else 0.0
        reward = float(m.success_ratio - self.config.failed_penalty * failed_share)
        baseline_success = shadow_ontime / shadow_decided if shadow_decided else 1.0
        if self.shadow is not None:
            reward -= baseline_success
        terminated = bool(m.decided > 0 and m.success_ratio < self.config.theta)
        truncated = bool(not terminated and (self.sim.done or self.decisions >= self.horizon))
        info = {"success": m.success_ratio, "ontime": m.ontime, "failed": m.failed, "rejected": m.rejected,
                "decided": m.decided, "t_s": self.sim.t_s, "policy": POLICY_NAMES[int(action)]}
        if self.shadow is not None:
            info["baseline_success"] = baseline_success
        return obs, reward, terminated, truncated, info

    def play(self, choose: Callable[[np.ndarray], int], obs: np.ndarray) -> list[int]:
        """Steps with `choose(observation)` from `obs` (the last observation) until the simulation ends;
        returns the action of every decision window."""
        if self.sim is None:
            raise RuntimeError("call reset() before play()")
        actions: list[int] = []
        while not self.sim.done:
            actions.append(int(choose(obs)))
            obs, *_ = self.step(actions[-1])
        return actions



ENV_ID = "EdgeInference-v0"
"""The environment's Gymnasium id (registered when this module is imported)."""


def make_env(topo: str = "full-edge", profiles: str | None = None, **config: Any) -> AsetEnv:
    """Returns the environment of a topology (a name or a file) under a profile file (default: the default
    profile); `config` sets EnvConfig's fields (episode_s=60.0, history=4, ...). Gymnasium's entry point."""
    return AsetEnv(build_system(load_topology(topo), load_profiles(profiles)), EnvConfig(**config))


if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="simulator.gym_env:make_env")
