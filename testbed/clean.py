"""`clean`: removes what interrupted runs recorded that they created, and nothing else.

A run is cleaned only when its record says it was not torn down and the process that made it is
gone; the things removed are exactly those in its `created.jsonl` (never matched by name pattern). A run
directory may hold further records one level down (a live run's cores: `<run dir>/cores/created.jsonl`, made
before its network), cleaned after its own. A server's share of the run dir (docs/multihost.md) comes back into the
run dir once that server's entries are removed, and goes from the server.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from testbed.record import RECORD_NAME, CreationRecord, active_run_dirs, forget_active


@dataclass(frozen=True)
class CleanResult:
    """What cleaning one run directory did."""

    run_dir: Path
    status: str
    """'cleaned', 'already-clean', 'still-running', 'no-record' or 'failed'."""
    removed: dict[str, int]
    problems: tuple[str, ...] = ()


def clean_run(run_dir: Path) -> CleanResult:
    """Returns the result of removing everything one run directory's record lists."""
    record = CreationRecord(run_dir)
    if not record.path.exists():
        return CleanResult(run_dir, "no-record", {}, (f"{run_dir / RECORD_NAME} does not exist",))
    run = record.run_entry()
    if record.is_torn_down():
        if run is not None:
            forget_active(run.name)
        return CleanResult(run_dir, "already-clean", {})
    if record.owner_alive():
        return CleanResult(run_dir, "still-running", {},
                           (f"the run's process (pid {run.pid if run else '?'}) is still running; stop it first",))
    counts = Counter(e.kind for e in record.entries() if e.kind not in ("run", "torn-down"))
    problems = record.remove_all()
    counts.update({f"files gathered from server {name}": n for name, n in record.gathered.items()})
    return CleanResult(run_dir, "failed" if problems else "cleaned", dict(counts), tuple(problems))


def clean(run_dir: Path | None = None) -> list[CleanResult]:
    """Cleans one run directory (and the records one level below it), or every run listed as not torn down
    when none is given. The order does not matter: a cgroup's processes, if any are left, go to its
    hierarchy's root before it is removed."""
    if run_dir is None:
        return [clean_run(d) for d in active_run_dirs()]
    nested = [p.parent for p in sorted(run_dir.glob(f"*/{RECORD_NAME}"))]
    main = clean_run(run_dir)
    below = [r for r in map(clean_run, nested) if r.status != "already-clean"]
    return below if main.status == "no-record" and nested else [main] + below  # a run stopped before its network
