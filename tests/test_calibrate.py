"""Calibration of a topology from a testbed run's link measurements."""

from __future__ import annotations

import json

import pytest

from topologies import TopologyError, load_topology
from topologies.calibrate import calibrated_topology, read_link_figures


def test_measured_figures_replace_the_files_and_paths_follow(tmp_path) -> None:
    links = [
        {"link": "radio-ant1", "direction": d, "median_delay_ms": m, "measured_dev_ms": 0.2, "measured_loss_pct": 0}
        for d, m in (("a->b", 2.3), ("b->a", 2.5))
    ] + [{"link": "ant1-dc1", "direction": "a->b", "median_delay_ms": 5.6, "measured_dev_ms": 0.1,
          "measured_loss_pct": 1.0}]
    (tmp_path / "link_measurements.json").write_text(json.dumps({"meta": {}, "links": links}))
    topo = calibrated_topology(load_topology("tiny"), read_link_figures(tmp_path))
    assert topo.site("ant1").radio.delay_ms == pytest.approx(2.4)
    assert topo.site("ant1").radio.delay_dev_ms == pytest.approx(0.2)
    assert topo.path("ant1", "dc1").delay_ms == pytest.approx(5.6)
    assert topo.path("ant1", "cloud").delay_ms == pytest.approx(25.6)    # dc1-cloud not measured: the file's 20
    assert topo.path("ant1", "dc1").loss_pct == pytest.approx(1.0)


def test_missing_or_bad_measurements_are_refused(tmp_path) -> None:
    with pytest.raises(TopologyError, match="link_measurements.json: cannot read"):
        read_link_figures(tmp_path)
    (tmp_path / "link_measurements.json").write_text(json.dumps({"links": [{"link": "x"}]}))
    with pytest.raises(TopologyError, match=r"links\[0\]: not a link measurement"):
        read_link_figures(tmp_path)
