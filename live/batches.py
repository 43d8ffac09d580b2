"""A live run's inference batches read back from its records: each worker's batches (the queries one inference
ran together: resource, start, end), real or profile-driven (a mixed worker's by the starts its real replicas
logged), their time against the profile's plan (`batch_overruns`, which the fidelity verdict judges,
live/verdict.py), and what real inference's time over or under that plan did to the run's outcomes
(`overrun_effect`): the queries it turned late, or on time, by their deadlines.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from live.procs import REPO_ROOT
from live.rundir import RunDir, read_json, read_lines
from scheduler.profiles import read_profile

WAITED_GAP_MS = 1.0
"""A batch that started within this long (virtual ms) of the end of its replica's batch before it had waited for
the replica, whatever its frames' arrival says (see `planned_ends`)."""


@dataclass(frozen=True)
class WorkerBatch:
    """One inference of a worker, as its queries' records give it (virtual ms since t0)."""

    resource: str
    start_ms: float
    end_ms: float
    rows: tuple[int, ...]
    """The records' rows of its queries."""
    planned_ms: float
    """The profile's time for its size and frames (`RuntimeProfile.planned_batch_ms`)."""


@dataclass(frozen=True)
class OverrunEffect:
    """What batches' time over (or under) their plan did to the run's outcomes: each query they answered judged
    again by its deadline with its answer moved by how much sooner (or later) its batch would have ended at the
    planned times (`planned_ends`)."""

    queries: int
    """Queries the batches answered (on time or late)."""
    made_late: int
    """Late, and on time at the planned times."""
    made_ontime: int
    """On time, and late at the planned times (batches faster than planned)."""
    judged: int
    """The queries judged (the run's, or those after a pilot's warm-up): the denominator of `success_pts`."""

    @property
    def success_pts(self) -> float:
        """The batches' own timing's share of the judged queries' success (points): negative where it cost on-time
        answers."""
        return 100.0 * (self.made_ontime - self.made_late) / self.judged if self.judged else 0.0


def profile_path(config: dict, run_dir: Path | None = None) -> Path:
    """Returns the profile a run decided with: the run dir's own `profiles.yaml` where it has one (the run timed
    its real workers' models and decided with that, written there; a run dir moved or renamed since still finds
    it, while the path config.json names may since hold another run's), else config.json's `profiles_file` (a
    relative one from the repository where not from here)."""
    own = RunDir(run_dir).profiles if run_dir is not None else None
    if own is not None and own.exists():
        return own
    path = Path(config["profiles_file"])
    return path if path.exists() or path.is_absolute() else REPO_ROOT / path


def worker_batches(records: dict[str, np.ndarray], config: dict, frame_bytes: dict[int, float],
                   real: bool, real_starts: dict[str, np.ndarray] | None = None,
                   run_dir: Path | None = None) -> list[WorkerBatch]:
    """Returns the batches of the real (or profile-driven) replicas, each with the profile's planned time of its
    size and frames; a worker whose model the profile lacks is left out. A mixed worker's batch is real when its
    start is one its real replicas logged (`real_starts`, run ms); a mixed worker without that log is left out of
    both. `run_dir`: where the profile is looked for too (`profile_path`)."""
    starts = real_starts or {}
    workers = {w["resource"]: w for w in config.get("workers", [])
               if (w["resource"] in starts) or (bool(w.get("real")) == real and not _mixed(w))}
    if not workers:
        return []
    runtimes = {}
    batches: dict[tuple[str, float, float], list[int]] = {}
    res = np.char.add(np.char.add(records["variant"].astype(str), "@"), records["cluster"].astype(str))
    done = np.isfinite(records["t_infer_start_ms"]) & np.isfinite(records["t_infer_end_ms"])
    for j in np.flatnonzero(done & np.isin(res, list(workers))):
        key = (str(res[j]), float(records["t_infer_start_ms"][j]), float(records["t_infer_end_ms"][j]))
        batches.setdefault(key, []).append(j)
    batches = {key: rows for key, rows in batches.items()
               if key[0] not in starts or _logged(starts[key[0]], key[1]) == real}
    if not batches:
        return []
    profile = read_profile(profile_path(config, run_dir))
    out = []
    for (resource, t_start, t_end), rows in batches.items():
        w = workers[resource]
        if resource not in runtimes:
            with contextlib.suppress(KeyError):
                runtimes[resource] = profile.runtime(w["model"], w["device"])
        rt = runtimes.get(resource)
        if rt is None:
            continue
        size = int(records["batch_size"][rows[0]])
        frames_bytes = sum(frame_bytes.get(int(records["stream_id"][j]), 0.0) for j in rows) * size / len(rows)
        out.append(WorkerBatch(resource, t_start, t_end, tuple(rows), rt.planned_batch_ms(size, frames_bytes)))
    return out


