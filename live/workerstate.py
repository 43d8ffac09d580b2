"""What a live scheduler knows of one worker: where it is, whether it answers, and the load it learns from the
worker's reports (GET /v2/load), reservations (PUT /v2/streams/{id}, workers/reservations.py), its ledger's
watch (GET /v2/ledger, live/ledgerwatch.py) and frame answers (each carries the worker's ledger), in the
simulator's unit (`Variant.load_qps`, eta x rho). No HTTP and no clock: live/antenna.py gives the times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from scheduler.profiles import Variant


@dataclass
class WorkerState:
    """What the scheduler knows of one resource's worker: where it is, whether it answers, its load."""

    url: str
    model: str
    up: bool = True
    reported_qps: float = 0.0
    """The load the worker's last report stands for, in the capacity's unit: its arrivals' eta per second
    (`Variant.load_qps` of its reported query and byte rates), every antenna's streams."""
    declared_qps: float = 0.0
    """The load every antenna's schedulers declared on the worker (its reservations), from the latest version of
    its ledger taken: a watch's answer, a report, a frame's answer or an answer to a reservation of this
    scheduler's."""
    ledger: tuple[str, int] | None = None
    """(epoch, version) of the worker's ledger that `declared_qps` was taken from (workers/reservations.py
    LedgerVersion); None: not known, or a worker that does not say."""
    pending: dict[int, float] = field(default_factory=dict)
    """This scheduler's reservations on their way to the worker (stream id -> load), not in `declared_qps` yet."""
    unreserved: dict[int, float] = field(default_factory=dict)
    """This scheduler's streams bound to the worker whose reservation got no answer (stream id -> load): in no
    ledger, so counted here beside it."""
    reported_at_s: float = 0.0
    since_report: dict[int, float] = field(default_factory=dict)
    """This scheduler's own bindings to the worker since that report (stream id -> load; not in its measured
    rates yet); a stream closed or bound elsewhere leaves it."""
    busy_fraction_peak: float = 0.0
    """The largest busy time per second per replica the worker reported (1: every replica always busy)."""
    watch_answers: int = 0
    """Answers of the worker's ledger watch taken (live/ledgerwatch.py): changes, and holds that ended unchanged."""
    failures: int = 0
    streams_bound: int = 0
    """Streams the worker saw a frame of recently (every antenna's), from its last report."""
    served_total: float | None = None
    """Answers since the worker started, from its last report (None: it does not report totals)."""
    bytes_total: float | None = None
    snapshot: tuple[float, float, float] | None = None
    """(report time, served_total, bytes_total) used at the previous window's end."""
    rates: tuple[float, float] | None = None
    """(answers/s, bytes/s) over the last span between two window ends with a fresh report."""

    @property
    def declared_since_report_qps(self) -> float:
        """The load of this scheduler's bindings to the worker since its last report."""
        return sum(self.since_report.values())

    def forget(self, stream_id: int) -> None:
        """Forgets a stream of this scheduler's that no longer counts here (closed, moved or refused)."""
        self.pending.pop(stream_id, None)
        self.since_report.pop(stream_id, None)
        self.unreserved.pop(stream_id, None)

    def _take_declared(self, declared_qps: float, said: dict) -> None:
        """Takes `declared_qps` unless the worker's ledger version it was read at (`said`'s ledger_epoch and
        ledger_version) is older than the one already taken: an answer and a report overtaking each other."""
        epoch, version = said.get("ledger_epoch"), said.get("ledger_version")
        if epoch is None or version is None:
            self.declared_qps, self.ledger = declared_qps, None
            return
        ledger = (str(epoch), int(version))
        if self.ledger is not None and ledger < self.ledger:  # an earlier life of the worker, or an earlier version
            return
        self.declared_qps, self.ledger = declared_qps, ledger

    def learnt_qps(self) -> float:
        """The load the worker stands for, every antenna's. A worker that keeps a ledger (its version known):
        what was declared on it plus this scheduler's reservations on their way and bindings left unreserved,
        the simulator's exact sum (a measured rate, averaged over the report's window, still counts a stream
        seconds after it ended and would refuse a stream the ledger has room for). Any other: the larger of what
        it measured (plus this scheduler's bindings since) and that."""
        declared = self.declared_qps + sum(self.pending.values()) + sum(self.unreserved.values())
        if self.ledger is not None:
            return declared
        return max(self.reported_qps + self.declared_since_report_qps, declared)

    def take_ledger(self, said: dict) -> None:
        """Takes the ledger a worker's frame answer or ledger watch carries (declared_qps, ledger_epoch,
        ledger_version), unless a later version was already taken; raises ValueError or TypeError on garbage,
        leaving the state."""
        declared = float(said["declared_qps"])
        if not math.isfinite(declared):
            raise ValueError(f"worker's ledger: declared_qps {declared!r}")
        int(said.get("ledger_version", 0))
        self._take_declared(declared, said)

    def take_report(self, report: object, variant: Variant, replicas: int, now_s: float) -> None:
        """Takes a load report; raises ValueError, KeyError or TypeError on garbage, leaving the state as it was.

        The report's arrival and byte rates (every antenna's queries) become the load they stand for
        (`Variant.load_qps`: the arrivals' eta per second); a report without a byte rate counts its queries as
        nominal frames. `declared_qps` (a worker without reservations has none: 0) is what every scheduler
        reserved there, taken unless an answer to a reservation already gave a later version of the worker's
        ledger. Its busy time gives `busy_fraction_peak`."""
        if not isinstance(report, dict):
            raise ValueError(f"a load report is a JSON object, not {type(report).__name__}")
        qps = float(report["queries_in_per_s"])
        bytes_per_s = report.get("bytes_in_per_s")
        load = variant.load_qps(qps, float(bytes_per_s)) if bytes_per_s is not None else qps
        busy = float(report.get("busy_ms_per_s", 0.0)) / 1000.0 / replicas
        declared = float(report.get("declared_qps", 0.0))
        if not (math.isfinite(load) and math.isfinite(busy) and math.isfinite(declared)):
            raise ValueError(f"load report: rates must be finite numbers ({qps!r} queries/s, {bytes_per_s!r} B/s, "
                             f"{declared!r} declared)")
        streams = int(report.get("streams_bound", 0))
        int(report.get("ledger_version", 0))  # garbage raises here, before the state changes
        totals = report.get("totals")
        served = bytes_in = None
        if isinstance(totals, dict) and "served" in totals:
            served = float(totals["served"])
            bytes_in = float(totals["bytes_in"]) if "bytes_in" in totals else None
        self.reported_qps, self.reported_at_s = load, now_s
        self._take_declared(declared, report)
        self.streams_bound = streams
        self.busy_fraction_peak = max(self.busy_fraction_peak, busy)
        if served is not None:
            self.served_total, self.bytes_total = served, bytes_in
        self.since_report.clear()
        self.failures = 0

    def take_answer(self, stream_id: int, declared_qps: float, answer: dict | None = None) -> None:
        """Takes the worker's answer to a stream's reservation (granted or not): what is declared there now, the
        stream included if granted (unless a report already gave a later version of the ledger, `answer`'s
        ledger_epoch and ledger_version); the stream's reservation is no longer on its way."""
        self.pending.pop(stream_id, None)
        if not math.isfinite(declared_qps):
            raise ValueError(f"reservation answer: declared_qps {declared_qps!r}")
        self._take_declared(declared_qps, answer or {})
