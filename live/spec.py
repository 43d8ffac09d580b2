"""The run spec: everything a live run depends on besides the topology, profile and trace files, in one
dataclass whose fields are the live run's command-line options (live/options.py) and which travels, resolved,
as `<run dir>/spec.json` to every scheduler and source (`write_spec`, `read_spec`).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config

from live.options import add_options, opt, option_values
from testbed.capture import DEFAULT_SNAPLEN
from testbed.switches import controller_for
from topologies.strict import one_line
from topologies.timescale import TimeScale, parse_tdf_or_auto
from workload.args import Workload, add_workload_arguments, workload_from_args

if TYPE_CHECKING:
    from simulator.engine import SimConfig

DEFAULT_POLICY = "closest"
"""The live run's policy without --policy and --agent (see RunSpec.policy)."""
DEFAULT_DURATION_S = 45.0
"""Seconds of queries of a generated workload without --duration."""
DEMO_TOPOLOGY = "full-edge"
"""The topology of the main job's demonstration (docs/live-run.md#the-demonstration): on it, --events, --tdf,
--switch and --controller default to DEMO_EVENTS, DEMO_TDF, DEMO_SWITCH and DEMO_CONTROLLER (the switches
not across servers, which need Open vSwitch)."""
DEMO_EVENTS = Path(__file__).resolve().parent.parent / "examples" / "demo-full-edge.yaml"
"""The demonstration's network events: metro links narrow, two radios slow down, the cloud is cut off."""
DEMO_TDF = 4.0
"""The demonstration's time dilation: its busiest second offers about 315 queries/s (seed 1; 190-340 over seeds
1-10), about 80 a real second at K 4, on the one core the emulation gets besides real inference's; 45 s x 4 keeps
the run within about 5 minutes."""
DEMO_SWITCH, DEMO_CONTROLLER = "lxbr", "none"
"""The demonstration's switches: Linux bridges, standalone. Open vSwitch's userspace datapath (no kernel module
here) costs the emulation's one core 38-58 CPU s over the demonstration at K 4, and the run's own software then
waits for that core past the monitor's thresholds (docs/live-run.md#the-demonstration)."""
_DEMO = object()
"""The command line's default of --events, --tdf, --switch and --controller: the demonstration's on DEMO_TOPOLOGY,
none, 1, ovs and osken elsewhere."""


def _at(text: str, what: str) -> tuple[str, float]:
    name, sep, t = text.rpartition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name, float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} {text!r}: expected NAME=SECONDS") from None


def _events_file(text: str) -> Path | None:
    return None if text.strip() == "none" else Path(text)


def _sites(text: str) -> tuple[str, ...]:
    return () if text.strip() == "none" else tuple(s.strip() for s in text.split(",") if s.strip())


