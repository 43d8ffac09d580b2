"""`run_testbed.py simulate` and `run_testbed.py trace`: the simulator and trace recording from the command line."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from scheduler.names import ALL, ASET, POLICY_NAMES, PROFILES_OPTION_HELP
from workload.args import add_workload_arguments, workload_from_args

# The simulator, the system model and what they import (numba, pyarrow, matplotlib) are imported when a command
# runs, not to build its parser: `--help` answers at once.

DEFAULT_LAMBDA = "60"
DEFAULT_DURATION_S = 600.0
"""`simulate` and `trace`: the paper's middle load, ten minutes."""


def _add_workload(p: argparse.ArgumentParser, replay: bool) -> None:
    p.add_argument("--topo", default="full-edge", help="topology name (topologies/NAME.yaml) or file")
    add_workload_arguments(p, lambda_default=DEFAULT_LAMBDA, duration_default_s=DEFAULT_DURATION_S, replay=replay)


def cmd_trace(args: argparse.Namespace) -> int:
    from topologies import load_topology
    from workload.trace import write_trace

    topo = load_topology(args.topo)
    workload = workload_from_args(args)
    trace, _ = workload.build(tuple(a.name for a in topo.antennas))
    label = workload.label
    write_trace(trace, args.output)
    print(f"wrote {len(trace)} streams ({trace.expected_queries()} queries, lambda {label}/min per antenna, "
          f"{len(topo.antennas)} antennas) to {args.output}")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from scheduler.core import check_policy
    from scheduler.profiles import load_profiles
    from scheduler.system import build_system
    from simulator.engine import SimConfig
    from simulator.run import format_table, simulate_aset, simulate_policy, write_comparison
    from topologies import load_topology
    from topologies.events import load_events

    topo = load_topology(args.topo)
    system = build_system(topo, load_profiles(args.profiles))
    workload = workload_from_args(args)
    trace, duration = workload.build(system.antennas)
    label = workload.label
    agent = None
    if args.agent:
        from scheduler.aset.meta import agent_path

        try:
            agent = agent_path(args.agent)  # the file, or agent.onnx in the folder `train --out` wrote
        except ValueError as e:
            raise ValueError(f"--agent {e}") from None
    args.policy = check_policy(args.policy, agent, default="least-impedance", allow_all=True)
    policies = list(POLICY_NAMES) if args.policy == ALL else [args.policy]
    policies += [ASET] if agent is not None and args.policy == ALL else []
    events = load_events(args.events, topo) if args.events else None
    config = SimConfig(window_s=args.window, duration_s=duration, capacity_headroom=args.capacity_headroom,
                       wire_ratio=args.wire_ratio)
    out = Path(args.out) if args.out else None
    print(f"simulating {topo.name} ({len(system.resources)} resources on {len(topo.clusters)} clusters, "
          f"{len(system.antennas)} antennas), {len(trace)} streams, lambda {label}, seed {args.seed}, "
          f"profiles {system.profiles.source}")
    runs = []
    for p in policies:
        t = time.perf_counter()
        where = (out / p) if out and len(policies) > 1 else out
        if p == ASET:
            assert agent is not None
            run = simulate_aset(system, trace, agent, config, args.seed, label, where,
                                write_records=not args.no_records, records_format=args.records_format,
                                events=events)
        else:
            run = simulate_policy(system, trace, p, config, args.seed, label, where,
                                  write_records=not args.no_records, records_format=args.records_format,
                                  events=events)
        wall = time.perf_counter() - t
        print(f"  {p:28s} success {run.summary.overall.success:.3f}  failed {run.summary.overall.failed:.3f}  "
              f"rejected {run.summary.overall.rejected:.3f}  ({run.queries} queries, {wall:.1f} s, "
              f"{run.queries / max(wall, 1e-9) / 1e6:.2f} M queries/s)")
        if p == ASET:
            pw = run.summary.extra["policy_windows"]
            print(f"  {'':28s} aset chose, of {pw['windows']} windows: "
                  + ", ".join(f"{k} {v}" for k, v in pw["policies"].items()))
        runs.append(run)
    print()
    print(format_table(runs))
    if out:
        write_comparison(runs, out)
        records = "" if args.no_records else f"records.{args.records_format}, "
        print(f"\nwrote {out}/ ({records}summary.json, timeseries.csv per policy; success.png, table.md)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="run the discrete-event simulator with one or all static policies",
                       description="Run the simulator on a topology with a generated workload or a trace.")
    _add_workload(p, replay=True)
    p.add_argument("--profiles", default=None, help=PROFILES_OPTION_HELP)
    p.add_argument("--policy", default=None,
                   help=f"one of {', '.join(POLICY_NAMES)}, all, or aset (needs --agent) "
                   "(default least-impedance; with --agent: aset)")
    p.add_argument("--agent", default=None,
                   help="an exported ASET agent (agent.onnx, or the folder `train --out` wrote, as agents/full-edge) "
                   "that picks the policy of every decision window; with --policy all it runs after the seven static "
                   "policies")
    p.add_argument("--window", type=float, default=1.0, help="window of the time series in seconds (default 1)")
    p.add_argument("--capacity-headroom", type=float, default=1.0,
                   help="factor on a stream's load in the capacity constraint: 1.2 over-reserves by 20 %% "
                   "(default 1; the paper's eta is the profile's per-variant load weight, not this)")
    p.add_argument("--wire-ratio", type=float, default=1.0, metavar="R",
                   help="bytes every link transmits per byte of a message's payload (TCP/IP and HTTP headers; the "
                   "testbed's wires count about 1.014 at MTU 9000); the workers and schedulers keep the payload "
                   "(default 1: the payload alone; docs/simulator.md)")
    p.add_argument("--events", type=Path, default=None, metavar="FILE",
                   help="network events file: link changes at given times (docs/network.md#network-events)")
    p.add_argument("--out", default=None, help="folder for records, summaries and plots")
    p.add_argument("--no-records", action="store_true", help="do not write per-query records (summaries only)")
    p.add_argument("--records-format", choices=("csv", "parquet"), default="csv",
                   help="per-query log format (the same columns and values; a Parquet file is about a third the size)")
    p.set_defaults(func=cmd_simulate)
    t = sub.add_parser("trace", help="record a workload trace (one stream per row) to CSV")
    _add_workload(t, replay=False)
    t.add_argument("-o", "--output", required=True, help="CSV file to write")
    t.set_defaults(func=cmd_trace)
