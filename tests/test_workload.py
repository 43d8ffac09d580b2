"""Workload: Poisson arrivals and their rate, the application mix, and the trace format's strict reader."""

from __future__ import annotations

import numpy as np
import pytest

from workload.apps import APPS, mean_queries_per_stream
from workload.arrivals import RateSchedule, arrival_times, generate_trace
from workload.trace import TraceError, read_trace, write_trace


def test_lambda_60_gives_about_1000_queries_per_second_per_antenna() -> None:
    assert 950 <= mean_queries_per_stream() <= 1100
    trace = generate_trace(("a",), RateSchedule.constant(60), 3000, np.random.default_rng(5))
    assert len(trace) == pytest.approx(3000, rel=0.06)        # Poisson, 60 per minute
    assert trace.expected_queries() / 3000 == pytest.approx(1000, rel=0.1)


def test_rate_schedule_changes_the_arrival_rate() -> None:
    sched = RateSchedule.parse("0:20,600:100")
    t = arrival_times(sched, 1200, np.random.default_rng(3))
    first, second = (t < 600).sum(), (t >= 600).sum()
    assert first == pytest.approx(200, rel=0.25) and second == pytest.approx(1000, rel=0.1)
    assert sched.lambda_at(599) == 20 and sched.lambda_at(600) == 100
    for bad in ("60:20", "0:20,0:30", "0:x", "abc", "0:-1"):
        with pytest.raises(ValueError):
            RateSchedule.parse(bad)


def test_streams_follow_their_application_ranges() -> None:
    trace = generate_trace(("a", "b"), RateSchedule.constant(60), 600, np.random.default_rng(1))
    for app in APPS:
        m = trace.app == app.name
        assert m.sum() > 50
        assert trace.fps[m].min() >= app.fps_range[0] and trace.fps[m].max() <= app.fps_range[1]
        assert trace.max_delay_ms[m].min() >= app.max_delay_ms_range[0]
        assert trace.max_delay_ms[m].max() <= app.max_delay_ms_range[1]
    assert set(trace.antenna) == {"a", "b"}


def test_trace_round_trip_is_exact(tmp_path) -> None:
    trace = generate_trace(("ant1", "ant2"), RateSchedule.constant(30), 120, np.random.default_rng(9))
    write_trace(trace, tmp_path / "t.csv")
    back = read_trace(tmp_path / "t.csv", ("ant1", "ant2"))
    np.testing.assert_array_equal(back.stream_id, trace.stream_id)
    np.testing.assert_allclose(back.start_s, trace.start_s, atol=1e-6)
    np.testing.assert_allclose(back.duration_s, trace.duration_s, atol=1e-3)
    assert (back.app == trace.app).all() and (back.frame_bytes == trace.frame_bytes).all()


HEADER = "stream_id,antenna,start_s,duration_s,app,fps,frame_bytes,max_delay_ms,min_accuracy\n"
GOOD = "1,ant1,0.5,10,ar-vr,30,30000,80,0.2\n"


@pytest.mark.parametrize(("body", "expected"), [
    (GOOD + "2,ant1,1.0,10,ar-vr,thirty,30000,80,0.2\n", "line 3, column 'fps': 'thirty' is not a number"),
    (GOOD + "2,ant9,1.0,10,ar-vr,30,30000,80,0.2\n", "line 3, column 'antenna': 'ant9' is not an antenna"),
    (GOOD + "1,ant1,1.0,10,ar-vr,30,30000,80,0.2\n", "line 3, column 'stream_id': 1 appears twice"),
    (GOOD + "2,ant1,1.0,-4,ar-vr,30,30000,80,0.2\n", "line 3, column 'duration_s': '-4' must be > 0"),
    (GOOD + "2,ant1,1.0,10,ar-vr,30,30000,80\n", "line 3: 8 fields, the header has 9"),
    (GOOD + "2,ant1,1.0,10,ar-vr,30,3e4,80,0.2\n", "line 3, column 'frame_bytes': '3e4' is not a whole number"),
    (GOOD + "2,ant1,1.0,10,ar-vr,30,30000,80,1.5\n", "line 3, column 'min_accuracy': 1.5 must be between 0 and 1"),
])
def test_malformed_trace_names_row_and_column(tmp_path, body: str, expected: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + body)
    with pytest.raises(TraceError) as err:
        read_trace(path, ("ant1",))
    assert str(path) in str(err.value) and expected in str(err.value)