@with_config(ConfigDict(extra="forbid", strict=True, use_attribute_docstrings=True))
@dataclass(frozen=True)
class RunSpec:
    """What one live run does. A field's docstring, up to its first blank line, is its option's --help."""

    topo: str = opt("full-edge")
    """topology name or YAML path"""
    policy: str | None = opt(None, metavar="POLICY", default_text=f"{DEFAULT_POLICY}; with --agent, aset")
    """a static policy, or aset (needs --agent): the agent picks every window's policy

    None: aset with an agent, else closest. Closest by default: it binds the tight streams to the antennas' own
    clusters, whose CPU variants run real ONNX inference (least-impedance prefers the GPU variants further
    up, which are profile-driven here)."""
    agent: Path | None = opt(None)
    """an exported ASET agent (ONNX, from `train`; or the folder `train --out` wrote, as `evaluate --agent`
    takes it) that picks each scheduler's policy per decision window; implies --policy aset"""
    trace: Path | None = opt(None, external=True)
    """Replay this trace; None: generate Poisson arrivals (lambda_per_min, duration_s, seed)."""
    lambda_per_min: str = opt("6", external=True)
    duration_s: float | None = opt(DEFAULT_DURATION_S, external=True)
    """Queries are sent until this time (None with a trace: until its last stream ends)."""
    seed: int = opt(1, external=True)
    profiles: Path | None = opt(None)
    """profile file, or the name of one in scheduler/profiles/: provisional (literature estimates),
    measured-local (what `run_testbed.py profile` wrote); default: the committed measured
    scheduler/profiles/default.yaml"""
    out: Path | None = opt(None)
    """run dir (default runs/<time>-<topo>)"""
    real_sites: tuple[str, ...] | None = opt(None, "--real-workers", metavar="SITES", parse=_sites)
    """comma list of cluster sites whose CPU variants run real ONNX inference, as far as the one core real
    inference gets carries their replicas; 'none' for none (default: the cluster where a simulated dry run of
    the trace gives those variants the most queries); every other worker is profile-driven

    None: `choose_real_site` on a simulated dry run of the trace (the smallest cluster when no stream goes to
    a CPU variant)."""
    pcap: str = opt("default", metavar="HOSTS", default_text="")
    """hosts whose interface is captured: default (antennas' sources and the worker hosts), all, none, or a
    comma list of host names"""
    pcap_snaplen: int = opt(DEFAULT_SNAPLEN, metavar="BYTES")
    """bytes kept per packet"""
    shaping: str = opt("auto", choices=("auto", "netem", "wire"))
    """how links get their delay: netem, the userspace wire, or auto: netem where the kernel has it"""
    switch: str = opt("ovs", choices=("ovs", "lxbr"),
                      default_text=f"{DEMO_SWITCH} on {DEMO_TOPOLOGY} (the demonstration's) unless --controller osken "
                                   "or --servers, ovs elsewhere")
    """the switches: Open vSwitch or Linux bridges"""
    controller: str = opt("osken", choices=("osken", "none"),
                          default_text="the one that goes with the switches: none with Linux bridges (the "
                                       "demonstration's), osken with Open vSwitch")
    """the OpenFlow controller: os-ken's shortest-path app, or none: standalone switches"""
    timeout_s: float = opt(5.0, "--timeout", metavar="SECONDS")
    """seconds after which an unanswered query has failed, and the drain at the end lasts"""
    window_s: float = opt(1.0, "--window", metavar="SECONDS")
    """seconds per decision window and series point"""
    capacity_headroom: float = opt(1.0, metavar="X")
    """factor on a stream's load in the capacity constraint: 1.2 over-reserves by 20 %

    Not the paper's eta, the per-variant load weight of a stream, which the profile's `load_accounting` defines."""
    max_batch_delay_ms: float = 2.0
    queue_limit_per_replica: int = 16
    """As the simulator's defaults, so that both environments run the same system."""
    load_poll_s: float = opt(2.0, "--load-poll", metavar="SECONDS")
    """seconds between each scheduler's polls of every worker's load report

    At 1 s, the polls of full-edge's 4 schedulers x 32 workers cost about 0.28 of a core on this machine; at
    2 s half that."""
    watch_ledgers: bool = opt(True, "--no-ledger-watch",
                              help_flag="schedulers learn other antennas' reservations only from polls and answers")
    """each scheduler holds a request at every worker that the worker answers when its ledger changes

    So a scheduler learns that another antenna reserved a stream at a worker, or that a stream left it, a one-way
    delay later, as the simulator knows every antenna's bindings at once. Without it, only from the load reports
    (`--load-poll`) and the answers of the workers it relays frames to."""
    warm_connections: int = opt(16, metavar="N")
    """connections each scheduler keeps open to each worker, and each antenna's source to its scheduler, ahead of
    their frames in flight, so that no frame waits for a TCP handshake the simulator does not model; 0 opens them
    only as frames need them"""
    measure_links: bool = opt(True, "--no-measure", help_flag="skip measuring the links before the run")
    """measure the links before the run"""
    cli: bool = opt(False)
    """open Mininet's CLI on the network after the traffic, before teardown (pingall, HOST ping HOST, links,
    ...; exit, end of input or SIGTERM tears down)"""
    cli_script: Path | None = opt(None, metavar="FILE")
    """run the Mininet CLI commands in FILE after the traffic, before teardown"""
    corrupt_every: int = opt(0, metavar="N", default_text="")
    """sources send every Nth frame corrupt (robustness check; 0: never)"""
    kill_worker: tuple[tuple[str, float], ...] = opt(
        (), metavar="RESOURCE=SECONDS", repeat=True, parse=lambda t: _at(t, "--kill-worker"))
    """SIGKILL a resource's worker at that time (seconds after t0), e.g. tiny-yolov2-cpu-b4@dc1=20"""
    events: Path | None = opt(None, metavar="FILE|none", parse=_events_file,
                              default_text=f"on {DEMO_TOPOLOGY} without --agent the demonstration's, "
                                           f"examples/{DEMO_EVENTS.name}; none elsewhere")
    """network events file: link changes (delay, jitter, rate, loss, down, up) at given times after t0, applied
    to the network and known to the schedulers (docs/network.md#network-events); none: no events"""
    restart_scheduler: tuple[tuple[str, float], ...] = opt(
        (), metavar="ANTENNA=SECONDS", repeat=True, parse=lambda t: _at(t, "--restart-scheduler"))
    """stop an antenna's scheduler and start a fresh one at that time (seconds after t0)"""
    lead_s: float = 0.5
    """Seconds between every process being ready and t0."""
    profile_real_workers: bool = opt(
        True, "--no-profile-real-workers",
        help_flag="decide with --profiles as given (by default the real workers' models are timed on this CPU first "
                  "and the schedulers decide with those figures)")
    """time the real workers' models on this CPU first and decide with those figures

    The run's `profiles.yaml` is the given profile with those models' CPU latencies replaced
    (live/realprofile.py). Skipped with an agent, whose state is defined by the profile it was trained with."""
    mtu: int = opt(9000, metavar="BYTES")
    """MTU of the emulated interfaces; 9000, jumbo frames, costs much less forwarding CPU

    Jumbo frames by default: a 50 kB frame is ~6 packets instead of ~35, which the userspace wires and
    switches of a 2-core machine can forward (1500: standard)."""
    tdf: float | None = opt(1.0, metavar="K|auto", parse=parse_tdf_or_auto,
                            default_text=f"{DEMO_TDF:g} on {DEMO_TOPOLOGY} (the demonstration's), 1 elsewhere")
    """time dilation factor: the run lasts K times longer in real time (delays, frame intervals, inference,
    timeouts and windows x K) and every figure is in virtual time; see docs/live-run.md#time-dilation; auto:
    the smallest K at which 10 s pilots of the trace's busiest second are judged faithful

    Every time in the spec (durations, timeouts, windows, delays) is virtual. 1: no dilation. None (auto): chosen
    by pilot runs before the run (live/autotdf.py); spec.json always holds the K chosen."""
    servers: str | None = opt(None, metavar="NAME=USER@HOST[:PORT],...")
    """the servers of a multi-host run, `local` being this machine (default: local only; docs/multihost.md)"""
    place: str | None = opt(None, metavar="SITE=SERVER,...")
    """which server each site (its switch, hosts and processes) lives on; sites not named: the first server"""
    ssh_options: str = opt("", metavar="'ARGS'")
    """extra ssh arguments for every server, e.g. '-i KEY -o UserKnownHostsFile=F'"""
    tdf_anchor_s: float = 0.0
    """Epoch seconds at which the run's virtual and real time coincide (topologies.timescale.TimeScale), fixed
    when spec.json is written, so that every process maps its clock the same way."""
    judged_from_s: float = 0.0
    """Virtual seconds after t0 from which the fidelity verdict judges the run (live/verdict.py): a `--tdf auto`
    pilot's warm-up, its streams starting one after another (live/autotdf.py); 0 for every other run."""

    def check(self) -> None:
        """Refuses what the spec cannot run before anything starts: an unknown --policy, aset without an agent,
        an agent with a static policy, network events with an agent (ValueError)."""
        _ = self.effective_policy
        if self.tdf is not None and not 1.0 <= self.tdf < float("inf"):
            raise ValueError(f"--tdf {self.tdf:g}: the time dilation factor must be a number >= 1")
        if self.events is not None and self.agent is not None:
            raise ValueError(f"--events {self.events} with --agent {self.agent}: the agent's environment runs "
                             "without network events")

    @property
    def time_scale(self) -> TimeScale:
        """Returns the run's map between real and virtual time (the identity at --tdf 1)."""
        if self.tdf is None:
            raise ValueError("--tdf auto: the factor is chosen by the pilot runs first (live.autotdf.run_auto)")
        return TimeScale(self.tdf, self.tdf_anchor_s)

    @property
    def effective_policy(self) -> str:
        """Returns the policy the run's schedulers start with (aset with an agent); refuses a bad --policy."""
        from scheduler.core import check_policy  # not at the top: every source reads a spec, none decides

        return check_policy(self.policy, self.agent, default=DEFAULT_POLICY)

    def sim_config(self, duration_s: float, **calibration: object) -> SimConfig:
        """Returns the simulator's settings that match this run's schedulers and workers (decision window, capacity
        headroom, batching, queue) for `duration_s` of queries; `calibration`: further SimConfig fields."""
        from simulator.engine import SimConfig  # not at the top, as above

        return SimConfig(window_s=self.window_s, duration_s=duration_s, capacity_headroom=self.capacity_headroom,
                         max_batch_delay_ms=self.max_batch_delay_ms,
                         queue_limit_per_replica=self.queue_limit_per_replica, **calibration)  # type: ignore[arg-type]

    def workload(self) -> Workload:
        """Returns the workload: the trace to replay, or the arrivals to generate (refuses bad values)."""
        return Workload(lambda_per_min=self.lambda_per_min, duration_s=self.duration_s, seed=self.seed,
                        trace=self.trace, default_duration_s=DEFAULT_DURATION_S)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the live run's options to a parser: one per RunSpec option field, the workload's shared ones."""
    add_options(parser, RunSpec, external=lambda: add_workload_arguments(
        parser, lambda_default=RunSpec.lambda_per_min, duration_default_s=DEFAULT_DURATION_S,
        seed_default=RunSpec.seed))
    parser.set_defaults(events=_DEMO, tdf=_DEMO, switch=_DEMO, controller=_DEMO)  # the demonstration's on its
    # topology (spec_from_args)


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    """Returns the spec the parsed options describe; refuses a bad workload or policy (ValueError)."""
    w = workload_from_args(args)
    duration = w.duration_s if w.duration_s is not None or w.trace is not None else w.default_duration_s
    from scheduler.aset.meta import agent_path  # with the scheduler (numba): not for --help

    options = option_values(args, RunSpec)
    demo = options["topo"] == DEMO_TOPOLOGY
    if options["events"] is _DEMO:
        options["events"] = DEMO_EVENTS if demo and options["agent"] is None else None
    if options["tdf"] is _DEMO:
        options["tdf"] = DEMO_TDF if demo else 1.0
    switch, controller = options["switch"], options["controller"]
    demo_net = demo and options["servers"] is None  # across servers: Open vSwitch only
    if switch is _DEMO and controller is _DEMO:
        switch, controller = (DEMO_SWITCH, DEMO_CONTROLLER) if demo_net else (RunSpec.switch, RunSpec.controller)
    elif switch is _DEMO:  # the switches that go with the controller given
        switch = DEMO_SWITCH if demo_net and controller == DEMO_CONTROLLER else RunSpec.switch
    elif controller is _DEMO:  # the controller that goes with the switches given: none for Linux bridges
        controller = controller_for(switch)
    options["switch"], options["controller"] = switch, controller
    if options.get("agent") is not None:
        try:
            options["agent"] = agent_path(options["agent"])
        except ValueError as exc:
            raise ValueError(f"--agent {exc}") from None
    spec = RunSpec(**options, trace=w.trace, lambda_per_min=w.lambda_per_min, duration_s=duration, seed=w.seed)
    spec.check()
    return spec


class SpecError(ValueError):
    """A spec file that cannot be read or is malformed: the message is one line naming the file and key."""


_ADAPTER: TypeAdapter[RunSpec] | None = None


def _adapter() -> TypeAdapter[RunSpec]:
    global _ADAPTER
    if _ADAPTER is None:
        _ADAPTER = TypeAdapter(RunSpec)
    return _ADAPTER


def write_spec(spec: RunSpec, path: Path) -> None:
    path.write_text(json.dumps(_adapter().dump_python(spec, mode="json"), indent=1) + "\n")


def read_spec(path: Path) -> RunSpec:
    """Returns the spec in a spec.json; raises SpecError with one line naming the file and the key at fault."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return _adapter().validate_json(text)
    except ValidationError as exc:
        raise SpecError(one_line(path, exc)) from None
