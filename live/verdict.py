"""The fidelity verdict of a live run: figures read back from its files (records, trace, windows, the wires'
statistics, monitor.jsonl), each in virtual ms given the run's time dilation factor K and judged per 1 s
window of virtual time against a threshold; a run is faithful when no hard invariant is broken. Kept in
summary.json `extra.fidelity` and printed at the end of the run's table (docs/fidelity.md: the monitor).

Thresholds are what this 2-core machine holds on a light run with room to spare, and far below what an
overloaded run shows (send lag of seconds): they separate a run whose figures are the emulated system's from
one whose figures are this host's. Measured on quiet light runs (tiny, lambda 6, closest, 2026-12-02): at
K = 1 (30 s) send lag p99 2.1 ms, max 2.8 ms, wire lateness p99 (worst direction) 0.40 ms; at K = 4 (20 s)
send lag p99 0.55 ms, max 0.59 ms, wire lateness p99 0.045 ms, with the wires real-time (testbed/wire.py;
at nice -10 instead, 2.24 ms at K = 1 and 0.78 ms at K = 4). Earlier light tiny and full-edge runs at K = 1
on a shared machine: send lag p99 3-4 ms, max 20-36 ms. A query's send lag counts from when it could leave,
its schedule or the answer to its stream's opening (`send_lag`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from analysis.records import read_records
from live.batches import batch_overruns, overrun_arrays, overrun_effect, real_starts, worker_batches
from live.monitor import MONITOR_NAME, WINDOW_MS, judged_from_ms
from live.monitor_figures import (
    cause_lines,
    diagnostics,
    other_work,
    overrun_cause,
    real_wait_series,
    sample_start_ms,
)
from live.rundir import read_json, read_lines
from live.sendlag import StreamSchedule, read_opens
from testbed.portcounters import SWITCH_DROPS_EVENT
from workload.trace import read_trace


@dataclass(frozen=True)
class Thresholds:
    """The limits of a faithful run (virtual ms, or shares)."""

    send_lag_p99_ms: float = 5.0
    send_lag_max_ms: float = 50.0
    wire_late_p99_ms: float = 1.0
    overshoot_p99_ms: float = 2.0
    """Profile-driven batches longer than their profile (sleep precision, a starved worker)."""
    switch_drops: float = 0.0
    """Frames ovs-vswitchd's port sockets lost during the traffic (testbed/portcounters.py `ovs_socket_drops`): the
    emulated links lose only what their loss says, in the wires; a switch starved of its core loses more."""
    relay_p99_ms: float = 2.0
    """A scheduler's relay to a worker at its own site: from having the frame to the worker having it, with no
    link between them (the simulator charges nothing there). Software, and a starved scheduler or worker."""
    real_overrun_mean_ms: float = 1.0
    real_overrun_mean_share: float = 0.10
    """Real inference's mean overrun over its profile: at most the larger of these two."""
    real_overrun_p95_share: float = 0.25
    window_late_max_ms: float = 50.0
    real_wait_share: float = 0.05
    """Run-queue delay of the real workers, as a share of their time on or waiting for a CPU."""
    real_wait_min_busy_ms: float = 100.0
    """Below this much time on or waiting for a CPU over the whole run (virtual ms, about four real batches),
    the real workers did no inference to delay: their waiting share is a diagnostic, not judged (an idle real
    worker's bookkeeping is a few ms over a whole run, much of it spent waiting, which says nothing of its
    inference)."""
    host_cpu_share: float = 0.85
    run_pressure_pct: float = 20.0
    host_steal_pct: float = 10.0
    host_stall_s: float = 3.0
    wall_step_ms: float = 100.0
    outside_cores: float = 0.3
    """Diagnostics (not hard): the host's busy share of its cores, the run's CPU pressure, the largest share of a
    sampling interval the hypervisor stole, the longest sampling interval (real s; the sampler wakes every
    second, so a longer one says the whole host stalled), the largest step of the machine's wall clock in one
    interval (real ms; a virtual machine paused and its clock set forward: the run's clock does not follow it,
    topologies/wallclock.py), the cores busy with work that is not the run's in one interval (another experiment,
    a test run beside it): they name a cause outside the run."""


THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class Figure:
    """One judged figure of the run."""

    invariant: str
    statistic: str
    value: float
    threshold: float
    unit: str
    hard: bool = True
    first_window_s: float | None = None
    """Start (virtual s since t0) of the first window over the threshold (None: not known per window)."""
    windows_over: int | None = None

    @property
    def broken(self) -> bool:
        return self.value > self.threshold


def per_window(t_ms: np.ndarray, values: np.ndarray, stat: str, threshold: float) -> tuple[float | None, int]:
    """Returns the start (s) of the first 1 s window whose `stat` ('p99', 'p95', 'max', 'mean') of `values`
    is over `threshold`, and how many windows are."""
    if not len(values):
        return None, 0
    w = np.floor(t_ms / WINDOW_MS).astype(np.int64)
    first, over = None, 0
    for win in np.unique(w):
        x = values[w == win]
        v = _stat(x, stat)
        if v > threshold:
            over += 1
            first = win * WINDOW_MS / 1000.0 if first is None else first
    return first, over


def _stat(x: np.ndarray, stat: str) -> float:
    if stat == "max":
        return float(x.max())
    if stat == "mean":
        return float(x.mean())
    return float(np.percentile(x, float(stat[1:])))


def _figure(invariant: str, stat: str, t_ms: np.ndarray, values: np.ndarray, threshold: float,
            unit: str = "virtual ms", hard: bool = True) -> Figure | None:
    if not len(values):
        return None
    first, over = per_window(t_ms, values, stat, threshold)
    return Figure(invariant, stat, round(_stat(values, stat), 3), threshold, unit, hard, first, over)


def record_columns(path: Path) -> dict[str, np.ndarray]:
    """Returns a records file's columns as arrays (strings as object arrays, '' where missing)."""
    table = read_records(path)
    out = {n: table.column(n).to_numpy(zero_copy_only=False) for n in table.column_names}
    for n in ("outcome", "reason", "variant", "cluster"):
        out[n] = np.array([x or "" for x in table.column(n).to_pylist()], dtype=object)
    return out


