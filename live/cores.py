"""The live run's cores: one live run at a time on this machine (the live-run lock), and a core of its own for
real inference. The run makes a cpuset `edge-testbed-<id>-real` (the reserved core, exclusive) for the inference
threads of its real ONNX workers and `edge-testbed-<id>-rest` (every other core) into which the orchestrator
moves before it forks anything, so that wires, controller, captures, schedulers, sources, profile-driven
workers and the real workers' own event loops stay off the reserved core; ovs-vswitchd's threads leave it for
the run. A run without real workers on this machine reserves no core: it has them all. A v2 group holds the
whole run for its CPU pressure (live/monitor.py). Everything is recorded in `<run dir>/cores/created.jsonl` before it is made, so teardown and `run_testbed.py clean` put it back
(testbed/record.py).

On every other server of the run the same is done there by a keeper (live/keeper.py, started through the server's
agent): the same RunCores, its groups named after the server, held until the run ends or the driver's ssh goes;
the driver records what it will make (with the server) before it makes it, so teardown and `clean` remove it
through the agent too, and watches it (docs/multihost.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING

from live.procs import pids_named
from testbed import cpuset
from testbed.agent import AgentClient, Server
from testbed.multihost import SHARES_DIR
from testbed.placement import Placement, read_servers, write_servers
from testbed.record import Created, CreationRecord, daemon_changes_left, process_start_ticks

if TYPE_CHECKING:
    from live.keeper import Keeper

LOCK_PATH = Path("/run/edge-testbed/live.lock")
RECORD_DIR = "cores"
"""The subdirectory of the run dir holding the record of the run's cgroups and borrowed affinities."""
DAEMONS = ("ovs-vswitchd",)
"""System daemons the run does not own, moved off the reserved core for the run and put back after it."""


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
    real_workers: bool = True
    """Whether the run's plan has a real worker there (a core reserved before profiling stays if it has none)."""
    pressure_group: str | None = None
    """The v2 group holding every process of the run there (its `cpu.pressure`), or None."""


class LiveRunBusy(ValueError):
    """Another live run holds the live-run lock."""


