"""Preflight of a multi-host run: what every server needs, checked through its agent before anything is built.

Per server: key login in BatchMode, root or `sudo -n`, the programs (mnexec, ip, tc, ethtool, ovs-vsctl, ping), Open
vSwitch answering, Mininet importable by the repository's virtualenv, the driver's repository path and commit,
VXLAN (a probe device in a scratch namespace), the underlay device and its MTU against --mtu; per pair of
servers: the underlay reachable, and its RTT; each server's clock offset from the driver's (testbed.clocksync).
Each missing thing is one line naming the server and the fix.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import itertools
import json
import os
import pwd
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from testbed import clocksync
from testbed.agent import REPO, AgentClient, AgentError, Server
from testbed.crossserver import max_emulated_mtu
from testbed.errors import PreflightError

PROGRAMS = {"mnexec": "mininet", "ip": "iproute2", "tc": "iproute2", "ethtool": "ethtool",
            "ovs-vsctl": "openvswitch-switch", "ping": "iputils-ping"}
PING_COUNT = 3


@dataclass
class ServerReport:
    """What preflight found on one server."""

    server: str
    problems: list[str] = field(default_factory=list)
    underlay_addr: str | None = None
    """The server's address between the servers: as stated, else the one the driver's ssh reached."""
    underlay_dev: str | None = None
    underlay_mtu: int | None = None
    commit: str | None = None


def local_commit(repo: str = str(REPO)) -> str:
    """Returns the driver's `git rev-parse HEAD`."""
    return subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


