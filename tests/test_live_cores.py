"""A live run's cores and its fidelity monitor, on tiny.yaml: while a light run goes, its real ONNX worker's
inference threads are in the run's `-real` cpuset on the reserved core alone and the rest of the worker (its
event loop) in `-rest` with its scheduler, ovs-vswitchd's threads are off the reserved core, and a second live
run is refused (exit 2, naming the first); after it, no cgroup of the run is left, ovs-vswitchd's affinity is
as before, and the monitor, which measured the inference threads apart, judged the run faithful (at K = 4). Without a
network, a real worker's inference threads (ONNX Runtime's intra-op threads too) alone are in `-real`, and
nothing is left after teardown, nor after a `kill -9` and `clean`. An overloaded run (1000 queries/s at K = 1)
is judged not faithful, naming the sources' send lag, and stopped early."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from live.procs import pids_named
from scheduler.profiles import write_scaled_profile
from testbed import cpuset
from testbed.record import CreationRecord
from workers.runtime import INFERENCE_THREAD_PREFIX

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]
REPO = Path(__file__).resolve().parents[1]
# A binds to mobilenet@ant1 (profile-driven); B no longer fits there and binds to tiny-yolov2@dc1 (real ONNX)
LIGHT = """stream_id,antenna,start_s,duration_s,app,fps,frame_bytes,max_delay_ms,min_accuracy,task
1,ant1,0.0,20,ar-vr,30,20000,300,0.2,object-detection
2,ant1,0.5,20,video-surveillance,20,20000,400,0.2,object-detection
"""
"""20 s: long enough that the second run, started at t0, reaches the lock while this one holds it."""
OUTSIDE_CORES_MAX = 0.25
"""Cores busy with work that is not the run's above which a light run need not be faithful (another experiment
sharing the machine, in the root cpuset: on the reserved core too)."""
EVIDENCE_SHARE = 0.25
"""Where the monitor cannot pin an overrun on the host (every sample over, or the machine busier), the test times
the model after the run: alone on the reserved core against the run's profile, and beside every other core
spinning against alone; a slowdown over this share in either is the host's evidence (the overrun p95 limit)."""
HEAVY_S = 40.0
HEAVY = "stream_id,antenna,start_s,duration_s,app,fps,frame_bytes,max_delay_ms,min_accuracy,task\n" + "".join(
    f"{i},ant1,{i * 0.05:.2f},{HEAVY_S:g},video-surveillance,50,20000,1000,0.2,object-detection\n" for i in range(1, 21))
"""Twenty streams of 50 frames/s on one antenna: 1000 queries/s, about 5 cores of sending alone at ~5 ms of CPU
per query, on 2 (300/s of small frames on tiny still passes for its send lag here, though not its wires)."""


def _run_argv(trace: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "run_testbed.py"), "run", "--topo", "tiny", "--trace", str(trace),
            "--out", str(out), "--no-measure", "--pcap", "none", *(extra or ("--real-workers", "dc1"))]


def _edge_cgroups() -> list[str]:
    roots = [cpuset.V1_CPUSET, cpuset.V1_UNIFIED, cpuset.CGROUP_ROOT]
    return [str(p) for r in roots if r.is_dir() for p in r.iterdir() if p.name.startswith(cpuset.NAME_PREFIX)]


def _ovs_affinity() -> dict[int, set[int]]:
    """Returns the main thread's CPUs of each ovs-vswitchd (what every one of its threads has outside a run)."""
    return {pid: os.sched_getaffinity(pid) for pid in pids_named("ovs-vswitchd")}


def _spin(cpu: int, seconds: float) -> None:
    os.sched_setaffinity(0, {cpu})
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def _core_evidence(model: str, cpu: int, profiled_ms: float, seconds: float = 6.0) -> tuple[float, float]:
    """Returns (alone / profiled - 1, beside busy cores / alone - 1) of the medians of `model`'s one-frame batches on
    CPU `cpu`, timed as the run's profile times them (live/realprofile.py's idle times): whether the core is
    slower than when the run's profile was timed, and whether work on the other cores slows it (what cores share:
    a hyperthread sibling on the host, caches, memory)."""
    import multiprocessing

    import numpy as np

    from benchmarks.bench_core_steadiness import time_alone
    from live.realprofile import IDLE_MS

    alone = float(np.median(time_alone(model, seconds, IDLE_MS, cpu)[1]))
    spinners = [multiprocessing.get_context("fork").Process(target=_spin, args=(c, seconds + 3.0))
                for c in sorted(os.sched_getaffinity(0) - {cpu})]
    for sp in spinners:
        sp.start()
    try:
        beside = float(np.median(time_alone(model, seconds, IDLE_MS, cpu)[1]))
    finally:
        for sp in spinners:
            sp.join()
    return alone / profiled_ms - 1.0, beside / alone - 1.0


