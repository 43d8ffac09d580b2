"""The fidelity monitor's arithmetic on hand-made figures and files: the verdict, the per-window judgement,
one sample of monitor.jsonl at K = 2, the run-queue figures summed over threads,
and the verdict of a hand-made run directory at K = 2 (every figure in virtual ms)."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from monitor_records import TRACE, write_records

from live.monitor import _State, sample, task_schedstat
from live.verdict import (
    THRESHOLDS,
    Figure,
    format_fidelity,
    judge,
    judge_run,
    per_window,
    traffic_end_ms,
    verdict,
    window_lateness,
    wire_late_p99_us,
    wire_late_windows,
)
from testbed.cpuset import format_cpus, parse_cpus


def test_verdict_names_the_broken_hard_invariants_and_keeps_diagnostics_as_warnings() -> None:
    ok = Figure("source send lag", "p99", 3.0, 5.0, "virtual ms", True, None, 0)
    late = Figure("decision-window lateness", "max", 80.0, 50.0, "virtual ms", True, 12.0, 3)
    hot = Figure("host CPU", "mean busy share", 0.95, 0.85, "share of cores", hard=False)
    assert verdict([ok, hot], 1.0, None)["verdict"] == "faithful"
    fid = verdict([ok, late, hot], 4.0, None)
    assert fid["verdict"] == "not faithful" and fid["tdf"] == 4.0
    assert [v["invariant"] for v in fid["violations"]] == ["decision-window lateness"]
    assert [w["invariant"] for w in fid["warnings"]] == ["host CPU"]
    lines = format_fidelity(fid)
    assert lines[0] == "fidelity (K = 4): NOT FAITHFUL"
    assert lines[1] == ("  decision-window lateness max 80 virtual ms > 50, from the window at 12 s "
                        "(3 windows over)")
    assert lines[2].startswith("  warning: host CPU mean busy share 0.95")
    stopped = verdict([ok], 1.0, {"invariant": "source send lag", "limit_ms": 20.0, "windows_from_s": 3.0,
                                  "lag_p99_ms": [25.0, 40.0, 90.0]})
    assert stopped["verdict"] == "not faithful" and stopped["violations"] == []
    assert format_fidelity(stopped)[1] == ("  stopped-early: source send lag p99 over 20 ms in 3 consecutive "
                                           "windows from 3 s (25, 40, 90 ms)")


def test_per_window_gives_the_first_window_over_and_how_many() -> None:
    t = np.array([100.0, 900.0, 1100.0, 1200.0, 2500.0, 3999.0])
    x = np.array([1.0, 2.0, 9.0, 1.0, 0.5, 7.0])
    assert per_window(t, x, "max", 5.0) == (1.0, 2)  # windows 1 (9) and 3 (7)
    assert per_window(t, x, "mean", 4.0) == (1.0, 2)  # window 1: mean 5; window 3: 7
    assert per_window(t, x, "max", 10.0) == (None, 0)


def test_one_sample_gives_shares_of_the_real_interval_and_delays_in_virtual_ms() -> None:
    a = _State(10.0, (1000, 4000, 30), 5_000_000, 100, {"w (1)": ("workers", 1_000_000_000, 0)})
    b = _State(12.0, (1400, 4800, 70), 5_500_000, 200_100, {"w (1)": ("workers", 1_600_000_000, 200_000_000),
                                                         "s (2)": ("sources", 5, 5)})
    s = sample(a, b, 1234.56, k=2.0)
    assert s["t_ms"] == 1234.6 and s["real_s"] == 2.0
    assert s["host_cores"] == pytest.approx(400 / 800 * (os.cpu_count() or 1), abs=1e-3)
    assert s["host_some_pct"] == 25.0  # 0.5 s stalled of 2 s
    assert s["host_steal_pct"] == 5.0  # 40 of 800 jiffies stolen
    assert s["run_some_pct"] == 10.0
    w = s["procs"]["w (1)"]
    assert w == {"group": "workers", "cores": 0.3, "run_ms": 300.0, "wait_ms": 100.0}  # 600 and 200 real ms / K
    assert s["procs"]["s (2)"]["run_ms"] == 0.0  # first seen: no interval yet


def test_the_run_queue_figures_count_every_thread_not_the_leader_alone() -> None:
    spun, done = threading.Event(), threading.Event()

    def spin() -> None:
        end = time.thread_time() + 0.2
        while time.thread_time() < end:
            pass
        spun.set()
        done.wait()  # a thread's figures go with it: read them while it lives

    before = task_schedstat(os.getpid())
    leader_before = int(Path("/proc/self/schedstat").read_text().split()[0])
    t = threading.Thread(target=spin)
    t.start()
    spun.wait()
    after = task_schedstat(os.getpid())
    leader = int(Path("/proc/self/schedstat").read_text().split()[0]) - leader_before
    done.set()
    t.join()
    assert before is not None and after is not None
    assert after[0] - before[0] >= 0.19e9 > leader  # the spin is in the sum and not in the leader's figure


def test_the_wires_lateness_is_judged_window_by_window_in_virtual_time() -> None:
    steps = [250, 500, 1000, 2000, 5000]

    def direction(*rows: list[int]) -> dict:  # [epoch second, due, later than 1 ms]
        return {"late_steps_us": steps, "sent_per_s": [[s, n, over, over, over, 0, 0] for s, n, over in rows]}

    # K 2, t0 at real epoch 100 s: the window at virtual second w is real [100 + 2w, 102 + 2w)
    quiet = direction([100, 50, 0], [101, 50, 0], [102, 50, 0], [103, 50, 0])
    busy = direction([104, 150, 1], [105, 50, 1], [106, 1000, 1], [107, 1000, 1])
    # window 2 (real 104-106 s): 2 of 200 frames over 1 ms (1 %: not over); window 3: 2 of 2000
    assert wire_late_windows([quiet, busy], 100.0, 2.0, 1.0) == (None, 0)
    busy["sent_per_s"][0][2:5] = [2, 2, 2]  # 3 of 200: the window at 2 s is over
    assert wire_late_windows([quiet, busy], 100.0, 2.0, 1.0) == (2.0, 1)
    assert wire_late_windows([quiet, busy], 100.0, 2.0, 2.0) == (None, 0)  # none later than 2 ms
    # an undilated run's seconds straddle windows when t0 is not on a second: shared out by overlap
    half = direction([10, 100, 4], [11, 100, 0])
    assert wire_late_windows([half], 10.5, 1.0, 1.0) == (0.0, 1)  # 2 of 50 + 50 in the window from 10.5 s
    half["sent_per_s"][0][2:5] = [2, 2, 2]  # 1 of 100: 1 %, not over
    assert wire_late_windows([half], 10.5, 1.0, 1.0) == (None, 0)
    before = direction([8, 10, 5])  # the network's probes before t0: not the run's
    assert wire_late_windows([before], 10.0, 1.0, 1.0) == (None, 0)
    assert wire_late_windows([quiet], 100.0, 2.0, 0.1) == (None, None)  # under the smallest step
    assert wire_late_windows([{"late_p99_us": 1.0}], 10.0, 1.0, 1.0) == (None, None)  # an older run's wires


def test_the_wires_lateness_counts_the_frames_of_the_traffic_only() -> None:
    steps = [250, 500, 1000, 2000, 5000]
    # t0 at real epoch 100 s, the traffic over at 110 s: 100 frames due a second in between
    d = {"late_steps_us": steps, "late_p99_us": 18000.0, "late_events_dropped": 0,
         "sent_per_s": [[90, 50, 40, 40, 40, 40, 40]] + [[s, 100, 0, 0, 0, 0, 0] for s in range(100, 110)]
         + [[110, 100, 60, 60, 60, 60, 0]],
         "late_events": [[90_500.0, 18000.0]] * 40 + [[103_200.0, 700.0], [104_100.0, 3000.0]]
         + [[110_300.0, 4000.0]] * 60}
    # 1,000 frames in the span: 10 may be later; 2 were: the p99 is under the first step, capped at it
    assert wire_late_p99_us(d, 100.0, 110.0) == 250.0
    assert wire_late_p99_us(dict(d, late_p99_us=40.0), 100.0, 110.0) == 40.0
    # the span from 103.5 s: 650 frames (half of the second at 103), 6 may be later, 1 was
    assert wire_late_p99_us(d, 103.5, 110.0) == 250.0
    # 140 frames from 103.1 to 104.5 s: 1 may be later than the p99, the 3 ms one; the next is the p99
    assert wire_late_p99_us(d, 103.1, 104.5) == 700.0
    assert wire_late_p99_us(d, 100.0, 111.0) == 4000.0  # the run closing down counted: 60 of 1,100 frames
    assert wire_late_p99_us(d, None, None) == 18000.0  # no t0: the whole life
    # frames left off the list after its last, at 110.3 s: the traffic up to 110 s is all on it, not up to 111 s
    assert wire_late_p99_us(dict(d, late_events_dropped=3), 100.0, 110.0) == 250.0
    assert wire_late_p99_us(dict(d, late_events_dropped=3), 100.0, 111.0) == 18000.0
    old = {k: v for k, v in d.items() if k != "late_events"}
    assert wire_late_p99_us(old, 100.0, 110.0) == 18000.0  # an older run's wires
    # the windows: the 60 late frames at 110 s are after the traffic's end and not judged
    assert wire_late_windows([d], 100.0, 1.0, 1.0, 110.0) == (None, 0)
    assert wire_late_windows([d], 100.0, 1.0, 1.0) == (10.0, 1)
    assert wire_late_windows([d], 100.0, 1.0, 1.0, 110.2) == (10.0, 1)  # the window at 10 s is partly the run's


def test_the_traffic_ends_with_the_last_time_a_query_has() -> None:
    rec = {"t_send_ms": np.array([1.0, 5.0]), "t_response_ms": np.array([9.0, np.nan]),
           "t_worker_ms": np.array([np.nan, 12.5])}
    assert traffic_end_ms(rec) == 12.5
    assert traffic_end_ms({"t_send_ms": np.array([np.nan])}) is None
    assert traffic_end_ms({}) is None


def test_the_verdict_judges_the_wires_over_the_traffic_in_real_and_virtual_time(tmp_path: Path) -> None:
    (tmp_path / "trace.csv").write_text(TRACE)
    # K 4, t0 at real epoch 1000 s; the last query is sent at 2.901 virtual s: the traffic ends at 1011.604 s real
    (tmp_path / "config.json").write_text(json.dumps({"tdf": 4.0, "workers": [], "time_dilation": {
        "factor": 4.0, "t0_real_epoch_s": 1000.0}}))
    write_records(tmp_path / "records.csv", [{"stream_id": 1, "query": k, "t_send_ms": 100 * k + 1} for k in range(30)])
    steps = [250, 500, 1000, 2000, 5000]
    rows = [[s, 100, 0, 0, 0, 0, 0] for s in range(995, 1016)]
    rows[1011 - 995][2:6] = [5, 5, 5, 5]  # 5 frames 3 ms late at 1011 s: the traffic's
    rows[1012 - 995][2:7] = [50, 50, 50, 50, 50]  # 50 frames 9 ms late at 1012 s: the run closing down
    wire = {"late_p99_us": 9000.0, "tdf": 4.0, "late_steps_us": steps, "late_events_dropped": 0, "sent_per_s": rows,
            "late_events": [[1011_000.0, 3000.0]] * 5 + [[1012_000.0, 9000.0]] * 50}
    (tmp_path / "wire-a-b.stats.json").write_text(json.dumps([wire]))
    fig = {f["invariant"]: f for f in judge(tmp_path)["figures"]}["wire lateness vs due"]
    # 1,160 frames due in the traffic (11 seconds and 0.604 of one): 11 may be late, 5 were; the window from 2
    # virtual s (real 1008-1012 s) has 5 of 400 later than 1 ms; the one from 3 s begins after the traffic
    assert (fig["value"], fig["first_window_s"], fig["windows_over"]) == (0.25, 2.0, 1)
    wire["late_events"] = [[1011_000.0, 3000.0]] * 15  # 15 of 1,160: the p99 is the 12th latest
    (tmp_path / "wire-a-b.stats.json").write_text(json.dumps([wire]))
    assert {f["invariant"]: f for f in judge(tmp_path)["figures"]}["wire lateness vs due"]["value"] == 3.0


def test_the_verdict_of_a_run_directory_in_virtual_ms(tmp_path: Path) -> None:
    (tmp_path / "trace.csv").write_text(TRACE)
    (tmp_path / "config.json").write_text(json.dumps({"tdf": 2.0, "workers": []}))
    rows = [{"stream_id": 1, "query": k, "t_send_ms": 100 * k + (40 if k == 25 else 1)} for k in range(30)]
    rows += [{"stream_id": 2, "query": 0, "t_send_ms": 500.0, "outcome": "rejected", "reason": "capacity"}]
    write_records(tmp_path / "records.csv", rows)
    (tmp_path / "windows.csv").write_text("antenna,window,t_start_ms,t_end_ms,t_closed_ms\n"
                                          "ant1,0,0.0,1000.0,1002.0\nant1,1,1000.0,2000.0,2070.0\n")
    (tmp_path / "wire-a-b.stats.json").write_text(json.dumps([{"late_p99_us": 1500.0, "tdf": 2.0},
                                                              {"late_p99_us": 4000.0, "tdf": 2.0}]))
    (tmp_path / "events.jsonl").write_text('{"t_ms": 3000.0, "event": "switch-socket-drops", "frames": 3}\n')
    fid = judge(tmp_path)
    fig = {(f["invariant"], f["statistic"]): f for f in fid["figures"]}
    assert fig[("switch socket drops", "frames lost")]["value"] == 3.0
    lag = fig[("source send lag", "p99")]
    assert lag["value"] == pytest.approx(np.percentile([1.0] * 29 + [40.0], 99))  # the binding rejection left out
    assert lag["first_window_s"] == 2.0 and lag["windows_over"] == 1
    assert fig[("source send lag", "max")]["value"] == 40.0
    assert fig[("wire lateness vs due", "p99 (worst direction)")]["value"] == 4.0  # the wire's virtual us (8 ms real)
    late = fig[("decision-window lateness", "max")]
    assert late["value"] == 70.0 and late["first_window_s"] == 1.0
    assert fid["verdict"] == "not faithful" and fid["tdf"] == 2.0
    assert {v["invariant"] for v in fid["violations"]} == {"source send lag", "wire lateness vs due",
                                                          "decision-window lateness", "switch socket drops"}
    assert THRESHOLDS.send_lag_p99_ms < lag["value"]


def test_the_relay_at_the_antennas_own_site_is_judged(tmp_path: Path) -> None:
    (tmp_path / "trace.csv").write_text(TRACE)
    (tmp_path / "config.json").write_text(json.dumps({"tdf": 4.0, "workers": []}))
    # Stream 1's queries go to a worker at ant1 itself: 0.3 ms from the scheduler having each to the worker
    # having it, 6 ms for two in window 2. Stream 2's go to dc1, 9 ms away over links: not the relay's own time.
    rows = [{"stream_id": 1, "query": k, "t_send_ms": 100 * k + 1, "t_sched_ms": 100 * k + 6,
             "t_worker_ms": 100 * k + 6 + (6.0 if k in (21, 22) else 0.3)} for k in range(30)]
    rows += [{"stream_id": 2, "query": k, "t_send_ms": 500 + 250 * k, "t_sched_ms": 506 + 250 * k,
              "t_worker_ms": 515 + 250 * k, "cluster": "dc1", "app": "video-surveillance"} for k in range(10)]
    write_records(tmp_path / "records.csv", rows)
    fid = judge(tmp_path)
    fig = {(f["invariant"], f["statistic"]): f for f in fid["figures"]}
    relay = fig[("scheduler relay at its own site", "p99")]
    assert relay["value"] == pytest.approx(np.percentile([0.3] * 28 + [6.0] * 2, 99), abs=1e-3)
    assert relay["threshold"] == THRESHOLDS.relay_p99_ms and relay["hard"]
    assert relay["first_window_s"] == 2.0 and relay["windows_over"] == 1
    assert "scheduler relay at its own site" in {v["invariant"] for v in fid["violations"]}
    # Every relay within the limit: the figure holds.
    for r in rows[:30]:
        r["t_worker_ms"] = r["t_sched_ms"] + 0.3
    write_records(tmp_path / "records.csv", rows)
    fid = judge(tmp_path)
    relay = next(f for f in fid["figures"] if f["invariant"] == "scheduler relay at its own site")
    assert relay["value"] == pytest.approx(0.3) and relay["windows_over"] == 0
    assert "scheduler relay at its own site" not in {v["invariant"] for v in fid["violations"]}


def test_the_real_workers_waiting_share_is_judged_from_the_samples(tmp_path: Path) -> None:
    (tmp_path / "trace.csv").write_text(TRACE)
    (tmp_path / "config.json").write_text(json.dumps({"workers": [{"resource": "r@dc1", "real": True}]}))
    write_records(tmp_path / "records.csv", [{"stream_id": 1, "query": 0, "t_send_ms": 0.5}])

    def one(t_ms: float, run_ms: float, wait_ms: float) -> dict:
        return {"t_ms": t_ms, "real_s": 1.0, "host_cores": 1.0, "host_some_pct": None, "run_some_pct": None,
                "procs": {"worker r@dc1 (7)": {"group": "workers", "cores": 0.1, "run_ms": run_ms, "wait_ms": wait_ms},
                          "source ant1 (8)": {"group": "sources", "cores": 0.1, "run_ms": 100.0, "wait_ms": 100.0}}}

    samples = [one(500.0, 100.0, 1.0), one(1500.0, 100.0, 0.0), one(2500.0, 90.0, 10.0), one(3500.0, 0.0, 0.0)]
    # the host stood still 4.5 s, the hypervisor's doing; a paused VM's wall clock was then set 5.8 s forward
    samples[2] |= {"real_s": 5.5, "host_steal_pct": 60.0, "wall_step_ms": 5800.0}
    (tmp_path / "monitor.jsonl").write_text("".join(json.dumps(x) + "\n" for x in samples))
    fid = judge(tmp_path)
    wait = next(f for f in fid["figures"] if f["invariant"] == "run-queue delay of real inference")
    assert wait["value"] == pytest.approx(11 / 301, abs=1e-4)  # 11 ms waiting of 301 ms on or waiting for a CPU
    assert wait["first_window_s"] == 2.0 and wait["windows_over"] == 1  # 10 % in the window at 2 s
    assert fid["diagnostics"]["wait_share"]["sources"] == 0.5
    assert fid["diagnostics"]["outside_cores_mean"] == pytest.approx(0.8)
    assert fid["diagnostics"]["outside_cores_max"] == pytest.approx(0.8)  # at 1.5 and 3.5 s (other_work's samples)
    warned = {w["invariant"]: w["value"] for w in fid["warnings"]}
    assert warned["host stall"] == 5.5 and warned["CPU stolen by the hypervisor"] == 60.0
    assert warned["wall clock stepped"] == 5800.0
    other = next(w for w in fid["warnings"] if w["invariant"] == "other work on the machine")
    # 1 core busy, 0.2 of them the run's; at 1.5 and 3.5 s (the first sample covers t0, the third the stall's 5.5 s)
    assert other["value"] == pytest.approx(0.8) and other["windows_over"] == 2


def test_real_inference_is_judged_on_its_worst_server() -> None:
    """Real inference on the driver (900 ms running, no wait) and on server b (100 ms running, 50 ms waiting):
    pooled, 50 of 1050 ms waiting would pass the limit; b's own core waited a third of its time."""
    from live.monitor_figures import diagnostics, real_wait_series, server_of

    procs = {"worker r@dc1 (7)": {"group": "workers", "cores": 0.9, "run_ms": 900.0, "wait_ms": 0.0},
             "worker r@ant1 (9@b)": {"group": "workers", "cores": 0.1, "run_ms": 100.0, "wait_ms": 50.0}}
    samples = [{"t_ms": 500.0, "host_cores": 1.0, "procs": procs}]
    real = {"worker r@dc1", "worker r@ant1"}
    diag = diagnostics(samples, real)
    assert diag["real_workers_wait_share_by_server"] == {"b": pytest.approx(1 / 3, abs=1e-4), "local": 0.0}
    assert diag["real_workers_wait_share"] == pytest.approx(1 / 3, abs=1e-4)
    assert diag["real_workers_wait_share"] > THRESHOLDS.real_wait_share
    assert diag["wait_share"]["real workers"] == pytest.approx(50 / 1050, abs=1e-4)  # the pooled figure, shown
    t, share = real_wait_series(samples, real)
    assert list(t) == [500.0] and share[0] == pytest.approx(1 / 3)
    assert (server_of("worker r@ant1 (9@b)"), server_of("worker r@dc1 (7)")) == ("b", "")


