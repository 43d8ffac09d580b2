"""The send buffer of ovs-vswitchd's userspace datapath, widened for a live run and put back after it.

With the userspace datapath (no OVS kernel module here), ovs-vswitchd sends every frame, whatever its port, through
one AF_PACKET socket it opens at its first send and keeps for its life (OVS 3.1 lib/netdev-linux.c
`af_packet_sock`: non-blocking, at the host's net.core.wmem_default, 208 KiB on Debian and Ubuntu). A frame sent
to a veth stays charged to that socket until the receiving namespace's stack takes it, and while the emulation's
core is busy the socket fills: the send fails with EAGAIN and the frame is dropped (its log:
"error sending Ethernet packet on ...: Resource temporarily unavailable", thousands in 40 s of the demonstration
at K 4; a lost segment costs TCP a retransmission timeout of 200 virtual ms or more). The run takes a copy of
that socket's descriptor (pidfd_getfd, Linux 5.6; root) and gives it SEND_BUFFER_BYTES, recorded first as a
`sockbuf` entry (testbed/record.py) so that teardown and `clean` put the old size back while the daemon lives.

The packet socket it reads each port through has the same default receive buffer, about 13 jumbo frames, and
overflows too: `bench_live.py --tdf 20 --rates 100` on full-edge lost 253 frames there in one run, and in another
(sampled every second with `ss -0 -m`) lost them on the dc-cloud links' four ports only, steadily through the
traffic; frames were lost there too while the links were probed before the traffic. The run's own ports get
RECEIVE_BUFFER_BYTES each as soon as the network is up, before the probes; those sockets close with the ports,
so nothing is recorded for them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
from pathlib import Path

import psutil

from testbed.portcounters import ovs_port_sockets
from testbed.record import Created, CreationRecord, process_start_ticks

SEND_BUFFER_BYTES = 4 << 20
"""What the send socket gets for the run (the kernel doubles it for its bookkeeping): hundreds of 9000-byte
frames in flight instead of about a dozen."""
RECEIVE_BUFFER_BYTES = 2 << 20
"""What each of the run's switch ports' receive sockets gets (the kernel doubles it): hundreds of jumbo frames."""
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33
_SYS_PIDFD_GETFD = 438  # the same number on every architecture


def send_sockets(pid: int) -> list[int]:
    """Returns the descriptors of a process's packet sockets bound to no interface (ovs-vswitchd's send socket)."""
    unbound = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/packet").read_text().splitlines()[1:]:
            f = line.split()
            if len(f) >= 9 and f[4] == "0":  # Iface 0: not bound
                unbound.add(f[8])
    fds = []
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:[") and link[8:-1] in unbound:
                    fds.append(int(fd))
    return sorted(fds)


@contextlib.contextmanager
def _borrowed(pid: int, fd: int):  # noqa: ANN202 (a socket.socket)
    """A socket object on a copy of another process's descriptor (the same socket, not a new one)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        mine = libc.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0)
        if mine < 0:
            raise OSError(ctypes.get_errno(), f"pidfd_getfd of fd {fd} of pid {pid}: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(pidfd)
    try:
        sock = socket.socket(fileno=mine)
    except OSError:
        os.close(mine)
        raise
    try:
        yield sock
    finally:
        sock.close()  # our copy only


def send_buffer(pid: int, fd: int) -> int:
    """Returns the send buffer (bytes, as the kernel accounts it) of another process's socket."""
    with _borrowed(pid, fd) as sock:
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)


def set_send_buffer(pid: int, fd: int, accounted_bytes: int) -> None:
    """Gives another process's socket a send buffer of `accounted_bytes` as the kernel accounts it (what
    `send_buffer` reads back: SO_SNDBUFFORCE takes half of it)."""
    with _borrowed(pid, fd) as sock:
        sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, max(1, accounted_bytes // 2))


def widen_send_buffer(record: CreationRecord, pid: int, name: str = "ovs-vswitchd") -> str | None:
    """Gives the daemon's send sockets SEND_BUFFER_BYTES for the run, each recorded first; returns why it could not
    (the run goes on without: a kernel without pidfd_getfd, no send socket yet), else None."""
    fds = send_sockets(pid)
    if not fds:
        return f"{name} (pid {pid}) has no send socket yet"
    try:
        for fd in fds:
            saved, target = send_buffer(pid, fd), 2 * SEND_BUFFER_BYTES
            if saved < target:
                if (ticks := process_start_ticks(pid)) is None:
                    return f"{name} (pid {pid}) is gone"
                record.add(Created("sockbuf", name, pid=pid, start_ticks=ticks, values=f"{fd} {saved} {target}"))
                set_send_buffer(pid, fd, target)
    except OSError as exc:
        return f"{name}'s send buffer not widened: {exc}"
    return None


def widen_port_buffers(ports: set[str]) -> list[str]:
    """Gives the receive socket of each of these switch ports RECEIVE_BUFFER_BYTES; returns what could not be."""
    sockets = ovs_port_sockets(ports)
    if sockets is None:
        return ["the switch ports' receive sockets could not be listed (ss); frames they cannot hold are lost"]
    failed = {p: "no ovs-vswitchd socket found" for p in ports - {s.ifname for s in sockets}}
    for s in sockets:
        try:
            with _borrowed(s.pid, s.fd) as sock:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER_BYTES)
        except OSError as exc:  # the port gone meanwhile, a kernel without pidfd_getfd
            failed[s.ifname] = str(exc)
    if not failed:
        return []
    first = sorted(failed)[0]
    return [f"the receive buffers of {len(failed)} of {len(ports)} switch ports not widened ({first}: "
            f"{failed[first]}); frames they cannot hold are lost"]


def widen_ovs_buffers(record: CreationRecord, ports: set[str]) -> list[str]:
    """Widens the send buffer of this machine's ovs-vswitchd (`widen_send_buffer`) and the receive buffers of the
    run's switch ports (`widen_port_buffers`); returns what could not be."""
    pids = [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "ovs-vswitchd"]
    return [f"{problem}; frames it cannot send while the core is busy are lost"
            for pid in pids if (problem := widen_send_buffer(record, pid))] + widen_port_buffers(ports)
