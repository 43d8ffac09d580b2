"""The time-dilation validation's results: each case's result kept self-contained (what the report needs of its
runs: verdicts, the monitor's hard figures, commits, the window series and their spread, a convergence case's
per-query latencies), and the results page written from the kept results alone, with the checks of issue 16,
item 5, and the paper-load cases against the simulator of the page's commit (benchmarks/dilation_resim.py).
`benchmarks/validate_dilation.py` runs the cases."""

from __future__ import annotations

import gzip
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np

from analysis.fidelity import SELF_SEEDS, ranking_reversals
from analysis.pairing import pair_misses, self_cell
from analysis.records import read_records
from analysis.resultspage import machine
from benchmarks.dilation_ceiling import Ceiling, ceilings, gap_within_simulator, window_bar
from benchmarks.dilation_resim import case_arg, paper_id, resimulated_section, series_array, window_series
from live.spec import RunSpec

ROOT = Path(__file__).resolve().parent.parent
SEEDS = (1, 2, 3)
CONVERGENCE_KS = (10, 20)
CONVERGENCE_MAX_MS = 0.2
SUCCESS_MAX_PTS = 1.5
WINDOW_CORR_MIN = 0.95
FAITHFUL = "faithful"
KEEP = ROOT / "docs" / "results" / "dilation-cases"
"""Where each case's self-contained result is kept (committed)."""


def latencies(run_dir: Path) -> dict[tuple[int, int], float]:
    """Returns {(stream, query): response - send, virtual ms} of every answered query of a run."""
    from analysis.records import read_records

    t = read_records(run_dir / "records.csv").select(["stream_id", "query", "t_send_ms", "t_response_ms"]).to_pydict()
    return {(s, q): r - send for s, q, send, r in zip(t["stream_id"], t["query"], t["t_send_ms"], t["t_response_ms"],
                                                       strict=True) if r is not None and math.isfinite(r)}


def _run_facts(run: Path) -> dict | None:
    """Returns what the report needs of one live run (its commit, verdict and the monitor's hard figures; each
    empty where its file is missing); None when the run has neither its summary nor its config."""
    try:
        fidelity = json.loads((run / "summary.json").read_text()).get("extra", {}).get("fidelity") or {}
    except (OSError, ValueError):
        fidelity = {}
    try:
        commit = json.loads((run / "config.json").read_text())["versions"]["git_commit"]
    except (OSError, KeyError, ValueError, TypeError):
        commit = ""
    if not fidelity and not commit:
        return None
    return {"dir": str(run), "commit": commit, "verdict": fidelity.get("verdict"),
            "figures": [f for f in fidelity.get("figures", []) if f.get("hard")],
            "other_cores_max": _other_cores_max(run)}


def _other_cores_max(run: Path) -> float | None:
    """Returns the most cores busy with work that is not the run's in one of its monitor's intervals (another
    experiment or a test run beside it; live/verdict.py's figure 'other work on the machine'), or None without
    its monitor.jsonl."""
    from live.monitor import MONITOR_NAME
    from live.monitor_figures import other_work
    from live.verdict import dilation_factor

    try:
        samples = [json.loads(x) for x in (run / MONITOR_NAME).read_text().splitlines() if x.strip()]
        config = json.loads((run / "config.json").read_text())
    except (OSError, ValueError):
        return None
    _, cores = other_work(samples, dilation_factor(config))
    return round(float(cores.max()), 3) if len(cores) else None


def _other_cores(result: dict, policy: str) -> str:
    """Returns the cell of a paper case's testbed run of `policy`: its 'other work on the machine' max, or '-'
    where its kept result has none."""
    run = next((f for f in result.get("runs", []) if Path(f["dir"]).name == policy), {})
    value = run.get("other_cores_max")
    return "-" if value is None else f"{value:.2f}"


