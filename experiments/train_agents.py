"""The shipped ASET agents: train one per topology, evaluate it against the seven statics, write the page.

    .venv/bin/python experiments/train_agents.py [--topos full-edge,co-dc-cloud,dc-cloud] [--lambda 60] \\
        [--minutes 20 | --steps N] [--seed 1] [--out agents] [--lambdas 20,60,100] [--seeds 1,2,3] \\
        [--duration 600] [--workers N | --ray ADDRESS] [--skip-train] [--results-page [NAME]]

This file owns the rebuild of the agents the repository ships (`agents/<topology>/`: what `run_testbed.py
train --out` writes, the checkpoint excepted) and their evaluation page (docs/results/aset-evaluation.md by
default). Per topology it runs `training.train.train` with `run_testbed.py train`'s defaults (the same
DQNConfig, the same split of a `--minutes` budget: 85 % training, the rest calibrating the guard), then
`training.evaluate.evaluate` as `run_testbed.py evaluate` does (the same traces, seeds and pooling). Every
agent is trained at one nominal lambda (`--lambda`, default 60; episodes draw 0.5-1.8 times it, DQNConfig's
range), so its rows at other lambdas are the generalisation figures. `--skip-train` evaluates the agents
already in `--out`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.resultspage import add_results_page_argument, repo_relative, write_results_page  # noqa: E402
from scheduler.core import POLICY_NAMES  # noqa: E402
from scheduler.profiles import load_profiles  # noqa: E402
from scheduler.system import build_system  # noqa: E402
from topologies import load_topology  # noqa: E402
from training.config import DQNConfig  # noqa: E402
from training.evaluate import ASET, AgentFile, Evaluation, evaluate, format_table  # noqa: E402
from training.sweep import CaseRunner, add_engine_arguments, engine_from_args  # noqa: E402
from workload.args import add_sweep_arguments, sweep_from_args  # noqa: E402

TOPOLOGIES = "full-edge,co-dc-cloud,dc-cloud"
LAMBDAS = "20,60,100"
"""The loads of the policy tables: below, at and above the training lambda (60)."""
SHIPPED = ("agent.onnx", "train.json", "train_log.csv")
"""What a shipped agent folder holds (`train --out`'s files but the torch checkpoint, which only resumes)."""


@dataclass(frozen=True)
class AgentRow:
    """One topology's agent at one lambda: its success and the best static's, pooled over the seeds (%)."""

    topology: str
    lambda_per_min: float
    aset: float
    best_static: str
    best_static_success: float
    load_balancing: float
    windows_not_fallback: float
    """% of the agent's decision windows whose policy is not its guard's fallback."""


def rows(ev: Evaluation, fallback: int) -> list[AgentRow]:
    """Returns the summary row of every lambda of one evaluation."""
    out = []
    for lam, by_policy in ev.results.items():
        best = ev.best_static(lam)
        acts = [a for seq in by_policy[ASET].actions for a in seq]
        other = 100.0 * sum(a != fallback for a in acts) / max(1, len(acts))
        out.append(AgentRow(ev.topology, lam, 100 * by_policy[ASET].overall.success, best,
                            100 * by_policy[best].overall.success,
                            100 * by_policy["load-balancing"].overall.success, other))
    return out


def summary_table(all_rows: list[AgentRow], train_lambda: float) -> str:
    lines = ["| topology | lambda | ASET | best static | best static's success | ASET - best static (pts) | "
             "load-balancing | windows off the fallback (%) |", "|" + "---|" * 8]
    for r in all_rows:
        lam = f"{r.lambda_per_min:g}" + (" (trained)" if r.lambda_per_min == train_lambda else "")
        lines.append(f"| {r.topology} | {lam} | {r.aset:.2f} | {r.best_static} | {r.best_static_success:.2f} | "
                     f"{r.aset - r.best_static_success:+.2f} | {r.load_balancing:.2f} | {r.windows_not_fallback:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--topos", default=TOPOLOGIES, help=f"comma-separated topologies (default {TOPOLOGIES})")
    ap.add_argument("--lambda", dest="train_lambda", type=float, default=DQNConfig.lambda_per_min,
                    help=f"nominal training lambda (default {DQNConfig.lambda_per_min:g})")
    budget = ap.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=None, help="wall-clock training budget per agent "
                        "(default 20 unless --steps)")
    budget.add_argument("--steps", type=int, default=None, help="decisions to train each agent for")
    ap.add_argument("--seed", type=int, default=DQNConfig.seed, help="training seed (default 1)")
    ap.add_argument("--out", default="agents", help="folder of the agent folders, one per topology (default agents)")
    ap.add_argument("--profiles", default=None, help="profile file (default: the default profile)")
    ap.add_argument("--validation-duration", type=float, default=600.0,
                    help="seconds of each held-out run calibrating the guard (default 600, the evaluation's run "
                         "length: 300-s runs let through an agent 1.85 points below load-balancing on 600-s runs)")
    ap.add_argument("--checkpoints", default="runs/agents-checkpoints",
                    help="where each agent's torch checkpoint goes (not shipped; default runs/agents-checkpoints)")
    ap.add_argument("--skip-train", action="store_true", help="only evaluate the agents already in --out")
    add_sweep_arguments(ap, lambdas_default=LAMBDAS)
    add_engine_arguments(ap)
    add_results_page_argument(ap, "aset-evaluation")
    args = ap.parse_args(argv)
    minutes = args.minutes if args.minutes is not None or args.steps is not None else 20.0
    sweep = sweep_from_args(args)
    profiles = load_profiles(args.profiles)
    engine = engine_from_args(args)
    sections, all_rows = [], []
    t0 = time.perf_counter()
    with CaseRunner(engine) as runner:
        for topo in (t.strip() for t in args.topos.split(",") if t.strip()):
            system = build_system(load_topology(topo), profiles)
            folder = Path(args.out) / system.topology.name
            if not args.skip_train:
                train_agent(system, folder, Path(args.checkpoints) / system.topology.name, args.train_lambda, minutes,
                            args.steps, args.seed, args.validation_duration, engine)
            agent = AgentFile.read(folder)
            meta = agent.policy().meta
            t = time.perf_counter()
            ev = evaluate(system, agent, list(sweep.lambdas_per_min), list(sweep.seeds), sweep.duration_s,
                          engine=runner)
            table = format_table(ev)
            print(table, flush=True)
            all_rows += rows(ev, meta.fallback_policy)
            margin = "never" if meta.guard_margin == float("inf") else f"Q-margin {meta.guard_margin:g}"
            sections.append(
                f"## {system.topology.name}\n\nAgent `{repo_relative(folder)}`: {meta.trained_steps} decisions in "
                f"{meta.train_s / 60:.1f} min of training at lambda {meta.lambda_per_min:g}; guard fallback "
                f"{POLICY_NAMES[meta.fallback_policy]}, overridden at {margin}; evaluated in "
                f"{time.perf_counter() - t:.0f} s.\n\n```text\n{table}\n```")
    budget_text = f"{args.steps} decisions" if args.steps is not None else f"{minutes:g} min"
    print(summary_table(all_rows, args.train_lambda))
    if args.results_page:
        seeds = ",".join(str(s) for s in sweep.seeds)
        body = (f"One agent per topology, trained at lambda {args.train_lambda:g} (episodes draw 0.5-1.8 times it), "
                f"seed {args.seed}, a budget of {budget_text} per agent on this machine (shared with other work), the "
                f"guard calibrated on held-out runs of {args.validation_duration:g} s, "
                f"profiles `{repo_relative(profiles.source)}`; each evaluated with its fallback guard against the "
                f"seven static policies on the `evaluate` traces and simulator seeds ({seeds}, {sweep.duration_s:g} s "
                f"per run), counts pooled over the seeds; success in % of queries. The rows at lambdas other than "
                f"the training lambda are the generalisation figures.\n\n"
                f"{summary_table(all_rows, args.train_lambda)}\n\n" + "\n\n".join(sections)
                + f"\n\n{time.perf_counter() - t0:.0f} s in all ({engine.describe()}).\n")
        print(f"wrote {write_results_page(args.results_page, 'ASET agents against the static policies', body)}")
    return 0


