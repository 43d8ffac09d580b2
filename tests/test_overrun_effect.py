"""live/batches.py's effect of real inference's overrun on a run's outcomes, from hand-made batches: each query
judged again by its deadline at the profile's planned times, a replica's queue carrying a batch's overrun to the
batches that waited behind it, and batches that overlap shared out among replicas."""

from __future__ import annotations

import numpy as np
import pytest

from live.batches import OverrunEffect, WorkerBatch, overrun_effect, planned_ends, replica_chains

R = "mobilenet-ssd-cpu-b1@ant2"


def _records(sent: list[float], at_worker: list[float], answered: list[float]) -> dict[str, np.ndarray]:
    return {"stream_id": np.ones(len(sent), dtype=np.int64), "t_send_ms": np.array(sent, dtype=float),
            "t_worker_ms": np.array(at_worker, dtype=float), "t_response_ms": np.array(answered, dtype=float)}


def _queue() -> tuple[dict[str, np.ndarray], list[WorkerBatch]]:
    """Three frames (sent 0, 10, 20 ms, at the worker 5 ms later), one batch each, back to back on one replica,
    70 ms each against a plan of 50; answers 5 ms after each batch."""
    batches = [WorkerBatch(R, 5.0, 75.0, (0,), 50.0), WorkerBatch(R, 75.2, 145.2, (1,), 50.0),
               WorkerBatch(R, 145.4, 215.4, (2,), 50.0)]
    return _records([0.0, 10.0, 20.0], [5.0, 15.0, 25.0], [80.0, 150.2, 220.4]), batches


def test_a_replicas_queue_carries_each_overrun_to_the_batches_behind_it() -> None:
    records, batches = _queue()
    # at the plan: 5-55, then each 0.2 ms after the one before: 55.2-105.2, 105.4-155.4
    assert planned_ends(batches, records["t_worker_ms"]) == pytest.approx([55.0, 105.2, 155.4])
    # took 80, 140.2, 200.4 ms; at the plan 60, 100.2, 140.4
    assert overrun_effect(records, batches, {1: 120.0}, 100) == OverrunEffect(3, 1, 0, 100)
    # the third is late by its own overrun and the two before it's: on time at the plan
    assert overrun_effect(records, batches, {1: 150.0}, 100) == OverrunEffect(3, 1, 0, 100)
    assert overrun_effect(records, batches, {1: 150.0}, 100).success_pts == pytest.approx(-1.0)
    assert overrun_effect(records, batches, {1: 250.0}, 100) == OverrunEffect(3, 0, 0, 100)


def test_a_batch_that_found_its_replica_idle_starts_as_it_did_unless_the_one_before_would_still_run() -> None:
    batches = [WorkerBatch(R, 5.0, 45.0, (0,), 50.0), WorkerBatch(R, 52.0, 92.0, (1,), 50.0),
               WorkerBatch(R, 300.0, 340.0, (2,), 50.0)]
    records = _records([0.0, 47.0, 295.0], [5.0, 52.0, 300.0], [50.0, 97.0, 345.0])
    # faster than planned: at the plan the second would have waited for the first (55) and the third not
    assert planned_ends(batches, records["t_worker_ms"]) == pytest.approx([55.0, 105.0, 350.0])
    effect = overrun_effect(records, batches, {1: 52.0}, 10)  # took 50, 50, 50; at the plan 60, 63, 60
    assert effect == OverrunEffect(3, 0, 3, 10) and effect.success_pts == pytest.approx(30.0)


def test_a_batch_that_waited_does_not_start_before_its_frames_reached_the_worker() -> None:
    batches = [WorkerBatch(R, 0.0, 100.0, (0,), 20.0), WorkerBatch(R, 100.5, 120.5, (1,), 20.0)]
    records = _records([0.0, 60.0], [0.0, 90.0], [101.0, 121.0])
    assert planned_ends(batches, records["t_worker_ms"]) == pytest.approx([20.0, 110.0])  # from 90, not 20.5


def test_overlapping_batches_are_shared_out_among_replicas_and_unanswered_queries_left_out() -> None:
    a, b, c = (WorkerBatch(R, 0.0, 50.0, (0,), 50.0), WorkerBatch(R, 10.0, 60.0, (1,), 50.0),
               WorkerBatch(R, 55.0, 100.0, (2,), 50.0))
    other = WorkerBatch("tiny-yolov2-cpu-b1@ant2", 20.0, 30.0, (3,), 10.0)
    chains = replica_chains([c, other, b, a])
    assert sorted(tuple(x.start_ms for x in ch) for ch in chains) == [(0.0, 55.0), (10.0,), (20.0,)]
    records = _records([0.0, 5.0, 50.0, 15.0], [0.0, 10.0, 55.0, 20.0], [51.0, float("nan"), 101.0, 31.0])
    assert overrun_effect(records, [a, b, c, other], {1: 1000.0}, 4).queries == 3


