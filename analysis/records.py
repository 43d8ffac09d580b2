"""The per-query record format, identical for the simulator and the testbed, and its streaming writer.

One row per query; times in ms since the run's start; see docs/file-formats.md (per-query records) for each column.
CSV (flushed batch by batch, what the testbed writes) or Parquet (much faster to write; by file suffix).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

RECORD_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("stream_id", pa.int64()),
    ("query", pa.int64()),
    ("antenna", pa.string()),
    ("app", pa.string()),
    ("cluster", pa.string()),
    ("variant", pa.string()),
    ("t_send_ms", pa.float64()),
    ("t_sched_ms", pa.float64()),
    ("t_worker_ms", pa.float64()),
    ("t_infer_start_ms", pa.float64()),
    ("t_infer_end_ms", pa.float64()),
    ("t_response_ms", pa.float64()),
    ("batch_size", pa.int64()),
    ("outcome", pa.string()),
    ("reason", pa.string()),
)
RECORD_SCHEMA = pa.schema(list(RECORD_COLUMNS))
OUTCOMES = ("ontime", "failed", "rejected")
ONTIME, FAILED, REJECTED = 0, 1, 2


class RecordWriter:
    """Appends batches of query records to a CSV file (flushed per batch) or a Parquet file (by suffix)."""

    PARQUET_ROWS = 200_000
    """Rows buffered per Parquet row group."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.parquet = self.path.suffix == ".parquet"
        self._file = self.path.open("wb")
        if self.parquet:
            self._writer = pq.ParquetWriter(self._file, RECORD_SCHEMA)
        else:
            self._writer = pacsv.CSVWriter(self._file, RECORD_SCHEMA,
                                           write_options=pacsv.WriteOptions(quoting_style="none"))
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self.rows = 0

    def write(self, columns: dict[str, np.ndarray | list]) -> None:
        """Writes one batch; `columns` holds every record column, as arrays of equal length."""
        n = len(columns["stream_id"])
        if n == 0:
            return
        arrays = [pa.array(_rounded(columns[name]) if typ == pa.float64() else columns[name], type=typ)
                  for name, typ in RECORD_COLUMNS]
        batch = pa.RecordBatch.from_arrays(arrays, schema=RECORD_SCHEMA)
        self.rows += n
        if self.parquet:
            self._pending.append(batch)
            self._pending_rows += n
            if self._pending_rows >= self.PARQUET_ROWS:
                self._flush_parquet()
            return
        self._writer.write_batch(batch)
        self._file.flush()

    def _flush_parquet(self) -> None:
        if self._pending:
            self._writer.write_table(pa.Table.from_batches(self._pending, schema=RECORD_SCHEMA))
            self._pending, self._pending_rows = [], 0

    def close(self) -> None:
        if not self._file.closed:
            if self.parquet:
                self._flush_parquet()
            self._writer.close()
            self._file.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _rounded(values: np.ndarray | list) -> np.ndarray:
    """Returns times rounded to the microsecond: finer digits are noise, and short numbers write faster."""
    return np.round(np.asarray(values, dtype=np.float64), 3)


def read_records(path: str | Path) -> pa.Table:
    """Returns the records of a CSV or Parquet log as an Arrow table with the documented column types."""
    if Path(path).suffix == ".parquet":
        return pq.read_table(Path(path), schema=RECORD_SCHEMA)
    opts = pacsv.ConvertOptions(column_types=dict(RECORD_COLUMNS), strings_can_be_null=False)
    return pacsv.read_csv(Path(path), convert_options=opts)
