"""The committed default profile: measured (provenance inside), like for like with what the topologies
deploy (every variant of every shipped topology, the published architectures, a replica's threads), never
written by `run_testbed.py profile`; which file a command reads when given a path, a name or nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler import profiles as sp
from scheduler.placement import placement_for
from scheduler.profiles import (
    DEFAULT_PROFILE,
    LOCAL_PROFILE,
    PROVISIONAL_PROFILE,
    load_profiles,
    read_profile,
    resolve_profile_path,
)
from scheduler.system import build_system
from topologies.loader import load_topology
from workers.profiler import COMMITTED, DEFAULT_OUT, REPLICA_THREADS, SHIPPED_GPU, ProfileRequest, run_profile
from workers.zoo import PROFILE_MODELS

TOPOLOGIES = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "topologies").glob("*.yaml"))


def test_the_default_is_the_committed_measured_file() -> None:
    assert sp.default_profile_path() == DEFAULT_PROFILE == sp.PROFILE_DIR / "default.yaml"
    assert load_profiles().source == str(DEFAULT_PROFILE)
    assert DEFAULT_PROFILE in COMMITTED and PROVISIONAL_PROFILE in COMMITTED


@pytest.mark.parametrize("topo", TOPOLOGIES)
def test_the_default_places_every_shipped_topology(topo: str) -> None:
    profiles = load_profiles()
    topology = load_topology(topo)
    deployments = placement_for(topology, profiles)
    assert deployments and all(d.variant in profiles.variants for d in deployments)
    system = build_system(topology, profiles)
    assert system.n_resources == sum(1 for _ in deployments)
    computing = {s.name for s in topology.clusters}
    assert {d.site for d in deployments} == computing  # every site with compute offers some model


def test_the_default_is_measured_like_for_like_with_provenance() -> None:
    pf = read_profile(DEFAULT_PROFILE)
    for needle in ("CPU entries measured", "run_testbed.py profile", "cores", "onnxruntime", "torch", "commit",
                   "GPU entries from gpu-h100.yaml", "H100"):
        assert needle in pf.origin, needle
    assert set(pf.models) == set(PROFILE_MODELS)
    assert pf.models["mobilenet-ssd"].input_size == (300, 300)  # SSD300 as published, not the 512x512 face detector
    for model, zoo_model in PROFILE_MODELS.items():
        cpu, gpu = pf.runtime(model, "cpu"), pf.runtime(model, "gpu")
        assert cpu.source.startswith(f"measured: zoo model {zoo_model} (")
        assert "host was busy" not in cpu.source, f"{model}: timed on a busy host"
        assert cpu.threads == REPLICA_THREADS[model] and cpu.cpu_cores == cpu.threads
        assert gpu.source.startswith("measured: PyTorch") and SHIPPED_GPU.name in gpu.source
        assert gpu.input_ms_per_mb == cpu.input_ms_per_mb > 0  # JPEG preparation is a CPU cost
        for rt in (cpu, gpu):
            assert set(rt.batch_latency_ms) == {1, 2, 4, 8}
            assert set(rt.batch_latency_spread_ms) == set(rt.batch_latency_p99_ms) == {1, 2, 4, 8}
            assert rt.memory_mib > 0


def test_the_default_uses_the_papers_accounting_with_the_workloads_mean_frame_as_unit() -> None:
    """`load_accounting: input-time` (eta per stream) with the nominal frame the mean frame per query of the
    application mix (each class's queries, share x mean fps x mean lifetime, weighting its mean frame size), as its header says."""
    from workload.apps import APPS, MIN_DURATION_S

    pf = read_profile(DEFAULT_PROFILE)
    assert pf.load_accounting == sp.INPUT_TIME
    weights = [a.share * sum(a.fps_range) / 2 * (MIN_DURATION_S + a.mean_duration_s) for a in APPS]
    mean_kb = sum(w * sum(a.frame_kb_range) / 2 for w, a in zip(weights, APPS, strict=True)) / sum(weights)
    assert pf.capacity_frame_kb == pytest.approx(mean_kb, abs=0.5)
    assert load_profiles().variant("yolov3-gpu-b8").eta(pf.capacity_frame_kb * 1000) == pytest.approx(1.0)
    assert load_profiles("provisional").load_accounting == sp.RATE  # older files still load, as rate


def test_the_default_is_what_was_measured_not_the_provisional_guess() -> None:
    measured, provisional = load_profiles(), load_profiles("provisional")
    # The figures: heavier YOLOv3 than assumed, far heavier Tiny-YOLOv2 than the face detector.
    assert measured.variant("yolov3-cpu-b1").batch_ms[1] > provisional.variant("yolov3-cpu-b1").batch_ms[1]
    assert measured.variant("tiny-yolov2-cpu-b1").batch_ms[1] > 10.0  # the 0.4 GFLOP face detector takes ~7 ms
    assert measured.variant("yolov3-gpu-b8").batch_ms[8] < measured.variant("yolov3-cpu-b1").batch_ms[1]


def test_profile_never_writes_a_committed_file(tmp_path: Path) -> None:
    assert DEFAULT_OUT == LOCAL_PROFILE and DEFAULT_OUT not in COMMITTED
    before = {p: p.read_bytes() for p in COMMITTED}
    for committed in COMMITTED:
        with pytest.raises(ValueError, match="committed profile"):
            run_profile(ProfileRequest(out=committed), log=lambda _: None)
    with pytest.raises(ValueError, match="committed profile"):  # however the path is spelled
        run_profile(ProfileRequest(out=DEFAULT_PROFILE.parent / ".." / "profiles" / "default.yaml"))
    assert {p: p.read_bytes() for p in COMMITTED} == before


def test_profiles_resolve_a_path_then_a_name_then_the_default(tmp_path: Path, monkeypatch) -> None:
    assert resolve_profile_path(None) == DEFAULT_PROFILE
    assert resolve_profile_path("provisional") == PROVISIONAL_PROFILE
    assert resolve_profile_path("provisional.yaml") == PROVISIONAL_PROFILE
    assert load_profiles("provisional").source == str(PROVISIONAL_PROFILE)
    assert load_profiles("provisional").variant("yolov3-cpu-b1").batch_ms[1] == 180.0
    own = tmp_path / "provisional.yaml"  # an explicit path wins over a name
    own.write_text(DEFAULT_PROFILE.read_text())
    assert resolve_profile_path(own) == own
    monkeypatch.chdir(tmp_path)
    assert resolve_profile_path("provisional.yaml") == Path("provisional.yaml")  # exists here
    assert resolve_profile_path("nothing-here") == Path("nothing-here")  # the reader then names it
    with pytest.raises(sp.ProfileError, match="nothing-here"):
        load_profiles("nothing-here")


def test_a_local_measurement_is_read_only_when_asked(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "default.yaml").write_text(DEFAULT_PROFILE.read_text())
    (folder / "measured-local.yaml").write_text(PROVISIONAL_PROFILE.read_text())
    monkeypatch.setattr(sp, "PROFILE_DIR", folder)
    monkeypatch.setattr(sp, "DEFAULT_PROFILE", folder / "default.yaml")
    assert load_profiles().source == str(folder / "default.yaml")  # the user's run does not replace the default
    assert load_profiles("measured-local").source == str(folder / "measured-local.yaml")


def test_profile_times_each_model_on_its_stand_in_with_a_replicas_threads(tmp_path: Path) -> None:
    from workers.cli import profile_targets
    from workers.profiler import ProfileTarget
    got = profile_targets(["mobilenet-ssd", "tiny-yolov2=tiny-yolov2", "yolov3-tiny"], None)
    assert [(t.model, t.zoo_model, t.threads) for t in got] == [
        ("mobilenet-ssd", "ssd300-mobilenetv1", 1), ("tiny-yolov2", "tiny-yolov2", 2), ("yolov3-tiny", "yolov3-tiny", 1)]
    assert [t.threads for t in profile_targets(["yolov3", "tiny-yolov2"], "1")] == [1, 1]
    assert [t.threads for t in profile_targets(["yolov3", "tiny-yolov2"], "yolov3=1")] == [1, 2]
    for bad in ("mobilenet-ssd=2", "yolov3=0", "yolov3=two"):
        with pytest.raises(ValueError, match="--threads"):
            profile_targets(["yolov3"], bad)
    with pytest.raises(ValueError, match="cores: cannot time yolov3"):  # figures are only measured, never scaled
        run_profile(ProfileRequest(targets=(ProfileTarget("yolov3", "yolov3", 512),), out=tmp_path / "p.yaml"))
