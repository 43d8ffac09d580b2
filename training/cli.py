"""`run_testbed.py train` and `run_testbed.py evaluate`: ASET's training and its comparison with the statics.

`register(subparsers)` adds both commands; torch is imported only by `train`, so `evaluate` runs an exported
agent with ONNX Runtime alone. `train`'s defaults are DQNConfig's.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from analysis.resultspage import add_results_page_argument
from scheduler.names import PROFILES_OPTION_HELP
from training.config import DQNConfig
from training.sweep import add_engine_arguments, engine_from_args, positive_int
from workload.args import add_lambda_argument, add_seed_argument, add_sweep_arguments, sweep_from_args

EVALUATE_LAMBDAS = "20,40,60,80,100"
"""`evaluate`: the paper's loads, with its seeds 1,2,3 and 600 s per run (add_sweep_arguments' defaults)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    t = subparsers.add_parser("train", help="train an ASET agent in the simulator (checkpoint + ONNX + log)")
    t.add_argument("--topo", default="full-edge", help="topology name (topologies/NAME.yaml) or file")
    add_lambda_argument(t, default=f"{DQNConfig.lambda_per_min:g}", number_only=True,
                        what=f"nominal new streams per minute per antenna; episodes draw "
                             f"{DQNConfig.lambda_low_factor:g}x..{DQNConfig.lambda_high_factor:g}x")
    budget = t.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=None, help="stop after this many wall-clock minutes")
    budget.add_argument("--steps", type=int, default=None,
                        help=f"decisions to train for (default {DQNConfig.total_steps})")
    add_seed_argument(t, default=DQNConfig.seed, what="seed of episodes, exploration and weights")
    t.add_argument("--out", default="runs/aset", help="folder for agent.pt, agent.onnx, train_log.csv, train.json")
    t.add_argument("--profiles", default=None, help=PROFILES_OPTION_HELP)
    t.add_argument("--validation-duration", type=float, default=DQNConfig.validation_duration_s,
                   help=f"seconds of each held-out run that calibrates the fallback guard "
                        f"(default {DQNConfig.validation_duration_s:g})")
    t.add_argument("--envs", type=positive_int, default=DQNConfig.n_envs,
                   help=f"environments collecting episodes side by side, stepping in up to --workers processes "
                        f"(default {DQNConfig.n_envs}; the agent depends on it and on the seed, not on --workers)")
    add_engine_arguments(t, what="the environments and the guard's held-out runs",
                         ray_what="the guard's held-out runs (the environments step in local processes)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    e = subparsers.add_parser("evaluate", help="compare an ASET agent with all seven static policies")
    e.add_argument("--agent", required=True, help="agent.onnx, or the folder `train --out` wrote")
    e.add_argument("--topo", default="full-edge", help="topology the agent was trained on")
    add_sweep_arguments(e, lambdas_default=EVALUATE_LAMBDAS)
    e.add_argument("--out", default=None, help="folder for evaluation.json and the PNG plots")
    e.add_argument("--no-guard", action="store_true", help="plain greedy agent, without the fallback guard")
    e.add_argument("--profiles", default=None, help="profile file (default: the one the agent was trained with)")
    add_engine_arguments(e, what="the runs")
    add_results_page_argument(e, "aset-evaluation")
    e.set_defaults(func=cmd_evaluate)


def cmd_train(args: argparse.Namespace) -> int:
    from scheduler.profiles import load_profiles
    from scheduler.system import build_system
    from topologies import load_topology
    from training.train import train

    system = build_system(load_topology(args.topo), load_profiles(args.profiles))
    # --minutes: epsilon decays with the time used; 85% of the budget trains, the rest calibrates the guard
    steps = args.steps if args.steps is not None else (10**9 if args.minutes else DQNConfig.total_steps)
    cfg = DQNConfig(topology=args.topo, lambda_per_min=args.lambda_per_min, seed=args.seed, total_steps=steps,
                    time_budget_s=args.minutes * 60.0 * 0.85 if args.minutes else None, out_dir=args.out,
                    validation_duration_s=args.validation_duration, progress=not args.no_progress, n_envs=args.envs)
    engine = engine_from_args(args)
    print(f"training ASET on {system.topology.name} ({system.n_resources} resources), lambda {cfg.lambda_per_min:g} "
          f"(episodes {cfg.lambda_range_per_min[0]:g}..{cfg.lambda_range_per_min[1]:g}), seed {args.seed}, "
          f"{cfg.n_envs} environment(s); parallel parts: {engine.describe()}")
    result = train(cfg, system, engine)
    g = result.guard
    print(f"{result.steps} decisions, {result.episodes} episodes in {result.train_s:.0f} s")
    if g is not None:
        print(g.summary())
    for key, path in result.files.items():
        print(f"  {key}: {path}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from analysis.resultspage import repo_relative, write_results_page
    from scheduler.profiles import load_profiles
    from scheduler.system import build_system
    from topologies import load_topology
    from training.evaluate import AgentFile, evaluate, format_table, plot, trained_profiles, write_json

    agent = AgentFile.read(args.agent, guard=not args.no_guard)
    meta = agent.policy().meta
    profiles = args.profiles if args.profiles is not None else trained_profiles(meta)  # default: the agent's own
    system = build_system(load_topology(args.topo), load_profiles(profiles))
    sweep = sweep_from_args(args)
    lambdas, seeds = list(sweep.lambdas_per_min), list(sweep.seeds)
    engine = engine_from_args(args)
    t0 = time.monotonic()
    ev = evaluate(system, agent, lambdas, seeds, sweep.duration_s, engine=engine)
    table = format_table(ev)
    runs = f"{len(lambdas) * len(seeds) * 8} runs in {time.monotonic() - t0:.0f} s ({engine.describe()})"
    print(table)
    print(f"\n{runs}")
    if args.out:
        out = Path(args.out)
        print(f"wrote {write_json(ev, out / f'{system.topology.name}_evaluation.json')}")
        for path in plot(ev, out):
            print(f"wrote {path}")
    if args.results_page:
        guard = "without the guard (plain greedy)" if args.no_guard else "with its fallback guard"
        body = (f"The agent `{repo_relative(agent.path)}` {guard} against the seven static policies on "
                f"{system.topology.name}, profiles `{repo_relative(system.profiles.source)}`: every policy on the "
                f"same traces and simulator seeds, counts pooled over the seeds.\n\n```text\n{table}\n```\n\n"
                f"{runs}.\n")
        print(f"wrote {write_results_page(args.results_page, f'ASET evaluation on {system.topology.name}', body)}")
    return 0