def window_spread(out: Path, policy: str) -> dict | None:
    """Returns the standard deviation of each side's per-window success series of `policy` in a compare folder
    (its report.json) and their mean absolute difference, in points, over the windows both sides have queries
    in; None if it is not there."""
    try:
        rows = json.loads((out / "report.json").read_text())["policies"]
        row = next(p for p in rows if p["policy"] == policy)
        a, b = (series_array(row[k]) for k in ("series_simulator", "series_testbed"))
    except (OSError, ValueError, KeyError, StopIteration):
        return None
    return series_spread(a, b)


def series_spread(sim: np.ndarray, testbed: np.ndarray) -> dict | None:
    """Returns the standard deviation of each side's per-window success series (shares; nan: no query) and their
    mean absolute difference, in points, over the windows both have (the shorter's); None where they share none."""
    n = min(len(sim), len(testbed))
    a, b = sim[:n], testbed[:n]
    ok = np.isfinite(a) & np.isfinite(b)
    if not ok.any():
        return None
    a, b = 100 * a[ok], 100 * b[ok]
    return {"sd_sim_pts": float(a.std()), "sd_testbed_pts": float(b.std()), "mean_diff_pts": float(np.abs(a - b).mean())}


def paired_misses(out: Path, policy: str, window_s: float) -> dict | None:
    """Returns `policy`'s queries paired across a compare folder's two logs (analysis/pairing.py): how many were
    missed on both sides, on the testbed alone and in the simulator alone, the testbed's own misses by cause and
    cluster, and how both sides' own misses bunch into windows; None if a log is not there or cannot be read."""
    try:
        sim, tb = (read_records(out / side / policy / "records.csv") for side in ("simulator", "testbed"))
    except OSError:
        return None
    except ValueError as exc:  # pyarrow's ArrowInvalid (a truncated log), a query logged twice
        print(f"{out}: {policy}'s logs not paired ({exc})")
        return None
    r = pair_misses(policy, sim, tb, window_s)
    return {"paired": r.paired, "not_in_testbed_log": r.only_simulator, "both_missed": r.both_missed,
            "testbed_missed": r.testbed_missed, "simulator_missed": r.simulator_missed, "why": r.testbed_missed_why,
            "where": r.testbed_missed_where, "dispersion_testbed": r.dispersion_testbed,
            "dispersion_simulator": r.dispersion_simulator}


def _number(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.2f}"


