"""Calibration of a topology from a testbed run's link measurements."""

from __future__ import annotations

import json

import pytest

from topologies import TopologyError, load_topology
from topologies.calibrate import calibrated_topology, read_link_figures


def test_measured_figures_replace_the_files_and_paths_follow(tmp_path) -> None:
    links = [
        {"link": "radio-ant1", "direction": d, "median_delay_ms": m, "measured_dev_ms": 0.2, "measured_loss_pct": 0}
        for d, m in (("a->b", 2.3), ("b->a", 2.5))
    ] + [{"link": "ant1-dc1", "direction": "a->b", "median_delay_ms": 5.6, "measured_dev_ms": 0.1,
          "measured_loss_pct": 1.0}]
    (tmp_path / "link_measurements.json").write_text(json.dumps({"meta": {}, "links": links}))
    topo = calibrated_topology(load_topology("tiny"), read_link_figures(tmp_path))
    assert topo.site("ant1").radio.delay_ms == pytest.approx(2.4)
    assert topo.site("ant1").radio.delay_dev_ms == pytest.approx(0.2)
    assert topo.path("ant1", "dc1").delay_ms == pytest.approx(5.6)
    assert topo.path("ant1", "cloud").delay_ms == pytest.approx(25.6)    # dc1-cloud not measured: the file's 20
    assert topo.path("ant1", "dc1").loss_pct == pytest.approx(1.0)


def test_missing_or_bad_measurements_are_refused(tmp_path) -> None:
    with pytest.raises(TopologyError, match="link_measurements.json: cannot read"):
        read_link_figures(tmp_path)
    (tmp_path / "link_measurements.json").write_text(json.dumps({"links": [{"link": "x"}]}))
    with pytest.raises(TopologyError, match=r"links\[0\]: not a link measurement"):
        read_link_figures(tmp_path)


def test_profiles_scaled_by_the_processing_times_a_run_measured(test_profile) -> None:
    import numpy as np
    import pyarrow as pa

    from analysis.calibrate import calibrated_profiles, processing_scale
    from analysis.records import RECORD_SCHEMA
    from scheduler.profiles import load_profiles

    profiles = load_profiles(test_profile)
    # fast-cpu-b4 batches of 1 and 4 took 15 and 24 ms (profile: 10 and 16): 1.5 times slower.
    n = 4
    t = pa.table(dict(
        stream_id=np.zeros(n, dtype=np.int64), query=np.arange(n), antenna=["a"] * n, app=["x"] * n,
        cluster=["c"] * n, variant=["fast-cpu-b4", "fast-cpu-b4", "fast-cpu-b4", "slow-cpu-b1"],
        t_send_ms=np.zeros(n), t_sched_ms=np.zeros(n), t_worker_ms=np.zeros(n),
        t_infer_start_ms=np.array([0.0, 0.0, 100.0, 0.0]), t_infer_end_ms=np.array([15.0, 15.0, 124.0, 0.0]),
        t_response_ms=np.zeros(n), batch_size=np.array([1, 1, 4, 1]),
        outcome=["ontime", "ontime", "failed", "rejected"], reason=[""] * n), schema=RECORD_SCHEMA)
    scale = processing_scale(t, profiles)
    assert scale == {"fast-cpu-b4": pytest.approx(1.5)}
    cal = calibrated_profiles(profiles, scale)
    assert cal.variant("fast-cpu-b4").batch_ms == pytest.approx((0, 15, 18, 21, 24))
    assert cal.variant("slow-cpu-b1").batch_ms == profiles.variant("slow-cpu-b1").batch_ms


def test_stack_overhead_is_what_the_network_stages_took_beyond_the_links() -> None:
    import numpy as np
    import pyarrow as pa

    from analysis.calibrate import stack_overhead_ms
    from analysis.records import RECORD_SCHEMA
    from scheduler.profiles import PROVISIONAL_PROFILE, load_profiles
    from scheduler.system import build_system
    from workload.trace import Trace

    system = build_system(load_topology("tiny"), load_profiles(PROVISIONAL_PROFILE))
    # ant1's own cluster: radio 2 ms each way at 100 Mbit/s, no path. A 10 kB frame: 2.8 ms up;
    # the 1 kB answer: 2.08 ms down. Measured 4.3 and 3.08: 1.5 ms and 1.0 ms of overhead.
    n = 3
    t = pa.table(dict(
        stream_id=np.zeros(n, dtype=np.int64), query=np.arange(n), antenna=["ant1"] * n, app=["x"] * n,
        cluster=["ant1"] * n, variant=["mobilenet-ssd-cpu-b1"] * n, t_send_ms=np.zeros(n),
        t_sched_ms=np.zeros(n), t_worker_ms=np.array([4.3, 4.3, 9.0]), t_infer_start_ms=np.full(n, 10.0),
        t_infer_end_ms=np.full(n, 30.0), t_response_ms=np.array([33.08, 33.08, 40.0]),
        batch_size=np.ones(n, dtype=np.int64), outcome=["ontime"] * n, reason=[""] * n), schema=RECORD_SCHEMA)
    trace = Trace(stream_id=np.array([0]), antenna=np.array(["ant1"], dtype=object), start_s=np.zeros(1),
                  duration_s=np.ones(1), app=np.array(["x"], dtype=object), fps=np.ones(1),
                  frame_bytes=np.array([10000]), max_delay_ms=np.array([100.0]), min_accuracy=np.zeros(1),
                  task=np.array(["object-detection"], dtype=object))
    up, down = stack_overhead_ms(t, trace, system)
    assert up == pytest.approx(1.5) and down == pytest.approx(1.0)
