"""The userspace wire: delay, jitter and loss for links on kernels without netem.

A wire process bridges pairs of interfaces with AF_PACKET sockets in one select() loop. Each frame
is stamped by the kernel on receipt (SO_TIMESTAMPNS), dropped with the loss probability, and held
until its due time, FIFO per direction: the end of its transmission at the link's rate (after the frames before it,
as on a real link of that rate) + delay + normal jitter. The rate itself stays in the kernel's TBF (in front of the
wire), whose bucket lets a frame of up to 1 ms of the link's bytes through at once: the wire charges it the
transmission time a real link would (the simulator does too), and adds nothing to frames TBF already paced.
Frames of one burst (each arriving within BURST_FACTOR times its transmission time at the link's
rate, plus BURST_SLACK_NS, of the one before: a TCP flight) share one jitter draw, as packets queued together do
on a real path; otherwise a query's packets would each draw and the query would take the latest of them.
A pure TCP acknowledgement (no payload, no SYN, FIN or RST) takes the link's delay and a jitter draw of its own
in a FIFO of its own: it neither starts a burst nor holds back the messages behind it. The simulator's links
carry messages only (frames and answers, FIFO among themselves); without this each frame's acknowledgements,
drawing on the answers' direction, delayed the answer behind them (measured: +0.6-0.9 virtual ms on full-edge's
radio downlinks, growing with the radio's jitter).
Run as `python -m testbed.wire CONFIG.json STATS.json` inside the namespace holding the interfaces. SIGHUP makes
it read CONFIG.json again and reshape its wires at once (frames already held keep their due time, as with netem),
then print `reshaped N` on stdout, N the config's `generation`: a network event changes a wire's delay, jitter or
loss this way at run time.
Under time dilation (a spec's `tdf`, K) a wire holds frames K times the link's delay and jitter, and charges
transmission times and judges bursts at the dilated rate (bandwidth / K, as the kernel's TBF keeps it); its
timing runs in real time, and its statistics give lateness in virtual microseconds (real / K) beside K, with the
frames due in each second and how many of them were late (`DirectionStats.sent_per_s`): the monitor judges them
window by window.
A wire's error is its wake-up latency, so it runs as a real-time process (SCHED_FIFO, WIRE_RT_PRIORITY) where the
host allows, else at nice WIRE_NICE; its statistics say which (`scheduling`).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import select
import signal
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from topologies import LinkShape, wallclock
from topologies.timescale import dilated_shape

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
SO_TIMESTAMPNS = 35
PR_SET_PDEATHSIG = 1
PR_SET_TIMERSLACK = 29
SOCKET_BUFFER_BYTES = 8 << 20
MAX_FRAME_BYTES = 65535 + 18
"""The largest MTU an emulated network takes plus an Ethernet header with a VLAN tag: no frame is cut."""
EARLY_NS = 20_000
"""Frames due within this much are sent now: waking up costs about as long (select's resolution)."""
DRAIN_FRAMES = 64
"""Frames read from one socket per turn of the loop, so that a busy link cannot starve due sends."""
MAX_QUEUE_FRAMES = 100_000
LATE_BIN_US = 10
LATE_BINS = 10_000
LATE_STEPS_US = (250, 500, 1000, 2000, 5000)
"""Per second, a wire counts the frames that left later than each of these (virtual us; `sent_per_s`), so that
the monitor can say when a wire was late, window by window, as it does for every other invariant."""
LATE_EVENT_US = LATE_STEPS_US[0]
"""A frame that leaves later than this (virtual us) is also listed with its due time (`late_events`)."""
LATE_EVENTS_MAX = 20_000
RANDOM_BATCH = 4096
BURST_SLACK_NS = 100_000
"""A frame this much later than the end of the previous frame's transmission still belongs to its burst."""
BURST_FACTOR = 1.5
ETH_P_IP, ETH_P_IPV6, ETH_P_8021Q = 0x0800, 0x86DD, 0x8100
TCP_SYN_FIN_RST = 0x07
MAX_PURE_ACK_BYTES = 18 + 60 + 60
"""The longest a pure ACK can be (Ethernet with a VLAN tag, IPv4 with options or IPv6, TCP with options):
longer frames carry data and are not parsed."""
WIRE_NICE = -10
WIRE_RT_PRIORITY = 10
"""SCHED_FIFO priority of a wire: a frame due wakes it at once, ahead of every ordinary process on its core
(at nice WIRE_NICE a wire waits its turn behind sources, schedulers and workers, and its frames leave late; the
fidelity monitor's wire lateness measures it in every run). A wire sleeps in select() between frames; the host's
real-time throttling (sched_rt_runtime_us, 95 % of a core by default) and WIRE_RT_CPU_LIMIT_US bound what a
wire gone wrong can take."""
WIRE_RT_CPU_LIMIT_US = 200_000
"""CPU time a real-time wire may use without blocking before SIGXCPU (RLIMIT_RTTIME; SIGKILL at twice as much)."""


@dataclass(frozen=True)
class WireSpec:
    """One link's wire: two interfaces and the link's shape (delay, jitter and loss here; its rate, kept by
    kernel TBF, gives each frame's transmission time here and spaces a burst's frames), in virtual time, and the
    time dilation factor that turns it real."""

    name: str
    if_a: str
    if_b: str
    shape: LinkShape
    seed: int = 0
    tdf: float = 1.0
    """Time dilation factor K: delay and jitter x K, rate / K in real time."""
    generation: int = 0
    """Which config this is: each reshape writes the next, and the wire answers it with `reshaped <generation>`,
    so that a late answer to an earlier one is not taken for it."""

    @staticmethod
    def from_json(data: dict) -> WireSpec:
        """Returns the spec of one entry of a wire's JSON config (as `asdict` writes it)."""
        return WireSpec(**{**data, "shape": LinkShape(**data["shape"])})


@dataclass
class DirectionStats:
    """What one direction of a wire did: frames forwarded and dropped, and how late frames left (in virtual
    microseconds: real lateness / tdf)."""

    link: str
    direction: str
    tdf: float = 1.0
    frames_in: int = 0
    frames_out: int = 0
    dropped_loss: int = 0
    dropped_queue: int = 0
    dropped_send: int = 0
    late_p50_us: float = 0.0
    late_p99_us: float = 0.0
    late_max_us: float = 0.0
    scheduling: str = ""
    """How the wire process was scheduled: `SCHED_FIFO <priority>` or `nice <n>` (`favour`)."""
    pure_acks: int = 0
    """Frames that were pure TCP acknowledgements (`pure_ack`), held in their own FIFO."""
    sent_per_s: list[list[int]] = field(default_factory=list)
    """[epoch second on the run's wall clock (real), frames due in it, then of those how many left later than
    each of LATE_STEPS_US]: the monitor's per-window lateness."""
    late_steps_us: list[int] = field(default_factory=lambda: list(LATE_STEPS_US))
    late_events: list[list[float]] = field(default_factory=list)
    """[due epoch ms (real), lateness in virtual us] of the first LATE_EVENTS_MAX frames later than LATE_EVENT_US
    (when and how late, to look into; `late_events_dropped` counts those beyond)."""
    late_events_dropped: int = 0
    load_per_s: list[list[int]] = field(default_factory=list)
    """[epoch second on the run's wall clock (real) in which the link started sending frames, their bytes, the
    link's transmission time for them (real ns), the longest any of them waited here for the link to finish the
    frames before it (virtual us: a burst TBF let through at once; TBF's own queue is before the wire)], pure
    acknowledgements apart: how full the link was and when (live/linkload.py)."""


def pure_ack(frame: bytes) -> bool:
    """Returns whether an Ethernet frame is a pure TCP acknowledgement: IPv4 or IPv6 (one VLAN tag at most),
    TCP without payload and without SYN, FIN or RST."""
    off = 12
    kind = int.from_bytes(frame[off:off + 2], "big")
    if kind == ETH_P_8021Q:
        off += 4
        kind = int.from_bytes(frame[off:off + 2], "big")
    ip = off + 2
    if kind == ETH_P_IP and len(frame) >= ip + 20:
        ihl = (frame[ip] & 0x0F) * 4
        if frame[ip + 9] != socket.IPPROTO_TCP or ihl < 20 or frame[ip + 6] & 0x3F or frame[ip + 7]:
            return False  # not TCP, or a fragment
        ip_payload = int.from_bytes(frame[ip + 2:ip + 4], "big") - ihl
        tcp = ip + ihl
    elif kind == ETH_P_IPV6 and len(frame) >= ip + 40:
        if frame[ip + 6] != socket.IPPROTO_TCP:  # extension headers: not a pure ACK of ours
            return False
        ip_payload = int.from_bytes(frame[ip + 4:ip + 6], "big")
        tcp = ip + 40
    else:
        return False
    if len(frame) < tcp + 14:
        return False
    return ip_payload == (frame[tcp + 12] >> 4) * 4 and not frame[tcp + 13] & TCP_SYN_FIN_RST


class _Direction:
    """Frames travelling one way on one wire, with their due times in epoch nanoseconds on the run's wall clock
    (topologies/wallclock.py; the kernel's receive stamps are brought onto it)."""

    def __init__(self, spec: WireSpec, rx: socket.socket, tx: socket.socket, label: str,
                 rng: np.random.Generator) -> None:
        self.rx, self.tx = rx, tx
        self.tdf = spec.tdf
        self.reshape(spec.shape)
        self.last_rx_ns = -(1 << 62)
        self.last_jitter_ns = 0
        self.rng = rng
        self.queue: deque[tuple[int, bytes]] = deque()
        self.last_due_ns = 0
        self.sent_ns = 0
        """When the last frame's transmission ended (the link is free from then on)."""
        self.acks: deque[tuple[int, bytes]] = deque()
        self.last_ack_due_ns = 0
        self.stats = DirectionStats(spec.name, label, tdf=spec.tdf)
        self.late_counts = [0] * LATE_BINS
        self.late_steps_ns = [int(us * 1000 * self.tdf) for us in LATE_STEPS_US]
        self._second = -1
        """The epoch second (real) whose due frames `stats.sent_per_s[-1]` counts."""
        self._counts: list[int] = []
        self._load: list[int] = [-1, 0, 0, 0]
        """`stats.load_per_s[-1]`: the epoch second (real) the link started sending the frames it counts, their
        bytes, their transmission time and their longest wait (real ns until `finish`)."""
        self._load_end_ns = 0
        """The end of that second (epoch ns)."""
        self._uniform = np.empty(0)
        self._normal = np.empty(0)
        self._k = 0

    def reshape(self, shape: LinkShape) -> None:
        """Sets the delay, jitter, loss and rate that frames received from now on meet (`shape` in virtual time,
        dilated by the wire's factor)."""
        shape = dilated_shape(shape, self.tdf)
        self.delay_ns = int(shape.delay_ms * 1e6)
        self.dev_ns = shape.delay_dev_ms * 1e6
        self.loss = shape.loss_pct / 100.0
        self.tx_ns_per_byte = 8e3 / shape.bw_mbps if shape.bw_mbps > 0 else 0.0
        """A byte's transmission time at the (dilated) rate."""
        self.ns_per_byte = BURST_FACTOR * self.tx_ns_per_byte

    def _draw(self) -> tuple[float, float]:
        if self._k >= len(self._uniform):
            self._uniform = self.rng.random(RANDOM_BATCH)
            self._normal = self.rng.standard_normal(RANDOM_BATCH)
            self._k = 0
        u, n = self._uniform[self._k], self._normal[self._k]
        self._k += 1
        return float(u), float(n)

    def receive(self) -> None:
        for _ in range(DRAIN_FRAMES):
            try:
                frame, anc, _flags, _addr = self.rx.recvmsg(MAX_FRAME_BYTES, 64)
            except BlockingIOError:
                return
            rx_ns = wallclock.time_ns()
            for level, kind, data in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", data[:16])
                    # on the run's clock, kept between the last receipt and now: a frame stamped before a step
                    # of the wall clock and read after it converts by the whole step
                    rx_ns = min(max(wallclock.from_system_ns(sec * 1_000_000_000 + nsec), self.last_rx_ns), rx_ns)
            self.stats.frames_in += 1
            u, n = self._draw()
            if len(self.queue) + len(self.acks) >= MAX_QUEUE_FRAMES:
                self.stats.dropped_queue += 1
                continue
            ack = len(frame) <= MAX_PURE_ACK_BYTES and pure_ack(frame)
            if not ack:  # the link sends it after the frames before it (a frame it then loses took its time too)
                start_ns, tx_ns = max(rx_ns, self.sent_ns), int(len(frame) * self.tx_ns_per_byte)
                self.sent_ns = start_ns + tx_ns
                load = self._load
                if start_ns >= self._load_end_ns:  # the link starts it in a later second (never an earlier one)
                    second = start_ns // 1_000_000_000
                    self._load_end_ns = (second + 1) * 1_000_000_000
                    self._load = load = [second, 0, 0, 0]
                    self.stats.load_per_s.append(load)
                load[1] += len(frame)
                load[2] += tx_ns
                if start_ns - rx_ns > load[3]:
                    load[3] = start_ns - rx_ns
            if u < self.loss:
                self.stats.dropped_loss += 1
                continue
            if ack:  # own draw, own FIFO (module docstring)
                self.stats.pure_acks += 1
                jitter = int(n * self.dev_ns) if self.dev_ns else 0
                self.last_ack_due_ns = max(rx_ns + self.delay_ns + jitter, rx_ns, self.last_ack_due_ns)
                self.acks.append((self.last_ack_due_ns, frame))
                continue
            if rx_ns - self.last_rx_ns > len(frame) * self.ns_per_byte + BURST_SLACK_NS:
                self.last_jitter_ns = int(n * self.dev_ns) if self.dev_ns else 0  # a new burst
            self.last_rx_ns = rx_ns
            due = self.sent_ns + self.delay_ns + self.last_jitter_ns
            # FIFO: a frame never overtakes the one before it (netem with a rate behaves the same).
            due = max(due, rx_ns, self.last_due_ns)
            self.last_due_ns = due
            self.queue.append((due, frame))

    def send_due(self, now_ns: int) -> int | None:
        """Sends every frame due by now; returns the next due time, or None when the queue is empty."""
        q, acks = self.queue, self.acks
        until = now_ns + EARLY_NS
        while True:  # the two FIFOs merged by due time
            head = q if q and (not acks or q[0][0] <= acks[0][0]) else acks
            if not head or head[0][0] > until:
                break
            due, frame = head.popleft()
            try:
                self.tx.send(frame)
                self.stats.frames_out += 1
            except OSError:  # ENOBUFS/EAGAIN: the TBF queue behind is full; the frame is lost
                self.stats.dropped_send += 1
            late_ns = now_ns - due
            self.late_counts[min(max(0, late_ns) // (1000 * LATE_BIN_US), LATE_BINS - 1)] += 1
            second = due // 1_000_000_000
            if second != self._second:
                self._second = second
                self._counts = [second, 0] + [0] * len(LATE_STEPS_US)
                self.stats.sent_per_s.append(self._counts)
            self._counts[1] += 1
            if late_ns > self.late_steps_ns[0]:
                for i, step in enumerate(self.late_steps_ns):
                    if late_ns > step:
                        self._counts[2 + i] += 1
                if len(self.stats.late_events) < LATE_EVENTS_MAX:
                    self.stats.late_events.append([round(due / 1e6, 3), round(late_ns / 1000 / self.tdf, 1)])
                else:
                    self.stats.late_events_dropped += 1
        if not acks:
            return q[0][0] if q else None
        return min(q[0][0], acks[0][0]) if q else acks[0][0]

    def finish(self) -> DirectionStats:
        total = sum(self.late_counts)
        if total:
            def pct(p: float) -> float:
                acc, target = 0, p * total
                for i, c in enumerate(self.late_counts):
                    acc += c
                    if acc >= target:
                        return float(i * LATE_BIN_US)
                return float(LATE_BINS * LATE_BIN_US)
            self.stats.late_p50_us, self.stats.late_p99_us, self.stats.late_max_us = (
                pct(q) / self.tdf for q in (0.5, 0.99, 1.0))
        for row in self.stats.load_per_s:
            row[3] = int(row[3] / 1000 / self.tdf)  # the longest wait, in virtual us
        return self.stats


def open_socket(ifname: str) -> socket.socket:
    """Returns a non-blocking raw socket on an interface that ignores its own sends and stamps receipts."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.setsockopt(socket.SOL_SOCKET, 33, SOCKET_BUFFER_BYTES)  # SO_RCVBUFFORCE (root)
    s.setsockopt(socket.SOL_SOCKET, 32, SOCKET_BUFFER_BYTES)  # SO_SNDBUFFORCE
    s.bind((ifname, ETH_P_ALL))
    s.setblocking(False)
    return s


class _Stop(Exception):
    pass


def _stop(_signum: int, _frame: object) -> None:
    raise _Stop


def serve(specs: list[WireSpec], stats_path: Path | None,
          ready: Callable[[], None] = lambda: None,
          reload: Callable[[], list[WireSpec]] | None = None,
          reshaped: Callable[[int], None] = lambda _generation: None, scheduling: str = "") -> list[DirectionStats]:
    """Runs the wires until SIGTERM/SIGINT; returns (and writes) what each direction did. On SIGHUP (main
    thread only) it reshapes each wire as `reload` gives it, then calls `reshaped` with the config's generation."""
    directions: list[_Direction] = []
    by_fd: dict[int, _Direction] = {}
    by_name: dict[str, list[_Direction]] = {}
    for spec in specs:
        sa, sb = open_socket(spec.if_a), open_socket(spec.if_b)
        rng_ab, rng_ba = (np.random.Generator(np.random.PCG64(s)) for s in np.random.SeedSequence(spec.seed).spawn(2))
        for d in (_Direction(spec, sa, sb, "a->b", rng_ab), _Direction(spec, sb, sa, "b->a", rng_ba)):
            directions.append(d)
            by_fd[d.rx.fileno()] = d
            by_name.setdefault(spec.name, []).append(d)
    fds = list(by_fd)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    wake = _hangup_pipe() if reload is not None else None
    if wake is not None:
        fds.append(wake)
    ready()
    try:
        while True:
            now = wallclock.time_ns()
            next_due = None
            for d in directions:
                due = d.send_due(now)
                if due is not None and (next_due is None or due < next_due):
                    next_due = due
            timeout = None if next_due is None else max(0.0, (next_due - EARLY_NS - wallclock.time_ns()) / 1e9)
            readable, _, _ = select.select(fds, [], [], timeout)
            for fd in readable:
                if fd == wake:
                    if signal.SIGHUP in os.read(fd, 512) and reload is not None:
                        specs = reload()
                        for spec in specs:
                            for d in by_name.get(spec.name, []):
                                d.reshape(spec.shape)
                        reshaped(max((spec.generation for spec in specs), default=0))
                    continue
                by_fd[fd].receive()
    except _Stop:
        pass
    stats = [d.finish() for d in directions]
    for st in stats:
        st.scheduling = scheduling + (", demoted (RLIMIT_RTTIME)" if DEMOTED else "")
    if stats_path is not None:
        stats_path.write_text(json.dumps([asdict(s) for s in stats], indent=1) + "\n")
    return stats


def _hangup_pipe() -> int:
    """Returns the read end of a pipe that a SIGHUP (and any other handled signal) writes its number to, so
    that the select() loop wakes up for it however long it would sleep."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    signal.set_wakeup_fd(w)
    signal.signal(signal.SIGHUP, lambda _signum, _frame: None)
    return r


def favour() -> str:
    """Makes this process real-time (SCHED_FIFO at WIRE_RT_PRIORITY, not inherited by children) where the host
    allows it, else as favoured as ovs-vswitchd (nice WIRE_NICE, or as it was if more); returns which, as
    DirectionStats.scheduling says it. A real-time wire that runs WIRE_RT_CPU_LIMIT_US without sleeping gets
    SIGXCPU (RLIMIT_RTTIME) and goes on as an ordinary process (`demoted`), so a wire gone wrong cannot hold its
    core where the host's real-time throttling (sched_rt_runtime_us) is off."""
    with contextlib.suppress(OSError, ValueError):
        signal.signal(signal.SIGXCPU, _demote)
        resource.setrlimit(resource.RLIMIT_RTTIME, (WIRE_RT_CPU_LIMIT_US, 2 * WIRE_RT_CPU_LIMIT_US))
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(WIRE_RT_PRIORITY))
        return f"SCHED_FIFO {WIRE_RT_PRIORITY}"
    except OSError:  # not root, no real-time budget (a cgroup's cpu.rt_runtime_us of 0)
        _be_nice()
        return f"nice {os.getpriority(os.PRIO_PROCESS, 0)}"


def _be_nice() -> None:
    with contextlib.suppress(PermissionError):
        os.setpriority(os.PRIO_PROCESS, 0, min(os.getpriority(os.PRIO_PROCESS, 0), WIRE_NICE))


DEMOTED: list[float] = []
"""When (time.monotonic) SIGXCPU made this real-time wire an ordinary process, if it did."""


def _demote(_signum: int, _frame: object) -> None:
    """SIGXCPU: the wire ran its real-time CPU limit without sleeping; it goes on at nice WIRE_NICE."""
    with contextlib.suppress(OSError):
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        _be_nice()
    DEMOTED.append(time.monotonic())


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(option, value, 0, 0, 0)


def main(argv: list[str]) -> int:
    config_path, stats_path = Path(argv[0]), Path(argv[1])
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # the run died: stop with it, its record has us
    _prctl(PR_SET_TIMERSLACK, 1000)  # 1 us instead of 50 us: frames leave closer to their due time
    scheduling = favour()
    def read_config() -> list[WireSpec]:
        return [WireSpec.from_json(d) for d in json.loads(config_path.read_text())]

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    serve(read_config(), stats_path, lambda: say("ready"), reload=read_config,
          reshaped=lambda generation: say(f"reshaped {generation}"), scheduling=scheduling)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
