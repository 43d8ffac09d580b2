"""Links and interfaces of the emulated network, as Mininet classes (Mininet's `link.py` split: interfaces
configure themselves, links connect nodes).

`ShapedIntf` turns Mininet's TCIntf into the project's: offloads off, and on a shaped link's end TBF for the
rate (plus netem for delay, jitter and loss with the netem backend), every command checked. Being a TCIntf,
Open vSwitch's start re-applies it after add-port (which deletes a port's qdisc). `PlainLink` is a veth pair
made at the network's MTU straight into its namespaces and recorded first; `WireLink` puts the userspace wire
between the two ends where the kernel has no netem.
"""

from __future__ import annotations

import dataclasses
import json
import select
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from mininet.link import Link, TCIntf

from testbed import sh, shaping
from testbed.agent import AgentError
from testbed.context import BuildContext, client_of, netns_of, server_of
from testbed.errors import NetworkError
from testbed.multihost import python_on, share_dir
from testbed.record import Created
from testbed.wire import WireSpec
from topologies import LinkShape

OFFLOADS_OFF = ["tx", "off", "tso", "off", "gso", "off", "gro", "off"]
"""Userspace forwarding (OVS netdev, the wire) copies frames as they are: without this, TCP
checksums are left for an offload that never happens and frames exceed the MTU (GSO)."""
WIRE_READY_S = 20.0
WIRE_STOP_S = 5.0
WIRE_RESHAPE_S = 5.0


def said_reshaped(log: bytes, generation: int) -> bool:
    """Whether a wire's log says it took its config of `generation` (`reshaped <generation>`)."""
    return f"reshaped {generation}".encode() in (line.strip() for line in log.splitlines())


class ShapedIntf(TCIntf):
    """An interface of the network: offloads off, up; on a shaped link's end, its qdiscs as planned.

    params (from the link): ctx (BuildContext), shape (LinkShape or None: unshaped)."""

    def config(self, ctx: BuildContext | None = None, shape: LinkShape | None = None,  # type: ignore[override]
               **_params) -> dict:
        """Configures the interface; called again by Open vSwitch's start, which then only re-shapes it."""
        assert ctx is not None, "ShapedIntf needs the run's BuildContext (ctx=)"
        self.ctx, self.shape = ctx, shape
        if not getattr(self, "configured", False):
            self._first_config()
        if shape is not None:
            for cmd in self.shaping_commands():
                sh.run(sh.in_netns(self.netns, cmd), server=self.client)
        self.configured = True
        return {}

    @property
    def netns(self) -> str | None:
        return netns_of(self.node)

    @property
    def client(self):  # noqa: ANN201 (AgentClient | None)
        """The agent of the server the interface lives on (None: this machine)."""
        return client_of(self.node)

    def shaping_commands(self) -> list[list[str]]:
        """Returns the tc commands this end is shaped with (none when unshaped)."""
        if self.shape is None:
            return []
        return shaping.commands(self.name, self.shape, self.ctx.backend, self.ctx.mtu, self.ctx.tdf)

    def _first_config(self) -> None:
        if self.shape is not None:
            self.ctx.record.add(Created("qdisc", self.name, netns=self.netns, server=server_of(self.node)))
        if self.netns is None and self.client is not None:  # a switch port on another server
            sh.run(["sysctl", "-q", "-w", f"net.ipv6.conf.{self.name}.disable_ipv6=1"], server=self.client,
                   check=False)
        elif self.netns is None:  # a switch port: no IPv6 chatter (absent below IPv6's minimum MTU of 1280)
            ipv6_off = Path(f"/proc/sys/net/ipv6/conf/{self.name}/disable_ipv6")
            if ipv6_off.exists():
                ipv6_off.write_text("1\n")
        sh.run(sh.in_netns(self.netns, ["ethtool", "-K", self.name, *OFFLOADS_OFF]), server=self.client)
        sh.run(sh.in_netns(self.netns, ["ip", "link", "set", "dev", self.name, "up"]), server=self.client)

    def delete(self) -> None:
        """Deletes the interface (and so its veth peer) where it lives; gone already is fine."""
        sh.run(sh.in_netns(self.netns, ["ip", "link", "delete", "dev", self.name]), check=False, server=self.client)
        self.node.delIntf(self)
        self.link = None


