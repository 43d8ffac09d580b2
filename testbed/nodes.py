"""The network's nodes as Mininet classes (Mininet's `node.py` split): hosts in named namespaces, Open
vSwitch and Linux-bridge switches, the remote os-ken controller. Each records what it makes before it
exists and raises when a command fails.

A Mininet host is a shell in an anonymous namespace; `NamedHost` binds it to the plan's name (`ip netns
attach`), so `ip netns exec`, the record and `clean` reach it. `RemoteController.stop` leaves its shell
running; `StoppableRemote` ends it.

Every host's TCP is set for the run's time dilation factor K (K = 1 included, docs/network.md#time-dilation):
congestion control reno (BBR and CUBIC follow real time), the minimum RTO, SACK compression and `tcp_retries2`
x K, delayed ACKs off on the subnet route (`quickack 1`), initial windows wide enough for a frame in one flight,
and a permanent ARP entry for every other host (`static_arp_lines`: neighbour discovery's 1 s retransmit timer
is real time and fails on a path whose round trip exceeds 3 s).
"""

from __future__ import annotations

import socket
from pathlib import Path

from mininet.node import Host, OVSSwitch, RemoteController, Switch

from testbed import sh
from testbed.context import BuildContext, run_checked
from testbed.errors import NetworkError
from testbed.record import Created
from testbed.stp import FORWARD_DELAY_S, HELLO_S, MAX_AGE_S, STATE_NAMES, StpPlan

TCP_INIT_WINDOW_SEGMENTS = 64
"""Initial congestion and receive windows of the hosts' routes (Linux: 10): with slow start after idle off,
a frame up to 64 segments (~570 kB at MTU 9000) leaves in one flight, as the simulator's transmission
model assumes (bytes / rate), instead of taking extra round trips on long paths."""
TCP_RMEM_BYTES = (4096, 1 << 20, 32 << 20)
"""Receive buffer (min, initial, max) of the hosts' sockets. Linux's initial 128 kB opens a new connection with a
window of about 64 kB, so a larger frame waited one more round trip on a connection that had not yet carried one
(at lambda 60, load-balancing, K 16: 62 of 3891 frames over 60 kB sent to a cluster arrived a round trip later
than in the simulator, 70-160 virtual ms, none of 25849 smaller ones); 1 MB opens it as wide as `initrwnd`."""
HOST_SYSCTLS = ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1",
                "net.ipv4.tcp_slow_start_after_idle=0", "net.ipv4.tcp_rmem=" + " ".join(map(str, TCP_RMEM_BYTES))]
TCP_CONGESTION_CONTROL = "reno"
"""Reno's window grows per ACK, so it dilates with the round trip; CUBIC grows on wall-clock time since the last
loss (HyStart on millisecond thresholds) and BBR paces and probes on real time (this kernel's default)."""
TCP_RTO_MIN_MS = 200
"""Linux's minimum retransmission timeout (TCP_RTO_MIN), scaled by K."""
TCP_RETRIES2 = 15
"""Linux's `tcp_retries2`, scaled by K (`tcp_retries2`): it also bounds how many times in a row a connection with
nothing in flight retries a segment its own interface's rate queue dropped, every 500 ms real after its first RTO
(TCP_RESOURCE_PROBE_INTERVAL_S), before it gives up with ETIMEDOUT. With Linux's 15 at K 20 a source's
connection whose radio queue stays full gives up after 0.375 virtual s, and its query is recorded
`scheduler-down` (at K 2, 23 of 12460 queries on a radio full for 30 s); x K it gives up after 7.5 virtual s,
as at K = 1, up to K 17, and still past the clients' timeout (`--timeout`, 5 s) up to K 25."""
TCP_RETRIES2_MAX = 255
"""The kernel refuses more (EINVAL): above K 17 a connection gives up after 127.5 s real, 127.5 / K virtual s
(6.4 at K 20, 5.1 at K 25, 3.2 at K 40)."""
TCP_RESOURCE_PROBE_INTERVAL_S = 0.5
"""How often TCP retries a segment its own interface dropped (Linux's TCP_RESOURCE_PROBE_INTERVAL, real s, fixed)."""
TCP_COMP_SACK_DELAY_NS = 1_000_000
TCP_COMP_SACK_SLACK_NS = 100_000
"""Linux's defaults for how long a receiver may hold back a SACK (and the timer's slack), scaled by K."""


