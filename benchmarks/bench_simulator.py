"""Simulator speed and scheduler decision cost on full-edge, printed as ratios against baselines.

Figures: simulated queries per second of wall time, without records and streaming them to CSV and to Parquet
(each against its goal and as a ratio to the run without records; on two cores, where the records writer's thread
runs beside the simulator, and on one), the simulated/real-time ratio, the run without records with links that do
not keep order (SimConfig.fifo_links off, which turns the radios' and the paths' queues off too: what all cost) and
with the paths' links not queued (SimConfig.path_queueing off: what the paths' queues cost), peak memory for a short and a 4x longer run (must stay flat), and the p50/p99 cost of one binding decision
against the 50 us goal.
Run: .venv/bin/python benchmarks/bench_simulator.py [--duration 600] [--lambda 60] [--seed 1] [--results-page]
(--results-page: also write docs/results/simulator-speed.md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.records import RecordWriter  # noqa: E402
from analysis.resultspage import add_results_page_argument, write_results_page  # noqa: E402
from scheduler.core import POLICY_NAMES, Scheduler, StreamRequest, policy_index  # noqa: E402
from scheduler.profiles import load_profiles  # noqa: E402
from scheduler.system import build_system  # noqa: E402
from simulator.cli import DEFAULT_DURATION_S, DEFAULT_LAMBDA  # noqa: E402
from simulator.engine import SimConfig, Simulation  # noqa: E402
from topologies import load_topology  # noqa: E402
from workload.args import Workload, add_workload_arguments, workload_from_args  # noqa: E402

CORE_GOAL_QPS = 1e6
"""Simulated queries per second of wall time the simulator must reach without records."""
CSV_GOAL_QPS, PARQUET_GOAL_QPS = 1.0e6, 1.5e6
"""The same, streaming the records to CSV and to Parquet (as a ratio: what share of the no-records speed)."""


def one_run(topo: str, lam: float, duration: float, records: str, policy: str = "least-impedance",
            seed: int = 1, fifo_links: bool = True, path_queueing: bool = True) -> dict:
    """Returns wall time, queries and peak RSS of one simulation (run in this process)."""
    system = build_system(load_topology(topo), load_profiles())
    # The trace `run_testbed.py simulate --lambda LAM --duration D --seed S` generates.
    trace, _ = Workload(lambda_per_min=str(lam), duration_s=duration, seed=seed, trace=None,
                        default_duration_s=duration).build(system.antennas)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"records.{records}"
        writer = RecordWriter(path) if records else None
        sim = Simulation(system, trace, SimConfig(duration_s=duration, fifo_links=fifo_links, path_queueing=path_queueing),
                         seed=1,
                         record_sink=writer.write if writer else None)
        t, cpu = time.perf_counter(), time.process_time()
        sim.run(policy_index(policy))
        if writer:
            writer.close()  # the file is whole: the last rows and the writer's thread are in the time
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        size = path.stat().st_size if writer else 0
    return {"wall_s": wall, "cpu_s": cpu, "queries": sim.queries_done, "sim_s": duration, "file_bytes": size,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def in_subprocess(topo: str, lam: float, duration: float, records: str, seed: int = 1, cores: str = "0",
                  fifo_links: bool = True, path_queueing: bool = True) -> dict:
    """Runs `one_run` in a fresh process (peak memory is the run's own) pinned to `cores` (taskset's list)."""
    code = (f"import json,sys; sys.path.insert(0,{str(ROOT)!r}); from benchmarks.bench_simulator import one_run; "
            f"one_run({topo!r},{lam!r},5.0,{records!r},seed={seed})\n"  # warm the numba cache and imports
            f"print(json.dumps(one_run({topo!r},{lam!r},{duration!r},{records!r},seed={seed},fifo_links={fifo_links},"
            f"path_queueing={path_queueing})))")
    cmd = [sys.executable, "-c", code]
    if hasattr(os, "sched_setaffinity"):
        cmd = ["taskset", "-c", cores, *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def decision_cost(topo: str, n: int = 20000) -> dict:
    """Returns p50/p99 of Scheduler.decide over random streams and policies, in microseconds."""
    system = build_system(load_topology(topo), load_profiles())
    rng = np.random.default_rng(0)
    sched = Scheduler(system, rng)
    load = system.capacity_qps * rng.random(system.n_resources) * 0.8
    reqs = [StreamRequest(antenna=int(rng.integers(len(system.antennas))), fps=float(rng.integers(5, 31)),
                          frame_bytes=float(rng.integers(20000, 80000)), max_delay_ms=float(rng.uniform(50, 1000)),
                          min_accuracy=float(rng.uniform(0.1, 0.55))) for _ in range(n)]
    times = np.empty(n)
    for i, r in enumerate(reqs):
        t = time.perf_counter_ns()
        sched.decide(r, i % len(POLICY_NAMES), load)
        times[i] = time.perf_counter_ns() - t
    us = times[1000:] / 1000
    return {"p50_us": float(np.percentile(us, 50)), "p99_us": float(np.percentile(us, 99)),
            "resources": system.n_resources}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--topo", default="full-edge")
    # The load `simulate` runs by default: the paper's middle load for ten minutes.
    add_workload_arguments(ap, lambda_default=DEFAULT_LAMBDA, duration_default_s=DEFAULT_DURATION_S, replay=False,
                           number_only=True)
    add_results_page_argument(ap, "simulator-speed")
    args = ap.parse_args()
    workload = workload_from_args(args)
    lam, duration, seed = float(args.lambda_per_min), workload.generated_duration_s, workload.seed
    t0 = time.perf_counter()
    lines = [f"simulator on {args.topo}, lambda {lam:g}/min per antenna, {duration:g} s simulated; the simulator on "
             "one core, the records writer's thread on the other (two cores), and all on one core"]
    print(lines[-1])
    core = in_subprocess(args.topo, lam, duration, records="", seed=seed, cores="0,1")
    runs = [("without records", core, CORE_GOAL_QPS)]
    for cores, where in (("0,1", "two cores"), ("0", "one core")):
        for fmt, goal in (("csv", CSV_GOAL_QPS), ("parquet", PARQUET_GOAL_QPS)):
            runs.append((f"records to {fmt.replace('csv', 'CSV').replace('parquet', 'Parquet')}, {where}",
                         in_subprocess(args.topo, lam, duration, records=fmt, seed=seed, cores=cores), goal))
    core_qps = core["queries"] / core["wall_s"]
    free = in_subprocess(args.topo, lam, duration, records="", seed=seed, cores="0,1", fifo_links=False)
    free_qps = free["queries"] / free["wall_s"]
    unqueued = in_subprocess(args.topo, lam, duration, records="", seed=seed, cores="0,1", path_queueing=False)
    unqueued_qps = unqueued["queries"] / unqueued["wall_s"]
    for name, r, goal in runs:
        qps = r["queries"] / r["wall_s"]
        against = "" if r is core else f"{qps / core_qps:.2f}x the run without records, "
        goal_share = "" if r is core else f" = {goal / core_qps:.2f}x the run without records"
        size = f", file {r['file_bytes'] / r['queries']:.0f} B/query" if r["file_bytes"] else ""
        lines.append(f"  {name:30s}: {r['queries']} queries in {r['wall_s']:.2f} s (CPU {r['cpu_s']:.2f} s) = "
                     f"{qps / 1e6:.2f} M queries/s ({against}{qps / goal:.2f}x the {goal / 1e6:g} M/s goal{goal_share})"
                     f"; simulated/real time = {r['sim_s'] / r['wall_s']:.0f}x{size}")
        print(lines[-1])
    lines.append(f"  {'without records, links not FIFO':30s}: {free['queries']} queries in {free['wall_s']:.2f} s = "
                 f"{free_qps / 1e6:.2f} M queries/s (keeping links FIFO, radios and paths queued, the default, runs "
                 f"at {core_qps / free_qps:.2f}x this)")
    print(lines[-1])
    lines.append(f"  {'without records, paths unqueued':30s}: {unqueued['queries']} queries in {unqueued['wall_s']:.2f} s "
                 f"= {unqueued_qps / 1e6:.2f} M queries/s (the paths' queues, the default, run at "
                 f"{core_qps / unqueued_qps:.2f}x this)")
    print(lines[-1])
    rec = runs[1][1]
    long = in_subprocess(args.topo, lam, duration * 4, records="csv", seed=seed, cores="0,1")
    lines.append(f"  peak memory: {rec['peak_rss_mib']:.0f} MiB for {duration:g} s, {long['peak_rss_mib']:.0f} MiB "
                 f"for {4 * duration:g} s (ratio {long['peak_rss_mib'] / rec['peak_rss_mib']:.2f}; flat is ~1)")
    print(lines[-1])
    d = decision_cost(args.topo)
    lines.append(f"scheduler decision on {args.topo} ({d['resources']} resources): p50 {d['p50_us']:.1f} us, "
                 f"p99 {d['p99_us']:.1f} us ({d['p99_us'] / 50:.2f}x the 50 us goal)")
    print(lines[-1])
    if args.results_page:
        body = ("Simulated queries per second of wall time (`least-impedance`, the trace `simulate` "
                f"generates with seed {seed}), without records and streaming the per-query records to CSV and to "
                "Parquet (each against its goal, and as a share of the run without records; on two cores the records "
                "writer formats, compresses and writes in its thread while the simulator runs, on one core it "
                "cannot; CPU seconds of the whole process beside the wall time; file size per query), the simulated/real "
                "time ratio, the run without records with links that do not keep order and with the paths' links "
                "unqueued (what keeping order and the queues cost), peak memory for the run and one 4x longer (flat is ~1), and the cost of one binding "
                "decision (`Scheduler.decide`) against the 50 us goal.\n\n```text\n" + "\n".join(lines)
                + f"\n```\n\nThe benchmark took {time.perf_counter() - t0:.0f} s.\n")
        print(f"wrote {write_results_page(args.results_page, 'Simulator speed', body)}")


if __name__ == "__main__":
    main()
