"""The live run's cores: one live run at a time on this machine (the live-run lock), and a core of its own for
real inference. The run makes a cpuset `edge-testbed-<id>-real` (the reserved core, exclusive) for the inference
threads of its real ONNX workers and `edge-testbed-<id>-rest` (every other core) into which the orchestrator
moves before it forks anything, so that wires, controller, captures, schedulers, sources, profile-driven
workers and the real workers' own event loops stay off the reserved core; ovs-vswitchd's threads leave it for
the run. A run without real workers on this machine reserves no core: it has them all. A v2 group holds the
whole run for its CPU pressure (live/monitor.py). Everything is recorded in `<run dir>/cores/created.jsonl` before it is made, so teardown and `run_testbed.py clean` put it back
(testbed/record.py).

On another server with a real worker of the run the same is done there by a keeper (`python -m live.cores
--hold`, started through the server's agent): the same RunCores, its groups named after the server, held until the
run ends or the driver's ssh goes; the driver records the keeper and what it made (with the server), so teardown
and `clean` remove it through the agent too (docs/multihost.md).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from live.procs import pids_named
from testbed import cpuset
from testbed.agent import AgentClient, Server, die_with_parent
from testbed.multihost import PUSHED_FILE, python_on, share_dir
from testbed.placement import Placement, read_servers, write_servers
from testbed.record import RECORD_NAME, Created, CreationRecord, process_start_ticks

LOCK_PATH = Path("/run/edge-testbed/live.lock")
RECORD_DIR = "cores"
"""The subdirectory of the run dir holding the record of the run's cgroups and borrowed affinities."""
DAEMONS = ("ovs-vswitchd",)
"""System daemons the run does not own, moved off the reserved core for the run and put back after it."""
KEEPER_READY, KEEPER_BUSY = "READY ", "BUSY "
"""How a server's keeper says, in its log, that it holds the run's cores there (with what it made, JSON) or that
another live run holds that server."""
KEEPER_WAIT_S = 30.0
KEEPER_RECORD = f"{RECORD_DIR}/{RECORD_NAME}"
"""The keeper's own record, in its share: the server's copy, left out when the share is gathered."""


@dataclass(frozen=True)
class ServerCores:
    """The cores of a live run on another server, as its keeper made them (paths are that server's)."""

    server: str
    reserved: int | None
    """That server's core of real inference (None: no cpuset controller there, or one core)."""
    real_group: str | None
    inference_group: str | None
    """The `--inference-cgroup` of a real worker there (None: pin it to `--cpus` instead)."""
    run_groups: tuple[str, ...]
    """The groups every other process of the run there starts in (`-rest`, the pressure group)."""
    described: str


class LiveRunBusy(ValueError):
    """Another live run holds the live-run lock."""