def _pid_of(out: Path, marker: str) -> int:
    return next(e.pid for e in CreationRecord(out).entries() if e.kind == "process" and marker in e.name)


def _inference_threads(pid: int) -> tuple[dict[int, str], set[int]]:
    """Returns the cpuset group of every thread of a worker, and which threads are named as inference threads."""
    groups = cpuset.thread_groups(pid)
    named = {t for t in groups if Path(f"/proc/{pid}/task/{t}/comm").read_text().startswith(INFERENCE_THREAD_PREFIX)}
    return groups, named


def _check_only_inference_is_reserved(pid: int, reserved: int, threads: int) -> None:
    """Checks that exactly a worker's inference threads (`threads` of them) are in `-real`, on the reserved CPU
    alone, and every other thread, its event loop's first, in `-rest`, off it."""
    groups, inference = _inference_threads(pid)
    assert len(inference) == threads, groups
    assert {t for t, g in groups.items() if g.endswith("-real")} == inference, groups
    assert all(g.endswith("-rest") for t, g in groups.items() if t not in inference) and pid not in inference
    affinity = cpuset.thread_affinities(pid)
    assert all(affinity[t] == {reserved} for t in inference)
    assert all(reserved not in cpus for t, cpus in affinity.items() if t not in inference)


def test_the_cores_of_a_run_alone(tmp_path: Path) -> None:
    """Without a network: the orchestrator confined to -rest, a real worker started into -real, a second run's
    lock refused, and everything put back on exit."""
    from live.cores import LiveRunBusy, RunCores
    from live.procs import Proc

    before, home = _ovs_affinity(), cpuset.cgroup_of()
    (tmp_path / "run").mkdir()
    with RunCores(tmp_path / "run", log=lambda _: None) as cores:
        assert cores.reserved == max(os.sched_getaffinity(0)) and cpuset.cgroup_of() == home  # not yet confined
        cores.confine()
        assert cpuset.cgroup_of().endswith("-rest") and cores.reserved not in os.sched_getaffinity(0)
        worker = Proc("worker", None, ["sleep", "30"], tmp_path / "w.log")
        worker.start()
        cpuset.move(worker.popen.pid, cores.real_group)  # type: ignore[union-attr]  # a process left in the group
        assert cpuset.cgroup_of(worker.popen.pid).endswith("-real")  # type: ignore[union-attr]
        assert os.sched_getaffinity(worker.popen.pid) == {cores.reserved}  # type: ignore[union-attr]
        (tmp_path / "second").mkdir()  # as the refused run made it
        with pytest.raises(LiveRunBusy, match=r"another live run is running \(pid \d+, .*/run, since "):
            RunCores(tmp_path / "second").__enter__()
        assert not (tmp_path / "second").exists()  # its own empty folder gone with it
        worker.kill()
    assert cpuset.cgroup_of() == home and _edge_cgroups() == [] and _ovs_affinity() == before
    assert CreationRecord(tmp_path / "run" / "cores").is_torn_down()


def test_a_run_without_real_workers_keeps_every_core(tmp_path: Path) -> None:
    """No real worker: no cpuset, ovs-vswitchd untouched, the orchestrator keeps every CPU; the lock still held."""
    from live.cores import LiveRunBusy, RunCores

    before, cpus = _ovs_affinity(), os.sched_getaffinity(0)
    (tmp_path / "run").mkdir()
    with RunCores(tmp_path / "run", log=lambda _: None, real_inference=False) as cores:
        cores.confine()
        assert cores.reserved is None and cores.real_group is None and cores.inference_group() is None
        assert os.sched_getaffinity(0) == cpus and _ovs_affinity() == before
        assert not any(g.endswith(("-real", "-rest")) for g in _edge_cgroups())
        assert "no core reserved" in cores.describe()
        (tmp_path / "second").mkdir()
        with pytest.raises(LiveRunBusy):
            RunCores(tmp_path / "second", real_inference=False).__enter__()
    assert _edge_cgroups() == [] and CreationRecord(tmp_path / "run" / "cores").is_torn_down()


