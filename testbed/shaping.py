"""Link shaping backends: kernel netem (delay, jitter, loss) or the userspace wire; TBF for rate.

`probe_netem` tries a netem qdisc on a veth in a scratch namespace; `choose_backend` turns the
user's `auto|netem|wire` into the backend used (reported by the run); the `*_commands` functions
give the tc command lines for one end of a link (`replace`, so that they re-apply what Open vSwitch
removes when a port joins a bridge), so that a failing one stops the build; `qdisc_problem` checks what
an interface has against what it should have.

Time dilation (factor K, `topologies.timescale`): every command and check here takes the link's nominal shape
(virtual time) and K, and shapes the link K times slower in real time: delay and jitter x K, rate / K, TBF's
queue latency x K (its depth in bytes unchanged), its burst in bytes from the nominal rate (bytes are not time:
the burst of the nominal link, which leaves in 1 ms virtual at the dilated rate).
"""

from __future__ import annotations

import math

from testbed import sh
from testbed.errors import PreflightError
from topologies import LinkShape
from topologies.timescale import dilated_shape

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


def _tbf(ifname: str, shape: LinkShape, mtu: int, tdf: float = 1.0) -> list[str]:
    """Returns the TBF of one end: the dilated rate in bit/s, the burst in bytes from the nominal rate (1 ms
    of it), the queue latency x K."""
    rate_bytes_s = shape.bw_mbps * 1e6 / 8
    # TBF drops a frame larger than its bucket: at least two full frames, whatever the MTU
    burst_bytes = max(int(rate_bytes_s * 0.001), 16 * MTU_FRAME_BYTES, 2 * (mtu + ETH_HEADER_BYTES))
    rate_bit_s = dilated_shape(shape, tdf).bw_mbps * 1e6
    return ["tc", "qdisc", "replace", "dev", ifname, "root", "handle", "1:", "tbf",
            "rate", f"{rate_bit_s:.0f}bit", "burst", str(burst_bytes), "latency", f"{TBF_LATENCY_MS * tdf:g}ms"]


def netem_commands(ifname: str, shape: LinkShape, mtu: int = 1500, tdf: float = 1.0) -> list[list[str]]:
    """Returns tc commands shaping the egress of one end (an interface at `mtu`) with TBF (rate) and netem
    under it, K (`tdf`) times slower than `shape` in real time."""
    real = dilated_shape(shape, tdf)
    netem = ["tc", "qdisc", "replace", "dev", ifname, "parent", "1:1", "handle", "10:", "netem",
             "delay", f"{real.delay_ms:g}ms"]
    if real.delay_dev_ms > 0:
        netem += [f"{real.delay_dev_ms:g}ms", "distribution", "normal"]
    if real.loss_pct > 0:
        netem += ["loss", f"{real.loss_pct:g}%"]
    return [_tbf(ifname, shape, mtu, tdf), netem]


def rate_commands(ifname: str, shape: LinkShape, mtu: int = 1500, tdf: float = 1.0) -> list[list[str]]:
    """Returns tc commands for the rate alone (the wire adds delay, jitter and loss)."""
    return [_tbf(ifname, shape, mtu, tdf)]


def commands(ifname: str, shape: LinkShape, backend: str, mtu: int, tdf: float = 1.0) -> list[list[str]]:
    """Returns the tc commands shaping one end of a link with a backend ('netem': TBF and netem; 'wire': TBF,
    the wire process adding delay, jitter and loss), K (`tdf`) times slower than `shape` in real time."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown shaping backend {backend!r}")
    return (netem_commands if backend == "netem" else rate_commands)(ifname, shape, mtu, tdf)


RATE_TOLERANCE = 0.005
"""Relative difference allowed between a TBF's rate as the kernel reports it and the link's (tc rounds)."""


def qdisc_problem(qdiscs: list[dict], shape: LinkShape, backend: str, tdf: float = 1.0) -> str | None:
    """Returns what is wrong with one interface's qdiscs (`tc -j qdisc show dev X`), or None when they shape
    it as planned: a root TBF at the link's rate, and with netem a netem child with its delay, jitter, loss;
    under time dilation K (`tdf`) the planned shape is the dilated one (figures in real time)."""
    shape = dilated_shape(shape, tdf)
    root = next((q for q in qdiscs if q.get("root")), None)
    if root is None or root.get("kind") != "tbf":
        kind = root.get("kind") if root else "none"
        return f"root qdisc is {kind}, expected tbf at {shape.bw_mbps:g} Mbit/s"
    rate_mbps = float(root.get("options", {}).get("rate", 0)) * 8 / 1e6
    if not math.isclose(rate_mbps, shape.bw_mbps, rel_tol=RATE_TOLERANCE):
        return f"tbf rate {rate_mbps:g} Mbit/s, expected {shape.bw_mbps:g}"
    netem = [q for q in qdiscs if q.get("kind") == "netem"]
    if backend == "wire":
        return "a netem qdisc on a wire-shaped link (the wire adds the delay)" if netem else None
    if not netem:
        return f"no netem qdisc under the tbf (expected delay {shape.delay_ms:g} ms)"
    opts = netem[0].get("options", {})
    delay = opts.get("delay", {})  # iproute2 prints seconds in JSON, fractions for percentages
    got = (1000 * float(delay.get("delay", 0)), 1000 * float(delay.get("jitter", 0)),
           100 * float(opts.get("loss-random", {}).get("loss", 0)))
    want = (shape.delay_ms, shape.delay_dev_ms, shape.loss_pct)
    if not all(math.isclose(g, w, rel_tol=0.01, abs_tol=0.002) for g, w in zip(got, want, strict=True)):
        return (f"netem delay {got[0]:g} ms, jitter {got[1]:g} ms, loss {got[2]:g}%; expected "
                f"{want[0]:g} ms, {want[1]:g} ms, {want[2]:g}%")
    return None


def scratch_name(run_id: str) -> str:
    """Returns the scratch namespace of a run's netem probe (named like the run's, so checks see it)."""
    return f"tb{run_id}-netem-probe"
