"""Link shaping backends: kernel netem (delay, jitter, loss) or the userspace wire; TBF for rate.

`probe_netem` tries a netem qdisc on a veth in a scratch namespace; `choose_backend` turns the
user's `auto|netem|wire` into the backend used (reported by the run); the `*_commands` functions
give the tc command lines for one end of a link, so that a failing one stops the build.
"""

from __future__ import annotations

from testbed import sh
from testbed.errors import PreflightError
from topologies import LinkShape

BACKENDS = ("netem", "wire")
TBF_LATENCY_MS = 50
"""How long a frame may wait in a link's rate queue before TBF drops it (the queue's depth)."""
MTU_FRAME_BYTES = 1514
ETH_HEADER_BYTES = 14


def probe_netem(scratch_netns: str) -> tuple[bool, str]:
    """Returns whether this kernel takes a netem qdisc, and tc's answer; uses (and deletes) a namespace."""
    sh.run(["ip", "netns", "add", scratch_netns])
    try:
        sh.run(["ip", "-n", scratch_netns, "link", "add", "p0", "type", "veth", "peer", "name", "p1"])
        done = sh.run(["ip", "netns", "exec", scratch_netns, "tc", "qdisc", "add", "dev", "p0", "root",
                       "netem", "delay", "1ms"], check=False)
        return done.returncode == 0, (done.stderr or "ok").strip()
    finally:
        sh.run(["ip", "netns", "delete", scratch_netns], check=False)


def choose_backend(requested: str, netem_ok: bool, netem_answer: str) -> str:
    """Returns the backend to use; raises PreflightError when netem is forced but missing."""
    if requested not in ("auto", *BACKENDS):
        raise PreflightError(f"unknown shaping {requested!r}; choose auto, netem or wire")
    if requested == "netem" and not netem_ok:
        raise PreflightError(f"--shaping netem: this kernel has no netem qdisc (tc said: {netem_answer}); "
                             "use --shaping wire (the userspace backend) or auto")
    if requested == "auto":
        return "netem" if netem_ok else "wire"
    return requested


def _tbf(ifname: str, shape: LinkShape, mtu: int) -> list[str]:
    rate_bytes_s = shape.bw_mbps * 1e6 / 8
    # TBF drops a frame larger than its bucket: at least two full frames, whatever the MTU
    burst_bytes = max(int(rate_bytes_s * 0.001), 16 * MTU_FRAME_BYTES, 2 * (mtu + ETH_HEADER_BYTES))
    return ["tc", "qdisc", "add", "dev", ifname, "root", "handle", "1:", "tbf",
            "rate", f"{shape.bw_mbps:g}mbit", "burst", str(burst_bytes), "latency", f"{TBF_LATENCY_MS}ms"]


def netem_commands(ifname: str, shape: LinkShape, mtu: int = 1500) -> list[list[str]]:
    """Returns tc commands shaping the egress of one end (an interface at `mtu`) with TBF (rate) and netem
    under it."""
    netem = ["tc", "qdisc", "add", "dev", ifname, "parent", "1:1", "handle", "10:", "netem",
             "delay", f"{shape.delay_ms:g}ms"]
    if shape.delay_dev_ms > 0:
        netem += [f"{shape.delay_dev_ms:g}ms", "distribution", "normal"]
    if shape.loss_pct > 0:
        netem += ["loss", f"{shape.loss_pct:g}%"]
    return [_tbf(ifname, shape, mtu), netem]


def rate_commands(ifname: str, shape: LinkShape, mtu: int = 1500) -> list[list[str]]:
    """Returns tc commands for the rate alone (the wire adds delay, jitter and loss)."""
    return [_tbf(ifname, shape, mtu)]


def scratch_name(run_id: str) -> str:
    """Returns the scratch namespace of a run's netem probe (named like the run's, so checks see it)."""
    return f"tb{run_id}-netem-probe"
