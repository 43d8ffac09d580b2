"""The network plan: a topology file turned into hosts, switches, ports, links, names and addresses.

Pure and deterministic (no system calls): the same file and run id always give the same plan, so
names and addresses can be printed, tested and handed to the controller before anything is built.
Per site one switch; per cluster a worker host; per antenna a scheduler host and a sources host
behind the radio link; a probe host at any site that has none of those, so every link can be measured.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from topologies import LinkShape, Topology

ROLES = ("worker", "scheduler", "sources", "probe")
"""Host roles: inference workers, the antenna's scheduler, the stream sources, a measuring probe."""
HOST_IFNAME = "eth0"
"""Every host has one interface, under this name inside its namespace."""
MAX_IFNAME = 15
NETWORK_FILE = "network.json"
"""A running network's description in its run dir (hosts, switches, links; `EmulatedNetwork` writes it)."""


def host_name(role: str, site: str) -> str:
    """Returns the name of the host of a role at a site, e.g. `scheduler-ant1`."""
    return f"{role}-{site}"


@dataclass(frozen=True)
class HostPlan:
    """A host: one network namespace with one interface on its site's switch."""

    name: str
    role: str
    site: str
    netns: str
    ip: str
    mac: str
    prefix_len: int
    server: str = "local"
    """The server its site is placed on (`local`: the driver)."""


@dataclass(frozen=True)
class SwitchPlan:
    """A site's switch: an OVS bridge (or Linux bridge) in the root namespace."""

    site: str
    bridge: str
    dpid: int
    server: str = "local"


@dataclass(frozen=True)
class End:
    """One end of a link: an interface in a namespace (None: root), on a switch port or a host."""

    ifname: str
    netns: str | None
    switch: str | None = None
    """The site whose switch this interface is a port of (None for a host's interface)."""
    port_no: int | None = None
    host: str | None = None


@dataclass(frozen=True)
class LinkPlan:
    """A link between two ends; `shape` None means an unshaped local link (host to its own switch)."""

    index: int
    name: str
    kind: str
    """'trunk' (switch to switch, a topology link), 'radio' (sources to antenna) or 'local'."""
    a: End
    b: End
    shape: LinkShape | None
    site_a: str
    site_b: str
    server_a: str = "local"
    """The servers of its two ends' sites: a trunk whose ends are on different servers crosses the underlay."""
    server_b: str = "local"

    @property
    def crosses(self) -> bool:
        return self.server_a != self.server_b

    def wire_ifnames(self) -> tuple[str, str]:
        """Returns the inner interface names a userspace wire bridges (in the wire namespace)."""
        return f"l{self.index}a", f"l{self.index}b"

    @property
    def switch_sites(self) -> tuple[str, ...]:
        """Returns the sites whose switches a probe across this link alone crosses (radio: the antenna's;
        trunk: both ends'; local: its site's)."""
        return (self.site_a,) if self.site_a == self.site_b else (self.site_a, self.site_b)


