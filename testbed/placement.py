"""Where a run's sites live: the servers of a multi-host run (`--servers`), the site-to-server map (`--place`), the
refusals of links that cannot cross (MTU, underlay delay) and the run directory's `servers.json`.

The unit placed is the site: its switch and all its hosts share a server, so only the topology's links between
sites on different servers cross the underlay. `local` is the driver (the machine running the command); with no
`--servers` everything is local. Parsing is pure: errors are ValueError with one line naming the option and the
item at fault (the command line turns them into exit 2).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from testbed.agent import Server
from testbed.crossserver import CrossLink, check_mtu, wire_delay_ms
from testbed.errors import PreflightError

LOCAL = "local"
"""The driver's server name: nodes placed there are made here, without ssh."""
SERVERS_FILE = "servers.json"
"""name -> destination, ssh port and options, underlay address, device and MTU, commit (written before a run
makes anything on a server, so `clean` can reach every server from the run directory alone)."""


def control_dir(run_id: str) -> Path:
    """Returns the directory of a run's ssh master connections to its servers (short: a socket path is at most 108
    bytes); teardown and `clean` remove it."""
    return Path("/tmp") / f"tb{run_id}-ssh"


@dataclass(frozen=True)
class Placement:
    """The servers of a run, in order (`local` = the driver, else a `Server`), and each site's server."""

    servers: tuple[tuple[str, Server | None], ...]
    sites: tuple[tuple[str, str], ...]
    """(site, server name) for every site of the topology."""

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.servers]

    def server(self, name: str) -> Server | None:
        """Returns the record of a remote server (None: the driver)."""
        return dict(self.servers)[name]

    def site_server(self, site: str) -> str:
        return dict(self.sites)[site]

    @property
    def remote(self) -> list[Server]:
        """Returns the remote servers that hold at least one site."""
        used = {s for _, s in self.sites}
        return [srv for n, srv in self.servers if srv is not None and n in used]

    @property
    def is_local(self) -> bool:
        return not self.remote


def everything_local(sites: Sequence[str]) -> Placement:
    """Returns the placement of a single-machine run."""
    return Placement(servers=((LOCAL, None),), sites=tuple((s, LOCAL) for s in sites))


def parse_servers(text: str | None, ssh_options: Sequence[str] = ()) -> tuple[tuple[str, Server | None], ...]:
    """Returns the servers of `--servers local,NAME=USER@HOST[:PORT],...` in order; raises ValueError naming the
    item at fault. `ssh_options` go to every remote server's ssh."""
    if text is None or not text.strip():
        return ((LOCAL, None),)
    out: list[tuple[str, Server | None]] = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            raise ValueError(f"--servers: an empty item in {text!r}")
        if item == LOCAL:
            entry: tuple[str, Server | None] = (LOCAL, None)
        elif "=" not in item:
            raise ValueError(f"--servers: {item!r} is neither `local` nor NAME=USER@HOST[:PORT]")
        else:
            try:
                srv = Server.parse(item)
            except ValueError as e:
                raise ValueError(f"--servers: {e}") from None
            if srv.name == LOCAL:
                raise ValueError(f"--servers: {item!r}: the name `local` is the driver and takes no destination")
            entry = (srv.name, dataclasses.replace(srv, ssh_options=tuple(ssh_options)))
        if entry[0] in (n for n, _ in out):
            raise ValueError(f"--servers: server {entry[0]!r} named twice")
        out.append(entry)
    return tuple(out)


def parse_place(text: str | None, sites: Sequence[str], servers: Sequence[tuple[str, Server | None]]) -> Placement:
    """Returns the placement of `--place SITE=SERVER,...` over the given servers; sites not named go to the first
    server. Raises ValueError naming an unknown site or server, or a site placed twice."""
    names = [n for n, _ in servers]
    chosen: dict[str, str] = {}
    for item in (i.strip() for i in (text or "").split(",") if i.strip()):
        site, eq, server = item.partition("=")
        site, server = site.strip(), server.strip()
        if not eq or not site or not server:
            raise ValueError(f"--place: {item!r} is not SITE=SERVER")
        if site not in sites:
            raise ValueError(f"--place: {item!r}: no site {site!r} in the topology (sites: {', '.join(sites)})")
        if server not in names:
            raise ValueError(f"--place: {item!r}: no server {server!r} in --servers ({', '.join(names)})")
        if site in chosen:
            raise ValueError(f"--place: site {site!r} placed twice")
        chosen[site] = server
    return Placement(servers=tuple(servers), sites=tuple((s, chosen.get(s, names[0])) for s in sites))


