"""Topology files (YAML) and their strict loader: sites, links, compute, radio access and deployments; and
the strict-format base (`topologies.strict`) every file format of the project derives from.

A topology is a pure description (frozen dataclasses); the simulator and the testbed realise it.
"""

from topologies.loader import TopologyError, load_topology, resolve_topology_path
from topologies.model import Compute, Deployment, Link, LinkShape, PathMetrics, Site, Topology

__all__ = [
    "Compute",
    "Deployment",
    "Link",
    "LinkShape",
    "PathMetrics",
    "Site",
    "Topology",
    "TopologyError",
    "load_topology",
    "resolve_topology_path",
]
