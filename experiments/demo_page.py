"""The main job's demonstration on this machine: runs `run_testbed.py --topo full-edge` (the demonstration's
defaults: lambda 6, 45 s, examples/demo-full-edge.yaml, K 4, closest; docs/live-run.md#the-demonstration), or
reads a finished run of it (`--run DIR`), and prints the fidelity verdict with every judged figure, live closest
against the simulator's seven policies on the same trace and events, per application, real inference's frames
(those its real replicas ran, beside what their worker answered in all) and the wall time; with --results-page
it writes them to docs/results/demo.md and copies the run's plot beside.

    .venv/bin/python experiments/demo_page.py [--run DIR] [--others DIR ...] [--out DIR] [--results-page]

Needs root to run the demonstration (as every live run); take the shared CPU lock on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis.fidelity import full_links_table  # noqa: E402
from analysis.resultspage import (  # noqa: E402
    REPO_ROOT,
    RESULTS_DIR,
    add_results_page_argument,
    repo_relative,
    write_results_page,
)
from live.spec import (  # noqa: E402
    DEFAULT_POLICY,
    DEMO_EVENTS,
    DEMO_TDF,
    DEMO_TOPOLOGY,
    add_run_arguments,
    spec_from_args,
)
from live.verdict import format_fidelity, judge_run, record_columns  # noqa: E402

PLOT_NAME = "demo-success.png"
"""The run's success.png, copied beside the page."""


def run_demo(out: Path) -> float:
    """Runs the demonstration (the default main job on its topology) into `out`; returns its wall time (s)."""
    argv = [sys.executable, str(REPO_ROOT / "run_testbed.py"), "--topo", DEMO_TOPOLOGY, "--out", str(out)]
    t = time.monotonic()
    subprocess.run(argv, cwd=REPO_ROOT, check=True)
    return time.monotonic() - t


def demo_defaults() -> dict:
    """Returns the fields of the default main job's spec that make it the demonstration."""
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    spec = spec_from_args(parser.parse_args([]))
    return {"topo": Path(spec.topo).stem, "policy": spec.policy or DEFAULT_POLICY, "lambda_per_min": spec.lambda_per_min,
            "duration_s": spec.duration_s, "events": str(DEMO_EVENTS), "tdf": DEMO_TDF, "trace": None,
            "switch": spec.switch, "controller": spec.controller}


def check_demo(run: Path) -> dict:
    """Returns the run's spec.json after checking that the run is the demonstration's (ValueError if not)."""
    spec = json.loads((run / "spec.json").read_text())
    want = demo_defaults()
    got = {k: spec.get(k) for k in want}
    got["topo"] = Path(str(got["topo"])).stem
    if got["events"] and Path(got["events"]).name == DEMO_EVENTS.name:  # made from another checkout (a worktree)
        got["events"] = str(DEMO_EVENTS)
    if got != want:
        raise ValueError(f"{run}: not the demonstration's run: {got}; the demonstration's: {want}")
    return spec


def real_frames(run: Path, real: dict[str, int]) -> str:
    """Returns, per real worker, the frames its real replicas ran (summary.json's `real_onnx_inferred`), how many of
    its replicas are real (config.json) and the frames the worker answered in all (records.csv)."""
    workers = {w["resource"]: w for w in json.loads((run / "config.json").read_text()).get("workers", [])}
    records = record_columns(run / "records.csv")
    answered = np.isfinite(records["t_infer_end_ms"])
    names = np.char.add(np.char.add(records["variant"].astype(str), "@"), records["cluster"].astype(str))
    parts = []
    for name, n in real.items():
        w = workers.get(name, {})
        replicas = f"{w.get('real_replicas', w.get('replicas'))} of its {w.get('replicas')} replicas real"
        parts.append(f"{name} {n} ({replicas}; the worker answered {int((answered & (names == name)).sum())})")
    return ", ".join(parts)


