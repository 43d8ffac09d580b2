"""benchmarks/bench_core_steadiness.py's figures from hand-made timings: the p95 share, the window medians and the
longest stretch of slow windows."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.bench_core_steadiness import steadiness


def test_a_steady_core_has_no_slow_window() -> None:
    t = np.arange(0.0, 20.0, 0.5)  # 40 batches: five 4 s windows of 8
    s = steadiness(t, np.full(len(t), 50.0))
    assert s.batches == 40 and s.median_ms == 50.0 and s.p95_share == 0.0
    assert s.window_medians_ms == [50.0] * 5 and s.slow_windows == [] and s.longest_slow_s == 0.0


def test_an_episode_of_slow_windows_is_found_and_measured() -> None:
    t = np.arange(0.0, 40.0, 0.5)  # ten 4 s windows
    ms = np.full(len(t), 50.0)
    ms[(t >= 12.0) & (t < 24.0)] = 65.0  # windows 3, 4, 5: 1.3x
    ms[(t >= 32.0) & (t < 36.0)] = 57.0  # window 8: 1.14x
    s = steadiness(t, ms)
    assert s.median_ms == 50.0
    assert s.window_medians_ms[3:6] == [65.0] * 3 and s.window_medians_ms[8] == 57.0
    assert s.slow_windows == [3, 4, 5, 8]
    assert s.longest_slow_s == 12.0
    assert s.p95_share == pytest.approx(0.3)  # 24 of 80 batches at 65 ms: the p95 is one of them
    assert steadiness(t, ms, slow_share=0.2).slow_windows == [3, 4, 5]


def test_no_batch_is_an_error() -> None:
    with pytest.raises(ValueError, match="no batch"):
        steadiness(np.empty(0), np.empty(0))
