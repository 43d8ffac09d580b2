"""When a query could leave its source, the one definition of send lag shared by the fidelity verdict and the
monitor's early stop: its schedule (stream start + query / fps) or, when later, the answer to the opening its
stream waited for. That round trip is the emulated system's (a camera is bound before it sends; over a radio
slowed to 40 ms one way it takes over 80 ms), not the host's; it counts from when the opening was due, so that a
source late to wake stays late. The openings come from the sources' openings logs (`records/ANT.opens.csv`,
rows of stream id, query, t_open_ms, t_bound_ms), which the sources append to as they run.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from workload.trace import Trace

OPENS_GLOB = "records/*.opens.csv"


def opens_path(records_path: Path) -> Path:
    """Returns the openings log beside a source's records file (`records/ant1.csv` -> `records/ant1.opens.csv`)."""
    return records_path.with_name(f"{records_path.stem}.opens.csv")


class StreamSchedule:
    """The trace's streams by id: when each query of each stream is due, and the opening round trips that hold
    a query back."""

    def __init__(self, trace: Trace) -> None:
        order = np.argsort(trace.stream_id)
        self.ids = trace.stream_id[order]
        self.start_ms = trace.start_s[order] * 1000.0
        self.period_ms = 1000.0 / trace.fps[order]

    def due_ms(self, stream_id: np.ndarray, query: np.ndarray, opens: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Returns (due ms, known) per query: when it could leave (see the module), and whether its stream is in
        the trace (an unknown stream's due is meaningless). `opens`: rows of stream id, query, t_open_ms,
        t_bound_ms; each query is held back by its stream's latest opening at or before it."""
        stream_id = np.asarray(stream_id, dtype=np.int64)
        query = np.asarray(query, dtype=np.float64)
        i = np.clip(np.searchsorted(self.ids, stream_id), 0, max(len(self.ids) - 1, 0))
        known = self.ids[i] == stream_id if len(self.ids) else np.zeros(len(i), bool)
        due = self.start_ms[i] + query * self.period_ms[i]
        if opens is not None and len(opens):
            key = opens[:, 0].astype(np.int64) * 2**32 + opens[:, 1].astype(np.int64)
            by_key = np.argsort(key, kind="stable")
            j = np.searchsorted(key[by_key], stream_id * 2**32 + query.astype(np.int64), side="right") - 1
            mine = (j >= 0) & (opens[by_key[np.clip(j, 0, None)], 0] == stream_id)
            row = opens[by_key[j[mine]]]
            opened_due = self.start_ms[i[mine]] + row[:, 1] * self.period_ms[i[mine]]
            due[mine] = np.maximum(due[mine], opened_due + (row[:, 3] - row[:, 2]))
        return due, known


def read_opens(run_dir: Path) -> np.ndarray:
    """Returns the sources' openings logs (`live.source.OPENS_COLUMNS`) as one array of rows (stream id, query,
    t_open_ms, t_bound_ms), by opening time; none where a source left none."""
    rows = [_parse(p.read_text()) for p in sorted(run_dir.glob(OPENS_GLOB))]
    rows = [r for r in rows if len(r)]
    if not rows:
        return np.empty((0, 4))
    out = np.concatenate(rows)
    return out[np.argsort(out[:, 2], kind="stable")]


def _parse(text: str) -> np.ndarray:
    """Returns the complete data lines of an openings log (header and a partly written last line skipped)."""
    values = []
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n") or line.startswith("stream_id"):
            continue
        with contextlib.suppress(ValueError):
            row = [float(x) for x in line.split(",")]
            if len(row) == 4:
                values.append(row)
    return np.array(values, dtype=np.float64).reshape(-1, 4)


class OpensTail:
    """The openings logs of a run read as they grow (complete lines only), for the monitor's early stop."""

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
        return self.parts[0] if self.parts else np.empty((0, 4))
