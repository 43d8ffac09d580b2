"""Shared fixtures: small topology and profile files written by the tests, whose answers are known."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TEST_PROFILE = """
version: 1
origin: test profile
models:
  fast: {task: object-detection, accuracy: 0.3, accuracy_source: test}
  slow: {task: object-detection, accuracy: 0.6, accuracy_source: test}
  other: {task: segmentation, accuracy: 0.9, accuracy_source: test}
runtimes:
  - {model: fast, device: cpu, cpu_cores: 1, batch_latency_ms: {1: 10.0, 4: 16.0}, input_ms_per_mb: 0, source: test}
  - {model: slow, device: cpu, cpu_cores: 1, batch_latency_ms: {1: 100.0}, input_ms_per_mb: 0, source: test}
  - {model: other, device: cpu, cpu_cores: 1, batch_latency_ms: {1: 5.0}, input_ms_per_mb: 0, source: test}
"""


@pytest.fixture
def write_yaml(tmp_path: Path):
    """Returns a function writing a dedented YAML text to a file in tmp_path and giving its path."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def test_profile(write_yaml) -> Path:
    return write_yaml("profile.yaml", TEST_PROFILE)


@pytest.fixture(scope="module")
def tiny_system():
    """tiny on the provisional profile, rate accounting: the live tests' figures are worked out on it."""
    from scheduler.profiles import PROVISIONAL_PROFILE, load_profiles
    from scheduler.system import build_system
    from topologies import load_topology

    topo = load_topology("tiny")
    profiles = load_profiles(PROVISIONAL_PROFILE)
    assert profiles.load_accounting == "rate"
    return topo, profiles, build_system(topo, profiles)


@pytest.fixture(scope="module")
def astronaut_jpeg() -> bytes:
    """A real photo as a JPEG frame (scikit-image's astronaut), with tiny-yolov2 built in the zoo: what the
    worker tests send."""
    import io

    from PIL import Image
    from skimage import data

    from workers import zoo

    zoo.build(names=["tiny-yolov2"], log=lambda _: None)
    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, "JPEG", quality=90)
    return buf.getvalue()
