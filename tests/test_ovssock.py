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


def test_a_daemons_send_buffer_is_widened_for_the_run_and_put_back(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("testbed.record.ACTIVE_DIR", tmp_path / "active")  # not the machine's index of runs
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
    finally:
        daemon.kill()
        daemon.wait()

