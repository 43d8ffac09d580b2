"""The remote servers of a placed run while its network is up: preflight, one agent per server, the underlay's
facts (every server's address, device and MTU, the driver's included where it holds sites or the controller),
the crossing links' tunnels and wire delays (refused in one line naming the link and both servers), and
`servers.json` written before anything is made on a server; each server's share of the run dir and its gathering.

Everything a remote server writes for a run (its wires' config, log and statistics, its share of `--check`, a live
run's processes' logs and outputs) goes under that server's **share** of the run dir, `<run dir>/servers/<name>`
on that server, in the run dir's own layout; nothing there is read by the driver except through the agent.
`gather_share` copies a share's files to the same relative path in the driver's run dir and removes them there
(files the driver pushed, listed in the share's `pushed.txt`, are not brought back); teardown and `clean` gather
every share (testbed.record.remove_on_servers). A remote server's processes started through `ServerSet.spawn` join
the groups its `Server` record names (a live run's `-rest` there: live/cores.py).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from testbed import crossserver, serverchecks
from testbed.agent import AgentClient, AgentError, Server
from testbed.context import CrossSpec
from testbed.errors import PreflightError
from testbed.placement import LOCAL, Placement, Underlay, check_crossing, crossing_links, write_servers
from testbed.plan import NetworkPlan
from testbed.record import Created, CreationRecord

SHARES_DIR = "servers"
"""`<run dir>/servers/<name>`: a remote server's share of the run dir, on that server."""
PUSHED_FILE = "pushed.txt"
"""In a share: the relative paths of the files not gathered back (one a line): those the driver pushed there, and a
live run's cores keeper's own record (the server's copy of what the driver's record holds)."""


def share_dir(run_dir: Path, server: str) -> Path:
    """Returns where server `server` keeps its share of the run dir (that path on that server)."""
    return run_dir.resolve() / SHARES_DIR / server


def python_on(repo: str) -> str:
    """Returns the interpreter of a server's checkout (its virtualenv, as scripts/setup.sh makes it)."""
    return f"{repo}/.venv/bin/python"


def gather_share(client: AgentClient, run_dir: Path, under: tuple[str, ...] = ()) -> int:
    """Copies the files of the server's share (only its folders `under`, if given) into the run dir at the same
    relative path, overwriting (the server's copy is the whole file: a record pulled while it grew is a prefix of
    it), then removes them there; the whole share, and `servers/` once empty, when `under` is empty. Files the
    driver pushed are left out. Returns how many files came back; raises AgentError if the server does not answer."""
    root = share_dir(run_dir, client.server.name)
    tops = [str(root / d) for d in under] or [str(root)]
    listed = client.run(["find", *tops, "-type", "f"], check=False).stdout.split("\n")
    pushed = set(client.run(["cat", str(root / PUSHED_FILE)], check=False).stdout.split("\n")) | {PUSHED_FILE}
    count = 0
    for remote in map(Path, filter(None, listed)):
        rel = remote.relative_to(root)
        if str(rel) in pushed or remote.name.endswith(".agent-new"):
            continue
        local = run_dir.resolve() / rel
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(client.read_all(str(remote)))
        count += 1
    client.run(["rm", "-rf", *tops], check=False)
    if not under:
        client.run(["rmdir", str(root.parent)], check=False)  # gone once every server's share is
    return count


@dataclass
class ServerSet:
    """The agents of a run's remote servers and what the build needs of the underlay."""

    placement: Placement
    clients: dict[str, AgentClient] = field(default_factory=dict)
    underlay: dict[str, Underlay] = field(default_factory=dict)
    rtt_ms: dict[tuple[str, str], float] = field(default_factory=dict)
    crossing: dict[str, CrossSpec] = field(default_factory=dict)
    controller_addr: str = "127.0.0.1"
    """Where the controller listens: the driver's underlay address when any switch is on another server."""

    @property
    def servers(self) -> dict[str, Server]:
        return {s.name: s for s in self.placement.remote}

    def spawn(self, server: str, name: str, argv: list[str], log_path: Path, record: CreationRecord) -> RemoteProc:
        """Starts a helper on a server through its agent (cwd its repository, its log there at the same path),
        recorded with that server's pid and start ticks; it dies with the agent (the wire's parent-death signal),
        so with this run's ssh."""
        client, repo = self.clients[server], self.servers[server].repo
        pid, ticks = client.spawn(argv, log=str(log_path.resolve()), cwd=repo, env={"PYTHONPATH": repo})
        record.add(Created("process", name, pid=pid, start_ticks=ticks, server=server))
        return RemoteProc(client, pid, ticks)

    def close(self, control_dir: str | None = None) -> None:
        """Ends the agents and, given the nodes' ssh control directory, their master connections (and removes it)."""
        for client in self.clients.values():
            client.close()
        self.clients.clear()
        if control_dir is not None:
            from testbed.remote import ssh_tt_argv

            for srv in self.placement.remote:
                argv = [a for a in ssh_tt_argv(srv, control_dir) if a != "-tt"]
                subprocess.run([*argv[:-1], "-O", "exit", argv[-1]], capture_output=True, timeout=10, check=False)
            shutil.rmtree(control_dir, ignore_errors=True)