class LiveRunLock:
    """The one-live-run lock: an exclusive flock on LOCK_PATH, which the kernel drops when its holder dies
    (kill -9 included), so no stale lock is ever left. The file says who holds it."""

    def __init__(self, path: Path = LOCK_PATH) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def acquire(self, run_dir: Path) -> None:
        """Takes the lock for a run in `run_dir`; raises LiveRunBusy naming the holder if another run has it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = self.path.open("a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip().split("\t")
            f.close()
            pid, where, since = (holder + ["?", "?", "?"])[:3]
            raise LiveRunBusy(f"another live run is running (pid {pid}, {where}, since {since}): a second one would "
                              "share its cores and spoil both runs' figures; wait for it to end") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\t{run_dir}\t{time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n")
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            self._file.truncate(0)
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class RunCores:
    """The cores of one live run (a context: made on enter, put back on exit)."""

    def __init__(self, run_dir: Path, log: Callable[[str], None] = print, lock: LiveRunLock | None = None,
                 real_inference: bool = True, label: str = "") -> None:
        self.run_dir = run_dir
        self.real_inference = real_inference
        """Whether the run has real ONNX workers: without them no core is reserved and the run has them all."""
        self.run_id = f"{os.getpid():x}{secrets.token_hex(2)}"
        self.label = label
        """Appended to the groups' names: a server's keeper gives its server's (servers may share a cgroup tree)."""
        self.lock = lock or LiveRunLock()
        self.record = CreationRecord(run_dir / RECORD_DIR)
        self.log = log
        self.reserved: int | None = None
        """The core of real inference (None: no real worker, no cpuset controller on this host, or one core)."""
        self.rest_cpus: list[int] = []
        self.real_group: Path | None = None
        self.rest_group: Path | None = None
        self.pressure_group: Path | None = None
        """The v2 group holding every process of the run (its `cpu.pressure`, `cpu.stat`), or None."""
        self.notes: list[str] = []
        self._started = False
        self._home: list[tuple[Path, Path]] = []
        """(hierarchy root, the group this process came from) per hierarchy it left."""
        self.servers: dict[str, ServerCores] = {}
        """The cores of the run on other servers, each held by its keeper (`hold_on`)."""
        self._clients: dict[str, AgentClient] = {}

    def __enter__(self) -> RunCores:
        """Takes the live-run lock (LiveRunBusy: another run has it), makes the groups and borrows the daemons'
        cores; this process stays where it is until `confine`."""
        try:
            self.lock.acquire(self.run_dir)
        except LiveRunBusy:
            with contextlib.suppress(OSError):
                self.run_dir.rmdir()  # the refused run's own folder, still empty
            raise
        try:
            self.record.start(f"{self.run_id}-cores")
            self._started = True
            self._reserve()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def confine(self) -> None:
        """Moves this process (and so everything it forks from now on) off the reserved core, and into the
        run's pressure group; logs what the run's cores are."""
        for group in self.run_groups():
            if group == self.rest_group:
                v2 = cpuset.hierarchy() == "v2"
                self._enter(cpuset.CGROUP_ROOT if v2 else cpuset.V1_CPUSET, group, "" if v2 else "cpuset")
            else:
                self._enter(group.parent, group, "")
        self.log(self.describe())

    def run_groups(self) -> list[Path]:
        """Returns the groups every process of the run but real inference joins: `-rest` (off the reserved core) and
        the pressure group, unless `-rest` is inside it (v2)."""
        groups = [] if self.rest_group is None else [self.rest_group]
        group = self.pressure_group
        if group is not None and (self.rest_group is None or not self.rest_group.is_relative_to(group)):
            groups.append(group)
        return groups

    def inference_group(self) -> str | None:
        """Returns the path of the `-real` cpuset as a real worker is to reach it (`--inference-cgroup`), or None
        without one: through this process's root (proc(5): /proc/PID/root gives PID's view of the file system,
        its mounts included), since a worker in a host's namespace has no cgroup hierarchy under its own /sys
        (`ip netns exec` mounts a sysfs of its own)."""
        return None if self.real_group is None else f"/proc/{os.getpid()}/root{self.real_group}"

    def _group(self, path: Path) -> Path:
        self.record.add(Created("cgroup", str(path)))
        return path

    def _reserve(self) -> None:
        kind = cpuset.hierarchy()
        cpus = sorted(os.sched_getaffinity(0))
        name = f"{cpuset.NAME_PREFIX}{self.run_id}" + (f"-{self.label}" if self.label else "")
        if not self.real_inference:
            self.notes.append(f"no real worker on this machine: the run has CPU {cpuset.format_cpus(cpus)}, no core "
                              "reserved")
        elif kind is None or len(cpus) < 2:
            self.notes.append("real inference shares the cores with the rest of the run: "
                              + ("no cpuset controller on this host" if kind is None else "one core only"))
        else:
            try:
                self._make_cpusets(kind, cpus, name)
            except OSError as exc:  # e.g. a container that shows the hierarchy read-only: run as without one
                self.notes.append(f"real inference shares the cores with the rest of the run: making its cpuset "
                                  f"failed ({exc})")
                self.reserved, self.real_group, self.rest_group, self.pressure_group = None, None, None, None
        root = cpuset.pressure_root()
        if self.pressure_group is None and root is not None:
            with contextlib.suppress(OSError):
                group = self._group(root / name)
                cpuset.make_group(group)
                self.pressure_group = group

    def _make_cpusets(self, kind: str, cpus: list[int], name: str) -> None:
        """Makes the -real and -rest cpusets (v2: under a run group, which is the pressure group too) and moves
        the daemons off the reserved core."""
        self.reserved, self.rest_cpus = cpus[-1], cpus[:-1]
        if kind == "v2":
            base = self._group(cpuset.CGROUP_ROOT / name)
            cpuset.make_group(base, ("cpuset",))
            self.pressure_group = base  # its pressure is that of both children
        else:
            base = cpuset.V1_CPUSET
        self.real_group = self._group(base / f"{name}-real")
        # v2: both threaded, so that a real worker (in -rest) can move its inference threads alone into -real
        note = cpuset.make_cpuset(self.real_group, [self.reserved], exclusive=True, threaded=kind == "v2")
        self.notes += [note] if note else []
        self.rest_group = self._group(base / f"{name}-rest")
        cpuset.make_cpuset(self.rest_group, self.rest_cpus, exclusive=False, threaded=kind == "v2")
        for daemon in DAEMONS:
            for pid in pids_named(daemon):
                self._borrow(daemon, pid)

    def _borrow(self, daemon: str, pid: int) -> None:
        """Moves a daemon's threads off the reserved core, recording their CPUs first."""
        with contextlib.suppress(OSError):
            saved = os.sched_getaffinity(pid)
            self.record.add(Created("affinity", daemon, pid=pid, start_ticks=process_start_ticks(pid),
                                    cpus=cpuset.format_cpus(saved)))
            keep = saved - {self.reserved}
            for problem in cpuset.set_thread_affinity(pid, keep or set(self.rest_cpus)):
                self.notes.append(f"{daemon}: {problem}")

    def _enter(self, root: Path, group: Path, controller: str) -> None:
        """Moves this process into `group`, remembering where it was (in `controller`'s hierarchy; '': v2)."""
        here = _current_group(controller)
        self._home.append((root, root / here.lstrip("/")))
        cpuset.move(os.getpid(), group)

    def describe(self) -> str:
        if self.reserved is None:
            return "; ".join(self.notes)
        return (f"real inference has CPU {self.reserved} to itself (cpuset {self.real_group}: the real workers' "
                f"inference threads); the rest of the run runs on CPU {cpuset.format_cpus(self.rest_cpus)}"
                + "".join(f"; {n}" for n in self.notes))

    def hold_on(self, server: Server) -> ServerCores:
        """Starts the run's cores on another server: its keeper (below) takes that server's live-run lock (LiveRunBusy
        naming the server if another run has it), makes its groups and borrows its daemons' cores until the run
        ends; returns what it made. Recorded here (its keeper, then its groups and daemons, with the server) and
        removed through the server's agent at exit, or by `clean` (`servers.json` beside the record says how to
        reach it)."""
        self._clients[server.name] = client = AgentClient(server)
        known = {**read_servers(self.record.run_dir), server.name: server}
        write_servers(self.record.run_dir, Placement(tuple(known.items()), ()), {})
        self.servers[server.name] = got = _start_keeper(client, self.record)
        self.log(f"server {server.name}: {got.described}")
        return got

    def __exit__(self, *exc: object) -> None:
        """Moves this process back where it was, then restores the daemons' affinity and removes the groups (those
        on other servers through their agents)."""
        for root, home in reversed(self._home):
            with contextlib.suppress(OSError):
                cpuset.move(os.getpid(), home if home.is_dir() else root)
        self._home.clear()
        try:
            problems = self.record.remove_all(self._clients) if self._started else []
        finally:
            for client in self._clients.values():
                client.close()
            self._clients.clear()
        self.lock.release()
        if problems:
            self.log(f"warning: the run's cores were not all put back (run `run_testbed.py clean --run-dir "
                     f"{self.run_dir}`):\n  " + "\n  ".join(problems))


