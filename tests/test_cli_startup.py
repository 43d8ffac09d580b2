"""The command line's start: a command's parser imports only its own module (no plotting, statistics, HTTP or
JIT library for `simulate --help`), and any interpreter may start run_testbed.py: it re-executes itself with the
project's virtualenv, or says in one line to run the setup script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("matplotlib", "scipy", "aiohttp", "numba", "pyarrow", "torch", "onnxruntime", "gymnasium", "live")
SYSTEM_PYTHON = "/usr/bin/python3"


def modules_after(argv: list[str], prefix: str | None = None) -> list[str]:
    """Returns the heavy top-level modules imported by parsing `argv` (a --help) in a fresh interpreter (with
    `prefix`: the modules whose name starts with it)."""
    names = (f"[m for m in sys.modules if m.startswith({prefix!r})]" if prefix else
             f"{{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})")
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import run_testbed\n"
            "try:\n    run_testbed.main(sys.argv[2:])\nexcept SystemExit:\n    pass\n"
            f"print(json.dumps(sorted({names})))")
    r = subprocess.run([sys.executable, "-c", code, str(ROOT), *argv], capture_output=True, text=True, timeout=120,
                       check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("command", ["simulate", "trace", "run"])
def test_a_commands_help_imports_no_heavy_library(command: str) -> None:
    # The live run's own parser is in live/ (live.cli, live.spec): none of the rest of it (the orchestrator).
    assert modules_after([command, "--help"]) == (["live"] if command == "run" else [])
    if command == "run":
        assert modules_after([command, "--help"], prefix="live.") == ["live.cli", "live.options", "live.spec"]


def test_every_command_is_dispatched_to_the_module_that_registers_it() -> None:
    import argparse

    import run_testbed

    for command, module in run_testbed.COMMANDS.items():
        parser = run_testbed.build_parser(command)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        assert command in sub.choices, (command, module)
    full = run_testbed.build_parser()
    sub = next(a for a in full._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(run_testbed.COMMANDS)


def system_python_without_numpy() -> str:
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"no {SYSTEM_PYTHON}")
    if subprocess.run([SYSTEM_PYTHON, "-c", "import numpy"], capture_output=True).returncode == 0:
        pytest.skip(f"{SYSTEM_PYTHON} has numpy: it would run the command without re-executing")
    return SYSTEM_PYTHON


def test_another_python_re_executes_with_the_virtualenv() -> None:
    python = system_python_without_numpy()
    r = subprocess.run([python, str(ROOT / "run_testbed.py"), "simulate", "--help"], capture_output=True, text=True,
                       timeout=120, env={k: v for k, v in os.environ.items() if k != "RUN_TESTBED_REEXEC"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: run_testbed.py simulate")


def test_through_a_symlink_too(tmp_path: Path) -> None:
    python = system_python_without_numpy()
    (tmp_path / "rt.py").symlink_to(ROOT / "run_testbed.py")
    r = subprocess.run([python, str(tmp_path / "rt.py"), "trace", "--help"], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "usage: run_testbed.py trace" in r.stdout


def test_without_the_virtualenv_one_line_and_exit_2(tmp_path: Path) -> None:
    python = system_python_without_numpy()
    shutil.copy(ROOT / "run_testbed.py", tmp_path / "run_testbed.py")  # a checkout with no .venv
    r = subprocess.run([python, str(tmp_path / "run_testbed.py"), "--topo", "full-edge"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2
    assert r.stdout == "" and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "setup.sh" in r.stderr and str(tmp_path / ".venv") in r.stderr


def test_a_virtualenv_that_does_not_take_is_reported_not_re_executed_again() -> None:
    python = system_python_without_numpy()
    env = dict(os.environ, RUN_TESTBED_REEXEC="1")  # as if this process were the re-executed one
    r = subprocess.run([python, str(ROOT / "run_testbed.py"), "--help"], capture_output=True, text=True, timeout=60,
                       env=env)
    assert r.returncode == 2 and "is broken" in r.stderr and len(r.stderr.strip().splitlines()) == 1
