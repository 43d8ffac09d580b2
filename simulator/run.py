"""Runs simulations to an output folder: records, per-window time series, JSON summary and plot."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from analysis.records import QueryBatch, RecordWriter
from analysis.summary import RunSummary
from scheduler.core import ASET, policy_index
from scheduler.system import SystemModel
from simulator.engine import RecordSink, SimConfig, Simulation
from topologies.events import NetworkEvents
from workload.trace import Trace


@dataclass(frozen=True)
class SimRun:
    """A finished simulation: its summary and the simulation object (for its counters)."""

    summary: RunSummary
    queries: int
    records_path: Path | None


def simulate_policy(system: SystemModel, trace: Trace, policy: str, config: SimConfig, seed: int,
                    lambda_label: str, out_dir: Path | None, write_records: bool = True,
                    records_format: str = "csv", physics: SystemModel | None = None,
                    events: NetworkEvents | None = None, record_sink: RecordSink | None = None) -> SimRun:
    """Returns the run of one static policy; writes records, time series and summary under out_dir.
    `physics`: the links as they behave, when not as `system` (what the schedulers decide with) says;
    `events`: the links' changes over the run (summary.json's `network_events` lists them); `record_sink`: gets the
    records too (or alone, where none are written)."""
    writer = _record_writer(out_dir, write_records, records_format)
    try:
        sim = Simulation(system, trace, config, seed=seed, record_sink=_both(writer.write if writer else None,
                                                                             record_sink),
                         physics=physics, events=events)
        sim.run(policy_index(policy))
    finally:
        if writer is not None:
            writer.close()
    summary = RunSummary.from_tally(sim.tally, sim.windows, environment="simulator", topology=system.topology.name,
                                    policy=policy, seed=seed, lambda_per_min=lambda_label,
                                    duration_s=sim.end_s, extra={"streams": len(trace),
                                                                 "profiles": system.profiles.source,
                                                                 "wire_ratio": config.wire_ratio,
                                                                 **events_summary(events, sim.end_s)})
    if out_dir is not None:
        summary.write_json(out_dir / "summary.json")
        write_timeseries(summary, out_dir / "timeseries.csv")
    return SimRun(summary=summary, queries=sim.queries_done,
                  records_path=writer.path if writer else None)


def simulate_aset(system: SystemModel, trace: Trace, agent: Path, config: SimConfig, seed: int,
                  lambda_label: str, out_dir: Path | None, write_records: bool = True,
                  records_format: str = "csv", events: NetworkEvents | None = None,
                  physics: SystemModel | None = None) -> SimRun:
    """Returns the run of an exported ASET agent (ONNX, guarded) choosing the policy of every decision window,
    as `evaluate` runs it, under the network `events` if any (`physics`: as in simulate_policy); writes records,
    time series, summary and `windows.csv` (the policy per window)."""
    from scheduler.aset.policy import OnnxPolicy
    from scheduler.core import POLICY_NAMES
    from simulator.gym_env import AsetEnv, EnvConfig

    policy = OnnxPolicy(agent)
    env = AsetEnv(system, EnvConfig.for_agent(policy.meta, config.window_s))
    policy.meta.check_compatible(env.spec_state, str(agent))
    env.sim_config = config  # the run's capacity headroom, window and batching; the duration is set by reset
    duration = config.duration_s if config.duration_s is not None else float(trace.end_s.max(initial=0.0))
    writer = _record_writer(out_dir, write_records, records_format)
    try:
        obs, _ = env.reset(seed=seed, options={"trace": trace, "sim_seed": seed, "duration_s": duration,
                                               "events": events, "record_sink": writer.write if writer else None,
                                               "physics": physics})
        actions = env.play(policy.act, obs)
    finally:
        if writer is not None:
            writer.close()
    sim = env.sim
    counts = {POLICY_NAMES[a]: actions.count(a) for a in sorted(set(actions))}
    summary = RunSummary.from_tally(sim.tally, sim.windows, environment="simulator", topology=system.topology.name,
                                    policy=ASET, seed=seed, lambda_per_min=lambda_label, duration_s=sim.end_s,
                                    extra={"streams": len(trace), "profiles": system.profiles.source,
                                           "agent": str(agent), "decision_window_s": policy.meta.decision_window_s,
                                           "policy_windows": {"windows": len(actions), "policies": counts},
                                           **events_summary(events, sim.end_s)})
    if out_dir is not None:
        summary.write_json(out_dir / "summary.json")
        write_timeseries(summary, out_dir / "timeseries.csv")
        t = policy.meta.decision_window_s
        with (out_dir / "windows.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(("window", "t_start_ms", "t_end_ms", "policy"))
            for k, a in enumerate(actions):
                w.writerow((k, f"{k * t * 1000:.1f}", f"{min((k + 1) * t, sim.end_s) * 1000:.1f}", POLICY_NAMES[a]))
    return SimRun(summary=summary, queries=sim.queries_done, records_path=writer.path if writer else None)


def events_summary(events: NetworkEvents | None, end_s: float) -> dict:
    """Returns summary.json's record of the network events a run applied ({} without any): the file and each
    event that happened before the run's end `end_s`, at its virtual time."""
    if events is None:
        return {}
    return {"network_events": {"file": events.source,
                               "applied": [e.describe() for e in events.events if e.at_s < end_s]}}


def _both(a: RecordSink | None, b: RecordSink | None) -> RecordSink | None:
    """Returns a sink giving each batch of records to `a` then `b` (either alone where the other is None)."""
    if a is None or b is None:
        return a or b

    def both(batch: QueryBatch) -> None:
        a(batch)
        b(batch)
    return both


def _record_writer(out_dir: Path | None, write_records: bool, records_format: str) -> RecordWriter | None:
    """Returns the writer of a run's per-query records (None: no folder or no records); creates the folder."""
    if out_dir is None:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    return RecordWriter(out_dir / f"records.{records_format}") if write_records else None


def write_timeseries(summary: RunSummary, path: Path) -> None:
    """Writes the per-window success, failure and reject ratios (windows by send time)."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("t_s", "success", "failed", "rejected"))
        for i, row in enumerate(zip(summary.series_success, summary.series_failed, summary.series_rejected,
                                    strict=True)):
            w.writerow((f"{i * summary.window_s:g}", *(f"{x:.4f}" for x in row)))


def write_comparison(runs: list[SimRun], out_dir: Path) -> None:
    """Writes the plot of every policy's success over time and a table of their ratios."""
    from analysis.plots import plot_success_over_time  # matplotlib: only for a run that plots

    out_dir.mkdir(parents=True, exist_ok=True)
    plot_success_over_time([r.summary for r in runs], out_dir / "success.png")
    (out_dir / "table.md").write_text(format_table(runs) + "\n")


def format_table(runs: list[SimRun]) -> str:
    """Returns a Markdown table of success, failure and reject ratios, overall and per application."""
    apps = sorted(runs[0].summary.per_app)
    head = ["policy", "success", "failed", "rejected", *[f"{a} ok" for a in apps]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        s = r.summary
        cells = [s.policy, f"{s.overall.success:.3f}", f"{s.overall.failed:.3f}", f"{s.overall.rejected:.3f}",
                 *[f"{s.per_app[a].success:.3f}" for a in apps]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
