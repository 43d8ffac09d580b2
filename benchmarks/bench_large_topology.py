"""Large topologies: load + system-model build time and peak memory for full-edge-like topologies of 1,000
and 10,000 antennas (compute at every antenna), against the all-pairs reference where it finishes, and a
`simulate` at lambda 1 for 60 s on the largest.

Each measurement runs in a process of its own (peak RSS is per process). The reference is the all-pairs
Dijkstra and the pair-by-pair fill of tests/reference_paths.py, timed on top of the same YAML parse and
validation; it is run only up to --reference-max antennas (at 10,000 it needs ~10^8 path records).
Run: flock -x /tmp/cpu.lock .venv/bin/python benchmarks/bench_large_topology.py [--sizes 1000,10000]
     [--reference-max 1000] [--no-simulate] [--results-page]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.resultspage import add_results_page_argument, write_results_page  # noqa: E402


def measure(path: str, mode: str) -> dict:
    """In this process: load + build (mode 'routes') or load + build + the all-pairs reference (mode
    'reference'); returns seconds and peak RSS."""
    sys.path.insert(0, str(ROOT / "tests"))
    from scheduler.profiles import load_profiles
    from scheduler.system import build_system
    from topologies import load_topology

    profiles = load_profiles(None)
    t0 = time.perf_counter()
    topo = load_topology(path)
    t_load = time.perf_counter() - t0
    system = build_system(topo, profiles)
    t_build = time.perf_counter() - t0 - t_load
    if mode == "reference":
        from reference_paths import pairwise_figures

        pairwise_figures(topo, system)
    return {"load_s": t_load, "build_s": t_build, "total_s": time.perf_counter() - t0,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "antennas": len(system.antennas), "resources": system.n_resources}


def in_child(path: Path, mode: str) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); "
            f"from bench_large_topology import measure; print(json.dumps(measure({str(path)!r}, {mode!r})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def simulate(path: Path, out: Path) -> dict:
    """Runs `run_testbed.py simulate` at lambda 1 for 60 s; returns wall seconds, peak RSS and the summary."""
    command = [sys.executable, str(ROOT / "run_testbed.py"), "simulate", "--topo", str(path), "--lambda", "1",
               "--duration", "60", "--out", str(out)]
    # Through a parent of its own, whose children's peak RSS is the simulate process's alone.
    code = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *command], capture_output=True, text=True, check=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    overall = json.loads((out / "summary.json").read_text())["overall"]
    return {"wall_s": wall, "peak_rss_mb": int(done.stdout.split()[-1]) / 1024, "queries": overall["queries"],
            "success": overall["success"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000", help="antenna counts, comma-separated")
    ap.add_argument("--reference-max", type=int, default=1000, help="run the all-pairs reference up to this size")
    ap.add_argument("--no-simulate", action="store_true", help="skip the simulate run on the largest size")
    add_results_page_argument(ap, "large-topology")
    args = ap.parse_args()
    from topologies.synthetic import write_full_edge_like

    sizes = [int(x) for x in args.sizes.split(",")]
    rows = ["| antennas | resources | load s | build s | load+build s | peak RSS MB | reference s | reference "
            "peak RSS MB | time ratio (reference / this) |", "|---|---|---|---|---|---|---|---|---|"]
    sim_line = ""
    print("\n".join(rows), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-large-") as tmp:
        for n in sizes:
            path = write_full_edge_like(Path(tmp) / f"fe{n}.yaml", n)
            got = in_child(path, "routes")
            ref = in_child(path, "reference") if n <= args.reference_max else None
            total = got["load_s"] + got["build_s"]
            ref_cells = (f"{ref['total_s']:.2f} | {ref['peak_rss_mb']:.0f} | {ref['total_s'] / total:.1f}x"
                         if ref else "not run | | ")
            row = (f"| {n} | {got['resources']} | {got['load_s']:.2f} | {got['build_s']:.2f} | {total:.2f} | "
                   f"{got['peak_rss_mb']:.0f} | {ref_cells} |")
            print(row, flush=True)
            rows.append(row)
        if not args.no_simulate:
            n = max(sizes)
            sim = simulate(Path(tmp) / f"fe{n}.yaml", Path(tmp) / "sim")
            sim_line = (f"`simulate` on {n} antennas at lambda 1 for 60 s: {sim['wall_s']:.1f} s wall (process start, "
                        f"load, build, simulation, records and summary), peak RSS {sim['peak_rss_mb']:.0f} MB, "
                        f"{sim['queries']} queries, success {sim['success']:.3f}.")
            print(sim_line)
    if args.results_page:
        body = ("Full-edge-like topologies (topologies/synthetic.py: 4-core compute at every antenna, a central "
                "office per 100 antennas, a data centre per 10 offices, one cloud). Load = YAML parse, validation "
                "and shortest paths (topologies/routes.py); build = placement and the system model. The "
                "reference adds the all-pairs Dijkstra and the pair-by-pair [antenna, resource] fill "
                "(tests/reference_paths.py) to the same load and build.\n\n"
                + "\n".join(rows) + "\n\n" + sim_line + "\n")
        print(f"wrote {write_results_page(args.results_page, 'Large topologies', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
