"""GPU entries measured elsewhere (workers.gpu_profile) merge into a host's profile."""

from __future__ import annotations

from dataclasses import replace

import pytest

from scheduler.profiles import load_profiles, read_profile, write_profile
from workers.profiler import SHIPPED_GPU, gpu_entries_from


def test_the_shipped_gpu_profile_is_measured_and_readable_by_the_scheduler() -> None:
    profile = read_profile(SHIPPED_GPU)
    assert {rt.model for rt in profile.runtimes} >= {"mobilenet-ssd", "tiny-yolov2", "yolov3"}
    for rt in profile.runtimes:
        assert rt.device == "gpu" and rt.source.startswith("measured:")
        sizes = sorted(rt.batch_latency_ms)
        assert all(rt.batch_latency_ms[a] <= rt.batch_latency_ms[b] for a, b in zip(sizes, sizes[1:], strict=False))
    assert load_profiles(SHIPPED_GPU)  # the scheduler's own strict reader accepts it


def test_gpu_entries_take_the_jpeg_cost_of_the_host_cpu_entry(tmp_path) -> None:
    gpu = read_profile(SHIPPED_GPU)
    tiny = next(rt for rt in gpu.runtimes if rt.model == "tiny-yolov2")
    assert tiny.input_ms_per_mb == 0.0  # measured without JPEG preparation
    cpu = {"tiny-yolov2": replace(tiny, device="cpu", input_ms_per_mb=7.5)}
    (kept,) = gpu_entries_from(SHIPPED_GPU, ("tiny-yolov2",), cpu)
    assert kept.input_ms_per_mb == 7.5 and kept.batch_latency_ms == tiny.batch_latency_ms
    assert SHIPPED_GPU.name in kept.source


def test_a_gpu_profile_lacking_a_model_is_refused_naming_the_file_and_model(tmp_path) -> None:
    gpu = read_profile(SHIPPED_GPU)
    partial = tmp_path / "partial.yaml"
    write_profile(replace(gpu, runtimes=tuple(rt for rt in gpu.runtimes if rt.model != "yolov3")), partial)
    with pytest.raises(ValueError, match=r"partial\.yaml: no GPU entry for yolov3"):
        gpu_entries_from(partial, ("tiny-yolov2", "yolov3"), {})


def test_the_gpu_profiler_times_the_zoo_model_that_stands_for_each_profile_model() -> None:
    from workers.gpu_profile import _net
    from workers.zoo import PROFILE_MODELS
    for zoo_model in PROFILE_MODELS.values():
        _, size_hw, config = _net(zoo_model)
        assert config.name == zoo_model and size_hw == (config.input_height, config.input_width)
    assert _net(PROFILE_MODELS["mobilenet-ssd"])[1] == (300, 300)
    with pytest.raises(KeyError, match="unknown zoo model"):
        _net("nope")


def test_the_shipped_gpu_entries_say_which_architecture_was_timed() -> None:
    sources = {rt.model: rt.source for rt in read_profile(SHIPPED_GPU).runtimes}
    assert "not the published SSD300" in sources["mobilenet-ssd"]
    assert "not the published Tiny-YOLOv2" in sources["tiny-yolov2"]
    assert "as published" in sources["yolov3"]
