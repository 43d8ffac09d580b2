"""The live run's orchestration: `LiveRun` resolves a spec into a run (system, trace, real sites, worker plan,
the run's own profile) and brings it up in order (network, captures, link check, workers, schedulers,
sources), fixes t0, waits for the trace to end while merging records and injecting faults, then stops it all
in reverse order; `run_live` drives it and returns the report (live/report.py). A process of a site placed on
another server starts there (live/placed.py), everything else here.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from live.autotdf import run_auto
from live.clock import DilatedClock, time_dilation_record
from live.cores import RunCores, live_command
from live.faults import KILL_WORKER, LINK_EVENT, Fault, check_faults, fault_schedule
from live.merge import Events, RecordMerger
from live.monitor import Monitor
from live.placed import PlacedRun, placement_of, reserve_on_servers
from live.plan import (
    WorkerPlan,
    busiest_cpu_cluster,
    format_worker_table,
    plan_workers,
    smallest_cluster,
    worker_argv,
)
from live.procs import Proc, run_cpu, run_groups, run_processes, stop_groups, wait_ready, write_cpu
from live.realprofile import (
    REAL_INFERENCE_CORES,
    REAL_THREADS_PER_REPLICA,
    MeasuredModel,
    real_model_batches,
    real_worker_cpu,
    time_real_workers,
)
from live.report import LiveInterrupted, LiveResult, RunFacts, summarise
from live.rundir import RunDir, default_run_dir, record_t0, write_t0
from live.runinfo import network_summary, package_versions
from live.spec import RunSpec, write_spec
from scheduler.core import POLICY_NAMES
from scheduler.profiles import load_profiles
from scheduler.system import build_system
from testbed.capture import choose_hosts, start_captures, stop_captures
from testbed.interrupts import sigint_default_in_children
from testbed.network import EmulatedNetwork, check_mtu
from testbed.ovssock import widen_ovs_buffers
from testbed.plan import build_plan
from testbed.portcounters import SWITCH_DROPS_EVENT, RunDrops, counters_line, run_ports
from testbed.switches import ensure_ovs, ovs_datapath
from topologies import load_topology, wallclock
from topologies.events import load_events
from workload.trace import write_trace

SCHEDULER_RESTART_READY_S = 30.0


class LiveRun:
    """One run in progress: its processes, files and events (`run_live` drives it)."""

    def __init__(self, spec: RunSpec, log: Callable[[str], None]) -> None:
        wallclock.export_base()  # every process of the run here reads one wall clock, deaf to its steps
        self.spec = spec = replace(spec, tdf_anchor_s=round(wallclock.time_s(), 6))  # the time scale's anchor: now
        self.clock = DilatedClock(spec.time_scale)
        self.log = log
        self.topo = load_topology(spec.topo)
        self.profiles = load_profiles(spec.profiles)
        self.system = build_system(self.topo, self.profiles)
        self.network_events = load_events(spec.events, self.topo) if spec.events else None  # refused before anything
        # refuses an unknown policy, aset without an agent or an agent with a static policy, before anything
        self.policy = spec.effective_policy
        dry_policy = self.policy
        self.decision_window_s = spec.window_s
        if spec.agent is not None:  # refuses an agent file trained for another system, before anything starts
            from scheduler.aset.policy import AsetController

            controller = AsetController.for_system(spec.agent, self.system)
            self.decision_window_s = controller.decision_window_s
            dry_policy = POLICY_NAMES[controller.policy.meta.fallback_policy]  # the agent's usual choice
        workload = spec.workload()
        self.trace, self.duration_s = workload.build(self.system.antennas)
        self.load_label = workload.label
        self.dry_note = self.real_note = ""
        self.dry_queries: dict[str, int] = {}
        if spec.real_sites is not None:
            self.real_sites = tuple(spec.real_sites)
        else:
            busiest, self.dry_queries = busiest_cpu_cluster(
                self.system, self.trace, dry_policy, self.duration_s, spec.seed, spec.capacity_headroom,
                events=self.network_events,
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
        self.placement = placement_of(spec, [s.name for s in self.topo.sites])  # refused before anything
        choose_hosts(build_plan(self.topo, "x").hosts, spec.pcap)  # refuses an unknown host before anything
        check_mtu(spec.mtu)  # and an MTU the network would refuse
        self.out = Path(spec.out) if spec.out else default_run_dir(self.topo.name)
        if self.out.exists() and any(self.out.iterdir()):
            raise ValueError(f"--out {self.out}: the folder exists and is not empty")
        self.out.mkdir(parents=True, exist_ok=True)
        self.dir = RunDir(self.out)
        self.events = Events(self.dir.events, log, self.clock.now_s)
        self.workers: list[Proc] = []
        self.schedulers: dict[str, Proc] = {}
        self.sources: list[Proc] = []
        self.restarts: dict[str, int] = {}
        self.t0_s = 0.0
        self.cpu_groups: dict[str, float] = {}
        self.profiled: list[MeasuredModel] = []
        self.cores: RunCores | None = None
        self.monitor: Monitor | None = None
        self.placed: PlacedRun | None = None
        """The remote servers' shares of the run while its network is up (None: every site on this machine)."""
        self.network: dict = {}
        """What the run's link check found (summary.json's `network`): links out of tolerance, switch hops."""

    def plan(self) -> list[WorkerPlan]:
        """Returns the worker plan of the system; refuses faults naming no resource or antenna."""
        plans = plan_workers(self.system, self.real_sites, self.spec, self.dry_queries)
        check_faults(self.spec, [p.resource for p in plans], self.system)
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
        figures (see RunSpec.profile_real_workers), its system and its worker plan."""
        batches = real_model_batches(self.system, {p.resource for p in self.workers_plan if p.real})
        if not batches or not self.spec.profile_real_workers:
            return
        if self.spec.agent is not None:
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

        path, self.profiled = time_real_workers(Path(self.profiles.source), self.dir.profiles,
                                                real_models_of, self.log)
        real_models_of(path)
        after = {r.name for r in self.system.resources}
        if after != before:
            self.log(f"with this host's figures the placement changed: added {sorted(after - before)}, "
                     f"removed {sorted(before - after)}")

    # -- files before the run ------------------------------------------------------------------------

    def resolved_spec(self) -> RunSpec:
        """Returns the spec with every choice this run made filled in and every path absolute: what its
        schedulers and sources read (spec.json)."""
        s = self.spec

        def absolute(p: Path | None) -> Path | None:
            return None if p is None else Path(p).resolve()

        return replace(s, topo=self.topo.source, policy=self.policy, agent=absolute(s.agent), trace=absolute(s.trace),
                       duration_s=self.duration_s, profiles=absolute(Path(self.profiles.source)), out=self.dir.root,
                       real_sites=self.real_sites, events=absolute(s.events))

    def write_inputs(self) -> None:
        """Writes the trace, spec.json (the resolved spec) and config.json (the spec as given, what the run
        chose, the worker plan and the versions of everything)."""
        write_trace(self.trace, self.dir.trace)
        write_spec(self.resolved_spec(), self.dir.spec)
        cfg = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self.spec).items()}
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
            time_dilation=time_dilation_record(self.clock.scale),
            argv=sys.argv,
            versions=package_versions(),
        )
        self.dir.config.write_text(json.dumps(cfg, indent=1) + "\n")

    # -- processes -----------------------------------------------------------------------------------

    def start_workers(self, net: EmulatedNetwork) -> None:
        profiles_path = str(Path(self.profiles.source).resolve())
        for plan in self.workers_plan:
            host = net.host_for("worker", plan.site)
            group = self.cores.inference_group() if self.cores and plan.real else None  # only inference there
            argv = worker_argv(plan, host.ip, profiles_path, self.spec, inference_cgroup=group,
                               real_batch_log=self.dir.real_batch_log(plan.resource) if plan.real else None)
            self.workers.append(Proc(f"worker {plan.resource}", host, argv, self.dir.log("worker", plan.resource),
                                     real_inference=plan.real))
        for w in self.workers:
            self.start(w)
        wait_ready(self.workers)
        table = {
            p.resource: {"url": w.url, "model": p.model, "real": p.real,
                         "clock_offset_ms": self.placed.clock_ms(w.host) if self.placed is not None else 0.0}
            for p, w in zip(self.workers_plan, self.workers, strict=True)
        }
        self.dir.workers.write_text(json.dumps(table, indent=1) + "\n")

    def start(self, proc: Proc) -> None:
        """Starts a process on its host's server: here, or through that server's agent (live/placed.py)."""
        if self.placed is not None and self.placed.share_of(proc.host) is not None:
            self.placed.start(proc)
        else:
            proc.start()

    def _child(self, module: str, role: str, antenna: str, net: EmulatedNetwork, restart: int = 0) -> Proc:
        """Returns (not started) a scheduler or source of an antenna: it gets the spec and its identity only."""
        argv = [sys.executable, "-m", module, "--spec", str(self.dir.spec), "--antenna", antenna]
        argv += ["--restart", str(restart)] if restart else []
        kind = "source" if role == "sources" else role
        return Proc(f"{kind} {antenna}", net.host_for(role, antenna), argv, self.dir.log(kind, antenna, restart))

    def start_scheduler(self, net: EmulatedNetwork, antenna: str) -> Proc:
        """Starts one antenna's scheduler (its restart number as counted so far) and waits until it is ready."""
        proc = self._child("live.scheduler", "scheduler", antenna, net, self.restarts.get(antenna, 0))
        self.start(proc)
        wait_ready([proc], SCHEDULER_RESTART_READY_S)
        return proc

    def start_schedulers(self, net: EmulatedNetwork) -> None:
        self.dir.make_dirs()
        for ant in self.system.antennas:
            self.schedulers[ant] = self._child("live.scheduler", "scheduler", ant, net)
            self.start(self.schedulers[ant])
        wait_ready(list(self.schedulers.values()))

    def widen_switch_buffer(self, net: EmulatedNetwork, early: bool = False) -> None:
        """ovs-vswitchd's send socket and the run's port sockets widened (testbed/ovssock.py): with the userspace
        datapath it loses the frames it cannot send or read once a buffer is full. `early`: before the links'
        probes, when the daemon may not have opened its send socket yet; the later call says what failed."""
        if self.spec.switch == "ovs" and ovs_datapath() == "netdev":
            problems = widen_ovs_buffers(net.record, run_ports(net.plan))
            for problem in problems if not early else ():
                self.log(f"warning: {problem}")

    def start_sources(self, net: EmulatedNetwork) -> None:
        for ant in self.system.antennas:
            proc = self._child("live.source", "sources", ant, net)
            self.start(proc)
            self.sources.append(proc)
        wait_ready(self.sources)

    def set_t0(self) -> None:
        """Fixes the run's start shortly ahead, once everyone is ready, and tells them (the t0 file, on the run
        clock); config.json and pcap/time.json (beside the captures, whose times are real) record it."""
        self.t0_s = self.clock.now_s() + self.spec.lead_s
        self.events.t0_s = self.t0_s
        write_t0(self.dir.t0, self.t0_s)
        if self.placed is not None:
            self.placed.write_t0(self.t0_s)
        record_t0(self.dir, time_dilation_record(self.clock.scale, self.t0_s))

    def check_links(self, net: EmulatedNetwork) -> None:
        """Measures every link before the traffic; warns (log, events, summary.json) about links out of
        tolerance, and keeps what the switches cost per hop and per antenna-to-cluster path."""
        results = net.measure_links(check=False)
        report = net.last_report
        self.network = network_summary(net, results, report)
        bad = self.network["links_out_of_tolerance"]
        if bad:
            self.log(f"warning: {len(bad)} link direction(s) are not shaped as the topology says; the run carries "
                     f"on, and its figures include this (see {net.run_dir / 'link_measurements.json'}):\n  "
                     + "\n  ".join(f"{b['link']} {b['direction']}: {b['problem']}" for b in bad))
            self.events("links-out-of-tolerance", links=[f"{b['link']} {b['direction']}" for b in bad])
        hop = self.network.get("switch_hop_ms_median")
        if hop:
            self.log(f"the switches add {hop:.3f} ms per hop (one-way, measured apart from the links); a query's "
                     "path crosses several, which the topology's delays do not include (summary.json: network)")

    def open_cli(self, net: EmulatedNetwork) -> None:
        """Opens Mininet's CLI on the network (or runs --cli-script) after the traffic, before teardown."""
        if not (self.spec.cli or self.spec.cli_script):
            return
        self.log("traffic done; Mininet's CLI on the run's network (workers and schedulers still up; exit, end of "
                 "input or SIGTERM tears down)")
        self.events("cli-opened")
        net.cli(script=self.spec.cli_script)
        self.events("cli-closed")

    # -- during the run ------------------------------------------------------------------------------

    def wait_sources(self, net: EmulatedNetwork, merger: RecordMerger) -> None:
        """Runs until every source has exited: merges records, samples every server's switch ports every virtual
        second (port_counters.jsonl), applies faults at their virtual times; gives up 30 real seconds after the
        drain should have ended."""
        faults = fault_schedule(self.spec, self.network_events)
        scale = self.clock.scale
        give_up = scale.real_s(self.t0_s + self.duration_s + self.spec.timeout_s) + 30.0
        ovs = self.spec.switch == "ovs" and ovs_datapath() == "netdev"
        next_sample = 0.0
        drops = RunDrops.of(net.plan, ovs, self.t0_s + self.spec.judged_from_s if self.spec.judged_from_s else None)
        with self.dir.port_counters.open("w") as ports:  # not the controller's port_stats.jsonl
            while any(s.running() for s in self.sources):
                real, now = wallclock.time_s(), self.clock.now_s()
                while faults and now >= self.t0_s + faults[0].at_s:
                    self.apply_fault(net, faults.pop(0))
                drops.at(now)  # a pilot's drops count from the end of its warm-up
                if real >= next_sample:
                    next_sample = real + scale.real_duration(1.0)
                    ports.write(json.dumps(counters_line(now - self.t0_s, net.port_reading())) + "\n")
                    ports.flush()
                if self.placed is not None:
                    self.placed.pull_records(merger.parts)
                merger.poll()  # records.csv trails the sources' own logs by at most ~0.6 s
                lost = self.monitor.run_lost() if self.monitor else None
                if lost:  # send lag far over in consecutive windows: the figures are this host's, not the system's
                    self.events("stopped-early", **lost)
                    stop_groups([self.sources])
                    break
                if real > give_up:
                    self.events("sources-overran", limit_s=round(scale.virtual_s(give_up) - self.t0_s, 1))
                    for s in self.sources:
                        s.stop()
                    break
                # wake at the next fault's time (faults and network events land within a few ms of it)
                due_s = self.clock.real_until_s(self.t0_s + faults[0].at_s) if faults else 0.1
                time.sleep(min(0.1, max(0.0, due_s)))
        if (lost := drops.lost()) is not None:  # the verdict judges it
            self.events(SWITCH_DROPS_EVENT, frames=lost)
        for s in self.sources:
            code = s.stop()
            if code not in (0, None):
                self.events("source-failed", source=s.name, exit=code, log=str(s.log))

    def apply_fault(self, net: EmulatedNetwork, fault: Fault) -> None:
        """Injects the fault now and logs it in the run's events (a network event in summary.json's network too)."""
        if fault.kind == LINK_EVENT:
            from testbed.events import apply_link_event  # the network side: with the network

            assert fault.event is not None
            done = apply_link_event(net, fault.event)
            self.events("network-event", at_s=fault.at_s, **done)
            self.network.setdefault("events", []).append({"at_s": fault.at_s, **done,
                                                          "t_ms": self.events.entries[-1]["t_ms"]})
            return
        if fault.kind == KILL_WORKER:
            proc = self.workers[[p.resource for p in self.workers_plan].index(fault.target)]
            proc.kill()
            self.events("worker-killed", resource=fault.target, pid=proc.popen.pid if proc.popen else None)
            return
        self.schedulers[fault.target].stop()
        self.events("scheduler-stopped", antenna=fault.target)
        self.restarts[fault.target] = self.restarts.get(fault.target, 0) + 1
        new = self.start_scheduler(net, fault.target)
        self.schedulers[fault.target] = new
        self.events("scheduler-restarted", antenna=fault.target, url=new.url)

    def processes(self, net: EmulatedNetwork) -> list[tuple[str, str, int]]:
        """Returns (group, name, pid) of every process that serves the run."""
        return run_processes(run_groups(self), getattr(net, "_helpers", []))  # the network's helpers: wires, controller

    def facts(self) -> RunFacts:
        """Returns what the report needs of this run besides its files."""
        return RunFacts(
            out=self.out, trace=self.trace, duration_s=self.duration_s, window_s=self.spec.window_s,
            topology=self.topo.name, policy=self.policy, seed=self.spec.seed if self.spec.trace is None else None,
            load_label=self.load_label, profiles=self.profiles.source, real_sites=self.real_sites,
            real_resources=frozenset(p.resource for p in self.workers_plan if p.real), cpu_groups=dict(self.cpu_groups),
            mixed_resources=frozenset(p.resource for p in self.workers_plan if 0 < p.real_replicas < p.replicas),
            agent=str(self.spec.agent) if self.spec.agent is not None else None,
            decision_window_s=self.decision_window_s, network=self.network, events=list(self.events.entries),
        )

    def open_servers(self, net: EmulatedNetwork) -> list[str]:
        """On a placed run: measures the servers' clocks, pushes their inputs and starts their captures; returns
        the hosts to capture here."""
        hosts = choose_hosts(net.plan.hosts, self.spec.pcap)
        self.placed = PlacedRun.open(self.dir, net, self.log, self.cores)
        if self.placed is None:
            return hosts
        self.placed.push_inputs(self.resolved_spec())
        return self.placed.start_captures(hosts, self.spec.pcap_snaplen)

    def close_servers(self) -> None:
        """On a placed run: stops its remote captures, brings every output back and records the servers'
        clocks (summary.json's network.servers)."""
        if self.placed is not None:
            self.placed.stop_captures()
            self.placed.gather()
            self.network["servers"] = self.placed.summary()

    def stop_services(self) -> None:
        """Stops the sources (still running only if the run is cut short), the schedulers (they write their
        statistics), then every worker, each group at once."""
        stop_groups((self.sources, list(self.schedulers.values()), self.workers))


