"""The live run's processes on other servers (docs/multihost.md): a worker, scheduler, source or capture whose
host's site is placed on a remote server starts there, in that host's namespace, through the server's agent.

Each remote server holds its share of the run dir at `<run dir>/servers/<name>` on that server, in the run dir's
own layout: the inputs its processes read (spec.json, trace.csv, network.json, workers.json, t0, and any input
file outside the repository) pushed by the driver, and what they write (logs, records, statistics, windows,
pcap). Every file goes through the agent, never a shared filesystem. The sources' records are pulled as they
grow (the run's records.csv and its monitor see them live); after the traffic the processes' outputs come back into
the one run dir, and the rest of the share (the network's files there: wires' statistics, `--check`) at teardown
(testbed.multihost.gather_share), when the share is removed.

Clocks: each server's offset from the driver's (testbed.clocksync) is measured once the network is up and again
after the traffic. Its share's spec, t0 and workers' time scale are shifted by the first figure, so that its
processes start at the driver's t0 and their records (times since t0) line up with the driver's.

Every server of the run holds its live-run lock for the run, and one holding a real worker of the run gets the run's
cores there as the driver has them here (live/keeper.py, its keeper started before the network by
`reserve_on_servers`, and told again once profiling has settled which workers are real): every process of the run
the server's agent spawns (wires, workers, schedulers, sources, captures) starts in that server's `-rest`, a real
worker's inference threads move into its `-real`; where it has no cpuset controller or one core, that worker is
pinned to the server's last CPU (`--cpus`) instead.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from live.cores import RunCores, ServerCores
from live.plan import WorkerPlan
from live.procs import REPO_ROOT, Proc
from live.rundir import RunDir
from live.sendlag import opens_path
from live.spec import RunSpec, write_spec
from scheduler.aset.meta import agent_path
from testbed.agent import AgentClient, AgentError
from testbed.capture import CAPTURE_BUFFER_KIB
from testbed.clocksync import ClockOffset, measure
from testbed.multihost import PUSHED_FILE, RemoteProc, gather_share, python_on, share_dir
from testbed.network import EmulatedNetwork, Host
from testbed.placement import LOCAL, Placement, parse_place, parse_servers
from testbed.plan import HOST_IFNAME
from testbed.record import Created

OUTPUTS = ("logs", "records", "schedulers", "windows", "pcap")
"""The folders of a share whose files come back into the run dir after the traffic (the rest at teardown)."""


@dataclass
class Share:
    """One remote server's part of the run: its agent, its share of the run dir there, its clock."""

    name: str
    client: AgentClient
    root: Path
    """The share's folder on the server (a run dir's layout)."""
    repo: str
    clock: ClockOffset
    last_cpu: int
    """The CPU a real worker there is pinned to where the server has no cores of the run's own."""
    cores: ServerCores | None = None
    """The run's cores there (None: no real worker there)."""
    pushed: dict[str, str] = field(default_factory=dict)
    """Driver path -> server path of every input file pushed there."""
    manifest: list[str] = field(default_factory=list)
    """The share's relative paths the driver wrote (its `pushed.txt`: not gathered back)."""

    @property
    def offset_s(self) -> float:
        return self.clock.offset_ms / 1000.0

    def push_bytes(self, data: bytes, remote: str) -> str:
        self.client.write(remote, data)
        rel = str(Path(remote).relative_to(self.root))
        if rel not in self.manifest:
            self.manifest.append(rel)
            self.client.write(str(self.root / PUSHED_FILE), "".join(f"{r}\n" for r in self.manifest).encode())
        return remote

    def push(self, local: Path, remote: str) -> str:
        self.pushed[str(local)] = self.push_bytes(local.read_bytes(), remote)
        return remote

    def read(self, remote: str, offset: int = 0) -> bytes:
        """Returns the server file's bytes from `offset` to its end (b"" if it does not exist)."""
        try:
            return self.client.read_all(remote, offset)
        except AgentError:
            return b""


