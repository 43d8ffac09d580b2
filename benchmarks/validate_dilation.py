"""Validation of time dilation (issue 16, item 5): hours of live runs, case by case, resumable, each case under
the shared lock; root; not CI. Writes docs/results/dilation.md with `--results-page`.

Cases (stable ids; a case whose `result.json` exists is skipped, so a rerun resumes):
- `conv-s{seed}-k{K}`: one trace (lambda 10, --conv-duration virtual s, closest, profile-driven workers only) on a
  jitter-free copy of full-edge (Linux bridges, no controller) at K = 10 and K = 20; per seed the median |latency(K=10) -
  latency(K=20)| over the queries answered in both (paired by stream and query), virtual ms: at most 0.2.
- `neg-s{seed}`: the lambda 60 trace at a K that is too small (--neg-k, default 4), profile-driven workers as in
  the paper-load cases: the fidelity monitor must judge it not faithful (the run may stop early; its exit
  status 1, recorded != sent, is expected then).
- `paper-l{lambda}-s{seed}`: `compare` at the paper's loads (--paper-k LAMBDA:K, default lambda 20 at K 6 and 60 at
  K 16; --paper-duration, default 120 virtual s) on full-edge at the default profile (profile-driven
  workers, `compare`'s default: no core is reserved, the run has every core), three policies:
  success within 1.5 points per policy, the same ranking, window correlation at least 0.95 (or the simulator's
  own across run seeds where that is lower: benchmarks/dilation_ceiling.py), every testbed run judged faithful.
- `bench-k{K}`: `benchmarks/bench_live.py --tdf K` at rising virtual rates, up to the first judged not faithful: the
  highest per antenna judged faithful.

    sudo .venv/bin/python benchmarks/validate_dilation.py --list
    sudo .venv/bin/python benchmarks/validate_dilation.py --lock /tmp/cpu.lock            # all, resuming
    sudo .venv/bin/python benchmarks/validate_dilation.py --only conv-s1-k10,conv-s1-k20 --lock /tmp/cpu.lock
    sudo .venv/bin/python benchmarks/validate_dilation.py --report-only --results-page      # the page, from results

`--fidelity-page paper-l60-s1` (say) has that case's `compare` write its report to docs/results/fidelity.md as well,
with its own command line: the simulator against the testbed at the paper's load, at the nominal profile.

Each case's result is kept, self-contained, in `docs/results/dilation-cases/<id>.json` (with, for a convergence
case, its per-query latencies beside it): what the report needs of the case's runs (verdicts, the monitor's hard
figures, commits, the window series' spread), so that the page can be written, and the validation resumed, on a
machine that no longer has the runs themselves. Commit them with the page. A result in `--work` that is not kept
yet (or is newer than its kept copy) is kept before each report. To run a case again, delete its kept copy and its
`result.json`; what an earlier try left in its folder is moved to `incomplete-<time>/` there before it runs.

`--lock FILE` takes the lock for one case at a time, so that other work interleaves; do not also wrap the script
in `flock` on the same file (the cases would wait for the script's own lock). Exit status: 0 when every selected
case has run and every check of the cases done passes, 1 when a case could not run or a check fails, 2 on bad
arguments.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis.resultspage import add_results_page_argument, machine, write_results_page  # noqa: E402
from benchmarks.dilation_report import (  # noqa: E402, F401 (the report's names are this script's too)
    CONVERGENCE_KS,
    FAITHFUL,
    KEEP,
    SEEDS,
    archive,
    keep_result,
    kept_latencies,
    latencies,
    monitor_margins,
    report,
    window_spread,
)

POLICIES = ("closest", "least-impedance", "load-balancing")
BASE = ("--switch", "lxbr", "--controller", "none", "--pcap", "none")
"""Linux bridges without a controller (full-edge is a tree): less fixed CPU than Open vSwitch."""
RUN_BASE = (*BASE, "--events", "none")
"""A live run's: no network events (on full-edge the run's default is the demonstration's)."""


