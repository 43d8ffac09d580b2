"""Network events applied to a running network (topologies/events.py has the file and its schedule): a link's
new delay, jitter, loss and rate, or the link taken down or brought back up, as Mininet's link config and
`link down/up` do it.

Rate: each end's TBF replaced (`ShapedIntf.config`). Delay, jitter, loss: the netem qdisc replaced (netem
backend) or the running wire reshaped (its config rewritten, SIGHUP, acknowledged). Down and up: the link's
switch-port ends set down or up (`ip link`), so a host's interface, addresses and routes stay as they are and
the link carries nothing until it is back; the ends' qdiscs are checked again when it comes back.

Across servers each end and wire is changed on its own server, through that server's agent; a crossing link's
wire takes the new delay less its underlay's share. `check_events` refuses, right after bring-up, an event its
link cannot take (a crossing link's delay below its underlay's); a reshape that fails puts the old shape back
(the ends' TBF, the wire's config) before it raises.

Under time dilation (the network's `tdf`, K) an event's shape is the topology's, in virtual time: the ends' TBF
and netem, and the wire, take it dilated (delays x K, rate / K) as at bring-up, and `EventPlayer` applies an event
due at `at_s` virtual seconds after the start K x `at_s` real seconds after it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from testbed import sh
from testbed.errors import NetworkError, PreflightError
from topologies import LinkShape
from topologies.events import DOWN, LinkEvent, NetworkEvents

if TYPE_CHECKING:
    from testbed.network import EmulatedNetwork


def _link(net: EmulatedNetwork, name: str):  # noqa: ANN202 (a Mininet link of testbed.links)
    if net.mn is None:
        raise NetworkError("the network is not up")
    for link in net.mn.links:
        if getattr(link, "link_name", None) == name:
            return link
    raise NetworkError(f"no link named {name!r} in the network")


def apply_link_event(net: EmulatedNetwork, event: LinkEvent) -> dict:
    """Applies one event to the running network now; returns what was done and how long it took (apply_ms)."""
    from testbed.links import ShapedIntf, WireLink  # Mininet's classes: imported with the network

    t = time.monotonic()
    link = _link(net, event.link)
    done: dict = {"link": event.link}
    if event.changes:
        old, shape = link.shape, event.shape_after(link.shape)
        if isinstance(link, WireLink):
            link.wire_shape(shape)  # a shape the wire cannot take (a crossing link below its underlay) changes nothing
        ends = [intf for intf in (link.intf1, link.intf2) if isinstance(intf, ShapedIntf) and intf.shape is not None]
        try:
            for intf in ends:
                intf.config(ctx=intf.ctx, shape=shape)  # TBF (and netem with that backend) replaced
            if isinstance(link, WireLink):
                link.reshape(shape)
        except NetworkError as exc:
            raise NetworkError(f"{exc}\n{_restore(link, ends, old)}") from exc
        link.shape = shape
        done.update(event.changes)
    if event.state:
        for intf in (link.intf1, link.intf2):
            if isinstance(intf, ShapedIntf) and intf.netns is None:  # a switch port, here or on its server
                sh.run(["ip", "link", "set", "dev", intf.name, event.state], server=intf.client)
        done["state"] = event.state
        if event.state != DOWN:
            problems = net.mn.shaping_problems({event.link})  # its ends' servers alone are asked
            if problems:
                raise NetworkError(f"{event.link} came back up not shaped as planned: " + "; ".join(problems))
    done["apply_ms"] = round((time.monotonic() - t) * 1000.0, 1)
    return done


def _restore(link, ends: list, old: LinkShape) -> str:  # noqa: ANN001 (a Mininet link of testbed.links)
    """Puts a link's old shape back after a failed reshape (its ends' TBF, its wire's config, which the wire reads
    at the SIGHUP it has not answered yet); returns a line saying so, or that it could not."""
    from testbed.links import WireLink

    try:
        for intf in ends:
            intf.config(ctx=intf.ctx, shape=old)
        if isinstance(link, WireLink):
            link.restore(old)
    except NetworkError as exc:
        return f"putting its old shape back failed too ({exc}): {link.link_name} may be left half-changed"
    return f"{link.link_name} is back to its old shape (its ends' TBF and its wire's config)"


def check_events(net: EmulatedNetwork, events: NetworkEvents) -> None:
    """Raises PreflightError (one line: file, event, link) for the first event the link it names cannot take, each
    link's shape worked out after each of its earlier events as `apply_link_event` will: a crossing link's new delay
    below its underlay's one way. For right after bring-up, before any traffic."""
    from testbed.links import WireLink

    shapes: dict[str, LinkShape] = {}
    for ev in events.events:  # in the order they apply
        link = _link(net, ev.link)
        base = shapes.get(ev.link, link.shape)
        if not ev.changes or base is None:
            continue
        shapes[ev.link] = shape = ev.shape_after(base)
        if isinstance(link, WireLink):
            try:
                link.wire_shape(shape)
            except NetworkError as exc:
                raise PreflightError(f"{events.source}: {ev.key} (at {ev.at_s:g} s): {exc}") from None


class EventPlayer(threading.Thread):
    """Applies events to a running network at their times after its start (`net --events`), in a thread of its
    own while the CLI or a wait runs; `applied` lists what it did (`t_s`: when, in virtual seconds after the
    start), `error` what stopped it."""

    def __init__(self, net: EmulatedNetwork, events: Sequence[LinkEvent], log: Callable[[str], None]) -> None:
        super().__init__(name="network-events", daemon=True)
        self.net, self.events, self.log = net, tuple(events), log
        self.applied: list[dict] = []
        self.error: Exception | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        t0, tdf = time.monotonic(), self.net.tdf
        try:
            for ev in self.events:
                if self._halt.wait(max(0.0, t0 + ev.at_s * tdf - time.monotonic())):
                    return
                done = {"t_s": round((time.monotonic() - t0) / tdf, 3), **apply_link_event(self.net, ev)}
                self.applied.append(done)
                self.log(f"[{done['t_s']:7.2f} s] network event: " + " ".join(f"{k}={v}" for k, v in done.items()
                                                                                if k != "t_s"))
        except Exception as exc:  # reported, and by `finish`: the network is left as it was
            self.error = exc
            self.log(f"network events stopped: {exc}")

    def finish(self) -> None:
        """Stops applying events (those not due yet are not applied) and waits for the thread."""
        self._halt.set()
        self.join()


def link_states(net: EmulatedNetwork, name: str) -> list[str]:
    """Returns the operational state (`UP`, `DOWN`, `LOWERLAYERDOWN`) of each end of a link, as the kernel of its
    server reports it."""
    from testbed.context import client_of  # with Mininet, as the links

    link = _link(net, name)
    states = []
    for intf in (link.intf1, link.intf2):
        out = sh.run(sh.in_netns(intf.netns, ["ip", "-o", "link", "show", "dev", intf.name]),
                     server=client_of(intf.node)).stdout
        states.append(out.split(" state ", 1)[1].split()[0] if " state " in out else "UNKNOWN")
    return states