def _current_group(controller: str) -> str:
    """Returns this process's group in a v1 controller's hierarchy, or in v2's ('')."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if (controller and controller in names.split(",")) or (not controller and names == ""):
            return path
    return "/"


# -- a server's keeper: the run's cores on another server ------------------------------------------------------

def _start_keeper(client: AgentClient, record: CreationRecord) -> ServerCores:
    """Starts the keeper on a server through its agent (its log and own record in its share of the cores' record
    dir), records it, waits until it holds the cores and records what it made there; raises LiveRunBusy naming the
    server if another live run holds it, RuntimeError if the keeper fails."""
    name, repo = client.server.name, client.server.repo
    share = share_dir(record.run_dir, name)
    client.write(str(share / PUSHED_FILE), f"{KEEPER_RECORD}\n".encode())
    log = str(share / f"keeper-{name}.log")
    argv = [python_on(repo), "-m", "live.cores", "--hold", str(share), "--label", name]
    pid, ticks = client.spawn(argv, log=log, cwd=repo, env={"PYTHONUNBUFFERED": "1"}, cgroups=[])
    record.add(Created("process", f"cores keeper {name}: {' '.join(argv)}", pid=pid, start_ticks=ticks, server=name))
    deadline = time.monotonic() + KEEPER_WAIT_S
    while (said := keeper_said(client.read_all(log).decode(errors="replace"))) is None:
        code = client.poll(pid)
        if code is not None or time.monotonic() > deadline:
            tail = client.read_all(log).decode(errors="replace").strip()[-2000:]
            raise RuntimeError(f"server {name}: the run's cores keeper "
                               f"{'exited with ' + str(code) if code is not None else 'did not start'}: {tail}")
        time.sleep(0.05)
    if said[0] == "busy":
        raise LiveRunBusy(f"server {name}: {said[1]}")
    made = json.loads(said[1])
    for entry in made["entries"]:  # after the keeper made them (its own record there was written before)
        record.add(Created(**{**entry, "server": name}))
    return ServerCores(name, made["reserved"], made["real_group"], made["inference_group"],
                       tuple(made["run_groups"]), made["described"])


def keeper_said(log_text: str) -> tuple[str, str] | None:
    """Returns ('ready', its JSON) or ('busy', the refusal) from a keeper's log, None while it says neither."""
    for line in log_text.splitlines():
        if line.startswith(KEEPER_READY):
            return "ready", line[len(KEEPER_READY):]
        if line.startswith(KEEPER_BUSY):
            return "busy", line[len(KEEPER_BUSY):]
    return None