@dataclass(frozen=True)
class Case:
    """One live run (or benchmark) of the validation and how its output is reduced to `result.json`."""

    id: str
    kind: str
    argv: tuple[str, ...]
    reduce: Callable[[], dict] = field(compare=False)
    """Reads the case's output into its result; raises OSError or KeyError when the output is missing."""
    ok_exits: tuple[int, ...] = (0,)
    """Exit statuses after which the output is read (a run stopped early by the monitor exits 1)."""


def _python() -> str:
    return str(ROOT / ".venv" / "bin" / "python")


def jitter_free_topology(folder: Path) -> Path:
    """Writes full-edge with every delay deviation set to 0 (one latency per path: convergence is exact)."""
    doc = yaml.safe_load((ROOT / "topologies" / "full-edge.yaml").read_text())
    for site in doc["sites"]:
        if site.get("radio"):
            site["radio"]["delay_dev_ms"] = 0
    for link in doc["links"]:
        link["delay_dev_ms"] = 0
    doc["name"] = "full-edge-nojitter"
    path = folder / "full-edge-nojitter.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_verdict(run_dir: Path) -> dict:
    """Returns a live run's verdict, its hard invariants broken, whether it stopped early, and its success."""
    summary = json.loads((run_dir / "summary.json").read_text())
    fidelity = summary["extra"]["fidelity"]
    return {"verdict": fidelity["verdict"], "tdf": fidelity.get("tdf"),
            "violations": [v["invariant"] for v in fidelity.get("violations", [])],
            "stopped_early": fidelity.get("stopped_early") is not None,
            "success": summary["overall"]["success"]}


def compare_result(out: Path) -> dict:
    """Returns a `compare` folder's figures per policy (both sides' success, the gap, window correlation, the
    testbed's verdict) and the ranking's Spearman rho."""
    report = json.loads((out / "report.json").read_text())
    return {"policies": {p["policy"]: {"sim": p["simulator"]["success"], "testbed": p["testbed"]["success"],
                                        "diff_pts": p["success_diff_pts"], "corr": p["window_correlation"],
                                        "verdict": run_verdict(out / "testbed" / p["policy"])["verdict"]}
                         for p in report["policies"]},
            "spearman": report["ranking_spearman_rho"]}


def bench_result(path: Path) -> dict:
    """Returns bench_live's rows (rate, success, cores, wall) with each run's verdict, and the highest virtual rate
    per antenna judged faithful (None: none was)."""
    rows = json.loads(path.read_text())
    out = [{"rate_per_antenna_qps": r["rate_per_antenna_qps"], "success": r["success"], "cpu_cores": r["cpu_cores"],
            "wall_s": r["wall_s"], "verdict": run_verdict(Path(r["run_dir"]))["verdict"]} for r in rows]
    faithful = [r["rate_per_antenna_qps"] for r in out if r["verdict"] == FAITHFUL]
    return {"rows": out, "max_faithful_qps": max(faithful, default=None)}


BENCH_RATES = (25, 50, 100, 200, 400, 800, 1600)
"""bench_live's virtual rates per antenna, rising."""


def bench_rates(k: float) -> str:
    """Returns bench_live's rates at K: every one undilated (the issue's figure for the undilated testbed is about
    50 per antenna, by success; the monitor judges each rate), from 100 when dilated."""
    return ",".join(str(r) for r in BENCH_RATES if k == 1.0 or r >= 100)


