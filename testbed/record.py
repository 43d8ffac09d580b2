"""The run's creation record: every namespace, link, bridge, qdisc, process, cgroup, borrowed CPU affinity and
daemon's socket buffer widened for the run (`sockbuf`), logged as it is made.

Entries are appended to `<run_dir>/created.jsonl` and fsync'd before (or, for processes, right
after) the thing exists, so teardown and `clean` remove exactly what a run made and nothing else.
An index under /run/edge-testbed lets `clean` find runs that died without tearing down.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from testbed import cpuset, sh
from testbed.errors import NetworkError

if TYPE_CHECKING:
    from testbed.agent import AgentClient

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
RECORD_NAME = "created.jsonl"
ACTIVE_DIR = Path("/run/edge-testbed/active")
"""One file per run not yet torn down, named by run id, holding the run directory's path."""

KINDS = ("run", "netns", "link", "ovs-bridge", "lx-bridge", "qdisc", "process", "cgroup", "affinity", "sockbuf",
         "torn-down")
# Teardown order: stop processes, restore the affinity of daemons not ours, remove cgroups (emptied of what is
# left), then qdiscs, bridges, root-namespace links, namespaces, and last the daemon's socket buffer.
REMOVE_WAIT_S = 120.0
"""How long a server's agent may take to remove its share of a run (processes get 3 s, then 3 s after SIGKILL)."""
_REMOVE_ORDER = ("process", "affinity", "cgroup", "qdisc", "ovs-bridge", "lx-bridge", "link", "netns", "sockbuf")


@dataclass(frozen=True)
class Created:
    """One thing a run created; `name` is a namespace, interface, bridge, device or command name."""

    kind: str
    name: str
    netns: str | None = None
    """The namespace an interface or qdisc lives in (None: the root namespace)."""
    pid: int | None = None
    start_ticks: int | None = None
    """The process's start time in clock ticks since boot, so a reused pid is never killed."""
    cpus: str | None = None
    """An affinity entry's saved CPU list ('0,1'): what every thread of the process gets back."""
    values: str | None = None
    """A sockbuf entry's 'FD SAVED SET' (the daemon's descriptor, its send buffer before and as set, bytes as the
    kernel accounts them): put back to SAVED at removal if the same process's socket still has SET. An affinity
    entry's CPU list as set ('0'): its saved CPUs are given back only if the process still has these (none: always,
    as in records without it)."""
    server: str | None = None
    """The server of a multi-host run it was made on (None: this machine); its pid and start ticks are that
    server's. Removed there, through the server's agent (`remove_on_servers`)."""


def process_start_ticks(pid: int) -> int | None:
    """Returns the start time of a live process in clock ticks since boot (what /proc/PID/stat gives), or
    None if it is gone. Since boot, not since the epoch: a clock set between run and teardown changes nothing."""
    try:
        started = psutil.Process(pid).create_time()
    except psutil.Error:
        return None
    return round((started - psutil.boot_time()) * _CLOCK_TICKS)


def _same_process_alive(entry: Created) -> bool:
    """Returns whether the recorded process still exists (a zombie, exited and not yet collected, included)."""
    return entry.pid is not None and process_start_ticks(entry.pid) == entry.start_ticks


