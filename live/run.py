"""A live testbed run: workers in the cluster hosts, a scheduler per antenna, sources replaying a trace,
all inside the emulated network; then records, pcap, statistics, plots and a summary in the run dir.

`plan_workers` decides which resource runs real ONNX and which is profile-driven, `run_live` brings
everything up in order (network, captures, link check, workers, schedulers, sources), waits for the trace
to end, stops it all in reverse order and tears the network down; `summarise` reads the records back.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from analysis.plots import plot_success_over_time
from analysis.records import OUTCOMES, RecordWriter, read_records
from analysis.summary import RunSummary, Tally, outcome_index
from live.realprofile import (
    REAL_INFERENCE_CORES,
    REAL_THREADS_PER_REPLICA,
    MeasuredModel,
    real_cores_needed,
    real_model_batches,
    real_worker_cpu,
    time_real_workers,
)
from scheduler.core import POLICY_NAMES, check_policy, policy_index
from scheduler.profiles import ProfileSet, load_profiles
from scheduler.system import SystemModel, build_system
from simulator.engine import SimConfig, Simulation
from simulator.run import write_timeseries
from testbed.capture import DEFAULT_SNAPLEN, choose_hosts, start_captures, stop_captures
from testbed.network import EmulatedNetwork, Host, check_mtu
from testbed.plan import build_plan
from topologies import Topology, load_topology
from workload.arrivals import RateSchedule, generate_trace, workload_rng
from workload.trace import Trace, read_trace, write_trace

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKER_BASE_PORT = 8000
SCHEDULER_PORT = 7000
READY_TIMEOUT_S = 120.0
PACKAGES = ("numpy", "aiohttp", "onnxruntime", "pyarrow", "matplotlib", "scikit-image", "pillow", "os-ken")


@dataclass(frozen=True)
class LiveConfig:
    """Everything a live run depends on besides the topology, profile and trace files themselves."""

    topo: str = "full-edge"
    policy: str | None = None
    """A static policy or `aset` (needs `agent`); None: aset with an agent, else closest. Closest by default:
    it binds the tight streams to the antennas' own clusters, whose CPU variants run real ONNX inference
    (least-impedance prefers the GPU variants further up, which are profile-driven here)."""
    agent: Path | None = None
    """An exported ASET agent (ONNX): it picks every scheduler's policy per decision window (policy aset)."""
    trace: Path | None = None
    """Replay this trace; None: generate Poisson arrivals (lambda_per_min, duration_s, seed)."""
    lambda_per_min: str = "3"
    duration_s: float | None = 60.0
    """Queries are sent until this time (None with a trace: until its last stream ends)."""
    seed: int = 1
    profiles: Path | None = None
    out: Path | None = None
    real_sites: tuple[str, ...] | None = None
    """Cluster sites whose CPU variants run real ONNX inference as far as the core of real inference carries
    them (`real_resources`); None: `choose_real_site` on a simulated dry run of the trace (the smallest
    cluster when no stream goes to a CPU variant)."""
    pcap: str = "default"
    pcap_snaplen: int = DEFAULT_SNAPLEN
    shaping: str = "auto"
    switch: str = "ovs"
    controller: str = "osken"
    timeout_s: float = 5.0
    """A query unanswered this long has failed (reason timeout); also the drain after the last send."""
    window_s: float = 1.0
    eta: float = 1.0
    max_batch_delay_ms: float = 2.0
    queue_limit_per_replica: int = 16
    """As the simulator's defaults, so that both environments run the same system."""
    load_poll_s: float = 2.0
    """Seconds between a scheduler's polls of every worker's load report (at 1 s, the polls of full-edge's
    4 schedulers x 32 workers cost about 0.28 of a core on this machine; at 2 s half that)."""
    measure_links: bool = True
    corrupt_every: int = 0
    kill_worker: tuple[tuple[str, float], ...] = ()
    """(resource name, seconds after t0): SIGKILL that resource's worker then."""
    restart_scheduler: tuple[tuple[str, float], ...] = ()
    """(antenna, seconds after t0): stop that antenna's scheduler and start a fresh one then."""
    lead_s: float = 0.5
    """Seconds between every process being ready and t0."""
    profile_real_workers: bool = True
    """Time the real workers' models on this CPU before the run and decide with those figures (the run's
    `profiles.yaml`: the given profile with those models' CPU latencies replaced; live/realprofile.py).
    Skipped with an agent, whose state is defined by the profile it was trained with."""
    mtu: int = 9000
    """MTU of every emulated interface (EmulatedNetwork's `mtu`, set as the network is built). Jumbo frames
    by default: a 50 kB frame is ~6 packets instead of ~35, which the userspace wires and switches of a
    2-core machine can forward (1500: standard)."""


@dataclass(frozen=True)
class WorkerPlan:
    """One worker process: a resource of the system model, real or profile-driven, and its address."""

    resource: str
    site: str
    model: str
    device: str
    batch: int
    replicas: int
    real: bool
    port: int
    queue_limit: int
    note: str = ""


@dataclass
class Proc:
    """A process of the run, the host it runs in and its log file."""

    name: str
    host: Host
    argv: list[str]
    log: Path
    popen: subprocess.Popen | None = None
    url: str = ""

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("a") as f:
            self.popen = self.host.popen(
                self.argv,
                stdout=f,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout_s: float = 10.0) -> int | None:
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.terminate()
        try:
            return self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait(timeout_s)