def _ssh_fails(server: Server, command: str) -> str | None:
    """Returns why `command` over ssh with the key in BatchMode fails (None if it succeeds)."""
    try:
        done = subprocess.run(server.ssh_argv(command), capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "ssh did not answer within 30 s"
    if done.returncode == 0:
        return None
    lines = [s for s in done.stderr.strip().splitlines() if s]
    return lines[-1] if lines else f"ssh exited {done.returncode}"


def login_hint(failure: str, server: Server, user: str, home: str) -> str:
    """Returns the fix for a failed key login that names what ssh said: a host key it does not know, or no key the
    server takes; ssh here runs as `user` (root under sudo) with the keys and known_hosts of `home`/.ssh."""
    login = f"ssh -p {server.port} {server.dest} true"
    if "host key verification failed" in failure.lower():
        return (f"ssh here runs as {user} and {home}/.ssh/known_hosts lacks the server's host key: accept it once "
                f"as {user} (`{login}`, under sudo `sudo {login}`), or pass --ssh-options "
                "'-o UserKnownHostsFile=FILE' (docs/multihost.md)")
    if "permission denied" in failure.lower():
        return (f"the server takes none of {user}'s keys ({home}/.ssh; root's under sudo): add that public key to "
                f"{server.dest}'s authorized_keys, or pass --ssh-options '-i KEY' (docs/multihost.md)")
    return f"`{login}` must work as {user} without a password or a question (docs/multihost.md)"


def check_server(server: Server, *, mtu: int | None, commit: str) -> tuple[ServerReport, AgentClient | None]:
    """Returns what is missing on one server and, if its agent started, the agent (the caller closes it)."""
    report = ServerReport(server.name, underlay_addr=server.underlay_addr)
    who = f"server {server.name} ({server.dest})"
    failure = _ssh_fails(server, "true")
    if failure is not None:
        local = pwd.getpwuid(os.geteuid())
        report.problems.append(f"{who}: key login in BatchMode failed ({failure}); "
                               + login_hint(failure, server, local.pw_name, local.pw_dir))
        return report, None
    if server.user not in (None, "root"):
        failure = _ssh_fails(server, "sudo -n true")
        if failure is not None:
            report.problems.append(f"{who}: {server.user} is not root and `sudo -n true` fails ({failure}); log "
                                   "in as root or allow this user sudo without a password")
            return report, None
    try:
        client = AgentClient(server)
    except AgentError as e:
        hint = "; clone the repository there at the driver's path and run scripts/setup.sh"
        report.problems.append(f"{e}{hint if 'no repository' in str(e) else ''}")
        return report, None
    try:
        _check_with_agent(client, report, mtu=mtu, commit=commit)
    except AgentError as e:
        report.problems.append(str(e))
    return report, client


def _check_with_agent(client: AgentClient, report: ServerReport, *, mtu: int | None, commit: str) -> None:
    server, add = client.server, report.problems.append
    name = f"server {server.name}"
    if client.hello["uid"] != 0:  # ssh's default user, not root: the agent would run without root
        add(f"{name}: the agent runs as uid {client.hello['uid']}, not root; name the user: root@host, or "
            "user@host for a user allowed sudo without a password")
    paths = client.which(list(PROGRAMS))
    missing = [p for p, path in paths.items() if path is None]
    if missing:
        pkgs = " ".join(sorted({PROGRAMS[p] for p in missing}))
        add(f"{name}: missing programs {', '.join(missing)}; apt-get install {pkgs} (scripts/setup.sh does)")
    if paths["ovs-vsctl"] is not None:
        ovs = client.run(["ovs-vsctl", "--timeout=2", "show"], check=False)
        if ovs.returncode != 0:
            add(f"{name}: Open vSwitch does not answer (ovs-vsctl show: {(ovs.stderr or ovs.stdout).strip()}); "
                "start it: scripts/setup.sh")
    mn = client.run([".venv/bin/python", "-c", "import mininet.net"], check=False)
    if mn.returncode != 0:
        add(f"{name}: the virtualenv at {server.repo} cannot import Mininet; run scripts/setup.sh there")
    git = client.run(["git", "-C", server.repo, "rev-parse", "HEAD"], check=False)
    report.commit = git.stdout.strip() or None
    if report.commit != commit:
        why = f" ({(git.stderr.strip().splitlines() or [''])[-1]})" if git.returncode != 0 else ""
        add(f"{name}: the repository at {server.repo} is at {report.commit or 'no commit'}{why}, the driver's at "
            f"{commit}; check out the same commit")
    probe = _vxlan_probe(client)
    if probe is not None:
        add(f"{name}: cannot create a VXLAN device ({probe}); load the vxlan kernel module")
    _check_underlay(client, report, mtu)


def _vxlan_probe(client: AgentClient) -> str | None:
    """Returns why a VXLAN device cannot be made on the server (None if it can), in a scratch namespace."""
    ns = f"tbprobe-{os.getpid()}"
    made = client.run(["ip", "netns", "add", ns], check=False)
    if made.returncode != 0:
        return f"ip netns add: {made.stderr.strip()}"
    try:
        vx = client.run(["ip", "-n", ns, "link", "add", "vxprobe", "type", "vxlan", "id", "1", "dstport", "4789"],
                        check=False)
        return None if vx.returncode == 0 else vx.stderr.strip()
    finally:
        client.run(["ip", "netns", "del", ns], check=False)


def _check_underlay(client: AgentClient, report: ServerReport, mtu: int | None) -> None:
    name = f"server {client.server.name}"
    addr = report.underlay_addr = report.underlay_addr or client.hello.get("server_addr")
    if addr is None:
        return
    links = json.loads(client.run(["ip", "-j", "addr", "show"]).stdout)
    holder = next((li for li in links for a in li.get("addr_info", []) if a.get("local") == addr), None)
    if holder is None:
        report.problems.append(f"{name}: no interface holds the underlay address {addr}; give the server's "
                               "address on the network between the servers")
        return
    report.underlay_dev, report.underlay_mtu = holder["ifname"], int(holder["mtu"])
    fits = max_emulated_mtu(report.underlay_mtu, addr)
    if mtu is not None and mtu > fits:
        overhead = report.underlay_mtu - fits
        report.problems.append(f"{name}: underlay {report.underlay_dev} has MTU {report.underlay_mtu}: --mtu {mtu} "
                               f"needs an underlay of {mtu + overhead}; use --mtu {fits} or raise the underlay MTU")


def underlay_rtt_ms(client: AgentClient, peer_addr: str) -> float | None:
    """Returns the minimum RTT of a few pings from the client's server to a peer's underlay address (None: no
    answer)."""
    ping = "ping" if ipaddress.ip_address(peer_addr).version == 4 else "ping6"
    done = client.run([ping, "-c", str(PING_COUNT), "-i", "0.2", "-W", "2", "-q", peer_addr], check=False,
                      timeout_s=15)
    m = re.search(r"= ([\d.]+)/", done.stdout)
    return float(m.group(1)) if done.returncode == 0 and m else None


@dataclass
class Preflight:
    """Every server's report, the underlay RTT of every pair that answered, every reachable server's clock."""

    reports: list[ServerReport]
    rtt_ms: dict[tuple[str, str], float]
    clocks: dict[str, clocksync.ClockOffset]

    @property
    def problems(self) -> list[str]:
        return [p for r in self.reports for p in r.problems]


def check_servers(servers: Sequence[Server], *, mtu: int | None = None, commit: str | None = None,
                  clock_bound_ms: float | None = None) -> Preflight:
    """Checks every server, every pair's underlay and every server's clock (its offset known within
    `clock_bound_ms` if given); returns what it found (nothing is raised)."""
    commit = commit or local_commit()
    reports, clients = [], {}
    try:
        for server in servers:
            report, client = check_server(server, mtu=mtu, commit=commit)
            reports.append(report)
            if client is not None:
                clients[server.name] = client
        rtt = {}
        for ra, rb in itertools.combinations(reports, 2):
            if ra.server in clients and rb.underlay_addr:
                got = underlay_rtt_ms(clients[ra.server], rb.underlay_addr)
                if got is None:
                    ra.problems.append(f"server {ra.server} cannot reach server {rb.server}'s underlay address "
                                       f"{rb.underlay_addr} (ping); check the route and firewall (UDP 4789 must "
                                       "pass too)")
                else:
                    rtt[(ra.server, rb.server)] = got
        clocks = {name: clocksync.measure(client) for name, client in clients.items()}
        for r in reports:
            c = clocks.get(r.server)
            if c is not None and clock_bound_ms is not None and c.bound_ms > clock_bound_ms:
                r.problems.append(f"server {r.server}: its clock offset is known only within +-{c.bound_ms:.3f} ms "
                                  f"(half the best round trip of {c.probes} probes), above {clock_bound_ms:g} ms")
    finally:
        for client in clients.values():
            client.close()
    return Preflight(reports, rtt, clocks)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m testbed.serverchecks NAME=USER@HOST[:PORT] ... [--mtu N]`: prints each server's report and
    the underlay RTTs; exits 2 naming every problem."""
    ap = argparse.ArgumentParser(prog="python -m testbed.serverchecks", description=__doc__.split("\n\n")[0])
    ap.add_argument("servers", nargs="+", metavar="NAME=USER@HOST[:PORT]")
    ap.add_argument("--mtu", type=int, default=None, help="the run's emulated MTU, checked against each underlay")
    ap.add_argument("--ssh-options", default="", help="extra ssh arguments for every server, e.g. '-i KEY'")
    args = ap.parse_args(argv)
    try:
        servers = [dataclasses.replace(Server.parse(s), ssh_options=tuple(shlex.split(args.ssh_options)))
                   for s in args.servers]
    except ValueError as e:
        print(f"serverchecks: {e}", file=sys.stderr)
        return 2
    found = check_servers(servers, mtu=args.mtu)
    for r in found.reports:
        print(f"{r.server}: underlay {r.underlay_addr} on {r.underlay_dev} (MTU {r.underlay_mtu}), commit {r.commit}"
              if not r.problems else f"{r.server}: {len(r.problems)} problem(s)")
    for (a, b), ms in sorted(found.rtt_ms.items()):
        print(f"underlay RTT {a} -> {b}: {ms:.3f} ms")
    for c in found.clocks.values():
        chrony = "" if c.chrony_offset_ms is None else f" (chrony: {c.chrony_offset_ms:+.3f} ms from its source)"
        print(f"clock {c.server}: {c.offset_ms:+.3f} ms +- {c.bound_ms:.3f} ms from the driver's{chrony}")
    for p in found.problems:
        print(p, file=sys.stderr)
    return 2 if found.problems else 0


def require_servers(servers: Sequence[Server], *, mtu: int | None = None) -> Preflight:
    """Returns the preflight of the servers; raises PreflightError listing every problem, one per line."""
    found = check_servers(servers, mtu=mtu)
    if found.problems:
        raise PreflightError("servers not ready:\n  " + "\n  ".join(found.problems))
    return found


if __name__ == "__main__":
    sys.exit(main())
