"""DAgger on a scenario with a privileged expert: the best static policy of the phase the scenario is in.

    .venv/bin/python -m training.dagger --scenario night-wan-flaps --topo full-edge --out runs/aset/dagger-nwf \\
        [--rounds 4] [--episodes 4] [--expert-seeds 2001] [--epochs 300] [--seed 1] [--workers N]

This file owns that learner. The expert knows what the agent cannot observe, the scenario's clock: at each
decision it picks the static policy that serves the most queries on time in the current phase, measured first
(`phase_experts`: every static on the scenario's runs of `--expert-seeds`, counted per phase). The agent sees
only its observation (load, failures, arrivals per class of the last K windows) and must infer the phase from
it. DAgger (Ross et al. 2011): round 0 lets the expert drive; round i lets the learner drive each decision with
probability 1 - 0.5^i (else the expert), on episodes drawn from the scenario as DQN's training draws them (a
random shift of the cycle and its network events, lambdas x 0.8-1.2, the mix perturbed). Every visited state is
labelled with the expert's choice (a label costs nothing: no rollout), the pairs of all rounds are pooled and
the Q-network is refitted as a classifier (`training.imitation.fit`). The guard is then calibrated on the
scenario's held-out runs and the agent written as `train` writes it, so `evaluate`, aset_compare and the live
run take it unchanged.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from scheduler.core import POLICY_NAMES
from scheduler.profiles import load_profiles
from scheduler.system import SystemModel, build_system
from simulator.gym_env import AsetEnv
from topologies import load_topology
from training.config import DQNConfig
from training.imitation import fit
from training.rollout import ScenarioCase, mean_lambda, run_static
from training.sweep import SERIAL, CaseRunner, Engine, add_engine_arguments, engine_from_args
from training.train import TrainResult, agent_meta, calibrate_guard, write_outputs
from workload.scenario import Scenario, load_scenario


@dataclass(frozen=True)
class StaticRun:
    """One static policy on one of the scenario's runs (a sweep's case)."""

    case: ScenarioCase
    policy: int


def phase_counts(system: SystemModel, run: StaticRun) -> np.ndarray:
    """Returns [phase, on time | all queries] of one static run, each query counted in the phase of its window."""
    sc = run.case.scenario
    assert sc is not None
    sim = run_static(system, run.case.trace(system), run.case, run.policy)
    per_window = sim.tally.trimmed(sim.windows).sum(axis=1)  # [window, outcome]
    phase = np.array([sc.phase_at((w + 0.5) * sim.config.window_s) for w in range(len(per_window))])
    out = np.zeros((len(sc.phases), 2))
    for k in range(len(sc.phases)):
        out[k] = per_window[phase == k, 0].sum(), per_window[phase == k].sum()
    return out


def phase_experts(system: SystemModel, sc: Scenario, seeds: list[int], duration_s: float,
                  engine: Engine = SERIAL) -> tuple[list[int], np.ndarray]:
    """Returns the best static policy of each phase and the success of every static per phase ([policy, phase])."""
    runs = [StaticRun(ScenarioCase.of(sc, s, duration_s), p) for p in range(len(POLICY_NAMES)) for s in seeds]
    with CaseRunner(engine) as runner:
        flat = runner.map(phase_counts, runs, system)
    counts = np.zeros((len(POLICY_NAMES), len(sc.phases), 2))
    for r, c in zip(runs, flat, strict=True):
        counts[r.policy] += c
    success = counts[..., 0] / np.maximum(counts[..., 1], 1)
    return [int(np.argmax(success[:, k])) for k in range(len(sc.phases))], success


@dataclass
class Visited:
    """The decisions of one DAgger round: every state visited, the expert's label of it, the action taken there
    (the expert's or the learner's) and the share of decisions where the learner agreed with the expert."""

    obs: np.ndarray
    labels: np.ndarray
    actions: np.ndarray
    agreement: float

    @property
    def overrides(self) -> float:
        """The share of decisions the learner took against the expert's label (where it agreed, who drove does
        not show)."""
        return float(np.mean(self.actions != self.labels)) if len(self.labels) else 0.0


def expert_label(sc: Scenario, experts: list[int], t_s: float, window_s: float, offset_s: float) -> int:
    """Returns the expert's choice for the window starting at t_s of an episode whose cycle is shifted by offset_s:
    the best static of the phase in force at the window's middle."""
    return experts[sc.phase_at(t_s + 0.5 * window_s, offset_s)]


def collect(system: SystemModel, cfg: DQNConfig, experts: list[int], net: torch.nn.Module | None, beta: float,
            episodes: int, rng: np.random.Generator) -> Visited:
    """Returns the states visited in `episodes` scenario episodes with the expert's labels, each decision taken by
    the expert with probability beta, else by `net` (DAgger's mixture)."""
    sc = cfg.env.scenario
    assert sc is not None
    env = AsetEnv(system, replace(cfg.env, baseline_policy=None, theta=0.0))
    xs, ys, acts, agree, n = [], [], [], 0, 0
    for _ in range(episodes):
        obs, _ = env.reset(seed=int(rng.integers(2**31)))
        done = False
        while not done:
            assert env.sim is not None
            label = expert_label(sc, experts, env.sim.t_s, cfg.env.decision_window_s, env.episode_offset_s)
            mine = None
            if net is not None:
                with torch.no_grad():
                    mine = int(net(torch.from_numpy(obs[None])).argmax(dim=1).item())
                agree, n = agree + int(mine == label), n + 1
            action = label if mine is None or rng.random() < beta else mine
            xs.append(obs)
            ys.append(label)
            acts.append(action)
            obs, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
    return Visited(np.asarray(xs, dtype=np.float32), np.asarray(ys, dtype=np.int64), np.asarray(acts, dtype=np.int64),
                   agree / max(n, 1))


