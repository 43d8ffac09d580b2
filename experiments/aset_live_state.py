"""Compares the ASET state a live run's schedulers built with the state the simulator builds on the same trace.

    .venv/bin/python experiments/aset_live_state.py RUN_DIR

RUN_DIR is a live run with an agent (`run_testbed.py --policy aset --agent FILE --out RUN_DIR`): its schedulers
wrote each decision window's encoded features to `windows/<antenna>.state.jsonl`. This replays the run's
trace in the simulator, binding with the policy the first antenna's scheduler used in each window, encodes
every decision window with `scheduler.aset.state`, and prints per feature group the mean over windows of
the simulator's value, of the live schedulers' (mean over antennas), the mean absolute difference and the
spread between antennas (max - min). The bindings themselves differ (each live scheduler binds with its
own estimate of the load), so this is an end-to-end comparison, not one of the encoder alone.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from live.batches import profile_path  # noqa: E402
from scheduler.aset.state import GLOBAL, PER_RESOURCE, StateSpec, encode_window  # noqa: E402
from scheduler.core import policy_index  # noqa: E402
from scheduler.profiles import load_profiles  # noqa: E402
from scheduler.system import build_system  # noqa: E402
from scheduler.window import WindowMeasurement  # noqa: E402
from simulator.engine import SimConfig, Simulation  # noqa: E402
from topologies import load_topology  # noqa: E402
from workload.trace import read_trace  # noqa: E402


def main(run_dir: Path) -> int:
    cfg = json.loads((run_dir / "config.json").read_text())
    system = build_system(load_topology(cfg["topology_file"]), load_profiles(profile_path(cfg, run_dir)))
    rows = list(csv.DictReader((run_dir / "windows.csv").open()))
    first = sorted({r["antenna"] for r in rows})[0]
    policy = {int(r["window"]): r["policy"] for r in rows if r["antenna"] == first}
    live: dict[int, list[np.ndarray]] = {}
    for path in sorted((run_dir / "windows").glob("*.state.jsonl")):
        for line in path.read_text().splitlines():
            e = json.loads(line)
            live.setdefault(int(e["window"]), []).append(np.asarray(e["features"], dtype=np.float64))
    if not live:
        print(f"{run_dir}: no windows/*.state.jsonl (a run without --agent?)", file=sys.stderr)
        return 2
    n_features = len(next(iter(live.values()))[0])
    spec = None
    for history in range(1, 17):  # the history does not change a window's features; find the matching spec
        s = StateSpec.of(system, history=history)
        if s.n_features == n_features:
            spec = s
            break
    assert spec is not None, "features do not match this system"
    window_s = round(max(float(r["t_end_ms"]) - float(r["t_start_ms"]) for r in rows) / 1000.0, 3)  # T
    trace = read_trace(run_dir / "trace.csv", system.antennas)
    headroom = float(cfg.get("capacity_headroom", cfg.get("eta", 1.0)))  # "eta": runs from before its rename
    config = SimConfig(window_s=1.0, duration_s=float(cfg["duration_s"]), capacity_headroom=headroom)
    sim = Simulation(system, trace, config, seed=int(cfg["seed"]))
    steps = round(window_s / config.window_s)
    sim_rows: dict[int, np.ndarray] = {}
    k = 0
    while not sim.done:
        p = policy_index(policy.get(k, policy[max(policy)]))
        parts = [(sim.step(p)) for _ in range(steps) if not sim.done]
        sim_rows[k] = encode_window(spec, WindowMeasurement.merge(parts))
        k += 1
    # the window that reaches the duration is left out: the simulator releases every stream at the duration,
    # the live schedulers only when the sources' closes have crossed the radio
    common = sorted(w for w in set(sim_rows) & set(live) if (w + 1) * window_s < config.duration_s - 1e-9)
    n = spec.n_resources
    groups = [(f, slice(i * n, (i + 1) * n)) for i, f in enumerate(PER_RESOURCE)]
    groups.append(("incoming_qps_class", slice(len(PER_RESOURCE) * n, len(PER_RESOURCE) * n + spec.n_classes)))
    base = len(PER_RESOURCE) * n + spec.n_classes
    groups += [(g, slice(base + i, base + i + 1)) for i, g in enumerate(GLOBAL)]
    sim_m = np.stack([sim_rows[w] for w in common])
    live_m = np.stack([np.mean(live[w], axis=0) for w in common])
    spread = np.stack([np.ptp(np.stack(live[w]), axis=0) for w in common])
    print(f"{run_dir}: {len(common)} decision windows of {window_s:g} s, {len(live[common[0]])} antennas; "
          "per feature group, summed over its features, mean over windows")
    print(f"{'feature':24} {'simulator':>10} {'live':>10} {'|diff|':>10} {'antennas spread':>16}")
    for name, sl in groups:
        s, lv = sim_m[:, sl].sum(axis=1), live_m[:, sl].sum(axis=1)
        print(f"{name:24} {s.mean():10.4f} {lv.mean():10.4f} {np.abs(s - lv).mean():10.4f} "
              f"{spread[:, sl].sum(axis=1).mean():16.4f}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a live run's directory, run with an agent")
    args = parser.parse_args()
    if not (args.run_dir / "config.json").is_file():
        parser.error(f"{args.run_dir}: not a live run's directory (no config.json)")
    sys.exit(main(args.run_dir))
