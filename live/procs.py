"""The processes of a live run: starting one in its host, waiting until each has printed `READY`, stopping
them group by group, and accounting for the CPU every process serving the run used (`cpu.json`), on every server:
this machine's through psutil, each other server's (its processes of the run, its agents, its keeper and its
ovs-vswitchd) from its /proc by one request to its agent per reading.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from testbed.network import Host
from testbed.placement import LOCAL
from workers.lifecycle import ready_address

REPO_ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 120.0


@dataclass
class Proc:
    """A process of the run, the host it runs in and its log file."""

    name: str
    host: Host | None
    """The emulated host it runs in (None: this machine's own network, e.g. a benchmark on loopback)."""
    argv: list[str]
    log: Path
    popen: subprocess.Popen | None = None
    url: str = ""
    """What it printed after READY (a service's address; empty for a source)."""
    remote_log: Callable[[], str] | None = None
    """Reads its log where it runs on another server (live/placed.py); None: `log` is here."""
    real_inference: bool = False
    """A worker running real ONNX inference (pinned to a core of its own where it runs)."""

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("a") as f:
            options = dict(stdout=f, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            self.popen = (subprocess.Popen(self.argv, **options) if self.host is None  # type: ignore[call-overload]
                          else self.host.popen(self.argv, **options))

    def log_text(self) -> str:
        """Returns its log so far ("" before it has one)."""
        if self.remote_log is not None:
            return self.remote_log()
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    @property
    def local(self) -> bool:
        """Whether it runs on this machine (its pid is one of this machine's)."""
        return isinstance(self.popen, subprocess.Popen)

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """Stops the process (SIGTERM, then SIGKILL after `timeout_s`); returns its exit status."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.terminate()
        try:
            return self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait(timeout_s)

    def kill(self) -> None:
        """SIGKILLs the process at once (a fault the run injects)."""
        if self.popen is not None and self.running():
            self.popen.kill()
            self.popen.wait(5)


def wait_ready(procs: list[Proc], timeout_s: float = READY_TIMEOUT_S) -> None:
    """Waits until every process printed `READY <url>`; raises naming the first that died or is late."""
    deadline = time.monotonic() + timeout_s
    pending = list(procs)
    while pending:
        for p in list(pending):
            text = p.log_text()
            ready = [a for a in map(ready_address, text.splitlines()) if a is not None]
            if ready:
                p.url = ready[-1]
                pending.remove(p)
            elif not p.running():
                raise RuntimeError(
                    f"{p.name} exited before it was ready; its log {p.log}:\n"
                    + "\n".join(text.splitlines()[-15:])
                )
        if pending and time.monotonic() > deadline:
            raise RuntimeError(f"{pending[0].name} not ready after {timeout_s:.0f} s; see {pending[0].log}")
        time.sleep(0.1)


def stop_groups(groups: Iterable[list[Proc]]) -> None:
    """Stops the groups in order, each group's processes at once (SIGTERM to all, then wait for each)."""
    for group in groups:
        for p in group:
            if p.running():
                p.popen.terminate()  # type: ignore[union-attr]
        for p in group:
            p.stop()


def cpu_seconds(pid: int) -> float | None:
    """Returns a process's user + system CPU time in seconds (None if it is gone)."""
    try:
        t = psutil.Process(pid).cpu_times()
    except (psutil.Error, OSError):
        return None
    return t.user + t.system


_NAMED: dict[str, list[int]] = {}


def pids_named(name: str) -> list[int]:
    """Returns the ids of the processes with this name (as `pidof` finds them); the last answer is reused while
    those processes still bear the name (a scan of every process costs milliseconds, the monitor asks each second)."""
    known = [pid for pid in _NAMED.get(name, []) if _comm(pid) == name]
    if known:
        return known
    _NAMED[name] = [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == name]
    return _NAMED[name]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


Process = tuple[str, str, int]
"""(group, name, pid) of a process serving the run (the pid its server's)."""
REMOTE_STAT_SCRIPT = 'getconf CLK_TCK; for p in "$@" $(pidof ovs-vswitchd); do cat "/proc/$p/stat" 2>/dev/null; done; true'
"""What another server runs for a CPU reading (one agent request): its clock tick, then /proc/PID/stat of the pids
given and of its ovs-vswitchd."""


@dataclass(frozen=True)
class ProcCpu:
    """A process serving the run and its CPU seconds so far (user + system), on its server."""

    group: str
    name: str
    pid: int
    cpu_s: float
    server: str = LOCAL

    @property
    def label(self) -> str:
        """`name (pid)` on this machine, `name (pid@server)` on another (as monitor.jsonl names them)."""
        return f"{self.name} ({self.pid})" if self.server == LOCAL else f"{self.name} ({self.pid}@{self.server})"


@dataclass
class CpuSnapshot:
    """The CPU seconds so far of every process serving the run, on every server read."""

    procs: dict[str, ProcCpu] = field(default_factory=dict)
    """label -> reading."""
    servers: list[str] = field(default_factory=lambda: [LOCAL])
    """The servers asked, this machine first."""
    unread: dict[str, str] = field(default_factory=dict)
    """Server -> why it could not be read."""

    def add(self, readings: Iterable[ProcCpu]) -> None:
        self.procs.update((r.label, r) for r in readings)


def run_processes(groups: dict[str, list[Proc]], helpers: list[tuple[str, subprocess.Popen]]) -> list[Process]:
    """Returns (group, name, pid) of every process that serves the run: the run's own (per group), the
    network's helpers (wires, controller), Open vSwitch's daemon and this orchestrator; those of this machine only
    (a process on another server has a pid of that server's; an ovs-vswitchd of another PID namespace is another
    server's, as on the fixture of tests/servers.py)."""
    procs: list[Process] = []
    for group, items in groups.items():
        procs += [(group, p.name, p.popen.pid) for p in items if p.popen is not None and p.local]
    procs += [(_helper_group(name), name, p.pid) for name, p in helpers if isinstance(p, subprocess.Popen)]
    procs += [("ovs-vswitchd", "ovs-vswitchd", pid) for pid in pids_named("ovs-vswitchd") if _same_pidns(pid)]
    procs += [("orchestrator", "orchestrator", os.getpid())]
    return procs


def run_groups(run: Any) -> dict[str, list[Proc]]:
    """Returns the processes a live run (live.orchestrate.LiveRun) started itself, per group."""
    return {"workers": run.workers, "schedulers": list(run.schedulers.values()), "sources": run.sources}


def servers_processes(run: Any, net: Any) -> dict[str, list[Process]]:
    """Returns per other server of a live run's network the processes serving the run there (`remote_processes`;
    none on one machine)."""
    servers = getattr(net, "servers", None)
    if servers is None:
        return {}
    keepers = run.cores.keepers if run.cores is not None else {}
    return remote_processes(run_groups(run), getattr(net, "_helpers", []), keepers, servers.clients)


def remote_processes(groups: dict[str, list[Proc]], helpers: list[tuple[str, Any]],
                     keepers: Mapping[str, Any], clients: Mapping[str, Any]) -> dict[str, list[Process]]:
    """Returns per other server (those of `clients`, agents by server name) the processes serving the run there:
    the run's own started through its agent (per group), the network's helpers there (wires), the keeper of the
    run's cores (`keepers`: live.keeper.Keeper by server) and the agents themselves (the network's, the keeper's).
    Its ovs-vswitchd is found there when it is read (`remote_cpu`)."""
    out: dict[str, list[Process]] = {name: [] for name in clients}

    def server_of(popen: Any) -> str | None:
        client = getattr(popen, "client", None)  # testbed.multihost.RemoteProc
        return None if client is None or isinstance(popen, subprocess.Popen) else client.server.name

    for group, items in groups.items():
        for p in items:
            where = server_of(p.popen)
            if where in out:
                out[where].append((group, p.name, p.popen.pid))  # type: ignore[union-attr]
    for name, h in helpers:
        where = server_of(h)
        if where in out:
            out[where].append((_helper_group(name), name, h.pid))
    for name, client in clients.items():
        out[name].append(("agent", "agent", int(client.hello["pid"])))
        keeper = keepers.get(name)
        if keeper is not None:
            out[name].append(("keeper", "cores keeper", keeper.pid))
            if keeper.client is not client:
                out[name].append(("agent", "cores agent", int(keeper.client.hello["pid"])))
    return out


def _helper_group(name: str) -> str:
    return "wires" if name.startswith("wire") else name


def _same_pidns(pid: int) -> bool:
    """Whether a process is in this one's PID namespace (True where it cannot be told)."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid") == os.readlink("/proc/self/ns/pid")
    except OSError:
        return True


def cpu_snapshot(procs: list[Process]) -> CpuSnapshot:
    """Returns the CPU seconds so far of this machine's processes `run_processes` lists."""
    snap = CpuSnapshot()
    for group, name, pid in procs:
        cpu = cpu_seconds(pid)
        if cpu is not None:
            snap.add([ProcCpu(group, name, pid, cpu)])
    return snap


def parse_proc_stats(text: str) -> dict[int, tuple[str, float]]:
    """Returns {pid: (command name, user + system CPU seconds)} from REMOTE_STAT_SCRIPT's output: the clock tick
    (`getconf CLK_TCK`) on the first line, then /proc/PID/stat lines (utime and stime are fields 14 and 15)."""
    lines = text.splitlines()
    if not lines or not lines[0].strip().isdigit():
        raise ValueError(f"no clock tick first in {text[:80]!r}")
    tick = int(lines[0])
    out = {}
    for line in lines[1:]:
        head, sep, rest = line.rpartition(")")
        fields = rest.split()
        if not sep or "(" not in head or len(fields) < 13:
            continue
        pid, comm = head.split("(", 1)
        out[int(pid)] = (comm, (int(fields[11]) + int(fields[12])) / tick)
    return out


def remote_cpu(client: Any, procs: list[Process]) -> list[ProcCpu]:
    """Returns the CPU seconds so far of processes on another server and of its ovs-vswitchd, read by one request to
    its agent (`client`, testbed.agent.AgentClient; pids are that server's); raises AgentError if it does not answer.
    """
    pids = [str(pid) for _, _, pid in procs]
    done = client.run(["sh", "-c", REMOTE_STAT_SCRIPT, "sh", *pids], check=False, timeout_s=10.0)
    stats = parse_proc_stats(done.stdout)
    server = client.server.name
    out = [ProcCpu(g, n, pid, stats[pid][1], server) for g, n, pid in procs if pid in stats]
    listed = {pid for _, _, pid in procs}
    out += [ProcCpu("ovs-vswitchd", "ovs-vswitchd", pid, cpu_s, server)
            for pid, (comm, cpu_s) in stats.items() if comm == "ovs-vswitchd" and pid not in listed]
    return out


def run_cpu(run: Any, net: Any) -> CpuSnapshot:
    """Returns the CPU seconds so far of every process serving a live run (live.orchestrate.LiveRun) on its network,
    on every server: this machine's (`run.processes`), then each other server's by one request to its agent
    (`remote_processes`, `remote_cpu`); a server that does not answer is named in `unread`."""
    from testbed.agent import AgentError

    snap = cpu_snapshot(run.processes(net))
    servers = getattr(net, "servers", None)
    if servers is None:
        return snap
    for name, procs in servers_processes(run, net).items():
        snap.servers.append(name)
        try:
            snap.add(remote_cpu(servers.clients[name], procs))
        except (AgentError, ValueError) as e:
            snap.unread[name] = str(e)
    return snap


def cpu_record(before: CpuSnapshot, after: CpuSnapshot, seconds: float) -> dict:
    """Returns cpu.json: the CPU seconds of each process and group during the traffic (after - before; a process
    started meanwhile counts from 0), over every server (`groups_cpu_s`, `processes_cpu_s` labelled by
    `ProcCpu.label`), and per server (`servers`: this machine's as `local`, each one's groups and processes by
    `name (pid)`, its ovs-vswitchd included, and `unread` where its agent did not answer)."""
    total_groups: dict[str, float] = {}
    per_proc: dict[str, float] = {}
    servers: dict[str, dict] = {s: {"groups_cpu_s": {}, "processes_cpu_s": {}} for s in after.servers}
    for label, r in after.procs.items():
        old = before.procs.get(label)
        cpu_s = round(r.cpu_s - (old.cpu_s if old is not None else 0.0), 2)
        per_proc[label] = cpu_s
        total_groups[r.group] = round(total_groups.get(r.group, 0.0) + cpu_s, 2)
        mine = servers.setdefault(r.server, {"groups_cpu_s": {}, "processes_cpu_s": {}})
        mine["groups_cpu_s"][r.group] = round(mine["groups_cpu_s"].get(r.group, 0.0) + cpu_s, 2)
        mine["processes_cpu_s"][f"{r.name} ({r.pid})"] = cpu_s
    for name, why in {**before.unread, **after.unread}.items():
        servers.setdefault(name, {"groups_cpu_s": {}, "processes_cpu_s": {}})["unread"] = why
    return {"traffic_wall_s": round(seconds, 2), "groups_cpu_s": total_groups, "processes_cpu_s": per_proc,
            "servers": servers}


def write_cpu(path: Path, before: CpuSnapshot, after: CpuSnapshot, seconds: float) -> dict[str, float]:
    """Writes cpu.json (`cpu_record`); returns the groups' CPU seconds over every server."""
    record = cpu_record(before, after, seconds)
    path.write_text(json.dumps(record, indent=1) + "\n")
    return record["groups_cpu_s"]
