"""DQN training of ASET in the simulator: `train(DQNConfig) -> TrainResult`, CleanRL style.

Owns the loop (epsilon-greedy with a static-policy prior, replay, double-DQN TD target with separate
terminated/truncated, target network; episodes from `n_envs` environments, training/vecenv.py), the logs,
and the guard calibration on held-out traces (a sweep, training/sweep.py).
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from analysis.resultspage import repo_relative
from scheduler.aset.meta import AgentMeta
from scheduler.aset.policy import guarded_action
from scheduler.aset.state import StateSpec
from scheduler.core import POLICY_NAMES, policy_index
from scheduler.profiles import load_profiles
from scheduler.system import SystemModel, build_system
from simulator.gym_env import AsetEnv, EnvConfig
from topologies import load_topology
from training.checkpoint import save_checkpoint
from training.config import DQNConfig
from training.export import export_onnx
from training.network import QNetwork
from training.replay import ReplayBatch, ReplayBuffer
from training.rollout import EvalCase, ScenarioCase, run_agent, run_static, success_of
from training.sweep import SERIAL, CaseRunner, Engine
from training.vecenv import VecEnv


@dataclass
class GuardReport:
    """Held-out validation: success per case of every static policy and of the agent at every margin."""

    cases: list[tuple[float, int]]
    static_success: list[list[float]]
    """[policy][case]."""
    agent_success: dict[str, list[float]]
    """margin (as text) -> [case]."""
    fallback_policy: int
    guard_margin: float

    def summary(self) -> str:
        """Returns the guard's choice in one line: its fallback and the margin at which the agent overrides it."""
        margin = "never (always the fallback)" if self.guard_margin == float("inf") else f"margin {self.guard_margin:g}"
        return f"guard: fallback {POLICY_NAMES[self.fallback_policy]}, agent overrides it at {margin}"


@dataclass
class TrainResult:
    """What training produced: the network, its metadata, the loss curve and where files went."""

    net: QNetwork
    meta: AgentMeta
    steps: int
    episodes: int
    train_s: float
    losses: list[float]
    """TD loss of every gradient step."""
    episode_returns: list[float]
    guard: GuardReport | None
    files: dict[str, str] = field(default_factory=dict)


def agent_meta(spec: StateSpec, cfg: DQNConfig, env_cfg: EnvConfig, guard: GuardReport | None, trained_steps: int,
               train_s: float, unguarded_fallback: int = 0) -> AgentMeta:
    """Returns the metadata of an agent of cfg's network trained on `spec`'s system (train, imitation and DAgger
    write it alike): the guard's fallback and margin (without a guard: `unguarded_fallback`, margin 0), and the
    profile file relative to the repository root when it lies inside it, so the file reads the same on any
    checkout."""
    return AgentMeta(topology=spec.topology, state_shape=spec.shape, n_resources=spec.n_resources,
                     policy_names=POLICY_NAMES, decision_window_s=env_cfg.decision_window_s,
                     channels=cfg.channels, kernel_size=cfg.kernel_size, hidden=cfg.hidden, dueling=cfg.dueling,
                     fallback_policy=guard.fallback_policy if guard else unguarded_fallback,
                     guard_margin=guard.guard_margin if guard else 0.0,
                     lambda_per_min=cfg.lambda_per_min, trained_steps=trained_steps, train_s=round(train_s, 1),
                     resource_names=spec.resource_names, capacity_qps=spec.capacity_qps,
                     profiles=repo_relative(spec.profiles) if spec.profiles else "",
                     load_accounting=spec.load_accounting)


def td_loss(q_net: QNetwork, target_net: QNetwork, batch: ReplayBatch, gamma: float, double: bool) -> torch.Tensor:
    """Returns the Huber TD loss; terminated transitions do not bootstrap, truncated ones do."""
    with torch.no_grad():
        q_next_target = target_net(batch.next_obs)
        if double:
            a_next = q_net(batch.next_obs).argmax(dim=1, keepdim=True)
            v_next = q_next_target.gather(1, a_next).squeeze(1)
        else:
            v_next = q_next_target.max(dim=1).values
        target = batch.rewards + gamma * (1.0 - batch.terminated) * v_next
    q = q_net(batch.obs).gather(1, batch.actions[:, None]).squeeze(1)
    return F.smooth_l1_loss(q, target)


