"""The per-query record format, identical for the simulator and the testbed, its columnar batches and its writer.

One row per query; times in ms since the run's start; see docs/file-formats.md (per-query records) for each
column. A file is CSV or Parquet (by suffix), with the same columns and values: a missing time or string is
an empty CSV field and a Parquet null. pyarrow and numba are imported only when a file is written or read.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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


class RecordWriter:
    """Writes query records to a CSV or Parquet file (by suffix), sorted by send time.

    `write` takes a QueryBatch or plain columns. Rows are held until settled (a QueryBatch's `settled_ms`;
    plain columns settle at once, each call's rows sorted among themselves), then written in order of send
    time (rows sent in the same microsecond as they came): CSV in chunks (plain columns: at every call,
    flushed), Parquet per row group."""

    PARQUET_ROWS = 200_000
    """Rows per Parquet row group."""
    CSV_ROWS = 50_000
    """Settled rows gathered before they are written, while batches say more are to come (plain columns are
    written at once: a live source's records reach the disk as the run goes)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.parquet = self.path.suffix == ".parquet"
        self._labels = {name: _Labels() for name in STRING_COLUMNS}
        self._held: list[tuple[QueryBatch, np.ndarray]] = []
        """Batches not yet settled, each sorted, with its rows' rounded send times."""
        self._ready: list[Any] = []
        """Settled rows not yet written: CSV text (uint8 arrays) or, for Parquet, the batches."""
        self._ready_rows = 0
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
                                            compression="snappy")
        else:
            self._file.write((",".join(RECORD_NAMES) + "\n").encode())
            self._file.flush()

    def write(self, columns: Mapping[str, Any]) -> None:
        """Adds records: a QueryBatch, or every record column as arrays or lists of equal length."""
        batch = as_query_batch(columns)
        self.rows += batch.rows
        if batch.rows:
            self._held.append(_sorted(self._renumbered(batch)))
        settled = self._settle(batch.settled_ms)
        if settled is not None:
            self._ready.append(settled if self.parquet else self._csv_text(settled, math.isfinite(batch.settled_ms)))
            self._ready_rows += settled.rows
        if self._ready_rows >= (self.PARQUET_ROWS if self.parquet else self.CSV_ROWS) or (
                not self.parquet and not math.isfinite(batch.settled_ms)):
            self._write_ready()

    def _renumbered(self, batch: QueryBatch) -> QueryBatch:
        """Returns the batch with string codes numbering this file's labels (the per-column `_Labels`)."""
        codes = {name: (self._labels[name].renumber(*batch.codes[name]), None) for name in STRING_COLUMNS}
        return QueryBatch(batch.numbers, codes)

    def _settle(self, before_ms: float) -> QueryBatch | None:
        """Returns the held rows sent before `before_ms`, sorted (None if none); keeps the rest."""
        parts, keep = [], []
        for batch, send in self._held:
            k = len(send) if not math.isfinite(before_ms) else int(np.searchsorted(send, before_ms))
            if k:
                parts.append(_take(batch, slice(0, k)))
            if k < len(send):
                keep.append((_take(batch, slice(k, None)), send[k:]))
        self._held = keep
        if len(parts) <= 1:
            return parts[0] if parts else None
        return _sorted(_concat(parts))[0]

    def _write_ready(self) -> None:
        ready, self._ready, self._ready_rows = self._ready, [], 0
        if self.parquet:
            if ready:  # one contiguous row group: many small chunks write several times slower
                batch = _concat(ready)
                self._writer.write_batch(self._arrow_batch(batch), row_group_size=max(batch.rows, 1))
            return
        for text in ready:
            self._file.write(memoryview(text))
        self._file.flush()

    def _csv_text(self, batch: QueryBatch, streaming: bool = False) -> np.ndarray:
        """Returns the rows as CSV text; compiled when `streaming` (the simulator's windows: many rows to come)."""
        from analysis.records_csv import FLOAT, INT, STRING, csv_label, format_rows

        kinds, index, ints, floats, codes = [], [], [], [], []
        label_start, blobs, base = [0], [], 0
        for name, typ in RECORD_COLUMNS:
            if typ == "string":
                kinds.append(STRING)
                index.append(len(codes))
                c = batch.codes[name][0]
                codes.append(np.where(c >= 0, c + base, -1))
                for s in self._labels[name].names:
                    blobs.append(csv_label(s))
                    label_start.append(label_start[-1] + len(blobs[-1]))
                base += len(self._labels[name].names)
            else:
                target = floats if typ == "float64" else ints
                kinds.append(FLOAT if typ == "float64" else INT)
                index.append(len(target))
                target.append(batch.numbers[name])
        n = batch.rows
        return format_rows(np.array(kinds, dtype=np.int64), np.array(index, dtype=np.int64),
                           _stack(ints, n, np.int64), _stack(floats, n, np.float64), _stack(codes, n, np.int64),
                           np.array(label_start, dtype=np.int64),
                           np.frombuffer(b"".join(blobs), dtype=np.uint8), max((len(b) for b in blobs), default=0),
                           compiled=True if streaming else None)

    def _arrow_batch(self, batch: QueryBatch):  # noqa: ANN202 (a pyarrow RecordBatch)
        import pyarrow as pa

        arrays = []
        for name, typ in RECORD_COLUMNS:
            if typ == "string":
                c = batch.codes[name][0]
                labels = self._labels[name]
                if labels.arrow is None or len(labels.arrow) != len(labels.names):
                    labels.arrow = pa.array(labels.names, pa.string())
                arrays.append(pa.DictionaryArray.from_arrays(pa.array(c.astype(np.int32), mask=c < 0), labels.arrow))
            elif typ == "float64":
                arrays.append(pa.array(_round_ms(batch.numbers[name]), from_pandas=True))  # NaN -> null
            else:
                arrays.append(pa.array(batch.numbers[name]))
        return pa.RecordBatch.from_arrays(arrays, schema=_arrow_schema(dictionary=True))

    def close(self) -> None:
        """Writes every held row (all are settled once nothing more comes) and closes the file."""
        if self._file.closed:
            return
        settled = self._settle(math.inf)
        if settled is not None:
            self._ready.append(settled if self.parquet else self._csv_text(settled))
        self._write_ready()
        if self.parquet:
            self._writer.close()
        self._file.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _arrow_schema(dictionary: bool):  # noqa: ANN202 (pyarrow imported here)
    import pyarrow as pa

    return pa.schema([(name, pa.dictionary(pa.int32(), pa.string()) if dictionary and typ == "string" else typ)
                      for name, typ in RECORD_COLUMNS])


def _round_ms(values: np.ndarray) -> np.ndarray:
    """Returns times rounded to the microsecond, as the files hold them: finer digits are noise."""
    return np.round(values, 3)


def _concat(batches: list[QueryBatch]) -> QueryBatch:
    if len(batches) == 1:
        return batches[0]
    if not batches:
        return QueryBatch({name: np.zeros(0, dtype=np.float64 if typ == "float64" else np.int64)
                           for name, typ in RECORD_COLUMNS if typ != "string"},
                          {name: (np.zeros(0, dtype=np.int64), None) for name in STRING_COLUMNS})
    return QueryBatch({k: np.concatenate([b.numbers[k] for b in batches]) for k in batches[0].numbers},
                      {k: (np.concatenate([b.codes[k][0] for b in batches]), None) for k in STRING_COLUMNS})


def _sorted(batch: QueryBatch) -> tuple[QueryBatch, np.ndarray]:
    """Returns the batch in order of rounded send time (a stable sort: ties as they came), and those times."""
    send = _round_ms(batch.numbers["t_send_ms"])
    order = np.argsort(send, kind="stable")
    return _take(batch, order), send[order]


def _take(batch: QueryBatch, rows: np.ndarray | slice) -> QueryBatch:
    return QueryBatch({k: v[rows] for k, v in batch.numbers.items()},
                      {k: (c[rows], labels) for k, (c, labels) in batch.codes.items()})


def _stack(columns: list[np.ndarray], n: int, dtype: type) -> np.ndarray:
    return np.stack(columns).astype(dtype, copy=False) if columns else np.zeros((0, n), dtype=dtype)


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
