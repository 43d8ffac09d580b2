"""The kernel counters of a running network's switch ports, on every server it spans: what a live run samples each
virtual second into `port_counters.jsonl` (the controller's OpenFlow port statistics are another thing:
testbed/controller/portstats.py, `port_stats.jsonl`).

Every switch port is an interface in its server's root namespace (a veth end or, at the far end of a link between
servers, the VXLAN device itself) whose counters are files under /sys/class/net/<ifname>/statistics. This machine's
are read from there; another server's all at once, by one command through its agent per sample (`grep -H` of every
file), timed at the request's midpoint on the driver's clock. A port whose counters cannot be read (its interface
gone) is left out of the sample.

The userspace datapath keeps no drop counters of its own (its ports' read -1): what the packet sockets
ovs-vswitchd reads its ports through drop with their receive buffers full is counted here (`ovs_socket_drops`);
what its one send socket fails to send is lost uncounted. A live run widens both kinds of buffer
(testbed/ovssock.py): on the runs measured since, no drop during the traffic.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from testbed import sh
from testbed.errors import CommandError, NetworkError
from testbed.placement import LOCAL
from testbed.plan import NetworkPlan
from topologies import wallclock

if TYPE_CHECKING:
    from testbed.agent import AgentClient

PORT_COUNTERS_FILE = "port_counters.jsonl"
"""A live run's samples: one line per virtual second, {"t_ms", "ports": [PortSample...], "unread"?}."""
COUNTERS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")
SYS_NET = "/sys/class/net"
READ_TIMEOUT_S = 10.0
OVS_USER = re.compile(r'\("ovs-vswitchd",pid=(\d+),fd=(\d+)\)')
"""ovs-vswitchd's entry in the `users:(...)` of an `ss -p` line."""
SWITCH_DROPS_EVENT = "switch-socket-drops"
"""The live run's event (events.jsonl) giving `frames`: what ovs-vswitchd's port sockets lost during the traffic."""


@dataclass(frozen=True)
class SwitchPort:
    """A switch port of the plan: the link it belongs to, its switch (site), number, interface and server."""

    link: str
    switch: str
    port_no: int
    ifname: str
    server: str = LOCAL


@dataclass(frozen=True)
class PortSample:
    """A switch port's kernel counters at one moment (t_s: the driver's epoch seconds) on the server it lives on."""

    link: str
    switch: str
    port_no: int
    ifname: str
    t_s: float
    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int
    server: str = LOCAL
    """The server of the port's switch (`local`: the driver)."""


@dataclass
class PortReading:
    """One sample of every switch port: those read, in the plan's order, and the servers that did not answer."""

    samples: list[PortSample] = field(default_factory=list)
    unread: dict[str, str] = field(default_factory=dict)
    """Server -> why its ports are missing from `samples` (its agent failed)."""


def counters_line(since_t0_s: float, reading: PortReading) -> dict:
    """Returns a line of port_counters.jsonl: `t_ms` (ms since the run's t0, virtual), `ports` (every port read, each
    naming its server) and, only if some server did not answer, `unread` ({server: why})."""
    line = {"t_ms": round(since_t0_s * 1000.0, 1), "ports": [asdict(p) for p in reading.samples]}
    return {**line, "unread": dict(reading.unread)} if reading.unread else line


def switch_ports(plan: NetworkPlan) -> list[SwitchPort]:
    """Returns every switch port of the plan in link order (both ends of a trunk; the switch end of other links)."""
    ports = []
    for link in plan.links:
        for end in (link.a, link.b):
            if end.switch is not None and end.netns is None:
                ports.append(SwitchPort(link.name, end.switch, end.port_no or 0, end.ifname,
                                        plan.switch(end.switch).server))
    return ports


def counter_path(ifname: str, counter: str) -> str:
    return f"{SYS_NET}/{ifname}/statistics/{counter}"


def parse_counters(text: str) -> dict[tuple[str, str], int]:
    """Returns {(ifname, counter): value} from `grep -H . FILE...` over counter files (`PATH:VALUE` per line)."""
    out = {}
    for line in text.splitlines():
        path, _, value = line.rpartition(":")
        parts = path.split("/")
        if len(parts) >= 3 and parts[-2] == "statistics" and value.strip().isdigit():
            out[(parts[-3], parts[-1])] = int(value)
    return out


