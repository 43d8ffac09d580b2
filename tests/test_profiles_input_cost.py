"""A frame's input cost, a fixed term per frame plus one per MB: the profile file keeps it (an older file, without
the fixed term, reads as 0), the planned time of a batch adds it (one function, which the profile-driven worker
sleeps and the fidelity verdict judges real batches against), the scheduler's batch delays carry it, and the
profiler fits both terms by least squares."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from analysis.records import RECORD_NAMES
from scheduler.profiles import load_profiles, read_profile, write_profile
from workers.profiler import InputCost, fit_input_cost

OLD = """version: 1
models:
  m: {task: object-detection, input_size: [416, 416], accuracy: 0.3, accuracy_source: test}
runtimes:
  - {model: m, device: cpu, cpu_cores: 1, batch_latency_ms: {1: 10.0, 4: 25.0}, input_ms_per_mb: 100.0, source: test}
"""
"""A profile written before the fixed term existed."""


def _with_fixed(tmp_path: Path, ms_per_frame: float) -> Path:
    pf = read_profile(_old(tmp_path))
    path = tmp_path / "fixed.yaml"
    write_profile(replace(pf, runtimes=(replace(pf.runtimes[0], input_ms_per_frame=ms_per_frame),)), path)
    return path


def _old(tmp_path: Path) -> Path:
    path = tmp_path / "old.yaml"
    path.write_text(OLD)
    return path


def test_an_older_profile_reads_with_no_fixed_input_cost_and_is_written_back_as_it_was(tmp_path: Path) -> None:
    rt = read_profile(_old(tmp_path)).runtime("m", "cpu")
    assert rt.input_ms_per_frame == 0.0
    assert rt.input_ms(20_000) == pytest.approx(2.0)  # 100 ms/MB x 0.02 MB
    write_profile(read_profile(_old(tmp_path)), tmp_path / "again.yaml")
    assert "input_ms_per_frame" not in (tmp_path / "again.yaml").read_text()


def test_the_fixed_input_cost_is_kept_by_the_file(tmp_path: Path) -> None:
    path = _with_fixed(tmp_path, 1.75)
    assert "input_ms_per_frame: 1.75" in path.read_text()
    rt = read_profile(path).runtime("m", "cpu")
    assert rt.input_ms_per_frame == 1.75 and rt.input_ms(20_000) == pytest.approx(1.75 + 2.0)


def test_a_batch_is_planned_with_both_input_terms(tmp_path: Path) -> None:
    rt = read_profile(_with_fixed(tmp_path, 2.0)).runtime("m", "cpu")
    # batch of 2 (latency 10 + (25 - 10) / 3 = 15 ms), frames of 10 + 20 kB: 2 x 2 ms + 100 ms/MB x 0.03 MB
    assert rt.planned_batch_ms(2, 30_000) == pytest.approx(15.0 + 4.0 + 3.0)
    assert rt.planned_batch_ms(4, 0.0) == pytest.approx(25.0 + 8.0)


def test_the_schedulers_batch_delays_carry_the_fixed_input_cost(tmp_path: Path) -> None:
    old = load_profiles(_old(tmp_path)).variant("m-cpu-b4")
    new = load_profiles(_with_fixed(tmp_path, 2.0)).variant("m-cpu-b4")
    assert new.batch_ms == pytest.approx([b + 2.0 * n for n, b in enumerate(old.batch_ms)])
    assert new.batch_ms[4] == pytest.approx(33.0) and new.batch_ms[0] == 0.0
    # D_v(zeta) of a full batch of 20 kB frames: 25 + 4 x 2 + 4 x 100 x 0.02
    assert new.processing_ms(20_000) == pytest.approx(25.0 + 8.0 + 8.0)
    rt = read_profile(_with_fixed(tmp_path, 2.0)).runtime("m", "cpu")
    assert new.processing_ms(20_000) == pytest.approx(rt.planned_batch_ms(4, 4 * 20_000))  # one cost model
    assert new.capacity_qps == pytest.approx(4 / 33.0 * 1000.0)


def test_the_verdict_judges_a_real_batch_against_the_planned_time(tmp_path: Path) -> None:
    from live.batches import batch_overruns
    from live.verdict import record_columns

    profile = _with_fixed(tmp_path, 2.0)
    rows = []
    for k, (size, took) in enumerate(((1, 14.0), (2, 20.0))):  # planned: 10 + 2 + 2 = 14; 15 + 4 + 4 = 23
        for s in range(size):
            rows.append({"stream_id": 1, "query": 10 * k + s, "antenna": "ant1", "app": "ar-vr", "cluster": "dc1",
                         "variant": "m-cpu-b4", "t_send_ms": 100 * k, "t_infer_start_ms": 100 * k + 5,
                         "t_infer_end_ms": 100 * k + 5 + took, "batch_size": size, "outcome": "ontime"})
    lines = [",".join(RECORD_NAMES)]
    for r in rows:
        lines.append(",".join(str(r.get(n, "")) for n in RECORD_NAMES))
    (tmp_path / "records.csv").write_text("\n".join(lines) + "\n")
    config = {"profiles_file": str(profile),
              "workers": [{"resource": "m-cpu-b4@dc1", "model": "m", "device": "cpu", "real": True}]}
    start, over, planned = batch_overruns(record_columns(tmp_path / "records.csv"), config, {1: 20_000.0}, real=True)
    assert sorted(planned) == pytest.approx([14.0, 23.0])
    assert sorted(over) == pytest.approx([-3.0, 0.0])


def test_the_input_cost_is_fitted_with_a_fixed_term_and_a_slope() -> None:
    sizes = [0.005, 0.01, 0.02, 0.04, 0.08, 0.1]
    times = [2.0 + 15.0 * x for x in sizes]
    fit = fit_input_cost(sizes, times)
    assert (fit.ms_per_frame, fit.ms_per_mb) == pytest.approx((2.0, 15.0))
    # a slope through 0 (the model without the fixed term) charges a 20 kB frame 0.85 ms where it takes 2.3
    through_zero = float(np.dot(sizes, times) / np.dot(sizes, sizes))
    assert through_zero * 0.02 == pytest.approx(0.851, abs=0.001)


def test_a_fitted_term_is_never_negative() -> None:
    sizes = [0.1, 0.2, 0.4]
    fit = fit_input_cost(sizes, [1.0, 3.0, 7.0])  # the line through them would cross 0 at 0.15 MB
    assert fit.ms_per_frame == 0.0 and fit.ms_per_mb == pytest.approx((0.1 + 0.6 + 2.8) / (0.01 + 0.04 + 0.16))
    fit = fit_input_cost(sizes, [3.0, 2.0, 1.0])  # bigger frames cheaper: noise, a fixed cost alone
    assert fit == InputCost(2.0, 0.0)
    assert fit_input_cost([0.02], [1.0]) == InputCost(0.0, 50.0)  # one size: a slope through 0
