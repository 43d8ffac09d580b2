"""Frozen dataclasses describing an ISP topology: sites, links, radio access, compute, deployments.

Nothing here mutates; paths between sites are derived once, at load time, by the loader.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    from topologies.routes import Routes

Layer = Literal["antenna", "co", "dc", "cloud"]
"""A layer of the ISP hierarchy: antenna, central office, operator data centre, remote cloud."""
LAYERS: tuple[str, ...] = get_args(Layer)
"""Layers of the ISP hierarchy, from the access towards the remote cloud."""


@dataclass(frozen=True)
class Compute:
    """Compute a site offers to inference workers, and what it costs."""

    cpu_cores: float
    gpus: int = 0
    memory_gib: float = 0.0
    core_cost: float = 1.0
    """Relative cost of one CPU core for one hour (edge sites cost more than the cloud)."""
    gpu_cost: float = 10.0
    """Relative cost of one GPU for one hour."""


@dataclass(frozen=True)
class LinkShape:
    """How a link is shaped, the same figures in each direction (one-way): the one record of a shape, carried
    by topology links, antennas' radio access, the network plan and the userspace wire."""

    delay_ms: float
    delay_dev_ms: float = 0.0
    """Standard deviation of the one-way delay (normal jitter)."""
    bw_mbps: float = 1000.0
    loss_pct: float = 0.0


@dataclass(frozen=True)
class Site:
    """A node of the hierarchy; antennas host a scheduler and the stream sources behind their radio."""

    name: str
    layer: str
    compute: Compute | None = None
    radio: LinkShape | None = None
    """The radio access of an antenna site (None elsewhere)."""

    @property
    def is_antenna(self) -> bool:
        return self.layer == "antenna"

    @property
    def is_cluster(self) -> bool:
        return self.compute is not None


@dataclass(frozen=True)
class Link:
    """A bidirectional link between two sites and its shape (per direction, one-way)."""

    a: str
    b: str
    shape: LinkShape

    def other(self, site: str) -> str:
        return self.b if site == self.a else self.a

    # A link's figures are its shape's (read by path metrics and the system model).
    @property
    def delay_ms(self) -> float:
        return self.shape.delay_ms

    @property
    def delay_dev_ms(self) -> float:
        return self.shape.delay_dev_ms

    @property
    def bw_mbps(self) -> float:
        return self.shape.bw_mbps

    @property
    def loss_pct(self) -> float:
        return self.shape.loss_pct


@dataclass(frozen=True)
class Deployment:
    """Replicas of one model variant (see scheduler.profiles) placed on one cluster site."""

    site: str
    variant: str
    replicas: int = 1


@dataclass(frozen=True)
class PathMetrics:
    """One-way figures of the path between two sites, derived from its links."""

    links: tuple[Link, ...]
    delay_ms: float
    """d_ns: sum of the links' one-way delays."""
    delay_dev_ms: float
    """sigma_ns: standard deviation of the one-way delay (links' jitter taken as independent)."""
    bottleneck_mbps: float
    """Smallest bandwidth on the path (infinite for an empty path)."""
    loss_pct: float
    """Probability in percent that a packet is lost on at least one link."""

    @staticmethod
    def of(links: tuple[Link, ...]) -> PathMetrics:
        survive = 1.0
        for link in links:
            survive *= 1.0 - link.loss_pct / 100.0
        return PathMetrics(
            links=links,
            delay_ms=sum(link.delay_ms for link in links),
            delay_dev_ms=math.sqrt(sum(link.delay_dev_ms**2 for link in links)),
            bottleneck_mbps=min((link.bw_mbps for link in links), default=math.inf),
            loss_pct=(1.0 - survive) * 100.0,
        )


@dataclass(frozen=True)
class Topology:
    """A loaded topology file. `routes` gives the unique shortest path between any two sites."""

    name: str
    source: str
    """The file it was loaded from."""
    description: str
    sites: tuple[Site, ...]
    links: tuple[Link, ...]
    deployments: tuple[Deployment, ...] | None
    """Variants placed per cluster as written in the file; None means: computed by greedy packing."""
    routes: Routes = field(repr=False, compare=False, hash=False)

    @cached_property
    def antennas(self) -> tuple[Site, ...]:
        return tuple(s for s in self.sites if s.is_antenna)

    @cached_property
    def clusters(self) -> tuple[Site, ...]:
        return tuple(s for s in self.sites if s.is_cluster)

    @cached_property
    def _by_name(self) -> dict[str, Site]:
        return {s.name: s for s in self.sites}

    def site(self, name: str) -> Site:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"{self.source}: no site named {name!r}") from None

    def path(self, a: str, b: str) -> PathMetrics:
        """Returns the one-way metrics of the path from site a to site b (an empty path if a == b)."""
        return self.routes.path(a, b)
