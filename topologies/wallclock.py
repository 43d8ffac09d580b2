"""The wall clock as a run reads it: epoch time that advances with CLOCK_MONOTONIC, so that a step of the
machine's wall clock during a run moves nothing in it.

The wall clock (CLOCK_REALTIME) can jump: an NTP step, or a virtual machine that the hypervisor paused and whose
wall clock is set forward when it resumes. On this project's machines (Firecracker guests) such pauses were
seen mid-run: CLOCK_MONOTONIC stood still for the pause while the wall clock was moved about 5.8 s ahead
afterwards. A run timed by the wall clock then finds every source, scheduler and decision window that many
seconds late at once; timed by this clock it sees nothing, which is right for an emulation held entirely in that
machine (nothing inside it ran during the pause).

`time_s()` is the wall clock at a base instant plus the CLOCK_MONOTONIC seconds since. The base (wall minus
monotonic, in ns) is taken once per process at import, or inherited from the environment (`ENV`): the live
run's driver exports its own (`export_base`) before it starts anything, so every process of the run on its
machine reads one clock. A process on another server takes its own base there, and the clock offset between
servers is measured as before (testbed/clocksync.py). `step_ns()` says how far the machine's wall clock has
moved from this clock since the base (the fidelity monitor records its changes).
"""

from __future__ import annotations

import os
import sys
import time

ENV = "TESTBED_WALL_BASE_NS"
"""Environment variable holding the base (wall minus monotonic ns) that the run's processes on one machine share."""


def _initial_base_ns() -> int:
    value = os.environ.get(ENV, "")
    if value:
        try:
            return int(value)
        except ValueError:
            sys.stderr.write(f"error: environment variable {ENV}={value!r} is not an integer (ns)\n")
            raise SystemExit(2) from None
    return time.time_ns() - time.monotonic_ns()


_BASE_NS = _initial_base_ns()


def time_ns() -> int:
    """Returns epoch nanoseconds on the run's wall clock."""
    return _BASE_NS + time.monotonic_ns()


def time_s() -> float:
    """Returns epoch seconds on the run's wall clock."""
    return (_BASE_NS + time.monotonic_ns()) / 1e9


def from_system_ns(system_ns: int) -> int:
    """Returns a CLOCK_REALTIME stamp taken just now (a kernel's receive timestamp) on the run's wall clock."""
    return system_ns - step_ns()


def step_ns() -> int:
    """Returns how far the machine's wall clock is ahead of the run's (0 until it is stepped)."""
    return time.time_ns() - time_ns()


def base_ns() -> int:
    """Returns this process's base: wall minus monotonic nanoseconds."""
    return _BASE_NS


def export_base() -> None:
    """Puts this process's base into its environment, for every process it starts from now on."""
    os.environ[ENV] = str(_BASE_NS)
