"""The per-query record format, identical for the simulator and the testbed, its columnar batches and its writer.

One row per query; times in ms since the run's start; see docs/file-formats.md (per-query records) for each
column. A file is CSV or Parquet (by suffix), with the same columns and values: a missing time or string is
an empty CSV field and a Parquet null. pyarrow and numba are imported only when a file is written or read.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from analysis.records_csv import FLOAT, INT, STRING, csv_label

RECORD_COLUMNS: tuple[tuple[str, str], ...] = (
    ("stream_id", "int64"),
    ("query", "int64"),
    ("antenna", "string"),
    ("app", "string"),
    ("cluster", "string"),
    ("variant", "string"),
    ("t_send_ms", "float64"),
    ("t_sched_ms", "float64"),
    ("t_worker_ms", "float64"),
    ("t_infer_start_ms", "float64"),
    ("t_infer_end_ms", "float64"),
    ("t_response_ms", "float64"),
    ("batch_size", "int64"),
    ("outcome", "string"),
    ("reason", "string"),
)
"""(name, Arrow type name) of every column, in file order."""
RECORD_NAMES = tuple(name for name, _ in RECORD_COLUMNS)
STRING_COLUMNS = tuple(name for name, typ in RECORD_COLUMNS if typ == "string")
PANDAS_DTYPES = {name: "str" if typ == "string" else typ for name, typ in RECORD_COLUMNS}
"""`pandas.read_csv(path, dtype=PANDAS_DTYPES)` reads a CSV file into the frame `pandas.read_parquet` gives of
the same records, always; without it pandas guesses each column from its text, and a column holding no value at
all (no query failed or was rejected, say) comes back as floats."""
PATH_STAGES: tuple[tuple[str, str, str], ...] = (
    ("network up (to scheduler)", "t_send_ms", "t_sched_ms"),
    ("network up (scheduler to worker)", "t_sched_ms", "t_worker_ms"),
    ("queueing", "t_worker_ms", "t_infer_start_ms"),
    ("inference", "t_infer_start_ms", "t_infer_end_ms"),
    ("network down", "t_infer_end_ms", "t_response_ms"),
)
"""A query's path in the log, stage by stage, as (name, start column, end column); each ends where the next
starts."""
OUTCOMES = ("ontime", "failed", "rejected")
ONTIME, FAILED, REJECTED = 0, 1, 2


def __getattr__(name: str) -> Any:
    if name == "RECORD_SCHEMA":  # built on first use: pyarrow is imported only where records are written or read
        import pyarrow as pa

        return pa.schema(list(RECORD_COLUMNS))
    raise AttributeError(name)


@dataclass(frozen=True, eq=False)
class QueryBatch(Mapping[str, np.ndarray]):
    """Records of many queries, one array per column; string columns as codes into labels (-1: missing), so
    that no string is built per query. As a mapping it gives each column as an array, a string column as
    labels ("" where missing)."""

    numbers: dict[str, np.ndarray]
    """The int64 and float64 columns (NaN: a missing time)."""
    codes: dict[str, tuple[np.ndarray, np.ndarray]]
    """Each string column as (int64 codes, object array of labels)."""
    settled_ms: float = math.inf
    """Every record written after this batch is sent at or after this time: those sent before are final."""

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self.numbers:
            return self.numbers[name]
        codes, labels = self.codes[name]
        return np.append(labels, "")[codes]  # code -1 picks the ""

    def __iter__(self) -> Iterator[str]:
        return iter(RECORD_NAMES)

    def __len__(self) -> int:
        return len(RECORD_NAMES)

    @property
    def rows(self) -> int:
        return len(self.numbers["stream_id"])


def as_query_batch(columns: Mapping[str, Any]) -> QueryBatch:
    """Returns columns given as arrays or lists (strings as str; "" or None: missing) as a QueryBatch."""
    if isinstance(columns, QueryBatch):
        return columns
    values, codes = {}, {}
    for name, typ in RECORD_COLUMNS:
        if typ == "string":
            text = np.array(["" if s is None else s for s in columns[name]], dtype=object)
            labels, inverse = np.unique(text.astype(str), return_inverse=True)
            code = inverse.astype(np.int64).reshape(-1)
            if len(labels) and labels[0] == "":
                labels, code = labels[1:], code - 1
            codes[name] = (code, labels.astype(object))
        else:
            values[name] = np.asarray(columns[name], dtype=np.float64 if typ == "float64" else np.int64)
    return QueryBatch(values, codes)


@dataclass
class _Labels:
    """One string column's labels across a file: batch labels mapped to file-wide numbers."""

    names: list[str] = field(default_factory=list)
    number: dict[str, int] = field(default_factory=dict)
    last: tuple[np.ndarray, np.ndarray | None] | None = None
    """The last batch's labels and their numbers, None where they number as the file does (the simulator hands
    the same labels every time)."""
    arrow: Any = None
    """`names` as an Arrow array (a Parquet file's dictionary), made again when names are added."""

    def renumber(self, codes: np.ndarray, labels: np.ndarray) -> np.ndarray:
        if self.last is None or self.last[0] is not labels:
            for s in labels:
                if s not in self.number:
                    self.number[s] = len(self.names)
                    self.names.append(s)
            lut = np.array([self.number[s] for s in labels] + [-1], dtype=np.int64)
            self.last = (labels, None if (lut[:-1] == np.arange(len(labels))).all() else lut)
        return codes if self.last[1] is None else self.last[1][codes]  # code -1 picks the -1 appended