def epsilon_at(cfg: DQNConfig, step: int, elapsed_s: float = 0.0) -> float:
    """Returns epsilon after `step` steps; with a time budget, progress is the larger of steps and time used."""
    progress = step / cfg.total_steps
    if cfg.time_budget_s:
        progress = max(progress, elapsed_s / cfg.time_budget_s)
    frac = min(1.0, progress / max(cfg.exploration_fraction, 1e-9))
    return cfg.epsilon_start + frac * (cfg.epsilon_end - cfg.epsilon_start)


def explore(rng: np.random.Generator, prior: int | None, prior_share: float) -> int:
    """Returns an exploratory action: the prior static policy with probability prior_share, else uniform."""
    if prior is not None and rng.random() < prior_share:
        return prior
    return int(rng.integers(len(POLICY_NAMES)))


def episode_row(episode: int, step: int, ep_return: float, length: int, terminated: bool, eps: float,
                losses: list[float], lam: str, wall_s: float) -> dict:
    """Returns one row of the training log."""
    return {"episode": episode, "step": step, "return": round(ep_return, 4),
            "mean_reward": round(ep_return / length, 4), "length": length, "terminated": int(terminated),
            "epsilon": round(eps, 4), "loss": round(float(np.mean(losses)), 6) if losses else "",
            "lambda": lam, "wall_s": round(wall_s, 1)}


def greedy(net: QNetwork, obs: np.ndarray) -> np.ndarray:
    """Returns the Q-values of one state."""
    with torch.no_grad():
        return net(torch.from_numpy(np.asarray(obs, dtype=np.float32)[None]))[0].numpy()


def train(cfg: DQNConfig, system: SystemModel | None = None, engine: Engine = SERIAL) -> TrainResult:
    """Trains an agent for cfg.topology and returns it; writes checkpoint, ONNX and logs if cfg.out_dir.

    `engine` says where the parallel parts run: the cfg.n_envs environments step in up to `engine`'s local
    worker processes, and the guard's held-out runs are a sweep on it. The result depends on the seed and
    cfg.n_envs, not on the engine.
    """
    torch.set_num_threads(1)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    system = system or build_system(load_topology(cfg.topology), load_profiles())
    env_cfg = replace(cfg.env, lambda_range_per_min=cfg.lambda_range_per_min)
    spec = AsetEnv(system, env_cfg).spec_state
    k, f = spec.shape
    q_net = QNetwork(k, f, len(POLICY_NAMES), cfg.channels, cfg.kernel_size, cfg.hidden, cfg.dueling)
    target_net = QNetwork(k, f, len(POLICY_NAMES), cfg.channels, cfg.kernel_size, cfg.hidden, cfg.dueling)
    target_net.load_state_dict(q_net.state_dict())
    optimizer = torch.optim.Adam(q_net.parameters(), lr=cfg.learning_rate)
    buffer = ReplayBuffer(cfg.buffer_size, (k, f), rng)
    prior = policy_index(cfg.prior_policy) if cfg.prior_policy else None
    out = Path(cfg.out_dir) if cfg.out_dir else None
    log = EpisodeLog(out / "train_log.csv" if out else None)
    losses: list[float] = []
    returns: list[float] = []
    envs = VecEnv(system, env_cfg, cfg.n_envs, engine.local_workers if cfg.n_envs > 1 else 1)
    obs: list[np.ndarray] = []
    episodes: list[_Episode] = []
    for i in range(cfg.n_envs):  # each environment's generator seeded from the learner's, in order
        o, info = envs.reset(i, seed=int(rng.integers(2**31)))
        obs.append(o)
        episodes.append(_Episode(lam=info["lambda"]))
    t_start = time.monotonic()
    bar = tqdm(total=cfg.total_steps if cfg.time_budget_s is None else None, disable=not cfg.progress,
               desc=f"ASET {system.topology.name}", unit="dec", mininterval=2.0)
    step = 0
    try:
        while step < cfg.total_steps:
            # one action per environment from the network as it is now; then the n transitions are learnt
            # from one after another, exactly as n single steps (n_envs = 1: the plain DQN loop)
            actions, epsilons = [], []
            for i in range(min(cfg.n_envs, cfg.total_steps - step)):
                eps = epsilon_at(cfg, step + i + 1, time.monotonic() - t_start)
                epsilons.append(eps)
                actions.append(explore(rng, prior, cfg.prior_share) if rng.random() < eps
                               else int(np.argmax(greedy(q_net, obs[i]))))
            for i, (next_obs, reward, terminated, truncated, _) in enumerate(envs.step(actions)):
                step += 1
                buffer.add(obs[i], actions[i], reward, next_obs, terminated)  # truncation bootstraps: not stored
                obs[i] = next_obs
                ep = episodes[i]
                ep.ret, ep.length = ep.ret + reward, ep.length + 1
                if terminated or truncated:
                    returns.append(ep.ret)
                    log.write(episode_row(len(returns), step, ep.ret, ep.length, terminated, epsilons[i],
                                          losses[-ep.length:], ep.lam, time.monotonic() - t_start))
                    bar.set_postfix(ret=f"{ep.ret / ep.length:.3f}", eps=f"{epsilons[i]:.2f}")
                    obs[i], info = envs.reset(i)
                    episodes[i] = _Episode(lam=info["lambda"])
                if step > cfg.learning_starts and step % cfg.train_every == 0:
                    losses.append(gradient_step(q_net, target_net, optimizer, buffer, cfg))
                if step % cfg.target_update_every == 0:
                    target_net.load_state_dict(q_net.state_dict())
                bar.update(1)
            if cfg.time_budget_s is not None and time.monotonic() - t_start > cfg.time_budget_s:
                break
    finally:
        envs.close()
        bar.close()
        log.close()
    train_s = time.monotonic() - t_start
    q_net.eval()
    guard = calibrate_guard(q_net, system, cfg, env_cfg, engine) if cfg.guard_margins else None
    meta = agent_meta(spec, cfg, env_cfg, guard, step, train_s, unguarded_fallback=prior or 0)
    result = TrainResult(net=q_net, meta=meta, steps=step, episodes=len(returns), train_s=train_s,
                         losses=losses, episode_returns=returns, guard=guard)
    if out is not None:
        result.files = write_outputs(out, result, cfg)
        result.files["log"] = str(out / "train_log.csv")
    return result