@dataclass(frozen=True)
class Underlay:
    """One server's end of the underlay, as preflight found it."""

    addr: str
    dev: str
    mtu: int
    commit: str | None = None


def crossing_links(placement: Placement, links: Sequence[tuple[str, str, str]],
                   underlay: Mapping[str, Underlay]) -> list[CrossLink]:
    """Returns the topology links (name, site a, site b) whose sites are on different servers, in order, as
    `CrossLink`s over the servers' underlay ends."""
    out = []
    for name, site_a, site_b in links:
        sa, sb = placement.site_server(site_a), placement.site_server(site_b)
        if sa != sb:
            ua, ub = underlay[sa], underlay[sb]
            out.append(CrossLink(name, len(out), sa, sb, ua.addr, ub.addr, ua.dev, ub.dev))
    return out


def check_crossing(crossing: Sequence[CrossLink], delays_ms: Mapping[str, float], mtu: int,
                   underlay: Mapping[str, Underlay], rtt_ms: Mapping[tuple[str, str], float],
                   tdf: float = 1.0) -> dict[str, float]:
    """Returns {link: the delay its wire is given} (the link's delay less the underlay's one way, RTT/2; under time
    dilation K the wire dilates what it is given, the underlay does not: (K x delay - one way) / K); raises
    PreflightError with one line naming the link and both servers if the run's MTU does not fit through the
    underlay or the underlay alone is slower than the (dilated) link."""
    out = {}
    for link in crossing:
        check_mtu(link, mtu, underlay[link.server_a].mtu, underlay[link.server_b].mtu)
        rtt = rtt_ms.get((link.server_a, link.server_b), rtt_ms.get((link.server_b, link.server_a)))
        if rtt is None:
            raise PreflightError(f"link {link.name}: no underlay RTT measured between servers {link.server_a} and "
                                 f"{link.server_b}")
        out[link.name] = wire_delay_ms(link, delays_ms[link.name] * tdf, rtt / 2) / tdf
    return out


def write_servers(run_dir: Path, placement: Placement, underlay: Mapping[str, Underlay]) -> Path:
    """Writes `servers.json`: per server its destination, ssh port and options, repository, underlay address,
    device and MTU, and commit; the driver as `local`."""
    doc = {}
    for name, srv in placement.servers:
        u = underlay.get(name)
        doc[name] = {"dest": LOCAL if srv is None else srv.dest,
                     "port": None if srv is None else srv.port,
                     "ssh_options": [] if srv is None else list(srv.ssh_options),
                     "repo": None if srv is None else srv.repo,
                     "underlay_addr": u.addr if u else None, "underlay_dev": u.dev if u else None,
                     "mtu": u.mtu if u else None, "commit": u.commit if u else None,
                     "sites": [s for s, n in placement.sites if n == name]}
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / SERVERS_FILE
    tmp = path.with_suffix(".json.new")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)
    return path


def read_servers(run_dir: Path) -> dict[str, Server]:
    """Returns the remote servers a run directory's `servers.json` names ({} if there is none); raises ValueError
    naming the file if it cannot be read."""
    path = run_dir / SERVERS_FILE
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text())
        return {name: Server(name=name, dest=d["dest"], port=int(d["port"]), underlay_addr=d.get("underlay_addr"),
                             mtu=d.get("mtu"), ssh_options=tuple(d.get("ssh_options") or ()), repo=d["repo"])
                for name, d in doc.items() if d["dest"] != LOCAL}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: unreadable ({e!r})") from None
