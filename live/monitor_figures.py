"""What the fidelity monitor's samples (monitor.jsonl, live/monitor.py) say about the machine during a run: its
busy cores, CPU pressure and steal, the run-queue delay of each group of the run's processes and of real inference,
the work on it that is not the run's, and what it did while real inference overran its profile (and the verdict's
text on that cause). The verdict (live/verdict.py) judges these figures; times are virtual ms, as the samples'
`t_ms`."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from live.monitor import REAL_INFERENCE, WINDOW_MS

CONTROL_COMMAND = ".venv/bin/python benchmarks/bench_core_steadiness.py"
"""The control for real inference's overrun: its model alone on its core (docs/results/core-steadiness.md)."""

if TYPE_CHECKING:
    from live.verdict import Thresholds


def diagnostics(samples: list[dict], real_names: set[str]) -> dict:
    """Returns the host's and the run's CPU figures from monitor.jsonl: busy share of the cores, CPU pressure,
    and run-queue delay (wait) per group as a share of time on or waiting for a CPU."""
    if not samples:
        return {}
    cores = os.cpu_count() or 1
    busy = np.array([s["host_cores"] for s in samples]) / cores
    ours = np.array([sum(p["cores"] for n, p in s["procs"].items() if not server_of(n)) for s in samples])
    outside = np.array([s["host_cores"] for s in samples]) - ours
    out: dict = {"samples": len(samples), "host_cpu_share_mean": round(float(busy.mean()), 3),
                 "host_cpu_share_max": round(float(busy.max()), 3),
                 "outside_cores_mean": round(float(np.clip(outside, 0, None).mean()), 3)}
    # outside_cores_mean: cores busy with work that is not the run's (another experiment on the machine), what a
    # verdict that does not hold on a quiet machine is due to; over every sample (other_work filters them)
    if intervals := [s["real_s"] for s in samples if s.get("real_s") is not None]:
        out["sample_interval_max_s"] = round(float(max(intervals)), 3)
    if steps := [abs(s["wall_step_ms"]) for s in samples if s.get("wall_step_ms") is not None]:
        out["wall_step_ms_max"] = round(float(max(steps)), 1)
    for key in ("host_some_pct", "run_some_pct", "host_steal_pct"):
        x = np.array([s[key] for s in samples if s.get(key) is not None])
        if x.size:
            out[f"{key}_mean"], out[f"{key}_max"] = round(float(x.mean()), 2), round(float(x.max()), 2)
    run: dict[str, float] = {}
    wait: dict[str, float] = {}
    real_run: dict[str, float] = {}
    real_wait: dict[str, float] = {}
    for s in samples:
        real = real_inference(s["procs"], real_names)
        for name, p in s["procs"].items():
            group = "real workers" if name in real else p["group"]
            run[group] = run.get(group, 0.0) + p["run_ms"]
            wait[group] = wait.get(group, 0.0) + p["wait_ms"]
            if name in real:
                where = server_of(name)
                real_run[where] = real_run.get(where, 0.0) + p["run_ms"]
                real_wait[where] = real_wait.get(where, 0.0) + p["wait_ms"]
    out["wait_share"] = {g: round(wait[g] / max(run[g] + wait[g], 1e-9), 4) for g in sorted(run)}
    out["wait_ms"] = {g: round(wait[g], 1) for g in sorted(run)}
    out["run_ms"] = {g: round(run[g], 1) for g in sorted(run)}
    by_server = {w or "local": round(real_wait[w] / max(real_run[w] + real_wait[w], 1e-9), 4) for w in sorted(real_run)}
    if len(by_server) > 1:
        out["real_workers_wait_share_by_server"] = by_server
    out["real_workers_wait_share"] = max(by_server.values()) if by_server else None  # the worst server's
    return out


def sample_start_ms(sample: dict, k: float) -> float:
    """Returns when a monitor sample's interval began (virtual ms since t0): it covers the real seconds before it
    (`real_s`, 1 when missing), 1000 x real_s / K virtual ms."""
    return float(sample["t_ms"]) - 1000.0 * float(sample.get("real_s") or 1.0) / k