def overrun_cause_text(cause: dict) -> str:
    """Returns the cause of real inference's overrun the monitor gives (live/monitor_figures.py), in a few words;
    '' where it gives none or the inference waited for its core."""
    if cause.get("core_slower"):
        return "the host slowed the real-inference core"
    if cause.get("stolen"):
        return f"the hypervisor stole up to {cause['host_steal_pct_max']:g} % of the CPU (the host)"
    if not cause or cause.get("waited", True):
        return ""
    if cause.get("throughout"):
        return "its core slower than profiled for the whole run (the host or the run's other cores)"
    return "work on the other cores slowed its core"


def runs_table(runs: list[Path]) -> list[str]:
    """Returns a table of the demonstration's runs (the page's own first): verdict, the hard invariants over their
    threshold with the cause the monitor gives, what real inference's overrun did to the outcomes, live and
    simulated success of the run's policy, wall time."""
    lines = ["| run | verdict | over the threshold | overrun's effect: made late / answered by real inference (points) "
             "| live | simulated | wall s |", "| --- | --- | --- | --- | ---: | ---: | ---: |"]
    for run in runs:
        summary = json.loads((run / "summary.json").read_text())
        fid = summary["extra"].get("fidelity", {})
        over = [f"{f['invariant']} {f['statistic']} {f['value']:g} > {f['threshold']:g}" for f in fid.get("figures", [])
                if f["hard"] and f["value"] > f["threshold"]]
        cause = fid.get("diagnostics", {}).get("real_overrun_cause") or {}
        if any(o.startswith("real-inference") for o in over) and (why := overrun_cause_text(cause)):
            over.append(f"cause: {why}")
        sim = summary["extra"].get("simulated", {}).get(summary["policy"], {}).get("success", float("nan"))
        lines.append(f"| `{repo_relative(run)}` | {fid.get('verdict', 'not judged')} | {'; '.join(over)} | "
                     f"{effect_cell(run, fid)} | {summary['overall']['success']:.3f} | {sim:.3f} | "
                     f"{summary['extra'].get('wall_s', float('nan')):.0f} |")
    return lines


def effect_cell(run: Path, fid: dict) -> str:
    """Returns what real inference's overrun did to a run's outcomes (live/batches.py `overrun_effect`) by this
    commit's verdict on the run's files, so that every row is judged alike; the run's own verdict's where those
    cannot be judged, '-' where neither has it."""
    judged = judge_run(run)
    effect = judged.get("diagnostics", {}).get("real_overrun_effect") if judged["verdict"] != "not judged" else None
    effect = effect or fid.get("diagnostics", {}).get("real_overrun_effect")
    if effect is None:
        return "-"
    return f"{effect['made_late']} / {effect['queries']} ({effect['success_pts']:+.2f})"