class PlacedRun:
    """The remote servers' shares of a live run while its network is up (None where every site is local)."""

    def __init__(self, run_dir: RunDir, net: EmulatedNetwork, log: Callable[[str], None],
                 cores: RunCores | None = None) -> None:
        assert net.servers is not None
        self.dir, self.net, self.log, self.cores = run_dir, net, log, cores
        self.shares: dict[str, Share] = {}
        self.pulled: dict[Path, int] = {}
        """Local file (a source's records part, or its openings log) -> bytes pulled so far."""
        self.captures: list[tuple[str, Proc]] = []
        self.clock_end: dict[str, ClockOffset] = {}
        self.gathered: dict[str, int | None] = {}
        """Per server, the output files that came back after the traffic (None: they could not be gathered)."""
        for name, client in net.servers.clients.items():
            clock = measure(client)
            repo = net.servers.servers[name].repo
            cpu = client.run([python_on(repo), "-c", "import os; print(max(os.sched_getaffinity(0)))"]).stdout
            share = Share(name, client, share_dir(run_dir.root, name), repo, clock, int(cpu),
                          cores.servers.get(name) if cores is not None else None)
            client.run(["mkdir", "-p", *(str(share.root / d) for d in OUTPUTS)])
            self.shares[name] = share
            chrony = "" if clock.chrony_offset_ms is None else f" (chrony there: {clock.chrony_offset_ms:+.3f} ms)"
            log(f"clock {name}: {clock.offset_ms:+.3f} ms +- {clock.bound_ms:.3f} ms from the driver's{chrony}; its "
                f"processes' t0 and time scale are shifted by it")

    @classmethod
    def open(cls, run_dir: RunDir, net: EmulatedNetwork, log: Callable[[str], None],
             cores: RunCores | None = None) -> PlacedRun | None:
        return None if net.servers is None else cls(run_dir, net, log, cores)

    def share_of(self, host: Host | None) -> Share | None:
        """Returns the share of the server a host lives on (None: this machine)."""
        if host is None or host.plan.server == LOCAL:
            return None
        return self.shares[host.plan.server]

    # -- inputs ----------------------------------------------------------------------------------------

    def path_on(self, share: Share, local: str | Path) -> str:
        """Returns where a driver path is on a server: a pushed input's copy, the same place in the share for a
        run dir path, the same path for the repository's virtualenv (preflight), else any other file pushed now
        (a file of the repository too: one under runs/ is not in the commit the server has)."""
        text = str(local)
        if text in share.pushed:
            return share.pushed[text]
        path = Path(text)
        if not path.is_absolute():
            return text
        with contextlib.suppress(ValueError):
            return str(share.root / path.relative_to(self.dir.root))
        if path.is_relative_to(REPO_ROOT / ".venv") or text == sys.executable:
            return text
        if path.is_file():
            return share.push(path, str(share.root / "inputs" / f"{len(share.pushed)}-{path.name}"))
        return text

    def push_inputs(self, spec: RunSpec) -> None:
        """Pushes to every share what its processes read before the workers are up: its spec (its clock's
        anchor, its paths), the trace, the network's description and the run's own profile if any."""
        for share in self.shares.values():
            for local in (self.dir.trace, self.dir.network, self.dir.profiles):
                if local.exists():
                    share.push(local, self.path_on(share, local))

            def where(p: Path | None, s: Share = share) -> Path | None:
                return None if p is None else Path(self.path_on(s, p))

            theirs = replace(spec, out=share.root, topo=self.path_on(share, spec.topo), profiles=where(spec.profiles),
                             agent=where(agent_path(spec.agent).resolve() if spec.agent else None),
                             trace=where(spec.trace), events=where(spec.events),
                             tdf_anchor_s=round(spec.tdf_anchor_s + share.offset_s, 6))
            with tempfile.TemporaryDirectory() as tmp:
                write_spec(theirs, Path(tmp) / "spec.json")
                share.push_bytes((Path(tmp) / "spec.json").read_bytes(), self.path_on(share, self.dir.spec))

    def clock_ms(self, host: Host | None) -> float:
        """Returns how far the clock of a host's server is ahead of the driver's, in ms (0: this machine)."""
        share = self.share_of(host)
        return 0.0 if share is None else share.clock.offset_ms

    def push_workers(self) -> None:
        """Pushes the workers' table (their addresses; each worker's clock offset made relative to that server's
        own) to every share, before the schedulers start."""
        table = json.loads(self.dir.workers.read_text())
        for share in self.shares.values():
            theirs = workers_seen_from(table, share.clock.offset_ms)
            remote = self.path_on(share, self.dir.workers)
            share.pushed[str(self.dir.workers)] = share.push_bytes((json.dumps(theirs, indent=1) + "\n").encode(), remote)

    def write_t0(self, t0_s: float) -> None:
        """Writes the run's t0 on every server, on that server's clock."""
        for share in self.shares.values():
            share.push_bytes(f"{t0_s + share.offset_s:.6f}\n".encode(), self.path_on(share, self.dir.t0))

    # -- processes -------------------------------------------------------------------------------------

    def start(self, proc: Proc) -> None:
        """Starts a process of the run on its host's server (in the host's namespace and the server's groups of the
        run, dying with the agent), recorded there; its log is read through the agent."""
        share = self.share_of(proc.host)
        assert share is not None and proc.host is not None
        argv = [self.path_on(share, a) for a in proc.argv]
        if argv and argv[0] == sys.executable:  # the server's own checkout's interpreter (preflight checked it)
            argv[0] = python_on(share.repo)
        if proc.real_inference:  # that server's cores, this machine's cpuset not being there
            group = share.cores.inference_group if share.cores is not None else None
            argv = real_worker_argv(argv, group, share.last_cpu)
        if "--tdf-anchor-s" in argv:
            anchor = float(argv[argv.index("--tdf-anchor-s") + 1])
            argv = _with_option(argv, "--tdf-anchor-s", repr(round(anchor + share.offset_s, 6)))
        log = self.path_on(share, proc.log)
        pid, ticks = share.client.spawn(argv, log=log, env={"PYTHONUNBUFFERED": "1"}, cwd=share.repo,
                                        netns=proc.host.netns, die_with_agent=True)
        self.net.record.add(Created("process", f"{proc.name}: {shlex.join(argv)}", pid=pid, start_ticks=ticks,
                                    server=share.name))
        proc.popen = RemoteProc(share.client, pid, ticks)  # type: ignore[assignment]
        proc.remote_log = lambda: share.read(log).decode(errors="replace")

    def start_captures(self, hosts: Sequence[str], snaplen: int) -> list[str]:
        """Starts tcpdump on each remote host of `hosts` (into its share's pcap/); returns the local ones left."""
        local = []
        for name in hosts:
            host = self.net.host(name)
            share = self.share_of(host)
            if share is None:
                local.append(name)
                continue
            pcap = self.dir.pcap / f"{name}.pcap"
            argv = ["tcpdump", "-i", HOST_IFNAME, "-n", "-U", "-Z", "root", "-B", str(CAPTURE_BUFFER_KIB),
                    "-s", str(snaplen), "-w", str(pcap)]
            proc = Proc(f"tcpdump {name}", host, argv, self.dir.pcap / f"{name}.tcpdump.log")
            self.start(proc)
            self.captures.append((name, proc))
        deadline = time.monotonic() + 10.0
        for name, proc in self.captures:  # tcpdump says "listening on ..." once its socket is open
            while "listening on" not in proc.log_text():
                if not proc.running() or time.monotonic() > deadline:
                    raise RuntimeError(f"tcpdump on {name} did not start: {proc.log_text()}")
                time.sleep(0.05)
        return local

    def stop_captures(self) -> None:
        for _, proc in self.captures:
            proc.stop(5.0)

    # -- outputs ---------------------------------------------------------------------------------------

    def pull_records(self, parts: Sequence[Path]) -> None:
        """Appends what the remote sources added to their records, then to their openings logs, since the last
        pull to the local files, records first: a source writes its openings before its records, so each record pulled
        has its opening in the openings log pulled just after it (live/source.py flushes the
        openings first)."""
        for share in self.shares.values():
            for part in parts:
                if not self._is_remote(part, share):
                    continue
                for local in (part, opens_path(part)):
                    new = share.read(self.path_on(share, local), self.pulled.get(local, 0))
                    if new:
                        with local.open("ab") as f:
                            f.write(new)
                        self.pulled[local] = self.pulled.get(local, 0) + len(new)

    def _is_remote(self, part: Path, share: Share) -> bool:
        antenna = part.stem
        return self.net.plan.host_for("sources", antenna).server == share.name

    def gather(self) -> dict[str, int]:
        """Copies the processes' outputs of every share into the run dir (same relative path) and removes them there,
        then measures the clocks again; returns {server: files gathered}. The rest of a share (the wires'
        statistics, written when the network stops) comes back at teardown."""
        counts = {}
        for share in self.shares.values():
            try:  # one server not answering loses none of the others' files; its own stay there for `clean`
                counts[share.name] = self.gathered[share.name] = gather_share(share.client, self.dir.root, OUTPUTS)
            except (AgentError, OSError, ValueError) as exc:  # the agent gone, its pipe broken, a file unwritable
                self.gathered[share.name] = None
                self.log(f"warning: server {share.name}: its outputs could not be gathered ({exc}); they stay in "
                         f"its share {share.root} (`run_testbed.py clean --run-dir {self.dir.root}` brings them back)")
                continue
            with contextlib.suppress(AgentError):
                self.clock_end[share.name] = measure(share.client)
        self.log("gathered from the servers: " + ", ".join(f"{n} {c} files" for n, c in counts.items()))
        return counts

    def summary(self) -> dict[str, dict]:
        """Returns summary.json's `network.servers`: per remote server its sites, clock offset (at the start, by
        which its processes' times were shifted, and after the traffic) and its cores of real inference: `isolated`
        (its `-real` cpuset, `real_inference_cpuset`), `pinned` (`--cpus`: no cpuset controller there, or one core)
        or None (no real worker there), with what its keeper said (`cores`) and, if it was found gone during the run,
        when and why (`cores_lost`)."""
        out = {}
        keepers = self.cores.keepers if self.cores is not None else {}
        for name, share in self.shares.items():
            end = self.clock_end.get(name)
            cores = share.cores if share.cores is not None and share.cores.real_workers else None
            isolated = cores is not None and cores.inference_group is not None
            out[name] = {
                "sites": [s for s, on in self.net.placement.sites if on == name],
                "outputs_gathered": self.gathered.get(name),
                "clock_offset_ms": round(share.clock.offset_ms, 4),
                "clock_bound_ms": round(share.clock.bound_ms, 4),
                "chrony_offset_ms": share.clock.chrony_offset_ms,
                "clock_offset_end_ms": None if end is None else round(end.offset_ms, 4),
                "clock_bound_end_ms": None if end is None else round(end.bound_ms, 4),
                "real_inference": None if cores is None else "isolated" if isolated else "pinned",
                "real_worker_cpu": cores.reserved if isolated else share.last_cpu,
                "real_inference_cpuset": cores.real_group if isolated else None,
                "cores": None if share.cores is None else share.cores.described,
                "cores_lost": keepers[name].lost if name in keepers else None,
            }
        return out