def host_sysctls(tdf: float = 1.0) -> list[str]:
    """Returns the `sysctl -w` settings of a host's namespace at time dilation factor K (`tdf`)."""
    return HOST_SYSCTLS + [f"net.ipv4.tcp_congestion_control={TCP_CONGESTION_CONTROL}",
                           f"net.ipv4.tcp_rto_min_us={round(TCP_RTO_MIN_MS * 1000 * tdf)}",
                           f"net.ipv4.tcp_comp_sack_delay_ns={round(TCP_COMP_SACK_DELAY_NS * tdf)}",
                           f"net.ipv4.tcp_comp_sack_slack_ns={round(TCP_COMP_SACK_SLACK_NS * tdf)}",
                           f"net.ipv4.tcp_retries2={tcp_retries2(tdf)}"]


def tcp_retries2(tdf: float = 1.0) -> int:
    """Returns a host's `tcp_retries2` at K (`tdf`): Linux's 15 x K, from 1 to the kernel's 255."""
    return max(1, min(round(TCP_RETRIES2 * tdf), TCP_RETRIES2_MAX))


def local_drop_note(tdf: float) -> str | None:
    """Returns the line saying how soon a connection gives up on segments its own interface keeps dropping,
    where the kernel's limit keeps it under 7.5 virtual s (K over 17); None elsewhere."""
    if round(TCP_RETRIES2 * tdf) <= TCP_RETRIES2_MAX:
        return None
    give_up_s = tcp_retries2(tdf) * TCP_RESOURCE_PROBE_INTERVAL_S / tdf
    return (f"time dilation x{tdf:g}: tcp_retries2 is at the kernel's most ({TCP_RETRIES2_MAX}); a connection whose "
            f"segments its own full rate queue keeps dropping gives up after {give_up_s:.1f} virtual s "
            f"({TCP_RETRIES2 * TCP_RESOURCE_PROBE_INTERVAL_S:g} up to K 17), and a source's query still waiting "
            f"then (its --timeout longer) is recorded scheduler-down (docs/network.md#time-dilation)")


def subnet_route_line(subnet: str, ifname: str, ip: str, tdf: float = 1.0) -> str:
    """Returns the `ip route` line of the hosts' subnet: large initial windows, delayed ACKs off, the minimum RTO
    x K and reno, so that every connection between hosts gets them."""
    return (f"route replace {subnet} dev {ifname} proto kernel scope link src {ip} "
            f"initcwnd {TCP_INIT_WINDOW_SEGMENTS} initrwnd {TCP_INIT_WINDOW_SEGMENTS} "
            f"quickack 1 rto_min {round(TCP_RTO_MIN_MS * tdf)}ms congctl {TCP_CONGESTION_CONTROL}")


def static_arp_lines(ifname: str, peers: list[tuple[str, str]]) -> list[str]:
    """Returns the `ip` lines giving an interface a permanent neighbour entry for each (ip, mac) of `peers`."""
    return [f"neigh replace {ip} lladdr {mac} dev {ifname} nud permanent" for ip, mac in peers]


class OnServer:
    """Mix-in of a node on its site's server (`server_name`: `local` or a remote server's name)."""

    ctx: BuildContext
    server_name: str

    @property
    def client(self):  # noqa: ANN201 (AgentClient | None)
        """The agent of the node's server (None: this machine)."""
        return self.ctx.client(self.server_name)

    @property
    def record_server(self) -> str | None:
        """The node's server as the record writes it (None: this machine)."""
        return None if self.server_name == "local" else self.server_name


