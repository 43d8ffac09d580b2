"""Sweep speed-up: `evaluate` (7 statics + an agent) serially and on N local worker processes in the same
run, with the ratio against the 1.7x goal on 2 cores and the results asserted bit-identical; then training's
parallel parts (episode collection from 2 environments, the guard's held-out runs) against their serial runs.

Run it alone on the machine (the shared hosts: under `flock -x /tmp/cpu.lock`); the page records the load.
    .venv/bin/python benchmarks/bench_sweep.py [--agent runs/aset/full-edge] [--workers 2] [--train-steps 2000]
        [--results-page]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.resultspage import add_results_page_argument, repo_relative, write_results_page  # noqa: E402
from scheduler.core import POLICY_NAMES  # noqa: E402
from scheduler.profiles import load_profiles  # noqa: E402
from scheduler.system import SystemModel, build_system  # noqa: E402
from topologies import load_topology  # noqa: E402
from training.cli import EVALUATE_LAMBDAS  # noqa: E402
from training.evaluate import AgentFile, Evaluation, evaluate  # noqa: E402
from training.sweep import SERIAL, Engine, usable_cores, warm_simulator  # noqa: E402
from workload.args import add_sweep_arguments, sweep_from_args  # noqa: E402

GOAL = 1.7
"""`evaluate` on 2 local cores at least this much faster than serially (issue 17)."""


def untrained_agent(system: SystemModel, folder: Path) -> Path:
    """Exports an untrained agent with the training defaults (T 5 s, K 4): its inference costs the trained one's."""
    from scheduler.aset.meta import AgentMeta
    from scheduler.aset.state import StateSpec
    from training.checkpoint import network_for
    from training.export import export_onnx

    spec = StateSpec.of(system, history=4)
    meta = AgentMeta(system.topology.name, spec.shape, system.n_resources, POLICY_NAMES, 5.0, 64, 2, 128, True, 1,
                     0.02)
    return export_onnx(network_for(meta).eval(), meta, folder / "agent.onnx")


def same(a: Evaluation, b: Evaluation) -> bool:
    return all(np.array_equal(r.counts, b.results[lam][p].counts) and r.actions == b.results[lam][p].actions
               for lam, by_policy in a.results.items() for p, r in by_policy.items())


def timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def bench_evaluate(system: SystemModel, agent: AgentFile, sweep, workers: int) -> list[str]:
    args = (system, agent, list(sweep.lambdas_per_min), list(sweep.seeds), sweep.duration_s)
    serial, t_serial = timed(evaluate, *args, engine=SERIAL)
    parallel, t_par = timed(evaluate, *args, engine=Engine(workers=workers))  # pool start-up included
    if not same(serial, parallel):
        raise AssertionError("evaluate: the parallel results differ from the serial ones")
    n = len(args[2]) * len(args[3]) * (len(POLICY_NAMES) + 1)
    ratio = t_serial / t_par
    verdict = "meets" if ratio >= GOAL else "BELOW"
    return [f"evaluate on {system.topology.name}: {n} runs of {sweep.duration_s:g} s (7 statics + the agent; lambdas "
            f"{','.join(f'{x:g}' for x in sweep.lambdas_per_min)}; seeds {','.join(map(str, sweep.seeds))})",
            f"  serial                 : {t_serial:7.1f} s",
            f"  {workers} local workers        : {t_par:7.1f} s (pool start-up included)",
            f"  speed-up               : {ratio:.2f}x ({verdict} the {GOAL:g}x goal on {workers} cores); "
            "counts and actions bit-identical"]


