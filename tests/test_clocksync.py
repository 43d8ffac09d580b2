"""A server's clock offset from probes, worked out by hand."""

from __future__ import annotations

import pytest

from testbed.clocksync import ClockProbe, offset_from_probes


def test_the_probe_of_least_round_trip_gives_the_offset_within_half_its_rtt():
    probes = [ClockProbe(100.000, 105.0030, 100.010),  # rtt 10 ms
              ClockProbe(100.020, 105.0215, 100.024),  # rtt 4 ms: 105.0215 - (100.020 + 100.024) / 2 = 4.9995 s
              ClockProbe(100.030, 105.0400, 100.036)]  # rtt 6 ms
    offset_ms, bound_ms = offset_from_probes(probes)
    assert offset_ms == pytest.approx(4999.5, abs=1e-6)
    assert bound_ms == pytest.approx(2.0, abs=1e-6)
    behind, _ = offset_from_probes([ClockProbe(50.0, 49.5, 50.002)])  # a server 501 ms behind
    assert behind == pytest.approx(-501.0, abs=1e-6)
    with pytest.raises(ValueError, match="no clock probes"):
        offset_from_probes([])