def keeper_report(cores: RunCores) -> dict:
    """Returns what a keeper tells the driver: the groups, the `--inference-cgroup` path, and its record's entries."""
    return {"reserved": cores.reserved, "real_group": None if cores.real_group is None else str(cores.real_group),
            "inference_group": cores.inference_group(), "run_groups": [str(g) for g in cores.run_groups()],
            "described": cores.describe(),
            "entries": [{k: v for k, v in asdict(e).items() if v is not None}
                        for e in cores.record.entries() if e.kind not in ("run", "torn-down")]}


def _say(line: str) -> None:
    print(line, flush=True)


def _terminate(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def hold(run_dir: Path, label: str) -> int:
    """The keeper of a live run's cores on a server (started by the driver through that server's agent): takes the
    live-run lock, makes the groups and borrows the daemons' cores (RunCores, its record under `run_dir`), says
    READY with what it made, and puts everything back when it is stopped (SIGTERM) or its agent ends (the kernel
    sends SIGTERM then: the driver's ssh is gone); returns its exit status (2: another run holds the server)."""
    parent = os.getppid()
    signal.signal(signal.SIGTERM, _terminate)
    die_with_parent(signal.SIGTERM)
    if os.getppid() != parent:  # the agent ended before the line above
        return 0
    cores = RunCores(run_dir, _say, label=label)
    try:
        cores.__enter__()
    except LiveRunBusy as exc:
        _say(f"{KEEPER_BUSY}{exc}")
        return 2
    try:
        _say(cores.describe())
        _say(KEEPER_READY + json.dumps(keeper_report(cores)))
        while os.getppid() == parent:
            time.sleep(0.5)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not cut the restoring short
        cores.__exit__(None, None, None)
        _say("the run's cores are put back")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="the keeper of a live run's cores on a server (docs/multihost.md)")
    p.add_argument("--hold", type=Path, required=True, metavar="DIR", help="the folder of its record")
    p.add_argument("--label", required=True, help="the server's name, in the groups' names")
    args = p.parse_args(argv)
    return hold(args.hold, args.label)


if __name__ == "__main__":
    sys.exit(main())
