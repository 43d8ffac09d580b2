"""The userspace wire's per-frame logic, on socket pairs (no namespaces needed)."""

from __future__ import annotations

import socket
import struct
import time
import types

import numpy as np

from testbed.wire import WireSpec, _Direction, pure_ack
from topologies import LinkShape


def _direction(**shape) -> tuple[_Direction, socket.socket]:
    rx_in, rx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    tx, _tx_out = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.setblocking(False)
    spec = WireSpec("l", "a", "b", LinkShape(**shape))
    return _Direction(spec, rx, tx, "a->b", np.random.default_rng(0)), rx_in


def test_frames_of_one_burst_share_a_jitter_draw_and_bursts_draw_anew(monkeypatch) -> None:
    # Socket pairs carry no kernel receive stamps, so the wire reads the clock as it drains them: a clock
    # that moves 1 us per read keeps a preempted test process from splitting one burst in two.
    fake_ns = iter(range(10**12, 2 * 10**12, 1_000))
    monkeypatch.setattr("testbed.wire.wallclock", types.SimpleNamespace(time_ns=lambda: next(fake_ns),
                                                                        from_system_ns=lambda ns: ns))
    d, sender = _direction(delay_ms=10.0, delay_dev_ms=5.0, bw_mbps=1000.0)
    offsets = []
    for _burst in range(4):
        for _ in range(5):  # one TCP flight: five 9000-byte frames back to back
            sender.send(bytes(9000))
        d.receive()
        dues = [due for due, _ in d.queue]
        assert len(dues) == 5 and all(b - a < 1_000_000 for a, b in zip(dues, dues[1:], strict=False))
        offsets.append(d.last_jitter_ns)
        d.queue.clear()
        d.last_due_ns = 0
        for _ in range(5_000):  # the next burst starts 5 ms later, far beyond a frame's transmission time
            next(fake_ns)
    assert len(set(offsets)) == 4  # a fresh normal draw per burst (5 ms deviation: never equal)


def test_spaced_frames_each_draw_their_own_jitter() -> None:
    d, sender = _direction(delay_ms=10.0, delay_dev_ms=5.0, bw_mbps=1000.0)
    offsets = []
    for _ in range(20):
        sender.send(bytes(100))
        d.receive()
        offsets.append(d.last_jitter_ns)
        time.sleep(0.002)
    assert len(set(offsets)) == 20
    assert 1.0e6 < np.std(offsets) < 12.0e6  # about the 5 ms deviation of the file


def test_no_jitter_without_a_deviation() -> None:
    d, sender = _direction(delay_ms=3.0, bw_mbps=100.0)
    sender.send(bytes(500))
    d.receive()
    (due, _), = d.queue
    assert d.last_jitter_ns == 0 and due > 0


def _tcp_frame(payload: bytes = b"", flags: int = 0x10, ipv6: bool = False, vlan: bool = False) -> bytes:
    """An Ethernet frame carrying one TCP segment (20-byte header, `flags`: ACK by default)."""
    tcp = struct.pack("!HHIIBBHHH", 40000, 8000, 1, 1, 5 << 4, flags, 65535, 0, 0) + payload
    if ipv6:
        ip = struct.pack("!IHBB", 6 << 28, len(tcp), socket.IPPROTO_TCP, 64) + bytes(32)
        kind = 0x86DD
    else:
        ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(tcp), 0, 0, 64, socket.IPPROTO_TCP, 0) + bytes(8)
        kind = 0x0800
    tag = struct.pack("!HH", 0x8100, 7) if vlan else b""
    return bytes(12) + tag + struct.pack("!H", kind) + ip + tcp + bytes(6)  # Ethernet pads short frames


