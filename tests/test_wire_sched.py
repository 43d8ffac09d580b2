"""A wire runs as a real-time process (SCHED_FIFO) where the host allows it, else at nice -10, and says which in
its statistics."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from testbed.wire import WIRE_NICE, WIRE_RT_CPU_LIMIT_US, WIRE_RT_PRIORITY

PROBE = ("import os; from testbed.wire import favour; said = favour(); "
         "print(said, os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK == os.SCHED_FIFO, os.sched_getparam(0).sched_priority, os.nice(0))")
BASE_NICE = os.getpriority(os.PRIO_PROCESS, 0)
"""The children's niceness as inherited (pytest may itself run under nice)."""


@pytest.mark.skipif(os.geteuid() != 0, reason="real-time scheduling needs root")
def test_a_wire_is_real_time_as_root() -> None:
    try:  # a host (container) may give root no real-time budget: then there is nothing to check here
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except OSError:
        pytest.skip("this host gives root no real-time budget")
    out = subprocess.run([sys.executable, "-c", PROBE + "; import resource; print(*resource.getrlimit("
                          "resource.RLIMIT_RTTIME))"], capture_output=True, text=True, check=True).stdout.split()
    assert out[:5] == ["SCHED_FIFO", str(WIRE_RT_PRIORITY), "True", str(WIRE_RT_PRIORITY), str(BASE_NICE)]
    assert out[5:] == [str(WIRE_RT_CPU_LIMIT_US), str(2 * WIRE_RT_CPU_LIMIT_US)]


def test_without_a_real_time_budget_a_wire_falls_back_to_nice() -> None:
    """With RLIMIT_RTPRIO 0 and no root, SCHED_FIFO is refused: the wire says `nice N` (WIRE_NICE as root)."""
    drop = "import os, resource; resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0)); "
    if os.geteuid() == 0:
        drop += "os.setgroups([]); os.setresuid(65534, 65534, 65534); "
    out = subprocess.run([sys.executable, "-c", drop + PROBE], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "nice" and out[2] == "False"
    assert out[1] == out[4] and int(out[1]) in (BASE_NICE, WIRE_NICE)  # an ordinary user cannot raise its priority
