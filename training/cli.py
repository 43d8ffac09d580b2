"""`run_testbed.py train` and `run_testbed.py evaluate`: ASET's training and its comparison with the statics.

`register(subparsers)` adds both commands; torch is imported only by `train`, so `evaluate` runs an exported
agent with ONNX Runtime alone.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    t = subparsers.add_parser("train", help="train an ASET agent in the simulator (checkpoint + ONNX + log)")
    t.add_argument("--topo", default="full-edge", help="topology name (topologies/NAME.yaml) or file")
    t.add_argument("--lambda", dest="lam", type=float, default=60.0,
                   help="nominal new streams per minute per antenna; episodes draw 0.5x..1.8x (default 60)")
    budget = t.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=None, help="stop after this many wall-clock minutes")
    budget.add_argument("--steps", type=int, default=None, help="decisions to train for (default 40000)")
    t.add_argument("--seed", type=int, default=1, help="seed of episodes, exploration and weights (default 1)")
    t.add_argument("--out", default="runs/aset", help="folder for agent.pt, agent.onnx, train_log.csv, train.json")
    t.add_argument("--profiles", default=None, help="profile file (default: measured if present, else provisional)")
    t.add_argument("--validation-duration", type=float, default=300.0,
                   help="seconds of each held-out run that calibrates the fallback guard (default 300)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    e = subparsers.add_parser("evaluate", help="compare an ASET agent with all seven static policies")
    e.add_argument("--agent", required=True, help="agent.onnx, or the folder `train --out` wrote")
    e.add_argument("--topo", default="full-edge", help="topology the agent was trained on")
    e.add_argument("--lambdas", default="20,40,60,80,100", help="comma-separated lambdas (default 20,40,60,80,100)")
    e.add_argument("--seeds", default="1,2,3", help="comma-separated seeds of traces and runs (default 1,2,3)")
    e.add_argument("--duration", type=float, default=600.0, help="seconds of traffic per run (default 600)")
    e.add_argument("--out", default=None, help="folder for evaluation.json and the PNG plots")
    e.add_argument("--no-guard", action="store_true", help="plain greedy agent, without the fallback guard")
    e.add_argument("--profiles", default=None, help="profile file (default: the one the agent was trained with)")
    e.set_defaults(func=cmd_evaluate)


def _numbers(text: str, kind: type) -> list:
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{text!r}: expected comma-separated numbers") from None


def cmd_train(args: argparse.Namespace) -> int:
    from scheduler.core import POLICY_NAMES
    from scheduler.profiles import load_profiles
    from scheduler.system import build_system
    from topologies import load_topology
    from training.config import DQNConfig
    from training.train import train

    system = build_system(load_topology(args.topo), load_profiles(args.profiles))
    # --minutes: epsilon decays with the time used; 85% of the budget trains, the rest calibrates the guard
    steps = args.steps if args.steps is not None else (10**9 if args.minutes else DQNConfig.total_steps)
    cfg = DQNConfig(topology=args.topo, lambda_per_min=args.lam, seed=args.seed, total_steps=steps,
                    time_budget_s=args.minutes * 60.0 * 0.85 if args.minutes else None, out_dir=args.out,
                    validation_duration_s=args.validation_duration, progress=not args.no_progress)
    print(f"training ASET on {system.topology.name} ({system.n_resources} resources), lambda {args.lam:g} "
          f"(episodes {cfg.lambda_range_per_min[0]:g}..{cfg.lambda_range_per_min[1]:g}), seed {args.seed}")
    result = train(cfg, system)
    g = result.guard
    print(f"{result.steps} decisions, {result.episodes} episodes in {result.train_s:.0f} s")
    if g is not None:
        margin = "never (always the fallback)" if g.guard_margin == float("inf") else f"margin {g.guard_margin:g}"
        print(f"guard: fallback {POLICY_NAMES[g.fallback_policy]}, agent overrides it at {margin}")
    for key, path in result.files.items():
        print(f"  {key}: {path}")
    return 0


def _agent_path(text: str) -> Path:
    p = Path(text)
    if p.is_dir():
        p = p / "agent.onnx"
    if p.suffix == ".pt":
        p = p.with_suffix(".onnx")
    if not p.is_file():
        raise ValueError(f"{text}: no ONNX agent there (expected agent.onnx, as `train --out` writes)")
    return p


def cmd_evaluate(args: argparse.Namespace) -> int:
    from scheduler.aset.policy import OnnxPolicy
    from scheduler.profiles import load_profiles
    from scheduler.system import build_system
    from topologies import load_topology
    from training.evaluate import evaluate, format_table, plot, write_json

    agent = OnnxPolicy(_agent_path(args.agent), guard=not args.no_guard)
    profiles = args.profiles
    if profiles is None and agent.meta.profiles and Path(agent.meta.profiles).is_file():
        profiles = agent.meta.profiles  # the profile file the agent was trained with
    system = build_system(load_topology(args.topo), load_profiles(profiles))
    lambdas, seeds = _numbers(args.lambdas, float), _numbers(args.seeds, int)
    t0 = time.monotonic()
    ev = evaluate(system, agent, lambdas, seeds, args.duration)
    print(format_table(ev))
    print(f"\n{len(lambdas) * len(seeds) * 8} runs in {time.monotonic() - t0:.0f} s")
    if args.out:
        out = Path(args.out)
        print(f"wrote {write_json(ev, out / f'{system.topology.name}_evaluation.json')}")
        for path in plot(ev, out):
            print(f"wrote {path}")
    return 0
