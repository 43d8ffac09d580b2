"""Mixed workers: real inference allocated per replica (one busy replica per core of real inference), the plan
and command line of a worker with some replicas real and the others profile-driven, a real mixed worker over HTTP
(tiny-yolov2 in ONNX Runtime beside a replica sleeping the profile: which answers which, what it counts and logs),
the fidelity verdict telling its real batches from its profile-driven ones, and, as root, only the real replica's
inference thread in the run's `-real` cpuset."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from worker_profile import write_worker_profile

from live.plan import WorkerPlan, choose_real_site, plan_workers, real_resources, worker_argv
from live.spec import RunSpec
from scheduler.profiles import load_profiles
from scheduler.system import build_system
from topologies import load_topology
from workers.deployment import WorkerSettings, resolve
from workers.lifecycle import ready_address

REPO = Path(__file__).resolve().parents[1]
SSD, TINY = "mobilenet-ssd-cpu-b1@{}", "tiny-yolov2-cpu-b1@{}"
PROFILE_MS = 25.0
"""The profile-driven replica's batch of 1 (the test profile has no input cost): what tells its answers apart."""


@pytest.fixture(scope="module")
def full_edge():
    """full-edge on the committed profile: each antenna has mobilenet-ssd-cpu-b1 (2 replicas) and
    tiny-yolov2-cpu-b1 (1 replica)."""
    system = build_system(load_topology("full-edge"), load_profiles())
    replicas = {r.name: r.replicas for r in system.resources}
    assert replicas[SSD.format("ant1")] == 2 and replicas[TINY.format("ant1")] == 1
    return system


def test_real_inference_is_allocated_per_replica(full_edge) -> None:
    """One busy replica per core: the variant whose replicas the dry run gives the most queries each first."""
    ssd, tiny = SSD.format("ant1"), TINY.format("ant1")

    def real(cores: float, queries: dict[str, int] | None = None) -> dict[str, int]:
        return real_resources(full_edge, ("ant1",), queries, cores)

    assert real(1.0, {ssd: 500, tiny: 100}) == {ssd: 1, tiny: 0}  # 250 a replica > 100: one of the SSD's two
    assert real(1.0, {ssd: 500, tiny: 300}) == {ssd: 0, tiny: 1}  # 250 a replica < 300
    assert real(1.0, {ssd: 500}) == {ssd: 1, tiny: 0}  # closest's demonstration: tiny-yolov2 gets no query
    assert real(2.0, {ssd: 500, tiny: 100}) == {ssd: 2, tiny: 0}
    assert real(2.0, {ssd: 100, tiny: 500}) == {ssd: 1, tiny: 1}  # tiny first, the core left to one SSD replica
    assert real(3.0) == {ssd: 2, tiny: 1}  # no queries: file order, SSD first, and cores for all
    assert real(1.0) == {ssd: 1, tiny: 0}
    assert real(0.5) == {ssd: 0, tiny: 0}


def test_the_real_site_is_where_its_real_replicas_get_the_most_queries(full_edge) -> None:
    """A variant's queries are shared evenly among its replicas: one real SSD replica of two carries half."""
    q = {SSD.format("ant1"): 900, TINY.format("ant1"): 10, SSD.format("ant2"): 100, TINY.format("ant2"): 300}
    assert choose_real_site(full_edge, q, 1.0) == "ant1"  # ant1: 900 / 2 = 450 > ant2: tiny's 300
    assert choose_real_site(full_edge, {**q, TINY.format("ant2"): 460}, 1.0) == "ant2"  # 460 > 450
    assert choose_real_site(full_edge, q, 2.0) == "ant1"  # 900 > ant2: 300 + 100 / 2
    assert choose_real_site(full_edge, {SSD.format("ant3"): 5}, 1.0) == "ant3"
    assert choose_real_site(full_edge, {"tiny-yolov2-gpu-b8@cloud": 50}, 1.0) is None


def test_a_mixed_worker_is_planned_and_started_with_its_real_replicas(full_edge) -> None:
    ssd, tiny = SSD.format("ant1"), TINY.format("ant1")
    plans = {p.resource: p for p in plan_workers(full_edge, ("ant1",), RunSpec(), {ssd: 500}, 1.0)}
    assert (plans[ssd].real, plans[ssd].real_replicas, plans[ssd].replicas) == (True, 1, 2)
    assert (plans[tiny].real, plans[tiny].real_replicas) == (False, 0)
    assert plans[ssd].note == "one real replica per core of real inference"
    assert plans[tiny].note == "1 replica(s) need 1 core(s); real inference has 1, 1 taken"
    assert sum(p.real_replicas for p in plans.values()) == 1
    argv = worker_argv(plans[ssd], "10.0.0.1", "/run/profiles.yaml", RunSpec(), inference_cgroup="/cg/x-real",
                       real_batch_log=Path("/run/logs/b.jsonl"))
    options = dict(zip(argv[3::2], argv[4::2], strict=False))
    assert options["--instances"] == "2" and options["--real-instances"] == "1" and options["--threads"] == "1"
    assert options["--profile-driven"] == "/run/profiles.yaml" and options["--inference-cgroup"] == "/cg/x-real"
    assert options["--real-batch-log"] == "/run/logs/b.jsonl"
    whole = worker_argv(plan_workers(full_edge, ("ant1",), RunSpec(), {ssd: 500}, 2.0)[0], "10.0.0.1", "/p.yaml",
                        RunSpec())
    assert whole[whole.index("--model") + 1] == "mobilenet-ssd" and "--profile-driven" not in whole
    assert "--real-instances" not in whole and "--real-batch-log" not in whole
    profile_only = worker_argv(plans[tiny], "10.0.0.1", "/p.yaml", RunSpec())
    assert "--real-instances" not in profile_only and "--threads" not in profile_only
    with pytest.raises(ValueError, match="real True with 0 of 2"):
        WorkerPlan("r", "s", "m", "cpu", 1, 2, True, 8000, 32)


