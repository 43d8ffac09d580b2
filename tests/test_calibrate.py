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


def test_profiles_scaled_by_the_processing_times_a_run_measured(write_yaml, test_profile) -> None:
    import numpy as np
    import pyarrow as pa

    from analysis.calibrate import calibrated_profiles, processing_scale
    from analysis.records import RECORD_SCHEMA
    from scheduler.profiles import load_profiles
    from workload.trace import Trace

    # fast's input: 2 ms per MB. Streams 0 and 1 send 1 MB and 3 MB frames.
    profiles = load_profiles(write_yaml("p.yaml", test_profile.read_text().replace(
        "batch_latency_ms: {1: 10.0, 4: 16.0}, input_ms_per_mb: 0", "batch_latency_ms: {1: 10.0, 4: 16.0}, "
        "input_ms_per_mb: 2")))
    trace = Trace(stream_id=np.array([0, 1]), antenna=np.array(["a", "a"], dtype=object), start_s=np.zeros(2),
                  duration_s=np.ones(2), app=np.array(["x", "x"], dtype=object), fps=np.ones(2),
                  frame_bytes=np.array([1_000_000, 3_000_000]), max_delay_ms=np.full(2, 100.0),
                  min_accuracy=np.zeros(2), task=np.array(["object-detection"] * 2, dtype=object))
    # fast-cpu-b4, 1.5 times slower than planned: a batch of 1 of stream 0 (planned 10 + 2 ms, took 18), a batch
    # of 4 (two frames of each stream: planned 16 + 16 ms, took 48), a batch of 1 of stream 1 on another cluster at
    # the same time (planned 10 + 6 ms, took 24). A batch logged as 4 with 2 rows (a query missing) and the slow
    # variant's rejected query do not count.
    rows = [(0, "c", "fast-cpu-b4", 0.0, 18.0, 1, "ontime"), (0, "c", "fast-cpu-b4", 100.0, 148.0, 4, "ontime"),
            (0, "c", "fast-cpu-b4", 100.0, 148.0, 4, "ontime"), (1, "c", "fast-cpu-b4", 100.0, 148.0, 4, "failed"),
            (1, "c", "fast-cpu-b4", 100.0, 148.0, 4, "ontime"), (1, "d", "fast-cpu-b4", 100.0, 124.0, 1, "ontime"),
            (0, "c", "fast-cpu-b4", 200.0, 900.0, 4, "ontime"), (1, "c", "fast-cpu-b4", 200.0, 900.0, 4, "ontime"),
            (0, "c", "slow-cpu-b1", 0.0, 0.0, 1, "rejected")]
    n = len(rows)
    col = list(zip(*rows, strict=True))
    t = pa.table(dict(
        stream_id=np.array(col[0]), query=np.arange(n), antenna=["a"] * n, app=["x"] * n, cluster=list(col[1]),
        variant=list(col[2]), t_send_ms=np.zeros(n), t_sched_ms=np.zeros(n), t_worker_ms=np.zeros(n),
        t_infer_start_ms=np.array(col[3]), t_infer_end_ms=np.array(col[4]), t_response_ms=np.zeros(n),
        batch_size=np.array(col[5]), outcome=list(col[6]), reason=[""] * n), schema=RECORD_SCHEMA)
    scale = processing_scale(t, profiles, trace)
    assert scale == {"fast-cpu-b4": pytest.approx(1.5)}
    cal = calibrated_profiles(profiles, scale)
    assert cal.variant("fast-cpu-b4").batch_ms == pytest.approx((0, 15, 18, 21, 24))
    assert cal.variant("fast-cpu-b4").input_ms_per_mb == pytest.approx(3.0)
    assert cal.variant("slow-cpu-b1").batch_ms == profiles.variant("slow-cpu-b1").batch_ms


