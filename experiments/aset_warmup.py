"""A causal start rule next to the clairvoyant oracle (aset_oracle.py): policy P for the first k decision
windows of an episode, then load-balancing. The oracle earned much of its gain while the system filled up
from empty, mostly with farthest and cheaper; this measures how much of that a rule that needs no
knowledge of the future keeps.

    .venv/bin/python experiments/aset_warmup.py --topo full-edge --lambdas 60,100 --seeds 1,2,3 \\
        [--policies farthest,cheaper,random-proportional-load] [--windows 1,2,3] [--agent runs/aset/full-edge] \\
        [--workers N | --ray ADDRESS] [--results-page]

Same simulations as `evaluate` and the oracle (oracle_search.agent_sim: the agent's T and profile when
--agent is given), run as a sweep's cases (every local core by default, or a Ray cluster). Prints success
per seed and the mean of seeds, with the difference from load-balancing.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.resultspage import add_results_page_argument, repo_relative, write_results_page  # noqa: E402
from experiments.oracle_search import BASE, STUDY_LAMBDAS, advance, agent_sim, env_config  # noqa: E402
from scheduler.core import POLICY_NAMES  # noqa: E402
from scheduler.profiles import load_profiles  # noqa: E402
from scheduler.system import SystemModel, build_system  # noqa: E402
from simulator.gym_env import EnvConfig  # noqa: E402
from topologies.loader import load_topology  # noqa: E402
from training.rollout import EvalCase, success_of  # noqa: E402
from training.sweep import add_engine_arguments, engine_from_args, run_cases  # noqa: E402
from workload.args import add_sweep_arguments, sweep_from_args  # noqa: E402


@dataclass(frozen=True)
class WarmupRun:
    """One run: the case, the start policy's index and the decision windows it binds (0: the base alone)."""

    case: EvalCase
    start_policy: int
    windows: int


def warmup_success(setup: tuple[SystemModel, EnvConfig], run: WarmupRun) -> float:
    """Returns the success of the start policy for `windows` decision windows, then the base policy to the
    end, in the simulation the agent drives (a sweep's case)."""
    system, cfg = setup
    sim = agent_sim(system, run.case, cfg)
    advance(sim, run.start_policy, run.windows * int(round(cfg.decision_window_s / cfg.sim_window_s)))
    advance(sim, POLICY_NAMES.index(BASE), None)
    return success_of(sim)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--topo", default="full-edge")
    add_sweep_arguments(ap, lambdas_default=STUDY_LAMBDAS)
    ap.add_argument("--policies", default="farthest,cheaper,random-proportional-load")
    ap.add_argument("--windows", default="1,2,3", help="decision windows the start policy binds")
    ap.add_argument("--agent", default=None, help="agent dir or .onnx: its decision window and profile")
    add_engine_arguments(ap)
    add_results_page_argument(ap, "aset-warmup")
    args = ap.parse_args(argv)
    policies = args.policies.split(",")
    unknown = [p for p in policies if p not in POLICY_NAMES]
    if unknown:
        ap.error(f"--policies: unknown {', '.join(unknown)}; known: {', '.join(POLICY_NAMES)}")
    sweep = sweep_from_args(args)
    seeds_text = ",".join(str(s) for s in sweep.seeds)
    windows = [int(x) for x in args.windows.split(",")]
    cfg, profiles = env_config(args.agent)
    system = build_system(load_topology(args.topo), load_profiles(profiles))
    base = POLICY_NAMES.index(BASE)
    t0 = time.perf_counter()
    lines = [f"{args.topo}, {sweep.duration_s:.0f} s per run, T = {cfg.decision_window_s:g} s; success % per seed "
             f"{seeds_text}, mean of seeds (difference from {BASE})"]
    print(lines[-1])
    starts = [(base, 0)] + [(POLICY_NAMES.index(name), k) for name in policies for k in windows]
    runs = [WarmupRun(EvalCase(lam, seed, sweep.duration_s), p, k) for lam in sweep.lambdas_per_min
            for seed in sweep.seeds for p, k in starts]
    engine = engine_from_args(args)
    done = iter(run_cases(warmup_success, runs, (system, cfg), engine, cost=lambda r: r.case.relative_cost))
    for lam in sweep.lambdas_per_min:  # the runs' order: lambda, seed, start rule
        rows: dict[str, list[float]] = {}
        for _seed in sweep.seeds:
            for p, k in starts:
                label = BASE if k == 0 else f"{POLICY_NAMES[p]} x{k}, then {BASE}"
                rows.setdefault(label, []).append(next(done))
        ref = sum(rows[BASE]) / len(sweep.seeds)
        for label, values in rows.items():
            mean = sum(values) / len(values)
            lines.append(f"lambda {lam:g}  {label:48s} " + " ".join(f"{100 * v:6.2f}" for v in values)
                         + f"   mean {100 * mean:6.2f} ({100 * (mean - ref):+.2f})")
            print(lines[-1], flush=True)
    if args.results_page:
        body = (f"Policy P for the first k decision windows of an episode, then {BASE}: the causal start rule "
                f"next to the clairvoyant oracle (experiments/aset_oracle.py). Profiles "
                f"`{repo_relative(system.profiles.source)}`{f', agent `{args.agent}`' if args.agent else ''}.\n\n```text\n"
                + "\n".join(lines) + f"\n```\n\nRun time {time.perf_counter() - t0:.0f} s.\n")
        print(f"wrote {write_results_page(args.results_page, 'A causal start rule: P for k windows, then ' + BASE, body)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