def test_a_mixed_deployment_needs_the_profile_and_a_count_it_has(tmp_path: Path) -> None:
    profile = write_worker_profile(tmp_path / "p.yaml", "tiny-yolov2", {1: PROFILE_MS})
    dep = resolve(WorkerSettings("tiny-yolov2", instances=3, real_instances=1, profile_driven=profile))
    assert (dep.mode, dep.real_instances, dep.describe()["real_instances"]) == ("mixed", 1, 1)
    assert resolve(WorkerSettings("tiny-yolov2", instances=2)).mode == "onnxruntime"
    assert resolve(WorkerSettings("tiny-yolov2", instances=2, profile_driven=profile)).mode == "profile-driven"
    with pytest.raises(ValueError, match="--real-instances 3: expected 0 to 2"):
        resolve(WorkerSettings("tiny-yolov2", instances=2, real_instances=3, profile_driven=profile))
    with pytest.raises(ValueError, match="--real-instances 1 of 2 replicas: the others sleep a profile"):
        resolve(WorkerSettings("tiny-yolov2", instances=2, real_instances=1))
    with pytest.raises(ValueError, match="a profile-driven worker runs no inference"):
        resolve(WorkerSettings("tiny-yolov2", profile_driven=profile, inference_cgroup=tmp_path))


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


