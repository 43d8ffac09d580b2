"""The early stop of a clearly lost run (live/monitor.py LostRun): the sources' send lag per window of due
time, read from records.csv as it grows."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from monitor_records import TRACE, write_records

from live.monitor import EARLY_STOP_WINDOWS, LostRun, Monitor, judged_from_ms
from live.spec import RunSpec
from workload.trace import read_trace


def test_a_lost_run_is_found_after_consecutive_windows_over_the_limit(tmp_path: Path) -> None:
    (tmp_path / "trace.csv").write_text(TRACE)
    trace = read_trace(tmp_path / "trace.csv")
    rec = tmp_path / "records.csv"
    # stream 1 at 10 fps: query k is due at 100 k ms. Window 0 fine (lag 1 ms), windows 1-3 late by 30 ms.
    rows = [{"stream_id": 1, "query": k, "t_send_ms": 100 * k + (1 if k < 10 else 30)} for k in range(40)]
    rows.append({"stream_id": 2, "query": 0, "t_send_ms": 500.0, "outcome": "rejected", "reason": "capacity"})
    write_records(rec, rows[:35])  # up to window 3: windows 0-2 can be judged
    lost = LostRun(rec, trace)
    assert lost.check() is None  # windows 1 and 2 over: two in a row
    with rec.open("a") as f:  # window 4 starts (the file grows): window 3 is judged, the third over in a row
        f.write(f"1,45,ant1,ar-vr,ant1,v,{4500 + 30},,,,,,1,ontime,\n")
    why = lost.check()
    assert why is not None and EARLY_STOP_WINDOWS == 3
    assert why["windows_from_s"] == 1.0 and why["lag_p99_ms"] == [30.0, 30.0, 30.0]
    assert why["invariant"] == "source send lag"


def test_the_early_stop_leaves_out_a_pilots_warm_up_as_the_verdict_does(tmp_path: Path) -> None:
    """Windows 2-3 late by 30 ms; window 1 over the limit by its first query alone (due at 1000 ms, 30 ms late;
    the others 1 ms): lost from 1 s when judged whole or from 1000 ms (a query due at the boundary counts, as in
    the verdict's `_after`); judged from just after it or from 2 s (a pilot's warm-up), two windows in a row."""
    (tmp_path / "trace.csv").write_text(TRACE)
    trace = read_trace(tmp_path / "trace.csv")
    rows = [{"stream_id": 1, "query": k, "t_send_ms": 100 * k + (30 if k == 10 or k >= 20 else 1)} for k in range(45)]
    write_records(tmp_path / "records.csv", rows)
    whole = LostRun(tmp_path / "records.csv", trace).check()
    assert whole is not None and whole["windows_from_s"] == 1.0 and whole["lag_p99_ms"][1:] == [30.0, 30.0]
    assert LostRun(tmp_path / "records.csv", trace, judged_from_ms=1000.0).check() == whole
    assert LostRun(tmp_path / "records.csv", trace, judged_from_ms=1000.5).check() is None
    assert LostRun(tmp_path / "records.csv", trace, judged_from_ms=2000.0).check() is None


def test_a_runs_monitor_judges_its_early_stop_from_its_specs_warm_up(tmp_path: Path) -> None:
    """The monitor of a run takes `judged_from_s` from its RunSpec (a pilot's), and 0 from any other spec."""
    (tmp_path / "trace.csv").write_text(TRACE)
    trace = read_trace(tmp_path / "trace.csv")
    pilot = replace(RunSpec(), tdf=4.0, judged_from_s=2.0)
    assert Monitor(tmp_path, pilot, 0.0, None, lambda: [], trace).lost.judged_from_ms == 2000.0
    assert Monitor(tmp_path, RunSpec(), 0.0, None, lambda: [], trace).lost.judged_from_ms == 0.0
    assert judged_from_ms({"judged_from_s": 2.5}) == 2500.0 and judged_from_ms({}) == 0.0


def test_a_window_within_the_limit_breaks_a_run_of_bad_ones(tmp_path: Path) -> None:
    (tmp_path / "trace.csv").write_text(TRACE)
    lags = {0: 30, 1: 30, 2: 1, 3: 30, 4: 30, 5: 1}
    rows = [{"stream_id": 1, "query": k, "t_send_ms": 100 * k + lags[k // 10]} for k in range(60)]
    write_records(tmp_path / "records.csv", rows)
    assert LostRun(tmp_path / "records.csv", read_trace(tmp_path / "trace.csv")).check() is None


def test_the_early_stop_excuses_the_opening_round_trip_as_the_verdict_does(tmp_path: Path) -> None:
    """Stream 1 (10 fps) reopens before queries 10, 20 and 30, each answered 40 ms after it was due: queries
    10, 20 and 30 leave 40 ms behind their schedule, the emulated system's round trip, not the host's. Read from
    an openings log that grows with the records (its last line still partly written), the run is not lost; the
    same records against openings logged as answered in 5 ms are (35 ms late against a 20 ms limit)."""
    (tmp_path / "trace.csv").write_text(TRACE)
    trace = read_trace(tmp_path / "trace.csv")
    rows = [{"stream_id": 1, "query": k, "t_send_ms": 100 * k + (40 if k % 10 == 0 and k else 0.5)}
            for k in range(50)]
    write_records(tmp_path / "records.csv", rows)
    opens = tmp_path / "records" / "ant1.opens.csv"
    opens.parent.mkdir()
    logged = "".join(f"1,{k},{100 * k},{100 * k + 40}\n" for k in (10, 20, 30))
    opens.write_text("stream_id,query,t_open_ms,t_bound_ms\n" + logged + "1,40,4000")  # the last line unfinished
    lost = LostRun(tmp_path / "records.csv", trace)
    assert lost.check() is None and lost.opens.read().shape == (3, 4)
    opens.write_text("stream_id,query,t_open_ms,t_bound_ms\n"
                     + "".join(f"1,{k},{100 * k},{100 * k + 5}\n" for k in (10, 20, 30)))
    why = LostRun(tmp_path / "records.csv", trace).check()
    assert why is not None and why["windows_from_s"] == 1.0 and why["lag_p99_ms"][0] > 20.0