def test_cpu_lists_read_and_write() -> None:
    assert parse_cpus("0-2,5\n") == [0, 1, 2, 5] and parse_cpus("") == []
    assert format_cpus({3, 1}) == "1,3"


def test_a_run_directory_that_cannot_be_read_is_not_judged(tmp_path: Path) -> None:
    fid = judge_run(tmp_path)  # no config.json
    assert fid["verdict"] == "not judged" and "config.json" in fid["error"]
    assert format_fidelity(fid)[0].startswith("fidelity: not judged (FileNotFoundError")


def test_a_batch_is_judged_against_its_profile_and_its_frames_input_cost(tmp_path: Path) -> None:
    from live.batches import batch_overruns
    from live.verdict import record_columns
    from scheduler.profiles import read_profile, resolve_profile_path

    profile = resolve_profile_path(None)
    rt = read_profile(profile).runtime("mobilenet-ssd", "cpu")
    plan_ms = rt.latency_ms(1) + rt.input_ms_per_mb * 0.03  # stream 1's frames: 30 kB
    (tmp_path / "trace.csv").write_text(TRACE)
    rows = [{"stream_id": 1, "query": k, "t_send_ms": 100 * k, "variant": "mobilenet-ssd-cpu-b1", "cluster": "ant1",
             "t_infer_start_ms": 100 * k + 5, "t_infer_end_ms": 100 * k + 5 + plan_ms + over}
            for k, over in enumerate((0.25, 0.5, 3.0))]
    write_records(tmp_path / "records.csv", rows)
    table = record_columns(tmp_path / "records.csv")
    config = {"profiles_file": str(profile), "workers": [
        {"resource": "mobilenet-ssd-cpu-b1@ant1", "model": "mobilenet-ssd", "device": "cpu", "real": False}]}
    start, over, planned = batch_overruns(table, config, {1: 30000.0}, real=False)
    assert list(start) == [5.0, 105.0, 205.0] and planned == pytest.approx([plan_ms] * 3)
    assert over == pytest.approx([0.25, 0.5, 3.0], abs=1e-6)
    assert batch_overruns(table, config, {1: 30000.0}, real=True)[0].size == 0  # no real worker