def train_agent(system, folder: Path, checkpoints: Path, lam: float, minutes: float | None, steps: int | None,
                seed: int, validation_s: float, engine) -> None:
    """Trains one topology's agent as `run_testbed.py train` does and leaves only the shipped files in `folder`
    (the checkpoint goes to `checkpoints`)."""
    from training.train import train  # torch: only when training

    total = steps if steps is not None else 10**9
    cfg = DQNConfig(topology=system.topology.name, lambda_per_min=lam, seed=seed, total_steps=total,
                    time_budget_s=minutes * 60.0 * 0.85 if steps is None and minutes else None,
                    out_dir=str(folder), progress=False, validation_duration_s=validation_s)
    print(f"training {system.topology.name} at lambda {lam:g}, "
          f"{f'{steps} decisions' if steps is not None else f'{minutes:g} min'}", flush=True)
    result = train(cfg, system, engine)
    checkpoints.mkdir(parents=True, exist_ok=True)
    for p in folder.iterdir():
        if p.name not in SHIPPED:
            p.replace(checkpoints / p.name)
    g = result.guard
    print(json.dumps({"topology": system.topology.name, "steps": result.steps, "episodes": result.episodes,
                      "train_s": round(result.train_s), "fallback": POLICY_NAMES[g.fallback_policy] if g else None,
                      "margin": None if g is None else str(g.guard_margin)}), flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