def _veth(name: str, netns: str | None, mac: str | None, peer: str, peer_netns: str | None, peer_mac: str | None,
          mtu: int) -> list[str]:
    """Returns the `ip link add` making a veth pair at an MTU with each end already in its namespace."""
    def end(ifname: str, ns: str | None, addr: str | None) -> list[str]:
        return (["name", ifname, "mtu", str(mtu)] + (["netns", ns] if ns else [])
                + (["address", addr] if addr else []))
    return ["ip", "link", "add", *end(name, netns, mac), "type", "veth", "peer", *end(peer, peer_netns, peer_mac)]


class PlainLink(Link):
    """A veth pair between two nodes, made at the network's MTU in their namespaces, recorded first.

    params: ctx, link_name (the plan's), shape (the link's, or None); the rest as Mininet's Link."""

    def __init__(self, node1, node2, ctx: BuildContext, link_name: str, shape: LinkShape | None = None,
                 **params) -> None:
        self.ctx, self.link_name, self.shape = ctx, link_name, shape
        for key in ("params1", "params2"):
            params[key] = {**(params.get(key) or {}), "ctx": ctx, "shape": shape}
        params.pop("fast", None)
        Link.__init__(self, node1, node2, fast=True, **params)

    def makeIntfPair(self, intfname1, intfname2, addr1=None, addr2=None, node1=None, node2=None,  # noqa: N802
                     deleteIntfs=True):  # noqa: N803
        """Creates the veth pair with one checked `ip` call (Mininet runs it through a node's shell and
        cannot tell a failure); records the root-namespace end, or node1's end with its namespace."""
        ns1, ns2 = netns_of(node1), netns_of(node2)
        recorded = (intfname2, ns2) if ns1 is not None and ns2 is None else (intfname1, ns1)
        self.ctx.record.add(Created("link", recorded[0], netns=recorded[1], server=server_of(node1)))
        sh.run(_veth(intfname1, ns1, addr1, intfname2, ns2, addr2, self.ctx.mtu), server=client_of(node1))

    def delete(self) -> None:
        """Deletes the pair: one end takes the other with it."""
        if self.intf1 is not None:
            self.intf1.delete()
        if self.intf2 is not None:
            self.intf2.node.delIntf(self.intf2)
            self.intf2.link = None
        self.intf1 = self.intf2 = None

    def __str__(self) -> str:
        return f"{self.link_name}: {Link.__str__(self)}"