@dataclass
class _Run:
    """The rows of one batch not yet written, in order of send time: batch rows `order`, sent at `send_ms`
    (rounded). The batch's columns are never copied to sort them: whoever writes the rows reads them through
    `order`."""

    batch: QueryBatch
    order: np.ndarray
    send_ms: np.ndarray
    stacked: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    """The batch's int, float and code columns as 2-D arrays (CSV), made on first use."""


@dataclass
class _Settled:
    """Settled rows in order of send time: rows `rows[i]` of `runs[i]`, then reordered by `merge` (None: the
    runs' rows one after the other are in order)."""

    runs: list[_Run]
    rows: list[np.ndarray]
    merge: np.ndarray | None

    @property
    def n(self) -> int:
        return sum(len(r) for r in self.rows)

    def take(self, name: str, out: np.ndarray) -> None:
        """Fills `out` (n values) with a column of the rows, in order."""
        src = [run.batch.numbers[name] if name in run.batch.numbers else run.batch.codes[name][0]
               for run in self.runs]
        # mode="clip" (the indices are valid): with "raise" np.take into `out` buffers, several times slower.
        if self.merge is None:
            np.take(src[0], self.rows[0], out=out, mode="clip")
        else:
            np.take(np.concatenate([s[r] for s, r in zip(src, self.rows, strict=True)]), self.merge, out=out,
                    mode="clip")


def _gather(ready: list[_Settled], name: str, dtype: type) -> np.ndarray:
    """Returns a column of settled rows, one after the other, in one array."""
    out = np.empty(sum(s.n for s in ready), dtype=dtype)
    at = 0
    for s in ready:
        s.take(name, out[at:at + s.n])
        at += s.n
    return out