class NamedHost(OnServer, Host):
    """A Mininet host whose namespace carries the plan's name; configured with checked commands.

    params: ctx (BuildContext), netns (the name), ip, mac, prefix_len, subnet (the hosts' route), on_server (the
    server of its site: `local`, or a remote server's name, whose commands go through its agent)."""

    def __init__(self, name: str, ctx: BuildContext | None = None, netns: str | None = None,
                 on_server: str = "local", **params) -> None:
        assert ctx is not None and netns is not None, "NamedHost needs ctx= and netns="
        self.ctx, self.netns, self.server_name = ctx, netns, on_server
        super().__init__(name, **params)

    def startShell(self, mnopts=None) -> None:  # noqa: N802 (Mininet's name)
        """Starts Mininet's shell in a new namespace and names that namespace (recorded before it exists); on a
        remote server the shell is ssh's here (recorded here) and the namespace is named there once its pid is
        known (`ServerNamedHost`)."""
        self.ctx.record.add(Created("netns", self.netns, server=self.record_server))
        Host.startShell(self, mnopts)
        self.ctx.record.add_process(f"shell {self.name}", self.shell.pid)
        if self.record_server is None:
            self.name_namespace()

    def name_namespace(self) -> None:
        """Names the shell's namespace and sets its sysctls, on the host's server."""
        sh.run(["ip", "netns", "attach", self.netns, str(self.pid)], server=self.client)
        sysctls = host_sysctls(self.ctx.tdf)
        sh.run(sh.in_netns(self.netns, ["sysctl", "-q", "-w", *sysctls]), server=self.client)  # before any interface

    def config(self, ip: str | None = None, mac: str | None = None, prefix_len: int = 16,  # type: ignore[override]
               subnet: str | None = None, **_params) -> dict:
        """Gives eth0 its address and the subnet route (`subnet_route_line`; Mininet's configDefault calls this
        with the host's params); keeps Mininet's idea of the interface's address in step."""
        intf = self.defaultIntf()
        lines = ["link set lo up"]
        if ip is not None and intf is not None:
            lines += [f"addr add {ip}/{prefix_len} dev {intf.name}", f"link set {intf.name} up"]
            if subnet:
                lines.append(subnet_route_line(subnet, intf.name, ip, self.ctx.tdf))
            intf.ip, intf.prefixLen = ip, prefix_len
            intf.mac = mac or intf.mac
        sh.ip_batch(lines, netns=self.netns, server=self.client)
        return {}

    def set_static_arp(self, peers: list[tuple[str, str]]) -> None:
        """Gives eth0 a permanent ARP entry for each (ip, mac) of `peers`, in one `ip -batch`."""
        intf = self.defaultIntf()
        if intf is not None and peers:
            sh.ip_batch(static_arp_lines(intf.name, peers), netns=self.netns, server=self.client)

    def defaultIntf(self):  # noqa: N802
        """Returns eth0 (Mininet's lowest port) without warning when the host has no link yet."""
        return self.intfs[min(self.intfs)] if self.intfs else None


class RecordedOVS(OnServer, OVSSwitch):
    """Mininet's OVSSwitch, recorded before it exists, its `ovs-vsctl` checked, its bridge port at the MTU.

    params: ctx (BuildContext); Mininet's dpid (hex), datapath ('user' or 'kernel'), failMode, protocols; on_server
    (its site's: `local` or a remote server's name)."""

    def __init__(self, name: str, ctx: BuildContext | None = None, site: str = "", on_server: str = "local",
                 **params) -> None:
        assert ctx is not None, "RecordedOVS needs the run's BuildContext (ctx=)"
        self.ctx, self.site, self.server_name = ctx, site, on_server
        super().__init__(name, **params)

    def startShell(self, mnopts=None) -> None:  # noqa: N802
        OVSSwitch.startShell(self, mnopts)
        self.ctx.record.add_process(f"shell {self.name}", self.shell.pid)

    def bridgeOpts(self) -> str:  # noqa: N802
        """Mininet's bridge options and the bridge's own port at the network's MTU (OVS would leave 1500);
        the ports are veths made at that MTU."""
        return OVSSwitch.bridgeOpts(self) + f" -- set interface {self.name} mtu_request={self.ctx.mtu}"

    def start(self, controllers) -> None:
        """Queues the bridge's one `ovs-vsctl` line (batchStartup runs it), after recording the bridge."""
        self.ctx.record.add(Created("ovs-bridge", self.name, server=self.record_server))
        OVSSwitch.start(self, controllers)

    @classmethod
    def isOldOVS(cls) -> bool:  # noqa: N802
        """Mininet's test, without distutils' deprecated StrictVersion."""
        return tuple(int(x) for x in cls.OVSVersion.split(".")[:2]) < (1, 10)

    @classmethod
    def batchStartup(cls, switches, run=run_checked):  # noqa: N802
        """Mininet's batch start-up with a runner that raises on failure (Mininet's ignores it and carries on
        without bridges); it then re-applies every port's shaping, which add-port deleted."""
        return super().batchStartup(switches, run=run)


