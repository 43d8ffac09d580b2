"""Behaviour cloning of the rollout oracle: an ASET agent trained to pick, in each state, the oracle's policy.

    .venv/bin/python -m training.imitation --cases runs/oracle-fe [--cases DIR ...] --topo full-edge \\
        --out runs/aset/bc-full-edge [--epochs 300] [--seed 1] [--workers N]

This file owns the imitation learner. It replays every oracle case file (`experiments/aset_oracle.py --out`)
in the environment the agent is evaluated in (`training.rollout.agent_env`, the oracle's own), with the
oracle's actions, and records the agent's observation before each decision: the pairs (state, oracle choice).
The replay must end with the oracle's on-time count (else the case came from another code, profile or trace:
refused). The Q-network of DQN (`training.network`) is fitted to them as a classifier (cross-entropy on its
outputs, which then serve as Q-values), the fallback guard is calibrated as after DQN
(`training.train.calibrate_guard`) and the agent is written as `train` writes it (checkpoint, ONNX, train.json),
so `evaluate` and the live run take it unchanged.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from scheduler.core import POLICY_NAMES
from scheduler.profiles import load_profiles
from scheduler.system import SystemModel, build_system
from simulator.gym_env import AsetEnv
from topologies import load_topology
from training.config import DQNConfig
from training.network import QNetwork
from training.rollout import SIM_WINDOW_S, EvalCase, agent_env
from training.sweep import SERIAL, Engine, add_engine_arguments, engine_from_args
from training.train import TrainResult, agent_meta, calibrate_guard, write_outputs


def oracle_pairs(system: SystemModel, case: dict, cfg: DQNConfig) -> tuple[np.ndarray, np.ndarray]:
    """Returns the (observation, oracle action) pairs of one oracle case file's content, replayed."""
    env_cfg = replace(cfg.env, sim_window_s=SIM_WINDOW_S, theta=0.0, baseline_policy=None)
    if case["decision_window_s"] != env_cfg.decision_window_s:
        raise ValueError(f"oracle case T = {case['decision_window_s']} s, the agent's is {env_cfg.decision_window_s} s")
    ec = EvalCase(float(case["lambda"]), int(case["seed"]), float(case["duration_s"]))
    env, obs = agent_env(system, ec.trace(system), ec, env_cfg)
    xs, ys = [], []
    for a in case["oracle"]["actions"]:
        xs.append(obs)
        ys.append(int(a))
        obs, *_ = env.step(int(a))
    assert env.sim is not None
    ontime = int(env.sim.tally.counts[..., 0].sum())
    if ontime != case["oracle"]["ontime"]:
        raise ValueError(f"lambda {case['lambda']} seed {case['seed']}: the replay answers {ontime} queries on time, "
                         f"the oracle {case['oracle']['ontime']}: another code, profile or trace")
    return np.asarray(xs, dtype=np.float32), np.asarray(ys, dtype=np.int64)


def fit(x: np.ndarray, y: np.ndarray, cfg: DQNConfig, epochs: int, balanced: bool = True) -> tuple[QNetwork, list[float]]:
    """Returns the Q-network fitted to predict y from x (full-batch Adam on the cross-entropy; `balanced`: each
    class weighted by the inverse of its count, so that rare choices are not drowned by load-balancing's)."""
    torch.manual_seed(cfg.seed)
    k, f = x.shape[1:]
    net = QNetwork(k, f, len(POLICY_NAMES), cfg.channels, cfg.kernel_size, cfg.hidden, cfg.dueling)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate, weight_decay=1e-4)
    counts = np.bincount(y, minlength=len(POLICY_NAMES)).astype(np.float64)
    weight = torch.tensor(np.where(counts > 0, len(y) / np.maximum(counts, 1) / np.count_nonzero(counts), 0.0),
                          dtype=torch.float32) if balanced else None
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    losses = []
    for _ in range(epochs):
        loss = torch.nn.functional.cross_entropy(net(xt), yt, weight=weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.item()))
    return net.eval(), losses