@dataclass
class LiveResult:
    """What `run_live` gives back: the summary, the run dir and the accounting check."""

    summary: RunSummary
    out: Path
    expected_queries: int
    recorded_queries: int
    reasons: dict[str, int]
    scheduler_stats: dict[str, dict]
    wall_s: float
    events: list[dict] = field(default_factory=list)
    interrupted: bool = False


class LiveInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM ended the run early; the network is down and `result` sums up what was recorded."""

    def __init__(self, result: LiveResult) -> None:
        super().__init__("interrupted")
        self.result = result


def smallest_cluster(topo: Topology, profiles: ProfileSet, system: SystemModel) -> str:
    """Returns the cluster with the fewest cores that hosts a CPU variant (file order breaks ties)."""
    cpu_sites = {r.site for r in system.resources if r.variant.device == "cpu"}
    sites = [s for s in topo.clusters if s.name in cpu_sites]
    if not sites:
        raise ValueError(f"{topo.source}: no cluster hosts a CPU variant that could run real inference")
    return min(sites, key=lambda s: s.compute.cpu_cores).name  # type: ignore[union-attr]


def busiest_cpu_cluster(
    system: SystemModel,
    trace: Trace,
    policy: str,
    duration_s: float,
    seed: int,
    eta: float,
    real_cores: float = REAL_INFERENCE_CORES,
) -> tuple[str | None, dict[str, int]]:
    """Returns the cluster whose CPU variants that real inference can carry (`real_resources`) the policy
    gives the most queries in a simulated dry run of the same trace; failing that, the cluster whose CPU
    variants it gives the most queries (None if it gives them none); and the queries per resource."""
    per_resource: dict[str, int] = {}

    def sink(cols: dict[str, np.ndarray]) -> None:
        for cluster, variant in zip(cols["cluster"], cols["variant"], strict=True):
            if cluster:
                key = f"{variant}@{cluster}"
                per_resource[key] = per_resource.get(key, 0) + 1

    sim = Simulation(system, trace, SimConfig(duration_s=duration_s, eta=eta), seed=seed, record_sink=sink)
    sim.run(policy_index(policy))
    return choose_real_site(system, per_resource, real_cores), per_resource


def choose_real_site(system: SystemModel, queries: dict[str, int], real_cores: float) -> str | None:
    """Returns the cluster whose CPU variants that real inference can carry have the most `queries`;
    failing that, the cluster whose CPU variants have the most; None if no CPU variant has any."""
    carried: dict[str, int] = {}
    for site in dict.fromkeys(r.site for r in system.resources):
        real = real_resources(system, (site,), queries, real_cores)
        carried[site] = sum(queries.get(name, 0) for name, ok in real.items() if ok)
    if max(carried.values(), default=0) == 0:
        carried = {}
        for r in system.resources:
            if r.variant.device == "cpu":
                carried[r.site] = carried.get(r.site, 0) + queries.get(r.name, 0)
    best = max(carried, key=lambda k: carried[k], default=None)
    return best if best is not None and carried[best] > 0 else None


def real_resources(
    system: SystemModel, sites: tuple[str, ...], queries: dict[str, int] | None, real_cores: float
) -> dict[str, bool]:
    """Returns, for every CPU variant at `sites`, whether it runs real ONNX: as far as the cores real
    inference has carry their replicas (one intra-op thread each: one core when busy; oversubscribed, the
    replicas would starve each other and miss their profile), the variants with the most `queries` first
    (file order breaks ties)."""
    candidates = [r for r in system.resources if r.site in sites and r.variant.device == "cpu"]
    candidates.sort(key=lambda r: -(queries or {}).get(r.name, 0))
    real, left = {}, real_cores
    for r in candidates:
        need = real_cores_needed(r)
        real[r.name] = need <= left + 1e-9
        if real[r.name]:
            left -= need
    return real


def plan_workers(
    system: SystemModel,
    real_sites: tuple[str, ...],
    config: LiveConfig,
    queries: dict[str, int] | None = None,
    real_cores: float = REAL_INFERENCE_CORES,
) -> list[WorkerPlan]:
    """Returns one worker per resource: real ONNX on the CPU variants at the real sites that the cores of
    real inference carry (`real_resources`, the variants a dry run gives the most `queries` first); every
    other worker is profile-driven."""
    known = {s.name for s in system.topology.clusters}
    for site in real_sites:
        if site not in known:
            raise ValueError(
                f"--real-workers: {site!r} is not a cluster of {system.topology.source} "
                f"(clusters: {', '.join(sorted(known))})"
            )
    real_names = {name for name, ok in real_resources(system, real_sites, queries, real_cores).items() if ok}
    taken = sum(real_cores_needed(r) for r in system.resources if r.name in real_names)
    plans, next_port = [], {}
    for r in system.resources:
        v = r.variant
        port = next_port.get(r.site, WORKER_BASE_PORT)
        next_port[r.site] = port + 1
        real = r.name in real_names
        note = ""
        if r.site in real_sites and v.device != "cpu":
            note = "no GPU on this machine: profile-driven"
        elif r.site in real_sites and not real:
            note = (f"{r.replicas} replica(s) need {real_cores_needed(r):g} core(s); real "
                    f"inference has {real_cores:g}, {taken:g} taken")
        plans.append(
            WorkerPlan(
                resource=r.name,
                site=r.site,
                model=v.model,
                device=v.device,
                batch=v.batch_size,
                replicas=r.replicas,
                real=real,
                port=port,
                queue_limit=config.queue_limit_per_replica * v.batch_size * r.replicas,
                note=note,
            )
        )
    return plans


def worker_argv(plan: WorkerPlan, ip: str, profiles_path: str, config: LiveConfig) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "workers.serve",
        "--model",
        plan.model,
        "--host",
        ip,
        "--port",
        str(plan.port),
        "--batch",
        str(plan.batch),
        "--instances",
        str(plan.replicas),
        "--device",
        plan.device,
        "--max-batch-delay-ms",
        str(config.max_batch_delay_ms),
        "--queue-limit",
        str(plan.queue_limit),
    ]
    if plan.real:  # one core for real inference, so that the emulation keeps the other
        argv += ["--cpus", str(real_worker_cpu()), "--threads", str(REAL_THREADS_PER_REPLICA)]
    else:
        argv += ["--profile-driven", profiles_path]
    return argv


def build_trace(config: LiveConfig, system: SystemModel) -> tuple[Trace, float, str]:
    """Returns the streams to replay, the duration (s) and a label of the load; refuses a bad trace file."""
    if config.trace is not None:
        trace = read_trace(config.trace, system.antennas)
        duration = config.duration_s if config.duration_s is not None else float(trace.end_s.max(initial=0.0))
        return trace, duration, f"trace:{config.trace}"
    if config.duration_s is None:
        raise ValueError("--duration is needed to generate a workload")
    schedule = RateSchedule.parse(config.lambda_per_min)
    trace = generate_trace(system.antennas, schedule, config.duration_s, workload_rng(config.seed))
    return trace, config.duration_s, str(schedule)


def format_worker_table(plans: list[WorkerPlan]) -> str:
    rows = [("resource", "site", "mode", "replicas", "batch", "port")]
    rows += [
        (
            p.resource,
            p.site,
            ("real ONNX" if p.real else "profile-driven") + (f" ({p.note})" if p.note else ""),
            str(p.replicas),
            str(p.batch),
            str(p.port),
        )
        for p in plans
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


class RecordMerger:
    """Appends the sources' new complete CSV lines to the run's records.csv (header once), flushed."""

    def __init__(self, parts: list[Path], merged: Path) -> None:
        self.parts = parts
        self.offsets = dict.fromkeys(parts, 0)
        self.merged = merged
        self.rows = 0
        merged.unlink(missing_ok=True)
        RecordWriter(merged).close()  # the header alone
        self._out = merged.open("ab")

    def poll(self) -> None:
        for part in self.parts:
            if not part.exists():
                continue
            with part.open("rb") as f:
                f.seek(self.offsets[part])
                chunk = f.read()
            end = chunk.rfind(b"\n") + 1
            if end == 0:
                continue
            lines = chunk[:end]
            if self.offsets[part] == 0:
                lines = lines[lines.find(b"\n") + 1 :]  # the part's header
            self.offsets[part] += end
            self._out.write(lines)
            self.rows += lines.count(b"\n")
        self._out.flush()

    def close(self) -> None:
        self.poll()
        self._out.close()


class Events:
    """The run's event log (events.jsonl): what the orchestrator did and saw, with times since t0."""

    def __init__(self, path: Path, log: Callable[[str], None]) -> None:
        self.path = path
        self.t0_s: float | None = None
        self.log = log
        self.entries: list[dict] = []

    def __call__(self, kind: str, **what: object) -> None:
        t_ms = (time.time() - self.t0_s) * 1000.0 if self.t0_s else None
        entry = {"t_ms": None if t_ms is None else round(t_ms, 1), "event": kind, **what}
        self.entries.append(entry)
        with self.path.open("a") as f:
            f.write(json.dumps(entry) + "\n")
        self.log(
            f"[{'' if t_ms is None else f'{t_ms / 1000:7.2f} s'}] {kind} "
            + " ".join(f"{k}={v}" for k, v in what.items())
        )


