"""`run_testbed.py compare`: one trace through the simulator and the testbed, per policy, and the report.

Both sides replay the same trace file with the same seed and the same worker settings; the simulator
uses the nominal topology and profiles, or (`--calibrate RUN_DIR`) lets its links and workers behave as
a testbed run measured them while its schedulers, like the testbed's, decide with the nominal figures.
With `--events FILE` both sides go through the same network events: the testbed applies them to its links,
the simulator to its model, and the schedulers of both decide with the network as it is at each time.
The report (Markdown, JSON, plots) is analysis.fidelity's.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from analysis.fidelity import compare_dirs, other_seeds, write_report
from analysis.pairing import MissedKeys, missed_keys, one_side
from analysis.records import read_records
from analysis.resultspage import add_results_page_argument, write_results_page
from live.autotdf import choose_tdf, record_auto
from live.calibration import calibrate_from_run
from live.spec import RunSpec
from scheduler.core import ALL, POLICY_NAMES, policy_index
from scheduler.profiles import PROFILES_OPTION_HELP, load_profiles, write_scaled_profile
from scheduler.system import build_system
from simulator.run import simulate_policy
from testbed.errors import NetworkError, PreflightError
from testbed.switches import controller_for
from topologies import Topology, load_topology
from topologies.events import NetworkEvents, load_events
from topologies.timescale import parse_tdf_or_auto
from workload.args import Workload, add_workload_arguments, workload_from_args
from workload.trace import write_trace

DURATION_S = 60.0
"""Seconds of queries compared, with a generated or a replayed trace, unless --duration."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="run one trace through the simulator and the testbed and compare them",
                       description="Run the same trace with the same seed through the simulator and the "
                                   "testbed for each policy; write report.md, report.json and plots.")
    p.add_argument("--topo", default="tiny", help="topology name or YAML file (default tiny)")
    p.add_argument("--trace", type=Path, default=None, help="trace to replay (default: generate one)")
    # compare's duration applies to a replayed trace too (60 s unless --duration), hence its own --trace
    add_workload_arguments(p, lambda_default="6", duration_default_s=DURATION_S, replay=False)
    p.add_argument("--policies", default="closest,least-impedance,load-balancing",
                   help=f"comma list of policies, or all ({', '.join(POLICY_NAMES)})")
    p.add_argument("--profiles", type=Path, default=None, help=PROFILES_OPTION_HELP)
    p.add_argument("--profile-scale", type=float, default=1.0, metavar="K",
                   help="both sides use the profile with every batch latency x K (written to OUT/profiles-xK.yaml): "
                        "a slower system reaches the loads where policies differ at rates the testbed carries")
    p.add_argument("--calibrate", type=Path, default=None, metavar="RUN_DIR",
                   help="simulate with the link delays, processing times and stack delay this testbed run measured "
                        "(its folder: spec.json, trace.csv, records.csv, link_measurements.json)")
    p.add_argument("--real-workers", default="none", metavar="SITES",
                   help="cluster sites running real ONNX inference in the testbed, as far as the one core of "
                        "real inference carries them (default none: profile-driven)")
    p.add_argument("--no-profile-real-workers", action="store_true",
                   help="keep --profiles as given; by default the real workers' models are timed on this CPU "
                        "first and both sides use that profile (OUT/profiles-real.yaml)")
    p.add_argument("--events", type=Path, default=None, metavar="FILE",
                   help="network events file: both sides change their links at its times "
                        "(docs/network.md#network-events)")
    p.add_argument("--switch", choices=("ovs", "lxbr"), default="ovs")
    p.add_argument("--controller", choices=("osken", "none"), default=None,
                   help="default: the one that goes with --switch (none for lxbr, osken for ovs)")
    p.add_argument("--pcap", default="none", help="hosts to capture on the testbed side (default none)")
    p.add_argument("--tdf", type=parse_tdf_or_auto, default=1.0, metavar="K|auto",
                   help="time dilation factor of the testbed side: it runs K times slower in real time and is "
                        "compared in virtual time (docs/live-run.md#time-dilation; default 1); auto: pilots of the "
                        "trace's busiest second choose one K for every policy: the smallest that passed for each, "
                        "three Ks at most (docs/live-run.md#time-dilation)")
    p.add_argument("--mtu", type=int, default=RunSpec.mtu, metavar="BYTES",
                   help=f"MTU of the testbed side's interfaces (default {RunSpec.mtu}; across servers at most the "
                        "underlay's less 50)")
    p.add_argument("--servers", default=None, metavar="NAME=USER@HOST[:PORT],...",
                   help="the testbed side across servers, `local` being this machine (docs/multihost.md)")
    p.add_argument("--place", default=None, metavar="SITE=SERVER,...",
                   help="which server each site lives on; sites not named: the first server of --servers")
    p.add_argument("--ssh-options", default="", metavar="'ARGS'", help="extra ssh arguments for every server")
    p.add_argument("--out", type=Path, default=Path("runs/compare"), help="output folder (default runs/compare)")
    add_results_page_argument(p, "fidelity")
    p.set_defaults(func=cmd_compare)