class RemoteProc:
    """A helper process started on another server through its agent, with the part of Popen's interface the network
    uses (pid, poll, send_signal, terminate, kill, wait); its output is its log there (`stdout` None)."""

    stdout = None

    def __init__(self, client: AgentClient, pid: int, start_ticks: int) -> None:
        self.client, self.pid, self.start_ticks = client, pid, start_ticks
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """Returns its exit status, None while it runs; -255 once its agent is gone (which it does not outlive)."""
        if self.returncode is None:
            try:
                self.returncode = self.client.poll(self.pid)
            except AgentError:
                self.returncode = -255
        return self.returncode

    def send_signal(self, sig: int) -> None:
        with contextlib.suppress(AgentError):
            self.client.kill(self.pid, self.start_ticks, signal.Signals(sig).name)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid} on server {self.client.server.name}", timeout or 0)
            time.sleep(0.05)
        return self.returncode  # type: ignore[return-value]


def driver_underlay(peer_addr: str) -> Underlay:
    """Returns this machine's end of the underlay towards a server: the source address and device of its route,
    and that device's MTU."""
    route = json.loads(subprocess.run(["ip", "-j", "route", "get", peer_addr], capture_output=True, text=True,
                                      check=True).stdout)[0]
    dev = route["dev"]
    link = json.loads(subprocess.run(["ip", "-j", "link", "show", "dev", dev], capture_output=True, text=True,
                                     check=True).stdout)[0]
    return Underlay(addr=route["prefsrc"], dev=dev, mtu=int(link["mtu"]), commit=serverchecks.local_commit())


def connect(placement: Placement, plan: NetworkPlan, *, mtu: int, tdf: float, run_dir: Path) -> ServerSet:
    """Checks every remote server (preflight, exit 2 naming each problem), starts its agent, finds the underlay and
    its round trips, plans each crossing link and writes `servers.json`; raises PreflightError on a refusal."""
    found = serverchecks.require_servers(placement.remote)  # the MTU: per crossing link below, naming it
    out = ServerSet(placement)
    try:
        for r in found.reports:
            assert r.underlay_addr and r.underlay_dev and r.underlay_mtu
            out.underlay[r.server] = Underlay(r.underlay_addr, r.underlay_dev, r.underlay_mtu, r.commit)
        first = next(iter(out.underlay.values()))
        out.controller_addr = driver_underlay(first.addr).addr
        if LOCAL in plan.servers:
            out.underlay[LOCAL] = driver_underlay(first.addr)
        write_servers(run_dir, placement, out.underlay)
        for srv in placement.remote:
            try:
                out.clients[srv.name] = AgentClient(srv)
            except AgentError as e:
                raise PreflightError(str(e)) from None
        trunks = [(lk.name, lk.site_a, lk.site_b) for lk in plan.links if lk.kind == "trunk"]
        crossing = crossing_links(placement, trunks, out.underlay)
        out.rtt_ms = dict(found.rtt_ms)
        for link in crossing:
            pair = (link.server_a, link.server_b)
            if pair in out.rtt_ms or pair[::-1] in out.rtt_ms:
                continue
            remote = link.server_a if link.server_a != LOCAL else link.server_b
            other = link.addr_b if remote == link.server_a else link.addr_a
            got = serverchecks.underlay_rtt_ms(out.clients[remote], other)
            if got is None:
                raise PreflightError(f"server {remote} cannot reach {other} over the underlay (ping)")
            out.rtt_ms[pair] = got
        delays = {lk.name: lk.shape.delay_ms for lk in plan.links if lk.shape is not None}
        wire = check_crossing(crossing, delays, mtu, out.underlay, out.rtt_ms, tdf=tdf)
        for link in crossing:
            out.crossing[link.name] = CrossSpec(lines=crossserver.vxlan_add_lines(link, plan.run_id),
                                                wire_delay_ms=wire[link.name])
    except BaseException:
        out.close()
        raise
    return out