def wait_ready(procs: list[Proc], timeout_s: float = READY_TIMEOUT_S) -> None:
    """Waits until every process printed `READY <url>`; raises naming the first that died or is late."""
    deadline = time.monotonic() + timeout_s
    pending = list(procs)
    while pending:
        for p in list(pending):
            text = p.log.read_text(errors="replace") if p.log.exists() else ""
            ready = [line for line in text.splitlines() if line.startswith("READY")]
            if ready:
                p.url = (ready[-1].split() + [""])[1]
                pending.remove(p)
            elif not p.running():
                raise RuntimeError(
                    f"{p.name} exited before it was ready; its log {p.log}:\n"
                    + "\n".join(text.splitlines()[-15:])
                )
        if pending and time.monotonic() > deadline:
            raise RuntimeError(f"{pending[0].name} not ready after {timeout_s:.0f} s; see {pending[0].log}")
        time.sleep(0.1)


def cpu_seconds(pid: int) -> float | None:
    """Returns a process's user + system CPU time in seconds (None if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pidof(name: str) -> list[int]:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return [
            int(p)
            for p in subprocess.run(["pidof", name], capture_output=True, text=True, timeout=5).stdout.split()
        ]
    return []


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    for tool in (["ovs-vsctl", "--version"], ["tcpdump", "--version"], ["uname", "-r"]):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out[tool[0]] = subprocess.run(
                tool, capture_output=True, text=True, timeout=5
            ).stdout.splitlines()[0]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        out["git_commit"] = commit + ("+dirty" if dirty else "")
    return out


class LiveRun:
    """One run in progress: its processes, files and events (`run_live` drives it)."""

    def __init__(self, config: LiveConfig, log: Callable[[str], None]) -> None:
        self.config = config
        self.log = log
        self.topo = load_topology(config.topo)
        self.profiles = load_profiles(config.profiles)
        self.system = build_system(self.topo, self.profiles)
        # refuses an unknown policy, aset without an agent or an agent with a static policy, before anything
        self.policy = check_policy(config.policy, config.agent, default="closest")
        dry_policy = self.policy
        self.decision_window_s = config.window_s
        if config.agent is not None:  # refuses an agent file trained for another system, before anything starts
            from scheduler.aset.policy import AsetController

            controller = AsetController.for_system(config.agent, self.system)
            self.decision_window_s = controller.decision_window_s
            dry_policy = POLICY_NAMES[controller.policy.meta.fallback_policy]  # the agent's usual choice
        self.trace, self.duration_s, self.load_label = build_trace(config, self.system)
        self.dry_note = self.real_note = ""
        self.dry_queries: dict[str, int] = {}
        if config.real_sites is not None:
            self.real_sites = tuple(config.real_sites)
        else:
            busiest, self.dry_queries = busiest_cpu_cluster(
                self.system, self.trace, dry_policy, self.duration_s, config.seed, config.eta
            )
            if busiest is None:
                busiest = smallest_cluster(self.topo, self.profiles, self.system)
                self.dry_note = (
                    f"note: in a simulated dry run {dry_policy} binds no stream to a CPU variant, "
                    f"so the real ONNX workers at {busiest} may stay idle (e.g. --policy closest "
                    "sends streams to the antennas' own clusters)"
                )
            self.real_sites = (busiest,)
        self.workers_plan = self.plan()
        choose_hosts(build_plan(self.topo, "x").hosts, config.pcap)  # refuses an unknown host before anything
        check_mtu(config.mtu)  # and an MTU the network would refuse
        for ant, _ in config.restart_scheduler:
            self.system.antenna_index(ant)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.out = Path(config.out) if config.out else Path("runs") / f"{stamp}-{self.topo.name}"
        if self.out.exists() and any(self.out.iterdir()):
            raise ValueError(f"--out {self.out}: the folder exists and is not empty")
        self.out.mkdir(parents=True, exist_ok=True)
        self.events = Events(self.out / "events.jsonl", log)
        self.workers: list[Proc] = []
        self.schedulers: dict[str, Proc] = {}
        self.sources: list[Proc] = []
        self.restarts: dict[str, int] = {}
        self.t0_s = 0.0
        self.cpu_groups: dict[str, float] = {}
        self.t0_file = self.out / "t0"
        self.profiled: list[MeasuredModel] = []

    def plan(self) -> list[WorkerPlan]:
        """Returns the worker plan of the system; refuses a --kill-worker naming no resource."""
        plans = plan_workers(self.system, self.real_sites, self.config, self.dry_queries)
        for name, _ in self.config.kill_worker:
            if name not in {p.resource for p in plans}:
                raise ValueError(
                    f"--kill-worker: no resource {name!r}; resources: " + ", ".join(p.resource for p in plans)
                )
        fit_note = ""
        if self.real_sites and not any(p.real for p in plans):
            fit_note = (
                f"note: no CPU variant at {', '.join(self.real_sites)} fits in the {REAL_INFERENCE_CORES:g} "
                f"core(s) real inference has (one per replica): every worker is profile-driven"
            )
        self.real_note = "\n".join(n for n in (self.dry_note, fit_note) if n)
        return plans

    def profile_real_workers(self) -> None:
        """Times the real workers' models on their CPU and switches the run to the profile with those
        figures (see LiveConfig.profile_real_workers), its system and its worker plan."""
        batches = real_model_batches(self.system, {p.resource for p in self.workers_plan if p.real})
        if not batches or not self.config.profile_real_workers:
            return
        if self.config.agent is not None:
            self.log(f"not timing the real workers' models ({', '.join(batches)}): the agent's state is defined "
                     f"by {self.profiles.source}, with which the schedulers decide")
            return
        self.log(f"timing the real workers' models on CPU {real_worker_cpu()} ({REAL_THREADS_PER_REPLICA} thread, "
                 f"as they run) so that the schedulers decide with this host's figures; "
                 f"--no-profile-real-workers keeps {self.profiles.source}")
        before = {r.name for r in self.system.resources}

        def real_models_of(path: Path) -> dict[str, tuple[int, ...]]:
            self.profiles = load_profiles(path)
            self.system = build_system(self.topo, self.profiles)  # a placement may pack differently now
            self.workers_plan = self.plan()
            return real_model_batches(self.system, {p.resource for p in self.workers_plan if p.real})

        path, self.profiled = time_real_workers(Path(self.profiles.source), self.out / "profiles.yaml",
                                                real_models_of, self.log)
        real_models_of(path)
        after = {r.name for r in self.system.resources}
        if after != before:
            self.log(f"with this host's figures the placement changed: added {sorted(after - before)}, "
                     f"removed {sorted(before - after)}")

    # -- files before the run ------------------------------------------------------------------------

    def write_inputs(self) -> None:
        write_trace(self.trace, self.out / "trace.csv")
        cfg = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self.config).items()}
        cfg.update(
            real_sites=list(self.real_sites),
            duration_s=self.duration_s,
            load=self.load_label,
            topology_file=self.topo.source,
            profiles_file=self.profiles.source,
            profiled_real_workers=[asdict(m) for m in self.profiled],
            workers=[asdict(p) for p in self.workers_plan],
            streams=len(self.trace),
            expected_queries=self.trace.expected_queries(self.duration_s),
            argv=sys.argv,
            versions=package_versions(),
        )
        (self.out / "config.json").write_text(json.dumps(cfg, indent=1) + "\n")

    # -- processes -----------------------------------------------------------------------------------

    def start_workers(self, net: EmulatedNetwork) -> None:
        profiles_path = str(Path(self.profiles.source).resolve())
        for plan in self.workers_plan:
            host = net.host_for("worker", plan.site)
            argv = worker_argv(plan, host.ip, profiles_path, self.config)
            self.workers.append(
                Proc(f"worker {plan.resource}", host, argv, self.out / "logs" / f"worker-{plan.resource}.log")
            )
        for w in self.workers:
            w.start()
        wait_ready(self.workers)
        table = {
            p.resource: {"url": w.url, "model": p.model, "real": p.real}
            for p, w in zip(self.workers_plan, self.workers, strict=True)
        }
        (self.out / "workers.json").write_text(json.dumps(table, indent=1) + "\n")

    def scheduler_proc(self, net: EmulatedNetwork, antenna: str) -> Proc:
        host = net.host_for("scheduler", antenna)
        n = self.restarts.get(antenna, 0)
        suffix = f".{n}" if n else ""
        c = self.config
        argv = [
            sys.executable,
            "-m",
            "live.scheduler",
            "--topo",
            self.topo.source,
            "--profiles",
            self.profiles.source,
            "--antenna",
            antenna,
            "--host",
            host.ip,
            "--port",
            str(SCHEDULER_PORT),
            "--workers",
            str((self.out / "workers.json").resolve()),
            "--policy",
            self.policy,
            *(["--agent", str(Path(c.agent).resolve())] if c.agent is not None else []),
            "--seed",
            str(c.seed + 1000 * self.system.antenna_index(antenna) + n),
            "--t0-file",
            str(self.t0_file.resolve()),
            "--eta",
            str(c.eta),
            "--window-s",
            str(c.window_s),
            "--load-poll-s",
            str(c.load_poll_s),
            "--stats",
            str((self.out / "schedulers" / f"{antenna}{suffix}.json").resolve()),
            "--windows-log",
            str((self.out / "windows" / f"{antenna}{suffix}.csv").resolve()),
        ]
        return Proc(
            f"scheduler {antenna}", host, argv, self.out / "logs" / f"scheduler-{antenna}{suffix}.log"
        )

    def start_schedulers(self, net: EmulatedNetwork) -> None:
        (self.out / "schedulers").mkdir(exist_ok=True)
        (self.out / "windows").mkdir(exist_ok=True)
        for ant in self.system.antennas:
            self.schedulers[ant] = self.scheduler_proc(net, ant)
            self.schedulers[ant].start()
        wait_ready(list(self.schedulers.values()))

    def start_sources(self, net: EmulatedNetwork) -> None:
        c = self.config
        for ant in self.system.antennas:
            host = net.host_for("sources", ant)
            argv = [
                sys.executable,
                "-m",
                "live.source",
                "--trace",
                str((self.out / "trace.csv").resolve()),
                "--antenna",
                ant,
                "--scheduler",
                self.schedulers[ant].url,
                "--t0-file",
                str(self.t0_file.resolve()),
                "--duration",
                str(self.duration_s),
                "--records",
                str((self.out / "records" / f"{ant}.csv").resolve()),
                "--timeout-s",
                str(c.timeout_s),
                "--corrupt-every",
                str(c.corrupt_every),
            ]
            proc = Proc(f"source {ant}", host, argv, self.out / "logs" / f"source-{ant}.log")
            proc.start()
            self.sources.append(proc)
        wait_ready(self.sources)

    def set_t0(self) -> None:
        """Fixes the run's start shortly ahead, once everyone is ready, and tells them (the t0 file)."""
        self.t0_s = time.time() + self.config.lead_s
        self.events.t0_s = self.t0_s
        tmp = self.t0_file.with_suffix(".tmp")
        tmp.write_text(f"{self.t0_s:.6f}\n")
        tmp.replace(self.t0_file)

    # -- during the run ------------------------------------------------------------------------------

    def faults(self) -> list[tuple[float, str, str]]:
        c = self.config
        return sorted(
            [(t, "kill-worker", name) for name, t in c.kill_worker]
            + [(t, "restart-scheduler", ant) for ant, t in c.restart_scheduler]
        )

    def apply_fault(self, net: EmulatedNetwork, kind: str, target: str) -> None:
        if kind == "kill-worker":
            idx = [p.resource for p in self.workers_plan].index(target)
            proc = self.workers[idx]
            if proc.popen is not None and proc.running():
                proc.popen.kill()
                proc.popen.wait(5)
            self.events("worker-killed", resource=target, pid=proc.popen.pid if proc.popen else None)
        else:
            old = self.schedulers[target]
            old.stop()
            self.events("scheduler-stopped", antenna=target)
            self.restarts[target] = self.restarts.get(target, 0) + 1
            new = self.scheduler_proc(net, target)
            new.start()
            wait_ready([new], 30.0)
            self.schedulers[target] = new
            self.events("scheduler-restarted", antenna=target, url=new.url)

    def wait_sources(self, net: EmulatedNetwork, merger: RecordMerger) -> None:
        """Runs until every source has exited: merges records, samples ports, applies faults."""
        faults = self.faults()
        give_up = self.t0_s + self.duration_s + self.config.timeout_s + 30.0
        next_sample = 0.0
        with (self.out / "port_stats.jsonl").open("w") as ports:
            while any(s.running() for s in self.sources):
                now = time.time()
                while faults and now >= self.t0_s + faults[0][0]:
                    _, kind, target = faults.pop(0)
                    self.apply_fault(net, kind, target)
                if now >= next_sample:
                    next_sample = now + 1.0
                    ports.write(
                        json.dumps(
                            {
                                "t_ms": round((now - self.t0_s) * 1000.0, 1),
                                "ports": [asdict(p) for p in net.port_stats()],
                            }
                        )
                        + "\n"
                    )
                    ports.flush()
                merger.poll()  # records.csv trails the sources' own logs by at most ~0.6 s
                if now > give_up:
                    self.events("sources-overran", limit_s=round(give_up - self.t0_s, 1))
                    for s in self.sources:
                        s.stop()
                    break
                time.sleep(0.1)
        for s in self.sources:
            code = s.stop()
            if code not in (0, None):
                self.events("source-failed", source=s.name, exit=code, log=str(s.log))

    def cpu_snapshot(self, net: EmulatedNetwork) -> dict[str, tuple[str, float]]:
        """Returns {process label: (group, CPU seconds so far)} for every process that serves the run."""
        procs: list[tuple[str, str, int]] = []
        for group, items in (
            ("workers", self.workers),
            ("schedulers", list(self.schedulers.values())),
            ("sources", self.sources),
        ):
            procs += [(group, p.name, p.popen.pid) for p in items if p.popen is not None]
        helpers = getattr(net, "_helpers", [])  # the network's own helper processes (wires, controller)
        procs += [("wires" if name.startswith("wire") else name, name, p.pid) for name, p in helpers]
        procs += [("ovs-vswitchd", "ovs-vswitchd", pid) for pid in _pidof("ovs-vswitchd")]
        procs += [("orchestrator", "orchestrator", os.getpid())]
        out = {}
        for group, name, pid in procs:
            cpu = cpu_seconds(pid)
            if cpu is not None:
                out[f"{name} ({pid})"] = (group, cpu)
        return out

    def write_cpu(
        self, before: dict[str, tuple[str, float]], after: dict[str, tuple[str, float]], seconds: float
    ) -> dict[str, float]:
        """Writes cpu.json (CPU seconds per process and group during the traffic); returns the groups."""
        per_proc = {k: round(after[k][1] - before.get(k, (after[k][0], 0.0))[1], 2) for k in after}
        groups: dict[str, float] = {}
        for k, v in per_proc.items():
            groups[after[k][0]] = round(groups.get(after[k][0], 0.0) + v, 2)
        (self.out / "cpu.json").write_text(
            json.dumps(
                {"traffic_wall_s": round(seconds, 2), "groups_cpu_s": groups, "processes_cpu_s": per_proc},
                indent=1,
            )
            + "\n"
        )
        return groups

    def stop_services(self) -> None:
        """Stops the sources (still running only if the run is cut short), the schedulers (they write their
        statistics), then every worker, each group at once."""
        for group in (self.sources, list(self.schedulers.values()), self.workers):
            for p in group:
                if p.running():
                    p.popen.terminate()  # type: ignore[union-attr]
            for p in group:
                p.stop()


