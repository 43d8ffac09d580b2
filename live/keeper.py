"""A live run's cores on another server (docs/multihost.md): the keeper there (`python -m live.keeper`, started
through the server's agent) holds that server's live-run lock and the run's groups there (live/cores.py's RunCores,
run on that server) until the run ends or the driver's ssh goes; the driver's side records what the keeper will
make before it makes it, reserves the server's core of real inference when the plan gives it a real worker, and
watches the keeper: one gone ends the server's isolation (and frees its lock), which the run reports (`lost`).

The keeper speaks through its log, one line each: `PLAN <json>` (the lock taken; what it may make, as recorded),
`READY <json>` (what it holds: after the driver's first SIGUSR1, and again after each later SIGUSR1, which reserves
the core of real inference), `BUSY <why>` (another live run holds the server).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from live.cores import RECORD_DIR, LiveRunBusy, LiveRunLock, RunCores, ServerCores
from testbed.agent import AgentClient, AgentError, die_with_parent
from testbed.multihost import PUSHED_FILE, python_on, share_dir
from testbed.record import RECORD_NAME, Created, CreationRecord
from topologies import wallclock

KEEPER_PLAN, KEEPER_READY, KEEPER_BUSY = "PLAN ", "READY ", "BUSY "
KEEPER_WAIT_S = 30.0
KEEPER_RECORD = f"{RECORD_DIR}/{RECORD_NAME}"
"""The keeper's own record, in its share: the server's copy, left out when the share is gathered."""
GO = signal.SIGUSR1
"""The driver's word to a keeper: make what the plan said (first), reserve the core of real inference (later)."""
WATCH_S = 0.5
"""Real seconds between two looks at every keeper."""


@dataclass
class Keeper:
    """The driver's end of one server's keeper."""

    client: AgentClient
    pid: int
    start_ticks: int
    log: str
    """Its log on the server."""
    real: bool
    """Whether it holds the server's core of real inference (asked for)."""
    cores: ServerCores | None = None
    ready_lines: int = 0
    lost: dict | None = None
    """Why and when it was found gone during the run (None: it holds the cores)."""

    @property
    def server(self) -> str:
        return self.client.server.name


def said(log_text: str) -> list[tuple[str, str]]:
    """Returns what a keeper's log says, in order: ('plan' | 'ready' | 'busy', the rest of the line)."""
    out = []
    for line in log_text.splitlines():
        for kind, head in (("plan", KEEPER_PLAN), ("ready", KEEPER_READY), ("busy", KEEPER_BUSY)):
            if line.startswith(head):
                out.append((kind, line[len(head):]))
    return out


# -- the driver's side -------------------------------------------------------------------------------------------

def start_keeper(client: AgentClient, record: CreationRecord, run_id: str, real: bool,
                 pause_s: float = 0.0) -> Keeper:
    """Starts the keeper on a server through its agent (its log and own record in its share of the cores' record
    dir), records it and, once it holds the server's lock, everything it may make there (before it makes any), then
    lets it make them; returns it holding the cores. Raises LiveRunBusy naming the server if another live run holds
    it, RuntimeError if the keeper fails."""
    name, repo = client.server.name, client.server.repo
    share = share_dir(record.run_dir, name)
    client.write(str(share / PUSHED_FILE), f"{KEEPER_RECORD}\n".encode())
    log = str(share / f"keeper-{name}.log")
    argv = [python_on(repo), "-m", "live.keeper", str(share), "--label", name, "--run-id", run_id,
            *(["--real"] if real else []), *(["--pause-s", repr(pause_s)] if pause_s else [])]
    pid, ticks = client.spawn(argv, log=log, cwd=repo, env={"PYTHONUNBUFFERED": "1"}, cgroups=[])
    record.add(Created("process", f"cores keeper {name}: {' '.join(argv)}", pid=pid, start_ticks=ticks, server=name))
    keeper = Keeper(client, pid, ticks, log, real)
    plan = _await(keeper, record, "plan")
    _record_new(record, name, json.loads(plan))  # before the keeper makes anything
    client.kill(pid, ticks, GO.name)
    _ready(keeper, record)
    return keeper


