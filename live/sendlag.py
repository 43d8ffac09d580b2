"""When a query could leave its source, the one definition of send lag shared by the fidelity verdict and the
monitor's early stop: its schedule (stream start + query / fps) or, when later, the answer to the opening its
stream waited for. That round trip is the emulated system's (a camera is bound before it sends; over a radio
slowed to 40 ms one way it takes over 80 ms), not the host's; it counts from when the opening was due, so that a
source late to wake stays late. Which records were sent at all (`sent_mask`), and the sources' openings logs
(`records/ANT.opens.csv`) that they append to as they run.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from workload.trace import Trace

OPENS_COLUMNS = ("stream_id", "query", "t_open_ms", "t_bound_ms")
"""The openings log: the stream, its first query the opening serves, when the request left and when the
scheduler's answer (a binding or a rejection) came back, run-clock ms since t0."""
OPENS_GLOB = "records/*.opens.csv"
RECORDED_AT_DUE_MS = 0.0005
"""A query rejected at binding is recorded at its schedule, to the microsecond (never sent)."""


def opens_path(records_path: Path) -> Path:
    """Returns the openings log beside a source's records file (`records/ant1.csv` -> `records/ant1.opens.csv`)."""
    return records_path.with_name(f"{records_path.stem}.opens.csv")


def append_opens(path: Path, rows: list[tuple[int, int, float, float]]) -> None:
    """Appends openings to the openings log (OPENS_COLUMNS, the header first when the file is new), times to
    the microsecond."""
    new = not path.exists()
    with path.open("a") as f:
        f.write((",".join(OPENS_COLUMNS) + "\n" if new else "")
                + "".join(f"{s},{k},{t0:.3f},{t1:.3f}\n" for s, k, t0, t1 in rows))


class StreamSchedule:
    """The trace's streams by id: when each query of each stream is due, and the opening round trips that hold
    a query back."""

    def __init__(self, trace: Trace) -> None:
        order = np.argsort(trace.stream_id)
        self.ids = trace.stream_id[order].astype(np.int64)
        self.start_s = trace.start_s[order]
        self.fps = trace.fps[order]

    def due_ms(self, stream_id: np.ndarray, query: np.ndarray, opens: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Returns (due ms, known) per query: when it could leave (see the module; the source's own arithmetic,
        (start + query / fps) x 1000), and whether its stream is in the trace (an unknown stream's due is
        meaningless). `opens`: rows of OPENS_COLUMNS; each query is held back by its stream's latest opening at
        or before it."""
        stream_id = np.asarray(stream_id).astype(np.int64)
        query = np.asarray(query).astype(np.int64)
        if not len(self.ids):
            return np.zeros(len(stream_id)), np.zeros(len(stream_id), bool)
        i = np.clip(np.searchsorted(self.ids, stream_id), 0, len(self.ids) - 1)
        known = self.ids[i] == stream_id
        due = (self.start_s[i] + query / self.fps[i]) * 1000.0
        if opens is not None and len(opens):
            # streams by their rank in the trace (not their ids, which may be large), queries below 2**32
            o_stream, o_query = opens[:, 0].astype(np.int64), opens[:, 1].astype(np.int64)
            o_i = np.clip(np.searchsorted(self.ids, o_stream), 0, len(self.ids) - 1)
            o_key = np.where(self.ids[o_i] == o_stream, o_i * 2**32 + o_query, -1)  # -1: a stream not in the trace
            by_key = np.argsort(o_key, kind="stable")
            j = np.searchsorted(o_key[by_key], i * 2**32 + query, side="right") - 1
            mine = known & (j >= 0) & (o_key[by_key[np.clip(j, 0, None)]] // 2**32 == i)
            row = opens[by_key[j[mine]]]
            opened_due = (self.start_s[i[mine]] + row[:, 1] / self.fps[i[mine]]) * 1000.0
            due[mine] = np.maximum(due[mine], opened_due + (row[:, 3] - row[:, 2]))
        return due, known

    def sent_mask(self, stream_id: np.ndarray, query: np.ndarray, t_send_ms: np.ndarray, outcome: np.ndarray,
                  reason: np.ndarray) -> np.ndarray:
        """Returns which records were sent: a known stream's, not rejected at binding (recorded at its schedule,
        RECORDED_AT_DUE_MS, never sent), not failed to open on a scheduler down (recorded when the opening
        failed)."""
        schedule, known = self.due_ms(stream_id, query)
        at_binding = (np.asarray(outcome) == "rejected") & (np.abs(np.asarray(t_send_ms) - schedule)
                                                            <= RECORDED_AT_DUE_MS)
        return known & ~at_binding & (np.asarray(reason) != "scheduler-down")


def read_opens(run_dir: Path) -> np.ndarray:
    """Returns the sources' openings logs as one array of rows (OPENS_COLUMNS), by opening time; none where a
    source left none."""
    rows = [_parse(p.read_text()) for p in sorted(run_dir.glob(OPENS_GLOB))]
    rows = [r for r in rows if len(r)]
    if not rows:
        return np.empty((0, len(OPENS_COLUMNS)))
    out = np.concatenate(rows)
    return out[np.argsort(out[:, 2], kind="stable")]


def _parse(text: str) -> np.ndarray:
    """Returns the complete data lines of an openings log (header and a partly written last line skipped)."""
    width, header = len(OPENS_COLUMNS), ",".join(OPENS_COLUMNS)
    values = []
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n") or line.startswith(header):
            continue
        with contextlib.suppress(ValueError):
            row = [float(x) for x in line.split(",")]
            if len(row) == width:
                values.append(row)
    return np.array(values, dtype=np.float64).reshape(-1, width)


class OpensTail:
    """The openings logs of a run read as they grow (complete lines only), for the monitor's early stop. Read
    after the records: a source writes its openings before its records, so every record already read has its
    opening here."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.offsets: dict[Path, int] = {}
        self.parts: list[np.ndarray] = []

    def read(self) -> np.ndarray:
        """Returns every opening logged so far (rows as `read_opens`)."""
        for path in sorted(self.run_dir.glob(OPENS_GLOB)):
            with contextlib.suppress(OSError), path.open("rb") as f:
                f.seek(self.offsets.get(path, 0))
                chunk = f.read()
                end = chunk.rfind(b"\n") + 1
                if end:
                    self.offsets[path] = self.offsets.get(path, 0) + end
                    self.parts.append(_parse(chunk[:end].decode(errors="replace")))
        if len(self.parts) > 1:
            self.parts = [np.concatenate(self.parts)]
        return self.parts[0] if self.parts else np.empty((0, len(OPENS_COLUMNS)))