def test_an_overrun_without_waiting_on_a_machine_no_busier_is_the_cores_own_slowness() -> None:
    """Real inference overran its profile in the windows at 3 and 4 s: the cause says whether it waited for its
    core there, or the machine (or the hypervisor) was busier then than in the rest of the run."""
    from live.monitor_figures import overrun_cause

    def one(t_ms: float, wait_ms: float, cores: float, steal: float = 0.0) -> dict:
        return {"t_ms": t_ms, "real_s": 1.0, "host_cores": cores, "host_steal_pct": steal,
                "procs": {"worker r@dc1 inference (7)": {"group": "real inference", "cores": 0.2, "run_ms": 200.0,
                                                         "wait_ms": wait_ms}}}

    t = np.arange(50.0, 8000.0, 50.0)  # a batch every 50 ms; those from 3 to 5 s 40 % over their profile
    share = np.where((t >= 3000.0) & (t < 5000.0), 0.4, 0.02)
    quiet = [one(800.0 + 1000.0 * i, 1.0, 0.45) for i in range(8)]  # the first covers t0: left out
    cause = overrun_cause(quiet, {"worker r@dc1"}, t, share, 1.0, THRESHOLDS)
    assert cause is not None and cause["windows_over"] == 2 and cause["core_slower"]
    assert cause["samples_over"] == 2  # at 3.8 and 4.8 s; the one at 5.8 s is 20 % over: the rest
    assert cause["real_wait_share"] == pytest.approx(2 / 402, abs=1e-4)
    assert cause["other_cores"] == pytest.approx(0.25)  # the machine's cores but real inference's
    waited = [one(s["t_ms"], 40.0 if 3000 < s["t_ms"] < 5000 else 1.0, 0.45) for s in quiet]
    # it waited: it shared its core
    assert not overrun_cause(waited, {"worker r@dc1"}, t, share, 1.0, THRESHOLDS)["core_slower"]
    busier = [one(s["t_ms"], 1.0, 0.8 if 3000 < s["t_ms"] < 5000 else 0.45) for s in quiet]
    assert not overrun_cause(busier, {"worker r@dc1"}, t, share, 1.0, THRESHOLDS)["core_slower"]
    stolen = [one(s["t_ms"], 1.0, 0.45, 5.0 if 3000 < s["t_ms"] < 5000 else 0.0) for s in quiet]
    cause = overrun_cause(stolen, {"worker r@dc1"}, t, share, 1.0, THRESHOLDS)
    assert not cause["core_slower"] and cause["stolen"]  # the hypervisor's doing: the host's all the same
    assert not overrun_cause(waited, {"worker r@dc1"}, t, share, 1.0, THRESHOLDS)["stolen"]
    assert overrun_cause(quiet, {"worker r@dc1"}, t, np.full(t.shape, 0.02), 1.0, THRESHOLDS) is None  # no window over
    # over its mean limit alone (6 ms a batch, 0.15 of a 40 ms profile, in the windows at 3 and 4 s): those windows
    over_ms = np.where((t >= 3000.0) & (t < 5000.0), 6.0, 0.8)
    assert overrun_cause(quiet, {"worker r@dc1"}, t, over_ms / 40.0, 1.0, THRESHOLDS) is None
    mean = overrun_cause(quiet, {"worker r@dc1"}, t, over_ms / 40.0, 1.0, THRESHOLDS, over_ms, 5.0)
    assert mean["windows_over"] == 2 and mean["samples_over"] == 2 and mean["core_slower"], mean
    # over in every window: nothing to compare with, so neither the host nor the run is named; whether it waited is
    throughout = overrun_cause(quiet, {"worker r@dc1"}, t, np.full(t.shape, 0.4), 1.0, THRESHOLDS)
    assert throughout["throughout"] and throughout["other_cores_elsewhere"] is None, throughout
    assert throughout["samples_over"] == 7 and throughout["windows_over"] == 8
    assert not (throughout["core_slower"] or throughout["stolen"] or throughout["waited"]), throughout
    assert overrun_cause(waited, {"worker r@dc1"}, t, np.full(t.shape, 0.4), 1.0, THRESHOLDS)["waited"]
    assert not cause["throughout"] and not overrun_cause(quiet, {"worker r@dc1"}, t, share, 1.0, THRESHOLDS)["waited"]
    # at K = 4 a real second's sample covers 250 virtual ms: the one at 3.35 s is over 3.1-3.35 s, in the window
    # at 3 s; read as a whole virtual second (2.35-3.35 s, 35 % over) it would be counted with the rest
    dilated = [one(250.0 * i + 100.0, 200.0 if i == 13 else 1.0, 0.45) for i in range(32)]
    cause = overrun_cause(dilated, {"worker r@dc1"}, t, share, 4.0, THRESHOLDS)
    assert not cause["core_slower"] and cause["samples_over"] == 8, cause