def placement_of(spec: RunSpec, sites: Sequence[str]) -> Placement:
    """Returns the placement `--servers`, `--place` and `--ssh-options` give (everything here without them); raises
    ValueError naming the option at fault. Network events apply across servers as on one (testbed/events.py: a
    wire on another server is reshaped through its agent)."""
    try:
        ssh_options = shlex.split(spec.ssh_options or "")
    except ValueError as e:
        raise ValueError(f"--ssh-options: {e}") from None
    return parse_place(spec.place, sites, parse_servers(spec.servers, ssh_options))


def reserve_on_servers(cores: RunCores, placement: Placement, plans: Sequence[WorkerPlan]) -> Placement:
    """Holds the run's cores on every other server holding a site (RunCores.hold_on: its live-run lock, LiveRunBusy naming a server
    another run holds, and its core of real inference where `plans` put a real worker), and this machine's core of
    real inference if `plans` put a real worker here; called again with the plans profiling settled, it reserves
    the cores they add (a core reserved stays so for the run). Returns the placement whose servers start every
    process of the run in their groups of the run (`Server.cgroups`: their agents put what they spawn there)."""
    real, used = real_servers(placement, plans), {s.name for s in placement.remote}
    if LOCAL in real:
        cores.reserve_real()
    servers = []
    for name, srv in placement.servers:
        if srv is not None and name in used:
            srv = replace(srv, cgroups=cores.hold_on(srv, real=name in real).run_groups)
        servers.append((name, srv))
    return replace(placement, servers=tuple(servers))


