"""UDP probe streams between two hosts of the emulated network, stamped by the receiver's kernel: opened in the
hosts' namespaces, warmed up until each has crossed once, sent on a schedule, their one-way delays collected.

All namespaces share this machine's clock, so a probe carries its send time and the receiver's kernel stamps its
arrival (SO_TIMESTAMPNS): the one-way delay is measured, not halved from an RTT. Under time dilation (factor K) the
schedule is the plan's in virtual time (intervals x K) and the delays are read back in virtual ms (real / K).
`testbed.measure` judges what these streams collect.
"""

from __future__ import annotations

import contextlib
import heapq
import math
import select
import socket
import struct
import time
from dataclasses import dataclass

from testbed.nsutil import socket_in
from testbed.plan import HostPlan, LinkPlan, NetworkPlan
from topologies import LinkShape, PathMetrics, wallclock

SO_TIMESTAMPNS = 35
_PROBE = struct.Struct("!IHIQ")  # magic, stream, sequence number (warm-up: high bit), send time ns
_MAGIC = 0x7E57BED0
_WARMUP_BIT = 1 << 31


@dataclass(frozen=True)
class ProbePlan:
    """How many probes each direction of a link gets, and how often (in virtual time: x K in real time)."""

    count: int = 100
    interval_ms: float = 10.0
    lossy_count: int = 2000
    """Probes per direction on links with loss (enough to tell 1% from 0%)."""
    lossy_interval_ms: float = 1.0
    warmup_wait_s: float = 3.0
    remeasure: bool = True
    """Measure the links outside their tolerance once more, alone, and judge them on that (both kept)."""
    jitter_spacing: float = 3.0
    """Probes of a link direction are at least this many deviations of its delay apart: two draws then
    differ by more than the spacing (and the later probe waits behind the earlier) in under 2 % of pairs."""

    def interval_for(self, shape: LinkShape | None, tdf: float = 1.0) -> float:
        """Returns the real milliseconds between probes of one direction of a link of this (virtual) shape at
        time dilation factor `tdf`."""
        lossy = shape is not None and shape.loss_pct > 0
        base = self.lossy_interval_ms if lossy else self.interval_ms
        return tdf * max(base, self.jitter_spacing * (shape.delay_dev_ms if shape is not None else 0.0))

    def count_for(self, shape: LinkShape | None) -> int:
        return self.lossy_count if shape is not None and shape.loss_pct > 0 else self.count


@dataclass
class ProbeStream:
    """One direction of probes between two hosts: its sockets, its schedule and what arrived."""

    link: LinkPlan | None
    """The link measured (None: a switch hop)."""
    site: str
    direction: str
    src: str
    dst: str
    tx: socket.socket
    rx: socket.socket
    count: int
    interval_ns: int
    delays_ns: list[int]
    """Real one-way delays of the probes that arrived."""
    warm: bool = False
    tdf: float = 1.0

    def delays_ms(self) -> list[float]:
        """Returns the probes' one-way delays in virtual ms (real / tdf), sorted."""
        return sorted(d / 1e6 / self.tdf for d in self.delays_ns)


def open_stream(plan: NetworkPlan, link: LinkPlan | None, pair: tuple[HostPlan, HostPlan], forward: bool,
                 probes: ProbePlan, tdf: float = 1.0) -> ProbeStream:
    """Opens a probe stream from one host of `pair` to the other (`forward`: the first to the second), paced for
    `link`'s shape (None: an unshaped switch hop) at time dilation factor `tdf`."""
    a, b = pair
    src, dst = (a, b) if forward else (b, a)
    rx = socket_in(dst.netns)
    rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rx.bind((dst.ip, 0))
    rx.setblocking(False)
    tx = socket_in(src.netns)
    tx.bind((src.ip, 0))
    tx.connect((dst.ip, rx.getsockname()[1]))
    tx.setblocking(False)
    shape = link.shape if link is not None else None
    return ProbeStream(link, a.site, "a->b" if forward else "b->a", src.name, dst.name, tx, rx, probes.count_for(shape),
                   int(probes.interval_for(shape, tdf) * 1e6), [], tdf=tdf)


