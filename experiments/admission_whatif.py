"""What if admission counted the input time: the seven static policies with each resource's declared capacity
recomputed as replicas x b / (batch_ms[b] + b x input_ms_per_mb x a nominal frame size), and with the paper's
load accounting (`load_accounting: input-time`: each stream also weighs its own frames' input time).

    .venv/bin/python experiments/admission_whatif.py --topo full-edge --lambdas 60,100 --seeds 1,2,3 \\
        --frame-kb 0,60,80 --input-time-kb 42,50 [--workers N | --ray ADDRESS] [--results-page]

This file owns that comparison. Under `rate` accounting without `capacity_frame_kb` (a profile without either
key, such as `provisional`) a variant's capacity comes from its batch latency alone (`Variant.capacity_qps`),
while the delay constraint and the simulated workers also spend
`input_ms_per_mb` per query on the frame's input (decode, resize, copy). Admission therefore lets a saturated
resource receive more than it can serve, and its queue stays full (see `experiments/failure_sites.py`). A
profile file's `capacity_frame_kb` key makes the declared capacities count that input time at a nominal frame
size, every stream still reserving its frame rate (`rate` accounting); `load_accounting: input-time` (the
paper's constraint, docs/concepts.md) also weighs each stream by its frames' busy time relative to the nominal
frame's, so load over capacity is the busy fraction whatever the nominal size. Here a copy of the profile is
written per case, whatever the source's own keys (rate at 0 kB: the batch latency alone; 60 kB: the workload's
mean video-surveillance frame; 80 kB: the largest frame of any application; input-time at 42 kB, the committed
default's nominal frame, and at 50 kB: the unit changes only random-proportional-load's weights), every static policy is run on the
`evaluate` traces and seeds through the ordinary loaders (the runs are a sweep's cases: on every local core by
default, or on a Ray cluster), and the counts are pooled over the seeds as `evaluate` pools them;
`--results-page` also writes the table to docs/results/admission-whatif.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.resultspage import add_results_page_argument, repo_relative, write_results_page  # noqa: E402
from experiments.oracle_search import STUDY_LAMBDAS  # noqa: E402
from scheduler.core import POLICY_NAMES  # noqa: E402
from scheduler.profiles import (  # noqa: E402
    INPUT_TIME,
    RATE,
    default_profile_path,
    load_profiles,
    read_profile,
    write_profile,
)
from scheduler.system import SystemModel, build_system  # noqa: E402
from topologies import load_topology  # noqa: E402
from training.rollout import EvalCase, run_static  # noqa: E402
from training.sweep import add_engine_arguments, engine_from_args, run_cases  # noqa: E402
from workload.args import add_sweep_arguments, sweep_from_args  # noqa: E402


def profile_with_frame_kb(src: Path, frame_kb: float, dst: Path, accounting: str = RATE) -> Path:
    """Writes a copy of profile file `src` with `capacity_frame_kb: frame_kb` and `load_accounting: accounting`;
    returns `dst`."""
    load_profiles(src)  # refuses a bad source with its own message
    pf = read_profile(src)
    write_profile(replace(pf, capacity_frame_kb=frame_kb, load_accounting=accounting,
                          origin=f"{pf.origin or src.name}; capacity counts {frame_kb:g} kB of input per query, "
                                 f"{accounting} load accounting"), dst)
    return dst


@dataclass(frozen=True)
class StaticRun:
    """One run of the comparison: its profile's (load accounting, nominal frame kB), the case, the static
    policy's index."""

    profile_case: tuple[str, float]
    case: EvalCase
    policy: int