class RecordWriter:
    """Writes query records to a CSV or Parquet file (by suffix), sorted by send time.

    `write` takes a QueryBatch or plain columns. Rows are held until settled (a QueryBatch's `settled_ms`;
    plain columns settle at once, each call's rows sorted among themselves), then written in order of send
    time (rows sent in the same microsecond as they came): CSV at every call (plain columns: flushed), Parquet per
    row group. Batches that say more are to come (a finite `settled_ms`: the simulator's) are formatted and written
    by one background thread, while the caller goes on (numba and pyarrow release the GIL while they work); an
    error there is raised by the next `write` or `close`."""

    PARQUET_ROWS = 200_000
    """Rows per Parquet row group."""
    PENDING = 2
    """Writes the background thread may have queued before `write` waits for the oldest (bounds memory)."""
    COMPRESSION = "snappy"
    """Parquet's compression: every reader has it; docs/file-formats.md weighs the choices."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.parquet = self.path.suffix == ".parquet"
        self._labels = {name: _Labels() for name in STRING_COLUMNS}
        self._held: list[_Run] = []
        """Batches whose rows are not all settled."""
        self._ready: list[_Settled] = []
        """Settled rows not yet written (Parquet: until a row group's worth)."""
        self._ready_rows = 0
        self._pending: deque[Future] = deque()
        self._thread: ThreadPoolExecutor | None = None
        self.rows = 0
        self._file = self.path.open("wb")
        if self.parquet:
            import pyarrow.parquet as pq

            # Strings go in as dictionaries and are written as such; without the Arrow schema in the file every
            # reader (pyarrow, pandas, DuckDB) sees plain strings, as in the CSV. Floats byte-stream-split
            # (compresses times well, fast), statistics only for the send time (what a reader filters on):
            # four times faster to write than pyarrow's defaults.
            times = [name for name, typ in RECORD_COLUMNS if typ == "float64"]
            self._writer = pq.ParquetWriter(self._file, _arrow_schema(dictionary=True), store_schema=False,
                                            use_dictionary=list(STRING_COLUMNS), use_byte_stream_split=times,
                                            write_statistics=["t_send_ms"], data_page_version="1.0",
                                            compression=self.COMPRESSION)
        else:
            self._file.write((",".join(RECORD_NAMES) + "\n").encode())
            self._file.flush()

    def write(self, columns: Mapping[str, Any]) -> None:
        """Adds records: a QueryBatch, or every record column as arrays or lists of equal length."""
        batch = as_query_batch(columns)
        streaming = math.isfinite(batch.settled_ms)
        self.rows += batch.rows
        if batch.rows:
            self._held.append(_run(self._renumbered(batch)))
        settled = self._settle(batch.settled_ms)
        if settled is not None:
            self._ready.append(settled)
            self._ready_rows += settled.n
        if not self.parquet or self._ready_rows >= self.PARQUET_ROWS:
            self._write_ready(background=streaming)

    def _renumbered(self, batch: QueryBatch) -> QueryBatch:
        """Returns the batch with string codes numbering this file's labels (the per-column `_Labels`)."""
        codes = {name: (self._labels[name].renumber(*batch.codes[name]), None) for name in STRING_COLUMNS}
        return QueryBatch(batch.numbers, codes)

    def _settle(self, before_ms: float) -> _Settled | None:
        """Returns the held rows sent before `before_ms` (None if none); keeps the rest."""
        runs, rows, keep = [], [], []
        for run in self._held:
            k = len(run.send_ms) if not math.isfinite(before_ms) else int(np.searchsorted(run.send_ms, before_ms))
            if k:
                runs.append(run)
                rows.append(run.order[:k])
            if k < len(run.send_ms):
                keep.append(_Run(run.batch, run.order[k:], run.send_ms[k:], run.stacked))
        self._held = keep
        if not runs:
            return None
        # Ties keep the runs' order: the earlier batch's rows first, as they came.
        merge = None if len(runs) == 1 else np.argsort(
            np.concatenate([run.send_ms[:len(r)] for run, r in zip(runs, rows, strict=True)]), kind="stable")
        return _Settled(runs, rows, merge)

    def _write_ready(self, background: bool) -> None:
        """Writes the settled rows: in the background thread while more are to come, else here (then flushed)."""
        ready, self._ready, self._ready_rows = self._ready, [], 0
        if not ready:
            return
        if self.parquet:
            job = partial(self._write_parquet, ready, [self._arrow_labels(name) for name in STRING_COLUMNS])
        else:
            job = partial(self._write_csv, ready, self._csv_labels(), background)
        if not background:
            self._wait(0)
            job()
            return
        self._wait(self.PENDING - 1)
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="records")
        self._pending.append(self._thread.submit(job))

    def _wait(self, pending: int) -> None:
        """Waits until at most `pending` background writes are queued; raises the error of any that failed."""
        while self._pending and (len(self._pending) > pending or self._pending[0].done()):
            self._pending.popleft().result()

    def _csv_labels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """Returns every string column's labels for the CSV formatter: the first label number of each column, the
        labels' start offsets, their bytes and the longest one's length."""
        base, start, blobs = [], [0], []
        for name in STRING_COLUMNS:
            base.append(len(blobs))
            for s in self._labels[name].names:
                blobs.append(csv_label(s))
                start.append(start[-1] + len(blobs[-1]))
        return (np.array(base, dtype=np.int64), np.array(start, dtype=np.int64),
                np.frombuffer(b"".join(blobs), dtype=np.uint8), max((len(b) for b in blobs), default=0))

    def _write_csv(self, ready: list[_Settled], labels: tuple, streaming: bool) -> None:
        from analysis.records_csv import format_rows

        base, label_start, label_bytes, max_label = labels
        for settled in ready:
            if len(settled.runs) == 1:
                ints, floats, codes = _stacked(settled.runs[0])
                rows = settled.rows[0]
            else:
                parts = [_stacked(run) for run in settled.runs]
                ints, floats, codes = (np.concatenate([p[i][:, r] for p, r in zip(parts, settled.rows, strict=True)],
                                                      axis=1) for i in range(3))
                rows = settled.merge
            text = format_rows(_KINDS, _INDEX, base, ints, floats, codes, rows, label_start, label_bytes, max_label,
                               compiled=True if streaming else None)
            self._file.write(memoryview(text))
        if not streaming:
            self._file.flush()

    def _arrow_labels(self, name: str):  # noqa: ANN202 (a pyarrow Array)
        import pyarrow as pa

        labels = self._labels[name]
        if labels.arrow is None or len(labels.arrow) != len(labels.names):
            labels.arrow = pa.array(labels.names, pa.string())
        return labels.arrow

    def _write_parquet(self, ready: list[_Settled], dictionaries: list[Any]) -> None:
        import pyarrow as pa

        n = sum(s.n for s in ready)
        arrays, strings = [], iter(dictionaries)
        for name, typ in RECORD_COLUMNS:
            values = _gather(ready, name, np.float64 if typ == "float64" else np.int64)
            if typ == "string":
                arrays.append(pa.DictionaryArray.from_arrays(pa.array(values.astype(np.int32), mask=values < 0),
                                                             next(strings)))
            elif typ == "float64":
                # NaN -> null; a mask from isnan converts ten times faster than from_pandas=True.
                arrays.append(pa.array(np.round(values, 3, out=values), mask=np.isnan(values)))
            else:
                arrays.append(pa.array(values))
        # One contiguous row group: many small chunks write several times slower.
        self._writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=_arrow_schema(dictionary=True)),
                                 row_group_size=max(n, 1))

    def close(self) -> None:
        """Writes every held row (all are settled once nothing more comes) and closes the file."""
        if self._file.closed:
            return
        try:
            self._wait(0)
            settled = self._settle(math.inf)
            if settled is not None:
                self._ready.append(settled)
            self._write_ready(background=False)
        finally:
            if self._thread is not None:
                self._thread.shutdown(wait=True)
            if self.parquet:
                self._writer.close()
            self._file.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_KINDS = np.array([FLOAT if typ == "float64" else INT if typ == "int64" else STRING for _, typ in RECORD_COLUMNS],
                  dtype=np.int64)
