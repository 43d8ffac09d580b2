"""The fidelity report's figures on hand-made logs whose answers are known."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest

from analysis.fidelity import compare_tables, write_report
from analysis.records import RECORD_SCHEMA


def log(n: int, success_every: int, up_ms: float = 10.0, seed: int = 0) -> pa.Table:
    """A log of n queries, one per 100 ms; every `success_every`-th one fails, the rest are on time."""
    rng = np.random.default_rng(seed)
    send = np.arange(n) * 100.0
    up = up_ms + rng.random(n)
    queue = rng.random(n) * 5
    infer = 20 + rng.random(n)
    down = 10 + rng.random(n)
    worker = send + up
    start = worker + queue
    end = start + infer
    resp = end + down
    outcome = np.where(np.arange(n) % success_every == 0, "failed", "ontime")
    cols = dict(stream_id=np.zeros(n, dtype=np.int64), query=np.arange(n), antenna=["a"] * n, app=["x"] * n,
                cluster=["c"] * n, variant=["v"] * n, t_send_ms=send, t_sched_ms=send + 1, t_worker_ms=worker,
                t_infer_start_ms=start, t_infer_end_ms=end, t_response_ms=resp,
                batch_size=np.ones(n, dtype=np.int64), outcome=outcome, reason=[""] * n)
    return pa.table(cols, schema=RECORD_SCHEMA)


def test_identical_logs_give_zero_difference_and_rank_correlation_one(tmp_path) -> None:
    a, b, c = log(600, 3), log(600, 5), log(600, 10)
    report = compare_tables({"p1": (a, a), "p2": (b, b), "p3": (c, c)}, "hand", "nominal")
    for p in report.policies:
        assert p.success_diff_pts == 0 and p.failed_diff_pts == 0 and p.rejected_diff_pts == 0
        assert p.window_correlation == pytest.approx(1.0)
    assert report.ranking_spearman_rho == pytest.approx(1.0) and report.ranking_reversals == []
    assert all(s.ks_distance == 0 for s in report.stages)
    write_report(report, tmp_path)
    assert "| p1 |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "series.png").read_bytes()[:4] == b"\x89PNG"
    assert "Links full" not in report.to_markdown()  # none named: no section


def test_the_links_full_on_the_testbed_are_listed(tmp_path) -> None:
    a = log(600, 3)
    report = replace(compare_tables({"p1": (a, a)}, "hand", "nominal"), full_links={"p1": [
        {"link": "co1-dc1", "direction": "co1->dc1", "radio": False, "full_s": 82.0, "first_full_s": 38.0,
         "busy_max": 1.0, "wait_max_ms": 433.25},
        {"link": "radio-ant1", "direction": "up", "radio": True, "full_s": 1.0, "first_full_s": 3.0,
         "busy_max": 0.91, "wait_max_ms": 2.0}]})
    text = report.to_markdown()
    assert "| p1 | co1-dc1 | co1->dc1 | 82 | 38 | 1.00 | 433.2 |" in text
    assert "| p1 | radio-ant1 | up | 1 | 3 | 0.91 | 2.0 |" in text
    assert "the paths' links" in text
    write_report(report, tmp_path)
    assert '"first_full_s": 38.0' in (tmp_path / "report.json").read_text()


def test_the_testbed_runs_verdicts_are_in_the_report(tmp_path) -> None:
    """Each testbed run's verdict from live/verdict.py's own records: K, the hard invariants broken with their value,
    threshold and first window, a stop (the sources' lag, a server's cores lost), a run not judged and why; no
    record, no verdict claimed."""
    from live.verdict import Figure, judge_run, verdict

    a = log(600, 3)
    ok = verdict([Figure("source send lag", "p99", 0.3, 5.0, "virtual ms", windows_over=0),
                  Figure("other work on the machine", "max", 1.1, 0.3, "cores", hard=False)], 20.0, None)
    lost = verdict([Figure("real-inference overrun", "p95", 0.31, 0.25, "of profile", first_window_s=12.0,
                           windows_over=3)], 4.0,
                   {"invariant": "source send lag", "limit_ms": 50.0, "windows_from_s": 30.0, "lag_p99_ms": [80.0]})
    keeper = verdict([Figure("worker overshoot vs profile", "p99", 2.5, 2.0, "virtual ms")], 3.0,
                     {"invariant": "server cores held", "server": "b", "windows_from_s": 12.5,
                      "why": "the run's cores keeper died: ...; the run stops there (...)"})
    unjudged = judge_run(tmp_path / "nowhere")  # no files: not judged, and why
    report = replace(compare_tables({p: (a, a) for p in ("p1", "p2", "p3", "p4", "p5")}, "hand", "nominal"),
                     testbed_fidelity={"p1": ok, "p2": lost, "p3": {}, "p4": keeper, "p5": unjudged})
    text = report.to_markdown()
    assert ("p1: faithful at K 20; p2: not faithful at K 4 (real-inference overrun p95 0.31 > 0.25 of profile from "
            "12 s, stopped early at 30 s: source send lag); p3: not judged (no fidelity record); p4: not faithful at "
            "K 3 (worker overshoot vs profile p99 2.5 > 2 virtual ms, stopped early at 12.5 s: server cores held on "
            "server b); p5: not judged (") in text
    p5 = text.split("p5: not judged (", 1)[1].split(").\n", 1)[0]
    assert p5 == " ".join(unjudged["error"].split()) and p5 and "\n" not in p5  # the error, on one line
    assert "other work" not in text  # a warning is not a broken invariant
    write_report(report, tmp_path)
    assert '"verdict": "not faithful"' in (tmp_path / "report.json").read_text()
    assert "judged by the fidelity monitor" not in compare_tables({"p1": (a, a)}, "hand", "nominal").to_markdown()


def test_a_shifted_stage_shows_the_shift_and_is_named() -> None:
    sim = log(1000, 4, up_ms=10.0, seed=1)
    tb = log(1000, 4, up_ms=15.0, seed=1)   # same queries, 5 ms more on the way up
    report = compare_tables({"p": (sim, tb)}, "hand", "nominal")
    up = next(s for s in report.stages if s.stage == "network up")
    assert up.testbed_p50_ms - up.simulator_p50_ms == pytest.approx(5.0, abs=1e-9)
    assert up.ks_distance == pytest.approx(1.0)
    assert up.mean_diff_ms == pytest.approx(5.0)
    others = [s.ks_distance for s in report.stages if s.stage != "network up"]
    assert others == pytest.approx([0.0, 0.0, 0.0], abs=0.005)  # float rounding of the subtraction
    assert report.largest_gap_stage.startswith("network up")


def test_different_outcomes_give_the_difference_in_points_and_reversed_ranking() -> None:
    # p1: 1/3 failed vs 1/5; p2: 1/5 vs 1/3: the ranking flips, rho = -1.
    report = compare_tables({"p1": (log(600, 3), log(600, 5)), "p2": (log(600, 5), log(600, 3))}, "hand", "nominal")
    p1 = report.policies[0]
    assert p1.success_diff_pts == pytest.approx(100 * (4 / 5 - 2 / 3))
    assert p1.failed_diff_pts == pytest.approx(-p1.success_diff_pts)
    assert report.ranking_spearman_rho == pytest.approx(-1.0) and report.ranking_reversals == ["p2 > p1"]


def test_a_simulator_tie_may_go_either_way_but_a_strict_order_may_not_be_reversed() -> None:
    from analysis.fidelity import ranking_reversals

    sim = {"closest": 0.997, "least-impedance": 1.0, "load-balancing": 1.0}
    assert ranking_reversals(sim, {"closest": 0.995, "least-impedance": 0.999, "load-balancing": 1.0}) == []
    # a testbed tie keeps a strict order (least-impedance, closest); a lower figure reverses it (load-balancing)
    assert ranking_reversals(sim, {"closest": 0.995, "least-impedance": 0.995, "load-balancing": 0.994}) == [
        "load-balancing > closest"]


def test_the_simulator_against_itself_sets_what_a_testbed_can_reach() -> None:
    from analysis.fidelity import SELF_SEEDS, other_seeds, self_correlation

    own = np.array([1.0, 0.9, 1.0, 0.8, 1.0])
    assert self_correlation(own, [own, own[:4]]) == pytest.approx([1.0, 1.0])  # cut to the shorter
    assert self_correlation(own, [np.array([0.8, 1.0, 0.8, 1.0, 0.9])])[0] < 0  # it goes the other way
    assert self_correlation(own, [np.ones(5)]) == [0.0]  # a flat one does not follow at all
    assert self_correlation(own, [own[:1], np.full(5, np.nan)]) == []  # fewer than two shared windows: left out
    assert self_correlation(np.ones(5), [own]) == [] and self_correlation(np.full(5, np.nan), [own]) == []
    assert other_seeds(7) == SELF_SEEDS and other_seeds(202) == (101, 1202, 303, 404, 505)
    a = log(600, 3)
    series = [np.array([(i % 3 != 0) for i in range(k, k + 10)]).mean() for k in range(0, 600, 10)]  # 0.6, 0.7..
    shifted = np.roll(np.array(series), 7)
    report = compare_tables({"p": (a, a)}, "hand", "nominal", sim_again={"p": [np.array(series), shifted]})
    p = report.policies[0]
    assert p.window_correlation == pytest.approx(1.0)
    assert p.series_simulator == pytest.approx(series)
    assert p.simulator_self_correlation == pytest.approx((1.0 + np.corrcoef(series, shifted)[0, 1]) / 2)
    assert "sim vs itself" in report.to_markdown()
    assert np.isnan(compare_tables({"p": (a, a)}, "hand", "nominal").policies[0].simulator_self_correlation)