def page(run: Path, wall_s: float | None, others: tuple[Path, ...] = ()) -> str:
    """Returns the page's body (markdown) from the run's summary.json."""
    summary = json.loads((run / "summary.json").read_text())
    spec = json.loads((run / "spec.json").read_text())
    extra = summary["extra"]
    fid = extra.get("fidelity", {})
    sim = extra.get("simulated", {})
    live = summary["overall"]["success"]
    real = real_frames(run, extra.get("real_onnx_inferred") or {})
    lines = [
        "The default main job, `run_testbed.py --topo full-edge` as root: lambda "
        f"{summary['lambda_per_min']} for {summary['duration_s']:g} s of virtual time, seed {summary['seed']}, "
        f"policy {summary['policy']}, the network events of `{repo_relative(DEMO_EVENTS)}`, time dilation K "
        f"{fid.get('tdf', DEMO_TDF):g}, switches {spec['switch']}, controller {spec['controller']} "
        f"(docs/live-run.md#the-demonstration). Run dir `{repo_relative(run)}`.",
        "",
        f"- queries: {extra.get('recorded_queries')} recorded of {extra.get('expected_queries')} expected; "
        f"{summary['overall']['queries']} judged",
        f"- wall time of the whole run (bring-up, link check, traffic, drain, teardown, report): "
        f"{extra.get('wall_s', float('nan')):.0f} s"
        + (f"; the command as a whole {wall_s:.0f} s" if wall_s is not None else ""),
        f"- frames through real ONNX inference: {real or 'none'} (real inference's site: "
        f"{', '.join(extra.get('real_sites') or []) or 'none'})",
        f"- other work on the machine during the run: {fid.get('diagnostics', {}).get('outside_cores_mean', 'n/a')} "
        f"cores on average over every sample, {fid.get('diagnostics', {}).get('outside_cores_max', 'n/a')} at most "
        "in one interval after t0 (monitor.jsonl)",
    ]
    if others:
        lines += ["", "This run and the others made with the same command on this machine (each simulates with its "
                  "own timing of the real model, so the simulated figures differ a little):", "",
                  *runs_table([run, *others])]
    lines += [
        "",
        f"## Fidelity verdict: {fid.get('verdict', 'not judged')}",
        "",
        "| invariant | statistic | value | threshold | unit | hard | first window over (s) | windows over |",
        "| --- | --- | ---: | ---: | --- | --- | ---: | ---: |",
    ]
    for f in fid.get("figures", []):
        first = "" if f["first_window_s"] is None else f"{f['first_window_s']:g}"
        over = "" if f["windows_over"] is None else str(f["windows_over"])
        lines.append(f"| {f['invariant']} | {f['statistic']} | {f['value']:g} | {f['threshold']:g} | {f['unit']} | "
                     f"{'yes' if f['hard'] else 'no'} | {first} | {over} |")
    if text := format_fidelity(fid):
        lines += ["", "The verdict's text (as the run's table prints it):", "", "```", *text, "```"]
    apps = sorted(summary["per_app"])
    lines += ["", "## Success: live against the simulator on the same trace and events", "",
              "| run | all | " + " | ".join(apps) + " |", "| --- | ---: | " + " | ".join("---:" for _ in apps) + " |",
              f"| live {summary['policy']} | {live:.3f} | "
              + " | ".join(f"{summary['per_app'][a]['success']:.3f}" for a in apps) + " |"]
    for policy, r in sorted(sim.items(), key=lambda kv: -kv[1]["success"]) if "error" not in sim else ():
        lines.append(f"| simulated {policy} | {r['success']:.3f} | "
                     + " | ".join(f"{r['per_app'].get(a, float('nan')):.3f}" for a in apps) + " |")
    if sim and "error" not in sim:
        ranked = [r["success"] for r in sim.values()]
        lines += ["", f"Spread between the simulated policies: {max(ranked) - min(ranked):.3f}; live "
                      f"{summary['policy']} minus simulated {summary['policy']}: "
                      f"{live - sim.get(summary['policy'], {}).get('success', float('nan')):+.3f}."]
    if full := extra.get("links_full"):
        lines += ["", "Links full during the traffic (the run's link_load.csv):", "",
                  *full_links_table({summary["policy"]: full})]
    lines += ["", f"![success over time, live and simulated]({PLOT_NAME})"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, default=None, help="a finished demonstration run to read (default: run one)")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="run dir of the run made (runs/demo)")
    p.add_argument("--others", type=Path, nargs="*", default=[], metavar="DIR",
                   help="other finished runs of the demonstration, listed with the page's run in a table")
    add_results_page_argument(p, "demo")
    args = p.parse_args(argv)
    wall_s = None
    run = args.run
    if run is None:
        run = args.out
        wall_s = run_demo(run)
    try:
        for r in (run, *args.others):
            check_demo(r)
    except (OSError, ValueError) as exc:
        print(f"demo_page: {exc}", file=sys.stderr)
        return 2
    body = page(run, wall_s, tuple(args.others))
    print(body)
    if args.results_page:  # the page first: it names the commit, which the plot's copy would make dirty
        path = write_results_page(args.results_page, "The demonstration: full-edge under network events, live and "
                                  "simulated", body)
        shutil.copyfile(run / "success.png", RESULTS_DIR / PLOT_NAME)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
