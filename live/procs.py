"""The processes of a live run: starting one in its host, waiting until each has printed `READY`, stopping
them group by group, and accounting for the CPU every process serving the run used (`cpu.json`).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

from testbed.network import Host
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


CpuSnapshot = dict[str, tuple[str, float]]
"""{process label: (group, CPU seconds so far)}."""


def run_processes(groups: dict[str, list[Proc]], helpers: list[tuple[str, subprocess.Popen]]) -> list[tuple[str, str, int]]:
    """Returns (group, name, pid) of every process that serves the run: the run's own (per group), the
    network's helpers (wires, controller), Open vSwitch's daemon and this orchestrator; those of this machine only
    (a process on another server has a pid of that server's)."""
    procs: list[tuple[str, str, int]] = []
    for group, items in groups.items():
        procs += [(group, p.name, p.popen.pid) for p in items if p.popen is not None and p.local]
    procs += [("wires" if name.startswith("wire") else name, name, p.pid) for name, p in helpers
              if isinstance(p, subprocess.Popen)]
    procs += [("ovs-vswitchd", "ovs-vswitchd", pid) for pid in pids_named("ovs-vswitchd")]
    procs += [("orchestrator", "orchestrator", os.getpid())]
    return procs


def cpu_snapshot(procs: list[tuple[str, str, int]]) -> CpuSnapshot:
    """Returns the CPU seconds so far of the processes `run_processes` lists."""
    out = {}
    for group, name, pid in procs:
        cpu = cpu_seconds(pid)
        if cpu is not None:
            out[f"{name} ({pid})"] = (group, cpu)
    return out


def write_cpu(path: Path, before: CpuSnapshot, after: CpuSnapshot, seconds: float) -> dict[str, float]:
    """Writes cpu.json (CPU seconds per process and group during the traffic); returns the groups."""
    per_proc = {k: round(after[k][1] - before.get(k, (after[k][0], 0.0))[1], 2) for k in after}
    groups: dict[str, float] = {}
    for k, v in per_proc.items():
        groups[after[k][0]] = round(groups.get(after[k][0], 0.0) + v, 2)
    path.write_text(
        json.dumps(
            {"traffic_wall_s": round(seconds, 2), "groups_cpu_s": groups, "processes_cpu_s": per_proc},
            indent=1,
        )
        + "\n"
    )
    return groups
