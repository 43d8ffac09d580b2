"""Loss and jitter are applied: a lossy, jittery link measured on Linux bridges without a controller."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from testbed import EmulatedNetwork, ProbePlan
from testbed.leftovers import leftovers

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

LOSSY = """
name: lossy
sites:
  - {name: ant1, layer: antenna, radio: {delay_ms: 1, bw_mbps: 100}}
  - {name: dc1, layer: dc, compute: {cpu_cores: 1}}
links:
  - {a: ant1, b: dc1, delay_ms: 3, delay_dev_ms: 1.0, bw_mbps: 100, loss_pct: 10}
"""


def test_loss_and_jitter_are_applied(tmp_path: Path) -> None:
    topo = tmp_path / "lossy.yaml"
    topo.write_text(textwrap.dedent(LOSSY))
    with EmulatedNetwork(topo, switch="lxbr", controller="none", run_dir=tmp_path / "run", seed=7,
                         log=lambda _: None) as net:
        results = net.measure_links(ProbePlan(count=200, interval_ms=5, lossy_count=3000, lossy_interval_ms=1))
        run_id = net.run_id
    lossy = [m for m in results if m.link == "ant1-dc1"]
    assert len(lossy) == 2
    for m in lossy:
        assert m.probes_sent == 3000
        assert 7.0 <= m.measured_loss_pct <= 13.0  # 10% +- 4.5 binomial sigmas
        assert 0.6 <= m.measured_dev_ms <= 1.4
        assert abs(m.median_delay_ms - 3.0) <= 0.75  # scheduling noise of a loaded 2-core machine
    radio = [m for m in results if m.link == "radio-ant1"]
    assert all(m.measured_loss_pct == 0.0 and m.measured_dev_ms < 0.4 for m in radio)
    assert leftovers(run_id) == []