class WireLink(PlainLink):
    """node1 -- intf1 =veth= l<N>a ~ wire process ~ l<N>b =veth= intf2 -- node2, the inner ends in the wire
    namespace. The wire adds each frame's transmission time, delay, jitter and loss (seeded); TBF on intf1 and
    intf2 keeps the rate.

    params: index (the plan's link index, naming the inner ends), and those of PlainLink."""

    def __init__(self, node1, node2, ctx: BuildContext, link_name: str, shape: LinkShape, index: int,
                 **params) -> None:
        self.inner = (f"l{index}a", f"l{index}b")
        self.index = index
        self.owner = node1
        """The node whose server runs the wire (node1's)."""
        self.proc: subprocess.Popen | None = None
        self.generation = 0
        """Its config's generation (testbed.wire.WireSpec.generation): the last written."""
        PlainLink.__init__(self, node1, node2, ctx, link_name, shape, **params)
        self._spawn_wire()

    @property
    def client(self):  # noqa: ANN201 (AgentClient | None)
        """The agent of the server the wire runs on (node1's; None: this machine)."""
        return client_of(self.owner)

    def makeIntfPair(self, intfname1, intfname2, addr1=None, addr2=None, node1=None, node2=None,  # noqa: N802
                     deleteIntfs=True):  # noqa: N803
        wire_ns = self.ctx.wire_netns
        for outer, addr, node, inner in ((intfname1, addr1, node1, self.inner[0]),
                                         (intfname2, addr2, node2, self.inner[1])):
            # deleting either end deletes the pair
            self.ctx.record.add(Created("link", inner, netns=wire_ns, server=server_of(node1)))
            sh.run(_veth(inner, wire_ns, None, outer, netns_of(node), addr, self.ctx.mtu), server=client_of(node1))
        self._inner_up(node1)

    def _inner_up(self, node1) -> None:
        wire_ns = self.ctx.wire_netns
        for inner in self.inner:
            sh.run(sh.in_netns(wire_ns, ["ethtool", "-K", inner, *OFFLOADS_OFF]), server=client_of(node1))
        sh.ip_batch([f"link set {inner} up" for inner in self.inner], netns=wire_ns, server=client_of(node1))

    @property
    def helper_name(self) -> str:
        return f"wire-{self.link_name}"

    @property
    def files_dir(self) -> Path:
        """Where the wire's config, log and statistics are: the run dir, or its server's share of it there."""
        server = server_of(self.owner)
        return self.ctx.run_dir if server is None else share_dir(self.ctx.run_dir, server)

    @property
    def config_path(self) -> Path:
        return self.files_dir / f"{self.helper_name}.json"

    def wire_shape(self, shape: LinkShape) -> LinkShape:
        """Returns the shape the wire itself is given (the link's)."""
        return shape

    def _write_config(self, shape: LinkShape) -> None:
        """Writes the wire's config whole (a new file renamed over the old: the wire never reads half of it); on
        another server through its agent, at the same path."""
        spec = WireSpec(self.link_name, *self.inner, self.wire_shape(shape), seed=self.ctx.seed * 1000 + self.index,
                        tdf=self.ctx.tdf, generation=self.generation)
        if self.client is not None:
            self.client.write(str(self.config_path), (json.dumps([asdict(spec)], indent=1) + "\n").encode())
            return
        tmp = self.config_path.with_suffix(".json.new")
        tmp.write_text(json.dumps([asdict(spec)], indent=1) + "\n")
        tmp.replace(self.config_path)

    def _spawn_wire(self) -> None:
        assert self.shape is not None
        self._write_config(self.shape)
        cfg = self.config_path
        server = server_of(self.owner)
        python = sys.executable if server is None else python_on(self.ctx.servers[server].repo)
        argv = ["ip", "netns", "exec", self.ctx.wire_netns, python, "-m", "testbed.wire", str(cfg),
                str(self.files_dir / f"{self.helper_name}.stats.json")]
        self.proc = self.ctx.spawn(self.helper_name, argv, self.files_dir / f"{self.helper_name}.log",
                                   subprocess.PIPE, server=server)

    def wait_ready(self, deadline: float) -> None:
        """Returns once the wire has said `ready` (on another server: in its log, read through the agent); raises
        NetworkError (with its log) if it does not."""
        assert self.proc is not None
        log = self.log_path
        if self.proc.stdout is None:  # spawned through a server's agent: its stdout is the log
            client = self.client
            assert client is not None
            text = ""
            while time.monotonic() < deadline and self.proc.poll() is None:
                text = client.read(str(log)).decode(errors="replace")
                if "ready" in text.split():
                    return
                time.sleep(0.05)
            tail = "\n".join(text.splitlines()[-15:])
            raise NetworkError(f"{self.helper_name} did not start on server {server_of(self.owner)} (exit "
                               f"{self.proc.poll()}); see {log} there:\n{tail}")
        ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        line = self.proc.stdout.readline().decode().strip() if ready else ""
        if line != "ready":
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:]) if log.exists() else "(no log)"
            raise NetworkError(f"{self.helper_name} did not start (exit {self.proc.poll()}); see {log}:\n{tail}")

    @property
    def log_path(self) -> Path:
        """The wire's log (on another server: there, at this path); its stdout too on another server."""
        return self.files_dir / f"{self.helper_name}.log"

    def reshape(self, shape: LinkShape) -> None:
        """Gives the running wire a new delay, jitter, loss and rate (its config rewritten as the next generation,
        then SIGHUP) and returns once it says `reshaped <generation>` (on another server: in its log there, read
        through the agent); an answer to an earlier config, late, does not count. Raises NetworkError naming the
        wire (its server and its log's tail) if it does not within WIRE_RESHAPE_S."""
        assert self.proc is not None
        self.generation += 1
        if self.proc.stdout is None:  # spawned through a server's agent
            self._reshape_there(shape)
            self.shape = shape
            return
        self._write_config(shape)
        self.proc.send_signal(signal.SIGHUP)
        deadline, said = time.monotonic() + WIRE_RESHAPE_S, ""
        while said != f"reshaped {self.generation}":
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                raise NetworkError(f"{self.helper_name} did not take its new shape within {WIRE_RESHAPE_S:g} s "
                                   f"(said {said!r}, exit {self.proc.poll()}); see {self.log_path}")
            said = self.proc.stdout.readline().decode().strip()
            if not said:
                raise NetworkError(f"{self.helper_name} did not take its new shape: it exited with "
                                   f"{self.proc.wait()}; see {self.log_path}")
        self.shape = shape

    def _reshape_there(self, shape: LinkShape) -> None:
        """Reshapes the wire on its server through the agent: config written there, SIGHUP sent by pid and start
        ticks, its log polled until it says `reshaped <generation>`."""
        client, log = self.client, str(self.log_path)
        assert client is not None and self.proc is not None
        pid, ticks = self.proc.pid, getattr(self.proc, "start_ticks", None)
        try:
            self._write_config(shape)
            if ticks is None or not client.kill(pid, ticks, "SIGHUP"):
                why = f"is not running (pid {pid} there)"
            else:
                why = self._await_reshaped(log)
        except AgentError as exc:
            why = f"could not be reached: {exc}"
        if why is None:
            return
        try:
            tail = "\n".join(client.read_all(log).decode(errors="replace").splitlines()[-15:])
        except AgentError:
            tail = "(its log could not be read)"
        raise NetworkError(f"{self.helper_name} on server {server_of(self.owner)} did not take its new shape: it "
                           f"{why}; see {log} there:\n{tail}")

    def restore(self, shape: LinkShape) -> None:
        """Puts the wire's config back to `shape` after a reshape that failed and signals it once more, so that it
        runs that shape whether it had not read the new config yet (a stopped wire: its pending signals are one
        reload), had read it and not yet said so, or took it late. Raises NetworkError if the config cannot be
        written."""
        self.generation += 1  # no one waits for its answer; a late one to the failed reshape still differs
        self._write_config(shape)
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.client is None:
            self.proc.send_signal(signal.SIGHUP)
            return
        ticks = getattr(self.proc, "start_ticks", None)
        if ticks is not None:
            self.client.kill(self.proc.pid, ticks, "SIGHUP")

    def _await_reshaped(self, log: str) -> str | None:
        """Returns None once the wire's log there says `reshaped <generation>`, else why not (it exited, or
        WIRE_RESHAPE_S passed)."""
        assert self.client is not None and self.proc is not None
        deadline = time.monotonic() + WIRE_RESHAPE_S
        while not said_reshaped(self.client.read_all(log), self.generation):
            if self.proc.poll() is not None:
                return f"exited with {self.proc.poll()}"
            if time.monotonic() > deadline:
                return f"did not say reshaped within {WIRE_RESHAPE_S:g} s"
            time.sleep(0.05)
        return None

    def wire_state(self) -> str:
        if self.proc is None:
            return "no wire"
        rc = self.proc.poll()
        return f"wire pid {self.proc.pid} " + ("running" if rc is None else f"EXITED with {rc}")

    def status(self) -> str:
        """Returns the ends' state and the wire's (the CLI's `links`)."""
        return f"{Link.status(self)} {self.wire_state()}"

    def terminate_wire(self) -> None:
        """Asks the wire to stop (it writes its statistics); `stop` waits for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """Stops the wire, then deletes the veths."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(WIRE_STOP_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.delete()

    def delete(self) -> None:
        sh.ip_batch_force([f"link delete dev {inner}" for inner in self.inner], netns=self.ctx.wire_netns,
                          server=self.client)
        for intf in (self.intf1, self.intf2):
            if intf is not None:
                intf.node.delIntf(intf)
                intf.link = None
        self.intf1 = self.intf2 = None


