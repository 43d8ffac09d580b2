"""The trace format: one stream per CSV row; strict reading that names the row and column at fault.

Columns: stream_id, antenna, start_s, duration_s, app, fps, frame_bytes, max_delay_ms, min_accuracy and,
optionally, task (default object-detection). Rows are replayed exactly, in order of start_s.
A row's schema is `TraceRow` (published as docs/schemas/trace-row.schema.json); a file is checked a
column at a time against it (pydantic over the whole column: a 100k-row trace reads in a fraction of a
second), then across rows (stream ids unique, antennas of the topology).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BeforeValidator, Field, StringConstraints, TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError

from topologies.strict import Fraction, NonNegative, Positive, StrictModel, problem

TRACE_COLUMNS = ("stream_id", "antenna", "start_s", "duration_s", "app", "fps", "frame_bytes",
                 "max_delay_ms", "min_accuracy")
OPTIONAL_COLUMNS = ("task",)
DEFAULT_TASK = "object-detection"
SCHEMA_FILE = "trace-row.schema.json"
"""A row's JSON Schema, under docs/schemas/."""
_Text = Annotated[str, StringConstraints(strip_whitespace=True)]


_INT_TEXT = re.compile(r"\s*[+-]?\d+\s*")
INT64_MAX = 2**63 - 1


def _int_text(value: object) -> object:
    """Refuses a cell that is not written as a whole number ('1.0', '5e3'): nothing is coerced."""
    if isinstance(value, str) and not _INT_TEXT.fullmatch(value):
        raise PydanticCustomError("int_parsing", "is not a whole number")
    return value


_CsvInt = Annotated[int, BeforeValidator(_int_text)]


class TraceRow(StrictModel):
    """One stream of a trace: a CSV row, its cells read as these types (numbers written as text)."""

    stream_id: _CsvInt = Field(ge=0, le=INT64_MAX, description="unique per trace")
    antenna: _Text = Field(description="the antenna the stream opens at (a site of the topology)")
    start_s: NonNegative = Field(description="when the stream opens, seconds from the start")
    duration_s: Positive = Field(description="how long the stream sends frames, seconds")
    app: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)] = Field(
        description="the application class, e.g. ar-vr")
    fps: Positive = Field(description="frames (queries) per second")
    frame_bytes: _CsvInt = Field(gt=0, le=INT64_MAX, description="size of one frame in bytes")
    max_delay_ms: Positive = Field(description="end-to-end delay budget of a query, ms")
    min_accuracy: Fraction = Field(description="the least model accuracy the stream accepts")
    task: _Text = Field(DEFAULT_TASK, description="the inference task (empty: object-detection)")


# Per column, a validator for the whole column; the order in which a row's cells were checked one by one.
_COLUMNS = {name: TypeAdapter(list[Annotated[(f.annotation, *f.metadata)] if f.metadata else f.annotation])
            for name, f in TraceRow.model_fields.items()}
_CHECK_ORDER = ("stream_id", "antenna", "app", "min_accuracy", "start_s", "duration_s", "fps", "frame_bytes",
                "max_delay_ms", "task")


class TraceError(ValueError):
    """A trace file is malformed; the message names the file, the row (line) and the column."""


@dataclass(frozen=True)
class Trace:
    """Streams in columns (numpy arrays of equal length), sorted by start time."""

    stream_id: np.ndarray
    antenna: np.ndarray
    """Antenna names (object array)."""
    start_s: np.ndarray
    duration_s: np.ndarray
    app: np.ndarray
    fps: np.ndarray
    frame_bytes: np.ndarray
    max_delay_ms: np.ndarray
    min_accuracy: np.ndarray
    task: np.ndarray

    def __len__(self) -> int:
        return len(self.stream_id)

    @property
    def end_s(self) -> np.ndarray:
        return self.start_s + self.duration_s

    def expected_queries(self, until_s: float | None = None) -> int:
        """Returns the number of queries sent (one every 1/fps from start, before the end and `until_s`)."""
        end = self.end_s if until_s is None else np.minimum(self.end_s, until_s)
        return int(np.maximum(np.ceil((end - self.start_s) * self.fps - 1e-9), 0).sum())

    def order(self) -> np.ndarray:
        """Returns the indices of the streams in trace order: by start, then stream id."""
        return np.lexsort((self.stream_id, self.start_s))

    def sorted(self) -> Trace:
        order = self.order()
        return Trace(**{k: getattr(self, k)[order] for k in self.__dataclass_fields__})