def cases(work: Path, paper_k: dict[int, float], neg_k: float, bench_ks: tuple[float, ...],
          conv_duration_s: float = 20.0, paper_duration_s: float = 120.0, neg_duration_s: float = 60.0,
          fidelity_page: str | None = None) -> list[Case]:
    """Returns every case, in the order they run; the paper case named by `fidelity_page` also writes `compare`'s
    results page (docs/results/fidelity.md)."""
    topo = jitter_free_topology(work)
    out: list[Case] = []
    for s in SEEDS:
        for k in CONVERGENCE_KS:
            run = work / f"conv-s{s}-k{k}" / "run"
            out.append(Case(f"conv-s{s}-k{k}", "convergence", (
                _python(), "run_testbed.py", "run", "--topo", str(topo), "--lambda", "10", "--duration",
                f"{conv_duration_s:g}", "--seed", str(s), "--policy", "closest", "--real-workers", "none",
                "--tdf", f"{k:g}", "--out", str(run), *RUN_BASE),
                lambda run=run: {"run": str(run), **run_verdict(run)}))
    for s in SEEDS:
        run = work / f"neg-s{s}" / "run"
        out.append(Case(f"neg-s{s}", "negative", (
            _python(), "run_testbed.py", "run", "--topo", "full-edge", "--lambda", "60", "--duration",
            f"{neg_duration_s:g}", "--seed", str(s), "--policy", "load-balancing", "--tdf", f"{neg_k:g}",
            "--real-workers", "none", "--out", str(run), *RUN_BASE),
            lambda run=run: {"run": str(run), **run_verdict(run)}, ok_exits=(0, 1)))
    for lam, k in paper_k.items():
        for s in SEEDS:
            res = work / f"paper-l{lam}-s{s}" / "compare"
            out.append(Case(f"paper-l{lam}-s{s}", "paper", (
                _python(), "run_testbed.py", "compare", "--topo", "full-edge", "--lambda", str(lam),
                "--duration", f"{paper_duration_s:g}", "--seed", str(s), "--policies", ",".join(POLICIES),
                "--tdf", f"{k:g}", "--out", str(res), *BASE,
                *(("--results-page",) if fidelity_page == f"paper-l{lam}-s{s}" else ())),
                lambda res=res: {"out": str(res), **compare_result(res)}))
    for k in bench_ks:
        js = work / f"bench-k{k:g}" / "bench.json"
        out.append(Case(f"bench-k{k:g}", "bench", (
            _python(), "benchmarks/bench_live.py", "--tdf", f"{k:g}", "--rates", bench_rates(k),
            "--duration", "10", "--overhead-frames", "0", "--stop-unfaithful", "--json", str(js)), lambda js=js: bench_result(js)))
    return out


def is_done(case_id: str, work: Path, keep: Path) -> bool:
    """Whether a case has a result: in `work` (this machine's runs) or kept."""
    return (work / case_id / "result.json").exists() or (keep / f"{case_id}.json").exists()


def to_run(all_cases: list[Case], work: Path, only: set[str] | None, keep: Path = KEEP) -> list[Case]:
    """Returns the cases still to run: selected by `only` (None: all) and without a result."""
    return [c for c in all_cases if (only is None or c.id in only) and not is_done(c.id, work, keep)]


def set_aside(folder: Path) -> Path | None:
    """Moves what an earlier, unfinished try of a case left in its folder (no result.json: interrupted, or its
    result deleted to run it again) into `incomplete-<UTC time>/` there, so the case's run starts in an empty
    folder; returns where it went, or None if there was nothing."""
    left = [p for p in folder.iterdir() if p.name != "log.txt" and not p.name.startswith("incomplete-")] \
        if folder.is_dir() and not (folder / "result.json").exists() else []
    if not left:
        return None
    aside = folder / f"incomplete-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    aside.mkdir()
    for p in left:
        p.rename(aside / p.name)
    return aside


