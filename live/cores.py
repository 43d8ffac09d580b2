"""The live run's cores: one live run at a time on this machine (the live-run lock), and a core of its own for
real inference. The run makes a cpuset `edge-testbed-<id>-real` (the reserved core, exclusive) for the inference
threads of its real ONNX workers and `edge-testbed-<id>-rest` (every other core) into which the orchestrator
moves before it forks anything, so that wires, controller, captures, schedulers, sources, profile-driven
workers and the real workers' own event loops stay off the reserved core; ovs-vswitchd's threads leave it for
the run. A run without real workers on this machine reserves no core: it has them all. A v2 group holds the
whole run for its CPU pressure (live/monitor.py). Everything is recorded in `<run dir>/cores/created.jsonl` before it is made, so teardown and `run_testbed.py clean` put it back
(testbed/record.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from live.procs import pids_named
from testbed import cpuset
from testbed.record import Created, CreationRecord, process_start_ticks

LOCK_PATH = Path("/run/edge-testbed/live.lock")
RECORD_DIR = "cores"
"""The subdirectory of the run dir holding the record of the run's cgroups and borrowed affinities."""
DAEMONS = ("ovs-vswitchd",)
"""System daemons the run does not own, moved off the reserved core for the run and put back after it."""


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
                 real_inference: bool = True) -> None:
        self.run_dir = run_dir
        self.real_inference = real_inference
        """Whether the run has real ONNX workers: without them no core is reserved and the run has them all."""
        self.run_id = f"{os.getpid():x}{secrets.token_hex(2)}"
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
        if self.rest_group is not None:
            v2 = cpuset.hierarchy() == "v2"
            self._enter(cpuset.CGROUP_ROOT if v2 else cpuset.V1_CPUSET, self.rest_group, "" if v2 else "cpuset")
        group = self.pressure_group
        if group is not None and (self.rest_group is None or not self.rest_group.is_relative_to(group)):
            self._enter(group.parent, group, "")
        self.log(self.describe())

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
        name = f"{cpuset.NAME_PREFIX}{self.run_id}"
        if not self.real_inference:
            self.notes.append(f"no real worker: the run has CPU {cpuset.format_cpus(cpus)}, no core reserved")
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

    def __exit__(self, *exc: object) -> None:
        """Moves this process back where it was, then restores the daemons' affinity and removes the groups."""
        for root, home in reversed(self._home):
            with contextlib.suppress(OSError):
                cpuset.move(os.getpid(), home if home.is_dir() else root)
        self._home.clear()
        problems = self.record.remove_all() if self._started else []
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
