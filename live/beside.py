"""The simulator's seven static policies on a finished live run's own trace, network events and profile file,
written beside it (`<run dir>/simulated/<policy>/summary.json`, `timeseries.csv`; `simulated/table.md`): a live
run executes one policy, and these show, in seconds, how the others fare on the very load it carried. The run's
report draws them in its plot and lists them in summary.json (`simulated`).
"""

from __future__ import annotations

from pathlib import Path

from analysis.summary import RunSummary
from scheduler.core import POLICY_NAMES
from scheduler.profiles import load_profiles
from scheduler.system import build_system
from simulator.engine import SimConfig
from simulator.run import format_table, simulate_policy
from topologies import load_topology
from topologies.events import load_events
from workload.trace import Trace


def simulate_beside(out: Path, topo: str, profiles: Path, trace: Trace, duration_s: float, seed: int,
                    events: Path | None, window_s: float, capacity_headroom: float = 1.0,
                    max_batch_delay_ms: float = 2.0, queue_limit_per_replica: int = 16,
                    policies: tuple[str, ...] = POLICY_NAMES) -> list[RunSummary]:
    """Returns the simulated summary of every policy on the run's trace (in `policies`' order) and writes them
    under `out`/simulated/; the schedulers decide with `profiles` (the run's profiles.yaml) as the live ones did."""
    topology = load_topology(topo)
    system = build_system(topology, load_profiles(profiles))
    net_events = load_events(events, topology) if events is not None else None
    config = SimConfig(window_s=window_s, duration_s=duration_s, capacity_headroom=capacity_headroom,
                       max_batch_delay_ms=max_batch_delay_ms, queue_limit_per_replica=queue_limit_per_replica)
    where = Path(out) / "simulated"
    runs = [simulate_policy(system, trace, p, config, seed, "trace:trace.csv", where / p, write_records=False,
                            events=net_events) for p in policies]
    (where / "table.md").write_text(format_table(runs) + "\n")
    return [r.summary for r in runs]


def beside_record(summaries: list[RunSummary]) -> dict:
    """Returns summary.json's `simulated`: per policy, success overall and per application (3 decimals)."""
    return {s.policy: {"success": round(s.overall.success, 3),
                       "per_app": {a: round(r.success, 3) for a, r in sorted(s.per_app.items())}}
            for s in summaries}


def format_beside(record: dict) -> list[str]:
    """Returns the lines the run's table prints of the simulated policies (none without any)."""
    if not record:
        return []
    if "error" in record:
        return [f"the simulator's policies on the same trace: not run ({record['error']})"]
    ranked = sorted(record.items(), key=lambda kv: -kv[1]["success"])
    return ["the simulator's policies on the same trace and events (simulated/): "
            + ", ".join(f"{p} {r['success']:.3f}" for p, r in ranked)]
