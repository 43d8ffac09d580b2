"""A live run killed without teardown (kill -9) leaves a daemon's changes in effect until `clean`: ovs-vswitchd's
send buffer widened, its CPUs moved off the reserved core. A new live run is refused until then (it would take them
for the machine's own), and `clean` puts back only what still is as the run set it. On stand-in daemons: real
processes, one holding an unbound packet socket as ovs-vswitchd's userspace datapath does."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.ovssock import send_buffer, widen_send_buffer
from testbed.record import Created, CreationRecord, process_start_ticks

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

DAEMON = """
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # bound to no interface: a send socket
print(s.fileno(), flush=True)
sys.stdin.read()
"""


@pytest.fixture
def killed_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A run directory whose record names a run process killed with -9, listed as not torn down (in an index of
    the test's own: the machine's may list real runs)."""
    monkeypatch.setattr("testbed.record.ACTIVE_DIR", tmp_path / "active")
    run_dir, run_id = tmp_path / "killed", "killed-run"
    run_dir.mkdir()
    owner = subprocess.Popen(["sleep", "60"])
    record = CreationRecord(run_dir)
    record.add(Created("run", run_id, pid=owner.pid, start_ticks=process_start_ticks(owner.pid)))
    (tmp_path / "active").mkdir()
    (tmp_path / "active" / run_id).write_text(f"{run_dir}\n")
    yield run_dir, record, owner
    owner.kill()
    owner.wait()


def _refused(tmp_path: Path, run_dir: Path, what: str) -> None:
    from live.cores import LiveRunBusy, LiveRunLock

    lock = LiveRunLock(tmp_path / "live.lock")
    with pytest.raises(LiveRunBusy, match=rf"{re.escape(str(run_dir))} was killed without teardown and stand-in "
                                          rf"\(pid \d+\) still has the {what} .* `run_testbed.py clean` first"):
        lock.acquire(tmp_path / "new")
    assert lock._file is None  # let go: the next try takes it


def _allowed(tmp_path: Path) -> None:
    from live.cores import LiveRunLock

    lock = LiveRunLock(tmp_path / "live.lock")
    lock.acquire(tmp_path / "new")
    lock.release()


def test_a_killed_runs_widened_send_buffer_refuses_a_new_run_until_clean(tmp_path: Path, killed_run) -> None:
    from testbed.clean import clean_run
    from testbed.record import daemon_changes_left

    run_dir, record, owner = killed_run
    daemon = subprocess.Popen([sys.executable, "-c", DAEMON], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        fd = int(daemon.stdout.readline())  # type: ignore[union-attr]
        before = send_buffer(daemon.pid, fd)
        assert widen_send_buffer(record, daemon.pid, "stand-in") is None
        _allowed_while_alive = daemon_changes_left() == []  # its run's process still lives: not left behind
        owner.kill()
        owner.wait()
        assert _allowed_while_alive
        assert [(d, e.kind) for d, e in daemon_changes_left()] == [(run_dir, "sockbuf")]
        _refused(tmp_path, run_dir, "send buffer")
        assert clean_run(run_dir).status == "cleaned"
        assert send_buffer(daemon.pid, fd) == before
        assert daemon_changes_left() == []
        _allowed(tmp_path)
    finally:
        daemon.kill()
        daemon.wait()


def test_a_killed_runs_borrowed_cpus_refuse_a_new_run_until_clean(tmp_path: Path, killed_run) -> None:
    from testbed.clean import clean_run
    from testbed.record import daemon_changes_left

    run_dir, record, owner = killed_run
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    daemon = subprocess.Popen(["sleep", "60"])
    try:
        saved, given = set(cpus), {cpus[0]}
        record.add(Created("affinity", "stand-in", pid=daemon.pid, start_ticks=process_start_ticks(daemon.pid),
                           cpus=",".join(map(str, sorted(saved))), values=str(cpus[0])))
        owner.kill()
        owner.wait()
        assert daemon_changes_left() == []  # recorded, not yet set (killed in between): nothing in effect
        _allowed(tmp_path)
        os.sched_setaffinity(daemon.pid, given)
        assert [(d, e.kind) for d, e in daemon_changes_left()] == [(run_dir, "affinity")]
        _refused(tmp_path, run_dir, "cores")
        assert clean_run(run_dir).status == "cleaned"
        assert os.sched_getaffinity(daemon.pid) == saved
        _allowed(tmp_path)
    finally:
        daemon.kill()
        daemon.wait()


def test_clean_leaves_cpus_someone_else_set_since() -> None:
    from testbed.record import remove_entries

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    daemon = subprocess.Popen(["sleep", "60"])
    try:
        entry = Created("affinity", "stand-in", pid=daemon.pid, start_ticks=process_start_ticks(daemon.pid),
                        cpus=",".join(map(str, cpus)), values=str(cpus[0]))
        os.sched_setaffinity(daemon.pid, {cpus[-1]})  # not what the run set: an administrator's taskset since
        assert remove_entries([entry]) == []
        assert os.sched_getaffinity(daemon.pid) == {cpus[-1]}
        os.sched_setaffinity(daemon.pid, {cpus[0]})  # as the run set it: given back
        assert remove_entries([entry]) == []
        assert os.sched_getaffinity(daemon.pid) == set(cpus)
    finally:
        daemon.kill()
        daemon.wait()


def test_on_a_server_the_refusal_names_the_run_and_its_driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A keeper's share of a run driven from another machine (`<run>/servers/<name>/cores`, as testbed.multihost
    lays it out) killed there: the refusal on the server names the driver's run and says `clean` goes on the driver."""
    from live.cores import LiveRunBusy, LiveRunLock

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    monkeypatch.setattr("testbed.record.ACTIVE_DIR", tmp_path / "active")
    run_dir = tmp_path / "driven"
    share = run_dir / "servers" / "b" / "cores"
    share.mkdir(parents=True)
    keeper, daemon = subprocess.Popen(["sleep", "60"]), subprocess.Popen(["sleep", "60"])
    try:
        record = CreationRecord(share)
        record.add(Created("run", "driven-b", pid=keeper.pid, start_ticks=process_start_ticks(keeper.pid)))
        record.add(Created("affinity", "stand-in", pid=daemon.pid, start_ticks=process_start_ticks(daemon.pid),
                           cpus=",".join(map(str, cpus)), values=str(cpus[0])))
        (tmp_path / "active").mkdir()
        (tmp_path / "active" / "driven-b").write_text(f"{share}\n")
        os.sched_setaffinity(daemon.pid, {cpus[0]})
        keeper.kill()
        keeper.wait()
        lock = LiveRunLock(tmp_path / "live.lock")
        with pytest.raises(LiveRunBusy) as refused:
            lock.acquire(tmp_path / "new")
        said = str(refused.value)
        assert said.startswith(f"{run_dir} was killed without teardown and stand-in (pid {daemon.pid}) still has the "
                               "cores")
        assert "`run_testbed.py clean` on that run's driver" in said and str(run_dir / "servers" / "b") in said
    finally:
        for p in (keeper, daemon):
            p.kill()
            p.wait()
