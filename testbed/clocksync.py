"""How far a server's clock is from the driver's: probes through the server's agent, each the driver's send
time t1, the server's time t2 and the driver's receive time t4 (all on the run's wall clock, topologies/wallclock.py);
the probe of least round trip gives offset = t2 - (t1 + t4) / 2, within +- its RTT/2. Where the server runs chrony,
its own offset from its time source is read beside (`chronyc -c tracking`). One-way delays across servers are
never taken from two clocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from testbed.agent import AgentClient
from topologies import wallclock

PROBES = 50


@dataclass(frozen=True)
class ClockProbe:
    """One exchange: the driver's clock when it asked and when it got the answer, the server's in between."""

    sent_s: float
    server_s: float
    received_s: float

    @property
    def rtt_s(self) -> float:
        return self.received_s - self.sent_s


@dataclass(frozen=True)
class ClockOffset:
    """A server's clock minus the driver's, and the bound the measurement guarantees."""

    server: str
    offset_ms: float
    bound_ms: float
    """The true offset lies within offset_ms +- bound_ms (half the best probe's round trip)."""
    probes: int
    chrony_offset_ms: float | None = None
    """The server's offset from its own NTP source as chrony reports it (None: no chrony there)."""


def offset_from_probes(probes: Sequence[ClockProbe]) -> tuple[float, float]:
    """Returns (offset_ms, bound_ms) from the probe of least round trip."""
    if not probes:
        raise ValueError("no clock probes")
    best = min(probes, key=lambda p: p.rtt_s)
    return (best.server_s - (best.sent_s + best.received_s) / 2) * 1000, best.rtt_s / 2 * 1000


def chrony_offset_ms(client: AgentClient) -> float | None:
    """Returns the server's system clock offset from its NTP source by chrony, in ms (None without chrony)."""
    done = client.run(["chronyc", "-c", "tracking"], check=False, timeout_s=5)
    fields = done.stdout.strip().split(",")
    try:
        return float(fields[4]) * 1000 if done.returncode == 0 else None
    except (IndexError, ValueError):
        return None


def measure(client: AgentClient, count: int = PROBES) -> ClockOffset:
    """Returns the server's clock offset from the driver's, measured with `count` probes."""
    probes = []
    for _ in range(count):
        sent = wallclock.time_s()
        server = client.clock()
        probes.append(ClockProbe(sent, server, wallclock.time_s()))
    offset_ms, bound_ms = offset_from_probes(probes)
    return ClockOffset(client.server.name, offset_ms, bound_ms, count, chrony_offset_ms(client))
