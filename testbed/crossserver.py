"""The arithmetic of a link between two servers, carried as a VXLAN tunnel over their underlay: its VNI, the
exact `ip link add ... type vxlan` lines on each side, the largest emulated MTU the underlay carries, and the
delay left to the wire once the underlay's own one-way delay is taken off. Pure functions; refusals raise
PreflightError with one line naming the link and both servers.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from testbed.errors import PreflightError

VXLAN_PORT = 4789
"""IANA's VXLAN port; two runs on one server differ by VNI, never by port."""
VNI_COUNT = (1 << 24) - 1
"""VNIs 1 .. 2^24 - 1 (0 is left unused)."""
OVERHEAD_IPV4_BYTES = 50
"""Inner Ethernet 14 + VXLAN 8 + UDP 8 + IPv4 20."""
OVERHEAD_IPV6_BYTES = 70
"""Inner Ethernet 14 + VXLAN 8 + UDP 8 + IPv6 40."""


def vni(run_id: str, link_index: int) -> int:
    """Returns the VNI of a run's `link_index`-th crossing link: the run's 24-bit base (from a hash of the run id)
    plus the index, wrapped into 1 .. 2^24-1, so a run's links never share one and two runs rarely do."""
    if link_index < 0 or link_index >= VNI_COUNT:
        raise ValueError(f"link index {link_index} outside 0..{VNI_COUNT - 1}")
    base = int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:3], "big")
    return 1 + (base + link_index) % VNI_COUNT


def device_name(vni_id: int) -> str:
    """Returns the name of the VXLAN device of a VNI (at most 10 characters: under Linux's 15)."""
    return f"vx{vni_id}"


def overhead_bytes(underlay_addr: str) -> int:
    """Returns what VXLAN adds to an emulated frame over an underlay of this address family."""
    return OVERHEAD_IPV6_BYTES if ipaddress.ip_address(underlay_addr).version == 6 else OVERHEAD_IPV4_BYTES


def max_emulated_mtu(underlay_mtu: int, underlay_addr: str) -> int:
    """Returns the largest MTU an emulated interface may have for its frames to cross this underlay unfragmented
    (the MTU Linux gives a VXLAN device on it): 1500 -> 1450, 9000 -> 8950 over IPv4; 1500 -> 1430 over IPv6."""
    return underlay_mtu - overhead_bytes(underlay_addr)


@dataclass(frozen=True)
class CrossLink:
    """A link of the topology whose two ends are on different servers."""

    name: str
    index: int
    """Its position among the run's crossing links (makes the VNI)."""
    server_a: str
    server_b: str
    addr_a: str
    """Server a's underlay address."""
    addr_b: str
    dev_a: str
    """Server a's underlay device (the one holding addr_a)."""
    dev_b: str


def vxlan_add_lines(link: CrossLink, run_id: str) -> dict[str, str]:
    """Returns {server: the `ip` batch line creating its end of the link's tunnel}, each side naming the other as
    remote; both ends have the same VNI and device name."""
    if link.server_a == link.server_b:
        raise ValueError(f"link {link.name}: both ends on server {link.server_a}, no tunnel needed")
    if ipaddress.ip_address(link.addr_a).version != ipaddress.ip_address(link.addr_b).version:
        raise PreflightError(f"link {link.name}: servers {link.server_a} ({link.addr_a}) and {link.server_b} "
                             f"({link.addr_b}) have underlay addresses of different IP versions")
    n = vni(run_id, link.index)
    dev = device_name(n)

    def line(local: str, remote: str, underlay_dev: str) -> str:
        return (f"link add {dev} type vxlan id {n} local {local} remote {remote} dstport {VXLAN_PORT} "
                f"dev {underlay_dev}")

    return {link.server_a: line(link.addr_a, link.addr_b, link.dev_a),
            link.server_b: line(link.addr_b, link.addr_a, link.dev_b)}


def check_mtu(link: CrossLink, mtu: int, underlay_mtu_a: int, underlay_mtu_b: int) -> None:
    """Raises PreflightError if the run's emulated MTU does not fit through the link's underlay."""
    underlay = min(underlay_mtu_a, underlay_mtu_b)
    fits = max_emulated_mtu(underlay, link.addr_a)
    if mtu > fits:
        need = mtu + overhead_bytes(link.addr_a)
        raise PreflightError(f"link {link.name} crosses servers {link.server_a} and {link.server_b} over an "
                             f"underlay of MTU {underlay}: --mtu {mtu} needs an underlay of {need}; use --mtu "
                             f"{fits} or raise the underlay MTU")


def wire_delay_ms(link: CrossLink, delay_ms: float, underlay_one_way_ms: float) -> float:
    """Returns the delay the wire adds so that the link's one-way delay is `delay_ms` with the underlay's share
    in it; raises PreflightError if the underlay alone is slower than the link should be."""
    if underlay_one_way_ms > delay_ms:
        raise PreflightError(f"link {link.name} ({delay_ms:g} ms) is shorter than the underlay between servers "
                             f"{link.server_a} and {link.server_b} ({underlay_one_way_ms:.3f} ms one way, RTT/2); "
                             "place both ends on one server or lengthen the link")
    return delay_ms - underlay_one_way_ms