def batch_overruns(records: dict[str, np.ndarray], config: dict, frame_bytes: dict[int, float],
                   real: bool, real_starts: dict[str, np.ndarray] | None = None,
                   run_dir: Path | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns `overrun_arrays` of `worker_batches`."""
    return overrun_arrays(worker_batches(records, config, frame_bytes, real, real_starts, run_dir))


def overrun_arrays(batches: list[WorkerBatch]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (start ms, overrun ms, planned ms) per batch: its measured time against the profile's planned time."""
    return (np.array([b.start_ms for b in batches], dtype=float),
            np.array([b.end_ms - b.start_ms - b.planned_ms for b in batches], dtype=float),
            np.array([b.planned_ms for b in batches], dtype=float))


def replica_chains(batches: list[WorkerBatch]) -> list[list[WorkerBatch]]:
    """Returns the batches shared out among their workers' replicas, one list per replica in order of start: each
    batch, by start, to the replica of its worker whose last batch ended last before it started, else to a replica
    of its own (the records do not say which replica ran a batch; batches that overlap ran on different ones)."""
    chains: dict[str, list[list[WorkerBatch]]] = {}
    for b in sorted(batches, key=lambda b: (b.resource, b.start_ms, b.end_ms)):
        free = [c for c in chains.setdefault(b.resource, []) if c[-1].end_ms <= b.start_ms]
        if free:
            max(free, key=lambda c: c[-1].end_ms).append(b)
        else:
            chains[b.resource].append([b])
    return [c for cs in chains.values() for c in cs]


def planned_ends(chain: list[WorkerBatch], t_worker_ms: np.ndarray) -> np.ndarray:
    """Returns when each batch of one replica (in order) would have ended had every batch of it taken its planned
    time, the composition of each kept. A batch waited for the replica when its last frame reached the worker
    (`t_worker_ms`, per record row) before the batch before it ended, or when it started within WAITED_GAP_MS of
    that end: it starts as long after that batch's planned end as it did after its end (the dispatch, a batch
    filling), but not before its last frame was there. Otherwise it found the replica idle: it starts as it did,
    or at the planned end of the batch before if that is later. A batch whose frames' arrival is not recorded is
    taken as ready when it started (it cannot start sooner)."""
    ends = np.empty(len(chain))
    for i, b in enumerate(chain):
        start = b.start_ms
        if i:
            before = chain[i - 1].end_ms
            arrived = t_worker_ms[list(b.rows)]
            ready = min(float(np.nanmax(arrived)) if np.isfinite(arrived).any() else b.start_ms, b.start_ms)
            gap = b.start_ms - before
            if ready <= before or gap <= WAITED_GAP_MS:
                start = max(ready, ends[i - 1] + gap)
            else:
                start = max(b.start_ms, ends[i - 1])
        ends[i] = start + b.planned_ms
    return ends


def overrun_effect(records: dict[str, np.ndarray], batches: list[WorkerBatch], deadline_ms: dict[int, float],
                   judged: int, sent_from_ms: float = 0.0) -> OverrunEffect:
    """Returns what `batches`' time over or under their plan did to the outcomes of the queries they answered
    (`deadline_ms`: each stream's deadline; a query is late when its answer came more than that after its send, as
    the sources judge it); `judged`: the queries judged (sent from `sent_from_ms` on), of which only those count
    (a pilot's warm-up left out; the batches before it still delay those after)."""
    t_send, t_resp = records["t_send_ms"].astype(float), records["t_response_ms"].astype(float)
    worker = records["t_worker_ms"].astype(float)
    answered = made_late = made_ontime = 0
    for chain in replica_chains(batches):
        for b, end in zip(chain, planned_ends(chain, worker), strict=True):
            for j in b.rows:
                if not (np.isfinite(t_resp[j]) and t_send[j] >= sent_from_ms):
                    continue
                deadline = deadline_ms[int(records["stream_id"][j])]
                took = t_resp[j] - t_send[j]
                late, late_planned = bool(took > deadline), bool(took - (b.end_ms - end) > deadline)
                answered += 1
                made_late += late and not late_planned
                made_ontime += late_planned and not late
    return OverrunEffect(answered, made_late, made_ontime, judged)


def _mixed(worker: dict) -> bool:
    """Whether a worker of config.json has real and profile-driven replicas."""
    return 0 < int(worker.get("real_replicas") or 0) < int(worker.get("replicas") or 0)


def _logged(starts_ms: np.ndarray, t_ms: float, tolerance_ms: float = 0.01) -> bool:
    """Whether a batch starting at `t_ms` is one of the sorted `starts_ms` (both rounded to the microsecond)."""
    i = int(np.searchsorted(starts_ms, t_ms))
    return any(abs(starts_ms[k] - t_ms) <= tolerance_ms for k in (i - 1, i) if 0 <= k < len(starts_ms))


def real_batches(run_dir: Path, resource: str) -> list[dict] | None:
    """Returns the batches a real worker's real replicas ran, as it logged them (`RunDir.real_batch_log`:
    start_ms, end_ms, size, served, frames_bytes), or None without its log (a worker on another server)."""
    path = RunDir(run_dir).real_batch_log(resource)
    if not path.exists():
        return None
    return [json.loads(line) for line in read_lines(path)]


def real_starts(run_dir: Path, config: dict) -> dict[str, np.ndarray]:
    """Returns, per mixed worker of the run with its log here, the run ms (sorted) at which its real replicas
    started their batches: the logged virtual epoch ms less t0 and the worker's clock offset, as the
    schedulers record a batch's start."""
    t0_ms = float((run_dir / "t0").read_text()) * 1000.0 if (run_dir / "t0").exists() else None
    offsets = read_json(run_dir / "workers.json", {})
    out = {}
    for w in config.get("workers", []):
        batches = real_batches(run_dir, w["resource"]) if _mixed(w) and t0_ms is not None else None
        if batches is not None:
            offset = float(offsets.get(w["resource"], {}).get("clock_offset_ms", 0.0))
            out[w["resource"]] = np.sort([round(b["start_ms"] - t0_ms - offset, 3) for b in batches])
    return out
