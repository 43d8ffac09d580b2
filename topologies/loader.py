"""Strict loader: a topology YAML file becomes a frozen `Topology`, or one error naming file, key and value.

The file's schema is `TopologyFile` (pydantic, published as docs/schemas/topology.schema.json): it refuses
unknown keys and values without the unit the key names. The loader then refuses what a schema cannot say
(dangling link ends, radio access away from antennas, unreachable sites, cycles that make the path
between two sites ambiguous) and derives the shortest paths (topologies/routes.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field, WithJsonSchema

from topologies.model import (
    Compute,
    Deployment,
    Layer,
    Link,
    LinkShape,
    Site,
    Topology,
)
from topologies.routes import Routes
from topologies.strict import (
    Name,
    NonNegative,
    Percent,
    StrictModel,
    WholeNumber,
    at_key,
    derived,
    load_yaml,
    validate,
    whole_number,
)

TOPOLOGY_DIR = Path(__file__).resolve().parent
SCHEMA_FILE = "topology.schema.json"
"""Its JSON Schema, under docs/schemas/."""
# Default relative costs per layer: edge compute is scarcer and dearer than the cloud's.
_LAYER_COST = {"antenna": (3.0, 30.0), "co": (2.0, 20.0), "dc": (1.3, 13.0), "cloud": (1.0, 10.0)}


class TopologyError(ValueError):
    """A topology file is malformed; the message names the file, the key and the value at fault."""


def _nonzero_rate(bw_mbps: float) -> float:
    if bw_mbps == 0:
        raise ValueError("Mbit/s would disconnect the link; remove the link instead")
    return bw_mbps


Bandwidth = Annotated[NonNegative, AfterValidator(_nonzero_rate), WithJsonSchema({"type": "number", "exclusiveMinimum": 0})]


_SHAPE_DEFAULTS = {f.name: f.default for f in dataclasses.fields(LinkShape)}
"""LinkShape's defaults: the schema takes them from the record, so they are written once."""


class ShapeEntry(StrictModel):
    """A link's or a radio access's shape: one-way figures, the same in each direction."""

    delay_ms: NonNegative = Field(description="one-way delay in milliseconds")
    delay_dev_ms: NonNegative = Field(_SHAPE_DEFAULTS["delay_dev_ms"],
                                      description="standard deviation of the one-way delay (ms)")
    bw_mbps: Bandwidth = Field(_SHAPE_DEFAULTS["bw_mbps"], description="rate in Mbit/s (kernel TBF)")
    loss_pct: Percent = Field(_SHAPE_DEFAULTS["loss_pct"],
                              description="probability in percent that a packet is lost, per direction")

    def record(self) -> LinkShape:
        return LinkShape(**self.model_dump(include=set(_SHAPE_DEFAULTS)))


class ComputeEntry(StrictModel):
    """Compute a site offers to inference workers, and what it costs."""

    cpu_cores: NonNegative = Field(description="CPU cores")
    gpus: WholeNumber = Field(0, description="GPUs")
    memory_gib: NonNegative = Field(0.0, description="memory in GiB")
    core_cost: NonNegative = derived("relative cost of one core for one hour "
                                     "(default by layer: antenna 3, co 2, dc 1.3, cloud 1)")
    gpu_cost: NonNegative = derived("relative cost of one GPU for one hour "
                                    "(default by layer: antenna 30, co 20, dc 13, cloud 10)")


class SiteEntry(StrictModel):
    """A node of the ISP hierarchy."""

    name: Name
    layer: Layer = Field(description="antenna, co (central office), dc (operator data centre) or cloud")
    compute: ComputeEntry | None = Field(None, description="compute for inference workers (none: no cluster)")
    radio: ShapeEntry = derived("the 5G access of the antenna's streams (antenna sites only, and required there)")


class LinkEntry(ShapeEntry):
    """A bidirectional link between two sites of the file."""

    a: str = Field(description="one end: a site name")
    b: str = Field(description="the other end: a site name")


class DeploymentEntry(StrictModel):
    """Replicas of one model variant (see the profile file) on one cluster site."""

    site: str = Field(description="a site with compute")
    variant: str = Field(description="a variant of the profile file, `{model}-{device}-b{batch}`")
    replicas: whole_number(1) = Field(1, description="replicas of the variant")  # type: ignore[valid-type]


class TopologyFile(StrictModel):
    """A topology file: sites of an ISP hierarchy, the links between them, optionally the deployments."""

    name: Name
    description: str = ""
    sites: list[SiteEntry] = Field(min_length=1)
    links: list[LinkEntry]
    deployments: list[DeploymentEntry] | None = Field(
        None, description="variants placed per cluster (left out: computed by greedy packing)")


