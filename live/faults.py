"""Faults a live run injects on purpose: `--kill-worker RESOURCE=SECONDS` (SIGKILL that resource's worker)
and `--restart-scheduler ANTENNA=SECONDS` (stop that antenna's scheduler and start a fresh one), checked
before anything starts and applied at their time after t0; `--events FILE`'s network events (testbed/events.py
applies them) are scheduled with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from live.spec import RunSpec
from scheduler.system import SystemModel
from topologies.events import LinkEvent, NetworkEvents

if TYPE_CHECKING:
    from live.orchestrate import LiveRun
    from testbed.network import EmulatedNetwork

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
    """Returns the spec's faults and the network events in the order they happen (a link's events at one time
    in file order)."""
    return sorted([Fault(t, KILL_WORKER, name) for name, t in spec.kill_worker]
                  + [Fault(t, RESTART_SCHEDULER, ant) for ant, t in spec.restart_scheduler]
                  + [Fault(e.at_s, LINK_EVENT, e.link, e) for e in (events.events if events else ())])


def check_faults(spec: RunSpec, resources: list[str], system: SystemModel) -> None:
    """Refuses a --kill-worker naming no resource and a --restart-scheduler naming no antenna."""
    for name, _ in spec.kill_worker:
        if name not in resources:
            raise ValueError(f"--kill-worker: no resource {name!r}; resources: " + ", ".join(resources))
    for ant, _ in spec.restart_scheduler:
        system.antenna_index(ant)


def apply_fault(run: LiveRun, net: EmulatedNetwork, fault: Fault) -> None:
    """Injects the fault now and logs it in the run's events (a network event in summary.json's network too)."""
    if fault.kind == LINK_EVENT:
        from testbed.events import apply_link_event  # the network side: with the network

        assert fault.event is not None
        done = apply_link_event(net, fault.event)
        run.events("network-event", at_s=fault.at_s, **done)
        run.network.setdefault("events", []).append({"at_s": fault.at_s, **done, "t_ms": run.events.entries[-1]["t_ms"]})
        return
    if fault.kind == KILL_WORKER:
        proc = run.workers[[p.resource for p in run.workers_plan].index(fault.target)]
        proc.kill()
        run.events("worker-killed", resource=fault.target, pid=proc.popen.pid if proc.popen else None)
        return
    old = run.schedulers[fault.target]
    old.stop()
    run.events("scheduler-stopped", antenna=fault.target)
    run.restarts[fault.target] = run.restarts.get(fault.target, 0) + 1
    new = run.start_scheduler(net, fault.target)
    run.schedulers[fault.target] = new
    run.events("scheduler-restarted", antenna=fault.target, url=new.url)