def static_totals(systems: dict[tuple[str, float], SystemModel], run: StaticRun) -> np.ndarray:
    """Returns [on time, failed, rejected] of one static run on the system of its profile case (a sweep's case)."""
    system = systems[run.profile_case]
    sim = run_static(system, run.case.trace(system), run.case, run.policy)
    return sim.tally.counts.reshape(-1, 3).sum(axis=0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--topo", default="full-edge")
    ap.add_argument("--profiles", default=None, help="profile file (default: the default profile)")
    add_sweep_arguments(ap, lambdas_default=STUDY_LAMBDAS)
    ap.add_argument("--frame-kb", default="0,60,80",
                    help="nominal frame sizes in kB under rate accounting (0: the batch latency alone)")
    ap.add_argument("--input-time-kb", default="42,50",
                    help="nominal frame sizes in kB under input-time accounting ('': none; each > 0)")
    add_engine_arguments(ap)
    add_results_page_argument(ap, "admission-whatif")
    args = ap.parse_args(argv)
    cases = []
    for flag, text, accounting in (("--frame-kb", args.frame_kb, RATE),
                                   ("--input-time-kb", args.input_time_kb, INPUT_TIME)):
        try:
            sizes = [float(x) for x in text.split(",") if x.strip()]
        except ValueError as e:
            ap.error(f"{flag}: {e}")
        if any(f < 0 or not np.isfinite(f) or (f == 0 and accounting == INPUT_TIME) for f in sizes):
            ap.error(f"{flag}: sizes must be finite and " + ("> 0" if accounting == INPUT_TIME else ">= 0"))
        cases += [(accounting, f) for f in sizes]
    sweep = sweep_from_args(args)
    src = Path(args.profiles) if args.profiles else default_profile_path()
    topo = load_topology(args.topo)
    head = (f"{args.topo}, {src.name}, {sweep.duration_s:g} s x seeds {','.join(str(s) for s in sweep.seeds)}; "
            "success / failed / rejected in % of queries")
    table = ["| accounting | frame (kB) | lambda | " + " | ".join(POLICY_NAMES) + " |",
             "|---|---|---|" + "---|" * len(POLICY_NAMES)]
    print(head)
    print()
    print("\n".join(table))
    systems = {}
    for accounting, kb in cases:
        with tempfile.TemporaryDirectory(prefix="admission-whatif-") as tmp:
            profile = load_profiles(profile_with_frame_kb(src, kb, Path(tmp) / f"profile-{kb:g}kB.yaml", accounting))
        systems[(accounting, kb)] = build_system(topo, profile)
    static_runs = [StaticRun((accounting, kb), EvalCase(lam, seed, sweep.duration_s), i) for accounting, kb in cases
             for lam in sweep.lambdas_per_min for seed in sweep.seeds for i in range(len(POLICY_NAMES))]
    engine = engine_from_args(args)
    t0 = time.perf_counter()
    done = iter(run_cases(static_totals, static_runs, systems, engine, cost=lambda r: r.case.relative_cost))
    for accounting, kb in cases:  # the runs' order: accounting and frame size, lambda, seed, policy
        for lam in sweep.lambdas_per_min:
            tot = {p: np.zeros(3) for p in POLICY_NAMES}
            for _seed in sweep.seeds:
                for p in POLICY_NAMES:
                    tot[p] += next(done)
            best = max(POLICY_NAMES, key=lambda p: tot[p][0] / tot[p].sum())
            cells = [("**{}**" if p == best else "{}").format(
                "/".join(f"{100 * x / c.sum():.2f}" for x in c)) for p, c in tot.items()]
            table.append(f"| {accounting} | {kb:g} | {lam:g} | " + " | ".join(cells) + " |")
            print(table[-1], flush=True)
    runs = (f"{len(static_runs)} runs in {time.perf_counter() - t0:.0f} s ({engine.describe()})")
    print(f"\n{runs}")
    if args.results_page:
        body = (f"The seven static policies on {args.topo} with the declared capacities counting the input time of a "
                f"nominal frame of each size, each stream reserving its rate (rate accounting; 0 kB: the batch latency "
                f"alone) or its rate weighted by its frames' input time (input-time "
                f"accounting, the paper's), copies of profile `{repo_relative(src)}` (its own accounting: "
                f"{read_profile(src).load_accounting}, {read_profile(src).capacity_frame_kb:g} kB), on the `evaluate` "
                f"traces and seeds ({sweep.duration_s:g} s per run), counts pooled over the seeds: success / failed / "
                f"rejected in % of queries, the best policy of each row in bold.\n\n" + "\n".join(table) + f"\n\n{runs}.\n")
        print(f"wrote {write_results_page(args.results_page, 'Admission counting the input time', body)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