@dataclass
class _Episode:
    """The running episode of one environment: its return and length so far, and its lambda (as logged)."""

    lam: str
    ret: float = 0.0
    length: int = 0


def gradient_step(q_net: QNetwork, target_net: QNetwork, optimizer: torch.optim.Optimizer, buffer: ReplayBuffer,
                  cfg: DQNConfig) -> float:
    """Takes one Adam step on a replay minibatch; returns its TD loss."""
    loss = td_loss(q_net, target_net, buffer.sample(cfg.batch_size), cfg.gamma, cfg.double_dqn)
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(q_net.parameters(), cfg.max_grad_norm)
    optimizer.step()
    return float(loss.item())


@dataclass(frozen=True)
class GuardRun:
    """One held-out run of the guard's calibration: a static policy's index, or (None) the agent at `margin`."""

    case: EvalCase
    policy: int | None
    margin: float = 0.0


@dataclass(frozen=True)
class GuardSetup:
    """What every held-out run shares: the system, the agent's environment, the network and the fallback."""

    system: SystemModel
    env_config: EnvConfig
    net: QNetwork
    fallback: int


def guard_success(setup: GuardSetup, run: GuardRun) -> float:
    """Returns the success of one held-out run (a sweep's case)."""
    trace = run.case.trace(setup.system)
    if run.policy is not None:
        return success_of(run_static(setup.system, trace, run.case, run.policy))
    torch.set_num_threads(1)  # as the learner: the same Q-values in any process

    def choose(obs: np.ndarray) -> int:
        return guarded_action(greedy(setup.net, obs), setup.fallback, run.margin)

    return success_of(run_agent(setup.system, trace, run.case, choose, setup.env_config)[0])