def samples_of(ports: Sequence[SwitchPort], values: Mapping[tuple[str, str], int], t_s: float) -> list[PortSample]:
    """Returns the samples of the ports whose every counter is in `values`."""
    out = []
    for p in ports:
        got = [values.get((p.ifname, c)) for c in COUNTERS]
        if None not in got:
            out.append(PortSample(p.link, p.switch, p.port_no, p.ifname, t_s, *got, server=p.server))  # type: ignore[arg-type]
    return out


def read_here(ports: Sequence[SwitchPort]) -> list[PortSample]:
    """Returns the counters of ports on this machine, each timed as it is read."""
    out = []
    for p in ports:
        try:
            values = {(p.ifname, c): int(Path(counter_path(p.ifname, c)).read_text()) for c in COUNTERS}
        except (OSError, ValueError):
            continue  # the interface is gone
        out += samples_of([p], values, wallclock.time_s())
    return out


def read_on(client: AgentClient, ports: Sequence[SwitchPort]) -> list[PortSample]:
    """Returns the counters of ports on another server: one `grep -H` of all their files through its agent, timed at
    the request's midpoint; raises AgentError (naming the server) if it does not answer."""
    if not ports:
        return []
    files = [counter_path(p.ifname, c) for p in ports for c in COUNTERS]
    t0 = wallclock.time_s()
    done = client.run(["grep", "-H", ".", *files], check=False, timeout_s=READ_TIMEOUT_S)  # rc 2: a file gone
    t_s = (t0 + wallclock.time_s()) / 2.0
    return samples_of(ports, parse_counters(done.stdout), t_s)


def read_ports(plan: NetworkPlan, clients: Mapping[str, AgentClient]) -> PortReading:
    """Returns every switch port's counters now: this machine's read here, each other server's by one request to its
    agent (`clients`); a server that does not answer is named in `unread`."""
    ports = switch_ports(plan)
    by_server: dict[str, list[SwitchPort]] = {}
    for p in ports:
        by_server.setdefault(p.server, []).append(p)
    reading, got = PortReading(), {}
    for server, theirs in by_server.items():
        if server == LOCAL:
            samples = read_here(theirs)
        elif server not in clients:
            reading.unread[server] = "no agent for this server"
            continue
        else:
            try:
                samples = read_on(clients[server], theirs)
            except NetworkError as e:  # AgentError (the agent gone), CommandError (timed out there)
                reading.unread[server] = str(e)
                continue
        got.update({(s.link, s.switch): s for s in samples})
    reading.samples = [got[(p.link, p.switch)] for p in ports if (p.link, p.switch) in got]
    return reading


@dataclass(frozen=True)
class OvsSocket:
    """One packet socket ovs-vswitchd reads a switch port through (a line of `ss -0 -m -p -n -O`)."""

    ifname: str
    pid: int
    fd: int
    drops: int
    """Frames it lost with its receive buffer full so far (skmem d)."""


def ovs_port_sockets(ports: set[str] | None = None, ss_output: str | None = None) -> list[OvsSocket] | None:
    """Returns the packet sockets this machine's ovs-vswitchd reads ports through (`ports`: only those on these
    interfaces, a run's own), or None when ss cannot be run. `ss_output`: that command's output (tests)."""
    if ss_output is None:
        try:
            done = sh.run(["ss", "-0", "-m", "-p", "-n", "-O"], check=False, timeout_s=READ_TIMEOUT_S)
        except CommandError:  # no ss, or it hung
            return None
        if done.returncode != 0:
            return None
        ss_output = done.stdout
    out = []
    for line in ss_output.splitlines():
        if '"ovs-vswitchd"' not in line or "skmem:(" not in line:
            continue
        fields = line.split()  # p_raw, Recv-Q, Send-Q, *:<interface>, ...
        skmem = line.split("skmem:(", 1)[1].split(")", 1)[0].split(",")
        drops = [int(x[1:]) for x in skmem if x.startswith("d") and x[1:].isdigit()]
        owner = OVS_USER.search(line)  # ovs-vswitchd's own entry, should another process share the socket
        ifname = fields[3].removeprefix("*:") if len(fields) > 3 else ""
        if drops and owner and (ports is None or ifname in ports):
            out.append(OvsSocket(ifname, int(owner[1]), int(owner[2]), drops[0]))
    return out


