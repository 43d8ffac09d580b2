"""A live run started with SIGINT ignored (`cmd &` from a script, nohup; an ignored signal stays ignored across fork
and exec) starts its processes with SIGINT's default action all the same, and goes on ignoring SIGINT itself
(testbed/interrupts.py). Bit 2 of a process's SigIgn mask (/proc/PID/status) is SIGINT (signal 2) ignored."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.record import CreationRecord, process_start_ticks

REPO = Path(__file__).resolve().parents[1]
SIGINT_BIT = 1 << (signal.SIGINT - 1)


def _ignores_sigint(pid: int) -> bool:
    """Returns whether the process ignores SIGINT (its SigIgn mask)."""
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("SigIgn:"))
    return bool(int(line.split()[1], 16) & SIGINT_BIT)


def _popen_ignoring_sigint(argv: list[str], **kwargs) -> subprocess.Popen:
    """Starts argv with SIGINT ignored, as a shell without job control starts `cmd &`."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return subprocess.Popen(argv, cwd=REPO, **kwargs)
    finally:
        signal.signal(signal.SIGINT, old)


# run_live up to its first step, which starts one process as the run starts each of its own (live/procs.py's Proc),
# reads that process's SigIgn, checks that a SIGINT to the run changes nothing, and stops there.
RUN_UNTIL_A_CHILD = """
import os, signal, sys, time
from pathlib import Path
import live.orchestrate as orchestrate
from live.procs import Proc
from live.spec import RunSpec

class Stop(Exception):
    pass

def first_step(spec, log):
    proc = Proc("child", None, ["sleep", "60"], Path(sys.argv[1]))
    proc.start()  # Popen returns once the child has exec'd
    status = Path(f"/proc/{proc.popen.pid}/status").read_text()
    proc.stop()
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.1)  # a SIGINT that interrupted the run would have raised KeyboardInterrupt by now
    raise Stop(next(x for x in status.splitlines() if x.startswith("SigIgn:")))

assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
orchestrate.LiveRun = first_step
try:
    orchestrate.run_live(RunSpec(topo="tiny", tdf=1.0))
except Stop as child:
    print("child", child)
print("after", "ignored" if signal.getsignal(signal.SIGINT) == signal.SIG_IGN else "not ignored")
"""


def test_the_processes_of_a_run_started_with_sigint_ignored_get_its_default(tmp_path: Path) -> None:
    proc = _popen_ignoring_sigint([sys.executable, "-c", RUN_UNTIL_A_CHILD, str(tmp_path / "child.log")],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    lines = dict(line.split(" ", 1) for line in out.splitlines() if line.startswith(("child ", "after ")))
    mask = int(lines["child"].split()[1], 16)
    assert not mask & SIGINT_BIT, out
    assert lines["after"] == "ignored", out  # the run put back what it was started with


TRACE = """stream_id,antenna,start_s,duration_s,app,fps,frame_bytes,max_delay_ms,min_accuracy,task
1,ant1,0.0,4,ar-vr,10,20000,1000,0.2,object-detection
"""


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_a_live_run_started_with_sigint_ignored_starts_no_process_ignoring_it(tmp_path: Path) -> None:
    """Every process the run recorded (its death watch, wires, node shells, workers, schedulers, source, tcpdump)
    is checked once the traffic starts; a SIGINT to the run then changes nothing: it ends as usual."""
    (tmp_path / "trace.csv").write_text(TRACE)
    out = tmp_path / "run"
    argv = [sys.executable, str(REPO / "run_testbed.py"), "run", "--topo", "tiny", "--trace", str(tmp_path / "trace.csv"),
            "--out", str(out), "--real-workers", "none", "--no-measure", "--switch", "lxbr", "--controller", "none"]
    with (tmp_path / "run.log").open("w") as log:
        run = _popen_ignoring_sigint(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not (out / "t0").exists():
            assert run.poll() is None and time.monotonic() < deadline, (tmp_path / "run.log").read_text()[-3000:]
            time.sleep(0.1)
        procs = [e for e in CreationRecord(out).entries() if e.kind == "process"]
        alive = [e for e in procs if process_start_ticks(e.pid) == e.start_ticks]
        names = " | ".join(e.name for e in alive)
        for what in ("deathwatch", "wire", "workers.serve", "live.scheduler", "live.source", "tcpdump"):
            assert what in names, what
        assert [e.name for e in alive if _ignores_sigint(e.pid)] == []
        assert _ignores_sigint(run.pid) is False  # a handler that does nothing: the run still ignores SIGINT...
        run.send_signal(signal.SIGINT)
        assert run.wait(timeout=300) == 0, (tmp_path / "run.log").read_text()[-3000:]  # ...and ends as usual
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
            subprocess.run([sys.executable, str(REPO / "run_testbed.py"), "clean", "--run-dir", str(out)],
                           capture_output=True, cwd=REPO)
    assert CreationRecord(out).is_torn_down()