def calibrate_guard(net: QNetwork, system: SystemModel, cfg: DQNConfig, env_cfg: EnvConfig,
                    engine: Engine = SERIAL) -> GuardReport:
    """Returns the fallback (best static on held-out traces) and the smallest margin that never loses to it.

    The held-out cases: three constant lambdas (the range's ends and the nominal one) or, when the environment
    draws its episodes from a scenario, that scenario's runs (its network events included), each on
    cfg.validation_seeds. A margin is admissible when, on every held-out case, the guarded agent's success is at least the
    fallback's minus 0.2 points; among admissible margins the best mean success wins (inf always qualifies).
    The held-out runs are two sweeps on `engine` (the statics, then the agent at every finite margin).
    """
    lo, hi = cfg.lambda_range_per_min
    lambdas = sorted({round(lo, 1), round(cfg.lambda_per_min, 1), round(min(hi, 1.6 * cfg.lambda_per_min), 1)})
    if env_cfg.scenario is not None:  # the workload the agent is trained for: the scenario's own runs
        cases: list[EvalCase] = [ScenarioCase.of(env_cfg.scenario, seed, cfg.validation_duration_s)
                                 for seed in cfg.validation_seeds]
    else:
        cases = [EvalCase(lam, seed, cfg.validation_duration_s) for lam in lambdas for seed in cfg.validation_seeds]
    margins = [m for m in sorted(cfg.guard_margins) if m != float("inf")]
    with CaseRunner(engine) as runner:
        setup = GuardSetup(system, env_cfg, net, fallback=0)
        flat = runner.map(guard_success, [GuardRun(c, p) for p in range(len(POLICY_NAMES)) for c in cases], setup,
                          cost=lambda r: r.case.relative_cost)
        static = [flat[p * len(cases):(p + 1) * len(cases)] for p in range(len(POLICY_NAMES))]
        fallback = int(np.argmax([np.mean(s) for s in static]))
        flat = runner.map(guard_success, [GuardRun(c, None, m) for m in margins for c in cases],
                          replace(setup, fallback=fallback), cost=lambda r: r.case.relative_cost)
    agent: dict[str, list[float]] = {}
    best_margin, best_mean = float("inf"), float(np.mean(static[fallback]))
    for margin in sorted(cfg.guard_margins):
        if margin == float("inf"):
            agent["inf"] = list(static[fallback])
            continue
        j = margins.index(margin)
        succ = flat[j * len(cases):(j + 1) * len(cases)]
        agent[f"{margin:g}"] = succ
        never_loses = all(a >= s - 0.002 for a, s in zip(succ, static[fallback], strict=True))
        if never_loses and np.mean(succ) > best_mean:
            best_margin, best_mean = margin, float(np.mean(succ))
    return GuardReport(cases=[(c.lambda_per_min, c.seed) for c in cases], static_success=static,
                       agent_success=agent, fallback_policy=fallback, guard_margin=best_margin)


class EpisodeLog:
    """The training log: one CSV row per episode, flushed as it goes so a long run can be watched."""

    FIELDS = ("episode", "step", "return", "mean_reward", "length", "terminated", "epsilon", "loss", "lambda",
              "wall_s")

    def __init__(self, path: Path | None) -> None:
        self.fh = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.fh = path.open("w", newline="")
            self.writer = csv.DictWriter(self.fh, fieldnames=self.FIELDS)
            self.writer.writeheader()

    def write(self, row: dict) -> None:
        if self.fh is not None:
            self.writer.writerow(row)
            self.fh.flush()

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


def write_outputs(out: Path, result: TrainResult, cfg: DQNConfig) -> dict[str, str]:
    """Writes agent.pt, agent.onnx and train.json under `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"checkpoint": str(save_checkpoint(out / "agent.pt", result.net, result.meta)),
             "onnx": str(export_onnx(result.net, result.meta, out / "agent.onnx"))}
    guard = result.guard
    summary = {
        "config": cfg.to_dict(), "steps": result.steps, "episodes": result.episodes,
        "train_s": round(result.train_s, 1), "meta": json.loads(result.meta.to_json()),
        "loss_per_1000_steps": [round(float(np.mean(result.losses[i:i + 1000])), 6)
                                for i in range(0, len(result.losses), 1000)],
        "guard": None if guard is None else {
            "cases": guard.cases, "fallback_policy": POLICY_NAMES[guard.fallback_policy],
            "guard_margin": "inf" if guard.guard_margin == float("inf") else guard.guard_margin,
            "static_success": dict(zip(POLICY_NAMES, guard.static_success, strict=True)),
            "agent_success": guard.agent_success},
    }
    (out / "train.json").write_text(json.dumps(summary, indent=1) + "\n")
    files["summary"] = str(out / "train.json")
    return files