def send_lag(records: dict[str, np.ndarray], trace_path: Path,
             opens: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Returns (due ms, lag ms) of every query sent: its send time against when it could leave
    (live/sendlag.py: its schedule or its stream's opening answered; `opens` as `read_opens`)."""
    schedule = StreamSchedule(read_trace(trace_path))
    due, _ = schedule.due_ms(records["stream_id"], records["query"], opens)
    sent = schedule.sent_mask(records["stream_id"], records["query"], records["t_send_ms"], records["outcome"],
                              records["reason"])
    return due[sent], records["t_send_ms"][sent] - due[sent]


def relay_lag(records: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Returns, for each query relayed to a worker at its antenna's own site, when its scheduler had it and how
    long the worker took to have it after that (virtual ms): no link lies between them, so this is the relay's
    own time (the scheduler's and the worker's software, and their waits for a CPU)."""
    t_sched, t_worker = records["t_sched_ms"].astype(float), records["t_worker_ms"].astype(float)
    own = (records["cluster"] == records["antenna"].astype(object)) & np.isfinite(t_sched) & np.isfinite(t_worker)
    return t_sched[own], t_worker[own] - t_sched[own]


def dilation_factor(config: dict) -> float:
    """Returns a run's time dilation factor K from its config.json (1 for a run without dilation)."""
    return float(config.get("time_dilation", {}).get("factor") or config.get("tdf") or 1.0)


def _after(from_ms: float, t_ms: np.ndarray, *values: np.ndarray) -> tuple[np.ndarray, ...]:
    """Returns `t_ms` and `values` at the times from `from_ms` on (virtual ms since t0)."""
    keep = t_ms >= from_ms
    return (t_ms[keep], *(v[keep] for v in values))


def judge(run_dir: Path, stopped_early: dict | None = None, limits: Thresholds = THRESHOLDS) -> dict:
    """Returns the run's fidelity: {verdict, tdf, stopped_early, violations, figures, diagnostics}. A run whose
    spec.json has `judged_from_s` (a `--tdf auto` pilot's warm-up) is judged on what happened from then on."""
    config = json.loads((run_dir / "config.json").read_text())
    k = dilation_factor(config)
    from_ms = judged_from_ms(read_json(run_dir / "spec.json", {}))
    rec = record_columns(run_dir / "records.csv")
    tr = read_trace(run_dir / "trace.csv")
    frame_bytes = {int(s): float(b) for s, b in zip(tr.stream_id, tr.frame_bytes, strict=True)}
    figures: list[Figure | None] = []
    due, lag = _after(from_ms, *send_lag(rec, run_dir / "trace.csv", read_opens(run_dir)))
    figures += [_figure("source send lag", "p99", due, lag, limits.send_lag_p99_ms),
                _figure("source send lag", "max", due, lag, limits.send_lag_max_ms)]
    # the wires write their lateness in virtual us already (real / K)
    wires = [d for p in sorted(run_dir.glob("wire-*.stats.json")) for d in read_json(p, [])]
    if wires:
        t0_s, end_ms = t0_real_s(run_dir, config), traffic_end_ms(rec)
        end_real_s = None if t0_s is None or end_ms is None else t0_s + k * end_ms / 1000.0
        from_real_s = None if t0_s is None else t0_s + k * from_ms / 1000.0
        first, over = wire_late_windows(wires, t0_s, k, limits.wire_late_p99_ms, end_real_s,
                                        math.ceil(from_ms / WINDOW_MS))
        figures.append(Figure("wire lateness vs due", "p99 (worst direction)",
                              round(max(wire_late_p99_us(d, from_real_s, end_real_s) for d in wires) / 1000.0, 3),
                              limits.wire_late_p99_ms, "virtual ms", True, first, over))
    for e in read_lines(run_dir / "events.jsonl"):
        if SWITCH_DROPS_EVENT in e and (drops := json.loads(e)).get("event") == SWITCH_DROPS_EVENT:
            figures.append(Figure("switch socket drops", "frames lost", float(drops["frames"]), limits.switch_drops,
                                  "frames"))
    t, lag = _after(from_ms, *relay_lag(rec))
    figures.append(_figure("scheduler relay at its own site", "p99", t, lag, limits.relay_p99_ms))
    mixed = real_starts(run_dir, config)
    t, over, _ = _after(from_ms, *batch_overruns(rec, config, frame_bytes, False, mixed, run_dir))
    figures.append(_figure("worker overshoot vs profile", "p99", t, over, limits.overshoot_p99_ms))
    every_real = worker_batches(rec, config, frame_bytes, True, mixed, run_dir)
    real = [b for b in every_real if b.start_ms >= from_ms]
    t, over, plan = overrun_arrays(real)
    if len(over):
        mean_limit = max(limits.real_overrun_mean_ms, limits.real_overrun_mean_share * float(plan.mean()))
        figures.append(_figure("real-inference overrun", "mean", t, over, round(mean_limit, 3)))
        figures.append(_figure("real-inference overrun", "p95", t, over / plan, limits.real_overrun_p95_share,
                               unit="share of profile"))
    figures.append(window_lateness(run_dir / "windows.csv", limits.window_late_max_ms, from_ms))
    samples = [json.loads(line) for line in read_lines(run_dir / MONITOR_NAME)]
    if from_ms > 0.0:  # a sample covers the real second before it: those reaching into the warm-up are left out
        samples = [x for x in samples if sample_start_ms(x, k) >= from_ms]
    real_names = {f"worker {w['resource']}" for w in config.get("workers", []) if w.get("real")}
    diag = diagnostics(samples, real_names)
    if len(over) and (cause := overrun_cause(samples, real_names, t, over / plan, k, limits, over,
                                             mean_limit)) is not None:
        cause["models"] = sorted({w["model"] for w in config.get("workers", []) if w.get("real")})
        diag["real_overrun_cause"] = cause
    if real:
        deadlines = {int(i): float(d) for i, d in zip(tr.stream_id, tr.max_delay_ms, strict=True)}
        effect = overrun_effect(rec, every_real, deadlines, int((rec["t_send_ms"] >= from_ms).sum()), from_ms)
        diag["real_overrun_effect"] = {**asdict(effect), "success_pts": round(effect.success_pts, 3)}
    if diag.get("real_workers_wait_share") is not None:
        t, share = real_wait_series(samples, real_names)
        first, over = per_window(t, share, "max", limits.real_wait_share)
        busy = diag["wait_ms"]["real workers"] + diag["run_ms"]["real workers"]
        figures.append(Figure("run-queue delay of real inference", "wait share", diag["real_workers_wait_share"],
                              limits.real_wait_share, "share", busy >= limits.real_wait_min_busy_ms, first, over))
    if diag.get("host_cpu_share_mean") is not None:
        figures.append(Figure("host CPU", "mean busy share", diag["host_cpu_share_mean"], limits.host_cpu_share,
                              "share of cores", hard=False))
    if diag.get("run_some_pct_mean") is not None:
        figures.append(Figure("CPU pressure of the run", "mean some", diag["run_some_pct_mean"],
                              limits.run_pressure_pct, "% of time", hard=False))
    if diag.get("host_steal_pct_max") is not None:
        figures.append(Figure("CPU stolen by the hypervisor", "max per interval", diag["host_steal_pct_max"],
                              limits.host_steal_pct, "% of time", hard=False))
    if diag.get("sample_interval_max_s") is not None:
        figures.append(Figure("host stall", "longest sampling interval", diag["sample_interval_max_s"],
                              limits.host_stall_s, "real s", hard=False))
    t_other, other = other_work(samples, k)
    if len(other):
        diag["outside_cores_max"] = round(float(other.max()), 3)
        figures.append(_figure("other work on the machine", "max", t_other, other, limits.outside_cores, "cores",
                               hard=False))
    if diag.get("wall_step_ms_max") is not None:
        figures.append(Figure("wall clock stepped", "largest step in one interval", diag["wall_step_ms_max"],
                              limits.wall_step_ms, "real ms", hard=False))
    fid = verdict([f for f in figures if f is not None], k, stopped_early, diag)
    if from_ms > 0.0:
        fid["judged_from_s"] = from_ms / 1000.0
    return fid


def judge_run(run_dir: Path, stopped_early: dict | None = None) -> dict:
    """Returns `judge`'s fidelity record, or, should a file be unreadable, one saying it was not judged and why
    (the run's summary is still written)."""
    try:
        return judge(run_dir, stopped_early)
    except Exception as exc:  # a run cut short may lack a file: its summary matters more than its verdict
        return {"verdict": "not judged", "error": f"{type(exc).__name__}: {exc}", "stopped_early": stopped_early}


def verdict(figures: list[Figure], k: float, stopped_early: dict | None, diag: dict | None = None) -> dict:
    """Returns the fidelity record of judged figures: not faithful when a hard one is broken or the run was
    stopped early."""
    broken = [f for f in figures if f.hard and f.broken]
    return {
        "verdict": "not faithful" if broken or stopped_early else "faithful",
        "tdf": k,
        "stopped_early": stopped_early,
        "violations": [asdict(f) for f in broken],
        "warnings": [asdict(f) for f in figures if not f.hard and f.broken],
        "figures": [asdict(f) for f in figures],
        "diagnostics": diag or {},
    }


def t0_real_s(run_dir: Path, config: dict) -> float | None:
    """Returns the run's t0 in real epoch seconds on the run's wall clock, or None without it."""
    t0 = config.get("time_dilation", {}).get("t0_real_epoch_s")
    if t0 is None and (run_dir / "t0").exists():  # undilated: t0 is real
        t0 = float((run_dir / "t0").read_text())
    return None if t0 is None else float(t0)


def traffic_end_ms(records: dict[str, np.ndarray]) -> float | None:
    """Returns the last moment (virtual ms since t0) a query of the run was on its way: its latest time recorded
    (sent, relayed, inferred, answered); the network's frames after it (the run closing down) are not the run's.
    None without any time recorded."""
    times = np.concatenate([records[c].astype(float) for c in ("t_send_ms", "t_sched_ms", "t_worker_ms",
                                                               "t_infer_end_ms", "t_response_ms") if c in records]
                           or [np.array([])])
    finite = times[np.isfinite(times)]
    return float(finite.max()) if len(finite) else None


def wire_late_p99_us(direction: dict, t0_s: float | None, end_real_s: float | None) -> float:
    """Returns a wire direction's p99 lateness (virtual us) over the frames due from t0 to the end of the traffic
    (real epoch s): at most 1 % of them left later. From its per-second counts (`sent_per_s`, shared out by
    overlap at the two ends) and the frames it listed as late (`late_events`, later than `late_steps_us[0]`); a
    p99 under that step is the wire's whole-life p99, capped at the step. The whole-life p99 (`late_p99_us`,
    the network's probes and the run closing down included) where the span or the complete list is missing."""
    whole, events = float(direction["late_p99_us"]), direction.get("late_events")
    if t0_s is None or end_real_s is None or events is None or "late_steps_us" not in direction:
        return whole
    if direction.get("late_events_dropped", 0) and not (events and events[-1][0] / 1000.0 >= end_real_s):
        return whole  # the list, in the order the frames left, stops before the end of the traffic
    due = 0.0
    for row in direction["sent_per_s"]:
        due += row[1] * max(0.0, min(row[0] + 1.0, end_real_s) - max(row[0], t0_s))
    late = sorted((e[1] for e in events if t0_s <= e[0] / 1000.0 < end_real_s), reverse=True)
    allowed = int(np.floor(0.01 * due))
    return float(late[allowed]) if len(late) > allowed else min(whole, float(direction["late_steps_us"][0]))


def wire_late_windows(directions: list[dict], t0_s: float | None, k: float, threshold_ms: float,
                      end_real_s: float | None = None, from_window: int = 0) -> tuple[float | None, int | None]:
    """Returns the first 1 s window (virtual s since t0) in which some wire direction's p99 lateness was over
    `threshold_ms`, and in how many windows one was: more than 1 % of the frames due in that window left later
    than the threshold (the direction's `sent_per_s`: per real epoch second, the frames due and how many were later
    than each of its `late_steps_us`, shared out over the windows the second overlaps; the largest step not over
    the threshold is taken, the threshold itself by default). Windows before t0 (the network's probes) and those
    that begin at or after `end_real_s` (the run closing down after its traffic) are left out; the window the
    traffic ends in is judged whole; those before `from_window` are left out too. (None, None) for wires that did
    not count them, or a threshold under their smallest step."""
    if t0_s is None or any("late_steps_us" not in d for d in directions):
        return None, None
    windows: set[int] = set()
    for d in directions:
        steps = [i for i, us in enumerate(d["late_steps_us"]) if us <= threshold_ms * 1000.0]
        if not steps:
            return None, None
        due: dict[int, float] = {}
        late: dict[int, float] = {}
        for row in d["sent_per_s"]:
            second, n, over = row[0], row[1], row[2 + steps[-1]]
            for w, share in real_second_windows(second, t0_s, k, end_real_s):
                due[w] = due.get(w, 0.0) + n * share
                late[w] = late.get(w, 0.0) + over * share
        windows.update(w for w, n in late.items() if n > 0.01 * due[w] and w >= from_window)
    if not windows:
        return None, 0
    return min(windows) * WINDOW_MS / 1000.0, len(windows)


def real_second_windows(second: float, t0_s: float, k: float, end_s: float | None) -> list[tuple[int, float]]:
    """Returns the monitor's windows (WINDOW_MS of virtual time, numbered from t0) that one real epoch second on the
    run's wall clock overlaps at time dilation factor K, each with the share of the second in it: none before t0,
    none that begins at or after `end_s` (the end of the traffic, real epoch s; None: no end), the window the
    traffic ends in whole."""
    window_real_s = k * WINDOW_MS / 1000.0
    a, b = (second - t0_s) / window_real_s, (second + 1 - t0_s) / window_real_s
    stop = int(np.ceil(b))
    if end_s is not None:
        stop = min(stop, int(np.ceil((end_s - t0_s) / window_real_s - 1e-6)))
    return [(w, (min(b, w + 1) - max(a, w)) / (b - a)) for w in range(max(0, int(np.floor(a))), stop)]


def window_lateness(path: Path, threshold: float, from_ms: float = 0.0) -> Figure | None:
    """Returns how late the schedulers closed their decision windows (t_closed_ms - t_end_ms), those that began
    from `from_ms` on (`t_start_ms`; a file without it: windows of WINDOW_MS)."""
    with contextlib.suppress(OSError), path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("t_closed_ms")]
        t_end = np.array([float(r["t_end_ms"]) for r in rows])
        t_start = np.array([float(r.get("t_start_ms") or float(r["t_end_ms"]) - WINDOW_MS) for r in rows])
        late = np.array([float(r["t_closed_ms"]) for r in rows]) - t_end
        return _figure("decision-window lateness", "max", *_after(from_ms, t_start, late), threshold)
    return None


def format_fidelity(fid: dict) -> list[str]:
    """Returns the lines of the verdict at the end of the run's table."""
    if not fid:
        return []
    if fid["verdict"] == "not judged":
        return [f"fidelity: not judged ({fid['error']})"]
    k = f"K = {fid['tdf']:g}" + (f", judged from {fid['judged_from_s']:g} s" if fid.get("judged_from_s") else "")
    if fid["verdict"] == "faithful":
        head = f"fidelity ({k}): faithful, every invariant within its threshold (summary.json: extra.fidelity)"
    else:
        head = f"fidelity ({k}): NOT FAITHFUL"
    lines = [head]
    stop = fid.get("stopped_early")
    if stop and "why" in stop:  # a server's cores no longer held (live/keeper.py)
        lines.append(f"  stopped-early at {stop['windows_from_s']:g} s: server {stop['server']}: {stop['why']}")
    elif stop:
        lines.append(f"  stopped-early: {stop['invariant']} p99 over {stop['limit_ms']:g} ms in "
                     f"{len(stop['lag_p99_ms'])} consecutive windows from {stop['windows_from_s']:g} s "
                     f"({', '.join(f'{x:g}' for x in stop['lag_p99_ms'])} ms)")
    for v in fid["violations"] + fid.get("warnings", []):
        when = "" if v["first_window_s"] is None else (f", from the window at {v['first_window_s']:g} s "
                                                        f"({v['windows_over']} windows over)")
        lines.append(f"  {'' if v['hard'] else 'warning: '}{v['invariant']} {v['statistic']} {v['value']:g} "
                     f"{v['unit']} > {v['threshold']:g}{when}")
    cause = fid.get("diagnostics", {}).get("real_overrun_cause")
    overran = any(v["invariant"] == "real-inference overrun" for v in fid["violations"])
    if cause and overran:
        lines += cause_lines(cause)
    effect = fid.get("diagnostics", {}).get("real_overrun_effect")
    if effect and overran:
        lines.append(f"  its effect: of {effect['queries']} queries real inference answered, {effect['made_late']} late "
                     f"that its profile's times would have answered in time, {effect['made_ontime']} the other way: "
                     f"{effect['success_pts']:+.2f} points of success")
    return lines
