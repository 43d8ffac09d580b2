"""The report of a live run: the records read back into a summary (summary.json, time series overall and
per application, success.png, with the decision windows' policies and the simulator's seven policies on the same
trace, the fidelity verdict), the result `run_live` returns, and the table printed at the end (the verdict last).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from analysis.plots import plot_success_over_time
from analysis.records import OUTCOMES, read_records
from analysis.summary import RunSummary, Tally, outcome_index
from live.batches import real_batches
from live.beside import beside_record, format_beside, simulate_beside
from live.linkload import format_full, link_load
from live.merge import merge_windows, scheduler_stats, source_stats
from live.rundir import RunDir
from live.spec import read_spec
from live.verdict import format_fidelity, judge_run
from simulator.run import write_timeseries
from testbed.placement import LOCAL
from workload.trace import Trace


@dataclass(frozen=True)
class RunFacts:
    """What the report needs of a finished run besides its files (the orchestrator's `LiveRun.facts`)."""

    out: Path
    """The run dir, as given."""
    trace: Trace
    duration_s: float
    window_s: float
    """The report's time-series bin (the spec's --window)."""
    topology: str
    policy: str
    seed: int | None
    """The generated workload's seed (None: a trace was replayed)."""
    load_label: str
    profiles: str
    """The profile file the schedulers decided with."""
    real_sites: tuple[str, ...]
    real_resources: frozenset[str]
    mixed_resources: frozenset[str]
    """Of `real_resources`, the workers with profile-driven replicas too (their real frames are in their batch log)."""
    cpu_groups: dict[str, float]
    """CPU seconds per group during the traffic over every server (cpu.json's `groups_cpu_s`), without the sources'
    own."""
    agent: str | None
    decision_window_s: float
    network: dict
    events: list[dict]
    """The orchestrator's events so far."""


@dataclass
class LiveResult:
    """What `run_live` gives back: the summary, the run dir and the accounting check."""

    summary: RunSummary
    out: Path
    expected_queries: int
    recorded_queries: int
    reasons: dict[str, int]
    scheduler_stats: dict[str, dict]
    wall_s: float
    events: list[dict] = field(default_factory=list)
    interrupted: bool = False
    cpu_groups: dict[str, float] = field(default_factory=dict)
    """CPU seconds per group during the traffic, the sources' own included."""


class LiveInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM ended the run early; the network is down and `result` sums up what was recorded."""

    def __init__(self, result: LiveResult) -> None:
        super().__init__("interrupted")
        self.result = result


def window_policies(rows: list[dict]) -> dict:
    """Returns the policy counts of the windows log: overall, per antenna, and the decision time."""
    per_antenna: dict[str, dict[str, int]] = {}
    overall: dict[str, int] = {}
    for r in rows:
        ant = per_antenna.setdefault(r["antenna"], {})
        ant[r["policy"]] = ant.get(r["policy"], 0) + 1
        overall[r["policy"]] = overall.get(r["policy"], 0) + 1

    def pct(key: str) -> dict:
        x = np.array([float(r[key]) for r in rows if r.get(key)], dtype=np.float64)
        return {"n": int(x.size), **({"p50": round(float(np.percentile(x, 50)), 1),
                                      "p99": round(float(np.percentile(x, 99)), 1),
                                      "max": round(float(x.max()), 1)} if x.size else {})}

    return {
        "windows": len(rows),
        "policies": dict(sorted(overall.items())),
        "per_antenna": {a: dict(sorted(c.items())) for a, c in sorted(per_antenna.items())},
        "decide_us": pct("decide_us"),
        "decide_cpu_us": pct("decide_cpu_us"),
    }


def summarise(run: RunFacts, wall_s: float) -> LiveResult:
    """Reads the records back: summary.json, timeseries (overall and per app), success.png."""
    files = RunDir(run.out)
    table = read_records(files.records)
    apps = tuple(sorted(set(run.trace.app.tolist())))
    tally = Tally(run.window_s, apps)
    t_send = table.column("t_send_ms").to_numpy()
    last_ms = float(t_send.max()) if len(t_send) else 0.0  # a source that fell behind sends past the duration
    app_col = np.array(table.column("app").to_pylist(), dtype=object)
    lookup = {a: i for i, a in enumerate(apps)}
    outcomes = np.array(table.column("outcome").to_pylist(), dtype=object)
    tally.add(t_send, np.array([lookup[a] for a in app_col], dtype=np.int64), outcome_index(outcomes))
    window_ms = run.window_s * 1000.0
    n_windows = max(1, math.ceil(run.duration_s * 1000.0 / window_ms), math.floor(last_ms / window_ms) + 1)
    reasons: dict[str, int] = {}
    for o, r in zip(outcomes, table.column("reason").to_pylist(), strict=True):
        key = f"{o}:{r}" if r else o
        reasons[key] = reasons.get(key, 0) + 1
    sched = scheduler_stats(files)
    inferred = np.isfinite(table.column("t_infer_end_ms").to_numpy())
    names = [
        f"{v}@{c}"
        for v, c in zip(table.column("variant").to_pylist(), table.column("cluster").to_pylist(), strict=True)
    ]
    logged = {r: real_batches(Path(run.out), r) for r in run.real_resources}  # a mixed worker's real replicas only
    real_inferred = {  # a mixed worker without its log here (another server's) is left out: not known
        r: sum(b["served"] for b in logged[r]) if logged[r] is not None
        else int(sum(1 for n, ok in zip(names, inferred, strict=True) if ok and n == r))
        for r in run.real_resources if logged[r] is not None or r not in run.mixed_resources
    }
    sources = source_stats(files)
    cpu_groups = dict(run.cpu_groups)
    if sources:  # the sources have exited by the last CPU snapshot: they report their own CPU time
        cpu_groups["sources"] = round(sum(v.get("cpu_s", 0.0) for v in sources.values()), 2)
    by_server = cpu_by_server(files.cpu, sources, run.network)
    expected = run.trace.expected_queries(run.duration_s)
    windows = merge_windows(files)
    spec = read_spec(files.spec)
    try:  # the simulated policies are a view beside the run: their failure must not cost the run's summary
        simulated = simulate_beside(run.out, spec.topo, Path(run.profiles), run.trace, run.duration_s, spec.seed,
                                    spec.events, run.window_s, spec.capacity_headroom, spec.max_batch_delay_ms,
                                    spec.queue_limit_per_replica)
    except Exception as exc:  # noqa: BLE001
        simulated, simulated_error = [], f"{type(exc).__name__}: {exc}"
    else:
        simulated_error = None
    stop = next(({k: v for k, v in e.items() if k not in ("t_ms", "event")} for e in run.events
                 if e.get("event") == "stopped-early"), None)
    summary = RunSummary.from_tally(
        tally,
        n_windows,
        environment="testbed",
        topology=run.topology,
        policy=run.policy,
        seed=run.seed,
        lambda_per_min=run.load_label,
        duration_s=run.duration_s,
        extra={
            "streams": len(run.trace),
            "profiles": run.profiles,
            "expected_queries": expected,
            "recorded_queries": table.num_rows,
            "real_onnx_inferred": real_inferred,
            "reasons": reasons,
            "real_sites": list(run.real_sites),
            "wall_s": round(wall_s, 1),
            "sources": sources,
            "cpu_s": cpu_groups,
            **({"cpu_s_by_server": by_server} if by_server else {}),
            "scheduler_overhead_us": {k: v.get("overhead_us") for k, v in sched.items()},
            "agent": run.agent,
            "decision_window_s": run.decision_window_s,
            "policy_windows": window_policies(windows),
            "network": run.network,
            **_link_load(run.out),
            "fidelity": judge_run(run.out, stop),
            "simulated": beside_record(simulated) if simulated_error is None else {"error": simulated_error},
        },
    )
    summary.write_json(files.summary)
    write_timeseries(summary, files.timeseries)
    _write_per_app(tally, n_windows, files.timeseries_per_app)
    bands = {}
    for r in windows:
        bands.setdefault(r["antenna"], []).append(
            (float(r["t_start_ms"]) / 1000.0, float(r["t_end_ms"]) / 1000.0, r["policy"])
        )
    plot_success_over_time([summary, *simulated], files.success_plot, policy_bands=bands or None,
                           events=[(float(e["at_s"]), _event_label(e)) for s in simulated[:1]
                                   for e in s.extra.get("network_events", {}).get("applied", [])])
    from_schedulers = [
        {**e, "source": f"scheduler {k}"} for k, v in sched.items() for e in v.get("events", [])
    ]
    with files.events.open("a") as f:  # one log of every event: the orchestrator's and theirs
        f.writelines(json.dumps(e) + "\n" for e in from_schedulers)
    return LiveResult(
        summary=summary,
        out=run.out,
        expected_queries=expected,
        recorded_queries=table.num_rows,
        reasons=reasons,
        scheduler_stats=sched,
        wall_s=wall_s,
        events=run.events + from_schedulers,
        cpu_groups=cpu_groups,
    )


def _link_load(run_dir: Path) -> dict:
    """Returns summary.json's `links_full` (live/linkload.py), or `link_load_error`: a view of the wires' counts
    whose failure must not cost the run's summary."""
    try:
        return {"links_full": link_load(run_dir)}
    except Exception as exc:  # noqa: BLE001
        return {"links_full": None, "link_load_error": f"{type(exc).__name__}: {exc}"}


def cpu_by_server(cpu_json: Path, sources: dict[str, dict], network: dict) -> dict[str, dict[str, float]]:
    """Returns summary.json's `cpu_s_by_server` of a run across servers ({} on one): each server's CPU seconds per
    group during the traffic (cpu.json's `servers`, its ovs-vswitchd included), with the sources' own CPU seconds (as
    they report it) on their antenna's server, as `cpu_s` counts them over every server."""
    try:
        servers = json.loads(cpu_json.read_text()).get("servers") or {}
    except (OSError, ValueError):
        return {}
    if len(servers) < 2:
        return {}
    out = {name: dict(s.get("groups_cpu_s") or {}) for name, s in servers.items()}
    server_of = {site: name for name, srv in (network.get("servers") or {}).items() for site in srv.get("sites", [])}
    for antenna, stats in sources.items():  # `ant1`, or `ant1.N` for a restart
        groups = out.setdefault(server_of.get(antenna.split(".")[0], LOCAL), {})
        groups["sources"] = round(groups.get("sources", 0.0) + stats.get("cpu_s", 0.0), 2)
    return out


def _event_label(event: dict) -> str:
    """Returns a network event in a few words for the plot: `co1-dc1 20 Mbit/s`, `dc1-cloud down`."""
    what = event.get("state") or ", ".join(
        f"{v:g} Mbit/s" if k == "bw_mbps" else f"{v:g} ms" if k == "delay_ms" else f"{k} {v:g}"
        for k, v in event.items() if k not in ("at_s", "link", "delay_dev_ms"))
    return f"{event['link']} {what}"


def _write_per_app(tally: Tally, n_windows: int, path: Path) -> None:
    counts = tally.trimmed(n_windows)
    with path.open("w") as f:
        f.write("t_s,app," + ",".join(OUTCOMES) + "\n")
        for w in range(n_windows):
            for i, app in enumerate(tally.apps):
                f.write(f"{w * tally.window_s:g},{app}," + ",".join(str(int(x)) for x in counts[w, i]) + "\n")


def format_result(result: LiveResult) -> str:
    """Returns the summary table printed at the end of a run."""
    s = result.summary
    o = s.overall
    lines = [
        f"{s.environment} {s.topology}, policy {s.policy}, load {s.lambda_per_min}, {s.duration_s:g} s "
        f"(wall {result.wall_s:.0f} s)",
        f"queries: {result.recorded_queries} recorded of {result.expected_queries} sent"
        + ("" if result.recorded_queries == result.expected_queries else "  <-- MISMATCH"),
        "",
        f"{'application':24} {'queries':>8} {'success':>8} {'failed':>8} {'rejected':>8}",
        f"{'all':24} {o.queries:8d} {o.success:8.3f} {o.failed:8.3f} {o.rejected:8.3f}",
    ]
    for app, r in sorted(s.per_app.items()):
        lines.append(f"{app:24} {r.queries:8d} {r.success:8.3f} {r.failed:8.3f} {r.rejected:8.3f}")
    lines += ["", "outcomes by reason: " + ", ".join(f"{k} {v}" for k, v in sorted(result.reasons.items()))]
    down: dict[str, int] = {}
    for stats in s.extra.get("sources", {}).values():  # what the sources' scheduler-down queries met (live/source.py)
        for what, n in stats.get("scheduler_down", {}).items():
            down[what] = down.get(what, 0) + n
    if down:
        lines.append("scheduler-down, the errors behind it: " + ", ".join(f"{k} {v}" for k, v in sorted(down.items())))
    real = s.extra.get("real_onnx_inferred") or {}
    lines.append(
        f"frames through real ONNX inference: {sum(real.values())}"
        + (f" ({', '.join(f'{k} {v}' for k, v in sorted(real.items()))})" if real else " (no real worker)")
    )
    lag = max((v.get("lag_p99_ms", 0.0) for v in s.extra.get("sources", {}).values()), default=0.0)
    lines.append(f"sources' send lag p99 {lag:.1f} ms (the fidelity monitor judges it, below)")
    cpu = s.extra.get("cpu_s") or {}
    if cpu:
        lines.append(
            "CPU seconds during the traffic: "
            + ", ".join(f"{k} {v:.1f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]))
            + (", over every server" if s.extra.get("cpu_s_by_server") else "")
        )
    for name, groups in (s.extra.get("cpu_s_by_server") or {}).items():
        lines.append(f"  on {'this machine' if name == LOCAL else f'server {name}'}: "
                     + (", ".join(f"{k} {v:.1f}" for k, v in sorted(groups.items(), key=lambda kv: -kv[1]))
                        or "not read (cpu.json)"))
    for ant, st in sorted(result.scheduler_stats.items()):
        ov = st.get("overhead_us", {})
        if ov.get("n"):
            lines.append(
                f"scheduler {ant}: {ov['n']} frames relayed, overhead p50 {ov['p50']:.0f} us, "
                f"p99 {ov['p99']:.0f} us; streams {st['streams']}; workers down {st['workers_down']}"
            )
    pw = s.extra.get("policy_windows") or {}
    if pw.get("windows"):
        cost, cpu = pw.get("decide_us", {}), pw.get("decide_cpu_us", {})
        lines.append(
            f"decision windows ({s.extra.get('decision_window_s', 0):g} s, all antennas): {pw['windows']}; "
            + ", ".join(f"{k} {v}" for k, v in pw["policies"].items())
            + (f"; decision time p50 {cost['p50']:.0f} us, p99 {cost['p99']:.0f} us wall" if cost.get("n") else "")
            + (f", p50 {cpu['p50']:.0f} us, p99 {cpu['p99']:.0f} us CPU" if cpu.get("n") else "")
        )
    net = s.extra.get("network") or {}
    if net.get("links_out_of_tolerance"):
        lines.append(f"warning: {len(net['links_out_of_tolerance'])} link direction(s) out of tolerance before the run "
                     "(link_measurements.json)  <-- the network is not shaped as the topology says")
    if net.get("switch_hop_ms_median"):
        lines.append(f"switches: {net['switch_hop_ms_median']:.3f} ms per hop one-way ({net.get('switch')}), "
                     "not in the topology's delays (summary.json: network.switch_ms_one_way)")
    for name, srv in sorted((net.get("servers") or {}).items()):
        end = srv.get("clock_offset_end_ms")
        lines.append(f"server {name} ({', '.join(srv['sites'])}): clock {srv['clock_offset_ms']:+.3f} ms +- "
                     f"{srv['clock_bound_ms']:.3f} ms from the driver's (its processes' times shifted by it)"
                     + ("" if end is None else f", {end:+.3f} ms after the traffic"))
    lines += format_full(s.extra)
    lines += format_beside(s.extra.get("simulated") or {})
    lines.append(f"run dir: {result.out}")
    lines += format_fidelity(s.extra.get("fidelity") or {})
    return "\n".join(lines)
