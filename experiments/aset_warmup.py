"""A causal start rule next to the clairvoyant oracle (aset_oracle.py): policy P for the first k decision
windows of an episode, then load-balancing. The oracle earned much of its gain while the system filled up
from empty, mostly with farthest and cheaper; this measures how much of that a rule that needs no
knowledge of the future keeps.

    .venv/bin/python experiments/aset_warmup.py --topo full-edge --lambdas 60,100 --seeds 1,2,3 \\
        [--policies farthest,cheaper,random-proportional-load] [--windows 1,2,3] [--agent runs/aset/full-edge]

Same simulations as `evaluate` and the oracle (aset_oracle.agent_sim: the agent's T and profile when
--agent is given). Prints success per seed and the mean of seeds, with the difference from load-balancing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import aset_oracle as ao  # noqa: E402

from scheduler.core import POLICY_NAMES  # noqa: E402
from scheduler.profiles import load_profiles  # noqa: E402
from scheduler.system import build_system  # noqa: E402
from topologies.loader import load_topology  # noqa: E402
from training.rollout import EvalCase, success_of  # noqa: E402

BASE = "load-balancing"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--topo", default="full-edge")
    ap.add_argument("--lambdas", default="60,100")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--duration", type=float, default=600.0)
    ap.add_argument("--policies", default="farthest,cheaper,random-proportional-load")
    ap.add_argument("--windows", default="1,2,3", help="decision windows the start policy binds")
    ap.add_argument("--agent", default=None, help="agent dir or .onnx: its decision window and profile")
    args = ap.parse_args(argv)
    policies = args.policies.split(",")
    unknown = [p for p in policies if p not in POLICY_NAMES]
    if unknown:
        ap.error(f"--policies: unknown {', '.join(unknown)}; known: {', '.join(POLICY_NAMES)}")
    lambdas = [float(x) for x in args.lambdas.split(",")]
    seeds = [int(x) for x in args.seeds.split(",")]
    windows = [int(x) for x in args.windows.split(",")]
    cfg, profiles = ao.env_config(args.agent)
    system = build_system(load_topology(args.topo), load_profiles(profiles))
    steps = int(round(cfg.decision_window_s / cfg.sim_window_s))
    base = POLICY_NAMES.index(BASE)
    print(f"{args.topo}, {args.duration:.0f} s per run, T = {cfg.decision_window_s:g} s; success % per seed "
          f"{args.seeds}, mean of seeds (difference from {BASE})")
    for lam in lambdas:
        rows: dict[str, list[float]] = {}
        for seed in seeds:
            case = EvalCase(lam, seed, args.duration)
            sim = ao.agent_sim(system, case, cfg)
            ao.advance(sim, base, None)
            rows.setdefault(BASE, []).append(success_of(sim))
            for name in policies:
                for k in windows:
                    sim = ao.agent_sim(system, case, cfg)
                    ao.advance(sim, POLICY_NAMES.index(name), k * steps)
                    ao.advance(sim, base, None)
                    rows.setdefault(f"{name} x{k}, then {BASE}", []).append(success_of(sim))
        ref = sum(rows[BASE]) / len(seeds)
        for label, values in rows.items():
            mean = sum(values) / len(values)
            print(f"lambda {lam:g}  {label:48s} " + " ".join(f"{100 * v:6.2f}" for v in values)
                  + f"   mean {100 * mean:6.2f} ({100 * (mean - ref):+.2f})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
