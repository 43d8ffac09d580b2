#!/usr/bin/env python3
"""The one command line of the project: simulate, record traces, and (as they land) run the testbed,
workers, network checks, ASET training and evaluation, and the simulator-vs-testbed comparison."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scheduler import aset_cli  # noqa: E402
from scheduler.profiles import ProfileError  # noqa: E402
from simulator import cli as simulator_cli  # noqa: E402
from testbed import cli as testbed_cli  # noqa: E402
from topologies import TopologyError  # noqa: E402
from workers import cli as workers_cli  # noqa: E402
from workload.trace import TraceError  # noqa: E402

REGISTRARS = [simulator_cli.register, workers_cli.register, testbed_cli.register, aset_cli.register]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_testbed.py",
        description="Scheduling DNN inference across the edge-cloud continuum: simulator, emulated testbed, ASET.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in REGISTRARS:
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.error("the live testbed run (run_testbed.py --topo NAME) is not available yet; "
                     "use one of the commands listed above, e.g. `simulate --topo full-edge`")
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