_INDEX = np.array([[name for name, t in RECORD_COLUMNS if t == typ].index(name) for name, typ in RECORD_COLUMNS],
                  dtype=np.int64)
"""The record layout for the CSV formatter: each column's kind and its row in the ints, floats or codes."""


def _arrow_schema(dictionary: bool):  # noqa: ANN202 (pyarrow imported here)
    import pyarrow as pa

    return pa.schema([(name, pa.dictionary(pa.int32(), pa.string()) if dictionary and typ == "string" else typ)
                      for name, typ in RECORD_COLUMNS])


def _round_ms(values: np.ndarray) -> np.ndarray:
    """Returns times rounded to the microsecond, as the files hold them: finer digits are noise."""
    return np.round(values, 3)


def _run(batch: QueryBatch) -> _Run:
    """Returns the batch's rows in order of rounded send time (a stable sort: ties as they came)."""
    send = _round_ms(batch.numbers["t_send_ms"])
    order = np.argsort(send, kind="stable")
    return _Run(batch, order, send[order])


def _stacked(run: _Run) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (and keeps) the run's batch as the CSV formatter's int, float and code arrays."""
    if run.stacked is None:
        b = run.batch
        run.stacked = tuple(np.stack([b.numbers[name] if name in b.numbers else b.codes[name][0]
                                      for name, t in RECORD_COLUMNS if t == typ]).astype(dtype, copy=False)
                            for typ, dtype in (("int64", np.int64), ("float64", np.float64), ("string", np.int64)))
    return run.stacked


def read_records(path: str | Path):  # noqa: ANN201 (a pyarrow Table; pyarrow imported here)
    """Returns the records of a CSV or Parquet file as an Arrow table with the documented column types
    (missing values as nulls, in both)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if Path(path).suffix == ".parquet":
        return pq.read_table(Path(path), schema=_arrow_schema(dictionary=False))
    opts = pacsv.ConvertOptions(column_types=dict(RECORD_COLUMNS), strings_can_be_null=True,
                                quoted_strings_can_be_null=False)
    return pacsv.read_csv(Path(path), convert_options=opts)
