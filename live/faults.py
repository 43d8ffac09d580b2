"""Faults a live run injects on purpose: `--kill-worker RESOURCE=SECONDS` (SIGKILL that resource's worker)
and `--restart-scheduler ANTENNA=SECONDS` (stop that antenna's scheduler and start a fresh one), checked
before anything starts; the orchestrator applies them at their time after t0 (`LiveRun.apply_fault`), with
`--events FILE`'s network events (testbed/events.py applies them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from live.spec import RunSpec
from scheduler.system import SystemModel
from topologies.events import LinkEvent, NetworkEvents

KILL_WORKER, RESTART_SCHEDULER, LINK_EVENT = "kill-worker", "restart-scheduler", "link-event"


@dataclass(frozen=True, order=True)
class Fault:
    """One fault: when (seconds after t0), what, and to which resource or antenna."""

    at_s: float
    kind: str
    target: str
    event: LinkEvent | None = field(default=None, compare=False)
    """A network event's change (kind LINK_EVENT; target: its link)."""


def fault_schedule(spec: RunSpec, events: NetworkEvents | None = None) -> list[Fault]:
    """Returns the spec's faults and the network events in the order they happen (events at one time in file
    order, after the faults of that time)."""
    return sorted([Fault(t, KILL_WORKER, name) for name, t in spec.kill_worker]
                  + [Fault(t, RESTART_SCHEDULER, ant) for ant, t in spec.restart_scheduler]
                  + [Fault(e.at_s, LINK_EVENT, e.link, e) for e in (events.events if events else ())],
                  key=lambda f: (f.at_s, f.kind == LINK_EVENT))  # stable: the file's order within a time


def check_faults(spec: RunSpec, resources: list[str], system: SystemModel) -> None:
    """Refuses a --kill-worker naming no resource and a --restart-scheduler naming no antenna."""
    for name, _ in spec.kill_worker:
        if name not in resources:
            raise ValueError(f"--kill-worker: no resource {name!r}; resources: " + ", ".join(resources))
    for ant, _ in spec.restart_scheduler:
        system.antenna_index(ant)
