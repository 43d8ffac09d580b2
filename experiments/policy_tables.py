"""The seven static policies on the three topologies: success, failed and rejected, overall and per application.

    .venv/bin/python experiments/policy_tables.py [--topos full-edge,co-dc-cloud,dc-cloud] \\
        [--lambdas 20,60,100] [--seeds 1,2,3] [--duration 600] [--workers N | --ray ADDRESS] [--results-page]

This file owns those tables. Every policy runs on the traces and simulator seeds `run_testbed.py evaluate`
uses (`training.evaluate.evaluate` without an agent, its runs spread over the local cores by default, or a
Ray cluster: the same figures), and the counts are pooled over the seeds as `evaluate` pools them;
`--results-page` also writes them to docs/results/policy-tables.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.resultspage import add_results_page_argument, repo_relative, write_results_page  # noqa: E402
from analysis.summary import Ratios  # noqa: E402
from scheduler.names import PROFILES_OPTION_HELP  # noqa: E402
from scheduler.profiles import load_profiles  # noqa: E402
from scheduler.system import build_system  # noqa: E402
from topologies import load_topology  # noqa: E402
from training.evaluate import Evaluation, evaluate  # noqa: E402
from training.sweep import CaseRunner, add_engine_arguments, engine_from_args  # noqa: E402
from workload.args import add_sweep_arguments, sweep_from_args  # noqa: E402

TOPOLOGIES = "full-edge,co-dc-cloud,dc-cloud"
LAMBDAS = "20,60,100"
"""A light, the middle and the highest of the paper's loads."""


def _cell(r: Ratios) -> str:
    return f"{100 * r.success:.2f} / {100 * r.failed:.2f} / {100 * r.rejected:.2f}"


def table(ev: Evaluation) -> str:
    """Returns one topology's markdown table: per lambda and policy, success / failed / rejected in % of queries,
    overall and per application; the best policy of each lambda (by success) in bold."""
    apps = next(iter(next(iter(ev.results.values())).values())).apps
    head = ["lambda", "policy", "success", "failed", "rejected", *(f"{a} (s / f / r)" for a in apps)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for lam, by_policy in ev.results.items():
        best = ev.best_static(lam)
        for name, r in by_policy.items():
            o = r.overall
            mark = "**" if name == best else ""
            lines.append(f"| {lam:g} | {mark}{name}{mark} | {mark}{100 * o.success:.2f}{mark} | {100 * o.failed:.2f} | "
                         f"{100 * o.rejected:.2f} | " + " | ".join(_cell(x) for x in r.per_app().values()) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--topos", default=TOPOLOGIES, help=f"comma-separated topologies (default {TOPOLOGIES})")
    ap.add_argument("--profiles", default=None, help=PROFILES_OPTION_HELP)
    add_sweep_arguments(ap, lambdas_default=LAMBDAS)
    add_engine_arguments(ap)
    add_results_page_argument(ap, "policy-tables")
    args = ap.parse_args(argv)
    sweep = sweep_from_args(args)
    profiles = load_profiles(args.profiles)
    engine = engine_from_args(args)
    t0 = time.perf_counter()
    sections = []
    with CaseRunner(engine) as runner:  # one pool (or Ray connection) for every topology
        for topo in (t.strip() for t in args.topos.split(",") if t.strip()):
            system = build_system(load_topology(topo), profiles)
            t = time.perf_counter()
            ev = evaluate(system, None, list(sweep.lambdas_per_min), list(sweep.seeds), sweep.duration_s,
                          engine=runner)
            head = (f"{system.topology.name}: {system.n_resources} resources on {len(system.topology.clusters)} "
                    f"clusters, {len(system.antennas)} antennas; {time.perf_counter() - t:.0f} s")
            sections.append(f"## {system.topology.name}\n\n{head}\n\n{table(ev)}")
            print(f"{head}\n\n{table(ev)}\n", flush=True)
    seeds = ",".join(str(s) for s in sweep.seeds)
    runs = (f"{len(sections) * len(sweep.lambdas_per_min) * len(sweep.seeds) * 7} runs of {sweep.duration_s:g} s "
            f"in {time.perf_counter() - t0:.0f} s ({engine.describe()})")
    print(runs)
    if args.results_page:
        body = (f"Every static policy on the `evaluate` traces and simulator seeds ({seeds}, {sweep.duration_s:g} s "
                f"per run), profiles `{repo_relative(profiles.source)}`; the counts are pooled over the seeds. "
                "Success, failed (answered after the deadline) and rejected are % of queries, overall and per "
                "application (s / f / r); the best policy of each lambda in bold. Lambda: new streams per "
                "minute per antenna.\n\n" + "\n\n".join(sections) + f"\n\n{runs}.\n")
        print(f"wrote {write_results_page(args.results_page, 'The seven static policies on the three topologies', body)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