def bench_training(topo: str, steps: int, workers: int) -> list[str]:
    from training.config import DQNConfig
    from training.train import calibrate_guard, train

    system = build_system(load_topology(topo), load_profiles())
    cfg = DQNConfig(topology=topo, total_steps=steps, guard_margins=(), progress=False)
    one, t_one = timed(train, cfg, system, SERIAL)
    two_here, t_two_here = timed(train, replace(cfg, n_envs=2), system, SERIAL)
    two, t_two = timed(train, replace(cfg, n_envs=2), system, Engine(workers=workers))
    if two.losses != two_here.losses or two.episode_returns != two_here.episode_returns:
        raise AssertionError("training: 2 environments on workers differ from 2 environments in this process")
    lines = [f"training on {topo}: {steps} decisions (DQNConfig defaults otherwise, no guard)",
             f"  1 environment, serially             : {t_one:7.1f} s ({steps / t_one:.0f} decisions/s)",
             f"  2 environments, in this process     : {t_two_here:7.1f} s ({steps / t_two_here:.0f} decisions/s)",
             f"  2 environments, {workers} worker processes : {t_two:7.1f} s ({steps / t_two:.0f} decisions/s); "
             f"{t_one / t_two:.2f}x the 1-environment run, identical to the in-process one"]
    env_cfg = replace(cfg.env, lambda_range_per_min=cfg.lambda_range_per_min)
    guard_cfg = replace(cfg, guard_margins=DQNConfig.guard_margins)
    g1, t_g1 = timed(calibrate_guard, one.net, system, guard_cfg, env_cfg, SERIAL)
    g2, t_g2 = timed(calibrate_guard, one.net, system, guard_cfg, env_cfg, Engine(workers=workers))
    if (g1.static_success, g1.agent_success, g1.guard_margin) != (g2.static_success, g2.agent_success, g2.guard_margin):
        raise AssertionError("guard calibration: the parallel results differ from the serial ones")
    runs = len(g1.cases) * (len(POLICY_NAMES) + sum(m != float("inf") for m in guard_cfg.guard_margins))
    lines += [f"guard calibration: {runs} held-out runs of {cfg.validation_duration_s:g} s",
              f"  serial {t_g1:.1f} s, {workers} local workers {t_g2:.1f} s: {t_g1 / t_g2:.2f}x; results identical"]
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--topo", default="full-edge")
    ap.add_argument("--agent", default=None, help="a trained agent (default: an untrained network, same cost)")
    add_sweep_arguments(ap, lambdas_default=EVALUATE_LAMBDAS)
    ap.add_argument("--workers", type=int, default=2, help="local workers of the parallel runs (default 2)")
    ap.add_argument("--train-steps", type=int, default=2000,
                    help="decisions of each training run timed (default 2000; 0 skips training)")
    add_results_page_argument(ap, "sweep-speed")
    args = ap.parse_args()
    sweep = sweep_from_args(args)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    warm_simulator()  # numba's cache loaded here before either timing
    with tempfile.TemporaryDirectory() as tmp:
        system = build_system(load_topology(args.topo), load_profiles())
        path = Path(args.agent) if args.agent else untrained_agent(system, Path(tmp))
        agent = AgentFile.read(path)
        lines = bench_evaluate(system, agent, sweep, args.workers)
    print("\n".join(lines), flush=True)
    if args.train_steps:
        lines += bench_training(args.topo, args.train_steps, args.workers)
        print("\n".join(lines[-6:]), flush=True)
    load_after = os.getloadavg()
    host = (f"host: {usable_cores()} usable cores; load average (1, 5, 15 min) "
            f"{' '.join(f'{x:.2f}' for x in load_before)} before, {' '.join(f'{x:.2f}' for x in load_after)} after")
    lines.append(host)
    print(host)
    if args.results_page:
        agent_text = f"agent `{repo_relative(path)}`" if args.agent else "an untrained agent (T 5 s, K 4; same cost)"
        body = ("Wall time of the sweep layer's parallel runs against the serial loop, in the same process run, on "
                f"{args.topo} with {agent_text}: `evaluate` (the issue's goal: at least {GOAL:g}x on 2 local cores), "
                "training's episode collection from 2 environments stepping in worker processes, and the guard's "
                "held-out runs. Every parallel result is asserted equal to the serial one. The load average "
                "includes this benchmark's own processes (about the worker count while it runs).\n\n```text\n"
                + "\n".join(lines) + f"\n```\n\nThe benchmark took {time.perf_counter() - t0:.0f} s.\n")
        print(f"wrote {write_results_page(args.results_page, 'Sweep speed-up', body)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
