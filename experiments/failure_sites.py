"""Where a run's failures come from: per resource, the load admitted against what it can serve.

    .venv/bin/python run_testbed.py simulate --topo full-edge --policy load-balancing --lambda 100 \\
        --duration 600 --seed 1 --out runs/sim-lb100
    .venv/bin/python experiments/failure_sites.py runs/sim-lb100/records.csv --topo full-edge [--results-page]

This file owns that per-resource breakdown of a per-query log (simulator or testbed, same format), and its
results page (docs/results/failure-sites.md, with the run read from the summary.json beside the log). For each
resource (cluster, variant) that answered queries it prints:
- the capacity the schedulers admit streams against (replicas x `Variant.capacity_qps`, as `scheduler.system`
  declares it: `b / batch_ms[b]`, plus the input time of a frame of `capacity_frame_kb` when the profile
  sets that key; under `load_accounting: input-time` in queries of that nominal frame, which the other
  columns' queries of the workload's sizes equal on average when the nominal frame is the mean one);
- the capacity it actually served at, measured from the log: replicas x b / the mean time of its full batches
  of b (`t_infer_end - t_infer_start`; in the simulator that includes the frames' input time);
- the rate of queries that reached it over the busiest 60 s (those its full queue refused included), the
  shares of them that failed and that it refused (queue full), the median queue wait
  (`t_infer_start - t_worker`) of its failed queries, and its share of all the run's failed queries.

A resource whose received rate reaches its served capacity keeps a full queue: its waits sit at the queue
limit and most of its queries fail. Every policy binds only where the shared feasibility test (declared load +
the stream's eta x rate <= declared capacity) lets it, so when demand for it exceeds its declared capacity every
policy fills it that far.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.records import read_records  # noqa: E402
from analysis.resultspage import add_results_page_argument, repo_relative, write_results_page  # noqa: E402
from scheduler.profiles import load_profiles  # noqa: E402
from scheduler.system import build_system  # noqa: E402
from topologies import load_topology  # noqa: E402


def breakdown(path: Path, topo: str, profiles: str | None, min_share: float) -> list[dict[str, float | str]]:
    """Returns one row per resource that received queries, sorted by its share of all failed queries."""
    system = build_system(load_topology(topo), load_profiles(profiles))
    if system.profiles.load_accounting != "rate":
        print(f"note: {system.profiles.source} uses {system.profiles.load_accounting} accounting: declared "
              f"capacities are in queries of a {system.profiles.capacity_frame_kb:g} kB frame", file=sys.stderr)
    by_key = {(r.site, r.variant.name): r for r in system.resources}
    t = read_records(path)
    cols = ["cluster", "variant", "outcome", "t_worker_ms", "t_infer_start_ms", "t_infer_end_ms", "batch_size"]
    reached = pc.or_kleene(pc.not_equal(t["outcome"], "rejected"), pc.equal(t["reason"], "queue-full"))  # reason: null when on time
    t = t.select(cols).filter(reached)
    cluster = t["cluster"].to_numpy(zero_copy_only=False)
    variant = t["variant"].to_numpy(zero_copy_only=False)
    outcome = t["outcome"].to_numpy(zero_copy_only=False)
    failed = outcome == "failed"
    refused = outcome == "rejected"  # only the worker's queue-full refusals are left
    t_worker = t["t_worker_ms"].to_numpy(zero_copy_only=False)
    t_start = t["t_infer_start_ms"].to_numpy(zero_copy_only=False)
    t_end = t["t_infer_end_ms"].to_numpy(zero_copy_only=False)
    batch = t["batch_size"].to_numpy(zero_copy_only=False)
    total_failed = max(int(failed.sum()), 1)
    rows: list[dict[str, float | str]] = []
    for key in sorted(set(zip(cluster, variant, strict=True))):
        m = (cluster == key[0]) & (variant == key[1])
        res = by_key.get(key)
        if res is None:
            raise SystemExit(f"{path}: resource {key[0]}/{key[1]} is not in topology {topo!r} with these profiles")
        b = res.variant.batch_size
        full = m & (batch == b) & np.isfinite(t_end)
        served = float("nan")
        if full.any():
            served = res.replicas * b / (float(np.mean(t_end[full] - t_start[full])) / 1000.0)
        tw = t_worker[m & np.isfinite(t_worker)] / 1000.0
        peak = 0.0
        if tw.size:
            counts = np.bincount((tw // 1.0).astype(np.int64))
            window = min(60, counts.size)
            peak = float(np.convolve(counts, np.ones(window), "valid").max() / window)
        f = failed & m
        wait = t_start[f] - t_worker[f]
        wait = wait[np.isfinite(wait)]
        rows.append({"cluster": key[0], "variant": key[1], "declared_qps": float(res.capacity_qps),
                     "served_qps": served, "peak_rate_qps": peak, "queries": int(m.sum()),
                     "failed_share": float(f.sum() / max(int(m.sum()), 1)),
                     "refused_share": float((refused & m).sum() / max(int(m.sum()), 1)),
                     "failed_wait_p50_ms": float(np.median(wait)) if wait.size else float("nan"),
                     "share_of_failed": float(f.sum() / total_failed)})
    rows.sort(key=lambda r: -float(r["share_of_failed"]))
    return [r for r in rows if float(r["share_of_failed"]) >= min_share]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("records", help="records.csv or .parquet of a run (simulate, live or compare)")
    ap.add_argument("--topo", default="full-edge", help="topology the run used (default full-edge)")
    ap.add_argument("--profiles", default=None, help="profile file the run used (default: the default profile)")
    ap.add_argument("--min-share", type=float, default=0.001,
                    help="hide resources with a smaller share of the failed queries (default 0.001)")
    add_results_page_argument(ap, "failure-sites")
    args = ap.parse_args(argv)
    path = Path(args.records)
    if not path.is_file():
        ap.error(f"{path}: no such file")
    rows = breakdown(path, args.topo, args.profiles, args.min_share)
    table = ["| resource | declared capacity (q/s) | served capacity (q/s) | received, busiest 60 s (q/s) | "
             "queries | failed | refused (queue full) | failed queries' wait p50 (ms) | share of all failed |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['cluster']}/{r['variant']} | {r['declared_qps']:.1f} | {r['served_qps']:.1f} | "
                     f"{r['peak_rate_qps']:.1f} | {r['queries']} | {100 * float(r['failed_share']):.1f} % | "
                     f"{100 * float(r['refused_share']):.1f} % | "
                     f"{r['failed_wait_p50_ms']:.0f} | {100 * float(r['share_of_failed']):.1f} % |")
    print("\n".join(table))
    if args.results_page:
        body = (f"Per resource of the run whose records are `{repo_relative(path)}` ({run_of(path)}): the capacity "
                "the schedulers admit against, the capacity it served at, the rate it received, and where the "
                "run's failed queries were.\n\n" + "\n".join(table) + "\n")
        print(f"wrote {write_results_page(args.results_page, 'Where the failures come from', body)}")
    return 0


def run_of(records: Path) -> str:
    """Returns what run wrote these records, from the summary.json beside them ('run unknown' without one)."""
    summary = records.parent / "summary.json"
    if not summary.is_file():
        return "run unknown: no summary.json beside the records"
    s = json.loads(summary.read_text())
    return (f"{s.get('environment', '?')}, {s.get('topology', '?')}, {s.get('policy', '?')}, lambda "
            f"{s.get('lambda_per_min', '?')}, seed {s.get('seed', '?')}, {s.get('duration_s', 0):g} s; success "
            f"{100 * s.get('overall', {}).get('success', float('nan')):.2f} %")


if __name__ == "__main__":
    raise SystemExit(main())
