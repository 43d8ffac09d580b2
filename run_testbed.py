#!/usr/bin/env python3
"""The one command line of the project: the live testbed run (default), simulate, record traces, workers,
network checks, ASET training and evaluation, and the simulator-vs-testbed comparison.

Any interpreter may start it (`sudo python run_testbed.py ...`): it re-executes itself with the project's
virtualenv (.venv/bin/python, made by scripts/setup.sh), so the top imports only the standard library. A
command's module is imported only when that command runs (or for the overall --help).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
VENV = ROOT / ".venv"
REEXEC_MARK = "RUN_TESTBED_REEXEC"
"""Set in the environment of the re-executed process: a virtualenv that is not the one running after the
re-execution is a broken one, reported instead of re-executed again."""


def ensure_project_python() -> None:
    """Re-executes this script with the project's virtualenv unless it runs under it; without the virtualenv,
    says to run the setup script and exits with status 2."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        os.environ.pop(REEXEC_MARK, None)  # the re-execution took: the run's own children start afresh
        return
    python = VENV / "bin" / "python"
    if not os.access(python, os.X_OK) or os.environ.get(REEXEC_MARK):
        problem = "is broken" if python.exists() else "is missing"
        print(f"run_testbed.py: the project's virtualenv {VENV} {problem} (running {sys.executable}): "
              f"run {ROOT / 'scripts' / 'setup.sh'} first", file=sys.stderr)
        sys.exit(2)
    os.environ[REEXEC_MARK] = "1"
    os.execv(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])


COMMANDS = {
    "run": "live.cli",
    "simulate": "simulator.cli", "trace": "simulator.cli",
    "worker": "workers.cli", "models": "workers.cli", "profile": "workers.cli",
    "net": "testbed.cli", "clean": "testbed.cli", "pcap-virtual": "testbed.pcaptime",
    "train": "training.cli", "evaluate": "training.cli",
    "compare": "live.compare",
}
"""Each command and the module whose `register(subparsers)` adds it (`run`: this file, from live.cli's options)."""


def register_run(sub: argparse._SubParsersAction) -> None:
    from live import cli as live_cli

    p = sub.add_parser("run", help="the live testbed run (the default when no command is given)",
                       description="Bring up the emulated network, start workers, schedulers and sources, "
                                   "replay the traffic and write the run dir.")
    live_cli.add_run_arguments(p)
    p.set_defaults(func=live_cli.run_live)


def _register(module: str, sub: argparse._SubParsersAction) -> None:
    if module == "live.cli":
        register_run(sub)
    else:
        importlib.import_module(module).register(sub)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Returns the command line's parser: with every command, or (given a command) with that one alone, so
    that only its module is imported."""
    parser = argparse.ArgumentParser(
        prog="run_testbed.py",
        description="Scheduling DNN inference across the edge-cloud continuum: simulator, emulated testbed, ASET. "
                    "Without a command: the live testbed run (options as for `run`).")
    if command is None:
        from live import cli as live_cli

        live_cli.add_run_arguments(parser)
        parser.set_defaults(func=live_cli.run_live)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in dict.fromkeys(COMMANDS.values()) if command is None else (COMMANDS[command],):
        _register(module, sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv and argv[0] in COMMANDS else None)
    args = parser.parse_args(argv)
    from scheduler.profiles import ProfileError
    from topologies import TopologyError
    from workload.trace import TraceError

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
    ensure_project_python()
    sys.exit(main())