class IpBridge(Switch):
    """A Linux bridge made with iproute2 (Mininet's LinuxBridge needs brctl), recorded before it exists.

    params: ctx; site; stp (StpPlan or None: STP off, forwarding at once). With STP the bridge gets its
    priority and its trunk ports their costs from the plan, so it builds the tree worked out in advance."""

    def __init__(self, name: str, ctx: BuildContext | None = None, stp: StpPlan | None = None, site: str = "",
                 **params) -> None:
        assert ctx is not None, "IpBridge needs the run's BuildContext (ctx=)"
        self.ctx, self.stp, self.site = ctx, stp, site
        Switch.__init__(self, name, **params)

    def startShell(self, mnopts=None) -> None:  # noqa: N802
        Switch.startShell(self, mnopts)
        self.ctx.record.add_process(f"shell {self.name}", self.pid)

    def ports_in_order(self) -> list:
        return [intf for intf in self.intfList() if self.ports[intf]]  # port 0 is Mininet's control 'lo'

    def bridge_commands(self) -> list[str]:
        """Returns the `ip -batch` lines making the bridge, enslaving its ports and bringing it up."""
        if self.stp is None:
            opts = "forward_delay 0 stp_state 0 ageing_time 30000"
        else:
            opts = (f"stp_state 1 priority {self.stp.priority[self.site]} "
                    f"forward_delay {round(FORWARD_DELAY_S * 100)} hello_time {round(HELLO_S * 100)} "
                    f"max_age {round(MAX_AGE_S * 100)} ageing_time 30000")
        lines = [f"link add name {self.name} mtu {self.ctx.mtu} type bridge {opts}"]
        for intf in self.ports_in_order():
            lines.append(f"link set dev {intf.name} master {self.name}")
            if self.stp is not None and intf.name in self.stp.port_cost:
                lines.append(f"link set dev {intf.name} type bridge_slave cost {self.stp.port_cost[intf.name]}")
        lines.append(f"link set dev {self.name} up")
        return lines

    def start(self, controllers) -> None:
        self.ctx.record.add(Created("lx-bridge", self.name))
        sh.ip_batch(self.bridge_commands())

    def port_states(self) -> dict[str, str]:
        """Returns {port interface: STP state name} as the kernel reports them."""
        out = {}
        for intf in self.ports_in_order():
            path = Path(f"/sys/class/net/{self.name}/brif/{intf.name}/state")
            out[intf.name] = STATE_NAMES.get(int(path.read_text()), "?") if path.exists() else "absent"
        return out

    def connected(self) -> bool:
        """Returns whether every port has settled (Mininet's waitConnected polls this)."""
        return self.stp is None or all(s in ("forwarding", "blocking", "disabled")
                                       for s in self.port_states().values())

    def dpctl(self, *args) -> str:
        """The CLI's `dpctl`: a Linux bridge speaks no OpenFlow."""
        return f"{self.name} is a Linux bridge (no OpenFlow): try `sh bridge link show master {self.name}`\n"

    def stop(self, deleteIntfs: bool = True) -> None:  # noqa: N803
        sh.run(["ip", "link", "delete", "dev", self.name], check=False)
        Switch.stop(self, deleteIntfs)


class StoppableRemote(RemoteController):
    """Mininet's RemoteController for the run's os-ken process: its shell recorded and ended on stop (Mininet's
    `stop` does nothing), its port checked without telnet."""

    def __init__(self, name: str, ctx: BuildContext | None = None, **params) -> None:
        assert ctx is not None, "StoppableRemote needs the run's BuildContext (ctx=)"
        self.ctx = ctx
        RemoteController.__init__(self, name, **params)

    def startShell(self, mnopts=None) -> None:  # noqa: N802
        RemoteController.startShell(self, mnopts)
        self.ctx.record.add_process(f"shell {self.name}", self.pid)

    def checkListening(self) -> None:  # noqa: N802
        """Raises NetworkError unless the controller accepts connections (the network starts it first)."""
        with socket.socket() as s:
            if s.connect_ex((self.ip, self.port)) != 0:
                raise NetworkError(f"no OpenFlow controller listens at {self.ip}:{self.port}")

    def stop(self, *_args, **_kwargs) -> None:
        self.terminate()


__all__ = ["IpBridge", "NamedHost", "RecordedOVS", "StoppableRemote", "host_sysctls", "local_drop_note",
           "static_arp_lines", "subnet_route_line", "tcp_retries2"]
