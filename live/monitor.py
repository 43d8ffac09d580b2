"""The fidelity monitor of a live run, during the run: a sampler thread in the orchestrator (every second of
real time, about a millisecond of CPU) writes `monitor.jsonl`: the host's busy cores, CPU pressure (PSI
`some` totals, of the system and of the run's own cgroup), the share of time a virtual machine's hypervisor
stole from its CPUs, the real length of each sampling interval (one far over a second: the whole host stalled,
the sampler with it), how far the machine's wall clock was stepped against the run's (topologies/wallclock.py:
a paused virtual machine whose clock is set forward on resume, or NTP; the run's clock ignores it), and per process of the run its CPU and run-queue
delay (schedstat, summed over its threads: /proc/PID/schedstat is the leader thread's alone). A worker's
inference threads (named `ort-...`, workers/runtime.py) are measured apart from its other threads, as the
entry `<name> inference (PID)` of the group `real inference`: the run-queue delay of real inference is theirs
alone, not that of the event loop beside them. And the early stop of a clearly lost run (the sources' send
lag, read from records.csv as it grows; a keeper of the run's cores on another server found gone, live/keeper.py).
Times and delays are virtual ms given the run's time dilation factor
K (real / K); CPU shares are real. The verdict after the run is live/verdict.py's.

On a run across servers each other server is read the same way through its agent (`cpu_sample`, one request per
server and sample): its processes of the run join `procs` (named `<name> (<pid>@<server>)`, their pids the
server's), so real inference there is judged with the driver's, and its host figures go to `servers.<name>`
(`host_cores`, `cpus`, `host_some_pct`, `run_some_pct`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from live.procs import Process, servers_processes
from live.sendlag import OpensTail, StreamSchedule
from testbed.agent import AgentClient, AgentError
from topologies import wallclock
from topologies.timescale import TimeScale
from workers.runtime import INFERENCE_THREAD_PREFIX
from workload.trace import Trace

MONITOR_NAME = "monitor.jsonl"
SAMPLE_S = 1.0
"""Real seconds between samples."""
WINDOW_MS = 1000.0
"""The monitor's window, virtual ms: figures per window say from when an invariant broke."""
EARLY_STOP_LAG_P99_MS = 20.0
EARLY_STOP_WINDOWS = 3
"""A run is clearly lost when its send lag p99 is over EARLY_STOP_LAG_P99_MS in this many consecutive windows."""
REAL_INFERENCE = "real inference"
"""The group of a worker's inference threads in monitor.jsonl."""


def time_scale(spec: object) -> TimeScale:
    """Returns the run's map between real and virtual time (K = 1 where the spec has no time dilation)."""
    return TimeScale(float(getattr(spec, "tdf", None) or 1.0), float(getattr(spec, "tdf_anchor_s", 0.0) or 0.0))


def judged_from_ms(spec: object) -> float:
    """Returns from when the run is judged, virtual ms since t0 (`RunSpec.judged_from_s`, of a spec or of
    spec.json's dict): a `--tdf auto` pilot's warm-up; 0 for every other run. The verdict and the early stop
    leave out what came before."""
    value = spec.get("judged_from_s") if isinstance(spec, dict) else getattr(spec, "judged_from_s", None)
    return 1000.0 * float(value or 0.0)


def thread_ids(pid: int) -> list[str] | None:
    """Returns the thread ids of a process; None if it is gone."""
    with contextlib.suppress(OSError):
        return os.listdir(f"/proc/{pid}/task")
    return None


def inference_threads(pid: int, tids: list[str]) -> list[str]:
    """Returns which of a process's threads run inference: those named `ort-...` (a real replica's thread and
    the intra-op threads ONNX Runtime made from it, which inherit its name)."""
    out = []
    for tid in tids:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/task/{tid}/comm").read_text().startswith(INFERENCE_THREAD_PREFIX):
                out.append(tid)
    return out


def task_schedstat(pid: int) -> tuple[int, int] | None:
    """Returns (ns on CPU, ns waiting on a run queue) summed over every live thread of a process; None if gone."""
    tids = thread_ids(pid)
    return None if tids is None else threads_schedstat(pid, tids)


def threads_schedstat(pid: int, tids: list[str]) -> tuple[int, int]:
    """Returns (ns on CPU, ns waiting on a run queue) summed over the threads `tids` of a process (those gone
    since count nothing)."""
    run_ns = wait_ns = 0
    for tid in tids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
            run_ns += int(fields[0])
            wait_ns += int(fields[1])
    return run_ns, wait_ns


