"""experiments/radio_whatif.py: re-judging the simulator's queries under another radio model, by hand and on a small
compare output written here (tests/conftest.py `radio_compare`), and its one-line errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from experiments import radio_whatif


def _records(rows: list[tuple]) -> pa.Table:
    """(t_send, t_response, outcome, reason) per query: a records table with the other times 1-4 ms after the send."""
    send = [r[0] for r in rows]
    return pa.table({
        "stream_id": pa.array(range(len(rows)), pa.int64()), "t_send_ms": pa.array(send, pa.float64()),
        "t_sched_ms": pa.array([s + 1 for s in send], pa.float64()),
        "t_worker_ms": pa.array([s + 2 for s in send], pa.float64()),
        "t_infer_start_ms": pa.array([s + 3 for s in send], pa.float64()),
        "t_infer_end_ms": pa.array([s + 4 for s in send], pa.float64()),
        "t_response_ms": pa.array([r[1] for r in rows], pa.float64()),
        "outcome": pa.array([r[2] for r in rows], pa.string()), "reason": pa.array([r[3] for r in rows], pa.string())})


def test_rejudge_moves_the_times_and_judges_by_the_deadline() -> None:
    table = _records([(0.0, 9.0, "ontime", None),          # +2 ms: 11 > 10, late now
                      (0.0, 9.0, "ontime", None),          # +0.5 ms: 9.5, still on time
                      (0.0, 11.0, "failed", "deadline"),   # -2 ms: 9, on time now
                      (0.0, None, "rejected", "delay"),    # not answered: stays (no time: none after)
                      (0.0, 12.0, "failed", "link-down")])  # failed otherwise: stays, whatever its time
    r = radio_whatif.rejudge(table, np.array([2.0, 0.5, -2.0, 5.0, -5.0]), np.full(5, 10.0), "ps_wire")
    assert (r.late_now, r.on_time_now) == (1, 1)
    assert r.records.column("outcome").to_pylist() == ["failed", "ontime", "ontime", "rejected", "failed"]
    assert r.records.column("reason").to_pylist() == ["deadline", None, None, "delay", "link-down"]
    assert r.records.column("t_sched_ms").to_pylist() == pytest.approx([3.0, 1.5, -1.0, 6.0, -4.0])
    assert r.records.column("t_response_ms").to_pylist()[:3] == pytest.approx([11.0, 9.5, 9.0])
    assert r.records.column("t_response_ms").to_pylist()[3] is None
    assert r.records.column("t_send_ms").to_pylist() == [0.0] * 5


def _rows(out: str) -> dict[str, str]:
    return {line.split(" | ")[0].strip("| "): line for line in out.splitlines() if line.startswith("| ")}


def _miss_the_pairs_first_frames(folder: Path) -> None:
    """Has the testbed of a `radio_compare(pairs=True)` output miss the first stream's frames of the last second."""
    path = folder / "testbed" / "load-balancing" / "records.csv"
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    for row in rows[1:]:
        if row[0] == "0" and float(row[6]) >= 2000.0:
            row[13], row[14] = "failed", "deadline"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)


def test_sharing_makes_the_simulator_miss_what_the_testbed_missed(radio_compare, capsys: pytest.CaptureFixture) -> None:
    # deadline 10.5 ms, answers 10 ms after the send; in the last second the pairs' first frames take 1 ms in FIFO
    # and 2 when shared (+1: late), their second ones 2 in both; the testbed missed those first frames
    folder = radio_compare(pairs=True, deadline_ms=10.5)
    _miss_the_pairs_first_frames(folder)
    assert radio_whatif.main([str(folder)]) == 0
    got = _rows(capsys.readouterr().out)
    # as simulated every query on time (a flat series: no correlation), the testbed 1500 of 2000
    assert got["FIFO, payload (as simulated)"] == "| FIFO, payload (as simulated) | 1.0000 | 0.7500 | -25.00 | - | 0 / 0 |"
    assert got["FIFO, wire bytes"] == "| FIFO, wire bytes | 1.0000 | 0.7500 | -25.00 | - | 0 / 0 |"  # wire = payload
    assert got["sharing, payload"] == "| sharing, payload | 0.7500 | 0.7500 | +0.00 | 1.000 | 500 / 0 |"
    assert got["sharing, wire bytes"] == "| sharing, wire bytes | 0.7500 | 0.7500 | +0.00 | 1.000 | 500 / 0 |"