def test_pure_acks_are_told_from_segments_that_carry_something() -> None:
    assert pure_ack(_tcp_frame()) and pure_ack(_tcp_frame(ipv6=True)) and pure_ack(_tcp_frame(vlan=True))
    assert not pure_ack(_tcp_frame(b"x" * 100))  # data (with its ACK)
    for flags in (0x12, 0x11, 0x14):  # SYN-ACK, FIN-ACK, RST-ACK
        assert not pure_ack(_tcp_frame(flags=flags))
    udp = bytearray(_tcp_frame())
    udp[14 + 9] = socket.IPPROTO_UDP
    assert not pure_ack(bytes(udp)) and not pure_ack(bytes(100)) and not pure_ack(_tcp_frame()[:40])
    fragment = bytearray(_tcp_frame())
    fragment[14 + 7] = 8  # a later fragment: its payload is no TCP header
    assert not pure_ack(bytes(fragment))


def test_an_ack_never_holds_back_the_message_behind_it(monkeypatch) -> None:
    """An ACK drawing +4 deviations, then a message drawing -1 right after it: the message leaves on its own
    draw (the simulator's links carry messages only), and messages stay FIFO among themselves."""
    fake_ns = iter(range(10**12, 2 * 10**12, 1_000_000))  # 1 ms between reads: every frame its own burst
    monkeypatch.setattr("testbed.wire.wallclock", types.SimpleNamespace(time_ns=lambda: next(fake_ns),
                                                                        from_system_ns=lambda ns: ns))
    d, sender = _direction(delay_ms=10.0, delay_dev_ms=2.0, bw_mbps=400.0)
    draws = iter([(1.0, 4.0), (1.0, -1.0), (1.0, 3.0), (1.0, -2.0)])
    monkeypatch.setattr(d, "_draw", lambda: next(draws))
    frames = (_tcp_frame(), _tcp_frame(b"answer"), _tcp_frame(b"frame"), _tcp_frame(b"next"))
    for frame in frames:
        sender.send(frame)
        d.receive()
    (ack_due, _), = d.acks
    (answer_due, _), (frame_due, _), (next_due, _) = d.queue
    t0, tx_ns = 10**12, [len(f) * 20 for f in frames]  # each message's transmission at 400 Mbit/s: 20 ns a byte
    assert ack_due == t0 + 10_000_000 + 8_000_000
    assert answer_due == t0 + 1_000_000 + tx_ns[1] + 10_000_000 - 2_000_000  # its own draw, before the ACK's due
    assert frame_due == t0 + 2_000_000 + tx_ns[2] + 10_000_000 + 6_000_000
    assert next_due == frame_due  # FIFO among messages: -2 deviations would overtake the frame before it
    assert d.stats.pure_acks == 1
    # merged by due time: the answer went first; the ACK is next (the frame's transmission puts it 1.3 us later)
    assert d.send_due(answer_due) == ack_due < frame_due and len(d.acks) == 1
    assert d.send_due(frame_due) is None and d.stats.frames_out + d.stats.dropped_send == 4  # (no reader here)


def test_a_frame_let_through_at_once_takes_its_transmission_time_and_a_paced_one_no_more(monkeypatch) -> None:
    """TBF's bucket lets 28 full frames (a 42 kB query) through back to back: they leave the wire as a link of the
    rate would send them, 1514 x 20 ns apart at 400 Mbit/s after the delay; frames that arrive one transmission
    time apart (as TBF sends them once its bucket is empty) leave at the same times, charged nothing more."""
    step = iter([0] * 28 + [30_280 * i for i in range(28)])  # 28 at once, then 28 each one transmission apart
    now = [10**12]
    monkeypatch.setattr("testbed.wire.wallclock", types.SimpleNamespace(
        time_ns=lambda: now[0] + next(step), from_system_ns=lambda ns: ns))
    d, sender = _direction(delay_ms=4.0, bw_mbps=400.0)
    for _ in range(28):
        sender.send(bytes(1514))
    d.receive()
    dues = [due for due, _ in d.queue]
    assert dues == [10**12 + 30_280 * (i + 1) + 4_000_000 for i in range(28)]  # the last: 0.85 ms after the first's rx
    d.queue.clear()
    now[0] = 2 * 10**12
    for _ in range(28):
        sender.send(bytes(1514))
    d.receive()
    dues = [due for due, _ in d.queue]
    assert dues == [2 * 10**12 + 30_280 * (i + 1) + 4_000_000 for i in range(28)]  # received paced: the same


