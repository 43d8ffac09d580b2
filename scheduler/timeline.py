"""The system model over time: one `SystemModel` per state of the network (topologies/events.py), with the
resources of the first, so that the simulator and the live schedulers decide, and the simulated links behave,
as the network is at each moment. A path through a link that is down has an infinite delay: no stream is bound
across it (the delay constraint) and no query crosses it.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from scheduler.placement import placement_for
from scheduler.system import SystemModel, build_system
from topologies.events import NetworkEvents, NetworkState, network_states


@dataclass(frozen=True)
class SystemTimeline:
    """`systems[k]` holds from `starts_s[k]` until `starts_s[k + 1]` (the last until the end)."""

    starts_s: tuple[float, ...]
    systems: tuple[SystemModel, ...]
    states: tuple[NetworkState, ...]

    @staticmethod
    def build(system: SystemModel, events: NetworkEvents | None) -> SystemTimeline:
        """Returns the timeline of a system under the events (one state, the system itself, without any; the first
        state is the system with the events at 0 s applied, where there are some)."""
        states = network_states(system.topology, events)
        placed = placement_for(system.topology, system.profiles)  # fixed: a link's change moves no replica
        systems = []
        for k, state in enumerate(states):
            if k == 0 and not state.events:  # no event at 0 s: the system itself
                systems.append(system)
            else:
                systems.append(build_system(dataclasses.replace(state.topology, deployments=placed), system.profiles))
        for s in systems:
            assert [r.name for r in s.resources] == [r.name for r in system.resources]
        return SystemTimeline(tuple(s.at_s for s in states), tuple(systems), states)

    def index_at(self, t_s: float) -> int:
        """Returns the index of the state in force at run time t_s (an event at t applies from t on)."""
        return max(0, bisect.bisect_right(self.starts_s, t_s) - 1)

    def at(self, t_s: float) -> SystemModel:
        """Returns the system model in force at run time t_s."""
        return self.systems[self.index_at(t_s)]

    def indices_at(self, t_s: np.ndarray) -> np.ndarray:
        """Returns the state index in force at each of an array of run times (seconds)."""
        return np.maximum(np.searchsorted(np.asarray(self.starts_s), t_s, side="right") - 1, 0)

    def first_from(self, t_s: float, ok: Callable[[SystemModel], bool]) -> int | None:
        """Returns the index of the first state in force at or after run time t_s whose system passes `ok`
        (None: none does)."""
        return next((k for k in range(self.index_at(t_s), len(self.systems)) if ok(self.systems[k])), None)

    @property
    def static(self) -> bool:
        """True when the network never changes."""
        return len(self.systems) == 1