def paired_section(done: dict[str, dict]) -> list[str]:
    """Returns the page's section on the paper cases' queries paired across both logs (cases kept with them)."""
    rows = [(cid, p, v["paired"]) for cid, r in done.items() if r["kind"] == "paper"
            for p, v in r["policies"].items() if v.get("paired")]
    if not rows:
        return []
    lines = ["", "### Which queries each side missed", "",
             "Each query paired across the two logs (analysis/pairing.py): missed on both sides, on the testbed "
             "alone, in the simulator alone; queries the simulator logged and the testbed did not are counted apart. "
             "*One side alone*: the testbed's plus the simulator's. Beside it the simulator against itself: the same "
             "count between its own seed's simulation and each other seed's, from this page's simulator (median, "
             "min-max); a testbed within that range misses other queries than the simulator about as often as the "
             "simulator does under another seed. *Dispersion*: variance over mean of each side's own misses per "
             "window (1: independent of each other, above: bunched). The testbed's own misses by cause: the stage "
             "that grew most against the simulator's same query, `no answer`, or a rejection's reason. Kept with the "
             "cases run since the report pairs them.", "",
             "| case | policy | paired | not in testbed log | missed on both | testbed alone | simulator alone | "
             "one side alone | simulator vs itself | dispersion testbed / simulator | testbed's own misses by cause | "
             "by cluster |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    ceils = {cid: ceilings(done[cid]) for cid in dict.fromkeys(cid for cid, _, _ in rows)}  # once per case
    for cid, p, q in rows:
        ceil = ceils[cid].get(p)
        lines.append(f"| {cid} | {p} | {q['paired']} | {q['not_in_testbed_log']} | {q['both_missed']} | "
                     f"{q['testbed_missed']} | {q['simulator_missed']} | {q['testbed_missed'] + q['simulator_missed']} | "
                     f"{self_cell(list(ceil.one_side)) if ceil else '-'} | "
                     f"{_number(q['dispersion_testbed'])} / {_number(q['dispersion_simulator'])} | "
                     f"{', '.join(f'{k} {n}' for k, n in q['why'].items()) or '-'} | "
                     f"{', '.join(f'{k} {n}' for k, n in q['where'].items()) or '-'} |")
    return lines


def keep_result(result: dict, keep: Path) -> dict:
    """Writes and returns a case's self-contained result (`<keep>/<id>.json`; a convergence case's latencies
    beside it) from its `result.json` and its runs' folders."""
    kept = dict(result)
    kept.setdefault("machine", machine())
    kept["runs"] = [f for d in _run_dirs(result) if (f := _run_facts(d)) is not None]
    keep.mkdir(parents=True, exist_ok=True)
    if result["kind"] == "paper" and result.get("out"):
        window_s = float(case_arg(result, "--window") or RunSpec().window_s)
        kept["policies"] = {p: {**v, "spread": window_spread(Path(result["out"]), p),
                                "series_testbed": window_series(Path(result["out"]), p),
                                "paired": paired_misses(Path(result["out"]), p, window_s)}
                            for p, v in result["policies"].items()}
    if result["kind"] == "convergence":
        name = f"{result['id']}.latencies.csv.gz"
        rows = "".join(f"{s},{q},{lat:.4f}\n" for (s, q), lat in sorted(latencies(Path(result["run"])).items()))
        with open(keep / name, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
            gz.write(("stream_id,query,latency_ms\n" + rows).encode())
        kept["latencies_file"] = name
    (keep / f"{result['id']}.json").write_text(json.dumps(kept, indent=1) + "\n")
    return kept


def archive(work: Path, keep: Path) -> list[str]:
    """Keeps every result in `work` not kept yet or newer than its kept copy; returns their ids."""
    out = []
    for path in sorted(work.glob("*/result.json")):
        kept = keep / f"{path.parent.name}.json"
        if kept.exists() and kept.stat().st_mtime >= path.stat().st_mtime:
            continue
        result = json.loads(path.read_text())
        result.setdefault("date", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(path.stat().st_mtime)))
        keep_result(result, keep)
        out.append(result["id"])
    return out


def kept_latencies(keep: Path, result: dict) -> dict[tuple[int, int], float]:
    """Returns a kept convergence case's {(stream, query): latency, virtual ms}."""
    with gzip.open(keep / result["latencies_file"], "rt") as f:
        next(f)
        return {(int(s), int(q)): float(lat) for s, q, lat in (line.split(",") for line in f)}


def _run_dirs(result: dict) -> list[Path]:
    """Returns the live run folders of a case's result (a run, a compare's testbed runs)."""
    if "run" in result:
        return [Path(result["run"])]
    if "out" in result:
        return sorted((Path(result["out"]) / "testbed").glob("*/"))
    return []


def _commits(done: dict[str, dict], kind: str) -> str:
    """Returns the commits the runs of `kind` ran at, short, in order of first use."""
    seen: list[str] = []
    for r in done.values():
        for run in r.get("runs", []) if r["kind"] == kind else []:
            if run["commit"] and run["commit"][:12] not in seen:
                seen.append(run["commit"][:12])
    return ", ".join(seen)


def _command(done: dict[str, dict], kind: str) -> list[str]:
    """Returns a line giving the command of the first case of `kind` done and the commits its cases ran at
    (none done: no line)."""
    first = next((r for r in done.values() if r["kind"] == kind and "argv" in r), None)
    if first is None:
        return []
    argv = [Path(a).name if a.endswith("python") else a for a in first["argv"]]
    commits = _commits(done, kind)
    dates = sorted(r["date"] for r in done.values() if r["kind"] == kind and "date" in r)
    machines = list(dict.fromkeys(r["machine"] for r in done.values() if r["kind"] == kind and "machine" in r))
    return ["", f"The command of `{first['id']}` (the others differ in seed, K or rate): `{' '.join(argv)}`"
            + (f"; the runs ran at commit {commits}" if commits else "")
            + (f", {dates[0]} to {dates[-1]}" if dates else "") + (f", on {'; '.join(machines)}" if machines else "")]


def _mark(ok: bool) -> str:
    return "yes" if ok else "NO"


def _ceiling_cell(c: Ceiling | None) -> str:
    """Returns "MEDIAN / MIN" of the simulator's correlation with itself, "flat" where its own series is, or a dash
    where it was not run."""
    if c is None:
        return "-"
    return f"{c.corr_median:.3f} / {c.corr_min:.3f}" if math.isfinite(c.corr_median) else "flat"


def paper_checks(policy: str, v: dict, reversed_: list[str], ceil: dict[str, Ceiling],
                 testbed: dict[str, float]) -> tuple[list[str], list[str]]:
    """Returns the checks a paper case's `policy` fails and the reversals excused: `v` its figures (`diff_pts`,
    testbed minus simulator; `corr` and `spread`, the windows; `verdict`), `reversed_` the case's pairs the
    testbed orders the other way round (`ranking_reversals`), `ceil` the simulator's own per policy
    (`ceilings`), `testbed` every policy's testbed success. Success within SUCCESS_MAX_PTS, the windows agreeing
    (`windows_agree` against `window_bar`), the run judged faithful, and no reversal of `policy`'s but by a gap
    the simulator itself gives under another seed (those are excused)."""
    mine = [x for x in reversed_ if policy in x.split(" > ")]
    settled = [x for x in mine if not gap_within_simulator(
        ceil.get(a := x.split(" > ")[0]), ceil.get(b := x.split(" > ")[1]), testbed[a] - testbed[b])]
    bar = window_bar(WINDOW_CORR_MIN, ceil.get(policy))
    failed = [name for name, good in (("success", abs(v["diff_pts"]) <= SUCCESS_MAX_PTS),
                                      ("windows", windows_agree(v, bar, WINDOW_CORR_MIN)),
                                      ("verdict", v["verdict"] == FAITHFUL),
                                      (f"ranking: {', '.join(settled)} reversed", not settled))
              if not good]
    return failed, [x for x in mine if x not in settled]


def windows_agree(v: dict, bar: float, wanted: float) -> bool:
    """Whether a policy's per-window series agree: the correlation at least `bar`, and where `bar` is below
    `wanted` (the simulator's own correlation), or the correlation is undefined (nan, a flat series), the mean
    absolute window difference within SUCCESS_MAX_PTS too (alone where undefined)."""
    spread = v.get("spread")
    close = bool(spread) and spread["mean_diff_pts"] <= SUCCESS_MAX_PTS
    if not math.isfinite(v["corr"]):
        return close
    return v["corr"] >= bar and (bar >= wanted or close)


def _spread_cells(spread: dict | None) -> str:
    """Returns "SD_SIM / SD_TESTBED | MEAN_ABS_DIFF" (points) of a `window_spread`; dashes if there is none."""
    if not spread:
        return "- | -"
    return f"{spread['sd_sim_pts']:.2f} / {spread['sd_testbed_pts']:.2f} | {spread['mean_diff_pts']:.2f}"


def monitor_margins(runs: list[dict]) -> list[str]:
    """Returns the table of the monitor's hard figures over `runs` (each with its verdict and figures): per figure
    its threshold, the largest value in the runs judged faithful and in those judged not faithful, and how many
    runs it put over its threshold."""
    seen: dict[tuple[str, str], dict] = {}
    for run in runs:
        for f in run.get("figures", []):
            if not f.get("hard"):
                continue
            row = seen.setdefault((f["invariant"], f["statistic"]), {"thresholds": set(), "unit": f["unit"],
                                                                     "faithful": [], "not faithful": []})
            row["thresholds"].add(float(f["threshold"]))  # some depend on the run (e.g. its planned inference)
            row["over"] = row.get("over", 0) + (float(f["value"]) > float(f["threshold"]))
            row["faithful" if run["verdict"] == FAITHFUL else "not faithful"].append(float(f["value"]))
    lines = ["| figure | threshold | largest when faithful (runs) | largest when not faithful (runs) | runs over it |",
             "|---|---|---|---|---|"]
    for (inv, stat), row in seen.items():
        good, bad = row["faithful"], row["not faithful"]
        low, high = min(row["thresholds"]), max(row["thresholds"])
        lines.append(f"| {inv} ({stat}, {row['unit']}) | {low:.3g}{'' if low == high else f'-{high:.3g}'} | "
                     + (f"{max(good):.3g} ({len(good)})" if good else "-") + " | "
                     + (f"{max(bad):.3g} ({len(bad)})" if bad else "-") + f" | {row['over']} |")
    return lines


def seed_spread(done: dict[str, dict], passed: dict[tuple[str, str], bool]) -> list[str]:
    """Returns the paper-load cases' spread over their seeds, per lambda, K and policy: the range of each side's
    success, of the difference and of the window correlation, and how many seeds pass every check (`passed`:
    (case id, policy) -> whether it passed, as the per-seed table judged it)."""
    groups: dict[tuple[str, str, str], list[tuple[dict, dict]]] = {}
    for r in (r for r in done.values() if r["kind"] == "paper"):
        for p, v in r["policies"].items():
            groups.setdefault((paper_id(r["id"])[0], case_arg(r, "--tdf"), p), []).append((r, v))
    if not groups:
        return []
    lines = ["", "Over the seeds (each lambda, K and policy; ranges are min to max):", "",
             "| lambda | K | policy | seeds | simulator | testbed | diff (pts) | window corr | seeds passing |",
             "|---|---|---|---|---|---|---|---|---|"]

    def span(xs: list[float], fmt: str) -> str:
        xs = [x for x in xs if x == x]  # NaN (a flat series) left out
        if not xs:
            return ""
        lo, hi = format(min(xs), fmt), format(max(xs), fmt)
        return lo if lo == hi else f"{lo} to {hi}"

    for (lam, k, p), rows in groups.items():
        seeds = ", ".join(paper_id(r["id"])[1] for r, _ in rows)
        ok = sum(passed.get((r["id"], p), False) for r, _ in rows)
        lines.append(f"| {lam} | {k} | {p} | {seeds} | {span([v['sim'] for _, v in rows], '.3f')} | "
                     f"{span([v['testbed'] for _, v in rows], '.3f')} | {span([v['diff_pts'] for _, v in rows], '+.2f')} | "
                     f"{span([v['corr'] for _, v in rows], '.3f')} | {ok} of {len(rows)} |")
    return lines


def report(keep: Path, planned: list[str] | None = None) -> tuple[str, bool]:
    """Returns the results page's body from the kept results under `keep` (the `planned` case ids not done
    listed as such), and whether every check of the cases done passes."""
    done = {p.stem: json.loads(p.read_text()) for p in sorted(keep.glob("*.json"))}
    if planned:  # the planned cases first, in their order
        done = {c: done[c] for c in planned if c in done} | done
    passed = True
    missing = [c for c in planned or [] if c not in done]
    lines = ([f"Not run yet ({len(missing)} of {len(planned or [])} cases): {', '.join(missing)}.", ""] if missing
             else []) + [f"## Convergence (K = {CONVERGENCE_KS[0]} against K = {CONVERGENCE_KS[1]}, jitter-free full-edge, "
             "lambda 10, closest)", "",
             f"| seed | virtual s | paired queries | median abs diff (virtual ms) | median diff K {CONVERGENCE_KS[0]} - "
             f"K {CONVERGENCE_KS[1]} (virtual ms) | share slower at K {CONVERGENCE_KS[0]} | undilated host time per "
             "query (real ms) | within 0.2 ms | verdicts | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    meds: list[float] = []
    for s in SEEDS:
        a, b = (done.get(f"conv-s{s}-k{k}") for k in CONVERGENCE_KS)
        if not (a and b):
            lines.append(f"| {s} | not run | | | | | | | | |")
            continue
        la, lb = kept_latencies(keep, a), kept_latencies(keep, b)
        signed = [la[q] - lb[q] for q in la.keys() & lb.keys()]
        diffs = [abs(d) for d in signed]
        med = statistics.median(diffs) if diffs else float("nan")
        bias = statistics.median(signed) if signed else float("nan")
        slower = sum(d > 0 for d in signed) / len(signed) if signed else float("nan")
        host_ms = bias / (1 / CONVERGENCE_KS[0] - 1 / CONVERGENCE_KS[1])  # a real cost H shows as H / K virtual
        ok = med <= CONVERGENCE_MAX_MS and a["verdict"] == b["verdict"] == FAITHFUL
        passed &= ok
        if med == med:  # NaN: no query answered in both
            meds.append(med)
        lines.append(f"| {s} | {case_arg(a, '--duration')} | {len(diffs)} | {med:.3f} | {bias:.3f} | {slower:.2f} | "
                     f"{host_ms:.1f} | {_mark(ok)} | "
                     f"{a['verdict']} / {b['verdict']} | {a['wall_s']:.0f} / {b['wall_s']:.0f} |")
    if len(meds) > 1:
        lines += ["", f"Over the {len(meds)} seeds the median absolute difference spans {min(meds):.3f} to "
                  f"{max(meds):.3f} virtual ms (mean {statistics.fmean(meds):.3f})."]
    lines += ["", "What dilation cannot slow down shows in the difference: a query's host time that is not emulated (its "
              "HTTP stacks, the userspace switches, timer wake-ups), H real ms, counts H / K virtual ms, so a run at "
              f"K {CONVERGENCE_KS[0]} is slower than one at K {CONVERGENCE_KS[1]} by H x (1/{CONVERGENCE_KS[0]} - "
              f"1/{CONVERGENCE_KS[1]}). Where nearly every query is slower at the smaller K, the median difference is "
              "that bias, not noise, and the column before the check gives H."]
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
        lines.append(f"| {s} | {r['tdf']:g} | {case_arg(r, '--duration')} | {r['verdict']} | "
                     f"{'yes' if r['stopped_early'] else 'no'} | {', '.join(dict.fromkeys(r['violations']))} | {_mark(ok)} | "
                     f"{r['wall_s']:.0f} |")
    lines += _command(done, "negative")
    case_passed: dict[tuple[str, str], bool] = {}
    lines += ["", "## The paper's loads (full-edge, default profile, testbed against simulator)", "",
              "| lambda | seed | K | virtual s | policy | simulator | testbed | diff (pts) | window corr | "
              "simulator vs itself (median / min) | window sd sim / testbed (pts) | mean window diff (pts) | verdict | "
              "other work max (cores) | checks | wall s (case) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for cid, r in done.items():
        if r["kind"] != "paper":
            continue
        lam, seed = paper_id(cid)
        reversed_ = ranking_reversals({p: v["sim"] for p, v in r["policies"].items()},
                                      {p: v["testbed"] for p, v in r["policies"].items()})
        ceil = ceilings(r)
        testbed = {p: v["testbed"] for p, v in r["policies"].items()}
        for p, v in r["policies"].items():
            failed, excused = paper_checks(p, v, reversed_, ceil, testbed)
            failed_note = (f"; {', '.join(excused)} reversed by a gap the simulator gives under another seed"
                           if excused else "")
            ok = not failed
            passed &= ok
            case_passed[(cid, p)] = ok
            lines.append(f"| {lam} | {seed} | {case_arg(r, '--tdf')} | {case_arg(r, '--duration')} | {p} | {v['sim']:.3f} | "
                         f"{v['testbed']:.3f} | {v['diff_pts']:+.2f} | {v['corr']:.3f} | {_ceiling_cell(ceil.get(p))} | "
                         f"{_spread_cells(v.get('spread'))} | {v['verdict']} | {_other_cores(r, p)} | "
                         f"{_mark(ok)}{'' if ok else ' (' + ', '.join(failed) + ')'}{failed_note} | "
                         f"{r['wall_s']:.0f} |")
    lines += ["", f"Checks: success within {SUCCESS_MAX_PTS} points per policy, the same ranking (no two policies "
              "the simulator orders strictly are ordered the other way round on the testbed; a simulator tie, two "
              "policies both at 1.000 say, may come out either way, which Spearman's rho would count against it), "
              f"window correlation at least {WINDOW_CORR_MIN}, the testbed judged faithful. The correlation is "
              "Pearson's over the per-window success series (1 s windows); beside it, each series' standard "
              "deviation and the mean absolute difference between them per window, in points: where the simulator's "
              "series varies less than the testbed's window-to-window noise, the correlation measures that noise. "
              "The simulator against itself: the same trace simulated with this page's code under run seeds "
              f"{', '.join(map(str, SELF_SEEDS))} (each packet's jitter and each random choice drawn again), each "
              "series correlated with the case's own seed's; no emulator, however faithful, can be expected to "
              "follow the simulator more closely than the simulator follows itself, so where that median is below "
              f"{WINDOW_CORR_MIN} it is the bar (the median: a faithful testbed falls below it about half the "
              "time), and the windows must then also differ by at most "
              f"{SUCCESS_MAX_PTS} points on average; where the correlation is undefined (a flat series, every window "
              "at 1.000 say), that mean difference alone decides. Two policies the testbed orders the other way "
              "round by a gap the simulator itself gives under one of those seeds do not count as a broken ranking "
              "(they are named). These figures come from the simulator of this page's commit, the testbed's own "
              "correlation from that of the case's. "
              "Other work max: the most cores busy with work that is not the run's in one of its monitor's 1 s "
              "intervals (another experiment or a test run beside it; the monitor's soft figure, 0.3). Each verdict "
              "is the one its run's monitor gave, with the invariants of the commit the case ran at "
              "([fidelity.md](../fidelity.md#the-fidelity-monitor) lists today's).",
              *seed_spread(done, case_passed), "", *_command(done, "paper"), *paired_section(done), *resimulated_section(done, SUCCESS_MAX_PTS), "",
              "## bench_live per K (virtual queries/s per antenna)", "",
              "| K | rates run (verdict) | highest judged faithful |", "|---|---|---|"]
    for cid, r in done.items():
        if r["kind"] == "bench":
            rates = ", ".join(f"{x['rate_per_antenna_qps']} ({x['verdict']})" for x in r["rows"])
            lines.append(f"| {cid.split('-k')[1]} | {rates} | {r['max_faithful_qps']} |")
    lines += _command(done, "bench")
    runs = [run for r in done.values() for run in r.get("runs", []) if run.get("verdict")]
    if runs:
        lines += ["", f"## The monitor's hard figures over these {len(runs)} live runs", "",
                  "How far the figures of the runs judged faithful sit below each threshold, how high those of the "
                  "runs judged not faithful went, and how many runs each figure put over its threshold (a run is not "
                  "faithful when any one figure is over).", "",
                  *monitor_margins(runs)]
    return "\n".join(lines) + "\n", passed
