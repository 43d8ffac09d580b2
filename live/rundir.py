"""The run dir's layout, written down once: where the orchestrator puts each file and where its children
(schedulers, sources) find them given only the run dir; the addresses of the run's hosts (from the network's
`network.json`); and the t0 file that starts the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from testbed.plan import NETWORK_FILE, read_host_address

SCHEDULER_PORT = 7000
"""Every antenna scheduler listens on this port of its host's emulated address."""


def default_run_dir(topo_name: str) -> Path:
    """Returns the run dir of a run given no --out: runs/<local time>-<topology>."""
    return Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{topo_name}"


def _numbered(name: str, restart: int) -> str:
    """Returns `name` for a first process, `name.N` for its N-th restart."""
    return f"{name}.{restart}" if restart else name


@dataclass(frozen=True)
class RunDir:
    """The files of one live run (docs/live-run.md: the run directory); `root` is absolute, so children find them anywhere."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).resolve())

    @property
    def spec(self) -> Path:
        """The run spec as resolved for this run, which every scheduler and source reads."""
        return self.root / "spec.json"

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def t0(self) -> Path:
        """The run's start (epoch seconds), written once every process is ready."""
        return self.root / "t0"

    @property
    def trace(self) -> Path:
        return self.root / "trace.csv"

    @property
    def workers(self) -> Path:
        """{resource: {url, model, real}} once the workers are ready."""
        return self.root / "workers.json"

    @property
    def network(self) -> Path:
        return self.root / NETWORK_FILE

    @property
    def records(self) -> Path:
        return self.root / "records.csv"

    @property
    def events(self) -> Path:
        """The run's one event log: the orchestrator's events, then the schedulers'."""
        return self.root / "events.jsonl"

    @property
    def port_counters(self) -> Path:
        """Every switch port's kernel counters on every server, each virtual second (testbed/portcounters.py; the
        controller's OpenFlow statistics are `port_stats.jsonl` beside it)."""
        return self.root / "port_counters.jsonl"

    @property
    def cpu(self) -> Path:
        return self.root / "cpu.json"

    @property
    def pcap(self) -> Path:
        """The folder of the captures, one file per host."""
        return self.root / "pcap"

    @property
    def profiles(self) -> Path:
        """The profile with this host's figures for the real workers' models (when the run times them)."""
        return self.root / "profiles.yaml"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def timeseries(self) -> Path:
        return self.root / "timeseries.csv"

    @property
    def timeseries_per_app(self) -> Path:
        return self.root / "timeseries_per_app.csv"

    @property
    def success_plot(self) -> Path:
        return self.root / "success.png"

    @property
    def windows(self) -> Path:
        """Every scheduler's windows log merged."""
        return self.root / "windows.csv"

    def source_records(self, antenna: str) -> Path:
        return self.root / "records" / f"{antenna}.csv"

    def scheduler_stats(self, antenna: str, restart: int = 0) -> Path:
        return self.root / "schedulers" / f"{_numbered(antenna, restart)}.json"

    def all_scheduler_stats(self) -> list[Path]:
        """Returns every scheduler process's statistics file, by name (`ant1`, `ant1.1`, ...)."""
        return sorted(self.scheduler_stats("x").parent.glob("*.json"))

    def windows_log(self, antenna: str, restart: int = 0) -> Path:
        return self.root / "windows" / f"{_numbered(antenna, restart)}.csv"

    def all_windows_logs(self) -> list[Path]:
        return sorted(self.windows_log("x").parent.glob("*.csv"))

    def log(self, kind: str, name: str, restart: int = 0) -> Path:
        """Returns the log of a process: `logs/<kind>-<name>[.N].log` (kind: worker, scheduler, source)."""
        return self.root / "logs" / f"{kind}-{_numbered(name, restart)}.log"

    def real_batch_log(self, resource: str) -> Path:
        """Returns where a real worker logs its real replicas' batches (`workers.serve --real-batch-log`)."""
        return self.root / "logs" / f"worker-{resource}.real-batches.jsonl"

    def logs_of(self, kind: str) -> dict[str, Path]:
        """Returns {name[.N]: log} of every process of a kind that has a log."""
        prefix = f"{kind}-"
        return {p.stem.removeprefix(prefix): p for p in sorted(self.log(kind, "x").parent.glob(f"{prefix}*.log"))}

    def make_dirs(self) -> None:
        """Creates the run dir and the folders its processes write into."""
        for path in (self.source_records("x"), self.scheduler_stats("x"), self.windows_log("x"), self.log("x", "x")):
            path.parent.mkdir(parents=True, exist_ok=True)

    def host_address(self, role: str, site: str) -> str:
        """Returns the emulated address of the host of `role` at `site`, from the network's description."""
        return read_host_address(self.network, role, site)

    def scheduler_url(self, antenna: str) -> str:
        return f"http://{self.host_address('scheduler', antenna)}:{SCHEDULER_PORT}"


def write_t0(path: Path, t0_s: float) -> None:
    """Writes the run's t0 at once (a reader never sees half of it)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{t0_s:.6f}\n")
    tmp.replace(path)


def record_t0(run: RunDir, time_record: dict) -> None:
    """Records the run's time scale and t0 (live.clock.time_dilation_record) in config.json, and in
    pcap/time.json beside the captures when there are any (their timestamps are real)."""
    cfg = json.loads(run.config.read_text())
    cfg.update(time_dilation=time_record, t0_virtual_epoch_s=time_record["t0_virtual_epoch_s"],
               t0_real_epoch_s=time_record["t0_real_epoch_s"])
    run.config.write_text(json.dumps(cfg, indent=1) + "\n")
    if run.pcap.is_dir():
        (run.pcap / "time.json").write_text(json.dumps(time_record, indent=1) + "\n")


async def wait_t0(path: Path, timeout_s: float = 600.0, stop: asyncio.Event | None = None) -> float | None:
    """Returns the run's t0 (epoch seconds) once the orchestrator has written it to `path`; None if `stop`
    is set first; raises TimeoutError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if stop is not None and stop.is_set():
            return None
        try:
            return float(path.read_text())
        except (OSError, ValueError):  # not written yet, or half written
            await asyncio.sleep(0.005)
    raise TimeoutError(f"{path}: no t0 after {timeout_s:.0f} s")


def read_json(path: Path, default: object) -> object:
    """Returns a run dir file's JSON, or `default` where it is missing or not JSON (a run cut short)."""
    with contextlib.suppress(OSError, ValueError):
        return json.loads(path.read_text())
    return default


def read_lines(path: Path) -> list[str]:
    """Returns a run dir file's non-blank lines (none where it is missing)."""
    with contextlib.suppress(OSError):
        return [x for x in path.read_text().splitlines() if x.strip()]
    return []
