"""Validation of time dilation (issue 16, item 5): hours of live runs, case by case, resumable, each case under
the shared lock; root; not CI. Writes docs/results/dilation.md with `--results-page`.

Cases (stable ids; a case whose `result.json` exists is skipped, so a rerun resumes):
- `conv-s{seed}-k{K}`: one trace (lambda 10, 60 s, closest, profile-driven workers only) on a jitter-free copy of
  full-edge (Linux bridges, no controller) at K = 10 and K = 20; per seed the median |latency(K=10) -
  latency(K=20)| over the queries answered in both (paired by stream and query), virtual ms: at most 0.2.
- `neg-s{seed}`: the lambda 60 trace at a K that is too small (--neg-k, default 4), profile-driven workers as in
  the paper-load cases: the fidelity monitor must judge it not faithful (the run may stop early; its exit
  status 1, recorded != sent, is expected then).
- `paper-l{lambda}-s{seed}`: `compare` at the paper's loads on full-edge at the default profile (profile-driven
  workers, `compare`'s default: no core is reserved, the run has every core), three policies:
  success within 1.5 points per policy, the same ranking (Spearman's rho 1), window correlation at least 0.95,
  every testbed run judged faithful.
- `bench-k{K}`: `benchmarks/bench_live.py --tdf K` at rising virtual rates, up to the first judged not faithful: the
  highest per antenna judged faithful.

    sudo .venv/bin/python benchmarks/validate_dilation.py --list
    sudo .venv/bin/python benchmarks/validate_dilation.py --lock /tmp/cpu.lock            # all, resuming
    sudo .venv/bin/python benchmarks/validate_dilation.py --only conv-s1-k10,conv-s1-k20 --lock /tmp/cpu.lock
    sudo .venv/bin/python benchmarks/validate_dilation.py --report-only --results-page      # the page, from results

`--lock FILE` takes the lock for one case at a time, so that other work interleaves; do not also wrap the script
in `flock` on the same file (the cases would wait for the script's own lock). Exit status: 0 when every selected
case has run and every check of the cases done passes, 1 when a case could not run or a check fails, 2 on bad
arguments.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis.resultspage import add_results_page_argument, write_results_page  # noqa: E402

SEEDS = (1, 2, 3)
POLICIES = ("closest", "least-impedance", "load-balancing")
CONVERGENCE_KS = (10, 20)
CONVERGENCE_MAX_MS = 0.2
SUCCESS_MAX_PTS = 1.5
WINDOW_CORR_MIN = 0.95
FAITHFUL = "faithful"
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


def cases(work: Path, paper_k: dict[int, float], neg_k: float, bench_ks: tuple[float, ...],
          conv_duration_s: float = 60.0, paper_duration_s: float = 150.0, neg_duration_s: float = 60.0) -> list[Case]:
    """Returns every case, in the order they run."""
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
                "--tdf", f"{k:g}", "--out", str(res), *BASE), lambda res=res: {"out": str(res), **compare_result(res)}))
    for k in bench_ks:
        js = work / f"bench-k{k:g}" / "bench.json"
        out.append(Case(f"bench-k{k:g}", "bench", (
            _python(), "benchmarks/bench_live.py", "--tdf", f"{k:g}", "--rates", "100,200,400,800,1600",
            "--duration", "10", "--overhead-frames", "0", "--stop-unfaithful", "--json", str(js)), lambda js=js: bench_result(js)))
    return out


def to_run(all_cases: list[Case], work: Path, only: set[str] | None) -> list[Case]:
    """Returns the cases still to run: selected by `only` (None: all) and without a `result.json`."""
    return [c for c in all_cases if (only is None or c.id in only) and not (work / c.id / "result.json").exists()]


def run_case(case: Case, work: Path, lock: Path | None) -> dict:
    """Runs one case (holding `lock` for it alone), writes and returns its result; RuntimeError if it fails."""
    folder = work / case.id
    folder.mkdir(parents=True, exist_ok=True)
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
              **reduced}
    (folder / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def latencies(run_dir: Path) -> dict[tuple[int, int], float]:
    """Returns {(stream, query): response - send, virtual ms} of every answered query of a run."""
    from analysis.records import read_records

    t = read_records(run_dir / "records.csv").select(["stream_id", "query", "t_send_ms", "t_response_ms"]).to_pydict()
    return {(s, q): r - send for s, q, send, r in zip(t["stream_id"], t["query"], t["t_send_ms"], t["t_response_ms"],
                                                       strict=True) if r is not None and math.isfinite(r)}


def _arg(result: dict, option: str) -> str:
    """Returns the value of `option` in the argv a case ran with ('' if absent)."""
    argv = result["argv"]
    return argv[argv.index(option) + 1] if option in argv else ""


def _run_dirs(result: dict) -> list[Path]:
    """Returns the live run folders of a case's result (a run, a compare's testbed runs)."""
    if "run" in result:
        return [Path(result["run"])]
    if "out" in result:
        return sorted((Path(result["out"]) / "testbed").glob("*/"))
    return []


def _commits(done: dict[str, dict], kind: str) -> str:
    """Returns the commits the runs of `kind` ran at (their config.json), short, in order of first use."""
    seen: list[str] = []
    for r in done.values():
        for d in _run_dirs(r) if r["kind"] == kind else []:
            try:
                commit = json.loads((d / "config.json").read_text())["versions"]["git_commit"][:12]
            except (OSError, KeyError, ValueError, TypeError):
                continue
            if commit not in seen:
                seen.append(commit)
    return ", ".join(seen)


def _command(done: dict[str, dict], kind: str) -> list[str]:
    """Returns a line giving the command of the first case of `kind` done and the commits its cases ran at
    (none done: no line)."""
    first = next((r for r in done.values() if r["kind"] == kind and "argv" in r), None)
    if first is None:
        return []
    argv = [Path(a).name if a.endswith("python") else a for a in first["argv"]]
    commits = _commits(done, kind)
    return ["", f"The command of `{first['id']}` (the others differ in seed, K or rate): `{' '.join(argv)}`"
            + (f"; the runs ran at commit {commits}" if commits else "")]


def _mark(ok: bool) -> str:
    return "yes" if ok else "NO"


def _window_spread(out: Path, policy: str) -> str:
    """Returns "SD_SIM / SD_TESTBED | MEAN_ABS_DIFF" (points) of a compare's per-window success series of
    `policy` (its report.json), over the windows both sides have queries in; dashes if it is not there."""
    try:
        rows = json.loads((out / "report.json").read_text())["policies"]
        row = next(p for p in rows if p["policy"] == policy)
        a, b = (np.array(row[k], dtype=float) for k in ("series_simulator", "series_testbed"))
    except (OSError, ValueError, KeyError, StopIteration):
        return "- | -"
    ok = np.isfinite(a) & np.isfinite(b)
    if not ok.any():
        return "- | -"
    a, b = 100 * a[ok], 100 * b[ok]
    return f"{a.std():.2f} / {b.std():.2f} | {np.abs(a - b).mean():.2f}"


def monitor_margins(runs: list[Path]) -> list[str]:
    """Returns the table of the monitor's hard figures over `runs`: per figure its threshold, the largest value
    in the runs judged faithful and in those judged not faithful, and how many runs it put over its threshold."""
    seen: dict[tuple[str, str], dict] = {}
    for run in runs:
        fidelity = json.loads((run / "summary.json").read_text()).get("extra", {}).get("fidelity")
        for f in (fidelity or {}).get("figures", []):
            if not f.get("hard"):
                continue
            row = seen.setdefault((f["invariant"], f["statistic"]), {"thresholds": set(), "unit": f["unit"],
                                                                     "faithful": [], "not faithful": []})
            row["thresholds"].add(float(f["threshold"]))  # some depend on the run (e.g. its planned inference)
            row["over"] = row.get("over", 0) + (float(f["value"]) > float(f["threshold"]))
            row["faithful" if fidelity["verdict"] == FAITHFUL else "not faithful"].append(float(f["value"]))
    lines = ["| figure | threshold | largest when faithful (runs) | largest when not faithful (runs) | runs over it |",
             "|---|---|---|---|---|"]
    for (inv, stat), row in seen.items():
        good, bad = row["faithful"], row["not faithful"]
        low, high = min(row["thresholds"]), max(row["thresholds"])
        lines.append(f"| {inv} ({stat}, {row['unit']}) | {low:.3g}{'' if low == high else f'-{high:.3g}'} | "
                     + (f"{max(good):.3g} ({len(good)})" if good else "-") + " | "
                     + (f"{max(bad):.3g} ({len(bad)})" if bad else "-") + f" | {row['over']} |")
    return lines


def report(work: Path, planned: list[str] | None = None) -> tuple[str, bool]:
    """Returns the results page's body from the `result.json` files under `work` (the `planned` case ids not
    done listed as such), and whether every check of the cases done passes."""
    done = {p.parent.name: json.loads(p.read_text()) for p in sorted(work.glob("*/result.json"))}
    passed = True
    missing = [c for c in planned or [] if c not in done]
    lines = ([f"Not run yet ({len(missing)} of {len(planned or [])} cases): {', '.join(missing)}.", ""] if missing
             else []) + [f"## Convergence (K = {CONVERGENCE_KS[0]} against K = {CONVERGENCE_KS[1]}, jitter-free full-edge, "
             "lambda 10, closest)", "",
             "| seed | virtual s | paired queries | median abs diff (virtual ms) | within 0.2 ms | verdicts | wall s |",
             "|---|---|---|---|---|---|---|"]
    for s in SEEDS:
        a, b = (done.get(f"conv-s{s}-k{k}") for k in CONVERGENCE_KS)
        if not (a and b):
            lines.append(f"| {s} | not run | | | | | |")
            continue
        la, lb = latencies(Path(a["run"])), latencies(Path(b["run"]))
        diffs = [abs(la[q] - lb[q]) for q in la.keys() & lb.keys()]
        med = statistics.median(diffs) if diffs else float("nan")
        ok = med <= CONVERGENCE_MAX_MS and a["verdict"] == b["verdict"] == FAITHFUL
        passed &= ok
        lines.append(f"| {s} | {_arg(a, '--duration')} | {len(diffs)} | {med:.3f} | {_mark(ok)} | "
                     f"{a['verdict']} / {b['verdict']} | {a['wall_s']:.0f} / {b['wall_s']:.0f} |")
    lines += _command(done, "convergence")
    lines += ["", "## Negative control (lambda 60 at too small a K)", "",
              "| seed | K | virtual s | verdict | stopped early | violations | as expected | wall s |",
             "|---|---|---|---|---|---|---|---|"]
    for s in SEEDS:
        r = done.get(f"neg-s{s}")
        if not r:
            lines.append(f"| {s} | not run | | | | | | |")
            continue
        ok = r["verdict"] == "not faithful"
        passed &= ok
        lines.append(f"| {s} | {r['tdf']:g} | {_arg(r, '--duration')} | {r['verdict']} | "
                     f"{'yes' if r['stopped_early'] else 'no'} | {', '.join(dict.fromkeys(r['violations']))} | {_mark(ok)} | "
                     f"{r['wall_s']:.0f} |")
    lines += _command(done, "negative")
    lines += ["", "## The paper's loads (full-edge, default profile, testbed against simulator)", "",
              "| lambda | seed | K | virtual s | policy | simulator | testbed | diff (pts) | window corr | "
              "window sd sim / testbed (pts) | mean window diff (pts) | verdict | checks | wall s (case) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for cid, r in done.items():
        if r["kind"] != "paper":
            continue
        lam, seed = cid.split("-")[1][1:], cid.split("-")[2][1:]
        for p, v in r["policies"].items():
            failed = [name for name, good in (("success", abs(v["diff_pts"]) <= SUCCESS_MAX_PTS),
                                              ("window corr", v["corr"] >= WINDOW_CORR_MIN),
                                              ("verdict", v["verdict"] == FAITHFUL), ("ranking", r["spearman"] == 1.0))
                      if not good]
            ok = not failed
            passed &= ok
            lines.append(f"| {lam} | {seed} | {_arg(r, '--tdf')} | {_arg(r, '--duration')} | {p} | {v['sim']:.3f} | "
                         f"{v['testbed']:.3f} | {v['diff_pts']:+.2f} | {v['corr']:.3f} | "
                         f"{_window_spread(Path(r['out']), p) if r.get('out') else '- | -'} | {v['verdict']} | "
                         f"{_mark(ok)}{'' if ok else ' (' + ', '.join(failed) + ')'} | "
                         f"{r['wall_s']:.0f} |")
    lines += ["", f"Checks: success within {SUCCESS_MAX_PTS} points per policy, the same ranking (Spearman's rho 1), "
              f"window correlation at least {WINDOW_CORR_MIN}, the testbed judged faithful. The correlation is "
              "Pearson's over the per-window success series (1 s windows); beside it, each series' standard "
              "deviation and the mean absolute difference between them per window, in points: where the simulator's "
              "series varies less than the testbed's window-to-window noise, the correlation measures that noise.", "",
              *_command(done, "paper"), "",
              "## bench_live per K (virtual queries/s per antenna)", "",
              "| K | rates run (verdict) | highest judged faithful |", "|---|---|---|"]
    for cid, r in done.items():
        if r["kind"] == "bench":
            rates = ", ".join(f"{x['rate_per_antenna_qps']} ({x['verdict']})" for x in r["rows"])
            lines.append(f"| {cid.split('-k')[1]} | {rates} | {r['max_faithful_qps']} |")
    lines += _command(done, "bench")
    runs = [d for r in done.values() for d in _run_dirs(r) if (d / "summary.json").exists()]
    if runs:
        lines += ["", f"## The monitor's hard figures over these {len(runs)} live runs", "",
                  "How far the figures of the runs judged faithful sit below each threshold, how high those of the "
                  "runs judged not faithful went, and how many runs each figure put over its threshold (a run is not "
                  "faithful when any one figure is over).", "",
                  *monitor_margins(runs)]
    return "\n".join(lines) + "\n", passed


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
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "validation")
    ap.add_argument("--list", action="store_true", help="list the cases and whether each is done")
    ap.add_argument("--only", default=None, help="comma list of case ids")
    ap.add_argument("--lock", type=Path, default=None, help="flock this file around each case (shared machine)")
    ap.add_argument("--paper-k", type=_pairs, default=_pairs("20:8,60:25"), help="LAMBDA:K pairs of the paper loads")
    ap.add_argument("--neg-k", type=float, default=4.0, help="the negative control's K (too small for lambda 60)")
    ap.add_argument("--bench-k", type=_numbers, default=_numbers("1,4,10,20,40"), help="bench_live's K values")
    ap.add_argument("--conv-duration", type=float, default=60.0, help="virtual seconds of the convergence runs")
    ap.add_argument("--neg-duration", type=float, default=60.0, help="virtual seconds of the negative control")
    ap.add_argument("--paper-duration", type=float, default=150.0, help="virtual seconds of the paper-load runs")
    ap.add_argument("--report-only", action="store_true", help="run nothing: the report of the results so far")
    add_results_page_argument(ap, "dilation")
    args = ap.parse_args(argv)
    all_cases = cases(args.work, args.paper_k, args.neg_k, args.bench_k, args.conv_duration, args.paper_duration,
                      args.neg_duration)
    only = {c.strip() for c in args.only.split(",") if c.strip()} if args.only else None
    if only and (unknown := only - {c.id for c in all_cases}):
        print(f"error: --only: unknown case(s) {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    if args.list:
        for c in all_cases:
            print(f"{c.id:24s} {'done' if (args.work / c.id / 'result.json').exists() else 'to run'}")
        return 0
    failed = []
    for c in [] if args.report_only else to_run(all_cases, args.work, only):
        print(f"== {c.id}: {' '.join(c.argv[1:])}", flush=True)
        try:
            print(json.dumps(run_case(c, args.work, args.lock))[:400], flush=True)
        except RuntimeError as e:
            failed.append(c.id)
            print(f"error: {e}", file=sys.stderr)
    body, passed = report(args.work, [c.id for c in all_cases])
    print(body)
    if args.results_page:
        print(f"wrote {write_results_page(args.results_page, 'Time dilation: validation', body)}")
    return 0 if passed and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
