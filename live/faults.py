"""Faults a live run injects on purpose: `--kill-worker RESOURCE=SECONDS` (SIGKILL that resource's worker)
and `--restart-scheduler ANTENNA=SECONDS` (stop that antenna's scheduler and start a fresh one), checked
before anything starts; the orchestrator applies them at their time after t0 (`LiveRun.apply_fault`).
"""

from __future__ import annotations

from dataclasses import dataclass

from live.spec import RunSpec
from scheduler.system import SystemModel

KILL_WORKER, RESTART_SCHEDULER = "kill-worker", "restart-scheduler"


@dataclass(frozen=True, order=True)
class Fault:
    """One fault: when (seconds after t0), what, and to which resource or antenna."""

    at_s: float
    kind: str
    target: str


def fault_schedule(spec: RunSpec) -> list[Fault]:
    """Returns the spec's faults in the order they happen."""
    return sorted([Fault(t, KILL_WORKER, name) for name, t in spec.kill_worker]
                  + [Fault(t, RESTART_SCHEDULER, ant) for ant, t in spec.restart_scheduler])


def check_faults(spec: RunSpec, resources: list[str], system: SystemModel) -> None:
    """Refuses a --kill-worker naming no resource and a --restart-scheduler naming no antenna."""
    for name, _ in spec.kill_worker:
        if name not in resources:
            raise ValueError(f"--kill-worker: no resource {name!r}; resources: " + ", ".join(resources))
    for ant, _ in spec.restart_scheduler:
        system.antenna_index(ant)
