"""Parts of the live run that need no network: JPEG sizing, the worker plan and the real site, capture hosts,
the real workers' timing, the run spec, the run dir and the run options."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from aset_agents import constant_agent
from PIL import Image

from live.frames import JpegSizer, corrupt, pad_jpeg
from live.plan import busiest_cpu_cluster, choose_real_site, plan_workers, smallest_cluster
from live.spec import RunSpec
from scheduler.core import policy_index
from scheduler.profiles import PROVISIONAL_PROFILE, load_profiles
from scheduler.system import build_system
from testbed.capture import choose_hosts
from testbed.plan import build_plan
from topologies import load_topology
from topologies.events import load_events

LI = policy_index("least-impedance")


@pytest.mark.parametrize("nbytes", [20_000, 33_333, 65_539, 65_540, 65_541, 80_000, 200_001])
def test_frames_are_valid_jpegs_of_the_exact_size(nbytes: int) -> None:
    sizer = JpegSizer()
    frame = sizer.frame(nbytes)
    assert len(frame) == nbytes
    img = Image.open(io.BytesIO(frame))
    img.load()
    assert img.format == "JPEG" and min(img.size) >= 160
    assert frame.rstrip(b"\x00").endswith(b"\xff\xd9")
    assert not corrupt(frame).endswith(b"\xff\xd9")


def test_padding_keeps_the_image_and_never_shrinks() -> None:
    sizer = JpegSizer()
    base = sizer.frame(sizer.min_bytes)
    padded = pad_jpeg(base, len(base) + 1000)
    a, b = (np.asarray(Image.open(io.BytesIO(x)).convert("RGB")) for x in (base, padded))
    assert len(padded) == len(base) + 1000 and np.array_equal(a, b)
    assert pad_jpeg(base, 10) == base


def test_worker_plan_real_only_on_cpu_variants_of_chosen_sites(tiny_system) -> None:
    topo, profiles, system = tiny_system
    assert smallest_cluster(topo, profiles, system) == "ant1"
    plans = plan_workers(system, ("dc1",), RunSpec())
    real = {p.resource for p in plans if p.real}
    assert real == {"tiny-yolov2-cpu-b4@dc1"}
    dc1 = next(p for p in plans if p.site == "dc1")
    assert dc1.queue_limit == 16 * 4 * 1 and dc1.batch == 4
    with pytest.raises(ValueError, match="'mars' is not a cluster"):
        plan_workers(system, ("mars",), RunSpec())
    full = build_system(load_topology("full-edge"), profiles)
    gpu_real = [
        p for p in plan_workers(full, ("cloud",), RunSpec()) if p.device == "gpu" and p.site == "cloud"
    ]
    assert (
        gpu_real and not any(p.real for p in gpu_real) and all("profile-driven" in p.note for p in gpu_real)
    )


def test_real_workers_take_only_the_cores_real_inference_has(tiny_system) -> None:
    """full-edge's ant1: tiny-yolov2-cpu-b1 (1 replica) and mobilenet-ssd-cpu-b1 (2 replicas); a real
    replica runs one thread, one core (tests/test_live_mixed.py: the allocation per replica)."""
    _, profiles, _ = tiny_system
    full = build_system(load_topology("full-edge"), profiles)
    ssd, tiny = "mobilenet-ssd-cpu-b1@ant1", "tiny-yolov2-cpu-b1@ant1"

    def real(cores: float, queries: dict[str, int] | None = None) -> dict[str, int]:
        return {p.resource: p.real_replicas for p in plan_workers(full, ("ant1",), RunSpec(), queries, cores) if p.real}

    assert real(1.0, {ssd: 500, tiny: 100}) == {ssd: 1}  # one of the SSD's two replicas: a mixed worker
    assert real(2.0, {ssd: 500, tiny: 100}) == {ssd: 2}  # the busier per replica first
    assert real(2.0, {ssd: 100, tiny: 500}) == {tiny: 1, ssd: 1}
    assert real(3.0) == {ssd: 2, tiny: 1}
    assert real(0.5) == {}
    note = next(p.note for p in plan_workers(full, ("ant1",), RunSpec(), None, 1.0) if p.resource == tiny)
    assert note == "1 replica(s) need 1 core(s); real inference has 1, 1 taken"


def test_default_real_site_is_where_the_policy_sends_cpu_work() -> None:
    system = build_system(load_topology("full-edge"), load_profiles("provisional"))  # worked out on these figures
    trace, duration_s = RunSpec(lambda_per_min="3", duration_s=60.0).workload().build(system.antennas)
    site, per_resource = busiest_cpu_cluster(system, trace, "closest", duration_s, 1, 1.0)
    assert site is not None and system.topology.site(site).layer == "antenna"

    # closest gives its CPU queries to the antennas' SSDs (two replicas): one of them is real at the antenna
    # whose SSD gets the most
    ssds = {r.name: per_resource.get(r.name, 0) for r in system.resources if r.name.startswith("mobilenet-ssd-cpu-")
            and r.site in system.antennas}
    assert site == max(ssds, key=lambda name: ssds[name]).split("@")[1] and ssds[f"mobilenet-ssd-cpu-b1@{site}"] > 0
    # with the provisional profiles least-impedance prefers the GPU variants of CO and DC: no CPU work
    assert busiest_cpu_cluster(system, trace, "least-impedance", duration_s, 1, 1.0)[0] is None


def test_the_real_site_is_where_real_inference_would_carry_the_most_queries() -> None:
    system = build_system(load_topology("full-edge"), load_profiles())
    ssd, tiny = "mobilenet-ssd-cpu-b1@{}", "tiny-yolov2-cpu-b1@{}"
    queries = {ssd.format("ant1"): 900, tiny.format("ant1"): 10, ssd.format("ant2"): 100, tiny.format("ant2"): 300}
    assert choose_real_site(system, queries, 1.0) == "ant1"  # one SSD replica of two: 450 > tiny-yolov2's 300
    assert choose_real_site(system, {**queries, ssd.format("ant1"): 500}, 1.0) == "ant2"  # 250 < 300
    assert choose_real_site(system, queries, 2.0) == "ant1"  # the SSD's two replicas: 900 > 300 + 50
    assert choose_real_site(system, {ssd.format("ant3"): 5}, 1.0) == "ant3"
    assert choose_real_site(system, {"tiny-yolov2-gpu-b8@cloud": 50}, 1.0) is None


def test_pcap_host_selection() -> None:
    hosts = build_plan(load_topology("tiny"), "x").hosts
    assert choose_hosts(hosts, "default") == ["worker-ant1", "sources-ant1", "worker-dc1", "worker-cloud"]
    assert choose_hosts(hosts, "none") == [] and len(choose_hosts(hosts, "all")) == 5
    assert choose_hosts(hosts, "scheduler-ant1, worker-dc1") == ["scheduler-ant1", "worker-dc1"]
    with pytest.raises(ValueError, match="--pcap: unknown host 'worker-mars'"):
        choose_hosts(hosts, "worker-mars")


def test_a_bad_mtu_is_refused_before_anything(tmp_path) -> None:
    from live.orchestrate import LiveRun

    with pytest.raises(ValueError, match="mtu 9 is not an integer from 68 to 65535"):
        LiveRun(RunSpec(topo="tiny", mtu=9, real_sites=(), out=tmp_path / "run"), log=lambda _: None)
    assert not (tmp_path / "run").exists()


def test_the_real_workers_models_are_timed_here_and_the_run_decides_with_those_figures(tmp_path) -> None:
    """Real ONNX at dc1 (tiny-yolov2-cpu-b4): its CPU entry in the run's profile is what this host
    measured; every other entry, the profile's capacity_frame_kb and load_accounting and the resources stay as
    given; config.json records both figures."""
    import json

    import yaml

    from live.orchestrate import LiveRun
    from scheduler.profiles import read_profile
    from workers import zoo

    given = tmp_path / "given.yaml"
    given.write_text(yaml.safe_dump({**yaml.safe_load(PROVISIONAL_PROFILE.read_text()), "capacity_frame_kb": 60,
                                     "load_accounting": "input-time"}, sort_keys=False))
    zoo.build(names=["tiny-yolov2"], log=lambda _: None)  # cached: a no-op once setup built the zoo
    run = LiveRun(RunSpec(topo="tiny", profiles=given, real_sites=("dc1",), pcap="none",
                             out=tmp_path / "run"), log=lambda _: None)
    resources = [r.name for r in run.system.resources]
    run.profile_real_workers()
    run.write_inputs()
    assert run.profiles.source == str(tmp_path / "run" / "profiles.yaml")
    assert sorted(r.name for r in run.system.resources) == sorted(resources)  # tiny's deployments are fixed
    assert [p.resource for p in run.workers_plan] == [r.name for r in run.system.resources]
    (timed,) = run.profiled
    # tiny's dc1 runs batch 4; the provisional entry also has 2 and 8, timed too so no variant is lost
    assert timed.model == "tiny-yolov2" and sorted(timed.measured_ms) == [1, 2, 4, 8]
    nominal, merged = read_profile(given), read_profile(tmp_path / "run" / "profiles.yaml")
    assert merged.capacity_frame_kb == 60 and run.profiles.capacity_frame_kb == 60
    assert merged.load_accounting == run.profiles.load_accounting == "input-time"
    entry = merged.runtime("tiny-yolov2", "cpu")
    assert entry.batch_latency_ms == timed.measured_ms and entry.threads == 1
    assert 0 < entry.batch_latency_ms[1] <= entry.batch_latency_ms[4] and "measured on CPU" in entry.source
    assert entry.cpu_cores == nominal.runtime("tiny-yolov2", "cpu").cpu_cores
    assert [rt for rt in merged.runtimes if (rt.model, rt.device) != ("tiny-yolov2", "cpu")] == [
        rt for rt in nominal.runtimes if (rt.model, rt.device) != ("tiny-yolov2", "cpu")]
    variant = next(r.variant for r in run.system.resources if r.name == "tiny-yolov2-cpu-b4@dc1")
    assert variant.batch_ms[4] == pytest.approx(timed.measured_ms[4] + 4 * entry.input_ms_per_frame,
                                                abs=1e-3)  # the schedulers' figure, with the frames' fixed input cost
    assert variant.capacity_input_ms == pytest.approx(entry.input_ms_per_mb * 0.06) and variant.capacity_input_ms > 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["profiles_file"] == run.profiles.source
    assert config["profiled_real_workers"][0]["profile_ms"]["4"] == nominal.runtime("tiny-yolov2", "cpu").batch_latency_ms[4]


def test_the_given_profile_is_kept_when_asked_or_with_an_agent(tiny_system, tmp_path) -> None:
    from live.orchestrate import LiveRun

    _, _, system = tiny_system
    agent = constant_agent(tmp_path / "agent.onnx", system, "closest")
    for i, config in enumerate((
        RunSpec(topo="tiny", profiles=PROVISIONAL_PROFILE, real_sites=("dc1",), profile_real_workers=False),
        RunSpec(topo="tiny", profiles=PROVISIONAL_PROFILE, real_sites=("dc1",), agent=agent),
    )):
        logged: list[str] = []
        run = LiveRun(replace(config, out=tmp_path / f"run{i}"), log=logged.append)
        run.profile_real_workers()
        assert run.profiles.source == str(PROVISIONAL_PROFILE) and run.profiled == []
        assert not (tmp_path / f"run{i}" / "profiles.yaml").exists()
        assert (config.agent is None) or any("agent's state is defined by" in line for line in logged)


def test_a_model_that_cannot_be_timed_is_named(tmp_path, monkeypatch) -> None:
    from live import realprofile

    def broken(*_args, **_kwargs):
        raise OSError("models/tiny-yolov2/model.onnx: no such file")

    monkeypatch.setattr(realprofile, "profile_runtime", broken)
    with pytest.raises(RuntimeError, match="timing tiny-yolov2 for its real worker failed: .*no such file"):
        realprofile.measure_real_models(PROVISIONAL_PROFILE, {"tiny-yolov2": (1,)}, tmp_path / "p.yaml")
    assert not (tmp_path / "p.yaml").exists()
    with pytest.raises(KeyError, match="no runtime profile for model 'nope'"):
        realprofile.measure_real_models(PROVISIONAL_PROFILE, {"nope": (1,)}, tmp_path / "p.yaml")


def test_the_run_spec_is_the_command_line() -> None:
    """Every RunSpec option comes from its field (help: its docstring); the workload's from workload.args."""
    import argparse
    import dataclasses

    from live.options import field_docs, options
    from live.spec import (
        DEMO_CONTROLLER,
        DEMO_EVENTS,
        DEMO_SWITCH,
        DEMO_TDF,
        add_run_arguments,
        spec_from_args,
    )

    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    assert spec_from_args(parser.parse_args([])) == dataclasses.replace(
        RunSpec(), events=DEMO_EVENTS, tdf=DEMO_TDF, switch=DEMO_SWITCH, controller=DEMO_CONTROLLER)
    spec = spec_from_args(parser.parse_args([
        "--topo", "tiny", "--policy", "load-balancing", "--real-workers", "none", "--kill-worker", "w@dc1=3",
        "--kill-worker", "v@dc1=4.5", "--no-measure", "--window", "2", "--lambda", "0:20,10:60", "--timeout", "7",
        "--no-profile-real-workers", "--load-poll", "1"]))
    assert spec == dataclasses.replace(
        RunSpec(), topo="tiny", policy="load-balancing", real_sites=(), kill_worker=(("w@dc1", 3.0), ("v@dc1", 4.5)),
        measure_links=False, window_s=2.0, lambda_per_min="0:20,10:60", timeout_s=7.0, profile_real_workers=False,
        load_poll_s=1.0)
    assert spec_from_args(parser.parse_args(["--real-workers", "ant1, dc1"])).real_sites == ("ant1", "dc1")
    assert spec_from_args(parser.parse_args(["--trace", "t.csv"])).duration_s is None  # the whole trace
    docs = field_docs(RunSpec)
    assert all(docs.get(f.name) for f, o in options(RunSpec) if not o.external)
    assert "seconds between each scheduler's polls" in parser.format_help()
    for bad, message in ((["--policy", "fastest"], "unknown policy 'fastest'"), (["--lambda", "lots"], "lambda 'lots'"),
                         (["--policy", "aset"], "--policy aset needs --agent")):
        with pytest.raises(ValueError, match=message):
            spec_from_args(parser.parse_args(bad))