def run_live(config: LiveConfig, log: Callable[[str], None] = print) -> LiveResult:
    """Runs the testbed live once and returns its result; every file lands in the run dir."""
    t_start = time.monotonic()
    run = LiveRun(config, log)
    run.profile_real_workers()
    run.write_inputs()
    log(
        f"run dir {run.out}; {len(run.trace)} streams, {run.trace.expected_queries(run.duration_s)} queries "
        f"over {run.duration_s:g} s ({run.load_label}), policy {run.policy}"
        + (f" (agent {config.agent}, a decision every {run.decision_window_s:g} s)" if config.agent else "")
    )
    log(
        "workers (real ONNX where the host carries it, profile-driven elsewhere):\n"
        + format_worker_table(run.workers_plan)
    )
    if run.real_note:
        log(run.real_note)
    parts = [run.out / "records" / f"{a}.csv" for a in run.system.antennas]
    merger: RecordMerger | None = None
    net = EmulatedNetwork(
        run.topo,
        shaping=config.shaping,
        switch=config.switch,
        controller=config.controller,
        run_dir=run.out,
        seed=config.seed,
        mtu=config.mtu,
        log=log,
    )
    interrupted = False
    try:
        with net:
            caps = start_captures(
                net, choose_hosts(net.plan.hosts, config.pcap), run.out / "pcap", config.pcap_snaplen
            )
            try:
                if config.measure_links:
                    net.measure_links(check=False)
                run.start_workers(net)
                run.start_schedulers(net)
                merger = RecordMerger(parts, run.out / "records.csv")
                run.start_sources(net)
                run.set_t0()
                run.events(
                    "started",
                    t0_epoch_s=round(run.t0_s, 3),
                    sources=len(run.sources),
                    workers=len(run.workers),
                    schedulers=len(run.schedulers),
                )
                cpu_before, t_traffic = run.cpu_snapshot(net), time.monotonic()
                run.wait_sources(net, merger)
                run.cpu_groups = run.write_cpu(
                    cpu_before, run.cpu_snapshot(net), time.monotonic() - t_traffic
                )
                run.events("sources-done", cpu_s=run.cpu_groups)
            finally:
                run.stop_services()
                stop_captures(caps)
                if merger is not None:
                    merger.close()
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: network torn down; summarising what was recorded")
    if merger is None:
        if interrupted:
            raise KeyboardInterrupt
        raise RuntimeError("the run stopped before any source started")
    result = summarise(run, time.monotonic() - t_start)
    result.interrupted = interrupted
    if interrupted:
        raise LiveInterrupted(result)
    return result


