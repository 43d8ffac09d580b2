"""What the run's processes wrote, brought together: the sources' records appended to records.csv as the run
goes (sorted by send time at the end), the schedulers' windows logs merged into windows.csv, their statistics and the sources' last words,
and the run's one event log (events.jsonl).
"""

from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import Callable
from pathlib import Path

from analysis.records import RECORD_NAMES, RecordWriter, read_records
from live.rundir import RunDir
from topologies import wallclock


class RecordMerger:
    """Appends the sources' new complete CSV lines to the run's records.csv (header once), flushed."""

    def __init__(self, parts: list[Path], merged: Path) -> None:
        self.parts = parts
        self.offsets = dict.fromkeys(parts, 0)
        self.merged = merged
        self.rows = 0
        merged.unlink(missing_ok=True)
        RecordWriter(merged).close()  # the header alone
        self._out = merged.open("ab")

    def poll(self) -> None:
        for part in self.parts:
            if not part.exists():
                continue
            with part.open("rb") as f:
                f.seek(self.offsets[part])
                chunk = f.read()
            end = chunk.rfind(b"\n") + 1
            if end == 0:
                continue
            lines = chunk[:end]
            if self.offsets[part] == 0:
                lines = lines[lines.find(b"\n") + 1 :]  # the part's header
            self.offsets[part] += end
            self._out.write(lines)
            self.rows += lines.count(b"\n")
        self._out.flush()

    def close(self) -> None:
        """Appends the sources' last lines, then sorts the file by send time as the simulator's are (stable: rows
        sent in the same microsecond keep their order); the sources' flushes reached it interleaved."""
        self.poll()
        self._out.close()
        table = read_records(self.merged)
        if table.num_rows:
            sorting = self.merged.with_name("sorting-" + self.merged.name)
            with RecordWriter(sorting) as w:
                w.write({name: table.column(name).to_numpy(zero_copy_only=False) for name in RECORD_NAMES})
            sorting.replace(self.merged)


class Events:
    """The run's event log (events.jsonl): what the orchestrator did and saw, with times since t0."""

    def __init__(self, path: Path, log: Callable[[str], None], now_s: Callable[[], float] = wallclock.time_s) -> None:
        self.path = path
        self.now_s = now_s
        """The run clock's epoch seconds (virtual under time dilation, as t0)."""
        self.t0_s: float | None = None
        self.log = log
        self.entries: list[dict] = []

    def __call__(self, kind: str, **what: object) -> None:
        t_ms = (self.now_s() - self.t0_s) * 1000.0 if self.t0_s else None
        entry = {"t_ms": None if t_ms is None else round(t_ms, 1), "event": kind, **what}
        self.entries.append(entry)
        with self.path.open("a") as f:
            f.write(json.dumps(entry) + "\n")
        self.log(
            f"[{'' if t_ms is None else f'{t_ms / 1000:7.2f} s'}] {kind} "
            + " ".join(f"{k}={v}" for k, v in what.items())
        )


def source_stats(run: RunDir) -> dict[str, dict]:
    """Returns each source's last words (its `DONE {...}` line): records, frames, send lag, CPU."""
    stats = {}
    for name, path in run.logs_of("source").items():
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("DONE "):
                with contextlib.suppress(ValueError):
                    stats[name] = json.loads(line[5:])
    return stats


def scheduler_stats(run: RunDir) -> dict[str, dict]:
    """Returns every scheduler process's statistics file (`schedulers/<antenna>[.n].json`)."""
    stats = {}
    for path in run.all_scheduler_stats():
        with contextlib.suppress(ValueError, OSError):
            stats[path.stem] = json.loads(path.read_text())
    return stats


def merge_windows(run: RunDir) -> list[dict]:
    """Merges every scheduler's windows log (`windows/<antenna>[.n].csv`) into `windows.csv`, sorted by
    window then antenna, and returns its rows (a restarted scheduler's rows follow its predecessor's)."""
    rows: list[dict] = []
    columns: list[str] = []
    for path in run.all_windows_logs():
        with contextlib.suppress(OSError), path.open(newline="") as f:
            reader = csv.DictReader(f)
            columns = list(reader.fieldnames or columns)
            rows += list(reader)
    rows.sort(key=lambda r: (int(r["window"]), r["antenna"], float(r["t_start_ms"])))
    if columns:
        with run.windows.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns)
            w.writeheader()
            w.writerows(rows)
    return rows
