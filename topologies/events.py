"""Network events files: link changes at given times (delay, jitter, rate, loss; down and up), as radio and
backhaul conditions change in a real access network. Loaded strictly (`NetworkEventsFile`, published as
docs/schemas/network-events.schema.json), checked against a topology, and turned into the network's states
over time (`network_states`), which the simulator and the live schedulers decide with and the testbed applies.

A link is named as the testbed names it: `A-B` for the topology link between sites A and B (either order),
`radio-ANT` for an antenna's radio access. In a state's topology a link that is down has an infinite delay.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from topologies.loader import Bandwidth
from topologies.model import Link, LinkShape, Topology
from topologies.strict import NonNegative, Percent, StrictModel, load_yaml, validate

SCHEMA_FILE = "network-events.schema.json"
"""Its JSON Schema, under docs/schemas/."""
SHAPE_KEYS = ("delay_ms", "delay_dev_ms", "bw_mbps", "loss_pct")
"""The figures of a link an event may change (LinkShape's)."""
DOWN, UP = "down", "up"
RADIO_PREFIX = "radio-"


class EventsError(ValueError):
    """An events file is malformed or names what its topology lacks; the message names file, key and value."""


class EventEntry(StrictModel):
    """One change of one link at one time; figures left out keep their value."""

    at_s: NonNegative = Field(description="when, in seconds after the run's t0 (virtual time)")
    link: str = Field(description="the link: `A-B` (a topology link, either order) or `radio-ANTENNA`")
    delay_ms: NonNegative | None = Field(None, description="new one-way delay in milliseconds")
    delay_dev_ms: NonNegative | None = Field(None, description="new standard deviation of the one-way delay (ms)")
    bw_mbps: Bandwidth | None = Field(None, description="new rate in Mbit/s")
    loss_pct: Percent | None = Field(None, description="new loss probability in percent, per direction")
    state: Literal["down", "up"] | None = Field(None, description="take the link down, or bring it back up")


class NetworkEventsFile(StrictModel):
    """A network events file: the link changes of one scenario, for any run on its topology."""

    description: str = ""
    events: list[EventEntry] = Field(min_length=1)


@dataclass(frozen=True)
class LinkEvent:
    """One change of one link: the figures it sets (None: unchanged) and the state it sets (None: unchanged)."""

    at_s: float
    link: str
    """The testbed's name of the link (`A-B` as the topology file orders A and B, or `radio-ANT`)."""
    key: str
    """Where the event is in its file (`events[3]`), for messages."""
    delay_ms: float | None = None
    delay_dev_ms: float | None = None
    bw_mbps: float | None = None
    loss_pct: float | None = None
    state: str | None = None

    @property
    def changes(self) -> dict[str, float]:
        """Returns {figure: new value} of the figures this event sets."""
        return {k: getattr(self, k) for k in SHAPE_KEYS if getattr(self, k) is not None}

    def shape_after(self, shape: LinkShape) -> LinkShape:
        """Returns a link's shape once this event has applied to it."""
        return dataclasses.replace(shape, **self.changes)

    def describe(self) -> dict:
        """Returns the event as a plain record (events.jsonl, summary.json)."""
        return {"at_s": self.at_s, "link": self.link, **self.changes,
                **({"state": self.state} if self.state else {})}


@dataclass(frozen=True)
class NetworkEvents:
    """A loaded events file, its events in the order they apply (by time, then file order)."""

    source: str
    description: str
    events: tuple[LinkEvent, ...]


@dataclass(frozen=True)
class NetworkState:
    """The network from `at_s` until the next state: every link's shape, the links that are down, and the
    topology with those shapes (a link that is down has an infinite delay there; paths keep their links)."""

    at_s: float
    shapes: dict[str, LinkShape]
    down: frozenset[str]
    topology: Topology
    events: tuple[LinkEvent, ...] = ()
    """The events that made this state (none for the initial one)."""


def link_shapes(topo: Topology) -> dict[str, LinkShape]:
    """Returns the shape of every link an event may name, by its testbed name (radio links first)."""
    shapes = {f"{RADIO_PREFIX}{a.name}": a.radio for a in topo.antennas if a.radio is not None}
    shapes.update({f"{lk.a}-{lk.b}": lk.shape for lk in topo.links})
    return shapes


def _canonical(name: str, topo: Topology) -> str | None:
    """Returns the testbed name of a link named either way round, or None when the topology has no such link."""
    if name.startswith(RADIO_PREFIX) and any(a.name == name[len(RADIO_PREFIX):] for a in topo.antennas):
        return name
    for lk in topo.links:
        if name in (f"{lk.a}-{lk.b}", f"{lk.b}-{lk.a}"):
            return f"{lk.a}-{lk.b}"
    return None


def load_events(path: str | Path, topo: Topology) -> NetworkEvents:
    """Returns the events of a file checked against a topology; raises EventsError (one line: file, key, value)
    for a malformed file, an unknown link, an event that changes nothing, a link taken down twice or brought
    up while up."""
    path = Path(path)
    doc: NetworkEventsFile = validate(NetworkEventsFile, load_yaml(path, EventsError), path, EventsError)
    return events_of(doc, str(path), topo)


def events_of(doc: NetworkEventsFile, path: str, topo: Topology) -> NetworkEvents:
    """Returns the events of a validated document checked against a topology (as `load_events`; `path` names
    the document in messages)."""
    events = []
    for i, e in enumerate(doc.events):
        key = f"events[{i}]"
        link = _canonical(e.link, topo)
        if link is None:
            raise EventsError(f"{path}: {key}.link: {e.link!r} is no link of {topo.name}; links: "
                              + ", ".join(link_shapes(topo)))
        values = e.model_dump(include=set(SHAPE_KEYS) | {"state"})
        if all(v is None for v in values.values()):
            raise EventsError(f"{path}: {key}: changes nothing (give {', '.join(SHAPE_KEYS)} or state)")
        events.append(LinkEvent(at_s=e.at_s, link=link, key=key, **values))
    ordered = tuple(sorted(events, key=lambda ev: ev.at_s))  # stable: file order at equal times
    down: set[str] = set()
    for ev in ordered:
        if ev.state == DOWN and ev.link in down:
            raise EventsError(f"{path}: {ev.key}.state: {ev.link} is down already at {ev.at_s:g} s")
        if ev.state == UP and ev.link not in down:
            raise EventsError(f"{path}: {ev.key}.state: {ev.link} is up at {ev.at_s:g} s (never taken down)")
        if ev.state == DOWN:
            down.add(ev.link)
        elif ev.state == UP:
            down.discard(ev.link)
    return NetworkEvents(source=path, description=doc.description, events=ordered)


def network_states(topo: Topology, events: NetworkEvents | None) -> tuple[NetworkState, ...]:
    """Returns the network's states in time order: the topology's own at 0, then one per distinct event time."""
    shapes = link_shapes(topo)
    down: frozenset[str] = frozenset()
    states = [NetworkState(0.0, shapes, down, topo)]
    for ev in events.events if events is not None else ():
        shapes = {**shapes, ev.link: ev.shape_after(shapes[ev.link])}
        if ev.state:
            down = down | {ev.link} if ev.state == DOWN else down - {ev.link}
        same_time = states[-1].at_s == ev.at_s
        done = (states[-1].events if same_time else ()) + (ev,)
        state = NetworkState(ev.at_s, shapes, down, _topology_with(topo, shapes, down), done)
        if same_time:  # events at one time make one state
            states.pop()
        states.append(state)
    return tuple(states)


def _topology_with(topo: Topology, shapes: dict[str, LinkShape], down: frozenset[str]) -> Topology:
    """Returns the topology with these link shapes, links that are down at an infinite delay; every path keeps
    its links (the network's forwarding does not reroute)."""
    def effective(name: str) -> LinkShape:
        shape = shapes[name]
        return dataclasses.replace(shape, delay_ms=math.inf) if name in down else shape

    sites = tuple(dataclasses.replace(s, radio=effective(f"{RADIO_PREFIX}{s.name}")) if s.is_antenna else s
                  for s in topo.sites)
    new_link = {lk: Link(lk.a, lk.b, effective(f"{lk.a}-{lk.b}")) for lk in topo.links}
    return dataclasses.replace(topo, sites=sites, links=tuple(new_link.values()), routes=topo.routes.with_links(new_link))
