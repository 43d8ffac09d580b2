"""The live run with its sites on two fixture servers (tests/servers.py: each its own namespaces, Open vSwitch and
sshd): tiny with ant1, dc1 on a and cloud on b, every worker, scheduler, source and capture on its server, at a light
load, succeeds as on one server; the crossing link dc1-cloud measures as configured; every process's log, records,
statistics, windows and pcap are gathered into the one run dir; summary.json has each server's clock offset; nothing
is left on either server after teardown, or after kill -9 of the driver mid-traffic and `run_testbed.py clean`."""

from __future__ import annotations

import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from servers import ServerSpec, running
from test_multihost_net import local_leftovers

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

ROOT = Path(__file__).resolve().parents[1]
PLACE = "ant1=a,dc1=a,cloud=b"
CROSSING, CROSSING_MS = "dc1-cloud", 20.0  # tiny.yaml
SUCCESS_TOLERANCE = 0.05
"""|success on two servers - on one| allowed at this light load (both are 1.000 on a quiet machine)."""
# A and B bind to the antenna's own cluster; C needs yolov3's accuracy (0.553) and its budget takes the cloud's
# delay: its queries cross dc1-cloud, the link between the servers.
TRACE = """stream_id,antenna,start_s,duration_s,app,fps,frame_bytes,max_delay_ms,min_accuracy,task
1,ant1,0.0,8,ar-vr,10,30000,300,0.2,object-detection
2,ant1,0.3,8,video-surveillance,5,45000,400,0.2,object-detection
3,ant1,0.6,8,video-surveillance,2,20000,4000,0.5,object-detection
"""
SERVER_FILES = ["logs/worker-mobilenet-ssd-cpu-b1@ant1.log", "logs/worker-tiny-yolov2-cpu-b4@dc1.log",
                "logs/worker-yolov3-cpu-b8@cloud.log", "logs/scheduler-ant1.log", "logs/source-ant1.log",
                "records/ant1.csv", "schedulers/ant1.json", "windows/ant1.csv", "pcap/worker-cloud.pcap",
                "pcap/sources-ant1.pcap"]
"""What the processes on the servers write (server b: the cloud's worker and capture; a: the rest)."""


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    with running([ServerSpec("a"), ServerSpec("b")], tmp_path_factory.mktemp("farm")) as f:
        yield f


@pytest.fixture(scope="module")
def trace(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("trace") / "trace.csv"
    path.write_text(TRACE)
    return path


def placed(farm) -> list[str]:
    a, b = farm.get("a").addr, farm.get("b").addr
    return ["--servers", f"a=root@{a},b=root@{b}", "--place", PLACE, "--ssh-options", shlex.join(farm.ssh_options())]


def live(trace: Path, out: Path, *args: str, duration_s: float = 8) -> list[str]:
    return [sys.executable, "run_testbed.py", "run", "--topo", "tiny", "--trace", str(trace), "--duration",
            str(duration_s), "--mtu", "1450", "--real-workers", "none", "--no-profile-real-workers", "--out", str(out),
            *args]


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_tiny_live_across_two_servers_as_on_one_and_gathered(farm, trace, tmp_path):
    one = run(live(trace, tmp_path / "one"))
    assert one.returncode == 0, one.stdout + one.stderr
    two = run(live(trace, tmp_path / "two", *placed(farm)))
    assert two.returncode == 0, two.stdout + two.stderr
    s1 = json.loads((tmp_path / "one" / "summary.json").read_text())
    s2 = json.loads((tmp_path / "two" / "summary.json").read_text())
    print(f"success: one server {s1['overall']['success']:.3f}, two {s2['overall']['success']:.3f}")
    assert s2["extra"]["recorded_queries"] == s2["extra"]["expected_queries"] == s1["extra"]["recorded_queries"]
    assert abs(s2["overall"]["success"] - s1["overall"]["success"]) <= SUCCESS_TOLERANCE
    for app, r in s1["per_app"].items():
        assert abs(s2["per_app"][app]["success"] - r["success"]) <= SUCCESS_TOLERANCE, app
    with (tmp_path / "two" / "records.csv").open() as f:
        clusters = [r["cluster"] for r in csv.DictReader(f)]
    assert clusters.count("cloud") > 0 and clusters.count("ant1") > 0  # some queries crossed the servers' link

    links = {(m["link"], m["direction"]): m
             for m in json.loads((tmp_path / "two" / "link_measurements.json").read_text())["links"]}
    for direction in ("a->b", "b->a"):
        m = links[(CROSSING, direction)]
        print(f"{CROSSING} {direction}: {m['median_delay_ms']:.3f} ms (configured {CROSSING_MS:g}, tolerance "
              f"{m['tolerance_delay_ms']:.3f})")
        assert m["ok"] and abs(m["median_delay_ms"] - CROSSING_MS) <= m["tolerance_delay_ms"]
    assert s2["extra"]["network"]["links_out_of_tolerance"] == []

    for rel in SERVER_FILES:  # gathered from the servers' shares, which are gone
        assert (tmp_path / "two" / rel).stat().st_size > 0, rel
    assert "DONE " in (tmp_path / "two" / "logs" / "source-ant1.log").read_text()
    assert not (tmp_path / "two" / "servers").exists()
    entries = [json.loads(line) for line in (tmp_path / "two" / "created.jsonl").read_text().splitlines()]
    started = {e.get("server") for e in entries if e["kind"] == "process" and "-m live." in e["name"]}
    assert started == {"a"}  # the scheduler and the source, on ant1's server
    assert any(e.get("server") == "b" and "workers.serve" in e["name"] for e in entries)

    servers = s2["extra"]["network"]["servers"]
    assert set(servers) == {"a", "b"} and servers["b"]["sites"] == ["cloud"]
    for name, srv in servers.items():  # one machine, one clock: the true offset is 0, within the bound
        print(f"clock {name}: {srv['clock_offset_ms']:+.3f} ms +- {srv['clock_bound_ms']:.3f} ms")
        assert abs(srv["clock_offset_ms"]) <= srv["clock_bound_ms"] + 0.01
        assert abs(srv["clock_offset_end_ms"]) <= srv["clock_bound_end_ms"] + 0.01
    assert "server b (cloud): clock " in two.stdout
    assert farm.leftovers_on("a") == [] and farm.leftovers_on("b") == []
    assert local_leftovers(tmp_path / "two") == []


def test_kill_9_mid_traffic_then_clean_leaves_nothing_on_either_server(farm, trace, tmp_path):
    run_dir, out = tmp_path / "run", tmp_path / "stdout"
    with out.open("w") as sink:
        proc = subprocess.Popen(live(trace, run_dir, *placed(farm), duration_s=30), cwd=ROOT, stdout=sink,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "] started " not in out.read_text():  # t0 set: every process up on its server
            assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
            time.sleep(0.1)
        time.sleep(2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert farm.leftovers_on("a") != [] and farm.leftovers_on("b") != []
        done = subprocess.run([sys.executable, "run_testbed.py", "clean", "--run-dir", str(run_dir)], cwd=ROOT,
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
        deadline = time.monotonic() + 20
        while farm.leftovers_on("a") or farm.leftovers_on("b"):
            assert time.monotonic() < deadline, farm.leftovers_on("a") + farm.leftovers_on("b")
            time.sleep(0.1)
        assert local_leftovers(run_dir) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