def test_agent_is_the_file_or_the_folder_train_writes(tmp_path) -> None:
    import argparse

    from live.spec import add_run_arguments, spec_from_args
    from training.evaluate import AgentFile

    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    out = tmp_path / "full-edge"  # as `train --out agents/full-edge` leaves it
    out.mkdir()
    (out / "agent.onnx").write_bytes(b"onnx")
    for given in (out, out / "agent.onnx", out / "agent.pt"):
        spec = spec_from_args(parser.parse_args(["--agent", str(given)]))
        assert spec.agent == out / "agent.onnx" and spec.effective_policy == "aset"
        assert AgentFile.read(str(given)).path == str(spec.agent)  # one resolver: what `evaluate --agent` takes
    with pytest.raises(ValueError, match=r"--agent .*empty: no ONNX agent there"):
        spec_from_args(parser.parse_args(["--agent", str(tmp_path / "empty")]))


def test_a_child_reads_the_spec_and_refuses_a_malformed_one_in_one_line(tmp_path) -> None:
    import subprocess
    import sys

    from live.spec import SpecError, read_spec, write_spec

    spec = RunSpec(topo="tiny", agent=tmp_path / "a.onnx", kill_worker=(("w@dc1", 3.0),), real_sites=("dc1",))
    write_spec(spec, tmp_path / "spec.json")
    assert read_spec(tmp_path / "spec.json") == spec
    text = (tmp_path / "spec.json").read_text()
    headroom = '"capacity_headroom": 1.0'
    for broken, message in ((text.replace(headroom, '"capacity_headroom": "fast"'),
                             r"spec.json: capacity_headroom: 'fast' is not a number"),
                            (text.replace(headroom, headroom + ', "speed": 2'), r"spec.json: speed: unknown key"),
                            (text.replace('"mtu": 9000', '"mtu": "9000"'), r"spec.json: mtu: '9000' is not a whole number"),
                            (text[:20], r"spec.json: \(top level\): invalid JSON: EOF while parsing")):
        (tmp_path / "spec.json").write_text(broken)
        with pytest.raises(SpecError, match=message):
            read_spec(tmp_path / "spec.json")
        for module in ("live.scheduler", "live.source"):
            r = subprocess.run([sys.executable, "-m", module, "--spec", str(tmp_path / "spec.json"), "--antenna", "ant1"],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
            assert str(tmp_path / "spec.json") in r.stderr


def test_the_run_dir_says_where_every_child_finds_its_files(tmp_path) -> None:
    import json

    from live.rundir import RunDir

    run = RunDir(tmp_path)
    assert run.windows_log("ant1") == tmp_path / "windows" / "ant1.csv"
    assert run.scheduler_stats("ant1", 2) == tmp_path / "schedulers" / "ant1.2.json"
    assert run.log("scheduler", "ant1", 1) == tmp_path / "logs" / "scheduler-ant1.1.log"
    with pytest.raises(ValueError, match="network.json: no address for host scheduler-ant1"):
        run.host_address("scheduler", "ant1")
    run.network.write_text(json.dumps({"hosts": [{"name": "scheduler-ant1", "ip": "10.0.0.3"}]}))
    assert run.scheduler_url("ant1") == "http://10.0.0.3:7000"
    with pytest.raises(ValueError, match="no host sources-ant9"):
        run.host_address("sources", "ant9")


def test_run_options_help_says_what_each_flag_does() -> None:
    import argparse

    from live.spec import add_run_arguments

    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    actions = {a.dest: a for a in parser._actions}
    assert actions["measure_links"].help.startswith("skip measuring the links")  # the flag turns it off
    assert actions["profile_real_workers"].help.startswith("decide with --profiles as given")
    assert {actions[d].metavar for d in ("timeout_s", "window_s", "load_poll_s")} == {"SECONDS"}
    assert all(") (" not in (a.help or "") for a in parser._actions), "a help with two parentheses in a row"


def test_the_dry_run_that_picks_the_real_site_replays_the_network_events() -> None:
    topo = load_topology("full-edge")
    system = build_system(topo, load_profiles())
    trace, duration_s = RunSpec(lambda_per_min="6", duration_s=45.0).workload().build(system.antennas)
    events = load_events(Path(__file__).resolve().parents[1] / "examples" / "demo-full-edge.yaml", topo)
    _, calm = busiest_cpu_cluster(system, trace, "closest", duration_s, 1, 1.0)
    _, stormy = busiest_cpu_cluster(system, trace, "closest", duration_s, 1, 1.0, events=events)
    # ant4's radio slows to 40 ms at 15 s: from then on its streams reach their own antenna too late
    at_ant4 = {name: n for name, n in calm.items() if name.endswith("@ant4")}
    assert at_ant4 and sum(stormy.get(name, 0) for name in at_ant4) < sum(at_ant4.values())