def _still_running(entry: Created) -> bool:
    """Returns whether the recorded process exists and is not a zombie (one whose parent has not collected it yet,
    e.g. a busy agent's child: it has exited)."""
    try:
        return _same_process_alive(entry) and psutil.Process(entry.pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class CreationRecord:
    """Appends `Created` entries to a run directory's record and removes them again."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / RECORD_NAME
        self.gathered: dict[str, int] = {}
        """Per server: the files of its share of the run dir brought back by `remove_all`."""

    def start(self, run_id: str) -> None:
        """Opens a fresh record for this process's run and lists it as active."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and not self.is_torn_down():
            raise NetworkError(f"{self.path} records a run that was not torn down; "
                               f"run `run_testbed.py clean --run-dir {self.run_dir}` first")
        self.path.unlink(missing_ok=True)
        pid = os.getpid()
        self.add(Created("run", run_id, pid=pid, start_ticks=process_start_ticks(pid)))
        ACTIVE_DIR.mkdir(parents=True, exist_ok=True)
        (ACTIVE_DIR / run_id).write_text(str(self.run_dir.resolve()) + "\n")

    def add(self, entry: Created) -> None:
        """Appends one entry and forces it to disk."""
        if entry.kind not in KINDS:
            raise ValueError(f"unknown record kind {entry.kind!r}")
        line = json.dumps({k: v for k, v in asdict(entry).items() if v is not None}) + "\n"
        with self.path.open("a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def add_process(self, name: str, pid: int) -> None:
        self.add(Created("process", name, pid=pid, start_ticks=process_start_ticks(pid)))

    def entries(self) -> list[Created]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            if line.strip():
                try:
                    out.append(Created(**json.loads(line)))
                except (ValueError, TypeError):
                    continue  # a line cut short by a crash mid-write: nothing was created after it
        return out

    def run_entry(self) -> Created | None:
        return next((e for e in self.entries() if e.kind == "run"), None)

    def is_torn_down(self) -> bool:
        return any(e.kind == "torn-down" for e in self.entries())

    def owner_alive(self) -> bool:
        """Returns whether the process that made this run is still running."""
        run = self.run_entry()
        return run is not None and _same_process_alive(run)

    def remove_all(self, clients: Mapping[str, AgentClient] | None = None) -> list[str]:
        """Removes everything recorded, in dependency order, here and on every server named (through `clients`,
        else agents started from the run's `servers.json`); returns what could not be removed."""
        entries = self.entries()
        problems = remove_entries(e for e in entries if e.server is None)
        problems += remove_on_servers(self.run_dir, [e for e in entries if e.server is not None], clients or {},
                                      self.gathered)
        if not problems:
            self.add(Created("torn-down", "ok"))
            run = self.run_entry()
            if run is not None:
                (ACTIVE_DIR / run.name).unlink(missing_ok=True)
                if any(e.server is not None for e in entries):
                    from testbed.placement import control_dir

                    shutil.rmtree(control_dir(run.name), ignore_errors=True)  # its ssh masters' sockets
        return problems


def active_run_dirs() -> list[Path]:
    """Returns the run directories listed as not yet torn down."""
    if not ACTIVE_DIR.is_dir():
        return []
    out = []
    for p in sorted(ACTIVE_DIR.iterdir()):
        with contextlib.suppress(OSError):  # torn down meanwhile
            out.append(Path(p.read_text().strip()))
    return out


def daemon_changes_left() -> list[tuple[Path, Created]]:
    """Returns the changes to daemons not the runs' own (an `affinity` borrowed, a `sockbuf` widened) that runs on
    this machine which died without teardown (kill -9, no `clean` yet) recorded and that are still in effect, each
    with its run directory. A run started now would take them for the machine's own: it would save the borrowed
    affinity or find the buffer already wide and record nothing, and the dead run's `clean`, run during it, would
    undo them under it."""
    left = []
    for run_dir in active_run_dirs():
        record = CreationRecord(run_dir)
        if record.is_torn_down() or record.owner_alive():
            continue
        left += [(run_dir, e) for e in record.entries() if e.server is None and e.kind in ("affinity", "sockbuf")
                 and _same_process_alive(e) and _in_effect(e)]
    return left


def _in_effect(e: Created) -> bool:
    """Returns whether a live daemon still has what an `affinity` or `sockbuf` entry gave it: the CPUs or send
    buffer as set (an affinity entry without them: other CPUs than it saved)."""
    try:
        if e.kind == "sockbuf":
            from testbed.ovssock import send_buffer

            fd, _, set_to = _sockbuf_values(e)
            return send_buffer(e.pid, fd) == set_to  # type: ignore[arg-type]
        now = os.sched_getaffinity(e.pid)  # type: ignore[arg-type]
        if e.values is not None:
            return now == set(cpuset.parse_cpus(e.values))
        return e.cpus is not None and now != set(cpuset.parse_cpus(e.cpus))
    except (OSError, ValueError):
        return False  # gone meanwhile, or an entry cut short


def _sockbuf_values(e: Created) -> tuple[int, int, int]:
    """Returns a sockbuf entry's descriptor, saved and set sizes."""
    fd, saved, set_to = (int(x) for x in (e.values or "0 0 0").split())
    return fd, saved, set_to


def forget_active(run_id: str) -> None:
    (ACTIVE_DIR / run_id).unlink(missing_ok=True)


def remove_on_servers(run_dir: Path, entries: Sequence[Created], clients: Mapping[str, AgentClient],
                      gathered: dict[str, int] | None = None) -> list[str]:
    """Removes entries made on other servers, each server's through its agent (which runs `remove_entries` there),
    then brings that server's share of the run dir back into it and removes the share there (counted in
    `gathered`), opening an agent from the run's `servers.json` for a server `clients` lacks; returns the
    failures, an unreachable server's as one line naming it (the other servers are still cleaned)."""
    from testbed.agent import AgentClient, AgentError
    from testbed.multihost import gather_share
    from testbed.placement import read_servers

    problems: list[str] = []
    by_server: dict[str, list[Created]] = {}
    for e in entries:
        by_server.setdefault(e.server or "", []).append(e)
    known: dict[str, Any] | None = None
    for name, batch in by_server.items():
        client, opened = clients.get(name), None
        try:
            if client is None:
                if known is None:
                    try:
                        known = read_servers(run_dir)
                    except ValueError as exc:
                        known = {}
                        problems.append(str(exc))
                if name not in known:
                    problems.append(f"server {name}: {len(batch)} things recorded there, but {run_dir}/servers.json "
                                    "does not say how to reach it")
                    continue
                client = opened = AgentClient(known[name])
            lines = [{k: v for k, v in asdict(e).items() if v is not None and k != "server"} for e in batch]
            problems += [f"server {name}: {p}" for p in client.call("remove", wait_s=REMOVE_WAIT_S,
                                                                    entries=lines)["problems"]]
            got = gather_share(client, run_dir)  # after its processes ended: the wires' statistics are written
            if gathered is not None:
                gathered[name] = gathered.get(name, 0) + got
        except AgentError as exc:
            problems.append(f"server {name} unreachable, {len(batch)} things recorded there not removed: {exc}")
        finally:
            if opened is not None:
                opened.close()
    return problems


def remove_entries(entries: Iterable[Created]) -> list[str]:
    """Removes the given entries of this machine, processes first and namespaces last; returns the failures
    (entries of other servers are skipped: `remove_on_servers` removes them).

    Each kind is removed with one batch command per namespace (`ip -force -batch`, one `ovs-vsctl`); only if
    a batch fails are its entries removed one by one, to name the one that cannot go."""
    entries = [e for e in entries if e.server is None]
    problems: list[str] = []
    for kind in _REMOVE_ORDER:
        batch = [e for e in reversed(entries) if e.kind == kind]
        if not batch:
            continue
        if kind == "process":
            problems += _stop_processes(batch)
            continue
        if kind in ("affinity", "cgroup", "sockbuf"):
            problems += [p for e in batch for p in _restore(e)]
            continue
        present = _Present()
        if kind == "netns":
            problems += _stop_processes(_processes_in(batch, present))
        todo = [e for e in batch if present.has(e)]
        if todo and not _remove_batch(kind, todo):
            for e in todo:
                problems += _remove(e)
    return problems


def stop_processes(entries: Iterable[Created], spare_pid: int | None = None) -> list[str]:
    """Stops every recorded process and every process still inside a recorded namespace (SIGTERM, then
    SIGKILL), all but `spare_pid`; returns those that survived. Namespaces, links and bridges stay. Entries of
    other servers are skipped (their pids are theirs)."""
    entries = [e for e in entries if e.server is None]
    found = [e for e in entries if e.kind == "process"]
    found += _processes_in([e for e in entries if e.kind == "netns"], _Present())
    by_pid = {e.pid: e for e in reversed(found) if e.pid != spare_pid}
    return _stop_processes(list(by_pid.values()))


class _Present:
    """What exists now, read once: the named namespaces, and the interfaces of each namespace asked about."""

    def __init__(self) -> None:
        self._netns: set[str] | None = None
        self._links: dict[str | None, set[str]] = {}

    def netns(self) -> set[str]:
        if self._netns is None:
            self._netns = set(_netns_names())
        return self._netns

    def has(self, e: Created) -> bool:
        if e.kind == "netns":
            return e.name in self.netns()
        if e.kind == "ovs-bridge":
            return True  # `--if-exists del-br`
        if e.netns is not None and e.netns not in self.netns():
            return False
        if e.netns not in self._links:
            argv = ["ip", "-j", *(["-n", e.netns] if e.netns else []), "link", "show"]
            out = sh.run(argv, check=False).stdout.strip()
            self._links[e.netns] = {i["ifname"] for i in json.loads(out)} if out else set()
        return e.name in self._links[e.netns]


def _remove_batch(kind: str, todo: list[Created]) -> bool:
    """Removes entries of one kind with one command per namespace; returns False if any command failed."""
    if kind == "ovs-bridge":
        argv = ["ovs-vsctl", "--timeout=10"] + [w for e in todo for w in ("--", "--if-exists", "del-br", e.name)]
        return sh.run(argv, check=False).returncode == 0
    if kind == "netns":
        return sh.run(["ip", "-force", "-batch", "-"], input_text="".join(f"netns delete {e.name}\n" for e in todo),
                      check=False).returncode == 0
    ok = True
    for netns in dict.fromkeys(e.netns for e in todo):
        names = [e.name for e in todo if e.netns == netns]
        if kind == "qdisc":
            argv, lines = ["tc", "-force", "-batch", "-"], [f"qdisc del dev {n} root\n" for n in names]
        else:
            argv, lines = ["ip", "-force", "-batch", "-"], [f"link delete dev {n}\n" for n in names]
        done = sh.run(sh.in_netns(netns, argv), input_text="".join(lines), check=False)
        # a veth's peer goes with it, a qdisc with its device: later lines may find nothing, which is fine
        ok = ok and (done.returncode == 0 or all(_gone_message(line) for line in done.stderr.splitlines()
                                                 if line.strip() and not line.startswith("Command failed")))
    return ok


def _processes_in(namespaces: list[Created], present: _Present) -> list[Created]:
    """Returns every process still running inside the given namespaces (they all belong to the run), found by
    their network namespace's inode (as `ip netns pids` does, for all namespaces in one pass over /proc)."""
    inodes = {}
    for ns in namespaces:
        if ns.name in present.netns():
            with contextlib.suppress(OSError):
                inodes[os.stat(f"/run/netns/{ns.name}").st_ino] = ns.name
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            link = os.readlink(f"/proc/{entry.name}/ns/net")  # "net:[4026532281]"
        except OSError:
            continue
        name = inodes.get(int(link[link.index("[") + 1:-1]))
        if name is not None:
            pid = int(entry.name)
            found.append(Created("process", f"in {name}", pid=pid, start_ticks=process_start_ticks(pid)))
    return found


def _stop_processes(batch: list[Created]) -> list[str]:
    alive = [e for e in batch if _same_process_alive(e)]
    for sig, wait_s in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
        for e in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(e.pid, sig)  # type: ignore[arg-type]
        deadline = time.monotonic() + wait_s
        while alive and time.monotonic() < deadline:
            for e in alive:
                _reap(e.pid)  # type: ignore[arg-type]
            alive = [e for e in alive if _same_process_alive(e)]
            if alive:
                time.sleep(0.02)
        if not alive:
            return []
    return [f"process {e.name} (pid {e.pid}) survived SIGKILL" for e in alive if _still_running(e)]


def _reap(pid: int) -> None:
    """Collects the exit status of a child of ours so that it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _restore(e: Created) -> list[str]:
    """Gives a daemon's threads back their saved CPUs or its socket its send buffer (if it is the same process), or
    removes a cgroup (its processes, if any are left, go to the hierarchy's root); returns what failed."""
    if e.kind == "cgroup":
        problem = cpuset.remove_group(Path(e.name))
        return [problem] if problem else []
    if e.kind == "sockbuf":
        from testbed.ovssock import send_buffer, set_send_buffer

        fd, saved, set_to = _sockbuf_values(e)
        if not _same_process_alive(e):
            return []  # restarted or gone: its socket went with it
        try:
            if send_buffer(e.pid, fd) == set_to:  # type: ignore[arg-type]
                set_send_buffer(e.pid, fd, saved)  # type: ignore[arg-type]
        except OSError as exc:
            return [f"{e.name}'s send buffer (fd {fd}) not put back to {saved}: {exc}"]
        return []
    if not _same_process_alive(e) or e.cpus is None:
        return []  # restarted or gone: its threads have the affinity they were born with
    if not _in_effect(e):
        return []  # not the run's CPUs any more: someone else set them since
    return cpuset.set_thread_affinity(e.pid, set(cpuset.parse_cpus(e.cpus)))  # type: ignore[arg-type]


def _netns_names() -> list[str]:
    out = sh.run(["ip", "-j", "netns", "list"], check=False).stdout.strip()
    return [ns["name"] for ns in json.loads(out)] if out else []


def _link_exists(name: str, netns: str | None) -> bool:
    argv = ["ip", "link", "show", "dev", name] if netns is None else ["ip", "-n", netns, "link", "show", "dev", name]
    return sh.run(argv, check=False).returncode == 0


def _remove(e: Created) -> list[str]:
    """Removes one entry if it still exists; returns a description of a failure, if any."""
    if e.kind == "netns":
        if e.name not in _netns_names():
            return []
        argv = ["ip", "netns", "delete", e.name]
    elif e.kind == "ovs-bridge":
        argv = ["ovs-vsctl", "--timeout=10", "--if-exists", "del-br", e.name]
    elif e.kind in ("lx-bridge", "link"):
        if (e.netns is not None and e.netns not in _netns_names()) or not _link_exists(e.name, e.netns):
            return []
        argv = sh.in_netns(e.netns, ["ip", "link", "delete", "dev", e.name])
    elif e.kind == "qdisc":
        if (e.netns is not None and e.netns not in _netns_names()) or not _link_exists(e.name, e.netns):
            return []
        argv = sh.in_netns(e.netns, ["tc", "qdisc", "del", "dev", e.name, "root"])
    else:
        return []
    done = sh.run(argv, check=False)
    if done.returncode != 0 and not _gone_message(done.stderr):
        return [f"`{' '.join(argv)}`: {done.stderr.strip()}"]
    return []


def _gone_message(stderr: str) -> bool:
    s = stderr.lower()
    return any(m in s for m in ("cannot find device", "no such file", "does not exist", "cannot delete qdisc"))
