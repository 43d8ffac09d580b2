"""The per-query record format, identical for the simulator and the testbed, and its streaming writer.

One CSV row per query; times in ms since the run's start; see README "Per-query log" for each column.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

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
    """Appends batches of query records to a CSV file, flushing each batch to the OS."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("wb")
        self._writer = pacsv.CSVWriter(self._file, RECORD_SCHEMA,
                                       write_options=pacsv.WriteOptions(quoting_style="none"))
        self.rows = 0

    def write(self, columns: dict[str, np.ndarray | list]) -> None:
        """Writes one batch; `columns` holds every record column, as arrays of equal length."""
        n = len(columns["stream_id"])
        if n == 0:
            return
        arrays = [pa.array(columns[name], type=typ) for name, typ in RECORD_COLUMNS]
        self._writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=RECORD_SCHEMA))
        self._file.flush()
        self.rows += n

    def close(self) -> None:
        if not self._file.closed:
            self._writer.close()
            self._file.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_records(path: str | Path) -> pa.Table:
    """Returns the records of a CSV log as an Arrow table with the documented column types."""
    opts = pacsv.ConvertOptions(column_types=dict(RECORD_COLUMNS), strings_can_be_null=False)
    return pacsv.read_csv(Path(path), convert_options=opts)
