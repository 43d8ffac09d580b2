"""`TestbedNet`: Mininet with the project's realisation rules. Every node and link gets the run's context
(record, MTU, backend, time dilation factor), every host a permanent ARP entry for every other, the wires must
all be ready before the switches start, and once they have started every shaped interface's qdiscs are checked
against the plan (dilated by the factor): a mismatch stops the run.
"""

from __future__ import annotations

import json
import time

from mininet.net import Mininet

from testbed import sh, shaping
from testbed.context import BuildContext, server_of
from testbed.errors import NetworkError
from testbed.links import WIRE_READY_S, PlainLink, ShapedIntf, WireLink


class ShapingMismatch(NetworkError):
    """An interface's qdiscs, or a wire, do not shape a link as the plan says."""


class TestbedNet(Mininet):
    """A Mininet network whose nodes and links are the project's recorded classes (see testbed/nodes.py,
    testbed/links.py); built from a `TestbedTopo` with `build=False`, then `build()`, `start()`, `stop()`."""

    __test__ = False  # not a pytest test class

    def __init__(self, topo, ctx: BuildContext, **params) -> None:
        self.ctx = ctx
        params.setdefault("link", PlainLink)
        params.setdefault("intf", ShapedIntf)
        params.setdefault("controller", None)
        Mininet.__init__(self, topo=topo, build=False, **params)

    # Every node and link gets the run's context: the Topo stays a pure description.
    # A node on another server is the project's class for remote nodes (testbed/remote.py).
    def addHost(self, name, cls=None, **params):  # noqa: N802 (Mininet's names)
        if params.get("on_server", "local") != "local":
            from testbed.remote import ServerNamedHost

            cls = ServerNamedHost
        return Mininet.addHost(self, name, cls, ctx=self.ctx, **params)

    def addSwitch(self, name, cls=None, **params):  # noqa: N802
        if params.get("on_server", "local") != "local":
            from testbed.remote import ServerRecordedOVS

            cls = ServerRecordedOVS
        return Mininet.addSwitch(self, name, cls, ctx=self.ctx, **params)

    def addController(self, name="c0", controller=None, **params):  # noqa: N802
        return Mininet.addController(self, name, controller, ctx=self.ctx, **params)

    def addLink(self, node1, node2, port1=None, port2=None, cls=None, **params):  # noqa: N802
        params.setdefault("ctx", self.ctx)
        params.setdefault("link_name", f"{node1}-{node2}")
        return Mininet.addLink(self, node1, node2, port1, port2, cls, **params)

    def wires(self) -> list[WireLink]:
        return [lk for lk in self.links if isinstance(lk, WireLink)]

    def build(self) -> None:
        """Builds hosts, switches and links (Mininet), installs static ARP between the hosts, then waits until
        every wire is forwarding."""
        Mininet.build(self)
        self.static_arp()
        deadline = time.monotonic() + WIRE_READY_S
        for wire in self.wires():
            wire.wait_ready(deadline)

    def static_arp(self) -> None:
        """Gives every host a permanent ARP entry for every other host (one `ip -batch` per namespace), instead
        of Mininet's `staticArp` (one `arp` command per pair through the hosts' shells)."""
        addresses = [(h, h.defaultIntf()) for h in self.hosts]
        known = [(h, intf.ip, intf.mac) for h, intf in addresses if intf is not None and intf.ip and intf.mac]
        for host, _, _ in known:
            host.set_static_arp([(ip, mac) for other, ip, mac in known if other is not host])

    def start(self) -> None:
        """Starts the controller and switches (Mininet), then checks that every link is shaped as planned."""
        Mininet.start(self)
        self.check_shaping()

    def stop(self) -> None:
        """Asks every wire to stop at once (each writes its statistics), then stops the network (Mininet)."""
        for wire in self.wires():
            wire.terminate_wire()
        Mininet.stop(self)

    def shaping_problems(self, only: set[str] | None = None) -> list[str]:
        """Returns a line per shaped interface whose qdiscs differ from the plan, and per wire not running; of the
        links named in `only` (default: every link), so that one link's check reads only its own servers."""
        shown: dict[tuple[str | None, str | None], dict[str, list[dict]]] = {}
        problems = []
        for link in self.links:
            if only is not None and getattr(link, "link_name", None) not in only:
                continue
            for intf in (link.intf1, link.intf2):
                if not isinstance(intf, ShapedIntf) or intf.shape is None:
                    continue
                where_key = (server_of(intf.node), intf.netns)
                if where_key not in shown:
                    out = sh.run(sh.in_netns(intf.netns, ["tc", "-j", "qdisc", "show"]), server=intf.client).stdout
                    by_dev: dict[str, list[dict]] = {}
                    for q in json.loads(out or "[]"):
                        by_dev.setdefault(q.get("dev", ""), []).append(q)
                    shown[where_key] = by_dev
                problem = shaping.qdisc_problem(shown[where_key].get(intf.name, []), intf.shape, self.ctx.backend,
                                                self.ctx.tdf)
                if problem:
                    where = f"{intf.node.name}:{intf.name}"
                    problems.append(f"{getattr(link, 'link_name', link)} at {where}: {problem}")
            if isinstance(link, WireLink) and (link.proc is None or link.proc.poll() is not None):
                problems.append(f"{link.link_name}: {link.wire_state()}")
        return problems

    def check_shaping(self) -> None:
        """Raises ShapingMismatch naming every link not shaped as planned."""
        problems = self.shaping_problems()
        if problems:
            raise ShapingMismatch("after the switches started, links are not shaped as planned:\n  "
                                  + "\n  ".join(problems))
