"""Packet capture on the emulated network: one tcpdump per chosen host interface, a pcap in the run dir.

Each tcpdump runs inside its host's namespace (started through `Host.popen`, so teardown stops it if
the run dies) and writes packet by packet (-U), so the file is readable by `tcpdump -r` at any time.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from testbed.plan import HOST_IFNAME, HostPlan

if TYPE_CHECKING:
    from testbed.network import EmulatedNetwork, Host

DEFAULT_SNAPLEN = 200
"""Bytes kept per packet: Ethernet, IP and TCP headers and the HTTP request line, not the JPEG."""

CAPTURE_BUFFER_KIB = 32768
"""Kernel capture buffer: room for bursts while tcpdump waits for a CPU (drops are in its log)."""


@dataclass
class Capture:
    """A running tcpdump and the pcap it writes."""

    host: str
    path: Path
    proc: subprocess.Popen

    def stop(self, timeout_s: float = 5.0) -> int:
        """Stops tcpdump (SIGTERM flushes the file) and returns its exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout_s)


def default_hosts(hosts: Sequence[HostPlan]) -> list[str]:
    """Returns the hosts captured by default: the antennas' sources (their uplink) and every worker host."""
    return [h.name for h in hosts if h.role in ("sources", "worker")]


def choose_hosts(hosts: Sequence[HostPlan], spec: str) -> list[str]:
    """Returns the hosts a --pcap value selects: 'default', 'all', 'none' or a comma list of host names."""
    spec = spec.strip()
    if spec == "default":
        return default_hosts(hosts)
    if spec == "none":
        return []
    names = [h.name for h in hosts]
    if spec == "all":
        return names
    chosen = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [c for c in chosen if c not in names]
    if unknown:
        raise ValueError(
            f"--pcap: unknown host {unknown[0]!r}; hosts: {', '.join(names)} (or default, all, none)"
        )
    return chosen


def start_captures(
    net: EmulatedNetwork, hosts: Sequence[str], out_dir: Path, snaplen: int = DEFAULT_SNAPLEN
) -> list[Capture]:
    """Starts tcpdump on each host's interface; returns once every capture is listening."""
    out_dir.mkdir(parents=True, exist_ok=True)
    caps: list[Capture] = []
    for name in hosts:
        host: Host = net.host(name)
        path = out_dir / f"{name}.pcap"
        log = (out_dir / f"{name}.tcpdump.log").open("w")
        proc = host.popen(
            [
                "tcpdump",
                "-i",
                HOST_IFNAME,
                "-n",
                "-U",
                "-Z",
                "root",
                "-B",
                str(CAPTURE_BUFFER_KIB),
                "-s",
                str(snaplen),
                "-w",
                str(path),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        caps.append(Capture(name, path, proc))
    deadline = time.monotonic() + 10.0
    for cap in caps:  # tcpdump says "listening on ..." once its socket is open
        log_path = out_dir / f"{cap.host}.tcpdump.log"
        while "listening on" not in log_path.read_text(errors="replace"):
            if cap.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"tcpdump on {cap.host} did not start: {log_path.read_text(errors='replace')}"
                )
            time.sleep(0.05)
    return caps


def dropped_by_kernel(log_path: Path) -> int | None:
    """Returns the packets tcpdump's log says the kernel dropped (None before tcpdump has exited)."""
    for line in log_path.read_text(errors="replace").splitlines():
        if line.endswith("packets dropped by kernel"):
            return int(line.split()[0])
    return None


def stop_captures(caps: Sequence[Capture]) -> dict[str, int]:
    """Stops every capture; returns {host: exit status}."""
    return {cap.host: cap.stop() for cap in caps}
