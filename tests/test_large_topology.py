"""Large topologies: shortest paths from the core only and [antenna, resource] figures computed per row give
what the all-pairs reference gives (paths, every figure), and a 2,000-antenna full-edge-like topology loads,
builds and simulates. Timing is benchmarks/bench_large_topology.py's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from reference_paths import all_pairs_paths, pairwise_figures

import scheduler.pathfigures as pathfigures
from scheduler.profiles import load_profiles
from scheduler.system import build_system
from topologies import load_topology
from topologies.synthetic import write_full_edge_like

ROOT = Path(__file__).resolve().parents[1]
RING = """
name: ring
sites:
  - {name: a1, layer: antenna, radio: {delay_ms: 2}, compute: {cpu_cores: 4}}
  - {name: a2, layer: antenna, radio: {delay_ms: 3}}
  - {name: a3, layer: antenna, radio: {delay_ms: 1}, compute: {cpu_cores: 4}}
  - {name: c1, layer: co, compute: {cpu_cores: 6, gpus: 1}}
  - {name: c2, layer: co}
  - {name: d1, layer: dc, compute: {cpu_cores: 12, gpus: 2}}
  - {name: cloud, layer: cloud, compute: {cpu_cores: 64, gpus: 8}}
links:
  - {a: a1, b: c1, delay_ms: 1, delay_dev_ms: 0.2, loss_pct: 0.5}
  - {a: a2, b: c1, delay_ms: 1.5, bw_mbps: 300}
  - {a: a3, b: c2, delay_ms: 0.5}
  - {a: a3, b: c1, delay_ms: 3.5, loss_pct: 1}
  - {a: c1, b: d1, delay_ms: 4, delay_dev_ms: 0.5}
  - {a: c2, b: d1, delay_ms: 6, delay_dev_ms: 0.4, bw_mbps: 200}
  - {a: d1, b: cloud, delay_ms: 30, delay_dev_ms: 3, loss_pct: 0.1}
"""


def _topologies(tmp_path: Path) -> list:
    ring = tmp_path / "ring.yaml"
    ring.write_text(RING)
    generated = write_full_edge_like(tmp_path / "gen.yaml", 45, antennas_per_co=7, cos_per_dc=3)
    return [load_topology(t) for t in ("tiny", "dc-cloud", "co-dc-cloud", "full-edge", ring, generated)]


def test_paths_between_every_two_sites_equal_the_all_pairs_reference(tmp_path: Path) -> None:
    for topo in _topologies(tmp_path):
        names = [s.name for s in topo.sites]
        reference = all_pairs_paths(names, topo.links)
        for (a, b), want in reference.items():
            got = topo.path(a, b)
            assert got.links == want.links, (topo.name, a, b)
            np.testing.assert_allclose([got.delay_ms, got.delay_dev_ms, got.bottleneck_mbps, got.loss_pct],
                                       [want.delay_ms, want.delay_dev_ms, want.bottleneck_mbps, want.loss_pct],
                                       rtol=1e-12, atol=1e-12)
    assert len(load_topology(tmp_path / "ring.yaml").routes.core) == 4  # a3, c1, c2, d1: the leaves stay out


@pytest.mark.parametrize("dense", [True, False])
def test_antenna_resource_figures_equal_the_pairwise_reference(tmp_path: Path, dense: bool,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    if not dense:
        monkeypatch.setattr(pathfigures, "DENSE_LIMIT", 0)  # every access computes its rows
    profiles = load_profiles(None)
    for topo in _topologies(tmp_path):
        system = build_system(topo, profiles)
        want = pairwise_figures(topo, system)
        rng = np.random.default_rng(0)
        ant = rng.integers(len(system.antennas), size=50)
        res = rng.integers(system.n_resources, size=50)
        for name, matrix in want.items():
            got = getattr(system, name)
            assert (got._dense is not None) == dense
            np.testing.assert_allclose(np.asarray(got), matrix, rtol=1e-12, atol=1e-12, err_msg=name)
            for i in range(len(system.antennas)):
                np.testing.assert_allclose(got[i], matrix[i], rtol=1e-12, atol=1e-12, err_msg=name)
            np.testing.assert_allclose(got[ant, res], matrix[ant, res], rtol=1e-12, atol=1e-12, err_msg=name)
            assert got[int(ant[0]), int(res[0])] == pytest.approx(matrix[ant[0], res[0]], rel=1e-12, abs=1e-12)
        own = [j for j, r in enumerate(system.resources) if r.site == system.antennas[0]]
        assert all(system.net_ms[0, j] == 0.0 for j in own)


def test_two_thousand_antennas_load_build_and_simulate(tmp_path: Path) -> None:
    path = write_full_edge_like(tmp_path / "big.yaml", 2000)
    topo = load_topology(path)
    system = build_system(topo, load_profiles(None))
    assert len(system.antennas) == 2000 and system.n_resources > 4000
    assert system.static_ms._dense is None  # 2,000 x 4,000 figures are computed per row, not stored
    for i in (0, 777, 1999):
        a = system.antennas[i]
        for j in (0, system.n_resources // 2, system.n_resources - 1):
            p = topo.path(a, system.resources[j].site)
            assert system.net_ms[i, j] == pytest.approx(p.delay_ms, abs=1e-12)
            assert system.net_dev_ms[i][j] == pytest.approx(p.delay_dev_ms, abs=1e-12)
    assert system.antenna_index("ant1500") == 1499
    out = tmp_path / "sim"
    done = subprocess.run([sys.executable, str(ROOT / "run_testbed.py"), "simulate", "--topo", str(path),
                           "--lambda", "1", "--duration", "20", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    overall = json.loads((out / "summary.json").read_text())["overall"]
    assert overall["queries"] > 0 and overall["success"] > 0
