"""Command line of the live testbed run: `add_run_arguments(parser)` (the run spec's options, live/spec.py)
and `run_live(args) -> exit status`.

run_testbed.py calls these with no subcommand (and for `run`); `python -m live.cli` runs it alone.
"""

from __future__ import annotations

import argparse
import os
import sys

from live.spec import add_run_arguments, spec_from_args
from testbed.errors import NetworkError, PreflightError
from topologies import TopologyError
from workload.trace import TraceError

EXIT_OK, EXIT_RUN, EXIT_INPUT, EXIT_NETWORK = 0, 1, 2, 3

__all__ = ["add_run_arguments", "main", "run_live"]


def run_live(args: argparse.Namespace) -> int:
    """Runs the live testbed as the parsed options say; prints the summary table; returns the exit status."""
    try:
        spec = spec_from_args(args)  # refuses a bad workload or policy before anything
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    if os.geteuid() != 0:
        print("error: the live run builds network namespaces and switches: run it as root", file=sys.stderr)
        return EXIT_INPUT
    # ~1 s of imports (aiohttp, the workers, matplotlib, numba): not for --help.
    from live.orchestrate import run_live as run
    from live.report import LiveInterrupted, format_result

    try:
        result = run(spec)
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
