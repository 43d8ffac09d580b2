"""Scenarios: workloads whose load, application mix and network change over time in a repeating cycle (a scenario
file).

A scenario is a cycle of phases; each phase opens streams at its own `lambda_per_min` (new streams per minute
per antenna) with its own application mix (relative weights of the application classes, missing classes 0).
A scenario may also change links during the cycle (`network_events`: the entries of a network events file,
topologies/events.py, at times within the cycle; a cycle leaves every link as it found it), so the capacity
a site offers changes while streams run. The cycle repeats for the whole run, shifted by `offset_s`. A trace is drawn phase by phase with Poisson
thinning of the nominal mix (`mixed_trace`), so arrivals stay Poisson at each phase's lambda. Files live in
workload/scenarios/ (a name there, or a path), read strictly (`ScenarioFile`, published as
docs/schemas/scenario.schema.json; docs/file-formats.md#scenario); docs/aset.md#scenarios has the shipped ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from topologies.events import (
    DOWN,
    SHAPE_KEYS,
    EventEntry,
    EventsError,
    LinkEvent,
    NetworkEvents,
    NetworkEventsFile,
    events_of,
    link_shapes,
)
from topologies.model import LinkShape, Topology
from topologies.strict import Name, NonNegative, Positive, StrictModel, at_key, derived, load_yaml, validate
from workload.apps import APP_NAMES, APPS
from workload.arrivals import RateSchedule, generate_trace
from workload.trace import Trace

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"


def mixed_trace(antennas: tuple[str, ...], schedule: RateSchedule, duration_s: float,
                app_weight: np.ndarray, rng: np.random.Generator) -> Trace:
    """Returns a trace whose applications' shares are scaled by `app_weight` at the same total rate.

    Poisson thinning: streams are generated at lambda / E[weight] with the nominal mix and each is kept with
    probability weight[app] / max(weight), so arrivals stay Poisson with the schedule's total rate.
    """
    shares = np.array([a.share for a in APPS])
    keep = np.asarray(app_weight, dtype=np.float64) / np.max(app_weight)
    boost = 1.0 / float(np.dot(shares / shares.sum(), keep))
    scaled = RateSchedule(tuple((s, lam * boost) for s, lam in schedule.segments))
    full = generate_trace(antennas, scaled, duration_s, rng)
    app_idx = np.array([APP_NAMES.index(a) for a in full.app], dtype=np.int64)
    mask = rng.random(len(full)) < keep[app_idx]
    return Trace(**{k: getattr(full, k)[mask] for k in full.__dataclass_fields__})


def concat(traces: list[Trace]) -> Trace:
    """Returns the traces' streams as one trace sorted by start time, numbered 0..n-1 in that order."""
    cols = {k: np.concatenate([getattr(t, k) for t in traces]) for k in Trace.__dataclass_fields__}
    order = np.argsort(cols["start_s"], kind="stable")
    cols = {k: v[order] for k, v in cols.items()}
    cols["stream_id"] = np.arange(len(order), dtype=np.int64)
    return Trace(**cols)


@dataclass(frozen=True)
class Phase:
    """One phase of the cycle: how long, at which lambda, with which application weights."""

    duration_s: float
    lambda_per_min: float
    app_weight: tuple[float, ...]
    """Weight per application class, in APP_NAMES order (relative shares of the phase's new streams)."""