@dataclass(frozen=True)
class NetworkPlan:
    """Everything needed to build, measure, control and tear down one run's network."""

    topology: Topology
    run_id: str
    subnet: str
    hosts: tuple[HostPlan, ...]
    switches: tuple[SwitchPlan, ...]
    links: tuple[LinkPlan, ...]
    wire_netns: str
    next_port: dict[tuple[str, str], int] = field(repr=False, compare=False)
    """(switch site, host name) -> the port that switch forwards that host's frames to."""

    @property
    def shaped_links(self) -> tuple[LinkPlan, ...]:
        return tuple(link for link in self.links if link.shape is not None)

    def host(self, name: str) -> HostPlan:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(f"no host named {name!r}; hosts: {', '.join(h.name for h in self.hosts)}")

    def host_for(self, role: str, site: str) -> HostPlan:
        if role not in ROLES:
            raise KeyError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
        return self.host(host_name(role, site))

    def site_host(self, site: str) -> HostPlan:
        """Returns the host that stands for a site when measuring its links (worker, scheduler or probe)."""
        for role in ("worker", "scheduler", "probe"):
            name = host_name(role, site)
            if any(h.name == name for h in self.hosts):
                return self.host(name)
        raise KeyError(f"site {site!r} has no host")

    @property
    def crossing_links(self) -> tuple[LinkPlan, ...]:
        """Returns the trunks between sites on different servers, in plan order."""
        return tuple(link for link in self.links if link.crosses)

    @property
    def servers(self) -> list[str]:
        """Returns the servers holding at least one site, in the order of the sites."""
        return list(dict.fromkeys(s.server for s in self.switches))

    def switch(self, site: str) -> SwitchPlan:
        return next(s for s in self.switches if s.site == site)

    def measure_pair(self, link: LinkPlan) -> tuple[HostPlan, HostPlan]:
        """Returns the two hosts whose traffic crosses this link and no other shaped link."""
        if link.kind == "radio":
            return self.host_for("sources", link.site_a), self.host_for("scheduler", link.site_a)
        if link.kind == "trunk":
            return self.site_host(link.site_a), self.site_host(link.site_b)
        raise ValueError(f"link {link.name} is local and unshaped: nothing to measure")

    def hop_pair(self, site: str) -> tuple[HostPlan, HostPlan] | None:
        """Returns two hosts on unshaped links of a site's switch (a path through that switch alone), or None.

        What the switch costs by itself is measured between them (an antenna with compute: its worker and
        its scheduler); a site with one host has no such pair."""
        local = [self.host(lk.a.host) for lk in self.links  # type: ignore[arg-type]
                 if lk.kind == "local" and lk.site_a == site and lk.a.host is not None]
        return (local[0], local[1]) if len(local) >= 2 else None

    def path_sites(self, antenna: str, cluster: str) -> tuple[str, ...]:
        """Returns the sites whose switches a frame crosses from an antenna's scheduler to a cluster's worker
        (both ends included), along the topology's shortest path."""
        sites = [antenna]
        for link in self.topology.path(antenna, cluster).links:
            sites.append(link.other(sites[-1]))
        return tuple(sites)

    def controller_config(self) -> dict:
        """Returns what the controller needs as plain JSON: datapaths, hosts, next hops, port owners."""
        ports: dict[str, dict[str, dict]] = {str(s.dpid): {} for s in self.switches}
        for link in self.links:
            for end, other in ((link.a, link.b), (link.b, link.a)):
                if end.switch is not None:
                    bw = link.shape.bw_mbps if link.shape else None
                    ports[str(self.switch(end.switch).dpid)][str(end.port_no)] = {
                        "link": link.name, "kind": link.kind, "bw_mbps": bw,
                        "peer": other.switch or other.host}
        next_port: dict[str, dict[str, int]] = {str(s.dpid): {} for s in self.switches}
        for (site, host), port_no in self.next_port.items():
            next_port[str(self.switch(site).dpid)][self.host(host).mac] = port_no
        return {
            "run_id": self.run_id,
            "switches": [{"site": s.site, "bridge": s.bridge, "dpid": s.dpid} for s in self.switches],
            "hosts": [{"name": h.name, "ip": h.ip, "mac": h.mac} for h in self.hosts],
            "next_port": next_port,
            "ports": ports,
        }

    def address_table(self) -> list[tuple[str, str, str, str, str]]:
        """Returns rows (host, role, site, namespace, address) for printing at bring-up."""
        return [(h.name, h.role, h.site, h.netns, f"{h.ip}/{h.prefix_len}") for h in self.hosts]


def _host_specs(topo: Topology) -> list[tuple[str, str]]:
    """Returns (role, site) per host, in file order: worker, scheduler, sources, or a probe."""
    specs = []
    for site in topo.sites:
        roles = (["worker"] if site.is_cluster else []) + (["scheduler", "sources"] if site.is_antenna else [])
        specs += [(role, site.name) for role in (roles or ["probe"])]
    return specs


def read_host_address(description: Path, role: str, site: str) -> str:
    """Returns the address of the host of a role at a site in a running network's description
    (`NETWORK_FILE`); raises ValueError naming the file."""
    name = host_name(role, site)
    try:
        hosts = json.loads(description.read_text())["hosts"]
        found = [str(h["ip"]) for h in hosts if h["name"] == name]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{description}: no address for host {name} ({exc!r})") from None
    if not found:
        raise ValueError(f"{description}: no host {name}")
    return found[0]