def _log(keys: list[tuple[int, int]], worker: list[str], up_ms: list[float], down_ms: list[float]):  # noqa: ANN202
    import numpy as np
    import pyarrow as pa

    from analysis.records import RECORD_SCHEMA

    n = len(keys)
    return pa.table(dict(
        stream_id=np.array([k[0] for k in keys]), query=np.array([k[1] for k in keys]), antenna=["ant1"] * n,
        app=["x"] * n, cluster=[w.split("@")[1] for w in worker], variant=[w.split("@")[0] for w in worker],
        t_send_ms=np.zeros(n), t_sched_ms=np.zeros(n), t_worker_ms=np.array(up_ms), t_infer_start_ms=np.full(n, 50.0),
        t_infer_end_ms=np.full(n, 60.0), t_response_ms=60.0 + np.array(down_ms), batch_size=np.ones(n, dtype=np.int64),
        outcome=["ontime"] * n, reason=[""] * n), schema=RECORD_SCHEMA)


def test_stack_overhead_is_what_the_testbed_took_beyond_the_simulator_for_the_same_queries() -> None:
    from analysis.calibrate import stack_overhead_ms

    # (0,0) and (0,1): the same worker on both sides, 1.5 ms more up and 1.0 ms more down in the testbed, whatever
    # the simulator itself charged (a radio wait of 9 ms on (0,1) is on both sides); (0,2) and (0,4): another worker
    # in the simulator; (0,3): only in the testbed. None of these three counts.
    tb = _log([(0, 0), (0, 1), (0, 2), (0, 3), (0, 4)], ["a@ant1"] * 5,
              [4.3, 13.3, 40.0, 40.0, 40.0], [3.0, 3.0, 30.0, 30.0, 30.0])
    sim = _log([(0, 1), (0, 0), (0, 2), (0, 4)], ["a@ant1", "a@ant1", "b@dc1", "b@dc1"], [11.8, 2.8, 1.0, 1.0],
               [2.0, 2.0, 1.0, 1.0])
    assert stack_overhead_ms(tb, sim) == (pytest.approx(1.5), pytest.approx(1.0))
    # a testbed faster than the simulator has no negative overhead; nothing in common, none
    assert stack_overhead_ms(sim, tb)[1] == 0.0
    assert stack_overhead_ms(tb, _log([(5, 5)], ["a@ant1"], [1.0], [1.0])) == (0.0, 0.0)


def test_a_calibration_run_is_simulated_as_it_ran_and_its_overhead_found(tmp_path) -> None:
    """The simulator's run of a testbed run's own trace, seed and policy; a log that took 2.5 ms more up and 0.5 ms
    more down than that run, query by query, has exactly that overhead (the real simulator, on both sides)."""
    import pyarrow.compute as pc

    from analysis.calibrate import stack_overhead_ms
    from live.compare import simulate_calibration_run
    from live.spec import RunSpec, write_spec
    from scheduler.profiles import PROVISIONAL_PROFILE, load_profiles
    from scheduler.system import build_system
    from workload.args import Workload
    from workload.trace import write_trace

    topo = load_topology("tiny")
    antennas = tuple(a.name for a in topo.antennas)
    trace, _ = Workload(lambda_per_min="30", duration_s=20.0, seed=3, trace=None, default_duration_s=20.0).build(antennas)
    write_trace(trace, tmp_path / "run" / "trace.csv")
    write_spec(RunSpec(topo="tiny", policy="least-impedance", duration_s=20.0, seed=3, trace=tmp_path / "run" / "trace.csv"),
               tmp_path / "run" / "spec.json")
    system = build_system(topo, load_profiles(PROVISIONAL_PROFILE))
    sim = simulate_calibration_run(tmp_path / "run", system, system, {}, topo, antennas, tmp_path / "cal")
    assert (tmp_path / "cal" / "records.csv").exists() and sim.num_rows > 100
    assert stack_overhead_ms(sim, sim) == (0.0, 0.0)
    late = sim.set_column(sim.schema.get_field_index("t_worker_ms"), "t_worker_ms", pc.add(sim["t_worker_ms"], 2.5))
    late = late.set_column(sim.schema.get_field_index("t_response_ms"), "t_response_ms",
                           pc.add(sim["t_response_ms"], 0.5))
    up, down = stack_overhead_ms(late, sim)
    assert up == pytest.approx(2.5) and down == pytest.approx(0.5)