def ovs_socket_drops(ports: set[str] | None = None, ss_output: str | None = None) -> dict[str, int] | None:
    """Returns, per packet socket this machine's ovs-vswitchd reads a port through (named by its interface and
    descriptor), the frames it has lost so far with its receive buffer full (`ss -0 -m -p -O`'s skmem d), or None
    when no ovs-vswitchd socket is there (no userspace datapath, or no ss). `ports`: only the sockets of these
    interfaces (a run's own). `ss_output`: that command's output (tests)."""
    sockets = ovs_port_sockets(ports, ss_output)
    return {f"*:{s.ifname} fd={s.fd}": s.drops for s in sockets} if sockets else None


def run_ports(plan: NetworkPlan) -> set[str]:
    """Returns the interfaces of this machine's switch ports of the plan."""
    return {p.ifname for p in switch_ports(plan) if p.server == LOCAL}


def drops_between(before: dict[str, int], after: dict[str, int]) -> int:
    """Returns the frames lost between two `ovs_socket_drops` readings: per socket, what it lost since the first
    (all it lost, for a socket opened since; a socket closed since takes its losses with it)."""
    return sum(max(0, n - before.get(key, 0)) for key, n in after.items())


DropsStart = tuple[set[str], dict[str, int]]
"""A run's switch ports and their sockets' drops so far (`drops_start`)."""


def drops_start(plan: NetworkPlan) -> DropsStart | None:
    """Returns this machine's switch ports of the plan and their sockets' drops so far (`ovs_socket_drops`), or None
    without ovs-vswitchd sockets: what `drops_since` counts from."""
    ports = run_ports(plan)
    drops = ovs_socket_drops(ports)
    return None if drops is None else (ports, drops)


def drops_since(start: DropsStart) -> int | None:
    """Returns the frames the run's ports' sockets lost since `drops_start` (None: they can no longer be read)."""
    drops = ovs_socket_drops(start[0])
    return None if drops is None else drops_between(start[1], drops)


@dataclass
class RunDrops:
    """What a run's switch-socket drops count from: `start` (a `drops_start` reading of `plan`'s ports, None
    without ovs-vswitchd sockets), read again once the run's clock passes `from_s` (virtual epoch s: the end of a
    `--tdf auto` pilot's warm-up, which its verdict leaves out; None: never). The second reading runs beside the
    run's loop (`ss` may take up to READ_TIMEOUT_S), and `lost` waits for it; a failed one keeps the first (one
    that raised says so on stderr, the run's log)."""

    plan: NetworkPlan
    start: DropsStart | None
    from_s: float | None = None
    _reading: threading.Thread | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def of(cls, plan: NetworkPlan, ovs_sockets: bool, from_s: float | None = None) -> RunDrops:
        """Returns the run's count, read now where ovs-vswitchd reads its ports through sockets."""
        return cls(plan, drops_start(plan) if ovs_sockets else None, from_s)

    def at(self, now_s: float, read: Callable[[], DropsStart | None] | None = None) -> None:
        """Called as the run's clock reads `now_s`: starts reading the start again (`read`, else `drops_start`) the
        first time it is past `from_s`, and returns at once."""
        if self.start is not None and self.from_s is not None and now_s >= self.from_s:
            self.from_s = None
            reader = read if read is not None else (lambda: drops_start(self.plan))

            def reread() -> None:
                try:
                    self.start = reader() or self.start
                except Exception as exc:  # ss's output not as expected: the first reading stands
                    print(f"switch drops: second reading failed ({type(exc).__name__}: {exc}); counting from the "
                          "run's start", file=sys.stderr, flush=True)

            self._reading = threading.Thread(target=reread, name="switch-drops", daemon=True)
            self._reading.start()

    def settled(self) -> None:
        """Waits for a second reading under way (`at`)."""
        if self._reading is not None:
            self._reading.join()
            self._reading = None

    def lost(self) -> int | None:
        """Returns the frames lost since the start (None: no sockets, or they can no longer be read)."""
        self.settled()
        return None if self.start is None else drops_since(self.start)