@sigint_default_in_children()  # started with SIGINT ignored (`cmd &` from a script), it still ignores it; its processes not
def run_live(spec: RunSpec, log: Callable[[str], None] = print) -> LiveResult:
    """Runs the testbed live once (one at a time: LiveRunBusy) and returns its result; files land in the run dir."""
    if spec.tdf is None:  # --tdf auto: pilot runs choose K first, no other live run between them and the run
        with live_command(Path(spec.out or "runs")):
            return run_auto(spec, log, run_live)
    t_start, run = time.monotonic(), LiveRun(spec, log)
    if spec.switch == "ovs":  # started (if it must be) before the run's cgroups: the daemons never join them
        ensure_ovs()
    with RunCores(run.out, log, real_inference=False) as run.cores:  # a core reserved where the plan puts real workers
        run.placement = reserve_on_servers(run.cores, run.placement, run.workers_plan)  # before their network
        return _run_live(run, t_start)


def _run_live(run: LiveRun, t_start: float) -> LiveResult:
    spec, log = run.spec, run.log
    run.profile_real_workers()
    run.placement = reserve_on_servers(run.cores, run.placement, run.workers_plan)  # the plan profiling settled
    run.write_inputs()
    log(
        f"run dir {run.out}; {len(run.trace)} streams, {run.trace.expected_queries(run.duration_s)} queries "
        f"over {run.duration_s:g} s ({run.load_label}), policy {run.policy}"
        + (f" (agent {spec.agent}, a decision every {run.decision_window_s:g} s)" if spec.agent else "")
    )
    log(
        "workers (real ONNX where the host carries it, profile-driven elsewhere):\n"
        + format_worker_table(run.workers_plan)
    )
    if run.real_note:
        log(run.real_note)
    parts = [run.dir.source_records(a) for a in run.system.antennas]
    merger: RecordMerger | None = None
    run.cores.confine()  # everything forked from here on stays off the core of real inference
    net = EmulatedNetwork(run.topo, shaping=spec.shaping, switch=spec.switch, controller=spec.controller,
                          run_dir=run.out, seed=spec.seed, mtu=spec.mtu, log=log, tdf=spec.tdf, placement=run.placement)
    interrupted = False
    try:
        with net:
            if run.network_events is not None:  # an event its link cannot take: refused before any traffic
                from testbed.events import check_events

                check_events(net, run.network_events)
            caps = start_captures(net, run.open_servers(net), run.dir.pcap, spec.pcap_snaplen)
            try:
                run.widen_switch_buffer(net, early=True)  # the links' probes burst through the switch ports
                if spec.measure_links:
                    run.check_links(net)
                run.start_workers(net)
                if run.placed is not None:
                    run.placed.push_workers()
                run.start_schedulers(net)
                run.widen_switch_buffer(net)  # the schedulers' warm connections have crossed the switches
                merger = RecordMerger(parts, run.dir.records)
                run.start_sources(net)
                run.set_t0()
                run.events("started", t0_epoch_s=round(run.t0_s, 3), sources=len(run.sources),
                           workers=len(run.workers), schedulers=len(run.schedulers))
                cpu_before, t_traffic = run_cpu(run, net), time.monotonic()
                with Monitor.of(run, net) as run.monitor:
                    run.wait_sources(net, merger)
                run.cpu_groups = write_cpu(run.dir.cpu, cpu_before, run_cpu(run, net), time.monotonic() - t_traffic)
                run.events("sources-done", cpu_s=run.cpu_groups)
                run.open_cli(net)
            finally:
                run.stop_services()
                stop_captures(caps)
                try:
                    run.close_servers()
                finally:
                    if merger is not None:
                        merger.close()
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: network torn down; summarising what was recorded")
    if merger is None:
        if interrupted:
            raise KeyboardInterrupt
        raise RuntimeError("the run stopped before any source started")
    result = summarise(run.facts(), time.monotonic() - t_start)
    result.interrupted = interrupted
    if interrupted:
        raise LiveInterrupted(result)
    return result