def _frame(url: str, jpeg: bytes, query: int) -> dict:
    request = urllib.request.Request(f"{url}/v2/models/tiny-yolov2/frames?stream=s1&query={query}", data=jpeg,
                                     headers={"Content-Type": "image/jpeg"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.load(r)


def _start_worker(argv: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    """Starts `python -m workers.serve ...` logging to `log`; returns it and its URL once it printed READY."""
    with log.open("w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "workers.serve", *argv], cwd=REPO, stdout=f,
                                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for _ in range(600):
        url = next((a for a in map(ready_address, log.read_text().splitlines()) if a), None)
        if url:
            return proc, url
        assert proc.poll() is None, log.read_text()
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"worker not ready: {log.read_text()}")


def test_a_mixed_worker_answers_from_both_kinds_and_counts_the_real_ones(tmp_path: Path, astronaut_jpeg: bytes) -> None:
    """tiny-yolov2, 2 replicas, 1 real: the real replica is first, and the batcher hands each batch to the replica
    free the longest, so one query at a time alternates real, profile-driven, real, ... The real one finds the
    astronaut's face in a measured time; the other answers no detection after exactly the profile's 25 ms."""
    profile = write_worker_profile(tmp_path / "p.yaml", "tiny-yolov2", {1: PROFILE_MS})
    batches = tmp_path / "real-batches.jsonl"
    proc, url = _start_worker(["--model", "tiny-yolov2", "--port", "0", "--instances", "2", "--batch", "1",
                               "--threads", "1", "--profile-driven", str(profile), "--real-instances", "1",
                               "--real-batch-log", str(batches)], tmp_path / "worker.log")
    try:
        meta = _get(f"{url}/v2/models/tiny-yolov2")["deployment"]
        assert (meta["mode"], meta["instances"], meta["real_instances"]) == ("mixed", 2, 1)
        answers = [_frame(url, astronaut_jpeg, i) for i in range(6)]
        real = [a["compute_ms"] != PROFILE_MS for a in answers]
        assert real == [True, False] * 3
        for a, is_real in zip(answers, real, strict=True):
            if is_real:
                assert [d["label"] for d in a["detections"]] == ["face"] and a["input_ms"] > 0
            else:
                assert a["detections"] == [] and a["t_infer_end_ms"] - a["t_infer_start_ms"] >= PROFILE_MS - 0.5
        report = _get(f"{url}/v2/load")
        assert report["real_instances"] == 1 and report["instances"] == 2
        t = report["totals"]
        assert (t["served"], t["served_real"], t["batches"], t["batches_real"]) == (6, 3, 6, 3)
        with urllib.request.urlopen(f"{url}/metrics", timeout=30) as r:
            page = r.read().decode()
        assert "worker_real_success_total{" in page and any(
            line.startswith("worker_real_success_total{") and line.endswith(" 3") for line in page.splitlines())
        logged = [json.loads(line) for line in batches.read_text().splitlines()]
        assert [(b["size"], b["served"], b["frames_bytes"]) for b in logged] == [(1, 1, len(astronaut_jpeg))] * 3
        assert [b["start_ms"] for b in logged] == [round(a["t_infer_start_ms"], 3)
                                                   for a, r in zip(answers, real, strict=True) if r]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    log = (tmp_path / "worker.log").read_text()
    assert "tiny-yolov2-cpu-b1: 2 replica(s), 1 real (ONNX Runtime, first in the batcher's order), 1 profile-driven" in log
    assert "tiny-yolov2-cpu-b1: served 6 queries, 3 by real replicas, in 6 batches (3 real)" in log


def test_the_verdict_judges_a_mixed_workers_real_batches_apart(tmp_path: Path) -> None:
    """Records of a mixed worker's four batches, two of which its real replica logged: those two are real
    inference (overrun against the profile), the other two profile-driven (overshoot)."""
    from live.batches import batch_overruns, real_starts

    profile = write_worker_profile(tmp_path / "p.yaml", "tiny-yolov2", {1: PROFILE_MS})
    worker = {"resource": "tiny-yolov2-cpu-b1@ant1", "model": "tiny-yolov2", "device": "cpu", "replicas": 2,
              "real": True, "real_replicas": 1}
    config = {"workers": [worker], "profiles_file": str(profile)}
    t0_s = 1_700_000_000.5
    (tmp_path / "t0").write_text(f"{t0_s:.6f}\n")
    (tmp_path / "workers.json").write_text(json.dumps({worker["resource"]: {"clock_offset_ms": 2.0}}))
    log = tmp_path / "logs" / f"worker-{worker['resource']}.real-batches.jsonl"
    log.parent.mkdir()
    # started at run ms 100 and 300, as the worker's virtual epoch ms (the schedulers subtract t0 and the offset)
    log.write_text("".join(json.dumps({"start_ms": round(t0_s * 1000 + 2.0 + t, 3), "end_ms": 0.0, "size": 1,
                                       "served": 1, "frames_bytes": 20000}) + "\n" for t in (100.0, 300.0)))
    starts = real_starts(tmp_path, config)
    assert list(starts) == [worker["resource"]] and starts[worker["resource"]].tolist() == [100.0, 300.0]
    start = np.array([100.0, 200.0, 300.0, 400.0])
    took = np.array([30.0, 25.1, 40.0, 25.3])
    records = {"variant": np.array(["tiny-yolov2-cpu-b1"] * 4, dtype=object), "cluster": np.array(["ant1"] * 4, dtype=object),
               "t_infer_start_ms": start, "t_infer_end_ms": start + took, "batch_size": np.ones(4, dtype=np.int64),
               "stream_id": np.ones(4, dtype=np.int64)}
    t, over, planned = batch_overruns(records, config, {1: 20000.0}, real=True, real_starts=starts)
    assert t.tolist() == [100.0, 300.0] and over == pytest.approx([5.0, 15.0]) and planned.tolist() == [25.0, 25.0]
    t, over, _ = batch_overruns(records, config, {1: 20000.0}, real=False, real_starts=starts)
    assert t.tolist() == [200.0, 400.0] and over == pytest.approx([0.1, 0.3])
    # without its log (a worker on another server) a mixed worker is judged in neither
    assert batch_overruns(records, config, {1: 20000.0}, real=True)[0].size == 0
    assert batch_overruns(records, config, {1: 20000.0}, real=False)[0].size == 0


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_only_the_real_replicas_inference_thread_is_on_the_reserved_core(tmp_path: Path, astronaut_jpeg: bytes) -> None:
    """A mixed worker (2 replicas, 1 real) started in the run's cores: its one real replica's thread (one intra-op
    thread) is in `-real`; the profile-driven replica, which sleeps on the event loop, stays in `-rest`."""
    from test_live_cores import _edge_cgroups, _inference_threads

    from live.cores import RunCores

    profile = write_worker_profile(tmp_path / "p.yaml", "tiny-yolov2", {1: PROFILE_MS})
    run = tmp_path / "run"
    run.mkdir()
    with RunCores(run, log=lambda _: None) as cores:
        group = cores.inference_group()
        if group is None:
            pytest.skip("no cpuset of real inference on this machine (one core, or no cpuset controller)")
        proc, url = _start_worker(["--model", "tiny-yolov2", "--port", "0", "--instances", "2", "--batch", "1",
                                   "--threads", "1", "--profile-driven", str(profile), "--real-instances", "1",
                                   "--inference-cgroup", group], tmp_path / "worker.log")
        try:
            groups, inference = _inference_threads(proc.pid)
            assert len(inference) == 1 and {t for t, g in groups.items() if g.endswith("-real")} == inference, groups
            assert proc.pid not in inference and not groups[proc.pid].endswith("-real")  # the event loop stays out
            answers = [_frame(url, astronaut_jpeg, i) for i in range(2)]
            assert answers[0]["detections"] and answers[1]["detections"] == []  # real from -real, then profile
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
    assert _edge_cgroups() == []