def _send(s: ProbeStream, k: int, seq: int) -> None:
    with contextlib.suppress(OSError):  # a probe that cannot be sent counts as lost, which it is
        s.tx.send(_PROBE.pack(_MAGIC, k, seq, wallclock.time_ns()))


def _drain(streams: list[ProbeStream], k: int) -> None:
    s = streams[k]
    while True:
        try:
            data, anc, _, _ = s.rx.recvmsg(64, 64)
        except BlockingIOError:
            return
        rx_ns = wallclock.time_ns()
        for level, kind, raw in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", raw[:16])
                # on the run's clock, not after now (a stamp from before a step of the wall clock converts by it)
                rx_ns = min(wallclock.from_system_ns(sec * 1_000_000_000 + nsec), rx_ns)
        if len(data) != _PROBE.size:
            continue
        magic, stream, seq, tx_ns = _PROBE.unpack(data)
        if magic != _MAGIC or stream != k:
            continue
        if seq & _WARMUP_BIT:
            s.warm = True
        else:
            s.delays_ns.append(rx_ns - tx_ns)


def _warm_up(streams: list[ProbeStream], by_fd: dict[int, int], wait_s: float) -> None:
    """Sends a few probes per stream until each has crossed once (ARP, flows, queues settled)."""
    deadline = time.monotonic() + wait_s
    sent = 0
    while time.monotonic() < deadline and not all(s.warm for s in streams):
        for k, s in enumerate(streams):
            if not s.warm:
                _send(s, k, _WARMUP_BIT | sent)
        sent += 1
        end = time.monotonic() + 0.05
        while time.monotonic() < end:
            readable, _, _ = select.select(list(by_fd), [], [], max(0.0, end - time.monotonic()))
            for fd in readable:
                _drain(streams, by_fd[fd])
    time.sleep(0.3)  # let the last warm-up probes leave the links
    for k in range(len(streams)):
        _drain(streams, k)


def run_streams(streams: list[ProbeStream], probes: ProbePlan, max_delay_ms: float) -> None:
    """Probes every stream; `max_delay_ms`: the longest one-way delay a probe may take, in real ms."""
    if not streams:
        return  # a server of a placed run with no link and no pair of hosts on one switch
    by_fd = {s.rx.fileno(): k for k, s in enumerate(streams)}
    _warm_up(streams, by_fd, probes.warmup_wait_s + 2 * max_delay_ms / 1000)
    start = wallclock.time_ns() + 10_000_000
    heap = [(start + k * 97_000, k, 0) for k in range(len(streams))]  # staggered, so sends spread out
    heapq.heapify(heap)
    last_send = max(start + s.count * s.interval_ns for s in streams)
    deadline = last_send + int((2 * max_delay_ms + 500) * 1e6)
    while True:
        now = wallclock.time_ns()
        while heap and heap[0][0] <= now:
            _, k, seq = heapq.heappop(heap)
            s = streams[k]
            _send(s, k, seq)
            if seq + 1 < s.count:
                heapq.heappush(heap, (start + k * 97_000 + (seq + 1) * s.interval_ns, k, seq + 1))
        done = not heap and all(len(s.delays_ns) >= s.count for s in streams)
        if done or now > deadline:
            return
        wake = heap[0][0] if heap else deadline
        readable, _, _ = select.select(list(by_fd), [], [], max(0.0, (wake - wallclock.time_ns()) / 1e9))
        for fd in readable:
            _drain(streams, by_fd[fd])


def median_p99_ms(s: ProbeStream) -> tuple[float, float]:
    """Returns the median and 99th percentile one-way delay (virtual ms) of a stream's probes (nan without any)."""
    delays_ms = s.delays_ms()
    n = len(delays_ms)
    return (delays_ms[n // 2], delays_ms[min(n - 1, int(0.99 * n))]) if n else (math.nan, math.nan)


def close_streams(streams: list[ProbeStream]) -> None:
    """Closes every stream's two sockets."""
    for s in streams:
        s.tx.close()
        s.rx.close()


def worst_delay_ms(shape: LinkShape | PathMetrics, tdf: float) -> float:
    """Returns the longest one-way delay in real ms a probe may meet on a link or path of this (virtual) shape
    at time dilation factor `tdf` (4 deviations above its delay)."""
    return tdf * (shape.delay_ms + 4 * shape.delay_dev_ms)