def upgrade_keeper(keeper: Keeper, record: CreationRecord) -> None:
    """Has a keeper reserve its server's core of real inference (recorded with its plan before it started)."""
    keeper.client.kill(keeper.pid, keeper.start_ticks, GO.name)
    keeper.real = True
    _ready(keeper, record)


def _ready(keeper: Keeper, record: CreationRecord) -> None:
    made = json.loads(_await(keeper, record, "ready", keeper.ready_lines + 1))
    keeper.ready_lines += 1
    _record_new(record, keeper.server, made["entries"])
    keeper.cores = ServerCores(keeper.server, made["reserved"], made["real_group"], made["inference_group"],
                               tuple(made["run_groups"]), made["described"], keeper.real, made["pressure_group"])
    if keeper.cores.run_groups:  # its agent, like the keeper, in the run's groups there (live.cores.RunCores.confine)
        keeper.client.call("join", cgroups=list(keeper.cores.run_groups))


def _await(keeper: Keeper, record: CreationRecord, kind: str, count: int = 1) -> str:
    """Returns the payload of the keeper's `count`-th line of `kind`; raises LiveRunBusy naming the server if it says
    BUSY, RuntimeError if it exits or says nothing in time (its own record's entries copied here first: whatever it
    made is then removed at teardown even though it never said so)."""
    name = keeper.server
    deadline = time.monotonic() + KEEPER_WAIT_S
    while True:
        lines = said(keeper.client.read_all(keeper.log).decode(errors="replace"))
        busy = [rest for k, rest in lines if k == "busy"]
        if busy:
            raise LiveRunBusy(f"server {name}: {busy[0]}")
        found = [rest for k, rest in lines if k == kind]
        if len(found) >= count:
            return found[count - 1]
        code = keeper.client.poll(keeper.pid)
        if code is not None or time.monotonic() > deadline:
            with contextlib.suppress(AgentError, ValueError):
                own = str(share_dir(record.run_dir, name) / KEEPER_RECORD)
                _record_new(record, name, [json.loads(x) for x in keeper.client.read_all(own).decode().splitlines()
                                           if x.strip()])
            tail = keeper.client.read_all(keeper.log).decode(errors="replace").strip()[-2000:]
            raise RuntimeError(f"server {name}: the run's cores keeper "
                               f"{'exited with ' + str(code) if code is not None else 'did not start'}: {tail}")
        time.sleep(0.05)


def _record_new(record: CreationRecord, server: str, entries: list[dict]) -> None:
    """Records the entries of a server's keeper that the record lacks (its run and torn-down lines left out)."""
    have = {json.dumps(asdict(e), sort_keys=True) for e in record.entries()}
    for entry in entries:
        if entry.get("kind") in ("run", "torn-down"):
            continue
        created = Created(**{**entry, "server": server})
        if json.dumps(asdict(created), sort_keys=True) not in have:
            record.add(created)


def watch_keepers(keepers: dict[str, Keeper], log: Callable[[str], None]) -> Callable[[], None]:
    """Starts a thread that looks at every keeper each WATCH_S through its agent and marks one gone (`Keeper.lost`,
    logged once); returns the function that stops it (before the keepers are stopped on purpose)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(WATCH_S):
            for keeper in list(keepers.values()):
                if keeper.lost is not None or keeper.cores is None:
                    continue
                try:
                    code = keeper.client.poll(keeper.pid)
                    why = None if code is None else f"exited with {code}"
                except AgentError as exc:
                    why = f"is out of reach (its agent: {exc})"
                if why is not None and not stop.is_set():
                    keeper.lost = lost_record(keeper, why, wallclock.time_s())
                    log(f"warning: server {keeper.server}: {keeper.lost['why']}")

    thread = threading.Thread(target=loop, name="keepers", daemon=True)
    thread.start()

    def end() -> None:
        stop.set()
        thread.join(5.0)

    return end


def lost_record(keeper: Keeper, why: str, at_epoch_s: float) -> dict:
    """Returns what the run says of a keeper found gone: from then on that server's live-run lock is free, and its
    real inference (if any) shares the cores with everything else there."""
    isolated = keeper.cores is not None and keeper.cores.real_group is not None
    return {"invariant": "server cores held", "server": keeper.server, "at_epoch_s": round(at_epoch_s, 3),
            "why": (f"the run's cores keeper {why}: from then on the server's live-run lock is free"
                    + (" and its real inference is not isolated" if isolated else "")
                    + "; the run stops there (its figures would depend on what else runs on that server)")}


# -- the keeper (on the server) ----------------------------------------------------------------------------------

def keeper_report(cores: RunCores) -> dict:
    """Returns what a keeper tells the driver: the groups, the `--inference-cgroup` path, and its record's entries."""
    return {"reserved": cores.reserved, "real_group": None if cores.real_group is None else str(cores.real_group),
            "inference_group": cores.inference_group(), "run_groups": [str(g) for g in cores.run_groups()],
            "described": cores.describe(), "entries": _entries(cores.record.entries()),
            "pressure_group": None if cores.pressure_group is None else str(cores.pressure_group)}


