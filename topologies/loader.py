"""Strict loader: a topology YAML file becomes a frozen `Topology`, or one error naming file, key and value.

It refuses unknown keys, values without the unit the key names, dangling link ends, unreachable
sites and cycles that make the path between two sites ambiguous, then derives every site-to-site path.
"""

from __future__ import annotations

import heapq
import math
from pathlib import Path
from typing import Any

import yaml

from topologies.model import LAYERS, Compute, Deployment, Link, PathMetrics, Radio, Site, Topology

TOPOLOGY_DIR = Path(__file__).resolve().parent

_SITE_KEYS = {"name", "layer", "compute", "radio"}
_COMPUTE_KEYS = {"cpu_cores", "gpus", "memory_gib", "core_cost", "gpu_cost"}
_RADIO_KEYS = {"delay_ms", "delay_dev_ms", "bw_mbps", "loss_pct"}
_LINK_KEYS = {"a", "b", "delay_ms", "delay_dev_ms", "bw_mbps", "loss_pct"}
_DEPLOY_KEYS = {"site", "variant", "replicas"}
_TOP_KEYS = {"name", "description", "sites", "links", "deployments"}
# Keys users write from habit (Mininet's TCLink) that lack a unit: say which key is meant.
_UNIT_HINTS = {"delay": "delay_ms", "jitter": "delay_dev_ms", "bw": "bw_mbps", "loss": "loss_pct",
               "bandwidth": "bw_mbps", "cores": "cpu_cores", "memory": "memory_gib"}
# Default relative costs per layer: edge compute is scarcer and dearer than the cloud's.
_LAYER_COST = {"antenna": (3.0, 30.0), "co": (2.0, 20.0), "dc": (1.3, 13.0), "cloud": (1.0, 10.0)}


class TopologyError(ValueError):
    """A topology file is malformed; the message names the file, the key and the value at fault."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys instead of silently keeping the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml_strict(path: Path, error: type[ValueError]) -> Any:
    """Returns the parsed YAML document; duplicate keys and syntax errors raise `error` naming the file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise error(f"{path}: invalid YAML: {exc}") from None


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


