"""The run's death watch: a process in a session of its own that waits for the process that made the run. If
that process dies without tearing down (SIGKILL, a crash), the death watch stops every process the run recorded
and every process still inside the run's namespaces, within seconds, so no headless experiment runs on;
what else the run made (namespaces, links, bridges, qdiscs) and its record stay for `run_testbed.py clean`.

A parent-death signal would not do: it follows the thread that started a process, is cleared when a process
changes its user (tcpdump without `-Z root` does), and misses what runs under a Mininet host's shell. The
network starts the death watch (`start_deathwatch`) and records it, so its teardown stops it like any other
process of the run; it logs to `<run dir>/deathwatch.log`.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from testbed.record import CreationRecord, process_start_ticks, stop_processes

REPO_ROOT = Path(__file__).resolve().parent.parent
LOG_NAME = "deathwatch.log"


def start_deathwatch(record: CreationRecord) -> subprocess.Popen:
    """Starts (and records) the death watch of the run this process is making."""
    pid = os.getpid()
    argv = [sys.executable, "-m", "testbed.deathwatch", str(record.run_dir.resolve()), str(pid),
            str(process_start_ticks(pid))]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with (record.run_dir / LOG_NAME).open("ab") as log:
        # its own session: a Ctrl-C or a hang-up meant for the run's terminal does not reach it
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=REPO_ROOT,
                                start_new_session=True)
    record.add_process("deathwatch", proc.pid)
    return proc


def wait_for_exit(pid: int, start_ticks: int) -> None:
    """Returns once the process `pid` that started at `start_ticks` has exited (at once if it already has)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        if process_start_ticks(pid) != start_ticks:  # gone before we looked, its pid taken by another
            return
        select.select([fd], [], [])  # a pidfd turns readable when its process exits
    finally:
        os.close(fd)


def stop_orphans(run_dir: Path, log=print) -> int:
    """Stops what a run whose maker died left running; returns the exit status (0: nothing survived)."""
    record = CreationRecord(run_dir)
    if record.is_torn_down():
        return 0
    started = time.monotonic()
    survivors = stop_processes(record.entries(), spare_pid=os.getpid())
    log(f"the run's process died without tearing down: its processes stopped in {time.monotonic() - started:.1f} s"
        + (f"; survivors: {'; '.join(survivors)}" if survivors else "")
        + f". The network stays: run `run_testbed.py clean --run-dir {run_dir}`")
    return 1 if survivors else 0


def main(argv: list[str]) -> int:
    run_dir, pid, start_ticks = Path(argv[0]), int(argv[1]), int(argv[2])
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # the run's own teardown stops us
    with contextlib.suppress(KeyboardInterrupt):
        wait_for_exit(pid, start_ticks)
    return stop_orphans(run_dir, log=lambda line: print(line, flush=True))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
