"""Time dilation's arithmetic (topologies.timescale) against hand-computed values."""

import pytest

from topologies.model import LinkShape
from topologies.timescale import TimeScale, dilated_shape


def test_map_round_trips_around_the_anchor():
    scale = TimeScale(factor=4.0, anchor_s=1000.0)
    assert scale.virtual_s(1000.0) == 1000.0
    assert scale.virtual_s(1008.0) == 1002.0  # 8 real s are 2 virtual s
    assert scale.real_s(1002.0) == 1008.0
    assert scale.real_s(scale.virtual_s(1234.5)) == pytest.approx(1234.5)
    assert scale.real_duration(0.25) == 1.0 and scale.virtual_duration(1.0) == 0.25


def test_identity_at_factor_one():
    scale = TimeScale()
    assert not scale.dilated and scale.virtual_s(1.7e9) == 1.7e9
    shape = LinkShape(4.0, 1.0, 400.0)
    assert dilated_shape(shape, 1.0) is shape


def test_dilated_shape_scales_times_up_and_rate_down():
    assert dilated_shape(LinkShape(4.0, 1.0, 400.0, 0.5), 25.0) == LinkShape(100.0, 25.0, 16.0, 0.5)


def test_factor_must_be_positive():
    with pytest.raises(ValueError, match="factor"):
        TimeScale(factor=0.0)
