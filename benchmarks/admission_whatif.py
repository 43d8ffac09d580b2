"""What if admission counted the input time: the seven static policies with each resource's declared capacity
recomputed as replicas x b / (batch_ms[b] + b x input_ms_per_mb x a nominal frame size).

    .venv/bin/python benchmarks/admission_whatif.py --topo full-edge --lambdas 60,100 --seeds 1,2,3 \\
        --frame-kb 0,60,80

This file owns that counterfactual and nothing else; it changes no code path of the scheduler or simulator.
`scheduler.system` declares a resource's capacity from its batch latency alone (`Variant.capacity_qps`), while
its delay constraint and the simulated workers also spend `input_ms_per_mb` per query on the frame's input
(decode, resize, copy). Admission therefore lets a saturated resource receive more than it can serve, and
its queue stays full (see `benchmarks/failure_sites.py`). Here the capacity array of the system model is
replaced (frame 0 kB: the model as it is; 60 kB: the workload's mean video-surveillance frame; 80 kB: the
largest frame of any application), every static policy is run on the `evaluate` traces and seeds, and the
counts are pooled over the seeds as `evaluate` pools them. The per-resource cost keeps its declared value.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scheduler.aset.rollout import EvalCase, run_static  # noqa: E402
from scheduler.core import POLICY_NAMES  # noqa: E402
from scheduler.profiles import load_profiles  # noqa: E402
from scheduler.system import SystemModel, build_system  # noqa: E402
from topologies import load_topology  # noqa: E402


def with_input_time(system: SystemModel, frame_kb: float) -> SystemModel:
    """Returns the system model whose capacities include `frame_kb` of input time per query (0: unchanged)."""
    if frame_kb == 0:
        return system
    cap = np.array([r.replicas * r.variant.batch_size
                    / ((r.variant.batch_ms[r.variant.batch_size]
                        + r.variant.batch_size * r.variant.input_ms_per_mb * frame_kb / 1000.0) / 1000.0)
                    for r in system.resources])
    return replace(system, capacity_qps=cap)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--topo", default="full-edge")
    ap.add_argument("--profiles", default=None, help="profile file (default: the default profile)")
    ap.add_argument("--lambdas", default="60,100")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--duration", type=float, default=600.0)
    ap.add_argument("--frame-kb", default="0,60,80", help="nominal frame sizes in kB (0: the model as it is)")
    args = ap.parse_args(argv)
    try:
        frames = [float(x) for x in args.frame_kb.split(",") if x.strip()]
        lambdas = [float(x) for x in args.lambdas.split(",") if x.strip()]
        seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    except ValueError as e:
        ap.error(f"--frame-kb/--lambdas/--seeds: {e}")
    if any(f < 0 or not np.isfinite(f) for f in frames):
        ap.error("--frame-kb: sizes must be finite and >= 0")
    base = build_system(load_topology(args.topo), load_profiles(args.profiles))
    print(f"{args.topo}, {args.duration:g} s x seeds {args.seeds}; success / failed / rejected in % of queries")
    print()
    print("| frame (kB) | lambda | " + " | ".join(POLICY_NAMES) + " |")
    print("|---|---|" + "---|" * len(POLICY_NAMES))
    t0 = time.perf_counter()
    for kb in frames:
        system = with_input_time(base, kb)
        for lam in lambdas:
            tot = {p: np.zeros(3) for p in POLICY_NAMES}
            for seed in seeds:
                case = EvalCase(lam, seed, args.duration)
                trace = case.trace(system)
                for i, p in enumerate(POLICY_NAMES):
                    tot[p] += run_static(system, trace, case, i).tally.counts.reshape(-1, 3).sum(axis=0)
            best = max(POLICY_NAMES, key=lambda p: tot[p][0] / tot[p].sum())
            cells = [("**{}**" if p == best else "{}").format(
                "/".join(f"{100 * x / c.sum():.2f}" for x in c)) for p, c in tot.items()]
            print(f"| {kb:g} | {lam:g} | " + " | ".join(cells) + " |", flush=True)
    print(f"\n{len(frames) * len(lambdas) * len(seeds) * len(POLICY_NAMES)} runs in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