def pressure_some_us(path: Path) -> int | None:
    """Returns the `some` total (us stalled) of a PSI file (/proc/pressure/cpu, a group's cpu.pressure)."""
    with contextlib.suppress(OSError):
        return some_us(path.read_text())
    return None


def some_us(text: str | None) -> int | None:
    """Returns the `some` total (us stalled) of a PSI file's text (None: no such file, or no such line)."""
    with contextlib.suppress(AttributeError, ValueError, StopIteration):
        line = next(x for x in text.splitlines() if x.startswith("some "))  # type: ignore[union-attr]
        return int(line.rsplit("total=", 1)[1])
    return None


def busy_jiffies(stat_line: str | None = None) -> tuple[int, int, int]:
    """Returns (busy, total, stolen) jiffies of the host's CPUs so far (/proc/stat's first line, this machine's if
    not given). Stolen: time a virtual machine's CPUs were ready but its hypervisor ran something else; it counts
    as busy (the run could not use it either)."""
    line = Path("/proc/stat").read_text().split("\n", 1)[0] if stat_line is None else stat_line
    fields = [int(x) for x in line.split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields), fields[7] if len(fields) > 7 else 0


@dataclass
class _State:
    real_s: float
    jiffies: tuple[int, int, int]
    host_some_us: int | None
    run_some_us: int | None
    procs: dict[str, tuple[str, int, int]]
    """name (pid) -> (group, run ns, wait ns)."""
    cpus: int = os.cpu_count() or 1
    wall_step_ns: int = 0
    """How far the machine's wall clock is ahead of the run's (topologies/wallclock.py)."""