@dataclass(frozen=True)
class _Checked:
    """compare's arguments as checked before it takes the machine (a bad one refused even while it is busy)."""

    policies: list[str]
    workload: Workload
    duration_s: float
    topo: Topology
    events: NetworkEvents | None


def cmd_compare(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("error: compare runs the testbed, which builds network namespaces: run it as root", file=sys.stderr)
        return 2
    checked = _check(args)
    if checked is None:
        return 2
    from live.cores import live_command

    with live_command(args.out):  # no other live run between its policies' (LiveRunBusy: exit 2)
        return _compare(args, checked)


def _check(args: argparse.Namespace) -> _Checked | None:
    """Returns the checked arguments, or None having said which one is at fault (ValueError from the loaders and
    parsers: the command line's handler says it, exit 2)."""
    from live.placed import placement_of

    policies = list(POLICY_NAMES) if args.policies == ALL else [p.strip() for p in args.policies.split(",")]
    for p in policies:
        policy_index(p)  # static policies only: compare runs no agent
    workload = workload_from_args(args)  # refuses a bad --lambda or --duration
    duration_s = workload.duration_s if workload.duration_s is not None else workload.default_duration_s
    if args.real_workers != "none" and args.profile_scale != 1.0 and not args.no_profile_real_workers:
        print("error: --profile-scale with --real-workers: timing the real workers would put this CPU's speed "
              "back into the scaled profile; add --no-profile-real-workers", file=sys.stderr)
        return None
    topo = load_topology(args.topo)
    events = load_events(args.events, topo) if args.events else None  # refused before anything runs
    # a bad --servers or --place
    placement_of(RunSpec(servers=args.servers, place=args.place, ssh_options=args.ssh_options),
                 [s.name for s in topo.sites])
    return _Checked(policies, workload, duration_s, topo, events)


def _compare(args: argparse.Namespace, checked: _Checked) -> int:
    from live.orchestrate import run_live  # the testbed side: root, network package
    from live.plan import plan_workers
    from live.realprofile import real_model_batches, time_real_workers

    policies, workload, duration_s, topo, events = (checked.policies, checked.workload, checked.duration_s,
                                                    checked.topo, checked.events)
    antennas = tuple(a.name for a in topo.antennas)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    trace_path = out / "trace.csv"
    trace, _ = replace(workload, duration_s=duration_s).build(antennas)
    write_trace(trace, trace_path)
    if args.profile_scale != 1.0:
        args.profiles = write_scaled_profile(args.profiles, args.profile_scale,
                                             out / f"profiles-x{args.profile_scale:g}.yaml")
    real = () if args.real_workers == "none" else tuple(s for s in args.real_workers.split(",") if s)
    if real and not args.no_profile_real_workers:
        def real_models_of(path: Path) -> dict[str, tuple[int, ...]]:
            system = build_system(topo, load_profiles(path))
            return real_model_batches(system, {p.resource for p in plan_workers(system, real, RunSpec()) if p.real})

        print("timing the real workers' models on the core they get; both sides use the result")
        args.profiles, _ = time_real_workers(Path(load_profiles(args.profiles).source), out / "profiles-real.yaml",
                                             real_models_of)
    profiles = load_profiles(args.profiles)
    # The simulated schedulers decide with the nominal figures, as the testbed's do; calibration changes
    # only how the simulated links and workers behave.
    system = build_system(topo, profiles)
    physics, label = None, f"nominal topology and profiles ({Path(profiles.source).name})"
    overhead, scale = (0.0, 0.0), {}
    if args.calibrate:
        cal = calibrate_from_run(args.calibrate, topo, profiles, out / "calibration")
        if cal.overhead.queries == 0:
            print(f"warning: --calibrate {args.calibrate}: no query served by the same worker in that run and in "
                  "the simulator's run of it; the stack overhead is taken as 0", file=sys.stderr)
        physics, scale, label = cal.physics, cal.processing_scale, cal.label
        overhead = (cal.overhead.up_ms, cal.overhead.down_ms)
    base = RunSpec(topo=args.topo, trace=trace_path, duration_s=duration_s, seed=workload.seed,
                      profiles=args.profiles, real_sites=real, pcap=args.pcap, switch=args.switch,
                      controller=controller_for(args.switch, args.controller),
                      profile_real_workers=False,  # both sides: one profile file
                      events=args.events, tdf=args.tdf, mtu=args.mtu, servers=args.servers, place=args.place,
                      ssh_options=args.ssh_options)
    if events is not None:
        label += f"; network events {args.events} ({len(events.events)})"
    auto = None
    if base.tdf is None:  # --tdf auto: one K for every policy, the smallest at which each one's pilot is faithful
        try:
            auto = choose_tdf(base, print, run_live, out / "pilots", tuple(policies))
        except (PreflightError, NetworkError, RuntimeError) as exc:  # as a run's (live/cli.py): 2, else 3
            print(f"error: {exc}", file=sys.stderr)
            return 2 if isinstance(exc, PreflightError) else 3
        base = replace(base, tdf=auto[0].tdf)
    sim_config = base.sim_config(duration_s, overhead_up_ms=overhead[0], overhead_down_ms=overhead[1],
                                 processing_scale=tuple(scale.items()))
    pairs, again, one_side_again, full_links, verdicts = {}, {}, {}, {}, {}
    for p in policies:
        print(f"== {p}: testbed")
        try:
            live = run_live(replace(base, policy=p, out=out / "testbed" / p))
        except PreflightError as exc:  # refused before any traffic (a bad events file for a split network, ...)
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except (NetworkError, RuntimeError) as exc:  # a service not ready, ...: as a run's (live/cli.py)
            print(f"error: {exc}", file=sys.stderr)
            return 3
        if auto is not None:
            record_auto(live.out, *auto, out / "pilots")
        print(f"== {p}: simulator")
        simulate_policy(system, trace, p, sim_config, workload.seed, f"trace:{trace_path.name}", out / "simulator" / p,
                        physics=physics, events=events)
        # the simulator against itself: how closely a testbed can follow it, window by window and query by query
        own = missed_keys(read_records(out / "simulator" / p / "records.csv"))
        again[p], one_side_again[p] = [], []
        for seed in other_seeds(workload.seed):
            missed = MissedKeys()
            run = simulate_policy(system, trace, p, sim_config, seed, "", None, write_records=False, physics=physics,
                                  events=events, record_sink=missed)
            again[p].append(np.array(run.summary.series_success))
            one_side_again[p].append(one_side(own, missed.keys()))
        pairs[p] = (out / "simulator" / p / "records.csv", live.out / "records.csv")
        full_links[p] = live.summary.extra.get("links_full") or []
        verdicts[p] = live.summary.extra.get("fidelity") or {}
    report = replace(compare_dirs(pairs, topo.name, label, base.window_s, again, one_side_again),
                     full_links=full_links, testbed_fidelity=verdicts)
    write_report(report, out)
    print()
    print(report.to_markdown())
    print(f"wrote {out}/report.md, report.json, series.png")
    if args.results_page:
        page = write_results_page(args.results_page, f"Fidelity: {topo.name}, simulator against testbed",
                                  report.to_markdown())
        print(f"wrote {page}")
    return 0