def test_the_verdict_names_the_cores_own_slowness_as_the_cause() -> None:
    over = Figure("real-inference overrun", "p95", 0.4, 0.25, "share of profile", True, 3.0, 2)
    cause = {"windows_over": 2, "samples_over": 2, "real_wait_share": 0.01, "other_cores": 0.25,
             "other_cores_elsewhere": 0.25, "host_steal_pct_max": 0.0, "core_slower": True}
    lines = format_fidelity(verdict([over], 1.0, None, {"real_overrun_cause": cause}))
    assert lines[-2].startswith("  cause: in the 2 windows where real inference overran, it did not wait")
    assert "the core itself ran slower (the host)" in lines[-2]
    assert lines[-1].startswith("  control: `.venv/bin/python benchmarks/bench_core_steadiness.py --model MODEL` times")
    named = format_fidelity(verdict([over], 1.0, None, {"real_overrun_cause": cause | {"models": ["tiny-yolov2"]}}))
    assert named[-1].startswith("  control: `.venv/bin/python benchmarks/bench_core_steadiness.py --model tiny-yolov2`")
    stolen = format_fidelity(verdict([over], 1.0, None, {"real_overrun_cause": cause | {
        "core_slower": False, "stolen": True, "host_steal_pct_max": 8.25}}))
    assert stolen[-2].endswith("the hypervisor stole up to 8.25 % of its CPU (the host), not the run's doing")
    assert stolen[-1].startswith("  control: ")
    busier = format_fidelity(verdict([over], 1.0, None, {"real_overrun_cause": cause | {
        "core_slower": False, "stolen": False, "throughout": False, "waited": False, "other_cores": 0.6}}))
    assert busier[-2].startswith("  cause: in the 2 windows where real inference overran, it did not wait for its "
                                 "core (wait share 0.01) but the machine was busier (0.6 other cores busy against "
                                 "0.25): work on the other cores slowed its core"), busier
    assert not any("cause:" in x or "control:" in x for x in format_fidelity(verdict([over], 1.0, None, {
        "real_overrun_cause": cause | {"core_slower": False, "stolen": False, "waited": True}})))
    whole = cause | {"core_slower": False, "throughout": True, "waited": False, "other_cores_elsewhere": None}
    lines = format_fidelity(verdict([over], 1.0, None, {"real_overrun_cause": whole}))
    assert lines[-2].startswith("  cause: every monitor sample of the run fell over the 2 windows where real "
                                "inference overran; it did not wait for its core (wait share 0.01; 0.25 other cores "
                                "busy, up to 0 % stolen)"), lines
    assert lines[-2].endswith("one run cannot tell the host from the run's own work on the other cores")
    assert lines[-1].startswith("  control: ")
    assert not any("cause:" in x for x in format_fidelity(  # it waited for its core: the run may be the cause
        verdict([over], 1.0, None, {"real_overrun_cause": whole | {"waited": True}})))