def overrun_cause(samples: list[dict], real_names: set[str], t_ms: np.ndarray, share: np.ndarray, k: float,
                  limits: Thresholds, over_ms: np.ndarray | None = None,
                  mean_limit_ms: float | None = None) -> dict | None:
    """Returns what this machine did while real inference overran its profile (the windows whose batches' p95
    overrun share is over the limit, or, given `over_ms` and `mean_limit_ms`, whose mean overrun is over that: a
    run over the mean limit alone has such a window, as the run's mean is the windows' weighted mean): its
    inference threads' run-queue wait share, the machine's busy cores other than theirs and the CPU stolen from it
    in the samples at least half over those windows, against the samples over the others (a sample covers the real
    second before it, 1000 / K virtual ms; those from before t0 are left out). `core_slower`: the inference did
    not wait for its core, the machine was no busier than elsewhere in the run (within 0.1 of a core) and under
    1 % of it was stolen: its core itself ran slower (the host's other tenants, its clock), which no isolation
    within this machine prevents. `stolen`: the same, but the hypervisor took at least 1 % of the machine's CPU in
    a sample over those windows: the host again. `throughout`: every sample was over such windows, so there is
    nothing to compare with (`other_cores_elsewhere` None, neither flag set): its core ran slower than when its
    profile was timed for the whole run, which one run cannot pin on the host or on the run's own work on the
    other cores. `waited`: its wait share over its limit (it shared its core). None when no window is over, no
    sample falls over them, or real inference runs on another server (its samples there are not compared)."""
    if not samples or any(server_of(n) for s in samples for n in real_inference(s["procs"], real_names)):
        return None
    win = np.floor(t_ms / WINDOW_MS).astype(np.int64)
    by_mean = over_ms is not None and mean_limit_ms is not None
    bad = {int(w) for w in np.unique(win) if np.percentile(share[win == w], 95) > limits.real_overrun_p95_share
           or (by_mean and float(over_ms[win == w].mean()) > mean_limit_ms)}  # type: ignore[index, operator]
    if not bad:
        return None
    during, rest = [], []
    for s in samples:
        end = float(s["t_ms"])
        start = sample_start_ms(s, k)
        if start < 0.0:
            continue
        over = sum(max(0.0, min(end, (w + 1) * WINDOW_MS) - max(start, w * WINDOW_MS))
                   for w in range(int(start // WINDOW_MS), int(end // WINDOW_MS) + 1) if w in bad)
        (during if over >= 0.5 * (end - start) else rest).append(s)
    if not during:
        return None

    def others(s: dict) -> float:  # the machine's busy cores but real inference's own
        return s["host_cores"] - sum(s["procs"][n]["cores"] for n in real_inference(s["procs"], real_names))

    run = sum(s["procs"][n]["run_ms"] for s in during for n in real_inference(s["procs"], real_names))
    wait = sum(s["procs"][n]["wait_ms"] for s in during for n in real_inference(s["procs"], real_names))
    wait_share = wait / max(run + wait, 1e-9)
    cores = float(np.mean([others(s) for s in during]))
    elsewhere = float(np.mean([others(s) for s in rest])) if rest else None
    stolen = max(float(s.get("host_steal_pct") or 0.0) for s in during)
    not_the_run = elsewhere is not None and wait_share <= limits.real_wait_share and cores <= elsewhere + 0.1
    return {"windows_over": len(bad), "samples_over": len(during), "real_wait_share": round(wait_share, 4),
            "other_cores": round(cores, 3),
            "other_cores_elsewhere": None if elsewhere is None else round(elsewhere, 3),
            "host_steal_pct_max": round(stolen, 2), "throughout": not rest,
            "waited": bool(wait_share > limits.real_wait_share),
            "core_slower": bool(not_the_run and stolen < 1.0), "stolen": bool(not_the_run and stolen >= 1.0)}


def cause_lines(cause: dict) -> list[str]:
    """Returns the verdict's lines on why real inference overran (monitor_figures.overrun_cause), with the control
    that times the model alone; none where its inference waited for its core (it shared it: the wait's own
    figure says so)."""
    if cause["core_slower"] or cause.get("stolen"):
        host = ("under 1 % of it was stolen: the core itself ran slower (the host)" if cause["core_slower"] else
                f"the hypervisor stole up to {cause['host_steal_pct_max']:g} % of its CPU (the host)")
        lines = [f"  cause: in the {cause['windows_over']} windows where real inference overran, it did not wait "
                 f"for its core (wait share {cause['real_wait_share']:g}), the machine was no busier "
                 f"({cause['other_cores']:g} other cores busy against {cause['other_cores_elsewhere']:g}) and "
                 f"{host}, not the run's doing"]
    elif cause.get("waited", True):
        return []
    elif cause.get("throughout"):
        lines = [f"  cause: every monitor sample of the run fell over the {cause['windows_over']} windows where real "
                 f"inference overran; it did not wait for its core (wait share {cause['real_wait_share']:g}; "
                 f"{cause['other_cores']:g} other cores busy, up to {cause['host_steal_pct_max']:g} % stolen): its "
                 "core ran slower than when its profile was timed, for the whole run; one run cannot tell the host "
                 "from the run's own work on the other cores"]
    else:
        lines = [f"  cause: in the {cause['windows_over']} windows where real inference overran, it did not wait for "
                 f"its core (wait share {cause['real_wait_share']:g}) but the machine was busier "
                 f"({cause['other_cores']:g} other cores busy against {cause['other_cores_elsewhere']:g}): work on the "
                 "other cores slowed its core through what cores share (caches, memory, a hyperthread sibling on "
                 "the host), which a cpuset does not separate"]
    models = cause.get("models") or ["MODEL"]
    commands = " / ".join(f"`{CONTROL_COMMAND} --model {m}`" for m in models)
    return lines + [f"  control: {commands} times the model alone on that core, as a run's real replica works "
                    "(docs/fidelity.md)"]


def other_work(samples: list[dict], k: float) -> tuple[np.ndarray, np.ndarray]:
    """Returns (t ms, cores) of this machine's work that is not the run's (its busy cores less its processes',
    at least 0) per monitor sample after t0 whose processes were all read in the sample before (a process new in
    a sample counts nothing yet, and one missing would count as other work)."""
    t, cores = [], []
    prev: set[str] = set()
    for s in samples:
        local = {n: p for n, p in s["procs"].items() if not server_of(n)}
        if local and set(local) <= prev and sample_start_ms(s, k) >= 0.0:
            t.append(s["t_ms"])
            cores.append(max(0.0, s["host_cores"] - sum(max(0.0, p["cores"]) for p in local.values())))
        prev = set(local)
    return np.asarray(t, dtype=float), np.asarray(cores, dtype=float)


def server_of(name: str) -> str:
    """Returns the server of a monitor entry ('name (pid@server)'; '' for this machine's 'name (pid)')."""
    tail = name.rsplit(" (", 1)[-1]
    return tail.rstrip(")").split("@", 1)[1] if "@" in tail else ""


def real_inference(procs: dict[str, dict], real_names: set[str]) -> set[str]:
    """Returns the entries of a sample that are real inference: the workers' inference threads (the monitor's
    group REAL_INFERENCE), or, in a sample without them (a monitor.jsonl written before the monitor measured them
    apart), the real workers' whole processes (`real_names`)."""
    threads = {name for name, p in procs.items() if p["group"] == REAL_INFERENCE}
    return threads or {name for name in procs if name.rsplit(" (", 1)[0] in real_names}


def real_wait_series(samples: list[dict], real_names: set[str]) -> tuple[np.ndarray, np.ndarray]:
    """Returns (t ms, waiting share) of real inference per sample in which it ran or waited a millisecond: on a
    run across servers, the worst share among the servers where it did (each server's core is its own)."""
    t, share = [], []
    for s in samples:
        real = real_inference(s["procs"], real_names)
        busy: dict[str, float] = {}
        waited: dict[str, float] = {}
        for name, p in s["procs"].items():
            if name in real:
                where = server_of(name)
                busy[where] = busy.get(where, 0.0) + p["run_ms"] + p["wait_ms"]
                waited[where] = waited.get(where, 0.0) + p["wait_ms"]
        shares = [waited[w] / b for w, b in busy.items() if b >= 1.0]
        if shares:
            t.append(s["t_ms"])
            share.append(max(shares))
    return np.asarray(t, dtype=float), np.asarray(share, dtype=float)
