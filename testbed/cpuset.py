"""CPU sets and CPU affinity for a run: the cgroups that keep a run's processes on given cores (cgroup v1's
cpuset controller at /sys/fs/cgroup/cpuset, or v2's where the unified hierarchy has it), a v2 group for the
run's own CPU pressure, and the per-thread affinity of a daemon the run does not own (ovs-vswitchd) moved
off a core and put back. Only mechanics: what to reserve is the live run's choice (live/cores.py); what was
made is in the run's record, and `testbed.record` removes it here (stragglers to the parent group first).
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
V1_CPUSET = CGROUP_ROOT / "cpuset"
V1_UNIFIED = CGROUP_ROOT / "unified"
"""On a v1 host, the v2 hierarchy mounted beside it: no controllers, but CPU pressure (PSI) per group."""
NAME_PREFIX = "edge-testbed-"
RMDIR_TRIES = 20


def hierarchy() -> str | None:
    """Returns 'v2' where the unified hierarchy has the cpuset controller, 'v1' where cgroup v1's cpuset is
    mounted, None where this host has neither."""
    with contextlib.suppress(OSError):
        if "cpuset" in (CGROUP_ROOT / "cgroup.controllers").read_text().split():
            return "v2"
    return "v1" if (V1_CPUSET / "cpuset.cpus").exists() else None


def pressure_root() -> Path | None:
    """Returns the v2 hierarchy whose groups report CPU pressure (`cpu.pressure`), or None."""
    for root in (CGROUP_ROOT, V1_UNIFIED):
        if (root / "cgroup.procs").exists() and (root / "cgroup.controllers").exists():
            return root
    return None


def parse_cpus(text: str) -> list[int]:
    """Returns the CPUs of a list such as '0-2,5' (empty: none)."""
    out: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        out += range(int(lo), int(hi or lo) + 1)
    return out


def format_cpus(cpus: list[int] | set[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def _write(path: Path, value: str) -> None:
    with path.open("w") as f:
        f.write(value)


def make_cpuset(path: Path, cpus: list[int], exclusive: bool, threaded: bool = False) -> str:
    """Makes (or reuses) a cpuset group holding `cpus` (and the parent's memory nodes: v1 refuses tasks in a
    group without them, ENOSPC); returns a note when exclusivity was refused (a sibling group overlaps).
    `threaded` (v2 only; v1 takes single threads in any group): the group's type is `threaded`, so that threads
    of one process may be split between it and its threaded siblings (`cgroup.threads`); untested, the
    development machine's cpuset is v1."""
    path.mkdir(exist_ok=True)
    v1 = (path.parent / "cpuset.cpu_exclusive").exists()
    if threaded and not v1 and (path / "cgroup.type").read_text().strip() != "threaded":
        _write(path / "cgroup.type", "threaded")
    _write(path / "cpuset.cpus", format_cpus(cpus))
    if v1:
        _write(path / "cpuset.mems", (path.parent / "cpuset.mems").read_text().strip())
    if not exclusive:
        return ""
    try:
        _write(path / ("cpuset.cpu_exclusive" if v1 else "cpuset.cpus.partition"), "1" if v1 else "root")
    except OSError as exc:
        return f"{path.name}: not exclusive ({exc.strerror}): another group shares its CPUs"
    if not v1:  # a kernel may take `root` and leave the partition invalid (e.g. its parent is not a partition root)
        state = (path / "cpuset.cpus.partition").read_text().strip()
        if "invalid" in state:
            return f"{path.name}: not exclusive (cpuset.cpus.partition says {state!r})"
    return ""


def make_group(path: Path, controllers: tuple[str, ...] = ()) -> None:
    """Makes (or reuses) a v2 group, enabling `controllers` for its children."""
    path.mkdir(exist_ok=True)
    for c in controllers:
        for level in (path.parent, path):
            with contextlib.suppress(OSError):
                _write(level / "cgroup.subtree_control", f"+{c}")


def move(pid: int, group: Path) -> None:
    """Moves a process (all its threads) into a group."""
    _write(group / "cgroup.procs", str(pid))


def members(group: Path) -> list[int]:
    """Returns the processes with a thread in a group (v1 lists them in `cgroup.procs`; a v2 threaded group
    does not let it be read: its `cgroup.threads`' thread group ids, untested)."""
    with contextlib.suppress(OSError):
        return [int(x) for x in (group / "cgroup.procs").read_text().split()]
    with contextlib.suppress(OSError):
        return sorted({_thread_group(int(t)) for t in (group / "cgroup.threads").read_text().split()} - {0})
    return []


def _thread_group(tid: int) -> int:
    """Returns the process (thread group id) of a thread, 0 if it is gone."""
    with contextlib.suppress(OSError, StopIteration, ValueError):
        status = Path(f"/proc/{tid}/status").read_text().splitlines()
        return int(next(x for x in status if x.startswith("Tgid:")).split()[1])
    return 0


def thread_groups(pid: int) -> dict[int, str]:
    """Returns the cpuset group of every thread of a process (as /proc/PID/task/TID/cpuset says)."""
    out = {}
    for tid in threads(pid):
        with contextlib.suppress(OSError):
            out[tid] = Path(f"/proc/{pid}/task/{tid}/cpuset").read_text().strip()
    return out


def hierarchy_root(path: Path) -> Path:
    """Returns the root of the hierarchy a group is in (where stragglers go: a v2 parent with controllers
    enabled for its children takes no processes)."""
    for root in (V1_CPUSET, V1_UNIFIED):
        if path.is_relative_to(root):
            return root
    return CGROUP_ROOT


def remove_group(path: Path) -> str:
    """Removes a group, its subgroups first; processes still inside go to the hierarchy's root first.
    Returns what failed ('' when it is gone)."""
    if not path.is_dir():
        return ""
    for sub in sorted((p for p in path.iterdir() if p.is_dir()), reverse=True):
        problem = remove_group(sub)
        if problem:
            return problem
    last = ""
    for _ in range(RMDIR_TRIES):
        for pid in members(path):
            with contextlib.suppress(OSError):  # gone meanwhile, or a kernel thread
                move(pid, hierarchy_root(path))
        try:
            path.rmdir()
            return ""
        except FileNotFoundError:
            return ""
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                return f"cgroup {path}: {exc.strerror}"
            last = f"cgroup {path}: still busy (pids {members(path)})"
            time.sleep(0.05)  # a process exiting leaves its group a moment later
    return last


def cgroup_of(pid: int | str = "self") -> str:
    """Returns the cpuset group a process is in ('/...' as /proc/PID/cpuset says; '' if it is gone)."""
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cpuset").read_text().strip()
    return ""


def threads(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    return []


def thread_affinities(pid: int) -> dict[int, set[int]]:
    """Returns the CPU affinity of every thread of a process."""
    out = {}
    for tid in threads(pid):
        with contextlib.suppress(OSError):
            out[tid] = os.sched_getaffinity(tid)
    return out


def set_thread_affinity(pid: int, cpus: set[int]) -> list[str]:
    """Sets every current thread of a process to `cpus` (threads made later inherit from their creator);
    returns the threads that refused."""
    problems = []
    for tid in threads(pid):
        try:
            os.sched_setaffinity(tid, cpus)
        except ProcessLookupError:
            continue  # the thread ended meanwhile
        except OSError as exc:
            problems.append(f"thread {tid} of pid {pid}: {exc.strerror}")
    return problems