def _source_stats(out: Path) -> dict[str, dict]:
    stats = {}
    for path in sorted((out / "logs").glob("source-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("DONE "):
                with contextlib.suppress(ValueError):
                    stats[path.stem.removeprefix("source-")] = json.loads(line[5:])
    return stats


def _scheduler_stats(out: Path) -> dict[str, dict]:
    stats = {}
    for path in sorted((out / "schedulers").glob("*.json")):
        with contextlib.suppress(ValueError, OSError):
            stats[path.stem] = json.loads(path.read_text())
    return stats


def merge_windows(out: Path) -> list[dict]:
    """Merges every scheduler's windows log (`windows/<antenna>[.n].csv`) into `windows.csv`, sorted by
    window then antenna, and returns its rows (a restarted scheduler's rows follow its predecessor's)."""
    rows: list[dict] = []
    columns: list[str] = []
    for path in sorted((out / "windows").glob("*.csv")):
        with contextlib.suppress(OSError), path.open(newline="") as f:
            reader = csv.DictReader(f)
            columns = list(reader.fieldnames or columns)
            rows += list(reader)
    rows.sort(key=lambda r: (int(r["window"]), r["antenna"], float(r["t_start_ms"])))
    if columns:
        with (out / "windows.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns)
            w.writeheader()
            w.writerows(rows)
    return rows


def window_policies(rows: list[dict]) -> dict:
    """Returns the policy counts of the windows log: overall, per antenna, and the decision time."""
    per_antenna: dict[str, dict[str, int]] = {}
    overall: dict[str, int] = {}
    for r in rows:
        ant = per_antenna.setdefault(r["antenna"], {})
        ant[r["policy"]] = ant.get(r["policy"], 0) + 1
        overall[r["policy"]] = overall.get(r["policy"], 0) + 1

    def pct(key: str) -> dict:
        x = np.array([float(r[key]) for r in rows if r.get(key)], dtype=np.float64)
        return {"n": int(x.size), **({"p50": round(float(np.percentile(x, 50)), 1),
                                      "p99": round(float(np.percentile(x, 99)), 1),
                                      "max": round(float(x.max()), 1)} if x.size else {})}

    return {
        "windows": len(rows),
        "policies": dict(sorted(overall.items())),
        "per_antenna": {a: dict(sorted(c.items())) for a, c in sorted(per_antenna.items())},
        "decide_us": pct("decide_us"),
        "decide_cpu_us": pct("decide_cpu_us"),
    }


def summarise(run: LiveRun, wall_s: float) -> LiveResult:
    """Reads the records back: summary.json, timeseries (overall and per app), success.png."""
    table = read_records(run.out / "records.csv")
    apps = tuple(sorted(set(run.trace.app.tolist())))
    tally = Tally(run.config.window_s, apps)
    t_send = table.column("t_send_ms").to_numpy()
    last_ms = float(t_send.max()) if len(t_send) else 0.0  # a source that fell behind sends past the duration
    app_col = np.array(table.column("app").to_pylist(), dtype=object)
    lookup = {a: i for i, a in enumerate(apps)}
    outcomes = np.array(table.column("outcome").to_pylist(), dtype=object)
    tally.add(t_send, np.array([lookup[a] for a in app_col], dtype=np.int64), outcome_index(outcomes))
    window_ms = run.config.window_s * 1000.0
    n_windows = max(1, math.ceil(run.duration_s * 1000.0 / window_ms), math.floor(last_ms / window_ms) + 1)
    reasons: dict[str, int] = {}
    for o, r in zip(outcomes, table.column("reason").to_pylist(), strict=True):
        key = f"{o}:{r}" if r else o
        reasons[key] = reasons.get(key, 0) + 1
    sched = _scheduler_stats(run.out)
    real = {p.resource for p in run.workers_plan if p.real}
    inferred = np.isfinite(table.column("t_infer_end_ms").to_numpy())
    names = [
        f"{v}@{c}"
        for v, c in zip(table.column("variant").to_pylist(), table.column("cluster").to_pylist(), strict=True)
    ]
    real_inferred = {
        r: int(sum(1 for n, ok in zip(names, inferred, strict=True) if ok and n == r)) for r in real
    }
    sources = _source_stats(run.out)
    if sources:  # the sources have exited by the last CPU snapshot: they report their own CPU time
        run.cpu_groups["sources"] = round(sum(v.get("cpu_s", 0.0) for v in sources.values()), 2)
    expected = run.trace.expected_queries(run.duration_s)
    windows = merge_windows(run.out)
    summary = RunSummary.from_tally(
        tally,
        n_windows,
        environment="testbed",
        topology=run.topo.name,
        policy=run.policy,
        seed=run.config.seed if run.config.trace is None else None,
        lambda_per_min=run.load_label,
        duration_s=run.duration_s,
        extra={
            "streams": len(run.trace),
            "profiles": run.profiles.source,
            "expected_queries": expected,
            "recorded_queries": table.num_rows,
            "real_onnx_inferred": real_inferred,
            "reasons": reasons,
            "real_sites": list(run.real_sites),
            "wall_s": round(wall_s, 1),
            "sources": sources,
            "cpu_s": run.cpu_groups,
            "scheduler_overhead_us": {k: v.get("overhead_us") for k, v in sched.items()},
            "agent": str(run.config.agent) if run.config.agent is not None else None,
            "decision_window_s": run.decision_window_s,
            "policy_windows": window_policies(windows),
        },
    )
    summary.write_json(run.out / "summary.json")
    write_timeseries(summary, run.out / "timeseries.csv")
    _write_per_app(tally, n_windows, run.out / "timeseries_per_app.csv")
    bands = {}
    for r in windows:
        bands.setdefault(r["antenna"], []).append(
            (float(r["t_start_ms"]) / 1000.0, float(r["t_end_ms"]) / 1000.0, r["policy"])
        )
    plot_success_over_time([summary], run.out / "success.png", policy_bands=bands or None)
    from_schedulers = [
        {**e, "source": f"scheduler {k}"} for k, v in sched.items() for e in v.get("events", [])
    ]
    with (run.out / "events.jsonl").open("a") as f:  # one log of every event: the orchestrator's and theirs
        f.writelines(json.dumps(e) + "\n" for e in from_schedulers)
    events = run.events.entries + from_schedulers
    return LiveResult(
        summary=summary,
        out=run.out,
        expected_queries=expected,
        recorded_queries=table.num_rows,
        reasons=reasons,
        scheduler_stats=sched,
        wall_s=wall_s,
        events=events,
    )


def _write_per_app(tally: Tally, n_windows: int, path: Path) -> None:
    counts = tally.trimmed(n_windows)
    with path.open("w") as f:
        f.write("t_s,app," + ",".join(OUTCOMES) + "\n")
        for w in range(n_windows):
            for i, app in enumerate(tally.apps):
                f.write(f"{w * tally.window_s:g},{app}," + ",".join(str(int(x)) for x in counts[w, i]) + "\n")


def format_result(result: LiveResult) -> str:
    """Returns the summary table printed at the end of a run."""
    s = result.summary
    o = s.overall
    lines = [
        f"{s.environment} {s.topology}, policy {s.policy}, load {s.lambda_per_min}, {s.duration_s:g} s "
        f"(wall {result.wall_s:.0f} s)",
        f"queries: {result.recorded_queries} recorded of {result.expected_queries} sent"
        + ("" if result.recorded_queries == result.expected_queries else "  <-- MISMATCH"),
        "",
        f"{'application':24} {'queries':>8} {'success':>8} {'failed':>8} {'rejected':>8}",
        f"{'all':24} {o.queries:8d} {o.success:8.3f} {o.failed:8.3f} {o.rejected:8.3f}",
    ]
    for app, r in sorted(s.per_app.items()):
        lines.append(f"{app:24} {r.queries:8d} {r.success:8.3f} {r.failed:8.3f} {r.rejected:8.3f}")
    lines += ["", "outcomes by reason: " + ", ".join(f"{k} {v}" for k, v in sorted(result.reasons.items()))]
    real = s.extra.get("real_onnx_inferred") or {}
    lines.append(
        f"frames through real ONNX inference: {sum(real.values())}"
        + (f" ({', '.join(f'{k} {v}' for k, v in sorted(real.items()))})" if real else " (no real worker)")
    )
    lag = max((v.get("lag_p99_ms", 0.0) for v in s.extra.get("sources", {}).values()), default=0.0)
    lines.append(
        f"sources' send lag p99 {lag:.1f} ms"
        + ("  <-- the testbed itself fell behind (overloaded)" if lag > 50 else "")
    )
    cpu = s.extra.get("cpu_s") or {}
    if cpu:
        lines.append(
            "CPU seconds during the traffic: "
            + ", ".join(f"{k} {v:.1f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]))
        )
    for ant, st in sorted(result.scheduler_stats.items()):
        ov = st.get("overhead_us", {})
        if ov.get("n"):
            lines.append(
                f"scheduler {ant}: {ov['n']} frames relayed, overhead p50 {ov['p50']:.0f} us, "
                f"p99 {ov['p99']:.0f} us; streams {st['streams']}; workers down {st['workers_down']}"
            )
    pw = s.extra.get("policy_windows") or {}
    if pw.get("windows"):
        cost, cpu = pw.get("decide_us", {}), pw.get("decide_cpu_us", {})
        lines.append(
            f"decision windows ({s.extra.get('decision_window_s', 0):g} s, all antennas): {pw['windows']}; "
            + ", ".join(f"{k} {v}" for k, v in pw["policies"].items())
            + (f"; decision time p50 {cost['p50']:.0f} us, p99 {cost['p99']:.0f} us wall" if cost.get("n") else "")
            + (f", p50 {cpu['p50']:.0f} us, p99 {cpu['p99']:.0f} us CPU" if cpu.get("n") else "")
        )
    lines.append(f"run dir: {result.out}")
    return "\n".join(lines)


__all__ = [
    "LiveConfig",
    "LiveInterrupted",
    "LiveResult",
    "WorkerPlan",
    "format_result",
    "plan_workers",
    "run_live",
]
