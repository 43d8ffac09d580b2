"""The userspace wire's per-frame logic, on socket pairs (no namespaces needed)."""

from __future__ import annotations

import socket
import time
import types

import numpy as np

from testbed.wire import WireSpec, _Direction
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
