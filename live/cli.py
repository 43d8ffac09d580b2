"""Command line of the live testbed run: `add_run_arguments(parser)` and `run_live(args) -> exit status`.

run_testbed.py calls these with no subcommand (and for `run`); `python -m live.cli` runs it alone.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from live.run import LiveConfig, LiveInterrupted, format_result
from live.run import run_live as _run
from scheduler.core import ASET, POLICY_NAMES, check_policy
from testbed.capture import DEFAULT_SNAPLEN
from testbed.errors import NetworkError, PreflightError
from topologies import TopologyError
from workload.trace import TraceError

EXIT_OK, EXIT_RUN, EXIT_INPUT, EXIT_NETWORK = 0, 1, 2, 3


def _at(text: str, what: str) -> tuple[str, float]:
    name, sep, t = text.rpartition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name, float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} {text!r}: expected NAME=SECONDS") from None


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the live run's options to a parser."""
    d = LiveConfig()
    parser.add_argument("--topo", default=d.topo, help=f"topology name or YAML path (default {d.topo})")
    parser.add_argument(
        "--policy",
        default=d.policy,
        choices=(*POLICY_NAMES, ASET),
        help="a static policy, or aset (needs --agent): the agent picks every window's policy "
        "(default closest; with --agent, aset)",
    )
    parser.add_argument(
        "--agent",
        type=Path,
        default=None,
        help="an exported ASET agent (ONNX, from `train`) that picks each scheduler's policy per decision "
        "window; implies --policy aset",
    )
    parser.add_argument(
        "--trace", type=Path, default=None, help="replay this trace (CSV) instead of generating load"
    )
    parser.add_argument(
        "--lambda",
        dest="lambda_per_min",
        default=d.lambda_per_min,
        help=f"clients per minute per antenna, or START_S:LAMBDA,... (default {d.lambda_per_min})",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help=f"seconds of queries (default {d.duration_s:g}; with --trace: the whole trace)",
    )
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument(
        "--profiles", type=Path, default=None, help="profile file (default: measured, else provisional)"
    )
    parser.add_argument("--out", type=Path, default=None, help="run dir (default runs/<time>-<topo>)")
    parser.add_argument(
        "--real-workers",
        default=None,
        metavar="SITES",
        help="comma list of cluster sites whose CPU variants run real ONNX inference, as far as the one "
        "core real inference gets carries their replicas; 'none' for none (default: the cluster where a "
        "simulated dry run of the trace gives those variants the most queries); every other worker is "
        "profile-driven",
    )
    parser.add_argument(
        "--pcap",
        default=d.pcap,
        metavar="HOSTS",
        help="hosts whose interface is captured: default (antennas' sources and the worker hosts), "
        "all, none, or a comma list of host names",
    )
    parser.add_argument("--pcap-snaplen", type=int, default=DEFAULT_SNAPLEN, help="bytes kept per packet")
    parser.add_argument("--shaping", choices=("auto", "netem", "wire"), default=d.shaping)
    parser.add_argument("--switch", choices=("ovs", "lxbr"), default=d.switch)
    parser.add_argument("--controller", choices=("osken", "none"), default=d.controller)
    parser.add_argument(
        "--timeout",
        type=float,
        default=d.timeout_s,
        dest="timeout_s",
        help="seconds after which an unanswered query has failed (and the drain at the end)",
    )
    parser.add_argument(
        "--window", type=float, default=d.window_s, help="seconds per decision window and series point"
    )
    parser.add_argument("--eta", type=float, default=d.eta, help="capacity headroom factor")
    parser.add_argument(
        "--mtu",
        type=int,
        default=d.mtu,
        help="MTU of the emulated interfaces (9000: jumbo frames, much less forwarding CPU)",
    )
    parser.add_argument(
        "--load-poll",
        type=float,
        default=d.load_poll_s,
        dest="load_poll_s",
        help="seconds between each scheduler's polls of every worker's load report",
    )
    parser.add_argument("--no-measure", action="store_true", help="skip measuring the links before the run")
    parser.add_argument(
        "--no-profile-real-workers",
        action="store_true",
        help="decide with --profiles as given instead of timing the real workers' models on this CPU first",
    )
    parser.add_argument(
        "--corrupt-every",
        type=int,
        default=0,
        metavar="N",
        help="sources send every Nth frame corrupt (robustness check; 0: never)",
    )
    parser.add_argument(
        "--kill-worker",
        action="append",
        default=[],
        metavar="RESOURCE=SECONDS",
        type=lambda t: _at(t, "--kill-worker"),
        help="SIGKILL a resource's worker at that time, e.g. tiny-yolov2-cpu-b4@dc1=20",
    )
    parser.add_argument(
        "--restart-scheduler",
        action="append",
        default=[],
        metavar="ANTENNA=SECONDS",
        type=lambda t: _at(t, "--restart-scheduler"),
        help="stop an antenna's scheduler and start a fresh one at that time",
    )


def config_from_args(args: argparse.Namespace) -> LiveConfig:
    real = None
    if args.real_workers is not None:
        real = (
            ()
            if args.real_workers.strip() == "none"
            else tuple(s.strip() for s in args.real_workers.split(",") if s.strip())
        )
    duration = args.duration if args.duration is not None else (None if args.trace else LiveConfig.duration_s)
    return LiveConfig(
        topo=args.topo,
        policy=args.policy,
        agent=args.agent,
        trace=args.trace,
        lambda_per_min=args.lambda_per_min,
        duration_s=duration,
        seed=args.seed,
        profiles=args.profiles,
        out=args.out,
        real_sites=real,
        pcap=args.pcap,
        pcap_snaplen=args.pcap_snaplen,
        shaping=args.shaping,
        switch=args.switch,
        controller=args.controller,
        timeout_s=args.timeout_s,
        window_s=args.window,
        eta=args.eta,
        measure_links=not args.no_measure,
        profile_real_workers=not args.no_profile_real_workers,
        corrupt_every=args.corrupt_every,
        kill_worker=tuple(args.kill_worker),
        restart_scheduler=tuple(args.restart_scheduler),
        mtu=args.mtu,
        load_poll_s=args.load_poll_s,
    )


def run_live(args: argparse.Namespace) -> int:
    """Runs the live testbed as the parsed options say; prints the summary table; returns the exit status."""
    try:
        check_policy(args.policy, args.agent, default="closest")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    if args.agent is not None and not args.agent.is_file():
        print(f"error: --agent {args.agent}: no such file", file=sys.stderr)
        return EXIT_INPUT
    if os.geteuid() != 0:
        print("error: the live run builds network namespaces and switches: run it as root", file=sys.stderr)
        return EXIT_INPUT
    try:
        result = _run(config_from_args(args))
    except LiveInterrupted as stop:
        print("\ninterrupted; the network is torn down. What was recorded:", file=sys.stderr)
        print(format_result(stop.result))
        return 130
    except (TopologyError, TraceError, ValueError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_INPUT
    except PreflightError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except (NetworkError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NETWORK
    print()
    print(format_result(result))
    return EXIT_OK if result.recorded_queries == result.expected_queries else EXIT_RUN


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m live.cli", description=__doc__)
    add_run_arguments(parser)
    return run_live(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
