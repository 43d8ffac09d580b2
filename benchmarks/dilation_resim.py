"""The kept paper-load cases of the time-dilation validation against the simulator of this commit.

A kept case (benchmarks/dilation_report.py) holds its testbed's figures and the simulator's of the commit it ran
at. The simulator is cheap and deterministic: each case's trace is built again (topology, duration, lambda and
seed from its argv; lambda and seed from its id, `paper-l<lambda>-s<seed>`, where the argv has none) and simulated
with this commit's code and the settings `compare` gives it (live/compare.py: nominal topology and default
profile, RunSpec's window, headroom, batching and queue), so that the page says how the simulator as it is now
agrees with the testbed runs as they were. A case whose argv lacks --topo or --duration, or has an option this
does not follow (a profile, real workers, events, calibration, a replayed trace), is named and left out. Where a
case kept its testbed's per-window series, the window correlation is computed again too.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import numpy as np

from analysis.fidelity import series_correlation
from analysis.pairing import MissedKeys
from live.spec import RunSpec
from scheduler.profiles import load_profiles
from scheduler.system import SystemModel, build_system
from simulator.run import simulate_policy
from topologies import load_topology
from workload.args import Workload
from workload.trace import Trace


def case_arg(result: dict, option: str) -> str:
    """Returns the value of `option` in the argv a case ran with ('' if absent)."""
    argv = result["argv"]
    return argv[argv.index(option) + 1] if option in argv else ""


PAPER_ID = re.compile(r"paper-l(\d+(?:\.\d+)?)-s(\d+)")
"""A kept paper case's id: `paper-l<lambda>-s<seed>`."""


def paper_id(case_id: str) -> tuple[str, str]:
    """Returns the lambda and seed of a kept paper case's id, as written in it. Raises ValueError for an id that
    is not `paper-l<lambda>-s<seed>`."""
    found = PAPER_ID.fullmatch(case_id)
    if found is None:
        raise ValueError(f"id {case_id!r} is not paper-l<lambda>-s<seed>")
    return found[1], found[2]


NOT_FOLLOWED = ("--profiles", "--profile-scale", "--real-workers", "--events", "--calibrate", "--trace")
"""compare's options whose runs this re-simulation would not reproduce."""


def resimulable(result: dict) -> bool:
    """Whether a kept paper case can be simulated again as `compare` ran it (see the module docstring)."""
    argv = result["argv"]
    return bool(case_arg(result, "--topo") and case_arg(result, "--duration")) and not any(
        a in argv for a in NOT_FOLLOWED)


def case_seed(result: dict) -> int:
    """Returns the workload seed of a kept paper case (its argv's --seed, else its id's `s<seed>`)."""
    return int(case_arg(result, "--seed") or paper_id(result["id"])[1])


def simulate_case(result: dict, policy: str, run_seed: int | None = None,
                  wire_ratio: float = 1.0) -> tuple[float, np.ndarray]:
    """Returns the success and per-window success series (RunSpec's windows) of this commit's simulator on a kept
    paper case's trace under `policy`, as `compare` runs it (the simulation seeded as `compare` seeds it, the
    workload's seed, or with `run_seed`: the same trace, its link jitter and random choices drawn again;
    `wire_ratio`: SimConfig's, 1.0 as `compare` runs it). Each simulation runs once per page (the page's sections
    and the ceilings ask for the same ones)."""
    return _simulate(*_case(result, policy, run_seed), wire_ratio)[:2]


def missed_case(result: dict, policy: str, run_seed: int | None = None, wire_ratio: float = 1.0) -> np.ndarray:
    """Returns the keys (analysis.pairing.query_keys) of the queries that `simulate_case`'s simulation missed."""
    return _simulate(*_case(result, policy, run_seed), wire_ratio)[2]


def _case(result: dict, policy: str, run_seed: int | None) -> tuple[str, str, int, float, str, int]:
    seed = case_seed(result)
    return (case_arg(result, "--topo"), case_arg(result, "--lambda") or paper_id(result["id"])[0], seed,
            float(case_arg(result, "--duration")), policy, seed if run_seed is None else run_seed)


