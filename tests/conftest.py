"""Shared fixtures: small topology and profile files written by the tests, whose answers are known."""

from __future__ import annotations

import csv
import json
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


@pytest.fixture
def radio_compare(tmp_path: Path):
    """Returns a function writing a small `run_testbed.py compare` output (experiments/radio_sharing.py,
    radio_whatif.py) and giving its folder."""

    def make(pairs: bool = False, deadline_ms: float = 100.0, name: str = "compare") -> Path:
        """A compare output with one stream of 50 kB frames (1 ms each at 400 Mbit/s) from ant1 every 2 ms for 3 s,
        the testbed's and the simulator's records alike (the scheduler 5 ms after the send, the answer 10 ms
        after it, on time), each query's deadline `deadline_ms`. With `pairs`, a second stream sends beside the
        first in its last second, at the same instants, and the testbed's frames of that second reach the scheduler
        6 ms after the send (4 ms and both shared, 2 ms each), the simulator's 5 and 6 (one after the other); the
        wire counts the payload (without pairs 1.01 x it). In tmp_path/`name`."""
        from analysis.records import RECORD_NAMES

        folder = tmp_path / name
        (folder / "testbed" / "load-balancing").mkdir(parents=True)
        (folder / "simulator" / "load-balancing").mkdir(parents=True)
        trace = ("stream_id,antenna,start_s,duration_s,app,fps,frame_bytes,max_delay_ms,min_accuracy,task\n"
                 f"0,ant1,0.0,3.0,smart-traffic,500,50000,{deadline_ms},0.3,object-detection\n")
        if pairs:
            trace += f"1,ant1,2.0,1.0,smart-traffic,500,50000,{deadline_ms},0.3,object-detection\n"
        (folder / "trace.csv").write_text(trace)
        frames = [(0, q, 2.0 * q) for q in range(1500)]
        if pairs:
            frames += [(1, q, 2000.0 + 2.0 * q) for q in range(500)]
        for side in ("testbed", "simulator"):
            with (folder / side / "load-balancing" / "records.csv").open("w", newline="") as f:
                w = csv.writer(f)
                w.writerow(RECORD_NAMES)
                for sid, q, t in frames:
                    # in the last second with pairs: the testbed's pair shared, the simulator's one after the other
                    shared = pairs and t >= 2000.0
                    lag = 6.0 if shared and (side == "testbed" or sid == 1) else 5.0
                    w.writerow([sid, q, "ant1", "smart-traffic", "ant1", "v", t, t + lag, t + 7, t + 8, t + 9,
                                t + 10, 1, "ontime", ""])
        tb = folder / "testbed" / "load-balancing"
        (tb / "wire-radio-ant1.json").write_text(json.dumps([{"name": "radio-ant1", "shape": {
            "delay_ms": 4.0, "delay_dev_ms": 1.0, "bw_mbps": 400.0, "loss_pct": 0.0}}]))
        with (tb / "link_load.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["t_s", "link", "direction", "mbps", "busy", "wait_max_ms"])
            for sec, busy in ((0, 0.4), (1, 0.4), (2, 0.95)):
                w.writerow([sec, "radio-ant1", "up", 400.0 if pairs and sec == 2 else (200.0 if pairs else 202.0),
                            busy, 0.1])
        return folder

    return make