def imitate(system: SystemModel, cases: list[dict], cfg: DQNConfig, epochs: int,
            engine: Engine = SERIAL, balanced: bool = True) -> TrainResult:
    """Fits an agent to the oracle cases, calibrates its guard; writes it under cfg.out_dir if set."""
    torch.set_num_threads(1)
    t0 = time.monotonic()
    pairs = [oracle_pairs(system, c, cfg) for c in cases]
    x = np.concatenate([p[0] for p in pairs])
    y = np.concatenate([p[1] for p in pairs])
    net, losses = fit(x, y, cfg, epochs, balanced)
    with torch.no_grad():
        acc = float((net(torch.from_numpy(x)).argmax(dim=1).numpy() == y).mean())
    print(f"{len(y)} oracle decisions from {len(cases)} case(s); "
          f"training accuracy {100 * acc:.1f} %; labels per policy "
          f"{dict(zip(POLICY_NAMES, np.bincount(y, minlength=len(POLICY_NAMES)).tolist(), strict=True))}", flush=True)
    train_s = time.monotonic() - t0
    env_cfg = replace(cfg.env, lambda_range_per_min=cfg.lambda_range_per_min)
    spec = AsetEnv(system, env_cfg).spec_state
    guard = calibrate_guard(net, system, cfg, env_cfg, engine)
    meta = agent_meta(spec, cfg, env_cfg, guard, len(y), train_s)
    result = TrainResult(net=net, meta=meta, steps=len(y), episodes=len(cases), train_s=train_s, losses=losses,
                         episode_returns=[], guard=guard)
    if cfg.out_dir:
        out = Path(cfg.out_dir)
        result.files = write_outputs(out, result, cfg)
        summary = json.loads((out / "train.json").read_text())
        summary["imitation"] = {"oracle_cases": [[c["lambda"], c["seed"], c["duration_s"]] for c in cases],
                                "decisions": len(y), "epochs": epochs, "balanced": balanced,
                                "training_accuracy": acc}
        (out / "train.json").write_text(json.dumps(summary, indent=1) + "\n")
    return result


def read_cases(folders: list[Path], topology: str) -> list[dict]:
    """Returns the oracle cases of `topology` in the folders' case_*.json files (placebo runs left out); raises
    ValueError naming the folder or file at fault."""
    cases = []
    for d in folders:
        if not d.is_dir():
            raise ValueError(f"--cases {d}: no such folder")
        for p in sorted(d.glob("case_*.json")):
            if "placebo" in p.name:
                continue
            try:
                c = json.loads(p.read_text())
            except (OSError, ValueError) as e:
                raise ValueError(f"{p}: not an oracle case file ({e})") from None
            if not isinstance(c, dict) or not isinstance(c.get("oracle"), dict):
                raise ValueError(f"{p}: not an oracle case file (no 'oracle' key)")
            if c.get("topology") == topology:
                cases.append(c)
    if not cases:
        raise ValueError(f"--cases: no oracle case of topology {topology} in {', '.join(map(str, folders))}")
    return cases


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", action="append", required=True, help="a folder of oracle case_*.json files (repeatable)")
    ap.add_argument("--topo", default="full-edge", help="topology of the cases (default full-edge)")
    ap.add_argument("--profiles", default=None, help="profile file (default: the default profile)")
    ap.add_argument("--lambda", dest="lam", type=float, default=DQNConfig.lambda_per_min,
                    help="nominal lambda: the guard's held-out lambdas are DQNConfig's around it (default 60)")
    ap.add_argument("--epochs", type=int, default=300, help="full-batch epochs (default 300)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the weights (default 1)")
    ap.add_argument("--unbalanced", action="store_true", help="plain cross-entropy (default: class-balanced)")
    ap.add_argument("--out", required=True, help="folder for agent.pt, agent.onnx, train.json")
    add_engine_arguments(ap, what="the guard's held-out runs")
    args = ap.parse_args(argv)
    try:  # a file or a key at fault (topology, profile, case files, a case that does not replay): one line, 2
        system = build_system(load_topology(args.topo), load_profiles(args.profiles))
        cases = read_cases([Path(d) for d in args.cases], system.topology.name)
        cfg = DQNConfig(topology=args.topo, lambda_per_min=args.lam, seed=args.seed, out_dir=args.out,
                        progress=False)
        result = imitate(system, cases, cfg, args.epochs, engine_from_args(args), balanced=not args.unbalanced)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    g = result.guard
    assert g is not None
    print(f"{g.summary()}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