def write_trace(trace: Trace, path: str | Path) -> None:
    """Writes the trace as CSV with a header row."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow((*TRACE_COLUMNS, "task"))
        for i in range(len(trace)):
            w.writerow((int(trace.stream_id[i]), trace.antenna[i], f"{trace.start_s[i]:.6f}",
                        f"{trace.duration_s[i]:.3f}", trace.app[i], f"{trace.fps[i]:g}",
                        int(trace.frame_bytes[i]), f"{trace.max_delay_ms[i]:g}", f"{trace.min_accuracy[i]:g}",
                        trace.task[i]))


def read_trace(path: str | Path, antennas: tuple[str, ...] | None = None) -> Trace:
    """Returns the trace in a CSV file; with `antennas`, also refuses rows naming an unknown antenna."""
    path = Path(path)
    try:
        f = path.open(newline="")
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror}") from None
    with f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise TraceError(f"{path}: empty file (expected a header row: {','.join(TRACE_COLUMNS)})")
        header = [h.strip() for h in header]
        for c in header:
            if c not in TRACE_COLUMNS and c not in OPTIONAL_COLUMNS:
                raise TraceError(f"{path}: line 1: unknown column {c!r}; columns: {', '.join(TRACE_COLUMNS)}")
        missing = [c for c in TRACE_COLUMNS if c not in header]
        if missing:
            raise TraceError(f"{path}: line 1: missing column {missing[0]!r}")
        cells, lines = _read_cells(path, reader, len(header))
    text = dict(zip(header, cells, strict=True))
    cols, failures = _columns(text, lines)
    if "stream_id" in cols:
        ids = np.asarray(cols["stream_id"], dtype=np.int64)
        seen = np.ones(len(ids), dtype=bool)
        seen[np.unique(ids, return_index=True)[1]] = False  # True: the id appeared on an earlier row
        if seen.any():
            i = int(np.argmax(seen))
            failures.append((lines[i], 0, f"column 'stream_id': {ids[i]} appears twice"))
    if antennas is not None and "antenna" in cols:
        unknown = ~np.isin(np.asarray(cols["antenna"], dtype=object), np.asarray(antennas, dtype=object))
        if unknown.any():
            i = int(np.argmax(unknown))
            failures.append((lines[i], 1, f"column 'antenna': {cols['antenna'][i]!r} is not an antenna of the "
                                          f"topology ({', '.join(antennas)})"))
    if failures:
        line, _, message = min(failures)
        raise TraceError(f"{path}: line {line}, {message}")
    if "task" not in cols:
        cols["task"] = [DEFAULT_TASK] * len(lines)
    cols["task"] = [t or DEFAULT_TASK for t in cols["task"]]
    return _from_columns(cols).sorted()


def _read_cells(path: Path, reader: Any, width: int) -> tuple[list[list[str]], list[int]]:
    """Returns the cells per column and the line of each row kept; blank rows are skipped."""
    cells: list[list[str]] = [[] for _ in range(width)]
    appends = [c.append for c in cells]
    lines: list[int] = []
    for line, row in enumerate(reader, start=2):
        if len(row) != width or not row[0].strip():
            if not row or all(not x.strip() for x in row):
                continue
            if len(row) != width:
                raise TraceError(f"{path}: line {line}: {len(row)} fields, the header has {width}")
        lines.append(line)
        for append, cell in zip(appends, row, strict=True):
            append(cell)
    return cells, lines


def _columns(text: dict[str, list[str]], lines: list[int]) -> tuple[dict[str, list], list[tuple[int, int, str]]]:
    """Returns each column validated as TraceRow types it, and per failing column (line, order, message)."""
    cols: dict[str, list] = {}
    failures = []
    for name, cells in text.items():
        try:
            cols[name] = _COLUMNS[name].validate_python(cells, strict=False)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            if err["type"] == "value_error":  # a check after parsing: show the number it saw, as it saw it
                err = {**err, "input": float(err["input"])}
            failures.append((lines[err["loc"][0]], _CHECK_ORDER.index(name), f"column {name!r}: {problem(err)}"))
    return cols, failures


def _from_columns(cols: dict[str, list]) -> Trace:
    return Trace(
        stream_id=np.asarray(cols["stream_id"], dtype=np.int64),
        antenna=np.asarray(cols["antenna"], dtype=object),
        start_s=np.asarray(cols["start_s"], dtype=np.float64),
        duration_s=np.asarray(cols["duration_s"], dtype=np.float64),
        app=np.asarray(cols["app"], dtype=object),
        fps=np.asarray(cols["fps"], dtype=np.float64),
        frame_bytes=np.asarray(cols["frame_bytes"], dtype=np.int64),
        max_delay_ms=np.asarray(cols["max_delay_ms"], dtype=np.float64),
        min_accuracy=np.asarray(cols["min_accuracy"], dtype=np.float64),
        task=np.asarray(cols["task"], dtype=object),
    )
