"""A live run whose orchestrator is SIGKILLed leaves no experiment running: within seconds its workers,
schedulers, sources, captures, controller and host shells have stopped (the run's death watch), the records
they wrote read back whole, and `clean` then removes everything else the run made."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis.records import read_records
from live.procs import pids_named
from testbed.cli import cmd_clean
from testbed.cpuset import thread_affinities
from testbed.leftovers import leftovers
from testbed.record import CreationRecord, process_start_ticks

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]
REPO = Path(__file__).resolve().parents[1]
TRACE = """stream_id,antenna,start_s,duration_s,app,fps,frame_bytes,max_delay_ms,min_accuracy,task
1,ant1,0.0,120,ar-vr,20,30000,300,0.2,object-detection
2,ant1,0.5,120,video-surveillance,10,45000,400,0.2,object-detection
"""
STOPPED_WITHIN_S = 20.0
"""How long the test waits for the processes to go (the death watch takes ~3 s: SIGTERM, SIGKILL after 3 s)."""


def _alive(procs: list[tuple[int, int | None]]) -> list[int]:
    return [pid for pid, ticks in procs if process_start_ticks(pid) == ticks]


def _pids_in(netns: list[str]) -> list[str]:
    present = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    names = [n for n in netns if n in present.split()]
    return [pid for n in names for pid in subprocess.run(["ip", "netns", "pids", n], capture_output=True,
                                                          text=True).stdout.split()]


def _kill_mid_run(orchestrator: subprocess.Popen, out: Path, log: Path) -> list:
    """SIGKILLs the orchestrator 3 s into the traffic; returns its record's entries, checked to hold every kind of
    process of a run, all running."""
    deadline = time.monotonic() + 300
    while not (out / "t0").exists():
        assert orchestrator.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "the run never started its traffic"
        time.sleep(0.2)
    time.sleep(max(0.0, float((out / "t0").read_text()) + 3.0 - time.time()))
    entries = CreationRecord(out).entries()
    names = " | ".join(e.name for e in entries if e.kind == "process")
    for what in ("workers.serve", "live.scheduler", "live.source", "tcpdump", "controller", "shell"):
        assert what in names, what
    procs = [(e.pid, e.start_ticks) for e in entries if e.kind == "process"]
    assert len(_alive(procs)) == len(procs), names
    orchestrator.kill()
    orchestrator.wait()
    return entries


def test_a_sigkilled_orchestrator_leaves_nothing_running_and_clean_restores_everything(tmp_path: Path) -> None:
    (tmp_path / "trace.csv").write_text(TRACE)
    out = tmp_path / "run"
    argv = [sys.executable, str(REPO / "run_testbed.py"), "run", "--topo", "tiny", "--trace", str(tmp_path / "trace.csv"),
            "--out", str(out), "--real-workers", "dc1", "--no-measure", "--no-profile-real-workers"]
    ovs_before = {pid: os.sched_getaffinity(pid) for pid in pids_named("ovs-vswitchd")}
    with (tmp_path / "orchestrator.log").open("w") as log:
        orchestrator = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        entries = _kill_mid_run(orchestrator, out, tmp_path / "orchestrator.log")
        cores = CreationRecord(out / "cores").entries()  # the run's cpusets and ovs-vswitchd's borrowed core
        groups = [Path(e.name) for e in cores if e.kind == "cgroup"]
        assert any(g.name.endswith("-real") for g in groups) and all(g.is_dir() for g in groups)
        assert [e.name for e in cores if e.kind == "affinity"] == ["ovs-vswitchd"] * len(ovs_before)
        procs = [(e.pid, e.start_ticks) for e in entries if e.kind == "process"]
        netns = [e.name for e in entries if e.kind == "netns"]
        deadline = time.monotonic() + STOPPED_WITHIN_S
        while (_alive(procs) or _pids_in(netns)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _alive(procs) == [], [e.name for e in entries if e.kind == "process" and e.pid in _alive(procs)]
        assert _pids_in(netns) == []  # nothing runs in the run's hosts either
        assert not CreationRecord(out).is_torn_down()  # the record is left for clean
        rows = 0
        for part in (out / "records").glob("*.csv"):  # what the sources recorded reads back whole
            rows += read_records(part).num_rows
        assert rows > 0
    finally:
        if orchestrator.poll() is None:
            orchestrator.kill()
            orchestrator.wait()
        if (out / "created.jsonl").exists():
            assert cmd_clean(argparse.Namespace(run_dir=out)) == 0
    record = CreationRecord(out)
    run_id = record.run_entry().name
    scratch = next(e.name for e in entries if e.kind == "netns" and e.name.endswith("-netem-probe"))
    assert leftovers(run_id, procs, scratch) == []
    assert CreationRecord(out).is_torn_down() and CreationRecord(out / "cores").is_torn_down()
    assert not any(g.exists() for g in groups)
    for pid, cpus in ovs_before.items():  # every thread has its CPUs back
        assert all(c == cpus for c in thread_affinities(pid).values())
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(out) not in ps


def test_the_death_watch_goes_with_a_normal_teardown(tmp_path: Path) -> None:
    from testbed import EmulatedNetwork

    with EmulatedNetwork("tiny", run_dir=tmp_path / "run", controller="none", log=lambda _: None) as net:
        watch = next(e for e in net.record.entries() if e.kind == "process" and e.name == "deathwatch")
        assert _alive([(watch.pid, watch.start_ticks)]) == [watch.pid]
    assert _alive([(watch.pid, watch.start_ticks)]) == []
    assert not (tmp_path / "run" / "deathwatch.log").read_text().strip()  # it had nothing to stop