def _entries(entries: list[Created]) -> list[dict]:
    return [{k: v for k, v in asdict(e).items() if v is not None} for e in entries if e.kind not in ("run", "torn-down")]


def _say(line: str) -> None:
    print(line, flush=True)


def hold(run_dir: Path, label: str, run_id: str, real: bool, pause_s: float = 0.0) -> int:
    """The keeper of a live run's cores on a server: takes the live-run lock, says what it may make (PLAN), waits for
    the driver's word (GO), makes the groups and borrows the daemons' cores (RunCores, its record under `run_dir`),
    joins its run groups, says READY with what it made; a later GO reserves the core of real inference (READY
    again). It puts everything back when it is stopped (SIGTERM) or its agent ends (the kernel sends SIGTERM then:
    the driver's ssh is gone); returns its exit status (2: another run holds the server)."""
    parent, go = os.getppid(), [False]  # a plain flag: a handler setting an Event could deadlock on its lock
    signal.signal(signal.SIGTERM, lambda _s, _f: sys.exit(0))
    signal.signal(GO, lambda _s, _f: go.__setitem__(0, True))
    die_with_parent(signal.SIGTERM)
    if os.getppid() != parent or parent == 1:  # the agent ended before the line above (or before Python started)
        return 0
    lock = LiveRunLock()
    try:
        lock.acquire(run_dir)
    except LiveRunBusy as exc:
        _say(f"{KEEPER_BUSY}{exc}")
        return 2
    cores = RunCores(run_dir, _say, lock=lock, real_inference=real, label=label, run_id=run_id)
    _say(KEEPER_PLAN + json.dumps(_entries(cores.planned())))

    def word(every_s: float) -> bool:
        """Waits for the driver's GO; returns False once the agent is gone (the keeper then puts back and ends)."""
        while not go[0]:
            if os.getppid() != parent:
                return False
            time.sleep(every_s)
        go[0] = False
        return True

    entered = False
    try:
        if not word(0.05):
            return 0
        entered = True  # before: a signal between the two must still put back what was made (twice is harmless)
        cores.__enter__()
        while True:  # READY; each later GO reserves the core of real inference (nothing once it has it)
            with contextlib.suppress(OSError):
                cores.confine()
            time.sleep(pause_s)
            _say(KEEPER_READY + json.dumps(keeper_report(cores)))
            if not word(0.2):
                return 0
            cores.reserve_real()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not cut the restoring short
        if entered:
            cores.__exit__(None, None, None)
            _say("the run's cores are put back")
        lock.release()  # the keeper's own hold (RunCores let go of its own)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="the keeper of a live run's cores on a server (docs/multihost.md)")
    p.add_argument("dir", type=Path, metavar="DIR", help="the folder of its record")
    p.add_argument("--label", required=True, help="the server's name, in the groups' names")
    p.add_argument("--run-id", required=True, help="the run's id, in the groups' names")
    p.add_argument("--real", action="store_true", help="reserve the core of real inference from the start")
    p.add_argument("--pause-s", type=float, default=0.0, help="for tests: wait between making and saying READY")
    args = p.parse_args(argv)
    return hold(args.dir, args.label, args.run_id, args.real, args.pause_s)


if __name__ == "__main__":
    sys.exit(main())