class CrossServerLink(WireLink):
    """A topology link between sites on two servers: on node1's server (a) the switch port intf1 =veth= l<N>a ~
    wire ~ vx<VNI> in a's wire namespace, the VXLAN device over a's underlay; on node2's server (b) the VXLAN
    device itself is the switch port intf2. The wire adds the link's delay less the underlay's one way; TBF on
    intf1 gives the a->b rate, TBF on b's VXLAN port the b->a rate (re-applied after add-port, as for veths).

    params: those of WireLink; the tunnel's lines and the wire's delay are the context's (`ctx.crossing`)."""

    def __init__(self, node1, node2, ctx: BuildContext, link_name: str, shape: LinkShape, index: int,
                 **params) -> None:
        self.cross = ctx.crossing[link_name]
        self.vx_line_a = self.cross.lines[getattr(node1, "server_name", "local")]
        self.vx_line_b = self.cross.lines[getattr(node2, "server_name", "local")]
        self.vx_dev = self.vx_line_a.split()[2]
        self.underlay_ms = shape.delay_ms - self.cross.wire_delay_ms
        """The underlay's share of the link's one-way delay (virtual ms): what the wire never adds, at any shape."""
        WireLink.__init__(self, node1, node2, ctx, link_name, shape, index, **params)
        self.inner = (f"l{index}a", self.vx_dev)

    def makeIntfPair(self, intfname1, intfname2, addr1=None, addr2=None, node1=None, node2=None,  # noqa: N802
                     deleteIntfs=True):  # noqa: N803
        wire_ns, mtu = self.ctx.wire_netns, str(self.ctx.mtu)
        self.inner = (f"l{self.index}a", self.vx_dev)
        a, b = client_of(node1), client_of(node2)
        rec = self.ctx.record
        rec.add(Created("link", self.inner[0], netns=wire_ns, server=server_of(node1)))
        sh.run(_veth(self.inner[0], wire_ns, None, intfname1, None, addr1, self.ctx.mtu), server=a)
        # a's VXLAN device is made on the underlay in the root namespace, then moved into the wire's namespace
        rec.add(Created("link", self.vx_dev, server=server_of(node1)))
        rec.add(Created("link", self.vx_dev, netns=wire_ns, server=server_of(node1)))
        sh.ip_batch([self.vx_line_a, f"link set {self.vx_dev} mtu {mtu} netns {wire_ns}"], server=a)
        # b's VXLAN device, named as the plan's port, is b's switch port
        rec.add(Created("link", intfname2, server=server_of(node2)))
        sh.ip_batch([self.vx_line_b.replace(f"link add {self.vx_dev} ", f"link add {intfname2} ", 1),
                     f"link set {intfname2} mtu {mtu}"], server=b)
        self._inner_up(node1)

    def wire_shape(self, shape: LinkShape) -> LinkShape:
        """The link's shape with the delay the wire adds: the link's less the underlay's one way (a network event's
        new delay too); raises NetworkError for a delay shorter than the underlay's."""
        delay_ms = round(shape.delay_ms - self.underlay_ms, 9)
        if delay_ms < 0:
            raise NetworkError(f"link {self.link_name}: {shape.delay_ms:g} ms is shorter than the underlay between "
                               f"its servers ({self.underlay_ms:.3f} ms one way); keep its delay above that")
        return dataclasses.replace(shape, delay_ms=delay_ms)

    def delete(self) -> None:
        if self.intf2 is not None:
            sh.run(["ip", "link", "delete", "dev", self.intf2.name], check=False, server=client_of(self.intf2.node))
        WireLink.delete(self)
