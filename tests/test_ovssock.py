"""ovs-vswitchd's send socket widened for a run and put back (testbed/ovssock.py), on a stand-in daemon: a real
process holding an unbound packet socket, as ovs-vswitchd's userspace datapath does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.ovssock import SEND_BUFFER_BYTES, send_buffer, send_sockets, widen_send_buffer
from testbed.record import CreationRecord, remove_entries

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

DAEMON = """
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # bound to no interface: a send socket
print(s.fileno(), flush=True)
sys.stdin.read()
"""


def test_a_daemons_send_buffer_is_widened_for_the_run_and_put_back(tmp_path: Path) -> None:
    daemon = subprocess.Popen([sys.executable, "-c", DAEMON], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        fd = int(daemon.stdout.readline())  # type: ignore[union-attr]
        assert fd in send_sockets(daemon.pid)
        before = send_buffer(daemon.pid, fd)
        assert before < 2 * SEND_BUFFER_BYTES
        record = CreationRecord(tmp_path)
        record.start("sockbuf-test")
        assert widen_send_buffer(record, daemon.pid, "stand-in") is None
        assert send_buffer(daemon.pid, fd) == 2 * SEND_BUFFER_BYTES  # the daemon's own socket, not a copy
        entry = next(e for e in record.entries() if e.kind == "sockbuf")
        assert (entry.pid, entry.values) == (daemon.pid, f"{fd} {before} {2 * SEND_BUFFER_BYTES}")
        assert remove_entries(record.entries()) == []  # teardown, or `clean` after a kill -9 of the run
        assert send_buffer(daemon.pid, fd) == before
        assert widen_send_buffer(record, os.getpid(), "no socket") == f"no socket (pid {os.getpid()}) has no send socket yet"
        # before the run's first frame (the early call): no send socket yet is no problem, and nothing is recorded
        n_entries = len(record.entries())
        assert widen_send_buffer(record, os.getpid(), "no socket", missing_ok=True) is None
        assert len(record.entries()) == n_entries
    finally:
        daemon.kill()
        daemon.wait()


def test_a_new_live_run_is_refused_while_a_killed_runs_buffer_is_still_widened(tmp_path: Path) -> None:
    from live.cores import LiveRunBusy, LiveRunLock
    from testbed.clean import clean_run
    from testbed.record import ACTIVE_DIR, Created, daemon_changes_left, forget_active, process_start_ticks

    daemon = subprocess.Popen([sys.executable, "-c", DAEMON], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    killed = subprocess.Popen(["sleep", "60"])  # the run's process, killed with -9 after it widened the buffer
    run_dir, run_id = tmp_path / "killed", f"killed-{os.getpid()}"
    try:
        fd = int(daemon.stdout.readline())  # type: ignore[union-attr]
        before = send_buffer(daemon.pid, fd)
        run_dir.mkdir()
        record = CreationRecord(run_dir)
        record.add(Created("run", run_id, pid=killed.pid, start_ticks=process_start_ticks(killed.pid)))
        ACTIVE_DIR.mkdir(parents=True, exist_ok=True)
        (ACTIVE_DIR / run_id).write_text(f"{run_dir}\n")
        assert widen_send_buffer(record, daemon.pid, "stand-in") is None
        killed.kill()
        killed.wait()
        assert [(d, e.kind) for d, e in daemon_changes_left() if d == run_dir] == [(run_dir, "sockbuf")]
        lock = LiveRunLock(tmp_path / "live.lock")
        with pytest.raises(LiveRunBusy, match=rf"{run_dir} was killed without teardown and stand-in \(pid "
                                              rf"{daemon.pid}\) still has the send buffer .* `run_testbed.py clean` first"):
            lock.acquire(tmp_path / "new")
        assert clean_run(run_dir).status == "cleaned"
        assert send_buffer(daemon.pid, fd) == before
        assert not [d for d, _ in daemon_changes_left() if d == run_dir]
        lock.acquire(tmp_path / "new")  # nothing left in effect: the new run goes on
        lock.release()
    finally:
        forget_active(run_id)
        for p in (daemon, killed):
            p.kill()
            p.wait()