@dataclass(frozen=True)
class Scenario:
    """A repeating cycle of phases (see the module's docstring)."""

    name: str
    description: str
    phases: tuple[Phase, ...]
    network_events: tuple[EventEntry, ...] = ()
    """Link changes at times within the cycle (seconds from its start), in file order."""
    source: str = ""
    """The file it was read from (for messages)."""

    @property
    def period_s(self) -> float:
        return sum(p.duration_s for p in self.phases)

    def phase_at(self, t_s: float, offset_s: float = 0.0) -> int:
        """Returns the index of the phase in force at time t_s of a run whose cycle is shifted by offset_s."""
        x = (t_s + offset_s) % self.period_s
        for i, p in enumerate(self.phases):
            if x < p.duration_s:
                return i
            x -= p.duration_s
        return len(self.phases) - 1

    def trace(self, antennas: tuple[str, ...], duration_s: float, rng: np.random.Generator,
              lambda_scale: float = 1.0, offset_s: float = 0.0, mix_noise: np.ndarray | None = None) -> Trace:
        """Returns the streams opening in [0, duration_s): every phase occurrence drawn with its own lambda
        (times `lambda_scale`) and mix (times `mix_noise`, one factor per application), cycle shifted by
        `offset_s` seconds."""
        parts = []
        t = -(offset_s % self.period_s)
        i = 0
        while t < duration_s:
            p = self.phases[i % len(self.phases)]
            start, end = max(t, 0.0), min(t + p.duration_s, duration_s)
            if end > start and p.lambda_per_min > 0:
                weight = np.asarray(p.app_weight, dtype=np.float64)
                if mix_noise is not None:
                    weight = weight * mix_noise
                if weight.max() > 0:
                    sched = RateSchedule(((0.0, 0.0), (start, p.lambda_per_min * lambda_scale)) if start > 0
                                         else ((0.0, p.lambda_per_min * lambda_scale),))
                    parts.append(mixed_trace(antennas, sched, end, weight, rng))
            t += p.duration_s
            i += 1
        return concat(parts) if parts else generate_trace(antennas, RateSchedule.constant(0.0), duration_s, rng)

    def events(self, topo: Topology, duration_s: float, offset_s: float = 0.0) -> NetworkEvents | None:
        """Returns the network events of a run of `duration_s` on `topo` whose cycle is shifted by `offset_s`
        (as `trace`'s): every cycle's events at their run times and, at time 0, the links as the cycle has left
        them at the run's start (None: the scenario changes no link). Raises ScenarioError when a link is not
        in `topo` or the cycle does not leave every link as it found it."""
        if not self.network_events:
            return None
        where = f"{self.source or self.name}: network_events"
        cycle = self._checked(topo, list(self.network_events), where).events  # canonical links, by time
        initial = link_shapes(topo)
        end_shapes, end_down = _links_after(initial, cycle)
        if end_shapes != initial or end_down:
            changed = sorted({k for k in initial if end_shapes[k] != initial[k]} | end_down)
            raise ScenarioError(f"{where}: the cycle must leave every link as it found it; at its end "
                                f"{', '.join(changed)} differ")
        x0 = offset_s % self.period_s
        shapes, down = _links_after(initial, [e for e in cycle if e.at_s < x0])
        entries = [EventEntry(at_s=0.0, link=k, **{f: getattr(shapes[k], f) for f in SHAPE_KEYS
                                                   if getattr(shapes[k], f) != getattr(initial[k], f)},
                              **({"state": DOWN} if k in down else {}))
                   for k in initial if shapes[k] != initial[k] or k in down]
        for k in range(int(np.ceil((duration_s + x0) / self.period_s)) + 1):
            for e in cycle:
                t = e.at_s - x0 + k * self.period_s
                if 0.0 <= t < duration_s and (k > 0 or e.at_s >= x0):
                    entries.append(EventEntry(at_s=t, link=e.link, **e.changes,
                                              **({"state": e.state} if e.state else {})))
        if not entries:
            return None
        return self._checked(topo, entries, f"{where} (cycle shifted by {x0:g} s)")

    def _checked(self, topo: Topology, entries: list[EventEntry], where: str) -> NetworkEvents:
        try:
            return events_of(NetworkEventsFile(description=f"scenario {self.name}", events=entries), where, topo)
        except EventsError as e:
            raise ScenarioError(str(e)) from None


def _links_after(initial: dict[str, LinkShape], events: list[LinkEvent] | tuple[LinkEvent, ...]
                 ) -> tuple[dict[str, LinkShape], set[str]]:
    """Returns every link's shape and the links that are down after these events (canonical names)."""
    shapes, down = dict(initial), set()
    for e in events:
        shapes[e.link] = e.shape_after(shapes[e.link])
        if e.state:
            (down.add if e.state == DOWN else down.discard)(e.link)
    return shapes, down


class ScenarioError(ValueError):
    """A scenario file is malformed; the message names the file, the key and the value."""


SCHEMA_FILE = "scenario.schema.json"
"""Its JSON Schema, under docs/schemas/."""
AppName = Literal[APP_NAMES]  # type: ignore[valid-type]


class PhaseEntry(StrictModel):
    """One phase of the cycle as a scenario file writes it."""

    duration_s: Positive = Field(description="how long the phase lasts, seconds")
    lambda_per_min: NonNegative = Field(description="new streams per minute per antenna during the phase")
    mix: Annotated[dict[AppName, NonNegative], Field(min_length=1)] | None = derived(
        "relative weights of the application classes' new streams (a class left out gets none); "
        "absent: the nominal mix")


class ScenarioFile(StrictModel):
    """A scenario file: a cycle of phases that repeats for the whole run."""

    name: Name | None = derived("the scenario's name (absent: the file's name without .yaml)")
    description: str = Field("", description="what the scenario stands for, one line")
    phases: list[PhaseEntry] = Field(min_length=1, description="the cycle's phases, in order")
    network_events: list[EventEntry] | None = derived(
        "link changes during the cycle, as a network events file's entries (docs/file-formats.md#network-events), "
        "`at_s` in seconds from the cycle's start (below its period); the cycle must leave every link as it "
        "found it; links are checked against the run's topology; absent: the network never changes")


def load_scenario(text: str | Path) -> Scenario:
    """Returns the scenario in a file (a path, or a name in workload/scenarios/); one-line errors name the key."""
    path = Path(text)
    if not path.is_file():
        path = SCENARIO_DIR / f"{text}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml")))
        raise ScenarioError(f"scenario {text!r}: no such file or shipped scenario (shipped: {known})")
    doc = validate(ScenarioFile, load_yaml(path, ScenarioError), path, ScenarioError)
    nominal = {a.name: a.share for a in APPS}
    phases = []
    for i, ph in enumerate(doc.phases):
        mix = nominal if ph.mix is None else ph.mix
        if not sum(mix.values()) > 0:
            raise ScenarioError(at_key(path, f"phases[{i}].mix", "every weight is 0 (no stream would open)"))
        phases.append(Phase(ph.duration_s, ph.lambda_per_min, tuple(float(mix.get(a, 0.0)) for a in APP_NAMES)))
    period_s = sum(p.duration_s for p in phases)
    for i, e in enumerate(doc.network_events or ()):
        if e.at_s >= period_s:
            raise ScenarioError(at_key(path, f"network_events[{i}].at_s", f"{e.at_s:g} is not within the cycle "
                                                                         f"(its period is {period_s:g} s)"))
    return Scenario(doc.name or path.stem, doc.description, tuple(phases), tuple(doc.network_events or ()),
                    str(path))
