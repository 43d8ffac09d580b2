"""Time dilation's arithmetic: one affine map between real time and the run's virtual time, the link shape
it implies (Gupta et al., NSDI 2006), and the factor as commands take it (`--tdf K|auto`, the ladder `auto`
climbs). Reads no clock: callers pass the real times they read.

Virtual time runs `factor` (K) times slower than real time, anchored at `anchor_s` (epoch seconds, fixed before
any process of a run starts): `virtual = anchor + (real - anchor) / K`. Every process of a run gets K and the
anchor, so their virtual timestamps agree without a handshake. With K = 1 the map is the identity.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace

from topologies.model import LinkShape


@dataclass(frozen=True)
class TimeScale:
    """The map between real and virtual time of one run."""

    factor: float = 1.0
    """K: real seconds per virtual second (>= 1 slows the run down)."""
    anchor_s: float = 0.0
    """Epoch seconds at which real and virtual time coincide."""

    def __post_init__(self) -> None:
        if not self.factor > 0:
            raise ValueError(f"time dilation factor must be > 0, got {self.factor}")

    @property
    def dilated(self) -> bool:
        return self.factor != 1.0

    def virtual_s(self, real_s: float) -> float:
        """Returns the virtual epoch seconds of a real epoch time."""
        return self.anchor_s + (real_s - self.anchor_s) / self.factor

    def real_s(self, virtual_s: float) -> float:
        """Returns the real epoch seconds of a virtual epoch time."""
        return self.anchor_s + (virtual_s - self.anchor_s) * self.factor

    def real_duration(self, virtual_duration: float) -> float:
        """Returns how long a virtual span lasts in real time (any unit)."""
        return virtual_duration * self.factor

    def virtual_duration(self, real_duration: float) -> float:
        """Returns the virtual length of a real span (any unit)."""
        return real_duration / self.factor


def dilated_shape(shape: LinkShape, factor: float) -> LinkShape:
    """Returns the shape to emulate in real time for `shape` in virtual time: delays and their deviation x K,
    bandwidth / K, loss unchanged (a share, not a time)."""
    if factor == 1.0:
        return shape
    return replace(
        shape,
        delay_ms=shape.delay_ms * factor,
        delay_dev_ms=shape.delay_dev_ms * factor,
        bw_mbps=shape.bw_mbps / factor,
    )


TDF_LADDER = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 12.0, 16.0, 20.0, 25.0, 32.0, 40.0, 50.0, 64.0)
"""The factors `--tdf auto` tries, one step at a time (live/autotdf.py for a run, `net --check`'s links)."""


def ladder_up(k: float) -> float:
    """Returns the smallest ladder step at or above k (the top step if k is above them all)."""
    return next((x for x in TDF_LADDER if x >= k - 1e-9), TDF_LADDER[-1])


def parse_tdf(text: str) -> float:
    """Returns a time dilation factor given as text (--tdf of a worker and of a live run): a number >= 1."""
    try:
        k = float(text)
    except ValueError:
        k = float("nan")
    if not 1.0 <= k < float("inf"):
        raise argparse.ArgumentTypeError(f"--tdf {text!r}: expected a number >= 1 (real seconds per virtual second)")
    return k


def parse_tdf_or_auto(text: str) -> float | None:
    """Returns --tdf of a command that can choose K itself (`run`, `compare`, `net --check`, bench_live): None for
    `auto`, else the number (`parse_tdf`)."""
    return None if text.strip() == "auto" else parse_tdf(text)
