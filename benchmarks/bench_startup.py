"""How fast the command line starts: `simulate --help` and a short `simulate`, whole processes, against the 1 s goal
and, given --baseline (another checkout, e.g. of main, with its own .venv), as ratios to that checkout's.

Each command runs --runs times after one warm-up, this checkout and the baseline in turn (so drift in the
machine's speed hits both alike); the median wall time is quoted. What a command imports: `python -X importtime`.
Run: .venv/bin/python benchmarks/bench_startup.py [--baseline ../main] [--runs 7] [--results-page]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.resultspage import add_results_page_argument, write_results_page  # noqa: E402

GOAL_S = 1.0
COMMANDS = {
    "simulate --help": ["simulate", "--help"],
    "short simulate (tiny, 5 s, no --out)": ["simulate", "--topo", "tiny", "--duration", "5", "--lambda", "20"],
}


def wall_s(checkout: Path, args: list[str]) -> float:
    """Returns the wall time of one run of `run_testbed.py ARGS` with that checkout's virtualenv."""
    t = time.perf_counter()
    subprocess.run([str(checkout / ".venv" / "bin" / "python"), str(checkout / "run_testbed.py"), *args],
                   check=True, capture_output=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", type=Path, default=None, help="another checkout to compare with (e.g. main)")
    ap.add_argument("--runs", type=int, default=7, help="counted runs of each command in each checkout")
    add_results_page_argument(ap, "startup")
    args = ap.parse_args()
    checkouts = [ROOT] + ([args.baseline.resolve()] if args.baseline else [])
    lines = []
    for name, argv in COMMANDS.items():
        for c in checkouts:
            wall_s(c, argv)  # warm-up: file cache, numba's cache
        times: dict[Path, list[float]] = {c: [] for c in checkouts}
        for _ in range(args.runs):
            for c in checkouts:
                times[c].append(wall_s(c, argv))
        mine = statistics.median(times[ROOT])
        line = f"{name:38s}: median {mine:.2f} s of {args.runs} ({mine / GOAL_S:.2f}x the {GOAL_S:g} s goal)"
        if args.baseline:
            ratios = [a / b for a, b in zip(times[ROOT], times[checkouts[1]], strict=True)]
            line += (f"; baseline {statistics.median(times[checkouts[1]]):.2f} s, ratio this/baseline median "
                     f"{statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})")
        lines.append(line)
        print(line)
    if args.results_page:
        body = ("Wall time of whole `run_testbed.py` processes (this checkout's `.venv/bin/python`), median of "
                f"{args.runs} runs after a warm-up"
                + (", alternating with a baseline checkout (ratios pair by pair)" if args.baseline else "")
                + ".\n\n```text\n" + "\n".join(lines) + "\n```\n")
        print(f"wrote {write_results_page(args.results_page, 'Command-line start-up', body)}")


if __name__ == "__main__":
    main()
