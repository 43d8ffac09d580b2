"""The network figures of every antenna-to-resource path, as [antenna, resource] arrays of the system model.

A path from an antenna to a resource's cluster is the antenna's link to its gateway (topologies.routes), the
gateway's path through the core and the cluster's link from its own gateway; every figure of it is a sum
over links (delay, variance, log of survival, transmission time per byte). `PathFigures` holds those sums
factorised: per antenna, its hop and gateway; per core site, the sum to every resource. A value is one
addition, so a row costs O(resources) and nothing of size antennas x resources is needed.

`AntennaResourceArray` is one figure seen as an array: `a[i]` (antenna i's row), `a[i, j]` and `a[ants, ress]`
(element-wise, as numpy), `np.asarray(a)`. While antennas x resources stays under `DENSE_LIMIT` it is
materialised once and indexing is numpy's own; above, each access computes what it asks for.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from topologies.model import Link, Topology

FIGURES = ("net_ms", "net_dev_ms", "path_loss", "path_ms_per_byte", "static_ms", "ms_per_byte")
"""The system model's [antenna, resource] arrays, in SystemModel's field names."""
DENSE_LIMIT = 1 << 21
"""Antennas x resources up to which each figure is stored whole (16 MB per figure)."""


def _log_survive(link: Link) -> float:
    return -math.inf if link.loss_pct >= 100.0 else math.log1p(-link.loss_pct / 100.0)


WEIGHTS: dict[str, Callable[[Link], float]] = {
    "ms": lambda lk: lk.delay_ms,
    "var": lambda lk: lk.delay_dev_ms ** 2,
    "log_survive": _log_survive,
    "ms_per_byte": lambda lk: 8.0 / (lk.bw_mbps * 1000.0),
}
"""Per-link quantities whose sums over a path give its figures (jitter as independent: variances add)."""


@dataclass(frozen=True)
class PathFigures:
    """Sums of WEIGHTS over every antenna-to-resource path, factorised through the antennas' gateways."""

    gateway: np.ndarray
    """[antenna]: index of the antenna's gateway among the core sites."""
    antenna_site: np.ndarray
    """[antenna]: the antenna's site id (shared with `resource_site`): the path to its own cluster is empty."""
    resource_site: np.ndarray
    """[resource]: the site id of the resource's cluster."""
    hop: dict[str, np.ndarray]
    """Per weight, [antenna]: the weight of the antenna's link to its gateway (0 at a core site)."""
    to_resource: dict[str, np.ndarray]
    """Per weight, [core site, resource]: the sum from the core site to the resource's cluster."""

    @staticmethod
    def of(topo: Topology, antennas: tuple[str, ...], resource_sites: tuple[str, ...]) -> PathFigures:
        routes = topo.routes
        site_id = {n: i for i, n in enumerate(routes.names)}
        hop, to_resource = {}, {}
        gateway = np.zeros(len(antennas), dtype=np.int64)
        for name, weight in WEIGHTS.items():
            gateway, hop[name] = routes.attachment(antennas, weight)
            res_gateway, res_hop = routes.attachment(resource_sites, weight)
            to_resource[name] = routes.core_sums(weight)[:, res_gateway] + res_hop[None, :]
        return PathFigures(gateway=gateway, antenna_site=np.array([site_id[a] for a in antennas], dtype=np.int64),
                           resource_site=np.array([site_id[s] for s in resource_sites], dtype=np.int64),
                           hop=hop, to_resource=to_resource)

    def sum(self, weight: str, ant: Any, res: Any) -> np.ndarray:
        """Returns the sum of `weight` over the paths [ant, res] (numpy indexing and broadcasting)."""
        value = self.hop[weight][ant] + self.to_resource[weight][self.gateway[ant], res]
        return np.where(self.antenna_site[ant] == self.resource_site[res], 0.0, value)


class AntennaResourceArray:
    """One [antenna, resource] figure of the system model (`name`, one of FIGURES); see the module docstring."""

    def __init__(self, name: str, paths: PathFigures, radio_ms: np.ndarray, radio_bpb: np.ndarray,
                 proc_ms: np.ndarray, input_bpb: np.ndarray) -> None:
        if name not in FIGURES:
            raise ValueError(f"unknown figure {name!r}; one of {', '.join(FIGURES)}")
        self.name, self.paths = name, paths
        self.radio_ms, self.radio_bpb, self.proc_ms, self.input_bpb = radio_ms, radio_bpb, proc_ms, input_bpb
        self.shape = (len(radio_ms), len(proc_ms))
        self.ndim = 2
        self._dense: np.ndarray | None = None
        if self.shape[0] * self.shape[1] <= DENSE_LIMIT:
            self._dense = self._whole()

    def _whole(self) -> np.ndarray:
        return self._values(np.arange(self.shape[0])[:, None], np.arange(self.shape[1])[None, :])

    def _values(self, ant: Any, res: Any) -> np.ndarray:
        p, name = self.paths, self.name
        if name == "net_ms":
            return p.sum("ms", ant, res)
        if name == "net_dev_ms":
            return np.sqrt(p.sum("var", ant, res))
        if name == "path_loss":
            return -np.expm1(p.sum("log_survive", ant, res))
        if name == "path_ms_per_byte":
            return p.sum("ms_per_byte", ant, res)
        if name == "static_ms":
            net, dev = p.sum("ms", ant, res), np.sqrt(p.sum("var", ant, res))
            return 2.0 * (self.radio_ms[ant] + net + 2.0 * dev) + self.proc_ms[res]
        return self.radio_bpb[ant] + p.sum("ms_per_byte", ant, res) + self.input_bpb[res]

    def __getitem__(self, key: Any) -> Any:
        if self._dense is not None:
            return self._dense[key]
        ant, res = key if isinstance(key, tuple) else (key, slice(None))
        if not isinstance(ant, int | np.integer):
            ant = np.arange(self.shape[0])[ant] if isinstance(ant, slice) else np.asarray(ant)
            if isinstance(res, slice):  # rows of several antennas
                ant = ant[:, None]
        if isinstance(res, slice):
            res = np.arange(self.shape[1])[res]
        return self._values(ant, res)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self._dense if self._dense is not None else self._whole()
        return whole if dtype is None else whole.astype(dtype)

    def __len__(self) -> int:
        return self.shape[0]