def test_the_verdict_says_what_real_inferences_overrun_did_to_the_outcomes() -> None:
    over = Figure("real-inference overrun", "p95", 0.36, 0.25, "share of profile", True, 1.0, 11)
    effect = {"queries": 478, "made_late": 1, "made_ontime": 0, "judged": 7628, "success_pts": -0.013}
    lines = format_fidelity(verdict([over], 4.0, None, {"real_overrun_effect": effect}))
    assert lines[-1] == ("  its effect: of 478 queries real inference answered, 1 late that its profile's times would "
                         "have answered in time, 0 the other way: -0.01 points of success")
    within = Figure("real-inference overrun", "p95", 0.2, 0.25, "share of profile", True, None, 0)
    assert not any("effect" in x for x in format_fidelity(verdict([within], 4.0, None, {"real_overrun_effect": effect})))


def test_other_work_leaves_out_samples_before_t0_and_those_with_a_process_new_or_missing() -> None:
    from live.monitor_figures import other_work

    def one(t_ms: float, busy: float, **procs: float) -> dict:
        return {"t_ms": t_ms, "real_s": 1.0, "host_cores": busy,
                "procs": {f"{n} (1)": {"group": "x", "cores": c, "run_ms": 0.0, "wait_ms": 0.0} for n, c in procs.items()}}

    samples = [one(100.0, 1.5, a=0.5), one(350.0, 1.0, a=0.5), one(600.0, 1.0, a=0.5, b=0.2),
               one(850.0, 0.9, a=0.5, b=0.2), one(1100.0, 0.5), one(1350.0, 0.6, a=-0.1, b=0.2)]
    samples[-1]["procs"]["c (2@s)"] = {"group": "x", "cores": 5.0, "run_ms": 0.0, "wait_ms": 0.0}  # another server's
    t, cores = other_work(samples, 4.0)  # a sample covers 250 virtual ms: the first starts before t0
    assert t.tolist() == [350.0, 850.0] and cores == pytest.approx([0.5, 0.2])  # b new at 600; none read at 1100
    samples[-2] = one(1100.0, 0.5, a=0.1, b=0.1)
    t, cores = other_work(samples, 4.0)
    assert t.tolist() == [350.0, 850.0, 1100.0, 1350.0] and cores == pytest.approx([0.5, 0.2, 0.3, 0.4])