def run_case(case: Case, work: Path, lock: Path | None) -> dict:
    """Runs one case (holding `lock` for it alone), writes and returns its result; RuntimeError if it fails."""
    folder = work / case.id
    folder.mkdir(parents=True, exist_ok=True)
    if (aside := set_aside(folder)) is not None:
        print(f"{case.id}: an earlier unfinished try moved to {aside}", flush=True)
    with open(lock, "a+") if lock is not None else open(folder / "log.txt", "a") as held:  # noqa: SIM115
        if lock is not None:
            fcntl.flock(held, fcntl.LOCK_EX)
        t = time.monotonic()
        with open(folder / "log.txt", "w") as log:
            rc = subprocess.run(case.argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
        wall_s = time.monotonic() - t
    if rc not in case.ok_exits:
        raise RuntimeError(f"{case.id}: exit {rc}; see {folder / 'log.txt'}")
    try:
        reduced = case.reduce()
    except (OSError, KeyError, ValueError) as exc:
        raise RuntimeError(f"{case.id}: exit {rc} but its output cannot be read ({exc}); see {folder / 'log.txt'}") \
            from None
    result = {"id": case.id, "kind": case.kind, "exit": rc, "wall_s": round(wall_s, 1), "argv": list(case.argv),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(), **reduced}
    (folder / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def _pairs(text: str) -> dict[int, float]:
    try:
        return {int(a): float(b) for a, b in (p.split(":") for p in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LAMBDA:K,...") from None


def _numbers(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(k) for k in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected K,...") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "validation", help="where the runs go")
    ap.add_argument("--keep", type=Path, default=KEEP, help="where each case's self-contained result is kept")
    ap.add_argument("--list", action="store_true", help="list the cases and whether each is done")
    ap.add_argument("--only", default=None, help="comma list of case ids")
    ap.add_argument("--lock", type=Path, default=None, help="flock this file around each case (shared machine)")
    ap.add_argument("--paper-k", type=_pairs, default=_pairs("20:6,60:16"), help="LAMBDA:K pairs of the paper loads")
    ap.add_argument("--neg-k", type=float, default=4.0, help="the negative control's K (too small for lambda 60)")
    ap.add_argument("--bench-k", type=_numbers, default=_numbers("1,4,10,20,40"), help="bench_live's K values")
    ap.add_argument("--conv-duration", type=float, default=20.0, help="virtual seconds of the convergence runs")
    ap.add_argument("--neg-duration", type=float, default=60.0, help="virtual seconds of the negative control")
    ap.add_argument("--paper-duration", type=float, default=120.0, help="virtual seconds of the paper-load runs")
    ap.add_argument("--fidelity-page", default=None, metavar="CASE",
                    help="this paper case's compare also writes docs/results/fidelity.md (of the checkout it runs in)")
    ap.add_argument("--report-only", action="store_true", help="run nothing: the report of the results so far")
    add_results_page_argument(ap, "dilation")
    args = ap.parse_args(argv)
    all_cases = cases(args.work, args.paper_k, args.neg_k, args.bench_k, args.conv_duration, args.paper_duration,
                      args.neg_duration, args.fidelity_page)
    if args.fidelity_page and args.fidelity_page not in {c.id for c in all_cases if c.kind == "paper"}:
        print(f"error: --fidelity-page: {args.fidelity_page!r} is not a paper case (paper-l<lambda>-s<seed>)",
              file=sys.stderr)
        return 2
    only = {c.strip() for c in args.only.split(",") if c.strip()} if args.only else None
    if only and (unknown := only - {c.id for c in all_cases}):
        print(f"error: --only: unknown case(s) {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    if args.list:
        for c in all_cases:
            print(f"{c.id:24s} {'done' if is_done(c.id, args.work, args.keep) else 'to run'}")
        return 0
    failed = []
    pending = [] if args.report_only else to_run(all_cases, args.work, only, args.keep)
    if args.fidelity_page and args.fidelity_page not in {c.id for c in pending}:
        print(f"warning: --fidelity-page: {args.fidelity_page} does not run now (done, or not in --only): "
              "docs/results/fidelity.md is not written", file=sys.stderr)
    for c in pending:
        print(f"== {c.id}: {' '.join(c.argv[1:])}", flush=True)
        try:
            print(json.dumps(keep_result(run_case(c, args.work, args.lock), args.keep))[:400], flush=True)
        except RuntimeError as e:
            failed.append(c.id)
            print(f"error: {e}", file=sys.stderr)
    if kept := archive(args.work, args.keep):
        print(f"kept {', '.join(kept)} in {args.keep}")
    body, passed = report(args.keep, [c.id for c in all_cases])
    print(body)
    if args.results_page:
        print(f"wrote {write_results_page(args.results_page, 'Time dilation: validation', body)}")
    return 0 if passed and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
