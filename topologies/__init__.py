"""Topology files (YAML) and their strict loader: sites, links, compute, schedulers and deployments.

A topology is a pure description (frozen dataclasses); the simulator and the testbed realise it.
"""

from topologies.loader import TopologyError, load_topology, resolve_topology_path
from topologies.model import Compute, Deployment, Link, PathMetrics, Radio, Site, Topology

__all__ = [
    "Compute",
    "Deployment",
    "Link",
    "PathMetrics",
    "Radio",
    "Site",
    "Topology",
    "TopologyError",
    "load_topology",
    "resolve_topology_path",
]
