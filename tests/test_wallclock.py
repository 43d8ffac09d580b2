"""The run's wall clock (topologies/wallclock.py): deaf to steps of the machine's wall clock, one base for every
process a run starts on its machine, and the monitor's record of a step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from live.clock import DilatedClock
from live.monitor import _State, sample
from topologies import wallclock
from topologies.timescale import TimeScale

REPO = Path(__file__).resolve().parents[1]
STEP_NS = 5_800_000_000  # what a paused Firecracker guest's wall clock was set forward by, mid-run


@pytest.fixture
def stepped(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's wall clock set 5.8 s forward (as on resuming a paused virtual machine); monotonic unchanged."""
    system_ns = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: system_ns() + STEP_NS)
    monkeypatch.setattr(time, "time", lambda: (system_ns() + STEP_NS) / 1e9)


def test_a_step_of_the_machine_clock_moves_nothing_in_the_run(stepped: None) -> None:
    assert abs(wallclock.time_ns() - (wallclock.base_ns() + time.monotonic_ns())) < 50_000_000
    assert abs(wallclock.time_s() - time.time() + STEP_NS / 1e9) < 0.05  # the run's clock is 5.8 s behind it
    assert abs(wallclock.step_ns() - STEP_NS) < 50_000_000
    # a kernel receive stamp (CLOCK_REALTIME, stepped) is brought back onto the run's clock
    assert abs(wallclock.from_system_ns(time.time_ns()) - wallclock.time_ns()) < 50_000_000


def test_the_run_clock_does_not_jump_ahead_on_a_step(stepped: None) -> None:
    """A source due at a virtual instant 1 s ahead still has about K s of real time to wait after the step (it
    would have found itself 4.8 s late on the machine's clock)."""
    clock = DilatedClock(TimeScale(1.0, wallclock.time_s()))
    due_s = clock.now_s() + 1.0
    assert 0.9 < clock.real_until_s(due_s) <= 1.0
    assert DilatedClock(TimeScale(1.0), real_time=time.time).real_until_s(due_s) < -4.0  # the machine's clock


def test_processes_of_a_run_share_the_drivers_base() -> None:
    """A child started after `export_base` reads the driver's base, not its own; without it, its own."""
    code = "from topologies import wallclock; print(wallclock.base_ns())"
    env = {**os.environ, wallclock.ENV: str(wallclock.base_ns() + 123)}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, check=True)
    assert int(out.stdout) == wallclock.base_ns() + 123
    env.pop(wallclock.ENV)
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, check=True)
    assert abs(int(out.stdout) - (time.time_ns() - time.monotonic_ns())) < 50_000_000
    env[wallclock.ENV] = "soon"
    bad = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and f"{wallclock.ENV}='soon' is not an integer" in bad.stderr


def test_export_base_reaches_children(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(wallclock.ENV, "0")  # restored after the test
    wallclock.export_base()
    assert os.environ[wallclock.ENV] == str(wallclock.base_ns())


def test_the_monitor_records_a_step_in_its_interval() -> None:
    before = _State(10.0, (0, 100, 0), None, None, {}, wall_step_ns=0)
    after = _State(11.065, (50, 200, 0), None, None, {}, wall_step_ns=STEP_NS)
    line = sample(before, after, 1000.0, 10.0)
    assert line["wall_step_ms"] == 5800.0 and line["real_s"] == 1.065
    assert json.loads(json.dumps(line))["wall_step_ms"] == 5800.0