def build_plan(topo: Topology, run_id: str, subnet: str = "10.0.0.0/16",
               sites_on: Mapping[str, str] | None = None) -> NetworkPlan:
    """Returns the plan of a topology's network; names carry the run id so that runs never collide. `sites_on`
    places sites on servers (site -> server name; a site not in it, or no map: `local`)."""
    on = dict(sites_on or {})
    unknown = sorted(set(on) - {s.name for s in topo.sites})
    if unknown:
        raise ValueError(f"placement names sites not in topology {topo.name}: {', '.join(unknown)}")

    def server(site: str) -> str:
        return on.get(site, "local")

    if not (0 < len(run_id) <= 4 and all(c in "abcdefghijklmnopqrstuvwxyz0123456789" for c in run_id)):
        raise ValueError(f"run id {run_id!r} must be at most 4 lower-case letters or digits")
    net = ipaddress.IPv4Network(subnet)
    specs = _host_specs(topo)
    if len(specs) > net.num_addresses - 2:
        raise ValueError(f"subnet {subnet} is too small for {len(specs)} hosts")
    hosts = tuple(
        HostPlan(name=host_name(role, site), role=role, site=site, netns=f"tb{run_id}-{host_name(role, site)}",
                 ip=str(net[i + 1]), mac=f"02:00:00:00:{(i + 1) >> 8:02x}:{(i + 1) & 0xFF:02x}",
                 prefix_len=net.prefixlen, server=server(site))
        for i, (role, site) in enumerate(specs))
    site_index = {s.name: k for k, s in enumerate(topo.sites)}
    switches = tuple(SwitchPlan(site=s.name, bridge=f"t{run_id}s{k}", dpid=k + 1, server=server(s.name))
                     for k, s in enumerate(topo.sites))
    ports_used = {s.name: 0 for s in topo.sites}

    def port(site: str) -> End:
        ports_used[site] += 1
        name = f"t{run_id}s{site_index[site]}p{ports_used[site]}"
        if len(name) > MAX_IFNAME:
            raise ValueError(f"interface name {name!r} is longer than {MAX_IFNAME} characters")
        return End(ifname=name, netns=None, switch=site, port_no=ports_used[site])

    def host_end(h: HostPlan) -> End:
        return End(ifname=HOST_IFNAME, netns=h.netns, host=h.name)

    links: list[LinkPlan] = []
    for h in hosts:
        if h.role == "sources":
            radio = topo.site(h.site).radio
            assert radio is not None
            links.append(LinkPlan(len(links), f"radio-{h.site}", "radio", host_end(h), port(h.site), radio,
                                  h.site, h.site, h.server, h.server))
        else:
            links.append(LinkPlan(len(links), f"local-{h.name}", "local", host_end(h), port(h.site), None,
                                  h.site, h.site, h.server, h.server))
    for lk in topo.links:
        links.append(LinkPlan(len(links), f"{lk.a}-{lk.b}", "trunk", port(lk.a), port(lk.b), lk.shape, lk.a, lk.b,
                              server(lk.a), server(lk.b)))

    next_port: dict[tuple[str, str], int] = {}
    by_pair = {frozenset((lp.site_a, lp.site_b)): lp for lp in links if lp.kind == "trunk"}
    host_port = {lp.a.host: lp.b.port_no for lp in links if lp.kind != "trunk"}
    for sw in switches:
        for h in hosts:
            if h.site == sw.site:
                next_port[(sw.site, h.name)] = host_port[h.name]  # type: ignore[assignment]
                continue
            first = topo.path(sw.site, h.site).links[0]
            lp = by_pair[frozenset((first.a, first.b))]
            next_port[(sw.site, h.name)] = (lp.a if lp.a.switch == sw.site else lp.b).port_no  # type: ignore
    return NetworkPlan(topology=topo, run_id=run_id, subnet=subnet, hosts=hosts, switches=switches,
                       links=tuple(links), wire_netns=f"tb{run_id}-wire", next_port=next_port)