@functools.lru_cache(maxsize=8)
def _inputs(topo_name: str, lam: str, seed: int, duration_s: float) -> tuple[SystemModel, Trace]:
    """Returns a case's system model and trace, built once for all its policies and seeds."""
    topo = load_topology(topo_name)
    workload = Workload(lambda_per_min=lam, duration_s=duration_s, seed=seed, trace=None,
                        default_duration_s=duration_s)
    return build_system(topo, load_profiles()), workload.build(tuple(a.name for a in topo.antennas))[0]


@functools.lru_cache(maxsize=512)
def _simulate(topo_name: str, lam: str, seed: int, duration_s: float, policy: str,
              run_seed: int, wire_ratio: float) -> tuple[float, np.ndarray, np.ndarray]:
    system, trace = _inputs(topo_name, lam, seed, duration_s)
    missed = MissedKeys()
    run = simulate_policy(system, trace, policy, RunSpec().sim_config(duration_s, wire_ratio=wire_ratio), run_seed,
                          "", None, write_records=False, record_sink=missed)
    series, keys = np.array(run.summary.series_success, dtype=float), missed.keys()
    series.flags.writeable = keys.flags.writeable = False  # shared by every caller
    return run.summary.overall.success, series, keys


def window_series(out: Path, policy: str) -> list[float | None] | None:
    """Returns the testbed's per-window success series of `policy` in a compare folder's report.json (None where
    it is not there), for the kept result."""
    try:
        rows = json.loads((out / "report.json").read_text())["policies"]
        return next(p for p in rows if p["policy"] == policy)["series_testbed"]
    except (OSError, ValueError, KeyError, StopIteration):
        return None


def series_array(values: list[float | None]) -> np.ndarray:
    """Returns a per-window success series as kept in JSON (None: a window without queries) as floats (nan)."""
    return np.array([np.nan if x is None else x for x in values], dtype=float)


def kept_correlation(series: np.ndarray, kept: list[float | None]) -> float:
    """Returns the window correlation of a simulated series with a kept testbed series, over the shorter's windows
    (`analysis.fidelity.series_correlation`; nan where none)."""
    tb = series_array(kept)
    n = min(len(tb), len(series))
    return series_correlation(series[:n], tb[:n]) if n else float("nan")


def resimulated_section(done: dict[str, dict], max_pts: float) -> list[str]:
    """Returns the page's section: every kept paper case's testbed success against the simulator of the case's
    commit and of this one (and the window correlation again where the case kept its testbed series)."""
    lines = ["", "### The same testbed runs against the simulator of this page's commit", "",
             "Each case's trace is simulated again with the code of the commit this page was written at (as "
             "`compare` runs it); the testbed's figures are the kept ones. A difference from the case's own "
             "simulator column is a change of the simulator since the case ran.", "",
             "| lambda | seed | policy | testbed | simulator at the run | simulator now | diff at the run (pts) | "
             f"diff now (pts) | within {max_pts:g} now | window corr now |", "|---|---|---|---|---|---|---|---|---|---|"]
    at_run, now_all, skipped = [], [], []
    for cid, r in done.items():
        if r["kind"] != "paper":
            continue
        if not resimulable(r):
            skipped.append(cid)
            continue
        lam, seed = paper_id(cid)
        for p, v in r["policies"].items():
            now, series = simulate_case(r, p)
            diff = 100 * (v["testbed"] - now)
            kept = v.get("series_testbed")
            corr = "-" if kept is None else f"{kept_correlation(series, kept):.3f}"
            at_run.append(abs(v["diff_pts"]))
            now_all.append(abs(diff))
            lines.append(f"| {lam} | {seed} | {p} | {v['testbed']:.4f} | {v['sim']:.4f} | "
                         f"{now:.4f} | {v['diff_pts']:+.2f} | {diff:+.2f} | {'yes' if abs(diff) <= max_pts else 'NO'} | "
                         f"{corr} |")
    if skipped:
        lines += ["", f"Not re-simulated (their argv lacks --topo or --duration, or has an option this does not "
                  f"follow): {', '.join(skipped)}."]
    if not at_run:
        return lines if skipped else []
    lines += ["", f"Mean absolute difference over these {len(at_run)} policy runs: {np.mean(at_run):.3f} points "
              f"against the simulator at the runs, {np.mean(now_all):.3f} against the simulator now."]
    return lines
