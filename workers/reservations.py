"""A worker's ledger of the load its schedulers declared: the capacity constraint checked where the capacity is.

Every antenna's scheduler binds streams on its own, and a worker may serve several antennas. The simulator
checks `L_v(t) + eta * rho <= C_v` against every stream bound to the variant by any antenna at that instant; a
live scheduler learns the others' bindings from the worker's ledger, at best a one-way delay late (its watch,
workers/ledger_routes.py), and at the paper's loads two antennas would fill one variant past its capacity
within that delay. So once a
scheduler has bound a stream it reserves the stream's load at the worker (`PUT /v2/streams/{id}`; the stream's
first frames already go there): the worker grants it if the load the others declared plus this reservation fits
the capacity the scheduler sends (every scheduler holds the same system model), and refuses it otherwise,
saying how much is declared, and forgets any earlier reservation of that stream; the scheduler then binds the
stream again. A stream is released when its scheduler closes it (`DELETE /v2/streams/{id}`), when its scheduler starts
afresh (`DELETE /v2/streams?owner=ANTENNA`: a restarted scheduler has no bindings, its sources open their
streams again), or when it sends nothing for `idle_s` (its scheduler died or forgot), as the scheduler itself
releases idle streams.

Time is the worker's clock (virtual under time dilation); no HTTP here (workers/ledger_routes.py serves it).
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

FIT_EPS_QPS = 1e-9
"""Slack of the capacity check: lenient by this much, so that rounding (a sum in another order) never refuses
what scheduler/core.py found feasible."""


@dataclass
class Reservation:
    """One stream's declared load on this worker."""

    load_qps: float
    """Its load in the capacity's unit (eta x fps): what it adds to the declared load."""
    last_seen_s: float
    """When it was reserved or last sent a frame."""
    owner: str = ""
    """The scheduler that reserved it (its antenna): a scheduler starting afresh releases what it had."""


@dataclass(frozen=True)
class Grant:
    """The answer to a reservation: granted or not, and the load declared after it (this stream included when
    granted), in the capacity's unit, as of the ledger's `version`."""

    granted: bool
    declared_qps: float
    version: int = 0


@dataclass
class LedgerVersion:
    """Orders what a worker says of its ledger: `epoch` names one life of the worker (a restarted worker starts
    a new one, which sorts after), `version` counts the ledger's changes in it. A scheduler's answers to
    reservations and its load reports travel on different connections and may arrive out of order; the one with
    the older (epoch, version) is not taken."""

    epoch: str = field(default_factory=lambda: f"{time.time_ns():020d}-{secrets.token_hex(3)}")
    """The worker's start (ns since the epoch, zero-padded: a later life sorts after) and a random suffix."""
    version: int = 0


class Reservations:
    """The streams whose load the schedulers declared on this worker."""

    def __init__(self, idle_s: float = 10.0, on_change: Callable[[], None] | None = None) -> None:
        self.idle_s = idle_s
        self.streams: dict[str, Reservation] = {}
        self.ledger = LedgerVersion()
        self.on_change = on_change
        """Called after each change of the ledger (its version counted): the watch (workers/ledger_routes.py)."""

    def _changed(self) -> int:
        self.ledger.version += 1
        if self.on_change is not None:
            self.on_change()
        return self.ledger.version

    def declared_qps(self, now_s: float) -> float:
        """Returns the load declared by the streams not idle at `now_s` (the idle ones are dropped)."""
        self.expire(now_s)
        return sum(r.load_qps for r in self.streams.values())

    def reserve(self, stream: str, load_qps: float, check_qps: float, capacity_qps: float, now_s: float,
                owner: str = "") -> Grant:
        """Grants `stream` its `load_qps` if the others' declared load plus `check_qps` (its load, or more with a
        capacity headroom) fits `capacity_qps`; a stream already here is replaced (a re-opening)."""
        if not all(math.isfinite(x) and x >= 0.0 for x in (load_qps, check_qps, capacity_qps)):
            raise ValueError(f"reservation of stream {stream!r}: loads and capacity are finite numbers >= 0")
        self.expire(now_s)
        others = sum(r.load_qps for s, r in self.streams.items() if s != stream)
        if others + check_qps > capacity_qps + FIT_EPS_QPS:
            if self.streams.pop(stream, None) is not None:
                self._changed()
            return Grant(False, others, self.ledger.version)
        self.streams[stream] = Reservation(load_qps, now_s, owner)
        return Grant(True, others + load_qps, self._changed())

    def release(self, stream: str) -> bool:
        """Releases a stream; returns whether it was here."""
        if self.streams.pop(stream, None) is None:
            return False
        self._changed()
        return True

    def release_owner(self, owner: str) -> int:
        """Releases every stream `owner` reserved (a scheduler restarted: its streams open again); returns how
        many."""
        gone = [s for s, r in self.streams.items() if r.owner == owner]
        for s in gone:
            del self.streams[s]
        if gone:
            self._changed()
        return len(gone)

    def seen(self, stream: str, now_s: float) -> None:
        """Notes a frame of `stream` (a stream that sends is not idle)."""
        r = self.streams.get(stream)
        if r is not None:
            r.last_seen_s = now_s

    def expire(self, now_s: float) -> None:
        """Drops the streams that sent nothing for longer than `idle_s`."""
        idle = [s for s, r in self.streams.items() if now_s - r.last_seen_s > self.idle_s]
        for s in idle:
            del self.streams[s]
        if idle:
            self._changed()