class LiveRunLock:
    """The one-live-run lock: an exclusive flock on LOCK_PATH, which the kernel drops when its holder dies
    (kill -9 included), so no stale lock is ever left. The file says who holds it. Taken again by its holder it
    counts, and is let go at the last release (a command's runs inside the command's hold: `live_command`)."""

    def __init__(self, path: Path = LOCK_PATH) -> None:
        self.path = path
        self._file: IO[str] | None = None
        self._depth = 0

    def acquire(self, run_dir: Path) -> None:
        """Takes the lock for a run in `run_dir` (once more, if this object holds it); raises LiveRunBusy naming
        the holder if another run has it, or naming a run killed without teardown whose changes to a daemon
        (testbed.record.daemon_changes_left) are still in effect."""
        if self._file is not None:
            self._depth += 1
            return
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
        try:
            if left := daemon_changes_left():
                record_dir, e = left[0]
                run = record_dir.parent if record_dir.name == RECORD_DIR else record_dir
                fix = "run `run_testbed.py clean` first"
                if run.parent.name == SHARES_DIR:  # this server's share of a run driven from another machine
                    run, fix = run.parent.parent, ("run `run_testbed.py clean` on that run's driver (its record "
                                                   f"holds this server's entries, kept here in {run})")
                raise LiveRunBusy(f"{run} was killed without teardown and {e.name} (pid {e.pid}) still has the "
                                  f"{'cores' if e.kind == 'affinity' else 'send buffer'} that run gave it, which this "
                                  f"run would take for the machine's own: {fix}")
        except BaseException:
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()
            raise
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\t{run_dir}\t{time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n")
        f.flush()
        self._file, self._depth = f, 1

    def release(self, *, fully: bool = False) -> None:
        """Lets the lock go at the last of its holder's releases, or at once `fully` (nothing if it is not held)."""
        if self._file is not None:
            self._depth = 0 if fully else self._depth - 1
            if self._depth > 0:
                return
            self._file.truncate(0)
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


_command_lock: LiveRunLock | None = None
"""The lock a command of several live runs holds across them (`live_command`), or None."""


@contextlib.contextmanager
def live_command(out: Path) -> Iterator[None]:
    """Holds the live-run lock across a command of several live runs (compare's policies, --tdf auto's pilots and
    its run, bench_live's rates), so that no other live run starts between two of them and spoils the later ones'
    figures; each run inside takes it again and leaves it held. LiveRunBusy if another run has it."""
    global _command_lock
    if _command_lock is not None:  # a command inside a command (compare with --tdf auto): the outer one holds it
        yield
        return
    lock = LiveRunLock()
    lock.acquire(out)
    _command_lock = lock
    try:
        yield
    finally:
        _command_lock = None
        lock.release(fully=True)  # a run inside left without letting go must not keep it


class RunCores:
    """The cores of one live run (a context: made on enter, put back on exit)."""

    def __init__(self, run_dir: Path, log: Callable[[str], None] = print, lock: LiveRunLock | None = None,
                 real_inference: bool = True, label: str = "", run_id: str | None = None) -> None:
        self.run_dir = run_dir
        self.real_inference = real_inference
        """Whether the run has real ONNX workers: without them no core is reserved and the run has them all."""
        self.run_id = run_id or f"{os.getpid():x}{secrets.token_hex(2)}"
        self.label = label
        """Appended to the groups' names: a server's keeper gives its server's (servers may share a cgroup tree)."""
        self.lock = lock or _command_lock or LiveRunLock()
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
        self.keepers: dict[str, Keeper] = {}
        """The keeper of the run's cores on each other server (`hold_on`)."""
        self._clients: dict[str, AgentClient] = {}
        self._watch: Callable[[], None] | None = None
        """Stops the thread watching the keepers (live/keeper.py)."""

    @property
    def servers(self) -> dict[str, ServerCores]:
        """The cores of the run on other servers, as their keepers last said."""
        return {n: k.cores for n, k in self.keepers.items() if k.cores is not None}

    @property
    def name(self) -> str:
        """The groups' name: the run's id, and the server's where a keeper makes them."""
        return f"{cpuset.NAME_PREFIX}{self.run_id}" + (f"-{self.label}" if self.label else "")

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
        if self.real_inference:
            self._reserve_core()
        else:
            self.notes.append(f"no real worker on this machine: the run has CPU "
                              f"{cpuset.format_cpus(os.sched_getaffinity(0))}, no core reserved")
        root = cpuset.pressure_root()
        if self.pressure_group is None and root is not None:
            with contextlib.suppress(OSError):
                group = self._group(root / self.name)
                cpuset.make_group(group)
                self.pressure_group = group

    def reserve_real(self) -> None:
        """Reserves the core of real inference of a run entered without it (its plan gained a real worker here),
        before anything of the run is in its groups; nothing if it has it."""
        if self.real_inference:
            return
        self.real_inference = True
        self.notes = [n for n in self.notes if not n.startswith("no real worker on this machine")]
        pressure = self.pressure_group
        self._reserve_core()
        if self.pressure_group is None:  # v1: the pressure group made before stays
            self.pressure_group = pressure

    def _reserve_core(self) -> None:
        kind = cpuset.hierarchy()
        cpus = sorted(os.sched_getaffinity(0))
        if kind is None or len(cpus) < 2:
            self.notes.append("real inference shares the cores with the rest of the run: "
                              + ("no cpuset controller on this host" if kind is None else "one core only"))
            return
        try:
            self._make_cpusets(kind, cpus, self.name)
        except OSError as exc:  # e.g. a container that shows the hierarchy read-only: run as without one
            self.notes.append(f"real inference shares the cores with the rest of the run: making its cpuset "
                              f"failed ({exc})")
            self.reserved, self.real_group, self.rest_group = None, None, None

    def planned(self) -> list[Created]:
        """Returns everything the run's cores may make here with real inference, as recorded (the groups, the
        daemons' affinity as it is now): what a server's keeper tells the driver to record before it makes any."""
        kind, root, name = cpuset.hierarchy(), cpuset.pressure_root(), self.name
        groups = [cpuset.CGROUP_ROOT / name] if kind == "v2" else [root / name] if root is not None else []
        base = cpuset.CGROUP_ROOT / name if kind == "v2" else cpuset.V1_CPUSET
        groups += [base / f"{name}-real", base / f"{name}-rest"] if kind is not None else []
        out = [Created("cgroup", str(g)) for g in groups]
        for daemon in DAEMONS if kind is not None else ():
            for pid in pids_named(daemon):
                with contextlib.suppress(OSError):
                    out.append(Created("affinity", daemon, pid=pid, start_ticks=process_start_ticks(pid),
                                       cpus=cpuset.format_cpus(os.sched_getaffinity(pid))))
        return out

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
            given = (saved - {self.reserved}) or set(self.rest_cpus)
            self.record.add(Created("affinity", daemon, pid=pid, start_ticks=process_start_ticks(pid),
                                    cpus=cpuset.format_cpus(saved), values=cpuset.format_cpus(given)))
            for problem in cpuset.set_thread_affinity(pid, given):
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

    def hold_on(self, server: Server, real: bool = True, pause_s: float = 0.0) -> ServerCores:
        """Holds the run's cores on another server (live/keeper.py): its keeper takes that server's live-run lock
        (LiveRunBusy naming the server if another run has it), makes its groups (its core of real inference if
        `real`) and borrows its daemons' cores until the run ends; a keeper already there reserves the core when
        `real` comes later. Returns what it holds. Recorded here with the server before it is made, removed through
        the server's agent at exit or by `clean` (`servers.json` beside the record says how to reach it); watched
        until exit (`lost`). `pause_s`: for tests, how long the keeper waits between making and saying so."""
        from live.keeper import start_keeper, upgrade_keeper, watch_keepers

        keeper = self.keepers.get(server.name)
        if keeper is None:
            self._clients[server.name] = client = AgentClient(server)
            known = {**read_servers(self.record.run_dir), server.name: server}
            write_servers(self.record.run_dir, Placement(tuple(known.items()), ()), {})
            self.keepers[server.name] = keeper = start_keeper(client, self.record, self.run_id, real, pause_s)
            if self._watch is None:
                self._watch = watch_keepers(self.keepers, self.log)
        elif real and not keeper.real:
            upgrade_keeper(keeper, self.record)
        else:
            assert keeper.cores is not None
            keeper.cores = replace(keeper.cores, real_workers=real)
            return keeper.cores
        assert keeper.cores is not None
        self.log(f"server {server.name}: {keeper.cores.described}")
        return keeper.cores

    def lost(self) -> dict | None:
        """Returns the first keeper of the run found gone (its server, when, why), or None."""
        gone = [k.lost for k in self.keepers.values() if k.lost is not None]
        return min(gone, key=lambda g: g["at_epoch_s"]) if gone else None

    def __exit__(self, *exc: object) -> None:
        """Moves this process back where it was, then restores the daemons' affinity and removes the groups (those
        on other servers through their agents); a run refused by another's lock leaves no file behind."""
        if self._watch is not None:
            self._watch()
            self._watch = None
        for root, home in reversed(self._home):
            with contextlib.suppress(OSError):
                cpuset.move(os.getpid(), home if home.is_dir() else root)
        self._home.clear()
        live = {n: c for n, c in self._clients.items() if c.proc.poll() is None}  # a dead one: opened afresh
        try:
            problems = self.record.remove_all(live) if self._started else []
        finally:
            for client in self._clients.values():
                client.close()
            self._clients.clear()
        self.lock.release()
        if problems:
            self.log(f"warning: the run's cores were not all put back (run `run_testbed.py clean --run-dir "
                     f"{self.run_dir}`):\n  " + "\n  ".join(problems))
        elif len(exc) > 1 and isinstance(exc[1], LiveRunBusy):
            self._forget_refused()

    def _forget_refused(self) -> None:
        """Removes what a run refused by another's lock wrote (this record, the keepers' logs, `servers.json`), and
        the run dir where that leaves it empty: everything it made is put back, so nothing is left to clean."""
        shutil.rmtree(self.record.run_dir, ignore_errors=True)  # its servers.json too
        with contextlib.suppress(OSError):
            self.run_dir.rmdir()
        if self.run_dir.exists():
            self.log(f"note: the refused run's folder {self.run_dir} keeps "
                     + ", ".join(sorted(p.name for p in self.run_dir.iterdir())))


def _current_group(controller: str) -> str:
    """Returns this process's group in a v1 controller's hierarchy, or in v2's ('')."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if (controller and controller in names.split(",")) or (not controller and names == ""):
            return path
    return "/"
