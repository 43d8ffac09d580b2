"""Runs simulations to an output folder: records, per-window time series, JSON summary and plot."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from analysis.plots import plot_success_over_time
from analysis.records import RecordWriter
from analysis.summary import RunSummary
from scheduler.core import policy_index
from scheduler.system import SystemModel
from simulator.engine import SimConfig, Simulation
from workload.trace import Trace


@dataclass(frozen=True)
class SimRun:
    """A finished simulation: its summary and the simulation object (for its counters)."""

    summary: RunSummary
    queries: int
    records_path: Path | None


def simulate_policy(system: SystemModel, trace: Trace, policy: str, config: SimConfig, seed: int,
                    lambda_label: str, out_dir: Path | None, write_records: bool = True,
                    records_format: str = "csv", physics: SystemModel | None = None) -> SimRun:
    """Returns the run of one static policy; writes records, time series and summary under out_dir.
    `physics`: the links as they behave, when not as `system` (what the schedulers decide with) says."""
    writer = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        if write_records:
            writer = RecordWriter(out_dir / f"records.{records_format}")
    try:
        sim = Simulation(system, trace, config, seed=seed, record_sink=writer.write if writer else None,
                         physics=physics)
        sim.run(policy_index(policy))
    finally:
        if writer is not None:
            writer.close()
    summary = RunSummary.from_tally(sim.tally, sim.windows, environment="simulator", topology=system.topology.name,
                                    policy=policy, seed=seed, lambda_per_min=lambda_label,
                                    duration_s=sim.end_s, extra={"streams": len(trace),
                                                                 "profiles": system.profiles.source})
    if out_dir is not None:
        summary.write_json(out_dir / "summary.json")
        write_timeseries(summary, out_dir / "timeseries.csv")
    return SimRun(summary=summary, queries=sim.queries_done,
                  records_path=writer.path if writer else None)


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
