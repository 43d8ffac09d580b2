"""Per-query records: CSV and Parquet hold the same rows, read back equal with pandas, missing values as nulls,
rows sorted by send time; the CSV formatter gives the same bytes compiled and as Python."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from analysis import records_csv
from analysis.records import PANDAS_DTYPES, RECORD_COLUMNS, RECORD_NAMES, RecordWriter, read_records
from scheduler.core import policy_index
from scheduler.profiles import load_profiles
from scheduler.system import build_system
from simulator.engine import SimConfig, Simulation
from topologies import load_topology
from workload.args import Workload


def simulate_to(paths: list[Path], lam: str = "300", duration_s: float = 20.0) -> int:
    """Runs one simulation on full-edge (loaded: queries queue, are rejected and fail) into every file."""
    system = build_system(load_topology("full-edge"), load_profiles())
    trace, _ = Workload(lambda_per_min=lam, duration_s=duration_s, seed=4, trace=None,
                        default_duration_s=duration_s).build(system.antennas)
    writers = [RecordWriter(p) for p in paths]

    def sink(batch) -> None:
        for w in writers:
            w.write(batch)

    sim = Simulation(system, trace, SimConfig(duration_s=duration_s), seed=4, record_sink=sink)
    sim.run(policy_index("closest"))
    for w in writers:
        w.close()
    return sim.queries_done


@pytest.fixture(scope="module")
def both(tmp_path_factory) -> tuple[Path, Path, int]:
    d = tmp_path_factory.mktemp("records")
    csv, parquet = d / "records.csv", d / "records.parquet"
    n = simulate_to([csv, parquet])
    return csv, parquet, n


def test_csv_and_parquet_read_back_equal_with_pandas(both) -> None:
    csv, parquet, n = both
    a, b = pd.read_csv(csv), pd.read_parquet(parquet)
    assert len(a) == n > 10_000
    assert list(a.columns) == list(RECORD_NAMES)
    assert a.dtypes.to_dict() == b.dtypes.to_dict()
    pd.testing.assert_frame_equal(a, b)
    assert set(a["outcome"]) == {"ontime", "failed", "rejected"}  # every kind of row is compared
    pd.testing.assert_frame_equal(pd.read_csv(csv, dtype=PANDAS_DTYPES), b)


def test_both_read_back_equal_as_arrow_tables(both) -> None:
    csv, parquet, _ = both
    assert read_records(csv).equals(read_records(parquet))


def test_missing_values_are_nulls_in_parquet(both) -> None:
    _, parquet, _ = both
    t = pq.read_table(parquet)
    outcome = t.column("outcome").to_numpy(zero_copy_only=False)
    for name in ("reason", "cluster", "variant"):
        values = t.column(name).to_pylist()
        assert "" not in values, name
    reason = np.array(t.column("reason").to_pylist(), dtype=object)
    assert all(reason[outcome == "ontime"] == None)  # noqa: E711 (elementwise)
    cluster = np.array(t.column("cluster").to_pylist(), dtype=object)
    at_binding = np.isin(reason, ["task", "accuracy", "delay", "capacity"])
    assert at_binding.any() and all(cluster[at_binding] == None)  # noqa: E711
    assert all(cluster[reason == "queue-full"] != None)  # noqa: E711
    assert t.column("t_response_ms").null_count == int((outcome == "rejected").sum()) > 0
    assert not np.isnan(t.column("t_response_ms").drop_null().to_numpy()).any()


def test_rows_are_sorted_by_send_time(both) -> None:
    csv, parquet, _ = both
    for frame in (pd.read_csv(csv), pd.read_parquet(parquet)):
        assert frame["t_send_ms"].is_monotonic_increasing
        assert not frame.duplicated(["stream_id", "query"]).any()


def test_plain_columns_with_empty_strings_and_nan_write_nulls(tmp_path: Path) -> None:
    # What a live source hands over: lists, "" and NaN for what it does not know, rows in answer order.
    row = {name: (0 if typ == "int64" else math.nan if typ == "float64" else "") for name, typ in RECORD_COLUMNS}
    rows = [dict(row, stream_id=1, query=1, antenna="a1", app="ar", outcome="rejected", reason="worker-down",
                 t_send_ms=20.0),
            dict(row, stream_id=1, query=0, antenna="a1", app="ar", cluster="dc", variant="v,1", outcome="ontime",
                 t_send_ms=10.0004, t_response_ms=30.5, batch_size=2)]
    for suffix in ("csv", "parquet"):
        with RecordWriter(tmp_path / f"r.{suffix}") as w:
            w.write({name: [r[name] for r in rows] for name in RECORD_NAMES})
    a, b = pd.read_csv(tmp_path / "r.csv", dtype=PANDAS_DTYPES), pd.read_parquet(tmp_path / "r.parquet")
    pd.testing.assert_frame_equal(a, b)  # with the dtypes: its "cluster" column has no value pandas could type
    assert a["query"].tolist() == [0, 1]  # sorted by send time
    assert a["variant"].iloc[0] == "v,1"  # quoted in the CSV
    assert a["t_send_ms"].iloc[0] == 10.0 and a["t_response_ms"].iloc[0] == 30.5
    assert pd.isna(a["cluster"].iloc[1]) and pd.isna(a["reason"].iloc[0]) and pd.isna(a["t_response_ms"].iloc[1])


def format_both(floats: np.ndarray, ints: np.ndarray, rows: np.ndarray | None = None) -> tuple[bytes, bytes]:
    kinds = np.array([records_csv.INT, records_csv.FLOAT, records_csv.STRING], dtype=np.int64)
    index = np.zeros(3, dtype=np.int64)
    codes = np.where(np.arange(len(floats)) % 3 == 0, -1, np.arange(len(floats)) % 2)[None, :]
    rows = np.arange(len(floats)) if rows is None else rows
    args = (kinds, index, np.ones(1, dtype=np.int64), ints[None, :], floats[None, :], codes, rows,
            np.array([0, 1, 2, 5]), np.frombuffer(b'xa"b"', dtype=np.uint8), 3)
    compiled = records_csv.format_rows(*args, compiled=True).tobytes()
    python = records_csv.format_rows(*args, compiled=False).tobytes()
    return compiled, python


def test_csv_formatter_compiled_and_python_write_the_same_bytes() -> None:
    rng = np.random.default_rng(0)
    floats = np.concatenate([[0.0, -0.0, 0.0004, 0.0005, 0.0015, 1.5, 2.25, 12.3456789, -3.2, 8.9e12, np.nan, 1e-9],
                             rng.uniform(0, 1e7, 500), rng.exponential(10, 500)])
    ints = rng.integers(-10**12, 10**12, len(floats))
    compiled, python = format_both(floats, ints)
    assert compiled == python
    lines = compiled.decode().splitlines()
    assert lines[0].startswith(f"{ints[0]},0.0,")
    assert [line.split(",")[1] for line in lines[:6]] == ["0.0", "0.0", "0.0", "0.0", "0.002", "1.5"]
    assert lines[10].split(",")[1] == ""
    written = [float(x.split(",")[1]) if x.split(",")[1] else np.nan for x in lines]
    np.testing.assert_array_equal(written, np.round(floats, 3))
    assert [x.split(",")[2] for x in lines[:3]] == ["", '"b"', "a"]  # codes count from the column's base label


def test_csv_formatter_writes_the_rows_in_the_order_given() -> None:
    rng = np.random.default_rng(1)
    floats, ints = rng.uniform(0, 1e4, 3000), rng.integers(0, 10**6, 3000)
    rows = rng.permutation(3000)
    in_order = format_both(floats, ints)[0].decode().splitlines()
    for text in format_both(floats, ints, rows):
        assert text.decode().splitlines() == [in_order[r] for r in rows]


def test_csv_formatter_refuses_times_it_cannot_write() -> None:
    for compiled in (True, False):
        with pytest.raises(ValueError, match="record 1 of the batch: a time is infinite or beyond"):
            records_csv.format_rows(np.array([records_csv.FLOAT]), np.zeros(1, dtype=np.int64),
                                    np.zeros(0, dtype=np.int64), np.zeros((0, 2), dtype=np.int64),
                                    np.array([[1.0, np.inf]]), np.zeros((0, 2), dtype=np.int64), np.arange(2),
                                    np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.uint8), 0, compiled=compiled)


def test_the_live_merge_sorts_the_sources_interleaved_rows_by_send_time(tmp_path: Path) -> None:
    from live.merge import RecordMerger

    rng = np.random.default_rng(2)
    parts, lines = [tmp_path / "s1.csv", tmp_path / "s2.csv"], []
    merger = RecordMerger(parts, tmp_path / "records.csv")
    for flush in range(3):  # each source's flushes sorted, the two sources' interleaved
        for i, part in enumerate(parts):
            n = 40
            send = np.sort(rng.uniform(0, 1000, n).round(1)) + 1000 * flush
            send[:3] = send[0]  # rows sent in the same microsecond: kept in the order they came
            cols = {name: np.zeros(n) for name, _ in RECORD_COLUMNS}
            cols.update(stream_id=np.full(n, i), query=np.arange(n) + 100 * flush, t_send_ms=send,
                        antenna=["a,1"] * n, app=["x"] * n, cluster=[None] * n, variant=["v"] * n,
                        outcome=["ontime"] * n, reason=[""] * n, t_response_ms=np.where(send > 500, send + 1, np.nan))
            with part.open("ab") as f:
                start = f.tell()
            w = RecordWriter(tmp_path / "one.csv")
            w.write(cols)
            w.close()
            text = (tmp_path / "one.csv").read_bytes().split(b"\n", 1)[1]
            with part.open("ab") as f:
                f.write((tmp_path / "one.csv").read_bytes() if start == 0 else text)
            lines += text.splitlines()
            merger.poll()
    merger.close()
    merged = (tmp_path / "records.csv").read_bytes().splitlines()
    assert merged[0].decode() == ",".join(RECORD_NAMES)
    assert sorted(merged[1:]) == sorted(lines)  # the same lines, byte for byte
    frame = pd.read_csv(tmp_path / "records.csv", dtype=PANDAS_DTYPES)
    assert frame["t_send_ms"].is_monotonic_increasing
    (tmp_path / "appended.csv").write_bytes(b"\n".join([merged[0], *lines]) + b"\n")
    assert not pd.read_csv(tmp_path / "appended.csv")["t_send_ms"].is_monotonic_increasing  # as they came
    first = frame[frame["t_send_ms"] == frame["t_send_ms"].iloc[0]]
    assert first["query"].tolist() == [0, 1, 2] and first["stream_id"].nunique() == 1


def test_an_error_in_the_writers_thread_is_raised_by_close(tmp_path: Path) -> None:
    from analysis.records import QueryBatch, as_query_batch

    n = 3000
    cols = {name: np.zeros(n) for name, _ in RECORD_COLUMNS}
    cols.update(t_send_ms=np.arange(n, dtype=float), t_response_ms=np.full(n, np.inf), antenna=["a"] * n,
                app=["x"] * n, cluster=["c"] * n, variant=["v"] * n, outcome=["ontime"] * n, reason=[""] * n)
    plain = as_query_batch(cols)
    w = RecordWriter(tmp_path / "r.csv")
    w.write(QueryBatch(plain.numbers, plain.codes, settled_ms=float(n)))  # more to come: written in the thread
    with pytest.raises(ValueError, match="record 0 of the batch: a time is infinite"):
        w.close()
    assert w._file.closed
