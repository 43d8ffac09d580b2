"""analysis/pairing.py: on hand-built logs, queries paired by stream and number, the testbed's extra misses and
their causes (the stage that grew most, no answer, a rejection's reason), where and in which windows; on tiny's
simulations, the missed queries a record sink keeps and how many one seed misses that another does not."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest

from analysis.pairing import (
    NO_ANSWER,
    NONE_GREW,
    MissedKeys,
    markdown_lines,
    missed_keys,
    one_side,
    pair_misses,
)
from analysis.records import RECORD_COLUMNS

NAN = math.nan


def log(rows: list[tuple]) -> pa.Table:
    """rows: (stream_id, query, cluster, t_send, t_sched, t_worker, t_start, t_end, t_response, outcome, reason)."""
    cols = {name: [] for name, _ in RECORD_COLUMNS}
    for sid, q, cluster, *times, outcome, reason in rows:
        for name, v in zip(("t_send_ms", "t_sched_ms", "t_worker_ms", "t_infer_start_ms", "t_infer_end_ms",
                            "t_response_ms"), times, strict=True):
            cols[name].append(v)
        cols["stream_id"].append(sid), cols["query"].append(q), cols["cluster"].append(cluster)
        cols["antenna"].append("ant1"), cols["app"].append("a"), cols["variant"].append("v")
        cols["batch_size"].append(1), cols["outcome"].append(outcome), cols["reason"].append(reason)
    return pa.table({name: pa.array(cols[name], type=typ) for name, typ in RECORD_COLUMNS})


def ok(sid: int, q: int, t: float, cluster: str = "dc1") -> tuple:
    return (sid, q, cluster, t, t + 1, t + 3, t + 4, t + 10, t + 13, "ontime", None)


def test_the_testbeds_extra_misses_are_paired_and_explained() -> None:
    sim = log([ok(0, 0, 100), ok(0, 1, 200), ok(0, 2, 1100), ok(0, 3, 1200), ok(1, 0, 1300),
               (1, 1, "dc1", 2100, 2101, 2103, 2104, 2110, 2190, "failed", "deadline"), ok(1, 2, 2200),
               ok(2, 0, 2300)])
    tb = log([ok(0, 0, 100),
              (0, 1, "dc1", 200, 201, 203, 224, 230, 233, "failed", "deadline"),   # queueing +20 ms
              (0, 2, "co1", 1100, 1101, 1103, 1104, 1110, 1150, "failed", "deadline"),  # down +37 ms
              (0, 3, "dc1", 1200, 1201, NAN, NAN, NAN, NAN, "failed", "timeout"),  # never answered
              (1, 0, None, 1300, 1301, NAN, NAN, NAN, NAN, "rejected", "capacity"),
              ok(1, 1, 2100), ok(1, 2, 2200), ok(9, 9, 2400)])  # (1, 1): missed by the simulator alone
    r = pair_misses("closest", sim, tb, window_s=1.0)
    assert (r.paired, r.only_simulator, r.only_testbed) == (7, 1, 1)  # (2, 0) and (9, 9) are on one side only
    assert (r.both_ontime, r.testbed_missed, r.simulator_missed, r.both_missed) == (2, 4, 1, 0)
    assert r.net_missed == 3
    assert r.testbed_missed_why == {"queueing": 1, "network down": 1, NO_ANSWER: 1, "rejected: capacity": 1}
    assert r.testbed_missed_where == {"dc1": 2, "co1": 1, "none": 1}
    # the stages' growth over the two answered misses: queueing 0 and +20, down +37 and 0 -> medians
    assert r.median_excess_ms["queueing"] == pytest.approx(10.0)
    assert r.median_excess_ms["network down"] == pytest.approx(18.5)
    assert r.median_excess_ms["network up (to scheduler)"] == 0.0
    # windows of 1 s by the simulator's send time (3: 0 to 2): the testbed's own misses 1, 3, 0 per window (mean
    # 4/3, variance 14/9: dispersion 7/6), the simulator's 0, 0, 1 (mean 1/3, variance 2/9: 2/3)
    assert r.worst_windows == [(1, 3), (0, 1)]
    assert r.dispersion_testbed == pytest.approx(7 / 6) and r.dispersion_simulator == pytest.approx(2 / 3)
    text = "\n".join(markdown_lines([r], 1.0))
    assert "| closest | 7 | 1 | 2 | 4 | 1 | 0 | 5 | - | 1.17 / 0.67 |" in text and "rejected: capacity 1" in text
    r = replace(r, simulator_self_one_side=[6, 3, 4, 9, 5])
    assert "| 5 | 5 (3-9) | 1.17 / 0.67 |" in "\n".join(markdown_lines([r], 1.0))


def test_a_miss_no_stage_of_which_grew_and_a_send_on_a_window_boundary() -> None:
    # the testbed failed (0, 1) with every stage as fast as the simulator's; (0, 2) leaves at exactly 3 s: window 3
    sim = log([ok(0, 0, 100), ok(0, 1, 500), ok(0, 2, 3000)])
    tb = log([ok(0, 0, 100), (0, 1, "dc1", 500, 501, 503, 504, 510, 512, "failed", "deadline"),
              (0, 2, "dc1", 3000, 3001, 3003, 3004, 3010, 3016, "failed", "deadline")])
    r = pair_misses("p", sim, tb)
    assert r.testbed_missed_why == {NONE_GREW: 1, "network down": 1}
    assert r.worst_windows == [(0, 1), (3, 1)]
    # 4 windows (0 to 3), misses 1, 0, 0, 1: mean 1/2, variance 1/4
    assert r.dispersion_testbed == pytest.approx(0.5) and math.isnan(r.dispersion_simulator)


def test_a_query_logged_twice_or_out_of_range_is_refused() -> None:
    sim = log([ok(0, 0, 100), ok(0, 1, 200)])
    with pytest.raises(ValueError, match=r"the testbed's log has stream 0 query 1 2 times"):
        pair_misses("p", sim, log([ok(0, 0, 100), ok(0, 1, 200), ok(0, 1, 200)]))
    with pytest.raises(ValueError, match="out of the range paired"):
        pair_misses("p", sim, log([ok(1 << 31, 0, 100)]))


def test_identical_logs_have_no_extra_misses() -> None:
    sim = log([ok(0, i, 100.0 * i) for i in range(20)])
    r = pair_misses("p", sim, sim)
    assert (r.paired, r.both_ontime, r.testbed_missed, r.simulator_missed) == (20, 20, 0, 0)
    assert r.testbed_missed_why == {} and math.isnan(r.dispersion_testbed) and r.worst_windows == []


def test_a_simulations_missed_queries_kept_by_its_sink_are_those_its_log_has(tmp_path) -> None:
    from analysis.records import read_records
    from scheduler.profiles import load_profiles
    from scheduler.system import build_system
    from simulator.engine import SimConfig
    from simulator.run import simulate_policy
    from topologies import load_topology
    from workload.args import Workload

    topo = load_topology("tiny")
    trace = Workload(lambda_per_min="5", duration_s=30.0, seed=4, trace=None,
                     default_duration_s=30.0).build(tuple(a.name for a in topo.antennas))[0]
    system, config = build_system(topo, load_profiles()), SimConfig(window_s=1.0, duration_s=30.0)
    runs = {}
    for seed in (4, 5):
        sink = MissedKeys()
        simulate_policy(system, trace, "random-proportional-load", config, seed, "", tmp_path / str(seed), record_sink=sink)
        log = read_records(tmp_path / str(seed) / "records.csv")
        assert np.array_equal(sink.keys(), missed_keys(log))  # the sink saw every batch the writer wrote
        runs[seed] = (log, sink.keys())
        alone = MissedKeys()  # as compare runs the other seeds: no folder, no records written, the sink alone
        simulate_policy(system, trace, "random-proportional-load", config, seed, "", None, write_records=False,
                        record_sink=alone)
        assert np.array_equal(alone.keys(), sink.keys())
    # the seeds' disagreement (a random policy: they miss other queries), counted from the keys alone, is
    # pair_misses' one side alone
    assert one_side(runs[4][1], runs[5][1]) == pair_misses("p", runs[4][0], runs[5][0]).one_side > 0
    assert one_side(runs[4][1], runs[4][1]) == 0