def test_trace_header_errors(tmp_path) -> None:
    path = tmp_path / "h.csv"
    path.write_text(HEADER.replace("fps,", "rate,") + GOOD)
    with pytest.raises(TraceError, match="line 1: unknown column 'rate'"):
        read_trace(path)


def test_sweep_arguments_parse_lists_once_with_each_commands_defaults() -> None:
    import argparse

    from workload.args import Sweep, add_sweep_arguments, sweep_from_args

    ap = argparse.ArgumentParser()
    add_sweep_arguments(ap, lambdas_default="20,40,60,80,100")
    assert sweep_from_args(ap.parse_args([])) == Sweep((20.0, 40.0, 60.0, 80.0, 100.0), (1, 2, 3), 600.0)
    got = sweep_from_args(ap.parse_args(["--lambdas", "60, 100,", "--seeds", "4,5", "--duration", "30"]))
    assert got == Sweep((60.0, 100.0), (4, 5), 30.0)
    for bad in (["--lambdas", "sixty"], ["--lambdas", "-1"], ["--lambdas", ","], ["--seeds", "1.5"],
                ["--lambdas", "0:20,60:100"]):
        with pytest.raises(SystemExit):
            ap.parse_args(bad)
    for bad in ("-5", "0", "nan", "inf", "ten"):
        with pytest.raises(SystemExit):
            ap.parse_args(["--duration", bad])
    with pytest.raises(ValueError, match="duration"):
        Sweep((60.0,), (1,), -5.0)


def test_a_number_only_lambda_is_a_float_and_refuses_a_schedule() -> None:
    import argparse

    from workload.args import add_lambda_argument, add_workload_arguments, workload_from_args

    train = argparse.ArgumentParser()
    add_lambda_argument(train, default="60", number_only=True, what="centre of the episodes' lambdas")
    assert train.parse_args([]).lambda_per_min == 60.0
    assert train.parse_args(["--lambda", "80"]).lambda_per_min == 80.0
    with pytest.raises(SystemExit):
        train.parse_args(["--lambda", "0:20,60:100"])
    simulate = argparse.ArgumentParser()
    add_workload_arguments(simulate, lambda_default="60", duration_default_s=600.0)
    w = workload_from_args(simulate.parse_args(["--lambda", "0:20,60:100"]))
    assert w.label == "0:20,60:100" and w.generated_duration_s == 600.0
    bench = argparse.ArgumentParser()
    add_workload_arguments(bench, lambda_default="60", duration_default_s=600.0, replay=False, number_only=True)
    w = workload_from_args(bench.parse_args(["--duration", "20"]))
    assert (w.lambda_per_min, w.label, w.generated_duration_s, w.seed, w.trace) == ("60.0", "60", 20.0, 1, None)


def test_whole_number_columns_take_whole_numbers_only(tmp_path) -> None:
    """'1.0' or '5e3' for a stream id or a frame size is refused, not coerced; a number past int64 too."""
    path = tmp_path / "w.csv"
    good = "1,ant1,0,10,ar-vr,30,5000,100,0.3\n"
    for row, message in (("1.0,ant1,0,10,ar-vr,30,5000,100,0.3", "column 'stream_id': '1.0' is not a whole number"),
                         ("2,ant1,0,10,ar-vr,30,5e3,100,0.3", "column 'frame_bytes': '5e3' is not a whole number"),
                         ("9" * 23 + ",ant1,0,10,ar-vr,30,5000,100,0.3", "column 'stream_id': '9+' must be <=")):
        path.write_text(HEADER + good + row + "\n")
        with pytest.raises(TraceError, match=f"line 3, {message}"):
            read_trace(path)
    path.write_text(HEADER + good)
    assert read_trace(path).frame_bytes.tolist() == [5000]