def test_a_batch_whose_frames_were_there_before_the_replica_was_free_waited_whatever_its_gap() -> None:
    batches = [WorkerBatch(R, 5.0, 75.0, (0,), 50.0), WorkerBatch(R, 80.0, 130.0, (1,), 50.0)]
    records = _records([0.0, 10.0], [5.0, 15.0], [80.0, 135.0])
    # 5 ms after the first (a batch filling, a busy loop), its frame there since 15: 5 ms after the planned 55
    assert planned_ends(batches, records["t_worker_ms"]) == pytest.approx([55.0, 110.0])
    records["t_worker_ms"][1] = float("nan")  # arrival not recorded: taken as ready when it started
    assert planned_ends(batches, records["t_worker_ms"]) == pytest.approx([55.0, 130.0])


def test_only_the_queries_sent_from_the_judged_start_count_but_earlier_batches_still_delay_them() -> None:
    records, batches = _queue()
    assert overrun_effect(records, batches, {1: 150.0}, 2, sent_from_ms=15.0) == OverrunEffect(1, 1, 0, 2)
    assert overrun_effect(records, batches, {1: 150.0}, 2, sent_from_ms=25.0) == OverrunEffect(0, 0, 0, 2)


def test_a_run_dir_judges_by_the_profile_it_timed_in_itself_wherever_it_is_now(tmp_path) -> None:
    from live.batches import profile_path

    elsewhere = tmp_path / "elsewhere" / "profiles.yaml"
    run = tmp_path / "run"
    run.mkdir()
    assert profile_path({"profiles_file": str(elsewhere)}, run) == elsewhere  # no profile of its own
    (run / "profiles.yaml").write_text("")
    assert profile_path({"profiles_file": str(elsewhere)}, run) == run / "profiles.yaml"  # moved since
    elsewhere.parent.mkdir()
    elsewhere.write_text("")  # the path it named now holds another run's
    assert profile_path({"profiles_file": str(elsewhere)}, run) == run / "profiles.yaml"
    assert profile_path({"profiles_file": str(elsewhere)}) == elsewhere  # no run dir given


def test_the_verdict_counts_the_effect_from_its_judged_start_with_the_batches_before_it(tmp_path) -> None:
    """A pilot judged from 15 ms: three back-to-back real batches, each 20 ms over its plan P; only the third
    query (sent at 20 ms) counts, and it would have been on time only with all three overruns taken back (its
    deadline 3P: late by 60 ms over 3P - 10, on time at the plan), not with the two judged batches' alone. The
    second query (sent at 10 ms, deadline 2P + 20) would have counted as made late had the warm-up been judged."""
    import json

    from analysis.records import RECORD_NAMES
    from live.verdict import judge
    from scheduler.profiles import read_profile, resolve_profile_path

    profile = resolve_profile_path(None)
    plan = read_profile(profile).runtime("mobilenet-ssd", "cpu").planned_batch_ms(1, 30000.0)
    (tmp_path / "trace.csv").write_text(
        "stream_id,antenna,start_s,duration_s,app,fps,frame_bytes,max_delay_ms,min_accuracy,task\n"
        f"1,ant1,0.0,10,ar-vr,10,30000,{3 * plan},0.2,object-detection\n"
        f"2,ant1,0.0,10,ar-vr,10,30000,{2 * plan + 20},0.2,object-detection\n")
    (tmp_path / "config.json").write_text(json.dumps({"profiles_file": str(profile), "workers": [
        {"resource": "mobilenet-ssd-cpu-b1@ant1", "model": "mobilenet-ssd", "device": "cpu", "real": True}]}))
    (tmp_path / "spec.json").write_text(json.dumps({"judged_from_s": 0.015}))
    rows, start = [], 5.0
    for k, (stream, sent) in enumerate(((1, 0.0), (2, 10.0), (1, 20.0))):
        end = start + plan + 20.0
        rows.append({"stream_id": stream, "query": k, "antenna": "ant1", "app": "ar-vr", "cluster": "ant1",
                     "variant": "mobilenet-ssd-cpu-b1", "t_send_ms": sent, "t_sched_ms": sent + 1,
                     "t_worker_ms": sent + 5, "t_infer_start_ms": round(start, 3), "t_infer_end_ms": round(end, 3),
                     "t_response_ms": round(end + 5, 3), "batch_size": 1, "outcome": "", "reason": ""})
        start = end + 0.2
    for r in rows:
        late = r["t_response_ms"] - r["t_send_ms"] > {1: 3 * plan, 2: 2 * plan + 20}[r["stream_id"]]
        r["outcome"], r["reason"] = ("failed", "deadline") if late else ("ontime", "")
    (tmp_path / "records.csv").write_text(",".join(RECORD_NAMES) + "\n" + "".join(
        ",".join(str(r[n]) for n in RECORD_NAMES) + "\n" for r in rows))
    effect = judge(tmp_path)["diagnostics"]["real_overrun_effect"]
    assert effect == {"queries": 1, "made_late": 1, "made_ontime": 0, "judged": 1, "success_pts": -100.0}