def resolve_topology_path(name_or_path: str | Path) -> Path:
    """Returns the file for a topology name (`full-edge`) or path (`topologies/full-edge.yaml`)."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    candidate = TOPOLOGY_DIR / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    known = ", ".join(sorted(f.stem for f in TOPOLOGY_DIR.glob("*.yaml")))
    raise TopologyError(f"unknown topology {name_or_path!r}: not a file, and not one of: {known}")


def _fail(source: str | Path, where: str, message: str) -> TopologyError:
    return TopologyError(at_key(source, where, message))


def _site(entry: SiteEntry, where: str, path: Path) -> Site:
    compute = None
    if entry.compute is not None:
        c = entry.compute
        core_cost, gpu_cost = _LAYER_COST[entry.layer]
        compute = Compute(cpu_cores=c.cpu_cores, gpus=int(c.gpus), memory_gib=c.memory_gib,
                          core_cost=core_cost if c.core_cost is None else c.core_cost,
                          gpu_cost=gpu_cost if c.gpu_cost is None else c.gpu_cost)
    if entry.layer == "antenna" and entry.radio is None:
        raise _fail(path, where, f"antenna {entry.name!r} needs a 'radio' mapping (the 5G access of its streams)")
    if entry.layer != "antenna" and entry.radio is not None:
        raise _fail(path, f"{where}.radio", f"only antenna sites have a radio; {entry.name!r} is a "
                                            f"{entry.layer!r} site")
    radio = entry.radio.record() if entry.radio is not None else None
    return Site(name=entry.name, layer=entry.layer, compute=compute, radio=radio)


def _link(entry: LinkEntry, where: str, sites: dict[str, Site], path: Path) -> Link:
    for end in ("a", "b"):
        if getattr(entry, end) not in sites:
            raise _fail(path, f"{where}.{end}", f"{getattr(entry, end)!r} is not a site of this file "
                                                "(dangling link end)")
    if entry.a == entry.b:
        raise _fail(path, where, f"link joins {entry.a!r} to itself")
    return Link(a=entry.a, b=entry.b, shape=entry.record())


def _deployment(entry: DeploymentEntry, where: str, sites: dict[str, Site], path: Path) -> Deployment:
    site = sites.get(entry.site)
    if site is None:
        raise _fail(path, f"{where}.site", f"{entry.site!r} is not a site of this file")
    if site.compute is None:
        raise _fail(path, f"{where}.site", f"{entry.site!r} has no compute to deploy on")
    return Deployment(site=entry.site, variant=entry.variant, replicas=int(entry.replicas))


def shortest_paths(source: str | Path, names: list[str], links: tuple[Link, ...]) -> Routes:
    """Returns the shortest paths by delay between the sites (topologies.routes); an unreachable site or two
    shortest paths of equal delay raise TopologyError."""
    return Routes(str(source), names, links, TopologyError)


def load_topology(name_or_path: str | Path) -> Topology:
    """Returns the topology in a file (or named `topologies/<name>.yaml`); raises TopologyError."""
    path = resolve_topology_path(name_or_path)
    doc: TopologyFile = validate(TopologyFile, load_yaml(path, TopologyError), path, TopologyError)
    sites: dict[str, Site] = {}
    for i, entry in enumerate(doc.sites):
        if entry.name in sites:
            raise _fail(path, f"sites[{i}].name", f"{entry.name!r} is defined twice")
        sites[entry.name] = _site(entry, f"sites[{i}]", path)
    if not any(s.is_antenna for s in sites.values()):
        raise _fail(path, "sites", "no antenna site: streams need at least one antenna")
    if not any(s.is_cluster for s in sites.values()):
        raise _fail(path, "sites", "no site has compute: inference needs at least one cluster")
    links = tuple(_link(entry, f"links[{i}]", sites, path) for i, entry in enumerate(doc.links))
    joined: set[frozenset[str]] = set()
    for i, lk in enumerate(links):
        pair = frozenset((lk.a, lk.b))
        if pair in joined:
            raise _fail(path, f"links[{i}]", f"a second link joins {sorted(pair)}")
        joined.add(pair)
    deployments = None if doc.deployments is None else tuple(
        _deployment(entry, f"deployments[{i}]", sites, path) for i, entry in enumerate(doc.deployments))
    return Topology(
        name=doc.name,
        source=str(path),
        description=doc.description,
        sites=tuple(sites.values()),
        links=links,
        deployments=deployments,
        routes=shortest_paths(path, list(sites), links),
    )
