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


def test_a_window_without_batches_breaks_a_stretch() -> None:
    t = np.concatenate([np.arange(0.0, 4.0, 0.5), np.arange(8.0, 12.0, 0.5), np.arange(12.0, 40.0, 0.5)])
    ms = np.where(t < 12.0, 70.0, 50.0)  # windows 0 and 2 slow, window 1 empty
    s = steadiness(t, ms)
    assert np.isnan(s.window_medians_ms[1]) and len(s.window_medians_ms) == 10
    assert s.slow_windows == [0, 2] and s.longest_slow_s == 4.0


@pytest.mark.parametrize(("t", "ms", "window_s", "match"), [
    ([], [], 4.0, "no batch"),
    ([0.0, 1.0], [50.0], 4.0, "one value per batch"),
    ([-1.0, 1.0], [50.0, 50.0], 4.0, "t_s: every start"),
    ([0.0, 1.0], [50.0, float("nan")], 4.0, "batch_ms: every batch"),
    ([0.0, 1.0], [50.0, 50.0], 0.0, "window_s: 0.0"),
])
def test_bad_timings_are_refused_naming_the_argument(t: list, ms: list, window_s: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        steadiness(np.array(t), np.array(ms), window_s=window_s)


def test_two_models_in_turns_slowing_down_together_say_the_core_did() -> None:
    from benchmarks.bench_core_steadiness import window_agreement

    t = np.arange(0.0, 40.0, 0.5)  # ten 4 s windows
    slow = (t >= 12.0) & (t < 24.0)  # windows 3-5
    a = steadiness(t, np.where(slow, 65.0, 50.0) + (t % 4.0))  # 1.3x there
    b = steadiness(t, np.where(slow, 10.4, 8.0))  # 1.3x there too
    corr, b_in_a_slow = window_agreement(a, b)
    assert a.slow_windows == [3, 4, 5]
    assert corr > 0.99 and b_in_a_slow == pytest.approx(1.3)
    steady = steadiness(t, 8.0 + 0.1 * (np.floor(t / 4.0) % 2))  # windows alternate 8.0, 8.1
    corr, b_in_a_slow = window_agreement(a, steady)
    assert abs(corr) < 0.5 and b_in_a_slow == pytest.approx(1.0, abs=0.02)  # a slowed down alone
    assert np.isnan(window_agreement(steady, a)[1])  # no slow window to look in