class Monitor:
    """The sampler thread (a context: started on enter, stopped on exit) and the early stop of the run."""

    def __init__(self, run_dir: Path, spec: object, t0_s: float, pressure_group: Path | None,
                 processes: Callable[[], list[Process]], trace: Trace,
                 cores_lost: Callable[[], dict | None] = lambda: None,
                 servers: dict[str, RemoteHost] | None = None) -> None:
        self.path = run_dir / MONITOR_NAME
        self.scale = time_scale(spec)
        self.t0_s = t0_s
        """The run's start, virtual epoch s."""
        self.pressure = pressure_group
        self.processes = processes
        self.lost = LostRun(run_dir / "records.csv", trace, judged_from_ms(spec))
        self.cores_lost = cores_lost
        """The first keeper of the run's cores on another server found gone (RunCores.lost), or None."""
        self.servers = servers or {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fidelity-monitor", daemon=True)

    @classmethod
    def of(cls, run: Any, net: Any) -> Monitor:
        """Returns the monitor of a live run (live.orchestrate.LiveRun) on its network, from t0 on."""
        pressure = run.cores.pressure_group if run.cores is not None else None
        lost = run.cores.lost if run.cores is not None else lambda: None
        return cls(run.out, run.spec, run.t0_s, pressure, lambda: run.processes(net), run.trace, lost,
                   remote_hosts(run, net))

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def now_ms(self) -> float:
        """Virtual ms since t0."""
        return (self.scale.virtual_s(wallclock.time_s()) - self.t0_s) * 1000.0

    def run_lost(self) -> dict | None:
        """Returns why the run is clearly lost, or None: a server's cores no longer held (its keeper gone: from
        `windows_from_s`, virtual s since t0, that server's figures depend on what else runs there), or the
        windows whose send lag broke the early-stop limit."""
        gone = self.cores_lost()
        if gone is not None:
            since_s = max(0.0, self.scale.virtual_s(gone["at_epoch_s"]) - self.t0_s)
            return {**{k: v for k, v in gone.items() if k != "at_epoch_s"}, "windows_from_s": round(since_s, 3)}
        return self.lost.check()

    def _read(self) -> _State:
        procs = {}
        try:
            listed = self.processes()
        except RuntimeError:  # the run's process lists changed under us (a scheduler restarted): next time
            listed = []
        for group, name, pid in listed:
            tids = thread_ids(pid)
            if tids is None:
                continue
            inference = inference_threads(pid, tids) if group == "workers" else []
            if inference:
                procs[f"{name} inference ({pid})"] = (REAL_INFERENCE, *threads_schedstat(pid, inference))
            procs[f"{name} ({pid})"] = (group, *threads_schedstat(pid, [t for t in tids if t not in inference]))
        return _State(time.monotonic(), busy_jiffies(), pressure_some_us(Path("/proc/pressure/cpu")),
                      None if self.pressure is None else pressure_some_us(self.pressure / "cpu.pressure"), procs,
                      wall_step_ns=wallclock.step_ns())

    def _read_servers(self) -> dict[str, _State]:
        out = {}
        for name, host in self.servers.items():
            with contextlib.suppress(AgentError, ValueError, KeyError, IndexError, RuntimeError):
                out[name] = host.read()  # RuntimeError: the run's schedulers changed while listed (a restart)
        return out

    def _loop(self) -> None:
        with contextlib.suppress(OSError), self.path.open("a") as out:
            prev, prev_servers = self._read(), self._read_servers()
            while not self._stop.wait(SAMPLE_S):
                cur, cur_servers = self._read(), self._read_servers()
                line = sample(prev, cur, self.now_ms(), self.scale.factor)
                if self.servers:
                    line["servers"] = {}
                for name, state in cur_servers.items():
                    if name in prev_servers:
                        theirs = sample(prev_servers[name], state, 0.0, self.scale.factor)
                        line["procs"].update({f"{k[:-1]}@{name})": v for k, v in theirs.pop("procs").items()})
                        line["servers"][name] = {k: v for k, v in theirs.items() if k not in ("t_ms", "real_s", "wall_step_ms")}
                out.write(json.dumps(line) + "\n")
                out.flush()
                prev, prev_servers = cur, cur_servers


def sample(prev: _State, cur: _State, t_ms: float, k: float) -> dict:
    """Returns one line of monitor.jsonl from two reads: shares of the real interval, delays in virtual ms."""
    dt_s = max(cur.real_s - prev.real_s, 1e-6)
    busy = cur.jiffies[0] - prev.jiffies[0]
    total = max(cur.jiffies[1] - prev.jiffies[1], 1)
    stolen = cur.jiffies[2] - prev.jiffies[2]

    def stall(a: int | None, b: int | None) -> float | None:
        return None if a is None or b is None else round((b - a) / 1e4 / dt_s, 2)  # % of the interval

    procs = {}
    for name, (group, run_ns, wait_ns) in cur.procs.items():
        _, run0, wait0 = prev.procs.get(name, (group, run_ns, wait_ns))
        d_run, d_wait = run_ns - run0, wait_ns - wait0
        procs[name] = {"group": group, "cores": round(d_run / 1e9 / dt_s, 3),
                       "run_ms": round(d_run / 1e6 / k, 3), "wait_ms": round(d_wait / 1e6 / k, 3)}
    return {
        "t_ms": round(t_ms, 1),
        "real_s": round(dt_s, 3),
        "wall_step_ms": round((cur.wall_step_ns - prev.wall_step_ns) / 1e6, 1),
        "host_cores": round(busy / total * cur.cpus, 3),
        "host_steal_pct": round(100 * stolen / total, 2),
        "cpus": cur.cpus,
        "host_some_pct": stall(prev.host_some_us, cur.host_some_us),
        "run_some_pct": stall(prev.run_some_us, cur.run_some_us),
        "procs": procs,
    }


@dataclass
class RemoteHost:
    """Another server of the run as the monitor reads it: its agent, its run's pressure group there, and the run's
    processes there now ((group, name, pid), pids of that server's)."""

    client: AgentClient
    pressure_group: str | None
    processes: Callable[[], list[Process]]

    def read(self) -> _State:
        """Returns the server's figures now (one agent request); raises AgentError if it does not answer."""
        listed = self.processes()
        groups = [self.pressure_group] if self.pressure_group else []
        got = self.client.call("cpu_sample", pids=[pid for _, _, pid in listed], groups=groups)
        return state_of_sample(got, listed, self.pressure_group)


def state_of_sample(got: dict, listed: list[Process], pressure_group: str | None) -> _State:
    """Returns a server's figures from its agent's `cpu_sample` of the processes `listed` (as `Monitor._read` reads
    this machine's: a worker's inference threads apart)."""
    procs: dict[str, tuple[str, int, int]] = {}
    for group, name, pid in listed:
        threads = got["threads"].get(str(pid))
        if threads is None:
            continue
        inference = [t for t, (comm, _) in threads.items()
                     if group == "workers" and (comm or "").startswith(INFERENCE_THREAD_PREFIX)]

        def total(tids: list[str], th: dict = threads) -> tuple[int, int]:
            stats = [[int(x) for x in th[t][1].split()[:2]] for t in tids if th[t][1]]
            return sum(x[0] for x in stats), sum(x[1] for x in stats)

        if inference:
            procs[f"{name} inference ({pid})"] = (REAL_INFERENCE, *total(inference))
        procs[f"{name} ({pid})"] = (group, *total([t for t in threads if t not in inference]))
    run_some = some_us(got["groups"].get(pressure_group)) if pressure_group else None
    return _State(time.monotonic(), busy_jiffies(got["stat"]), some_us(got["pressure"]), run_some, procs,
                  int(got["cpus"]))


def remote_hosts(run: Any, net: Any) -> dict[str, RemoteHost]:
    """Returns the other servers of a live run as the monitor reads them (none on one machine)."""
    servers = getattr(net, "servers", None)
    if servers is None:
        return {}
    cores = run.cores.servers if run.cores is not None else {}

    return {name: RemoteHost(client, cores[name].pressure_group if name in cores else None,
                             lambda n=name: servers_processes(run, net).get(n, []))
            for name, client in servers.clients.items()}


class LostRun:
    """Reads records.csv as it grows and keeps the sources' send lag (live/sendlag.py, as the verdict counts it)
    per window of due time: a run whose lag p99 is over the early-stop limit in EARLY_STOP_WINDOWS consecutive
    windows is lost. The records are read before the openings (live/sendlag.py OpensTail), so each record read
    has its opening. Queries due before `judged_from_ms` (virtual ms since t0: a `--tdf auto` pilot's warm-up,
    `RunSpec.judged_from_s`) count for nothing, as in the verdict."""

    def __init__(self, records: Path, trace: Trace, judged_from_ms: float = 0.0) -> None:
        self.records = records
        self.judged_from_ms = judged_from_ms
        self.schedule = StreamSchedule(trace)
        self.opens = OpensTail(records.parent)
        self.offset = 0
        self.lags: dict[int, list[float]] = {}
        self.columns: list[str] | None = None
        self.judged = -1
        self.run_over: list[tuple[int, float]] = []

    def _read_new(self) -> None:
        with contextlib.suppress(OSError), self.records.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read()
            end = chunk.rfind(b"\n") + 1
            self.offset += end
            rows = list(csv.reader(chunk[:end].decode(errors="replace").splitlines()))
            if self.columns is None and rows:
                self.columns, rows = rows[0], rows[1:]
            if not self.columns:
                return
            c = [self.columns.index(n) for n in ("stream_id", "query", "t_send_ms", "outcome", "reason")]
            parsed = []
            for r in rows:
                with contextlib.suppress(ValueError, IndexError):
                    parsed.append((int(r[c[0]]), int(r[c[1]]), float(r[c[2]]), r[c[3]], r[c[4]]))
            if not parsed:
                return
            sid, query, t_send = (np.array([p[n] for p in parsed]) for n in range(3))
            due, _ = self.schedule.due_ms(sid, query, self.opens.read())
            sent = self.schedule.sent_mask(sid, query, t_send, np.array([p[3] for p in parsed], dtype=object),
                                           np.array([p[4] for p in parsed], dtype=object))
            kept = sent & (due >= self.judged_from_ms)
            for d, x in zip(due[kept], (t_send - due)[kept], strict=True):
                self.lags.setdefault(int(d // WINDOW_MS), []).append(float(x))

    def check(self) -> dict | None:
        """Returns why the run is lost by now, or None. A window is judged once rows of a later one come in
        (rows come as queries end, up to the timeout after their send; a source sends in time order), on the
        rows it has by then; rows of a window already judged are not kept."""
        self._read_new()
        latest = max(self.lags, default=-1)
        for w in [w for w in self.lags if w <= self.judged]:
            del self.lags[w]
        while self.judged < latest - 1:
            self.judged += 1
            lags = self.lags.pop(self.judged, [])
            if not lags:
                continue  # nothing sent then: neither breaks nor continues a run of bad windows
            p99 = float(np.percentile(lags, 99))
            if p99 > EARLY_STOP_LAG_P99_MS:
                self.run_over.append((self.judged, p99))
            else:
                self.run_over.clear()
        if len(self.run_over) < EARLY_STOP_WINDOWS:
            return None
        return {"invariant": "source send lag", "limit_ms": EARLY_STOP_LAG_P99_MS,
                "windows_from_s": self.run_over[0][0] * WINDOW_MS / 1000.0,
                "lag_p99_ms": [round(p, 1) for _, p in self.run_over]}