class _Reader:
    """Checks one file's values, prefixing every error with the file and the key path."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, message: str) -> TopologyError:
        return TopologyError(f"{self.path}: {where}: {message}")

    def mapping(self, value: Any, where: str, allowed: set[str], required: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping, got {value!r}")
        for key in value:
            if key not in allowed:
                hint = _UNIT_HINTS.get(str(key))
                extra = f" (did you mean {hint!r}? units are part of the key)" if hint in allowed else ""
                raise self.fail(f"{where}.{key}", f"unknown key{extra}; allowed: {', '.join(sorted(allowed))}")
        for key in sorted(required):
            if key not in value:
                raise self.fail(where, f"missing required key {key!r}")
        return value

    def number(self, value: Any, where: str, *, integer: bool = False, upper: float | None = None) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            unit = where.rsplit("_", 1)[-1] if "_" in where.rsplit(".", 1)[-1] else ""
            hint = f" (a plain number in {unit}; the unit is in the key)" if unit else ""
            raise self.fail(where, f"{value!r} is not a number{hint}")
        if integer and int(value) != value:
            raise self.fail(where, f"{value!r} must be a whole number")
        if not math.isfinite(value) or value < 0:
            raise self.fail(where, f"{value!r} must be a finite number >= 0")
        if upper is not None and value > upper:
            raise self.fail(where, f"{value!r} must be <= {upper}")
        return int(value) if integer else float(value)

    def name(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value or not value.replace("-", "").replace("_", "").isalnum():
            raise self.fail(where, f"{value!r} is not a valid name (letters, digits, '-' and '_')")
        return value


def _site(r: _Reader, raw: Any, where: str) -> Site:
    m = r.mapping(raw, where, _SITE_KEYS, {"name", "layer"})
    name = r.name(m["name"], f"{where}.name")
    layer = m["layer"]
    if layer not in LAYERS:
        raise r.fail(f"{where}.layer", f"{layer!r} is not one of {', '.join(LAYERS)}")
    compute = None
    if m.get("compute") is not None:
        c = r.mapping(m["compute"], f"{where}.compute", _COMPUTE_KEYS, {"cpu_cores"})
        core_cost, gpu_cost = _LAYER_COST[layer]
        compute = Compute(
            cpu_cores=r.number(c["cpu_cores"], f"{where}.compute.cpu_cores"),
            gpus=int(r.number(c.get("gpus", 0), f"{where}.compute.gpus", integer=True)),
            memory_gib=r.number(c.get("memory_gib", 0.0), f"{where}.compute.memory_gib"),
            core_cost=r.number(c.get("core_cost", core_cost), f"{where}.compute.core_cost"),
            gpu_cost=r.number(c.get("gpu_cost", gpu_cost), f"{where}.compute.gpu_cost"),
        )
    radio = None
    if layer == "antenna":
        if "radio" not in m:
            raise r.fail(where, f"antenna {name!r} needs a 'radio' mapping (the 5G access of its streams)")
        rm = r.mapping(m["radio"], f"{where}.radio", _RADIO_KEYS, {"delay_ms"})
        radio = Radio(
            delay_ms=r.number(rm["delay_ms"], f"{where}.radio.delay_ms"),
            delay_dev_ms=r.number(rm.get("delay_dev_ms", 0.0), f"{where}.radio.delay_dev_ms"),
            bw_mbps=_bandwidth(r, rm.get("bw_mbps", 1000.0), f"{where}.radio.bw_mbps"),
            loss_pct=r.number(rm.get("loss_pct", 0.0), f"{where}.radio.loss_pct", upper=100.0),
        )
    elif "radio" in m:
        raise r.fail(f"{where}.radio", f"only antenna sites have a radio; {name!r} is a {layer!r} site")
    return Site(name=name, layer=layer, compute=compute, radio=radio)


def _bandwidth(r: _Reader, value: Any, where: str) -> float:
    bw = r.number(value, where)
    if bw == 0:
        raise r.fail(where, "0 Mbit/s would disconnect the link; remove the link instead")
    return bw


def _link(r: _Reader, raw: Any, where: str, sites: set[str]) -> Link:
    m = r.mapping(raw, where, _LINK_KEYS, {"a", "b", "delay_ms"})
    for end in ("a", "b"):
        if m[end] not in sites:
            raise r.fail(f"{where}.{end}", f"{m[end]!r} is not a site of this file (dangling link end)")
    if m["a"] == m["b"]:
        raise r.fail(where, f"link joins {m['a']!r} to itself")
    return Link(
        a=m["a"], b=m["b"],
        delay_ms=r.number(m["delay_ms"], f"{where}.delay_ms"),
        delay_dev_ms=r.number(m.get("delay_dev_ms", 0.0), f"{where}.delay_dev_ms"),
        bw_mbps=_bandwidth(r, m.get("bw_mbps", 1000.0), f"{where}.bw_mbps"),
        loss_pct=r.number(m.get("loss_pct", 0.0), f"{where}.loss_pct", upper=100.0),
    )


def _deployment(r: _Reader, raw: Any, where: str, sites: dict[str, Site]) -> Deployment:
    m = r.mapping(raw, where, _DEPLOY_KEYS, {"site", "variant"})
    site = sites.get(m["site"])
    if site is None:
        raise r.fail(f"{where}.site", f"{m['site']!r} is not a site of this file")
    if site.compute is None:
        raise r.fail(f"{where}.site", f"{m['site']!r} has no compute to deploy on")
    if not isinstance(m["variant"], str):
        raise r.fail(f"{where}.variant", f"{m['variant']!r} is not a variant name")
    replicas = int(r.number(m.get("replicas", 1), f"{where}.replicas", integer=True))
    if replicas < 1:
        raise r.fail(f"{where}.replicas", "must be at least 1")
    return Deployment(site=m["site"], variant=m["variant"], replicas=replicas)


def _shortest_paths(r: _Reader, names: list[str], links: tuple[Link, ...]) -> dict[tuple[str, str], PathMetrics]:
    """Dijkstra by delay from every site; two shortest paths of equal delay make a path ambiguous."""
    adjacency: dict[str, list[Link]] = {n: [] for n in names}
    for link in links:
        adjacency[link.a].append(link)
        adjacency[link.b].append(link)
    eps = 1e-9
    paths: dict[tuple[str, str], PathMetrics] = {}
    for src in names:
        dist = {src: 0.0}
        heap = [(0.0, src)]
        order: list[str] = []
        while heap:
            d, node = heapq.heappop(heap)
            if node in order:
                continue
            order.append(node)
            for link in adjacency[node]:
                nxt = link.other(node)
                if d + link.delay_ms < dist.get(nxt, math.inf) - eps:
                    dist[nxt] = d + link.delay_ms
                    heapq.heappush(heap, (dist[nxt], nxt))
        # Count shortest paths in order of distance; keep the one path where the count is 1.
        count = {src: 1}
        via: dict[str, tuple[Link, ...]] = {src: ()}
        for node in order:
            for link in adjacency[node]:
                nxt = link.other(node)
                if nxt != src and abs(dist[node] + link.delay_ms - dist[nxt]) <= eps and link not in via[node]:
                    count[nxt] = count.get(nxt, 0) + count[node]
                    via.setdefault(nxt, via[node] + (link,))
        for dst in names:
            if dst not in dist:
                raise r.fail("links", f"site {dst!r} is not reachable from {src!r}")
            if count[dst] > 1:
                raise r.fail("links", f"two paths of equal delay join {src!r} and {dst!r}: "
                                      "a cycle makes the path ambiguous")
            paths[(src, dst)] = PathMetrics.of(via[dst])
    return paths


def load_topology(name_or_path: str | Path) -> Topology:
    """Returns the topology in a file (or named `topologies/<name>.yaml`); raises TopologyError."""
    path = resolve_topology_path(name_or_path)
    r = _Reader(path)
    doc = load_yaml_strict(path, TopologyError)
    top = r.mapping(doc, "(top level)", _TOP_KEYS, {"name", "sites", "links"})
    if not isinstance(top["sites"], list) or not top["sites"]:
        raise r.fail("sites", "expected a non-empty list of sites")
    if not isinstance(top["links"], list):
        raise r.fail("links", "expected a list of links")
    sites: dict[str, Site] = {}
    for i, raw in enumerate(top["sites"]):
        site = _site(r, raw, f"sites[{i}]")
        if site.name in sites:
            raise r.fail(f"sites[{i}].name", f"{site.name!r} is defined twice")
        sites[site.name] = site
    if not any(s.is_antenna for s in sites.values()):
        raise r.fail("sites", "no antenna site: streams need at least one antenna")
    if not any(s.is_cluster for s in sites.values()):
        raise r.fail("sites", "no site has compute: inference needs at least one cluster")
    links = tuple(_link(r, raw, f"links[{i}]", set(sites)) for i, raw in enumerate(top["links"]))
    pairs = [frozenset((lk.a, lk.b)) for lk in links]
    for i, pair in enumerate(pairs):
        if pairs.index(pair) != i:
            raise r.fail(f"links[{i}]", f"a second link joins {sorted(pair)}")
    deployments = None
    if top.get("deployments") is not None:
        if not isinstance(top["deployments"], list):
            raise r.fail("deployments", "expected a list (or leave it out for greedy placement)")
        deployments = tuple(_deployment(r, raw, f"deployments[{i}]", sites)
                            for i, raw in enumerate(top["deployments"]))
    paths = _shortest_paths(r, list(sites), links)
    return Topology(
        name=r.name(top["name"], "name"),
        source=str(path),
        description=str(top.get("description", "")),
        sites=tuple(sites.values()),
        links=links,
        deployments=deployments,
        paths=paths,
    )
