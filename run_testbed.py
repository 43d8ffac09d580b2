#!/usr/bin/env python3
"""The one command line of the project: the live testbed run (default), simulate, record traces, workers,
network checks, ASET training and evaluation, and the simulator-vs-testbed comparison."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from live import cli as live_cli  # noqa: E402
from live import compare as compare_cli  # noqa: E402
from scheduler.profiles import ProfileError  # noqa: E402
from simulator import cli as simulator_cli  # noqa: E402
from testbed import cli as testbed_cli  # noqa: E402
from topologies import TopologyError  # noqa: E402
from training import cli as aset_cli  # noqa: E402
from workers import cli as workers_cli  # noqa: E402
from workload.trace import TraceError  # noqa: E402


def register_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="the live testbed run (the default when no command is given)",
                       description="Bring up the emulated network, start workers, schedulers and sources, "
                                   "replay the traffic and write the run dir.")
    live_cli.add_run_arguments(p)
    p.set_defaults(func=live_cli.run_live)


REGISTRARS = [register_run, simulator_cli.register, workers_cli.register, testbed_cli.register,
              aset_cli.register, compare_cli.register]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_testbed.py",
        description="Scheduling DNN inference across the edge-cloud continuum: simulator, emulated testbed, ASET. "
                    "Without a command: the live testbed run (options as for `run`).")
    live_cli.add_run_arguments(parser)
    parser.set_defaults(func=live_cli.run_live)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in REGISTRARS:
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (TopologyError, ProfileError, TraceError, ValueError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