def test_the_windows_are_the_compare_runs(radio_compare, capsys: pytest.CaptureFixture) -> None:
    # the same case as above in 3 s windows (report.json's): one window, no correlation either way
    folder = radio_compare(pairs=True, deadline_ms=10.5, name="wide")
    _miss_the_pairs_first_frames(folder)
    (folder / "report.json").write_text(json.dumps({"window_s": 3.0, "policies": [
        {"policy": "load-balancing", "simulator_self_correlation": 0.5}]}))
    assert radio_whatif.main([str(folder)]) == 0
    out = capsys.readouterr().out
    assert "windows of 3 s" in out and "with itself under other run seeds, as simulated: 0.500" in out
    assert _rows(out)["sharing, payload"] == "| sharing, payload | 0.7500 | 0.7500 | +0.00 | - | 500 / 0 |"


@pytest.mark.parametrize("window", [0, -1, "soon"])
def test_a_bad_window_in_the_report_is_named(radio_compare, capsys: pytest.CaptureFixture, window: object) -> None:
    folder = radio_compare()
    (folder / "report.json").write_text(json.dumps({"window_s": window}))
    assert radio_whatif.main([str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"report.json: window_s {window!r} is not a number of seconds > 0" in err and "\n" not in err


def test_a_report_without_its_window_keeps_1_s_and_the_simulators_own(radio_compare,
                                                                      capsys: pytest.CaptureFixture) -> None:
    folder = radio_compare()
    (folder / "report.json").write_text(json.dumps({"policies": [
        {"policy": "load-balancing", "simulator_self_correlation": 0.25}]}))
    assert radio_whatif.main([str(folder)]) == 0
    out = capsys.readouterr().out
    assert "windows of 1 s" in out and "as simulated: 0.250" in out


def test_wire_bytes_charge_the_measured_ratio(radio_compare, capsys: pytest.CaptureFixture) -> None:
    # one frame of 1 ms every 2 ms, the wire 1.01 x the payload: +0.01 ms on wire bytes, late past a 10.005 ms deadline
    assert radio_whatif.main([str(radio_compare(deadline_ms=10.005))]) == 0
    got = _rows(capsys.readouterr().out)
    assert got["FIFO, payload (as simulated)"].startswith("| FIFO, payload (as simulated) | 1.0000 | 1.0000 | +0.00 |")
    assert got["FIFO, wire bytes"] == "| FIFO, wire bytes | 0.0000 | 1.0000 | +100.00 | - | 1500 / 0 |"
    assert got["sharing, payload"].endswith("| 0 / 0 |")


@pytest.mark.parametrize(("remove", "message"), [
    ("simulator/load-balancing/records.csv", "records.csv: no such file"),
    ("testbed/load-balancing/wire-radio-ant1.json", "wire-radio-ant1.json: cannot read"),
    ("trace.csv", "trace.csv: cannot read"),
])
def test_a_missing_file_is_one_line_naming_it(radio_compare, capsys: pytest.CaptureFixture, remove: str,
                                              message: str) -> None:
    folder = radio_compare()
    (folder / remove).unlink()
    assert radio_whatif.main([str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_a_case_names_its_policy(radio_compare, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = radio_compare()
    assert radio_whatif.main([f"{folder}:closest"]) == 2
    assert "no testbed run of policy 'closest'" in capsys.readouterr().err
    (folder / "testbed" / "closest").mkdir()
    assert radio_whatif.main([str(folder)]) == 2
    assert f"holds the policies closest, load-balancing; name one as {folder}:POLICY" in capsys.readouterr().err
    assert radio_whatif.main([f"{folder}:load-balancing"]) == 0
    assert f"## `{folder}`: load-balancing" in capsys.readouterr().out
    assert radio_whatif.main([str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such folder" in capsys.readouterr().err
