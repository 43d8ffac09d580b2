"""Every server of a live run held for it, and the isolated core of real inference on another server (live/keeper.py,
docs/multihost.md): tiny with every site on fixture server b (tests/servers.py), its dc1 worker real and nothing real
on the driver. While the run goes, b holds its live-run lock (a second run is refused naming b, and leaves no file),
b's `-real` and `-rest` cpusets exist (named after b), the real worker's inference threads are in b's `-real` on its
reserved core alone and every other process of the run on b (workers, scheduler, source, captures, wires, the agent
and its ssh session) in b's `-rest`, b's ovs-vswitchd off the reserved core; the monitor reads b through its agent;
the run succeeds; afterwards nothing is left (no cgroup, b's ovs-vswitchd as before, b's lock free), nor after kill
-9 of the driver mid-traffic and `run_testbed.py clean`, nor after kill -9 of a keeper (and its driver) before it
said READY and `clean`. A server of profile-driven workers only holds its lock too; its keeper killed mid-run stops
the run, named. A keeper reserves b's core when asked again with a real worker there. A server without a cgroup
hierarchy pins its real worker to its last CPU and summary.json says so. The tests without root:
tests/test_keeper_units.py."""

from __future__ import annotations

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

from testbed.placement import Placement, write_servers

ROOT = Path(__file__).resolve().parents[1]
root_only = (pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root"))
"""The marks of the tests on the fixture."""
# A binds to mobilenet@ant1 (profile-driven); B no longer fits there and binds to tiny-yolov2@dc1, the real worker
TRACE = """stream_id,antenna,start_s,duration_s,app,fps,frame_bytes,max_delay_ms,min_accuracy,task
1,ant1,0.0,{d},ar-vr,30,20000,300,0.2,object-detection
2,ant1,0.5,{d},video-surveillance,20,20000,400,0.2,object-detection
"""
DURATION_S = 15
"""Long enough to inspect server b while the traffic runs."""
LOCK = "/run/edge-testbed/live.lock"
CGROUP_MOUNTS = (["mount", "-t", "tmpfs", "-o", "mode=755", "cgroup", "/sys/fs/cgroup"],
                 ["mkdir", "/sys/fs/cgroup/cpuset", "/sys/fs/cgroup/unified"],
                 ["mount", "-t", "cgroup", "-o", "cpuset", "cgroup", "/sys/fs/cgroup/cpuset"],
                 ["mount", "-t", "cgroup2", "cgroup2", "/sys/fs/cgroup/unified"])
"""The cgroup hierarchies a machine mounts, as this one does (v1 cpuset, v2 beside it): a fixture server's `/sys` is
the fresh sysfs `ip netns exec` mounts, without them. Mounted there they are this machine's own (one cgroup tree)."""
KINDS = ("workers.serve", "live.scheduler", "live.source", "tcpdump", "wire-")
PY = str(ROOT / ".venv" / "bin" / "python")


# -- root, on the fixture ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """The folder of the tests' run dirs: the driver's own, hidden from the server."""
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def farm(tmp_path_factory, runs):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with running([ServerSpec("b", hide=(str(runs),))], tmp_path_factory.mktemp("farm")) as f:
        for argv in CGROUP_MOUNTS:  # in b's mount namespace: gone with it
            f.inside("b", argv)
        yield f


def live(farm, out: Path, trace: Path, server: str = "b", duration_s: float = DURATION_S,
         real: str = "dc1") -> list[str]:
    """Returns the command line of tiny with every site on `server` and the workers of `real` real."""
    addr = farm.get(server).addr
    return [sys.executable, "run_testbed.py", "run", "--topo", "tiny", "--trace", str(trace), "--duration",
            str(duration_s), "--mtu", "1450", "--real-workers", real, "--no-profile-real-workers", "--no-measure",
            "--servers", f"{server}=root@{addr}", "--ssh-options", shlex.join(farm.ssh_options()), "--out", str(out)]


def on_b(farm, code: str) -> str:
    """Runs Python on server b (its namespaces: its pids, its /run) and returns what it prints."""
    return farm.inside("b", [PY, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r})\n{code}"]).stdout


OVS_AFFINITY = """
import json, os
from live.procs import pids_named
print(json.dumps({t: sorted(os.sched_getaffinity(int(t))) for p in pids_named("ovs-vswitchd")
                  for t in os.listdir(f"/proc/{p}/task")}))
"""
GROUPS_OF = """
import json, os, sys
out = {}
for pid in sys.argv[1:]:
    try:
        out[pid] = {t: [open(f"/proc/{pid}/task/{t}/comm").read().strip(), open(f"/proc/{pid}/task/{t}/cpuset").read().strip(),
                        sorted(os.sched_getaffinity(int(t)))] for t in os.listdir(f"/proc/{pid}/task")}
    except OSError:
        pass  # exited (a process of the network's bring-up)
print(json.dumps(out))
"""


ANCESTORS = """
import json, sys
out, pid = [], int(sys.argv[1])
while pid > 1:
    stat = open(f"/proc/{pid}/stat").read()
    out.append([pid, stat[stat.index("(") + 1:stat.rindex(")")], open(f"/proc/{pid}/cpuset").read().strip()])
    pid = int(stat.rsplit(")", 1)[1].split()[1])
print(json.dumps(out))
"""


def groups_on_b(farm, pids: list[int]) -> dict[str, dict[str, list]]:
    """Returns, per live pid of server b, each thread's name, cpuset group and CPUs."""
    return json.loads(farm.inside("b", [PY, "-c", GROUPS_OF, *map(str, pids)]).stdout)


def b_lock_free(farm) -> bool:
    return farm.inside("b", ["sh", "-c", f"test ! -e {LOCK} || flock -n {LOCK} true"], check=False).returncode == 0


def groups_of_b() -> list[str]:
    """Returns every cgroup named after a server b (the fixture's servers share this machine's cgroup tree)."""
    roots = [Path("/sys/fs/cgroup/cpuset"), Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup")]
    return sorted(str(p) for r in roots if r.is_dir() for p in r.iterdir()
                  if p.name.startswith("edge-testbed-") and (p.name.endswith("-b") or "-b-" in p.name))


def entries(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_started(proc: subprocess.Popen, out: Path) -> None:
    deadline = time.monotonic() + 180
    while "] started " not in out.read_text():  # t0 set: every process up on its server
        assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
        time.sleep(0.2)


def stop_run(proc: subprocess.Popen, run_dir: Path) -> None:
    """Ends a run the test gave up on: SIGTERM (it tears down), else SIGKILL and `clean`."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        subprocess.run([sys.executable, "run_testbed.py", "clean", "--run-dir", str(run_dir)], cwd=ROOT, timeout=180,
                       check=False)


def start_isolated(farm, run_dir: Path, trace: Path, out: Path) -> subprocess.Popen:
    """Starts the live run (its output to `out`) and returns it once its traffic runs with b's cores isolated
    (`check_isolated`); the run's output is printed when that check fails, and the run is stopped."""
    with out.open("w") as sink:
        proc = subprocess.Popen(live(farm, run_dir, trace), cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_started(proc, out)
        check_isolated(farm, run_dir)
    except BaseException:
        print(out.read_text())
        stop_run(proc, run_dir)
        raise
    return proc


def check_isolated(farm, run_dir: Path) -> dict[str, str]:
    """Checks b's cores while the run goes; returns b's -real and -rest groups (as /proc/PID/cpuset names them)."""
    cores = entries(run_dir / "cores" / "created.jsonl")
    groups = [e["name"] for e in cores if e["kind"] == "cgroup" and e.get("server") == "b"]
    real = next(g for g in groups if g.endswith("-b-real"))
    rest = next(g for g in groups if g.endswith("-b-rest"))
    assert all(Path(g).is_dir() for g in groups), groups  # the fixture's servers share this machine's cgroup tree
    assert any(e["kind"] == "affinity" and e["name"] == "ovs-vswitchd" and e.get("server") == "b" for e in cores)
    reserved = int(Path(real, "cpuset.cpus").read_text())
    assert Path(real, "cpuset.cpu_exclusive").read_text().strip() == "1"
    names = {"real": "/" + Path(real).name, "rest": "/" + Path(rest).name}

    procs = [e for e in entries(run_dir / "created.jsonl") if e["kind"] == "process" and e.get("server") == "b"]
    real_worker = next(e["pid"] for e in procs if "workers.serve" in e["name"] and "--inference-cgroup" in e["name"])
    seen = groups_on_b(farm, [e["pid"] for e in procs])
    kinds = {k for e in procs if str(e["pid"]) in seen for k in KINDS if e["name"].startswith(k) or f" {k} " in e["name"]}
    assert kinds == set(KINDS), kinds  # every kind of process of the run on b is checked below
    inference = {t for t, (comm, _, _) in seen[str(real_worker)].items() if comm.startswith("ort-")}
    assert inference, seen[str(real_worker)]
    for pid, threads in seen.items():
        for tid, (comm, group, cpus) in threads.items():
            if pid == str(real_worker) and tid in inference:
                assert group == names["real"] and cpus == [reserved], (pid, tid, comm, group, cpus)
            else:
                assert group == names["rest"] and reserved not in cpus, (pid, tid, comm, group, cpus)
    ovs = json.loads(on_b(farm, OVS_AFFINITY))
    assert ovs and all(reserved not in cpus for cpus in ovs.values()), ovs
    # the agent that spawned the worker and its ssh session's sshd processes in -rest; the listening sshd not
    above = json.loads(farm.inside("b", [PY, "-c", ANCESTORS, str(real_worker)]).stdout)[1:]
    sshd = [a for a in above if a[1].startswith("sshd")]
    assert above[0][1].startswith("python") and above[0][2] == names["rest"], above
    assert len(sshd) >= 2 and all(a[2] == names["rest"] for a in sshd[:-1]) and sshd[-1][2] != names["rest"], above
    assert not b_lock_free(farm)
    print(f"b: {len(inference)} inference thread(s) in {names['real']} on CPU {reserved}; "
          f"{sum(map(len, seen.values())) - len(inference)} threads of {len(seen)} processes in {names['rest']}")
    return names


def check_put_back(farm, run_dir: Path, ovs_before: dict) -> None:
    made = [e["name"] for e in entries(run_dir / "cores" / "created.jsonl") if e["kind"] == "cgroup"]
    assert any(g.endswith("-b-real") for g in made) and not any(Path(g).exists() for g in made)
    assert groups_of_b() == []
    after = json.loads(on_b(farm, OVS_AFFINITY))  # threads may come and go: every one has what they all had
    assert set(map(tuple, after.values())) == set(map(tuple, ovs_before.values())), (after, ovs_before)
    assert b_lock_free(farm)
    assert farm.leftovers_on("b") == [] and local_leftovers(run_dir) == []
    assert farm.inside("b", ["find", str(run_dir), "-type", "f"], check=False).stdout == ""


def refuse_second(farm, tmp_path: Path, real: bool = True) -> None:
    """Checks that a second run's keeper on b is refused, naming b, and that the refused run leaves no file."""
    from live.cores import LiveRunBusy, LiveRunLock, RunCores

    (tmp_path / "second").mkdir()
    second = RunCores(tmp_path / "second", log=lambda _: None, lock=LiveRunLock(tmp_path / "lock"),
                      real_inference=False)
    with pytest.raises(LiveRunBusy, match=r"server b: another live run is running \(pid \d+, "), second:
        second.hold_on(farm.record("b"), real=real)
    assert not (tmp_path / "second").exists()


@root_only[0]
@root_only[1]
def test_a_real_worker_on_server_b_has_b_s_isolated_core(farm, runs, tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text(TRACE.format(d=DURATION_S))
    run_dir, out = runs / "run", tmp_path / "stdout"
    ovs_before = json.loads(on_b(farm, OVS_AFFINITY))
    assert groups_of_b() == [] and b_lock_free(farm)
    proc = start_isolated(farm, run_dir, trace, out)
    try:
        refuse_second(farm, tmp_path)
        assert proc.wait(timeout=300) == 0, out.read_text()
    finally:
        stop_run(proc, run_dir)
    text = out.read_text()
    print(text[-3000:])
    assert "server b: real inference has CPU" in text
    summary = json.loads((run_dir / "summary.json").read_text())
    b = summary["extra"]["network"]["servers"]["b"]
    assert b["real_inference"] == "isolated" and b["real_inference_cpuset"].endswith("-b-real"), b
    assert summary["extra"]["recorded_queries"] == summary["extra"]["expected_queries"] > 0
    print(f"success {summary['overall']['success']:.3f}")
    assert summary["overall"]["success"] >= 0.95
    assert "put back" in (run_dir / "cores" / "keeper-b.log").read_text()
    check_put_back(farm, run_dir, ovs_before)
    # the monitor read b through its agent: b's host figures, and b's real inference judged with the driver's
    samples = [json.loads(x) for x in (run_dir / "monitor.jsonl").read_text().splitlines()]
    on_b_procs = {n: p for s in samples for n, p in s["procs"].items() if n.endswith("@b)")}
    assert all(s["servers"]["b"]["cpus"] == os.cpu_count() for s in samples[1:]), samples[-1]["servers"]
    real_b = [p for n, p in on_b_procs.items() if p["group"] == "real inference"]
    assert real_b and sum(p["run_ms"] for p in real_b) > 0, sorted(on_b_procs)
    assert {"agent", "keeper"} <= {p["group"] for p in on_b_procs.values()}, sorted(on_b_procs)  # as in cpu.json
    figures = {f["invariant"]: f for f in summary["extra"]["fidelity"]["figures"]}
    print("real inference on b:", figures.get("run-queue delay of real inference"), samples[-1]["servers"]["b"])
    assert "run-queue delay of real inference" in figures


@root_only[0]
@root_only[1]
def test_kill_9_of_the_driver_then_clean_puts_b_s_cores_back(farm, runs, tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text(TRACE.format(d=30))
    run_dir, out = runs / "killed", tmp_path / "stdout"
    ovs_before = json.loads(on_b(farm, OVS_AFFINITY))
    proc = start_isolated(farm, run_dir, trace, out)
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        done = subprocess.run([sys.executable, "run_testbed.py", "clean", "--run-dir", str(run_dir)], cwd=ROOT,
                              capture_output=True, text=True, timeout=180)
        print(done.stdout.strip())
        assert done.returncode == 0, done.stdout + done.stderr
        assert "cgroup" in done.stdout  # b's groups, in the cores' record
        deadline = time.monotonic() + 20
        while farm.leftovers_on("b"):
            assert time.monotonic() < deadline, farm.leftovers_on("b")
            time.sleep(0.1)
        check_put_back(farm, run_dir, ovs_before)
    finally:
        stop_run(proc, run_dir)


@root_only[0]
@root_only[1]
def test_a_server_without_cpuset_pins_its_real_worker_and_says_so(runs, tmp_path):
    """A fixture server as it comes (no cgroup hierarchy under its /sys): its keeper holds its lock and reserves
    nothing; the real worker there is pinned to its last CPU with --cpus, and summary.json says so."""
    with running([ServerSpec("c", hide=(str(runs),))], tmp_path / "farm") as farm:
        trace = tmp_path / "trace.csv"
        trace.write_text(TRACE.format(d=6))
        run_dir = runs / "pinned"
        done = subprocess.run(live(farm, run_dir, trace, "c", 6), cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        c = json.loads((run_dir / "summary.json").read_text())["extra"]["network"]["servers"]["c"]
        print(c)
        assert c["real_inference"] == "pinned" and c["real_inference_cpuset"] is None, c
        assert "no cpuset controller on this host" in c["cores"]
        worker = next(e["name"] for e in entries(run_dir / "created.jsonl") if "--threads" in e["name"])
        assert f"--cpus {c['real_worker_cpu']}" in worker and "--inference-cgroup" not in worker, worker
        assert not any(e["kind"] == "cgroup" and e.get("server") for e in entries(run_dir / "cores" / "created.jsonl"))
        assert farm.inside("c", ["sh", "-c", f"test ! -e {LOCK} || flock -n {LOCK} true"], check=False).returncode == 0
        assert farm.leftovers_on("c") == [] and local_leftovers(run_dir) == []


@root_only[0]
@root_only[1]
def test_a_keeper_gone_mid_run_stops_it_and_says_so_on_a_server_of_profile_driven_workers(farm, runs, tmp_path):
    """Every site on b, every worker profile-driven: b's lock is held all the same (a second run there is refused,
    naming b). Its keeper killed mid-traffic, the run notices, stops early, says why in its log and summary.json
    (verdict not faithful, stopped_early naming b; network.servers.b.cores_lost) and still leaves nothing."""
    trace = tmp_path / "trace.csv"
    trace.write_text(TRACE.format(d=30))
    run_dir, out = runs / "keeper-gone", tmp_path / "stdout"
    with out.open("w") as sink:
        proc = subprocess.Popen(live(farm, run_dir, trace, duration_s=30, real="none"), cwd=ROOT, stdout=sink,
                                stderr=subprocess.STDOUT)
    try:
        wait_started(proc, out)
        assert not b_lock_free(farm)
        refuse_second(farm, tmp_path, real=False)
        keeper = next(e for e in entries(run_dir / "cores" / "created.jsonl") if e["name"].startswith("cores keeper b"))
        farm.inside("b", ["kill", "-9", str(keeper["pid"])])
        proc.wait(timeout=120)
    finally:
        stop_run(proc, run_dir)
    text = out.read_text()
    print(text[-3000:])
    assert "warning: server b: the run's cores keeper exited with -9" in text
    summary = json.loads((run_dir / "summary.json").read_text())
    stop = summary["extra"]["fidelity"]["stopped_early"]
    assert summary["extra"]["fidelity"]["verdict"] == "not faithful" and stop["server"] == "b", stop
    assert 0 < stop["windows_from_s"] < 30 and "lock is free" in stop["why"], stop
    print(f"stopped at {stop['windows_from_s']} s: {summary['extra']['recorded_queries']} of "
          f"{summary['extra']['expected_queries']} queries recorded")
    assert summary["extra"]["recorded_queries"] < summary["extra"]["expected_queries"]
    b = summary["extra"]["network"]["servers"]["b"]
    assert b["real_inference"] is None and b["cores_lost"]["why"] == stop["why"], b
    assert groups_of_b() == [] and b_lock_free(farm)
    assert farm.leftovers_on("b") == [] and local_leftovers(run_dir) == []


KEEPER_DRIVER = """
import sys
from pathlib import Path
from live.cores import LiveRunLock, RunCores
from testbed.placement import read_servers
run, servers, lock = map(Path, sys.argv[1:])
cores = RunCores(run, lock=LiveRunLock(lock), real_inference=False)
cores.__enter__()
cores.hold_on(read_servers(servers)["b"], real=True, pause_s=120)
"""


@root_only[0]
@root_only[1]
def test_a_keeper_and_its_driver_killed_before_ready_then_clean_leave_nothing(farm, runs, tmp_path):
    """A keeper killed (-9) after it made b's groups and borrowed b's ovs-vswitchd's cores but before it said READY,
    its driver killed too: every group it made was in the driver's record before it was made, and `clean` puts all
    back on b (no group, ovs-vswitchd's CPUs as before, b's lock free)."""
    run_dir, srv = runs / "before-ready", tmp_path / "srv"
    write_servers(srv, Placement((("b", farm.record("b")),), ()), {})
    ovs_before = json.loads(on_b(farm, OVS_AFFINITY))
    driver = subprocess.Popen([PY, "-c", KEEPER_DRIVER, str(run_dir), str(srv), str(tmp_path / "lock")], cwd=ROOT)
    record = run_dir / "cores" / "created.jsonl"
    try:
        deadline = time.monotonic() + 60
        while not (groups_of_b() and any(e["name"].endswith("-b-rest") for e in entries(record))
                   and json.loads(on_b(farm, OVS_AFFINITY)) != ovs_before):
            assert driver.poll() is None and time.monotonic() < deadline, groups_of_b()
            time.sleep(0.1)
        recorded = {e["name"] for e in entries(record) if e["kind"] == "cgroup" and e.get("server") == "b"}
        made = groups_of_b()
        assert made and set(made) <= recorded, (made, recorded)
        keeper = next(e for e in entries(record) if e["name"].startswith("cores keeper b"))
        log = farm.inside("b", ["sh", "-c", f"cat {run_dir}/cores/servers/b/keeper-b.log"], check=False).stdout
        assert "READY" not in log, log
        farm.inside("b", ["kill", "-9", str(keeper["pid"])])
    finally:
        driver.kill()
        driver.wait()
    done = subprocess.run([sys.executable, "run_testbed.py", "clean", "--run-dir", str(run_dir)], cwd=ROOT,
                          capture_output=True, text=True, timeout=180)
    print(done.stdout.strip(), done.stderr.strip())
    assert done.returncode == 0 and "cleaned" in done.stdout and "cgroup" in done.stdout, done.stdout + done.stderr
    assert groups_of_b() == [] and b_lock_free(farm)
    after = json.loads(on_b(farm, OVS_AFFINITY))
    assert set(map(tuple, after.values())) == set(map(tuple, ovs_before.values())), (after, ovs_before)
    deadline = time.monotonic() + 20
    while farm.leftovers_on("b"):
        assert time.monotonic() < deadline, farm.leftovers_on("b")
        time.sleep(0.1)


@root_only[0]
@root_only[1]
def test_a_keeper_reserves_b_s_core_when_the_plan_gives_b_a_real_worker_later(farm, tmp_path):
    """As after profiling: a keeper holding only b's lock reserves b's core of real inference when asked again
    with a real worker there (-real and -rest made then, its agent in -rest); this machine's RunCores the same."""
    from live.cores import LiveRunLock, RunCores
    from testbed import cpuset

    with RunCores(tmp_path / "up", log=print, lock=LiveRunLock(tmp_path / "lock"), real_inference=False) as cores:
        first = cores.hold_on(farm.record("b"), real=False)
        assert first.real_group is None and not any(g.endswith(("-b-real", "-b-rest")) for g in groups_of_b())
        second = cores.hold_on(farm.record("b"), real=True)
        assert second.real_group is not None and second.real_group.endswith("-b-real"), second
        assert Path(second.real_group).is_dir() and any(g.endswith("-b-rest") for g in second.run_groups)
        assert int(Path(second.real_group, "cpuset.cpus").read_text()) == second.reserved
        assert not b_lock_free(farm)
    assert groups_of_b() == [] and b_lock_free(farm)
    with RunCores(tmp_path / "here", log=print, lock=LiveRunLock(tmp_path / "lock"), real_inference=False) as here:
        assert here.real_group is None
        here.reserve_real()
        if cpuset.hierarchy() is not None:
            assert here.real_group is not None and here.real_group.is_dir() and here.reserved == max(os.sched_getaffinity(0))
            assert here.pressure_group is not None and here.pressure_group.is_dir()
        made = [e.name for e in here.record.entries() if e.kind == "cgroup"]
    assert made and not any(Path(g).exists() for g in made)