def test_a_command_of_several_runs_holds_the_lock_between_them(tmp_path: Path) -> None:
    """compare's policies, --tdf auto's pilots, bench_live's rates: no other live run starts between two of them
    (each run takes the command's lock again and leaves it held); a compare started meanwhile is refused in one
    line, exit 2, before it writes anything."""
    from live.cores import LiveRunBusy, LiveRunLock, RunCores, live_command

    other = LiveRunLock()
    with live_command(tmp_path / "cmd"):
        for name in ("first", "second"):
            (tmp_path / name).mkdir()
            with RunCores(tmp_path / name, log=lambda _: None, real_inference=False):
                pass
            with pytest.raises(LiveRunBusy, match=r"another live run is running \(pid \d+, .*/cmd, since "):
                other.acquire(tmp_path / "other")
        refused = subprocess.run([sys.executable, str(REPO / "run_testbed.py"), "compare", "--topo", "tiny",
                                  "--out", str(tmp_path / "cmp")], cwd=REPO, capture_output=True, text=True,
                                 timeout=120)
        assert refused.returncode == 2, refused.stderr
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and "another live run is running" in lines[0], lines
        assert not (tmp_path / "cmp").exists()
        bad = subprocess.run([sys.executable, str(REPO / "run_testbed.py"), "compare", "--topo", "tiny",
                              "--policies", "closest,nearest", "--out", str(tmp_path / "cmp")], cwd=REPO,
                             capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and "unknown policy 'nearest'" in bad.stderr, bad.stderr  # not "busy"
        assert not (tmp_path / "cmp").exists()
        refused = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_live.py"), "--rates", "25",
                                  "--overhead-frames", "0"], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert refused.stderr.startswith("error: another live run is running"), refused.stderr
    other.acquire(tmp_path / "other")  # the command over: the lock is free
    other.release()


ORCHESTRATOR = """
import sys
from pathlib import Path
from live.cores import RunCores
from live.procs import Proc, wait_ready
run = Path(sys.argv[1])
run.mkdir()
with RunCores(run, log=lambda _: None) as cores:
    cores.confine()
    argv = [sys.executable, "-m", "workers.serve", "--model", "tiny-yolov2", "--port", "0", "--threads", "2",
            "--inference-cgroup", cores.inference_group()]
    worker = Proc("worker", None, argv, run / "worker.log")
    worker.start()
    wait_ready([worker])
    print(worker.popen.pid, cores.reserved, worker.url, flush=True)
    sys.stdin.read()
    worker.stop()
"""
"""An orchestrator without a network: the run's cores, and a real worker (two intra-op threads) started in -rest
with its inference in -real; it prints the worker's pid, the reserved CPU and the worker's URL, and stops when
its stdin closes."""


