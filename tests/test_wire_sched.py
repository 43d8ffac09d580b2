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


def _need_real_time() -> None:
    """Skips where this host gives root no real-time budget (a container): nothing to check there."""
    probe = "import os; os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))"
    if subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode != 0:
        pytest.skip("this host gives root no real-time budget")


@pytest.mark.skipif(os.geteuid() != 0, reason="real-time scheduling needs root")
def test_a_wire_is_real_time_as_root() -> None:
    _need_real_time()
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


@pytest.mark.skipif(os.geteuid() != 0, reason="real-time scheduling needs root")
def test_a_real_time_wire_that_never_sleeps_is_demoted_not_killed() -> None:
    """Past WIRE_RT_CPU_LIMIT_US of CPU without blocking, SIGXCPU makes the wire an ordinary process; it lives on."""
    _need_real_time()
    spin = ("import os, time; from testbed import wire; print(wire.favour()); "
            f"t = time.process_time() + {3 * WIRE_RT_CPU_LIMIT_US / 1e6}\n"
            "while time.process_time() < t: pass\n"
            "print(os.sched_getscheduler(0) == os.SCHED_OTHER, len(wire.DEMOTED), os.nice(0))")
    run = subprocess.run([sys.executable, "-c", spin], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    first, then = run.stdout.splitlines()
    assert first == f"SCHED_FIFO {WIRE_RT_PRIORITY}"
    assert then.split() == ["True", "1", str(min(BASE_NICE, WIRE_NICE))]