def test_a_run_judged_from_its_warm_up_leaves_out_what_came_before(tmp_path: Path) -> None:
    """A `--tdf auto` pilot's spec.json has `judged_from_s`: its streams start one after another until then, and
    the figures count from then on (a send lag, a relay, a decision window, a wire's late frames before it)."""
    (tmp_path / "trace.csv").write_text(TRACE)
    (tmp_path / "config.json").write_text(json.dumps({"tdf": 4.0, "workers": [], "time_dilation": {
        "factor": 4.0, "t0_real_epoch_s": 1000.0}}))
    rows = [{"stream_id": 1, "query": k, "t_send_ms": 100 * k + (40 if k == 5 else 1), "t_sched_ms": 100 * k + 46,
             "t_worker_ms": 100 * k + 46 + (6.0 if k in (3, 4) else 0.3)} for k in range(30)]
    write_records(tmp_path / "records.csv", rows)
    (tmp_path / "windows.csv").write_text("antenna,window,t_start_ms,t_end_ms,t_closed_ms\n"
                                          "ant1,0,0.0,1000.0,1090.0\nant1,1,1000.0,2000.0,2001.0\n")
    rows_s = [[s, 100, 0, 0, 0, 0, 0] for s in range(995, 1016)]
    rows_s[1001 - 995][2:6] = [50, 50, 50, 50]  # 50 frames 3 ms late at 1001 s real: virtual 0.25-0.5 s
    wire = {"late_p99_us": 3000.0, "tdf": 4.0, "late_steps_us": [250, 500, 1000, 2000, 5000], "sent_per_s": rows_s,
            "late_events_dropped": 0, "late_events": [[1001_000.0, 3000.0]] * 50}
    (tmp_path / "wire-a-b.stats.json").write_text(json.dumps([wire]))
    busy = {"real_s": 1.0, "host_cores": 2.0, "procs": {}, "host_steal_pct": 50.0}
    samples = [{**busy, "t_ms": 1100.0}, {**busy, "t_ms": 1300.0, "host_steal_pct": 1.0}]  # from 850 and 1050 ms
    (tmp_path / "monitor.jsonl").write_text("".join(json.dumps(x) + "\n" for x in samples))
    whole = judge(tmp_path)
    assert {v["invariant"] for v in whole["violations"]} == {"source send lag", "scheduler relay at its own site",
                                                            "decision-window lateness", "wire lateness vs due"}
    assert "judged_from_s" not in whole and whole["diagnostics"]["host_steal_pct_max"] == 50.0
    (tmp_path / "spec.json").write_text(json.dumps({"judged_from_s": 1.0}))
    fid = judge(tmp_path)
    assert fid["verdict"] == "faithful" and fid["judged_from_s"] == 1.0, fid["violations"]
    fig = {(f["invariant"], f["statistic"]): f for f in fid["figures"]}
    assert fig[("source send lag", "max")]["value"] == pytest.approx(1.0)  # queries 10-29 alone
    assert fig[("scheduler relay at its own site", "p99")]["value"] == pytest.approx(0.3)
    assert fig[("decision-window lateness", "max")]["value"] == 1.0  # the window from 1 s alone
    assert fig[("wire lateness vs due", "p99 (worst direction)")]["value"] == 0.25  # its late frames before 1 s
    assert fid["diagnostics"]["samples"] == 1 and fid["diagnostics"]["host_steal_pct_max"] == 1.0  # 850 ms: out
    assert format_fidelity(fid)[0].startswith("fidelity (K = 4, judged from 1 s): faithful")