@pytest.mark.parametrize("end", ["teardown", "kill -9 and clean"])
def test_only_a_real_workers_inference_threads_run_on_the_reserved_core(tmp_path: Path, astronaut_jpeg: bytes,
                                                                        end: str) -> None:
    import urllib.request

    before = _ovs_affinity()
    run = tmp_path / "run"
    orchestrator = subprocess.Popen([sys.executable, "-c", ORCHESTRATOR, str(run)], cwd=REPO, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True)
    worker = 0
    try:
        pid, reserved, url = orchestrator.stdout.readline().split()  # type: ignore[union-attr]
        worker = int(pid)
        # the replica's thread and the intra-op thread ONNX Runtime made from it, after the replica's thread moved
        _check_only_inference_is_reserved(worker, int(reserved), threads=2)
        request = urllib.request.Request(f"{url}/v2/models/tiny-yolov2/frames", data=astronaut_jpeg,
                                         headers={"Content-Type": "image/jpeg"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200 and json.load(answer)["detections"]  # inference works from -real
        groups = [Path(e.name) for e in CreationRecord(run / "cores").entries() if e.kind == "cgroup"]
        assert any(g.name.endswith("-real") for g in groups)
        if end == "teardown":
            orchestrator.stdin.close()  # type: ignore[union-attr]
            assert orchestrator.wait(60) == 0
        else:
            orchestrator.kill()
            orchestrator.wait()
            assert all(g.is_dir() for g in groups) and _inference_threads(worker)[1]  # left: the worker still runs
            done = subprocess.run([sys.executable, str(REPO / "run_testbed.py"), "clean", "--run-dir", str(run / "cores")],
                                  cwd=REPO, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stdout + done.stderr
            assert set(cpuset.thread_groups(worker).values()) == {"/"}  # its threads put back in the root cpuset
    finally:
        for p in (orchestrator.pid, worker):
            if p and cpuset.threads(p):
                os.kill(p, 9)
        orchestrator.wait()
    assert _edge_cgroups() == [] and _ovs_affinity() == before
    for pid, cpus in before.items():
        assert all(c == cpus for c in cpuset.thread_affinities(pid).values())
    assert CreationRecord(run / "cores").is_torn_down()


def test_a_run_keeps_real_inference_on_its_own_core_and_is_judged_faithful(tmp_path: Path) -> None:
    (tmp_path / "trace.csv").write_text(LIGHT)
    out = tmp_path / "run"
    from testbed.switches import ensure_ovs

    ensure_ovs()  # the run starts it if it is not running: its affinity before must be a running daemon's
    before = _ovs_affinity()
    assert before and _edge_cgroups() == []
    with (tmp_path / "run.log").open("w") as log:
        # K 4: with one core reserved, everything else of the run shares the other; at K 1 on a slow 2-core host
        # a profile-driven worker's wake-ups on it reach the overshoot limit (p99 2.0 ms, measured), at K 2 half;
        # at K 2 a run of 2026-12-05 still had the scheduler's relay at p99 2.17 virtual ms (limit 2) while the host
        # slowed the machine (real inference p95 0.53 over its profile): K 4, the demonstration's, halves that again
        proc = subprocess.Popen(_run_argv(tmp_path / "trace.csv", out, "--real-workers", "dc1", "--tdf", "4"), cwd=REPO,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not (out / "t0").exists():
            assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.2)
        real = _pid_of(out, "--threads")  # the real worker's command line (profile-driven ones have none)
        sched = _pid_of(out, "live.scheduler")
        reserved = max(os.sched_getaffinity(1))
        _check_only_inference_is_reserved(real, reserved, threads=1)  # one replica of one intra-op thread
        assert cpuset.cgroup_of(sched).endswith("-rest") and reserved not in os.sched_getaffinity(sched)
        for pid in before:
            assert all(reserved not in cpus for cpus in cpuset.thread_affinities(pid).values())
        second = subprocess.run(_run_argv(tmp_path / "trace.csv", tmp_path / "second"), cwd=REPO,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "another live run is running" in lines[0] and str(out) in lines[0], lines
        assert f"pid {proc.pid}" in lines[0]
        assert proc.wait(300) == 0, (tmp_path / "run.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _edge_cgroups() == []
    assert _ovs_affinity() == before
    for pid, cpus in before.items():
        assert all(c == cpus for c in cpuset.thread_affinities(pid).values())
    samples = [json.loads(s) for s in (out / "monitor.jsonl").read_text().splitlines()]
    measured = {name for s in samples for name, p in s["procs"].items() if p["group"] == "real inference"}
    resource = next(w["resource"] for w in json.loads((out / "config.json").read_text())["workers"] if w["real"])
    assert measured == {f"worker {resource} inference ({real})"}, measured  # its inference threads, apart
    fid = json.loads((out / "summary.json").read_text())["extra"]["fidelity"]
    outside = fid["diagnostics"]["outside_cores_mean"]
    if fid["verdict"] != "faithful" and outside > OUTSIDE_CORES_MAX:  # the monitor says why: not this run's doing
        pytest.skip(f"other work kept {outside:.2f} cores of this machine busy during the run, and the monitor judged "
                    f"it not faithful: {[(v['invariant'], v['value']) for v in fid['violations']]}")
    wait = next(f for f in fid["figures"] if f["invariant"] == "run-queue delay of real inference")
    assert wait["value"] <= wait["threshold"], wait  # its inference threads alone on the reserved core
    names = {f["invariant"] for f in fid["figures"]}
    assert {"source send lag", "decision-window lateness", "real-inference overrun",
            "run-queue delay of real inference"} <= names, names
    assert len(samples) >= 10 and all(s["procs"] for s in samples)
    # The run's real profile times batches after idle and charges each frame a fixed input cost as well as one per
    # MB (live/realprofile.py): quiet runs of 2026-12-02 overran it by -0.31 and -0.22 ms on average, p95 +1.4 and
    # +1.1 %; with batches timed back to back and input cost per MB alone, by 4.3 ms, p95 +80 %.
    # On 2026-12-03 this host's core ran inference 30-50 % slower in bursts of 1-3 s, with no wait for the core,
    # nothing stolen and the machine no busier (the verdict's `real_overrun_cause`): 3 of 7 runs had p95 0.33-0.57.
    # On 2026-12-04 here, 2 of 5 had p95 0.42-0.44 with the hypervisor stealing up to 1-8 % of the CPU in them.
    # On 2026-12-06 a CI runner's run overran by 9.3 ms on average, p95 0.92, the cpuset holding (wait within its
    # limit), with no cause named then (every window over, or the other cores busier while it overran).
    # A core slower than when the profile was timed, with the inference not waiting for it, is not the isolation's
    # failing, and no isolation within the machine prevents it: the verdict says so and names the cause. Where it
    # cannot tell the host from the run (every sample over, or the machine busier), the test times the model again.
    cause = fid["diagnostics"].get("real_overrun_cause") or {}
    log = (tmp_path / "run.log").read_text()
    if fid["stopped_early"] is None and cause and not cause["waited"] and {
            v["invariant"] for v in fid["violations"]} == {"real-inference overrun"}:
        why = [x.strip() for x in log.splitlines() if x.strip().startswith(("cause: ", "control: "))]
        assert len(why) == 2, log[-2000:]
        if not (cause["core_slower"] or cause["stolen"]):  # the host's only on the evidence of timing it again
            config = json.loads((out / "config.json").read_text())
            model = next(w["model"] for w in config["workers"] if w["real"])
            timed = next(m for m in config["profiled_real_workers"] if m["model"] == model)["measured_ms"]["1"]
            drift, coupled = _core_evidence(model, reserved, timed)
            assert max(drift, coupled) > EVIDENCE_SHARE, (why[0], f"{model} on CPU {reserved} after the run: alone "
                                                          f"{drift:+.3f} of its profile, {coupled:+.3f} beside busy cores")
            why[0] += f" ({model} after the run: alone {drift:+.3f} of its profile, {coupled:+.3f} beside busy cores)"
        pytest.skip(f"real inference overran its profile without waiting for its core "
                    f"{[(v['statistic'], v['value']) for v in fid['violations']]}: {why[0]}")
    assert fid["verdict"] == "faithful", [(v["invariant"], v["statistic"], v["value"]) for v in fid["violations"]]
    assert "fidelity (K = 4): faithful" in log


def test_an_overloaded_run_is_judged_not_faithful_and_stopped_early(tmp_path: Path) -> None:
    (tmp_path / "trace.csv").write_text(HEAVY)
    out = tmp_path / "run"
    fast = write_scaled_profile(None, 0.02, tmp_path / "fast.yaml")  # capacity for every stream: all 1000/s sent
    done = subprocess.run(_run_argv(tmp_path / "trace.csv", out, "--policy", "closest", "--real-workers", "none",
                                    "--profiles", str(fast)), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    fid = json.loads((out / "summary.json").read_text())["extra"]["fidelity"]
    assert fid["verdict"] == "not faithful"
    assert fid["stopped_early"]["invariant"] == "source send lag"
    lag = [v for v in fid["violations"] if v["invariant"] == "source send lag"]
    assert lag and lag[0]["first_window_s"] is not None and lag[0]["value"] > lag[0]["threshold"]
    events = [json.loads(x)["event"] for x in (out / "events.jsonl").read_text().splitlines()]
    assert "stopped-early" in events
    sent = max(float(r.split(",")[6]) for r in (out / "records.csv").read_text().splitlines()[1:])
    assert sent < HEAVY_S * 1000.0 * 0.8  # stopped well before the trace's end
    assert "NOT FAITHFUL" in done.stdout and "stopped-early: source send lag" in done.stdout
    assert _edge_cgroups() == []