def test_a_lost_frame_took_its_transmission_time_too(monkeypatch) -> None:
    monkeypatch.setattr("testbed.wire.wallclock", types.SimpleNamespace(time_ns=lambda: 10**12,
                                                                        from_system_ns=lambda ns: ns))
    d, sender = _direction(delay_ms=4.0, bw_mbps=400.0, loss_pct=50.0)
    draws = iter([(0.1, 0.0), (0.9, 0.0)])  # the first lost, the second kept
    monkeypatch.setattr(d, "_draw", lambda: next(draws))
    for _ in range(2):
        sender.send(bytes(1514))
    d.receive()
    (due, _), = d.queue
    assert d.stats.dropped_loss == 1 and due == 10**12 + 2 * 30_280 + 4_000_000  # after the lost one's 30.28 us


def test_the_wire_counts_each_seconds_bytes_transmission_time_and_longest_wait(monkeypatch) -> None:
    """The 42 kB query of the test above at 400 Mbit/s: let through at once, its last frame waited for the 27
    before it (817.56 us); paced, none waited. At K 4 the rate is a quarter: four times the transmission, the same
    wait in virtual time."""
    step = iter([0] * 28 + [30_280 * i for i in range(28)] + [0] * 28)
    now = [10**12]
    monkeypatch.setattr("testbed.wire.wallclock", types.SimpleNamespace(
        time_ns=lambda: now[0] + next(step), from_system_ns=lambda ns: ns))
    d, sender = _direction(delay_ms=4.0, bw_mbps=400.0)
    for second in (1000, 2000):
        now[0] = second * 10**9
        for _ in range(28):
            sender.send(bytes(1514))
        d.receive()
    assert d.finish().load_per_s == [[1000, 28 * 1514, 28 * 30_280, 817], [2000, 28 * 1514, 28 * 30_280, 0]]
    rx_in, rx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    tx, _tx_out = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.setblocking(False)
    slow = _Direction(WireSpec("l", "a", "b", LinkShape(delay_ms=4.0, bw_mbps=400.0), tdf=4.0), rx, tx, "a->b",
                      np.random.default_rng(0))
    now[0] = 3000 * 10**9
    for _ in range(28):
        rx_in.send(bytes(1514))
    slow.receive()
    assert slow.finish().load_per_s == [[3000, 28 * 1514, 28 * 121_120, 817]]


def test_a_backlog_is_counted_in_the_seconds_the_link_sends_it(monkeypatch) -> None:
    """Three 1 MB frames arriving together at 8 Mbit/s take the link 1 s each: they fill the second they arrived in
    and the two after it (one each), the second waiting 1 s and the third 2 s."""
    monkeypatch.setattr("testbed.wire.wallclock", types.SimpleNamespace(time_ns=lambda: 10**12,
                                                                        from_system_ns=lambda ns: ns))
    d, sender = _direction(delay_ms=1.0, bw_mbps=8.0)
    for _ in range(3):
        sender.send(bytes(60_000))  # a socket pair's datagram: 60 kB, 60 ms at 8 Mbit/s
    d.tx_ns_per_byte *= 1_000_000 / 60_000  # as if each were 1 MB: 1 s at 8 Mbit/s
    d.receive()
    assert [row[0] for row in d.finish().load_per_s] == [1000, 1001, 1002]
    assert [row[2] for row in d.stats.load_per_s] == [1_000_000_000] * 3
    assert [row[3] for row in d.stats.load_per_s] == [0, 1_000_000, 2_000_000]