def mixing(i: int) -> float:
    """Returns beta of DAgger round i: the probability that the expert takes a decision (round 0: always)."""
    return 0.5 ** i


def dagger(system: SystemModel, cfg: DQNConfig, experts: list[int], rounds: int, episodes: int, epochs: int,
           engine: Engine = SERIAL) -> tuple[TrainResult, list[dict]]:
    """Runs DAgger (round 0: the expert drives), calibrates the guard; writes the agent under cfg.out_dir if set.
    Returns the result and one record per round (beta, pairs so far, the learner's agreement with the expert on
    the states it visited, the share of decisions it took against the expert, the fit's accuracy)."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(cfg.seed)
    t0 = time.monotonic()
    x = np.zeros((0, *AsetEnv(system, cfg.env).spec_state.shape), dtype=np.float32)
    y = np.zeros(0, dtype=np.int64)
    net, losses, history = None, [], []
    for i in range(rounds):
        beta = mixing(i)
        v = collect(system, cfg, experts, net, beta, episodes, rng)
        agree = v.agreement
        x, y = np.concatenate([x, v.obs]), np.concatenate([y, v.labels])
        net, losses = fit(x, y, cfg, epochs, balanced=False)
        with torch.no_grad():
            acc = float((net(torch.from_numpy(x)).argmax(dim=1).numpy() == y).mean())
        history.append({"round": i, "beta": beta, "pairs": len(y), "learner_agreement_on_visited": agree if i else None,
                        "learner_overrides": v.overrides, "fit_accuracy": acc, "wall_s": round(time.monotonic() - t0, 1)})
        print(f"round {i}: beta {beta:g}, {len(y)} pairs, learner agreed with the expert on "
              f"{'-' if not i else f'{100 * agree:.1f} %'} of its states, fit accuracy {100 * acc:.1f} %", flush=True)
    assert net is not None
    train_s = time.monotonic() - t0
    spec = AsetEnv(system, cfg.env).spec_state
    guard = calibrate_guard(net, system, cfg, cfg.env, engine)
    meta = agent_meta(spec, cfg, cfg.env, guard, len(y), train_s)
    result = TrainResult(net=net, meta=meta, steps=len(y), episodes=rounds * episodes, train_s=train_s,
                         losses=losses, episode_returns=[], guard=guard)
    if cfg.out_dir:
        result.files = write_outputs(Path(cfg.out_dir), result, cfg)
    return result, history


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", required=True, help="scenario file or name in workload/scenarios/")
    ap.add_argument("--topo", default="full-edge", help="topology (default full-edge)")
    ap.add_argument("--profiles", default=None, help="profile file (default: the default profile)")
    ap.add_argument("--rounds", type=int, default=4, help="DAgger rounds, the first driven by the expert (default 4)")
    ap.add_argument("--episodes", type=int, default=4, help="scenario episodes per round (default 4)")
    ap.add_argument("--expert-seeds", default="2001", help="seeds of the runs that pick each phase's best static "
                    "(default 2001; held out from evaluation's 1-3 and the guard's)")
    ap.add_argument("--epochs", type=int, default=300, help="full-batch epochs per fit (default 300)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the episodes and the weights (default 1)")
    ap.add_argument("--out", required=True, help="folder for agent.pt, agent.onnx, train.json")
    add_engine_arguments(ap, what="the expert's and the guard's runs")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.episodes < 1:
        ap.error("--rounds and --episodes must be >= 1")
    try:  # a file or a key at fault (scenario, topology, profile): one line, status 2
        sc = load_scenario(args.scenario)
        system = build_system(load_topology(args.topo), load_profiles(args.profiles))
        sc.events(system.topology, sc.period_s)  # its links against the topology
        seeds = [int(s) for s in args.expert_seeds.split(",") if s.strip()]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    engine = engine_from_args(args)
    base = DQNConfig()
    cfg = DQNConfig(topology=system.topology.name, lambda_per_min=mean_lambda(sc), seed=args.seed,
                    out_dir=args.out, progress=False, env=replace(base.env, scenario=sc))
    experts, success = phase_experts(system, sc, seeds, cfg.validation_duration_s, engine)
    for k, p in enumerate(sc.phases):
        print(f"phase {k} ({p.duration_s:g} s at lambda {p.lambda_per_min:g}): expert {POLICY_NAMES[experts[k]]}; "
              + ", ".join(f"{n} {100 * success[i, k]:.2f}" for i, n in enumerate(POLICY_NAMES)), flush=True)
    result, history = dagger(system, cfg, experts, args.rounds, args.episodes, args.epochs, engine)
    out = Path(args.out)
    summary = json.loads((out / "train.json").read_text())
    summary["dagger"] = {"expert": "the best static of the scenario's phase", "expert_seeds": seeds,
                         "phase_experts": [POLICY_NAMES[e] for e in experts],
                         "phase_success": {n: success[i].tolist() for i, n in enumerate(POLICY_NAMES)},
                         "rounds": history, "epochs": args.epochs}
    (out / "train.json").write_text(json.dumps(summary, indent=1) + "\n")
    g = result.guard
    assert g is not None
    print(f"{g.summary()}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
