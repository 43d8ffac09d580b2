"""Calibration from a testbed run: its links' measurements, its processing times, the stack's own delay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.records import read_records
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
    from analysis.calibrate import stack_overhead

    # (0,0) and (0,1): the same worker on both sides, 1.5 ms more up and 1.0 ms more down in the testbed, whatever
    # the simulator itself charged (a radio wait of 9 ms on (0,1) is on both sides); (0,2) and (0,4): another worker
    # in the simulator; (0,3): only in the testbed. None of these three counts.
    tb = _log([(0, 0), (0, 1), (0, 2), (0, 3), (0, 4)], ["a@ant1"] * 5,
              [4.3, 13.3, 40.0, 40.0, 40.0], [3.0, 3.0, 30.0, 30.0, 30.0])
    sim = _log([(0, 1), (0, 0), (0, 2), (0, 4)], ["a@ant1", "a@ant1", "b@dc1", "b@dc1"], [11.8, 2.8, 1.0, 1.0],
               [2.0, 2.0, 1.0, 1.0])
    o = stack_overhead(tb, sim)
    assert (o.up_ms, o.down_ms, o.queries) == (pytest.approx(1.5), pytest.approx(1.0), 2)
    # a testbed faster than the simulator has no negative overhead; nothing in common, none
    assert stack_overhead(sim, tb).down_ms == 0.0
    o = stack_overhead(tb, _log([(5, 5)], ["a@ant1"], [1.0], [1.0]))
    assert (o.up_ms, o.down_ms, o.queries) == (0.0, 0.0, 0)


def test_a_calibration_run_is_simulated_as_it_ran_and_its_overhead_found(tmp_path) -> None:
    """compare's calibration from a run folder: the simulator runs that run again (its trace, seed, policy) and a
    log that took 2.5 ms more up and 0.5 ms more down than it, query by query, has exactly that overhead, over
    every query; its batches as planned (the real simulator on both sides). A run of another topology is
    refused, naming it."""
    import json as json_

    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    from live.calibration import calibrate_from_run
    from live.spec import RunSpec, write_spec
    from scheduler.profiles import PROVISIONAL_PROFILE, load_profiles
    from simulator.run import simulate_policy
    from topologies import resolve_topology_path
    from workload.args import Workload
    from workload.trace import write_trace

    topo, profiles = load_topology("tiny"), load_profiles(PROVISIONAL_PROFILE)
    run = tmp_path / "run"
    trace, _ = Workload(lambda_per_min="30", duration_s=20.0, seed=3, trace=None,
                        default_duration_s=20.0).build(tuple(a.name for a in topo.antennas))
    write_trace(trace, run / "trace.csv")
    write_spec(RunSpec(topo=str(resolve_topology_path("tiny")), policy="least-impedance", duration_s=20.0, seed=3,
                       trace=run / "trace.csv", profiles=Path(profiles.source)), run / "spec.json")
    (run / "link_measurements.json").write_text(json_.dumps({"meta": {}, "links": []}))
    from scheduler.system import build_system

    truth = simulate_policy(build_system(topo, profiles), trace, "least-impedance", RunSpec().sim_config(20.0), 3, "",
                            tmp_path / "truth")
    t = read_records(truth.records_path)
    for col, ms in (("t_worker_ms", 2.5), ("t_infer_start_ms", 2.5), ("t_infer_end_ms", 2.5), ("t_response_ms", 3.0)):
        t = t.set_column(t.schema.get_field_index(col), col, pc.add(t[col], ms))
    pacsv.write_csv(t, run / "records.csv")
    cal = calibrate_from_run(run, topo, profiles, tmp_path / "calibration")
    assert (cal.overhead.up_ms, cal.overhead.down_ms) == (pytest.approx(2.5), pytest.approx(0.5))
    assert cal.overhead.queries == t.num_rows - pc.sum(pc.equal(t["outcome"], "rejected")).as_py() > 100
    assert cal.processing_scale and all(k == pytest.approx(1.0, abs=0.02) for k in cal.processing_scale.values())
    done = json_.loads((tmp_path / "calibration" / "summary.json").read_text())
    assert (done["policy"], done["seed"]) == ("least-impedance", 3)
    assert "2.50 ms up, 0.50 ms down" in cal.label
    other = json_.loads((run / "spec.json").read_text()) | {"topo": str(resolve_topology_path("full-edge"))}
    (run / "spec.json").write_text(json_.dumps(other))
    with pytest.raises(ValueError, match=r"that run is of topology 'full-edge', not --topo 'tiny'"):
        calibrate_from_run(run, topo, profiles, tmp_path / "again")
