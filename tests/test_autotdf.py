"""`--tdf auto`'s search on hand-computed values: the trace's busiest second and its pilot trace, the first K
from the CPU cost per query, and the ladder walked down while pilots pass and up while they fail."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from live.autotdf import first_k, peak_slice, search
from topologies.timescale import TDF_LADDER as LADDER
from workload.trace import Trace, read_trace

TRACE = """stream_id,antenna,start_s,duration_s,app,fps,frame_bytes,max_delay_ms,min_accuracy,task
1,ant1,0.0,10,ar-vr,10,30000,300,0.2,object-detection
2,ant2,2.0,3,ar-vr,20,30000,300,0.2,object-detection
3,ant1,4.0,16,video-surveillance,5,45000,400,0.2,object-detection
"""


@pytest.fixture
def trace(tmp_path: Path) -> Trace:
    (tmp_path / "t.csv").write_text(TRACE)
    return read_trace(tmp_path / "t.csv")


def test_the_pilot_is_the_busiest_second_its_streams_starting_over_the_warm_up(trace: Trace) -> None:
    peak = peak_slice(trace, duration_s=20.0)  # a warm-up of PILOT_WARMUP_S = 2 s
    assert peak.at_s == 4.0 and peak.queries_per_s == 35.0  # 10 + 20 + 5 frames/s alive at 4 s
    p = peak.pilot
    assert list(p.stream_id) == [1, 2, 3] and list(p.start_s) == pytest.approx([0.0, 2 / 3, 4 / 3])  # trace order
    # each until the warm-up's end plus what it had left, at most the pilot's 10 s
    assert list(p.duration_s) == pytest.approx([2 + 6.0, 4 / 3 + 1.0, 2 / 3 + 10.0])
    assert list(p.antenna) == ["ant1", "ant2", "ant1"] and p.expected_queries() == 80 + 47 + 54
    together = peak_slice(trace, duration_s=20.0, warmup_s=0.0).pilot  # no warm-up: started together at 0
    assert list(together.start_s) == [0.0, 0.0, 0.0] and list(together.duration_s) == [6.0, 1.0, 10.0]


@pytest.mark.parametrize(("qps", "cores", "switch", "k"), [
    (200.0, 1.0, "ovs", 20.0),  # 1 core of emulation: 0.75 - 0.7 = 0.05 core left, 1 core of queries
    (1100.0, 2.0, "lxbr", 6.0),  # 5.5 cores / (1.5 - 0.2) = 4.2 -> 5 -> the ladder's 6
    (10.0, 1.0, "ovs", 1.0),
    (100.0, 0.5, "ovs", LADDER[-1]),  # no room at all: the top
])
def test_the_first_k_is_the_cpu_the_queries_need_over_what_is_left(qps, cores, switch, k) -> None:
    assert first_k(qps, cores, switch) == k


def test_the_search_walks_the_ladder_and_keeps_the_smallest_k_that_passed(trace: Trace) -> None:
    up = search(10.0, lambda k: k >= 12)
    assert up.pilots == ((10.0, False), (12.0, True)) and up.tdf == 12.0 and up.piloted
    down = search(10.0, lambda k: k >= 6)
    assert down.pilots == ((10.0, True), (8.0, True), (6.0, True)) and down.tdf == 6.0  # three pilots at most
    lost = search(9.0, lambda k: False)
    assert lost.pilots == ((10.0, False), (12.0, False), (16.0, False)) and lost.tdf == 20.0 and not lost.piloted
    assert search(1.0, lambda k: True).pilots == ((1.0, True),)
    edge = search(LADDER[-1], lambda k: False)
    assert edge.pilots == ((LADDER[-1], False),) and edge.tdf == LADDER[-1]
    rec = down.record(peak_slice(trace, 20.0))
    assert rec["tdf"] == 6.0 and rec["pilots"][0] == {"tdf": 10.0, "faithful": True} and rec["peak_at_s"] == 4.0


def test_an_empty_trace_has_no_load(trace: Trace) -> None:
    empty = Trace(**{k: getattr(trace, k)[:0] for k in trace.__dataclass_fields__})
    peak = peak_slice(empty, 5.0)
    assert peak.queries_per_s == 0.0 and len(peak.pilot) == 0 and np.all(peak.pilot.start_s == 0)
