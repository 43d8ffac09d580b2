"""The topology loader: shipped files, derived paths checked by hand, and every kind of bad file."""

from __future__ import annotations

import math

import pytest

from topologies import TopologyError, load_topology

SHIPPED = ("tiny", "dc-cloud", "co-dc-cloud", "full-edge")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_topologies_load_and_are_connected(name: str) -> None:
    topo = load_topology(name)
    assert topo.name == name
    names = [s.name for s in topo.sites]
    for a in topo.antennas:
        assert a.radio is not None and a.radio.delay_ms <= 10
        for b in names:
            assert topo.path(a.name, b).delay_ms >= 0


def test_tiny_paths_match_hand_computation() -> None:
    topo = load_topology("tiny")
    assert topo.path("ant1", "ant1").delay_ms == 0
    assert topo.path("ant1", "dc1").delay_ms == 5
    p = topo.path("ant1", "cloud")
    assert p.delay_ms == 25 and p.delay_dev_ms == 0 and p.bottleneck_mbps == 100
    assert [(lk.a, lk.b) for lk in p.links] == [("ant1", "dc1"), ("dc1", "cloud")]


def test_deviation_combines_links_as_independent() -> None:
    p = load_topology("full-edge").path("ant4", "cloud")
    assert p.delay_ms == pytest.approx(1 + 5 + 40)
    assert p.delay_dev_ms == pytest.approx(math.sqrt(0.2**2 + 0.5**2 + 4**2))


def test_full_edge_has_compute_from_antennas_to_cloud_growing() -> None:
    topo = load_topology("full-edge")
    assert len(topo.antennas) >= 4
    by_layer = {s.layer: s.compute.cpu_cores for s in topo.clusters}
    assert by_layer["antenna"] < by_layer["co"] < by_layer["dc"] < by_layer["cloud"]
    assert {s.layer for s in load_topology("dc-cloud").clusters} == {"dc", "cloud"}
    assert {s.layer for s in load_topology("co-dc-cloud").clusters} == {"co", "dc", "cloud"}


BASE = """
name: t
sites:
  - {name: a1, layer: antenna, radio: {delay_ms: 2}}
  - {name: d1, layer: dc, compute: {cpu_cores: 4}}
  - {name: d2, layer: dc, compute: {cpu_cores: 4}}
links:
  - {a: a1, b: d1, delay_ms: 5}
  - {a: d1, b: d2, delay_ms: 5}
"""


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("{a: a1, b: d1, delay_ms: 5}", "{a: a1, b: d1, delay: 5}", "links[0].delay: unknown key (did you mean 'delay_ms'"),
    ("{a: a1, b: d1, delay_ms: 5}", "{a: a1, b: d1, delay_ms: 5ms}", "links[0].delay_ms: '5ms' is not a number"),
    ("{a: a1, b: d1, delay_ms: 5}", "{a: a1, b: dx, delay_ms: 5}", "links[0].b: 'dx' is not a site"),
    ("{a: a1, b: d1, delay_ms: 5}", "{a: a1, b: d1, delay_ms: -5}", "links[0].delay_ms: -5 must be >= 0"),
    ("{a: a1, b: d1, delay_ms: 5}", "{a: a1, b: d1, delay_ms: 5, loss_pct: 150}", "links[0].loss_pct: 150 must be <= 100"),
    ("compute: {cpu_cores: 4}}\n  - {name: d2", "compute: {cpu_cores: -1}}\n  - {name: d2",
     "sites[1].compute.cpu_cores: -1"),
    ("layer: dc, compute: {cpu_cores: 4}}\n  - {name: d2", "layer: edge, compute: {cpu_cores: 4}}\n  - {name: d2",
     "sites[1].layer: 'edge' is not one of"),
    ("- {a: d1, b: d2, delay_ms: 5}", "- {a: d1, b: d2, delay_ms: 5}\n  - {a: a1, b: d2, delay_ms: 10}",
     "two paths of equal delay join 'a1' and 'd2'"),
    ("- {a: d1, b: d2, delay_ms: 5}", "", "site 'd2' is not reachable"),
    ("name: t\n", "name: t\nname: u\n", "duplicate key 'name'"),
    ("{name: a1, layer: antenna, radio: {delay_ms: 2}}", "{name: a1, layer: antenna}", "needs a 'radio'"),
])
def test_bad_files_name_file_key_and_value(write_yaml, old: str, new: str, expected: str) -> None:
    assert old in BASE
    path = write_yaml("bad.yaml", BASE.replace(old, new))
    with pytest.raises(TopologyError) as err:
        load_topology(path)
    assert str(path) in str(err.value)
    assert expected in str(err.value)


def test_unambiguous_cycle_is_accepted_and_takes_the_shortest_path(write_yaml) -> None:
    path = write_yaml("ring.yaml", BASE.replace("- {a: d1, b: d2, delay_ms: 5}",
                                                "- {a: d1, b: d2, delay_ms: 5}\n  - {a: a1, b: d2, delay_ms: 7}"))
    topo = load_topology(path)
    assert topo.path("a1", "d2").delay_ms == 7
    assert topo.path("d1", "d2").delay_ms == 5


def test_unknown_topology_name_lists_known_ones() -> None:
    with pytest.raises(TopologyError, match="full-edge"):
        load_topology("no-such-topology")
