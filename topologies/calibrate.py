"""Calibration: a topology whose link figures are replaced by what a testbed run measured on its links.

Reads the run's `link_measurements.json` (written by the network package: one entry per link and
direction, links named `radio-<antenna>` or `<a>-<b>` after the file's link) and averages the two
directions; links the run did not measure keep the file's figures.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from topologies.loader import TopologyError, shortest_paths
from topologies.model import LinkShape, Topology

MEASUREMENTS_FILE = "link_measurements.json"


@dataclasses.dataclass(frozen=True)
class LinkFigures:
    """Measured one-way figures of a link, averaged over its two directions."""

    delay_ms: float
    delay_dev_ms: float
    loss_pct: float

    def applied_to(self, shape: LinkShape) -> LinkShape:
        """Returns the shape with these figures (its rate, which the run does not measure, kept)."""
        return dataclasses.replace(shape, delay_ms=self.delay_ms, delay_dev_ms=self.delay_dev_ms,
                                   loss_pct=self.loss_pct)


def read_link_figures(run_dir: str | Path) -> dict[str, LinkFigures]:
    """Returns the measured figures per link name from a testbed run folder."""
    path = Path(run_dir) / MEASUREMENTS_FILE
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TopologyError(f"{path}: cannot read link measurements: {exc}") from None
    sums: dict[str, list[float]] = {}
    for i, m in enumerate(doc.get("links", [])):
        try:
            acc = sums.setdefault(m["link"], [0.0, 0.0, 0.0, 0.0])
            acc[0] += float(m["median_delay_ms"])
            acc[1] += float(m["measured_dev_ms"])
            acc[2] += float(m["measured_loss_pct"])
            acc[3] += 1
        except (KeyError, TypeError, ValueError):
            raise TopologyError(f"{path}: links[{i}]: not a link measurement") from None
    return {name: LinkFigures(d / n, s / n, loss / n) for name, (d, s, loss, n) in sums.items() if n}


def calibrated_topology(topo: Topology, figures: dict[str, LinkFigures]) -> Topology:
    """Returns the topology with measured delays, deviations and losses on the links that have them."""
    links = []
    for link in topo.links:
        f = figures.get(f"{link.a}-{link.b}")
        links.append(link if f is None else dataclasses.replace(link, shape=f.applied_to(link.shape)))
    sites = []
    for site in topo.sites:
        f = figures.get(f"radio-{site.name}")
        if f is not None and site.radio is not None:
            site = dataclasses.replace(site, radio=f.applied_to(site.radio))
        sites.append(site)
    routes = shortest_paths(topo.source, [s.name for s in sites], tuple(links))
    return dataclasses.replace(topo, sites=tuple(sites), links=tuple(links), routes=routes,
                               description=f"{topo.description} (calibrated: measured link figures)")
