"""What if admission counted the input time: the seven static policies with each resource's declared capacity
recomputed as replicas x b / (batch_ms[b] + b x input_ms_per_mb x a nominal frame size).

    .venv/bin/python experiments/admission_whatif.py --topo full-edge --lambdas 60,100 --seeds 1,2,3 \\
        --frame-kb 0,60,80

This file owns that comparison. By default a profile declares a variant's capacity from its batch latency
alone (`Variant.capacity_qps`), while the delay constraint and the simulated workers also spend
`input_ms_per_mb` per query on the frame's input (decode, resize, copy). Admission therefore lets a saturated
resource receive more than it can serve, and its queue stays full (see `experiments/failure_sites.py`). A
profile file's `capacity_frame_kb` key makes the declared capacities count that input time at a nominal frame
size. Here a copy of the profile is written per size (0 kB: the profile as it is; 60 kB: the workload's mean
video-surveillance frame; 80 kB: the largest frame of any application), every static policy is run on the
`evaluate` traces and seeds through the ordinary loaders, and the counts are pooled over the seeds as
`evaluate` pools them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scheduler.core import POLICY_NAMES  # noqa: E402
from scheduler.profiles import default_profile_path, load_profiles  # noqa: E402
from scheduler.system import build_system  # noqa: E402
from topologies import load_topology  # noqa: E402
from topologies.loader import load_yaml_strict  # noqa: E402
from training.rollout import EvalCase, run_static  # noqa: E402


def profile_with_frame_kb(src: Path, frame_kb: float, dst: Path) -> Path:
    """Writes a copy of profile file `src` with `capacity_frame_kb: frame_kb`; returns `dst`."""
    import yaml

    load_profiles(src)  # refuses a bad source with its own message
    doc = load_yaml_strict(src, ValueError)
    doc["capacity_frame_kb"] = frame_kb
    doc["origin"] = f"{doc.get('origin', src.name)}; capacity counts {frame_kb:g} kB of input per query"
    dst.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dst


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
    src = Path(args.profiles) if args.profiles else default_profile_path()
    topo = load_topology(args.topo)
    print(f"{args.topo}, {src.name}, {args.duration:g} s x seeds {args.seeds}; success / failed / rejected in % "
          "of queries")
    print()
    print("| frame (kB) | lambda | " + " | ".join(POLICY_NAMES) + " |")
    print("|---|---|" + "---|" * len(POLICY_NAMES))
    t0 = time.perf_counter()
    for kb in frames:
        with tempfile.TemporaryDirectory(prefix="admission-whatif-") as tmp:
            profile = load_profiles(profile_with_frame_kb(src, kb, Path(tmp) / f"profile-{kb:g}kB.yaml"))
        system = build_system(topo, profile)
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
