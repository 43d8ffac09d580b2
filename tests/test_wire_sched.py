"""A wire runs as a real-time process (SCHED_FIFO) where the host allows it, else at nice -10, and says which in
its statistics."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from testbed.wire import WIRE_NICE, WIRE_RT_PRIORITY

PROBE = ("import os; from testbed.wire import favour; said = favour(); "
         "print(said, os.sched_getscheduler(0) == os.SCHED_FIFO, os.sched_getparam(0).sched_priority, os.nice(0))")


@pytest.mark.skipif(os.geteuid() != 0, reason="real-time scheduling needs root")
def test_a_wire_is_real_time_as_root() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["SCHED_FIFO", str(WIRE_RT_PRIORITY), "True", str(WIRE_RT_PRIORITY), "0"]


def test_without_a_real_time_budget_a_wire_falls_back_to_nice() -> None:
    """With RLIMIT_RTPRIO 0 and no root, SCHED_FIFO is refused: the wire says `nice N` (WIRE_NICE as root)."""
    drop = "import os, resource; resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0)); "
    if os.geteuid() == 0:
        drop += "os.setgroups([]); os.setresuid(65534, 65534, 65534); "
    out = subprocess.run([sys.executable, "-c", drop + PROBE], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "nice" and out[2] == "False"
    assert out[1] == out[4] and int(out[1]) in (0, WIRE_NICE)  # an ordinary user cannot raise its priority
