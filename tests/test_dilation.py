"""Time dilation on the live side and in the workers, without a network: the dilated run clock against
hand-computed values (an injected real time), the timeouts, batching delay, profile sleeps and real-inference
padding x K, decision windows at t0 + k T virtual, load reports per virtual second, and --tdf passed through."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer
from slow_worker import slow_worker
from worker_profile import write_worker_profile

import workers.engine as engine
from live.antenna import AntennaScheduler, static_policy
from live.clock import REAL_CLOCK, DilatedClock, time_dilation_record
from live.scheduler import CLIENT, create_app, window_loop
from live.source import Records, Source
from scheduler.core import policy_index
from topologies.timescale import TimeScale
from workers.deployment import WorkerSettings, resolve
from workers.engine import Outcome, ProfileProcessor, Query, pad_dilated
from workers.service import ENGINE
from workers.service import create_app as worker_app
from workers.stats import WorkerStats, virtual_monotonic
from workload.trace import read_trace

LI = policy_index("least-impedance")
A = 1_000_000.0
"""The anchor of the hand-computed cases (epoch s)."""


class FakeReal:
    """An injected real time: epoch and monotonic seconds that move only by the sleeps asked of it."""

    def __init__(self, epoch_s: float, monotonic_s: float = 500.0) -> None:
        self.epoch_s, self.mono_s, self.slept = epoch_s, monotonic_s, []

    def time(self) -> float:
        return self.epoch_s

    def monotonic(self) -> float:
        return self.mono_s

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.epoch_s += seconds
        self.mono_s += seconds
        await asyncio.sleep(0)

    def clock(self, k: float, anchor_s: float = A) -> DilatedClock:
        return DilatedClock(TimeScale(k, anchor_s), self.time, self.monotonic, self.sleep)


def test_the_dilated_clock_reads_virtual_time_and_sleeps_k_times_longer() -> None:
    real = FakeReal(A + 100.0, monotonic_s=40.0)
    clock = real.clock(4.0)
    assert clock.now_s() == A + 25.0  # A + 100 / 4
    assert clock.monotonic_s() == 10.0
    assert clock.real_until_s(A + 30.0) == 20.0  # virtual A + 30 is real A + 120
    asyncio.run(clock.sleep_until(A + 30.0))
    assert real.slept == [20.0] and clock.now_s() == A + 30.0
    asyncio.run(clock.sleep_until(A + 29.0))  # past: no wait
    asyncio.run(clock.sleep(2.5))
    assert real.slept == [20.0, 0.0, 10.0] and clock.now_s() == A + 32.5
    record = time_dilation_record(clock.scale, A + 40.0)
    assert abs(record.pop("wall_step_s")) < 1.0  # the machine's wall clock against the run's: unstepped here
    assert record == {"factor": 4.0, "anchor_epoch_s": A, "t0_virtual_epoch_s": A + 40.0, "t0_real_epoch_s": A + 160.0}
    # K = 1 is the identity: the real clock reads the machine's time unchanged
    assert REAL_CLOCK.scale == TimeScale() and abs(REAL_CLOCK.now_s() - time.time()) < 1.0


def test_windows_close_at_t0_plus_k_windows_of_virtual_time(tiny_system) -> None:
    """The window loop sleeps K x T of real time per window and closes window k at t0 + (k + 1) T virtual."""
    _, _, system = tiny_system
    real = FakeReal(A + 40.0)
    clock = real.clock(4.0)  # virtual now A + 10
    t0 = A + 10.25
    live = AntennaScheduler(system, "ant1", {}, static_policy(LI), LI, seed=0, t0_s=t0, window_s=0.5,
                            log=lambda _: None, clock=clock)
    closed = []

    class Log:
        def write(self, window) -> None:
            closed.append(window)

    async def scenario() -> None:
        task = asyncio.create_task(window_loop(live, Log()))  # type: ignore[arg-type]
        while len(closed) < 3:
            await asyncio.sleep(0)
        task.cancel()

    asyncio.run(scenario())
    assert [w.t_end_ms for w in closed] == [500.0, 1000.0, 1500.0]  # ms after t0, virtual
    assert real.slept[1:3] == [2.0, 2.0]  # each further window: 0.5 s virtual = 2 s real
    assert real.slept[0] == pytest.approx(4 * (t0 + 0.5 - (A + 10.0)))


def test_sources_and_the_relay_wait_k_times_the_query_timeout(tiny_system, tmp_path) -> None:
    trace_file = tmp_path / "trace.csv"
    trace_file.write_text("stream_id,antenna,start_s,duration_s,app,fps,frame_bytes,max_delay_ms,min_accuracy,task\n"
                          "1,ant1,0,1,video-analytics,10,20000,1000,0.2,object-detection\n")
    real = FakeReal(A + 400.0)
    source = Source(read_trace(trace_file), "http://x", A + 90.0, 1.0, Records(None), 5.0,  # type: ignore[arg-type]
                    clock=real.clock(4.0))
    assert source.timeout.total == 20.0
    assert source.now_ms() == 10_000.0  # virtual A + 100 is 10 s after t0
    _, _, system = tiny_system
    live = AntennaScheduler(system, "ant1", {}, static_policy(LI), LI, seed=0, t0_s=0.0, log=lambda _: None,
                            clock=real.clock(4.0))
    assert create_app(live, relay_timeout_s=5.0)[CLIENT].relay_timeout.total == 20.0


def test_a_worker_slower_than_the_timeout_in_real_time_answers_within_it_in_virtual_time(tiny_system) -> None:
    """A worker answering after 0.6 s of real time, against a relay timeout of 0.3 s: at K = 4 (1.2 s real) the
    frame is answered; at K = 1 it fails as timeout."""
    _, _, system = tiny_system

    async def scenario(k: float) -> dict:
        async with TestServer(slow_worker(0.6)) as ws:
            url = f"http://127.0.0.1:{ws.port}"
            live = AntennaScheduler(system, "ant1", {system.resources[0].name: (url, "m")}, static_policy(LI), LI,
                                    seed=0, t0_s=0.0, log=lambda _: None, clock=DilatedClock(TimeScale(k, time.time())))
            async with TestClient(TestServer(create_app(live, poll_interval_s=0.05, relay_timeout_s=0.3))) as c:
                body = {"stream_id": 5, "fps": 10, "frame_bytes": 1000, "max_delay_ms": 1e6, "min_accuracy": 0.2}
                await (await c.post("/streams", json=body)).json()
                r = await c.post("/streams/5/frames", data=b"\xff\xd8\xff\xd9", params={"query": "0"})
                return await r.json()

    assert asyncio.run(scenario(1.0))["reason"] == "timeout"
    answer = asyncio.run(scenario(4.0))
    assert answer["reason"] != "timeout" and answer["cluster"] == "ant1"


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """The seconds each replica asked `sleep_precise` for (answered at once)."""
    asked: list[float] = []

    async def sleep(seconds: float) -> None:
        asked.append(seconds)

    monkeypatch.setattr(engine, "sleep_precise", sleep)
    return asked


def test_a_profile_driven_batch_sleeps_k_times_its_profile(tmp_path, sleeps) -> None:
    from scheduler.profiles import read_profile

    runtime = read_profile(write_worker_profile(tmp_path / "p.yaml", "m", {1: 40.0, 2: 60.0})).runtime("m", "cpu")
    jpeg = b"\xff\xd8" + b"\x00" * 100 + b"\xff\xd9"
    batch = [Query("s", str(i), jpeg, None, 0.0, 0) for i in range(2)]
    scale = TimeScale(4.0, time.time() - 1000.0)
    outcomes = asyncio.run(ProfileProcessor(runtime, scale).run(batch))
    assert sleeps == [pytest.approx(0.240)]  # 4 x 60 ms
    start = outcomes[0].t_infer_start_ms / 1000.0
    assert abs(start - scale.virtual_s(time.time())) < 5.0  # virtual: 750 s behind the real epoch
    asyncio.run(ProfileProcessor(runtime).run(batch[:1]))
    assert sleeps[1] == pytest.approx(0.040)  # K = 1: the profile itself


def test_a_real_batch_is_padded_to_k_times_its_measured_time(sleeps) -> None:
    """Hand-computed: a batch that ran 10 ms of real time from real epoch A + 8 s, at K = 4 and anchor A: the
    replica sleeps 30 ms more; the outcome starts at virtual A + 2 s and lasts its measured 10 ms."""
    ran = Outcome((), None, (A + 8.0) * 1000.0, (A + 8.0) * 1000.0 + 10.0, 1, 3.0, 7.0)
    [out] = asyncio.run(pad_dilated([ran], 0.010, TimeScale(4.0, A)))
    assert sleeps == [pytest.approx(0.030)]
    assert out.t_infer_start_ms == (A + 2.0) * 1000.0 and out.t_infer_end_ms == (A + 2.0) * 1000.0 + 10.0
    assert (out.input_ms, out.compute_ms, out.batch_size) == (3.0, 7.0, 1)


def test_a_real_onnx_replica_stays_busy_k_times_its_batch(sleeps, astronaut_jpeg) -> None:
    """tiny-yolov2 in ONNX Runtime at K = 4: the replica asks to sleep 3 x the batch's measured time after it,
    and the outcome starts at a virtual time and lasts what the batch measured."""
    from workers.engine import OnnxProcessor
    from workers.modelconfig import load_model

    scale = TimeScale(4.0, time.time() - 1000.0)
    replica = OnnxProcessor(load_model("tiny-yolov2"), "cpu", 1, scale)
    try:
        [out] = asyncio.run(replica.run([Query("s", "1", astronaut_jpeg, None, 0.0, 0)]))
    finally:
        replica.close()
    measured_s = (out.t_infer_end_ms - out.t_infer_start_ms) / 1000.0
    assert out.error is None and measured_s >= (out.input_ms + out.compute_ms) / 1000.0
    assert len(sleeps) == 1 and sleeps[0] >= 3 * measured_s * 0.99  # the pad spans the thread hand-off too
    assert abs(out.t_infer_start_ms / 1000.0 - scale.virtual_s(time.time())) < 5.0


def test_a_dilated_worker_batches_over_k_times_w_and_reports_virtual_times(tmp_path, sleeps, astronaut_jpeg) -> None:
    profile = write_worker_profile(tmp_path / "p.yaml", "tiny-yolov2", {1: 40.0, 4: 100.0})
    scale = TimeScale(4.0, time.time() - 1000.0)
    settings = WorkerSettings("tiny-yolov2", max_batch_delay_ms=5.0, profile_driven=profile, time_scale=scale)

    async def main() -> tuple[dict, dict, str, float]:
        app = worker_app(resolve(settings))
        async with TestClient(TestServer(app)) as client:
            await asyncio.wait_for(app[ENGINE].ready.wait(), 60)
            delay = app[ENGINE].batcher.max_batch_delay_s
            r = await client.post("/v2/models/tiny-yolov2/frames", data=astronaut_jpeg,
                                  params={"stream": "s", "query": "1"}, headers={"Content-Type": "image/jpeg"})
            answer = await r.json()
            report = await (await client.get("/v2/load")).json()
            page = await (await client.get("/metrics")).text()
            return answer, report, page, delay

    answer, report, page, delay = asyncio.run(main())
    assert delay == pytest.approx(0.020)  # W = 5 ms virtual, 20 ms real
    # The batch of one closes W = 5 virtual ms after its arrival and the replica sleeps until its nominal end,
    # 4 x 40 ms after that close: less the real time it took to wake from the W and take the batch.
    assert answer["t_infer_start_ms"] - answer["t_arrival_ms"] == pytest.approx(5.0, abs=1e-3)
    assert len(sleeps) == 1 and sleeps[0] <= 0.160
    assert report["max_batch_delay_ms"] == 5.0  # the deployment keeps the virtual W
    virtual_now_ms = scale.virtual_s(time.time()) * 1000.0
    for t in (answer["t_arrival_ms"], answer["t_infer_start_ms"], report["time_ms"]):
        assert abs(t - virtual_now_ms) < 5000.0  # 750 s behind the real epoch
    [gauge] = [line for line in page.splitlines() if line.startswith("worker_time_dilation_factor{")]
    assert gauge.endswith(" 4.0")


def test_load_report_rates_are_per_virtual_second(monkeypatch) -> None:
    """Four arrivals one real second apart, reported 0.9 real s after the last over a 1 s window: at K = 4 they
    all fall in the last virtual second (4 q/s); at K = 1 only the last one does (1 q/s)."""
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    for k, rate in ((4.0, 4.0), (1.0, 1.0)):
        stats = WorkerStats("m", "v", clock=virtual_monotonic(TimeScale(k)))
        for t in (1000.0, 1001.0, 1002.0, 1003.0):
            now[0] = t
            stats.on_arrival("s")
        now[0] = 1003.9
        assert stats.load_report(0, 10, window_s=1.0)["queries_in_per_s"] == rate


def test_tdf_options_reach_the_spec_and_the_workers(tmp_path) -> None:
    import argparse

    from live.plan import WorkerPlan, worker_argv
    from live.spec import RunSpec, add_run_arguments, spec_from_args
    from workers.serve import add_worker_arguments, limits_from_args, settings_from_args

    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    spec = spec_from_args(parser.parse_args(["--topo", "tiny", "--tdf", "4"]))
    assert spec.tdf == 4.0 and spec.time_scale == TimeScale(4.0, 0.0)
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--tdf", "0.5"])
    assert exit_.value.code == 2
    plan = WorkerPlan(resource="r", site="s", model="m", device="cpu", batch=1, replicas=1, real=False, port=9,
                      queue_limit=16)
    argv = worker_argv(plan, "10.0.0.1", "p.yaml", RunSpec(tdf=4.0, tdf_anchor_s=123.5))
    assert argv[argv.index("--tdf") + 1] == "4.0" and argv[argv.index("--tdf-anchor-s") + 1] == "123.5"
    assert "--tdf" not in worker_argv(plan, "10.0.0.1", "p.yaml", RunSpec())
    wp = argparse.ArgumentParser()
    add_worker_arguments(wp)
    args = wp.parse_args(["--model", "m", "--tdf", "4.0", "--tdf-anchor-s", "123.5"])
    assert settings_from_args(args).time_scale == TimeScale(4.0, 123.5)
    limits = limits_from_args(args)
    assert (limits.header_timeout_s, limits.body_timeout_s) == (40.0, 120.0)  # 10 s and 30 s virtual