def real_servers(placement: Placement, plans: Sequence[WorkerPlan]) -> set[str]:
    """Returns the servers (LOCAL: this machine) holding a real worker of `plans`."""
    return {placement.site_server(p.site) for p in plans if p.real}


def real_worker_argv(argv: list[str], inference_group: str | None, last_cpu: int) -> list[str]:
    """Returns a real worker's argv for its server: its inference threads into that server's `-real` cpuset (the
    path valid there), or, without one, the whole worker pinned to the server's last CPU."""
    if inference_group is not None:
        return _with_option(_without_option(argv, "--cpus"), "--inference-cgroup", inference_group)
    return _with_option(_without_option(argv, "--inference-cgroup"), "--cpus", str(last_cpu))


def workers_seen_from(table: dict[str, dict], server_offset_ms: float) -> dict[str, dict]:
    """Returns the workers' table as a server `server_offset_ms` ahead of the driver reads it: each worker's
    `clock_offset_ms` (from the driver's clock) made relative to that server's."""
    return {name: {**w, "clock_offset_ms": round(w.get("clock_offset_ms", 0.0) - server_offset_ms, 4)}
            for name, w in table.items()}


def _without_option(argv: list[str], flag: str) -> list[str]:
    """Returns argv without `flag value`."""
    if flag not in argv:
        return argv
    i = argv.index(flag)
    return [*argv[:i], *argv[i + 2:]]


def _with_option(argv: list[str], flag: str, value: str) -> list[str]:
    """Returns argv with `flag value` set: replaced where it is, appended where it is not."""
    if flag in argv:
        i = argv.index(flag)
        return [*argv[:i + 1], value, *argv[i + 2:]]
    return [*argv, flag, value]