def test_a_decision_window_is_judged_from_its_start_whatever_its_length(tmp_path: Path) -> None:
    """5 s windows: the first (0-5 s, closed 80 ms late) began before 1 s and is left out when judged from 1 s."""
    path = tmp_path / "windows.csv"
    path.write_text("antenna,window,t_start_ms,t_end_ms,t_closed_ms\nant1,0,0.0,5000.0,5080.0\n"
                    "ant1,1,5000.0,10000.0,10001.0\n")
    assert window_lateness(path, 50.0).value == 80.0
    judged = window_lateness(path, 50.0, from_ms=1000.0)
    assert judged.value == 1.0 and judged.first_window_s is None


def test_a_warm_up_ending_inside_a_window_leaves_that_wire_window_out(tmp_path: Path) -> None:
    """K 4, t0 at 1000 s real: the wire's late frames at 1005 s real fall in the virtual window 1-2 s. Judged from
    1 s that window counts; judged from 1.5 s (half of it warm-up) it does not."""
    (tmp_path / "trace.csv").write_text(TRACE)
    (tmp_path / "config.json").write_text(json.dumps({"tdf": 4.0, "workers": [], "time_dilation": {
        "factor": 4.0, "t0_real_epoch_s": 1000.0}}))
    write_records(tmp_path / "records.csv", [{"stream_id": 1, "query": k, "t_send_ms": 100 * k + 1} for k in range(30)])
    rows_s = [[s, 100, 0, 0, 0, 0, 0] for s in range(995, 1016)]
    rows_s[1005 - 995][2:6] = [50, 50, 50, 50]
    wire = {"late_p99_us": 3000.0, "tdf": 4.0, "late_steps_us": [250, 500, 1000, 2000, 5000], "sent_per_s": rows_s,
            "late_events_dropped": 0, "late_events": [[1005_000.0, 3000.0]] * 50}
    (tmp_path / "wire-a-b.stats.json").write_text(json.dumps([wire]))

    def wire_figure(from_s: float) -> dict:
        (tmp_path / "spec.json").write_text(json.dumps({"judged_from_s": from_s}))
        return next(f for f in judge(tmp_path)["figures"] if f["invariant"] == "wire lateness vs due")

    assert wire_figure(1.0)["first_window_s"] == 1.0 and wire_figure(1.0)["windows_over"] == 1
    assert wire_figure(1.5)["first_window_s"] is None and wire_figure(1.5)["windows_over"] == 0
