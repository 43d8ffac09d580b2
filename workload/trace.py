"""The trace format: one stream per CSV row; strict reading that names the row and column at fault.

Columns: stream_id, antenna, start_s, duration_s, app, fps, frame_bytes, max_delay_ms, min_accuracy and,
optionally, task (default object-detection). Rows are replayed exactly, in order of start_s.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TRACE_COLUMNS = ("stream_id", "antenna", "start_s", "duration_s", "app", "fps", "frame_bytes",
                 "max_delay_ms", "min_accuracy")
OPTIONAL_COLUMNS = ("task",)
DEFAULT_TASK = "object-detection"


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

    def sorted(self) -> Trace:
        order = np.lexsort((self.stream_id, self.start_s))
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


def _number(path: Path, line: int, col: str, text: str, *, integer: bool = False, positive: bool = False) -> float:
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise TraceError(f"{path}: line {line}, column {col!r}: {text!r} is not {kind}") from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise TraceError(f"{path}: line {line}, column {col!r}: {text!r} must be {bound}")
    return value


def read_trace(path: str | Path, antennas: tuple[str, ...] | None = None) -> Trace:
    """Returns the trace in a CSV file; with `antennas`, also refuses rows naming an unknown antenna."""
    path = Path(path)
    try:
        f = path.open(newline="")
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror}") from None
    cols: dict[str, list] = {c: [] for c in (*TRACE_COLUMNS, "task")}
    seen: set[int] = set()
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
        for line, row in enumerate(reader, start=2):
            if not row or all(not x.strip() for x in row):
                continue
            if len(row) != len(header):
                raise TraceError(f"{path}: line {line}: {len(row)} fields, the header has {len(header)}")
            rec = dict(zip(header, (x.strip() for x in row), strict=True))
            sid = int(_number(path, line, "stream_id", rec["stream_id"], integer=True))
            if sid in seen:
                raise TraceError(f"{path}: line {line}, column 'stream_id': {sid} appears twice")
            seen.add(sid)
            if antennas is not None and rec["antenna"] not in antennas:
                raise TraceError(f"{path}: line {line}, column 'antenna': {rec['antenna']!r} is not an antenna "
                                 f"of the topology ({', '.join(antennas)})")
            if not rec["app"]:
                raise TraceError(f"{path}: line {line}, column 'app': empty")
            acc = _number(path, line, "min_accuracy", rec["min_accuracy"])
            if acc > 1:
                raise TraceError(f"{path}: line {line}, column 'min_accuracy': {acc} must be between 0 and 1")
            cols["stream_id"].append(sid)
            cols["antenna"].append(rec["antenna"])
            cols["start_s"].append(_number(path, line, "start_s", rec["start_s"]))
            cols["duration_s"].append(_number(path, line, "duration_s", rec["duration_s"], positive=True))
            cols["app"].append(rec["app"])
            cols["fps"].append(_number(path, line, "fps", rec["fps"], positive=True))
            cols["frame_bytes"].append(int(_number(path, line, "frame_bytes", rec["frame_bytes"], integer=True,
                                                   positive=True)))
            cols["max_delay_ms"].append(_number(path, line, "max_delay_ms", rec["max_delay_ms"], positive=True))
            cols["min_accuracy"].append(acc)
            cols["task"].append(rec.get("task") or DEFAULT_TASK)
    return _from_columns(cols).sorted()


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
