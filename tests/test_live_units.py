"""Parts of the live scheduler that need no network: its binding, load learning from reports, rebinding,
decision windows and ASET agents (its state on a manual clock; its service through an aiohttp test server
standing in for a worker)."""

from __future__ import annotations

import asyncio
import math
import time

import aiohttp
import pytest
from aiohttp import web
from aset_agents import constant_agent
from slow_worker import slow_worker

from live.antenna import AntennaScheduler, static_policy
from live.clock import ManualClock
from live.scheduler import create_app, window_loop
from live.spec import RunSpec
from live.windowlog import WindowsLog
from scheduler.core import POLICY_NAMES, StreamRequest, policy_index
from scheduler.profiles import INPUT_TIME, PROVISIONAL_PROFILE, load_profiles
from scheduler.system import build_system
from scheduler.window import stream_class
from topologies import load_topology

LI = policy_index("least-impedance")


@pytest.fixture(scope="module")
def tiny_input_time(tmp_path_factory):
    """tiny on the provisional profile with `load_accounting: input-time` and a 50 kB nominal frame."""
    import yaml

    doc = {**yaml.safe_load(PROVISIONAL_PROFILE.read_text()), "load_accounting": INPUT_TIME, "capacity_frame_kb": 50}
    path = tmp_path_factory.mktemp("profile") / "input-time.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return build_system(load_topology("tiny"), load_profiles(path))


def _live(system, workers=None) -> AntennaScheduler:
    names = {r.name: ("http://127.0.0.1:1", r.variant.model) for r in system.resources}
    return AntennaScheduler(
        system, "ant1", workers or names, static_policy(LI), LI, seed=0, t0_s=0.0, log=lambda _: None,
        clock=ManualClock(),
    )


async def _close_windows(live: AntennaScheduler, n: int, windows: WindowsLog | None = None) -> None:
    """Runs the service's window loop on the state's manual clock until `n` windows have closed."""
    task = asyncio.create_task(window_loop(live, windows))
    while live.window_index < n:
        await asyncio.sleep(0)
    task.cancel()


def test_binding_declares_load_and_a_dead_worker_rebinds_its_streams(tiny_system) -> None:
    _, _, system = tiny_system
    live = _live(system)
    a = live.bind(1, StreamRequest(0, fps=30, frame_bytes=30_000, max_delay_ms=300, min_accuracy=0.2))
    b = live.bind(2, StreamRequest(0, fps=20, frame_bytes=45_000, max_delay_ms=400, min_accuracy=0.2))
    names = [r.name for r in system.resources]
    assert names[a.resource] == "mobilenet-ssd-cpu-b1@ant1" and names[b.resource] == "tiny-yolov2-cpu-b4@dc1"
    assert live.load.load_qps.tolist() == [30.0, 20.0, 0.0]
    live.mark_down(b.resource, "test")
    assert live.load_estimate()[b.resource] == math.inf
    assert live.streams[2].resource == -1 and live.streams[2].reason == "capacity"
    assert live.load.load_qps.tolist() == [30.0, 0.0, 0.0]
    assert [e["event"] for e in live.events] == ["worker-down", "rebind"]
    live.release(1)
    assert live.load.load_qps.tolist() == [0.0, 0.0, 0.0] and 1 not in live.streams


def test_worker_reports_raise_the_load_estimate(tiny_system) -> None:
    _, _, system = tiny_system
    live = _live(system)
    w = live.workers[0]
    w.reported_qps = 40.0
    assert live.load_estimate()[0] == 40.0
    s = live.bind(1, StreamRequest(0, fps=10, frame_bytes=30_000, max_delay_ms=300, min_accuracy=0.2))
    assert system.resources[s.resource].site == "dc1"  # 40 + 10 > 45.5 q/s at ant1: reports count
    assert live.load_estimate()[1] == 10.0


def test_input_time_bindings_declare_eta_x_rho_and_reports_read_in_the_same_unit(tiny_input_time) -> None:
    """Under input-time accounting a binding declares the stream's eta x rho (as the simulator's LoadState), a
    release takes back the same; a worker's report of N queries/s and B bytes/s (every antenna's) reads as the
    sum of those queries' eta per second, so a report of exactly this scheduler's streams reads as their declared
    load; a report without a byte rate counts nominal frames; busy time gives the peak busy fraction."""
    system = tiny_input_time
    live = _live(system)
    a = live.bind(1, StreamRequest(0, fps=10, frame_bytes=30_000, max_delay_ms=300, min_accuracy=0.2))
    b = live.bind(2, StreamRequest(0, fps=20, frame_bytes=45_000, max_delay_ms=300, min_accuracy=0.2))
    j = a.resource
    assert b.resource == j and system.resources[j].name == "mobilenet-ssd-cpu-b1@ant1"
    v = system.resources[j].variant  # 22 ms compute, 8 ms/MB: nominal query 22.4 ms
    declared = 10 * (22 + 0.24) / 22.4 + 20 * (22 + 0.36) / 22.4
    assert live.load.load_qps[j] == pytest.approx(declared) and a.load_qps == pytest.approx(10 * v.eta(30_000))
    assert live.workers[j].declared_since_report_qps == pytest.approx(declared)
    live.apply_report(j, {"queries_in_per_s": 30.0, "bytes_in_per_s": 10 * 30_000 + 20 * 45_000,
                          "busy_ms_per_s": 600.0})
    w = live.workers[j]
    assert w.reported_qps == pytest.approx(declared) and w.declared_since_report_qps == 0.0
    assert live.load_estimate()[j] == pytest.approx(declared)
    live.apply_report(j, {"queries_in_per_s": 30.0, "busy_ms_per_s": 300.0})  # an older worker: no byte rate
    assert w.reported_qps == 30.0 and w.busy_fraction_peak == pytest.approx(0.6)
    assert live.statistics()["busy_fraction_peak"] == {"mobilenet-ssd-cpu-b1@ant1": 0.6}
    with pytest.raises(ValueError, match="rates must be finite"):
        live.apply_report(j, {"queries_in_per_s": 30.0, "bytes_in_per_s": float("inf")})
    assert w.reported_qps == 30.0
    live.release(1)
    live.release(2)
    assert live.load.load_qps[j] == pytest.approx(0.0, abs=1e-9) and live.load.streams[j] == 0


def test_a_workers_report_of_the_streams_bound_reads_as_the_simulators_declared_load(tiny_input_time) -> None:
    """End to end on one clock: the queries of two streams arrive at a worker's stats for 2 s; the report it
    gives a scheduler polling every second reads as exactly the load the simulator declares for those streams."""
    from workers.stats import WorkerStats

    system = tiny_input_time
    streams = ((10, 30_000), (20, 45_000))
    clock = ManualClock(monotonic_s=50.0)
    stats = WorkerStats("mobilenet-ssd", "mobilenet-ssd-cpu-b1", clock=clock.monotonic_s)
    for k in range(40):  # 2 s of 20 ticks of 50 ms; stream 1 sends on every other tick
        clock.advance(0.05)
        for i, (fps, nbytes) in enumerate(streams):
            if fps == 20 or k % 2 == 0:
                stats.on_arrival(f"s{i}", 1, nbytes)
    clock.advance(0.025)  # the report's last second holds 20 ticks, none on its edge
    live = _live(system)
    j = 0
    live.apply_report(j, stats.load_report(queue_len=0, queue_limit=16, window_s=1.0))
    want = sum(system.stream_load(j, fps, nbytes) for fps, nbytes in streams)
    assert live.workers[j].reported_qps == pytest.approx(want)


def test_the_chooser_sets_each_windows_policy(tiny_system) -> None:
    _, _, system = tiny_system
    seen = []

    def chooser(window) -> int:
        seen.append(window)
        return policy_index("load-balancing")

    clock = ManualClock(now_s=100.0, monotonic_s=7.0)
    live = AntennaScheduler(system, "ant1", {}, chooser, LI, seed=0, t0_s=100.0, window_s=0.01, log=lambda _: None,
                            clock=clock)
    live.count("ontime", 0, 1000)
    live.count_sent(StreamRequest(0, fps=30, frame_bytes=1, max_delay_ms=200, min_accuracy=0))
    asyncio.run(_close_windows(live, 3))
    assert POLICY_NAMES[live.policy] == "load-balancing"
    assert [w.duration_s for w in seen] == pytest.approx([0.01] * 3)
    assert [w.t_start_s for w in seen] == pytest.approx([0.0, 0.01, 0.02])
    assert seen[0].ontime == 1 and seen[0].bytes_in[0] == 1000 and seen[1].ontime == 0
    # budget 200 ms: bin 1 of (100, 300); 30 fps: bin 2 of (12, 22); 3 rate bins per budget bin
    assert (
        seen[0].sent_per_class.tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 0] and seen[1].sent_per_class.sum() == 0
    )


def test_relay_through_a_stand_in_worker(tiny_system) -> None:
    _, _, system = tiny_system

    async def frames(request: web.Request) -> web.Response:
        body = await request.read()
        if not body.endswith(b"\xff\xd9"):
            return web.json_response({"error": "bad_frame", "t_arrival_ms": 1000.0}, status=400)
        return web.json_response(
            {"t_arrival_ms": 1000.0, "t_infer_start_ms": 1001.0, "t_infer_end_ms": 1011.0, "batch_size": 1}
        )

    async def load(request: web.Request) -> web.Response:
        return web.json_response({"queries_in_per_s": 7.0})

    async def scenario() -> list:
        worker = web.Application()
        worker.add_routes([web.post("/v2/models/{name}/frames", frames), web.get("/v2/load", load)])
        wr = web.AppRunner(worker)
        await wr.setup()
        site = web.TCPSite(wr, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        live = AntennaScheduler(
            system,
            "ant1",
            {system.resources[0].name: (f"http://127.0.0.1:{port}", "m")},
            static_policy(LI),
            LI,
            seed=0,
            t0_s=0.0,
            log=lambda _: None,
        )
        # the worker's clock 250 ms ahead of the scheduler's (another server): its times come back on the scheduler's
        sr = web.AppRunner(create_app(live, poll_interval_s=0.05, worker_clock_ms={0: 250.0}))
        await sr.setup()
        ssite = web.TCPSite(sr, "127.0.0.1", 0)
        await ssite.start()
        url = f"http://127.0.0.1:{ssite._server.sockets[0].getsockname()[1]}"
        out = []
        async with aiohttp.ClientSession() as s:
            await asyncio.sleep(0.2)  # a load report or two
            out.append(live.workers[0].reported_qps)
            body = {"stream_id": 5, "fps": 10, "frame_bytes": 1000, "max_delay_ms": 1e6, "min_accuracy": 0.2}
            async with s.post(f"{url}/streams", json=body) as r:
                out.append(await r.json())
            for frame in (b"\xff\xd8 good \xff\xd9", b"\xff\xd8 cut"):
                async with s.post(
                    f"{url}/streams/5/frames",
                    data=frame,
                    params={"query": "0"},
                    headers={"X-Send-Ms": str(time.time() * 1000.0)},
                ) as r:
                    out.append(await r.json())
            await wr.cleanup()  # the worker dies
            async with s.post(
                f"{url}/streams/5/frames", data=b"\xff\xd8\xff\xd9", params={"query": "1"}
            ) as r:
                out.append(await r.json())
            async with s.post(f"{url}/streams/77/frames", data=b"x") as r:
                out.append(r.status)
        await sr.cleanup()
        out.append(live.statistics())
        return out

    reported, opened, good, bad, dead, unknown, stats = asyncio.run(scenario())
    assert reported == 7.0
    assert opened["cluster"] == "ant1" and opened["variant"] == "mobilenet-ssd-cpu-b1"
    assert good["ok"] and good["t_worker_ms"] == 750.0 and good["t_infer_end_ms"] == 761.0
    assert not bad["ok"] and bad["reason"] == "bad-frame"
    assert not dead["ok"] and dead["reason"] == "worker-down"
    assert unknown == 404
    assert stats["queries"] == {"ontime": 1, "failed": 0, "rejected": 2}
    assert stats["workers_down"] == ["mobilenet-ssd-cpu-b1@ant1"] and stats["overhead_us"]["n"] == 3


def test_a_worker_slower_than_the_query_timeout_fails_the_frame_and_stays_up(tiny_system) -> None:
    """The relay waits for a worker at most the run's query timeout: the frame fails as `timeout` and the
    worker, slow but alive, keeps its streams (without a timeout aiohttp waited 300 s, then marked it down)."""
    _, _, system = tiny_system

    async def scenario() -> tuple[dict, dict]:
        wr = web.AppRunner(slow_worker(2.0))
        await wr.setup()
        site = web.TCPSite(wr, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        live = AntennaScheduler(system, "ant1", {system.resources[0].name: (f"http://127.0.0.1:{port}", "m")},
                                static_policy(LI), LI, seed=0, t0_s=0.0, log=lambda _: None)
        sr = web.AppRunner(create_app(live, poll_interval_s=0.05, relay_timeout_s=0.3))
        await sr.setup()
        ssite = web.TCPSite(sr, "127.0.0.1", 0)
        await ssite.start()
        url = f"http://127.0.0.1:{ssite._server.sockets[0].getsockname()[1]}"
        async with aiohttp.ClientSession() as s:
            body = {"stream_id": 5, "fps": 10, "frame_bytes": 1000, "max_delay_ms": 1e6, "min_accuracy": 0.2}
            async with s.post(f"{url}/streams", json=body) as r:
                await r.json()
            async with s.post(f"{url}/streams/5/frames", data=b"\xff\xd8\xff\xd9", params={"query": "0"}) as r:
                answer = await r.json()
        await sr.cleanup()
        await wr.cleanup()
        return answer, live.statistics()

    answer, stats = asyncio.run(scenario())
    assert not answer["ok"] and answer["reason"] == "timeout" and answer["cluster"] == "ant1"
    assert stats["queries"] == {"ontime": 0, "failed": 1, "rejected": 0} and stats["workers_down"] == []


def test_an_aset_agent_file_picks_the_policy_of_each_window(tiny_system, tmp_path) -> None:
    from live.orchestrate import LiveRun
    from live.scheduler import choose_policy
    from scheduler.aset.meta import AgentMismatchError
    from scheduler.core import check_policy

    _, _, system = tiny_system
    agent = constant_agent(tmp_path / "agent.onnx", system, "load-balancing", window_s=0.05)
    assert check_policy(None, agent, "closest") == check_policy("aset", agent, "closest") == "aset"
    assert check_policy(None, None, default="closest") == "closest"
    with pytest.raises(ValueError, match="--policy aset needs --agent"):
        check_policy("aset", None, "closest")
    with pytest.raises(ValueError, match="use --policy aset"):
        check_policy("closest", agent, "closest")
    choice = choose_policy(system, "aset", agent, 1.0)
    chooser, first, window_s = choice.chooser, choice.first, choice.window_s
    assert POLICY_NAMES[first] == "load-balancing" and window_s == 0.05
    live = AntennaScheduler(
        system,
        "ant1",
        {},
        chooser,
        policy_index("closest"),
        seed=0,
        t0_s=0.0,
        window_s=window_s,
        log=lambda _: None,
        clock=ManualClock(),
    )
    asyncio.run(_close_windows(live, 3, WindowsLog(tmp_path / "w.csv", choice.controller)))
    assert POLICY_NAMES[live.policy] == "load-balancing"
    import json

    from scheduler.aset.state import StateSpec

    rows = (tmp_path / "w.csv").read_text().splitlines()[1:]
    states = [json.loads(line) for line in (tmp_path / "w.state.jsonl").read_text().splitlines()]
    assert len(rows) == len(states) >= 1 and rows[0].split(",")[4] == "closest"  # the first window's policy
    assert all(r.split(",")[4] == "load-balancing" for r in rows[1:])
    assert [s["window"] for s in states] == [int(r.split(",")[1]) for r in rows]
    assert {len(s["features"]) for s in states} == {StateSpec.of(system, history=2).n_features}
    assert {s["greedy"] for s in states} == {"load-balancing"}
    other = constant_agent(tmp_path / "other.onnx", system, "closest", topology="full-edge")
    with pytest.raises(AgentMismatchError, match="cannot drive topology 'tiny'"):
        LiveRun(RunSpec(topo="tiny", agent=other, out=tmp_path / "run"), log=lambda _: None)
    assert not (tmp_path / "run").exists()


def test_window_measurement_in_the_simulators_terms(tiny_system, tmp_path) -> None:
    """Per resource from the workers' reports (every antenna's traffic), arrivals scaled to all antennas,
    queries of streams rejected at binding counted though never sent, and one log row per window."""
    import csv

    from live.windowlog import WINDOW_COLUMNS

    _, _, system = tiny_system
    names = {r.name: ("http://127.0.0.1:1", r.variant.model) for r in system.resources}
    clock = ManualClock(now_s=1_700_000_000.0, monotonic_s=5000.0)
    t0 = clock.now_s() - 10.0
    live = AntennaScheduler(system, "ant1", names, static_policy(LI), LI, seed=0, t0_s=t0, window_s=5.0,
                            log=lambda _: None, arrival_scale=4, clock=clock)
    windows = WindowsLog(tmp_path / "w.csv")
    live.window_start_s = t0
    a = live.bind(1, StreamRequest(0, fps=30, frame_bytes=30_000, max_delay_ms=300, min_accuracy=0.2))
    w = live.workers[a.resource]
    w.reported_at_s, w.reported_qps, w.streams_bound = clock.monotonic_s(), 50.0, 3
    w.served_total, w.bytes_total = 100.0, 1e6  # as a poll leaves it
    w.since_report.clear()
    live.count("ontime", a.resource, 30_000)
    rej = StreamRequest(0, fps=10, frame_bytes=60_000, max_delay_ms=1000, min_accuracy=0.5)
    live.rejected.opened(9, rej, t0 + 1.0)  # opened 1 s into the window: 40 queries by its end
    closed = live.close_window(t0 + 5.0)
    windows.write(closed)
    m, j = closed.measurement, a.resource
    assert m.duration_s == 5.0 and live.window_index == 1
    assert m.streams[j] == 3 and m.load_qps[j] == 50.0  # the worker's view: every antenna's streams
    # first window: the worker's totals grew from zero at t0, 10 s before its report: 10 answers/s, 0.1 MB/s
    assert m.responses[j] == pytest.approx(10.0 * 5, rel=0.01) and m.bytes_in[j] == pytest.approx(1e5 * 5, rel=0.01)
    assert m.responses[1 - j] == 0 and m.bytes_in[1 - j] == 0  # no report: own counts
    assert m.ontime == 4 and m.rejected == 4 * 40  # this antenna's counts x 4 antennas
    k = stream_class(rej.max_delay_ms, rej.fps)
    assert m.sent_per_class[k] == 4 * 40 and m.sent_per_class.sum() == 4 * 40
    w.reported_at_s += 2.0  # a later report: 60 answers and 0.6 MB more in 2 s
    w.served_total, w.bytes_total = 160.0, 1.6e6
    live.close_stream(9)  # closed at once (t0 + 10 s): its queries up to now, 51 more
    closed = live.close_window(t0 + 10.0)
    windows.write(closed)
    m = closed.measurement
    assert m.responses[j] == pytest.approx(30.0 * 5) and m.bytes_in[j] == pytest.approx(3e5 * 5)
    assert m.rejected == 4 * 51 and not live.rejected  # its queries at 5.0, 5.1, ..., 10.0 s: the close counts the last
    rows = list(csv.DictReader((tmp_path / "w.csv").open()))
    assert tuple(rows[0]) == WINDOW_COLUMNS and [r["window"] for r in rows] == ["0", "1"]
    assert [r["policy"] for r in rows] == ["least-impedance"] * 2
    assert rows[0]["decide_us"] == rows[0]["decide_cpu_us"] == ""  # window 0: chosen before the run
    assert float(rows[1]["decide_us"]) > 0 and float(rows[1]["decide_cpu_us"]) > 0
    assert rows[0]["t_start_ms"] == "0.0" and rows[1]["t_end_ms"] == "10000.0"
    assert rows[1]["t_closed_ms"] == "10000.0"  # the clock's time at the close (the monitor's window lateness)
    assert int(rows[0]["sent"]) == 40 and int(rows[0]["rejected"]) == 40 and int(rows[0]["streams_all"]) == 3
    assert live.statistics()["windows"]["policies"] == {"least-impedance": 2}


def test_load_reports_and_their_failures_move_a_worker_down_and_up(tiny_system) -> None:
    """Slow is not dead (5 timeouts in a row), refused twice is; garbage changes nothing; a report revives."""
    _, _, system = tiny_system
    live = _live(system)
    live.clock.advance(3.0)  # type: ignore[attr-defined]
    live.apply_report(0, {"queries_in_per_s": 12.5, "streams_bound": 2, "totals": {"served": 40, "bytes_in": 4e5}})
    w = live.workers[0]
    assert (w.reported_qps, w.reported_at_s, w.streams_bound, w.served_total, w.bytes_total) == (12.5, 3.0, 2, 40, 4e5)
    for garbage in ([], {"streams_bound": 1}, {"queries_in_per_s": "lots"}):
        with pytest.raises((ValueError, KeyError)):
            live.apply_report(0, garbage)
    assert w.reported_qps == 12.5 and w.streams_bound == 2
    for _ in range(4):
        live.report_failed(0, TimeoutError(), timed_out=True)
    assert w.up
    live.report_failed(0, TimeoutError(), timed_out=True)
    assert not w.up and live.load_estimate()[0] == math.inf
    live.apply_report(0, {"queries_in_per_s": 1.0})
    assert w.up and w.failures == 0
    live.report_failed(1, ConnectionError(), timed_out=False)
    assert live.workers[1].up
    live.report_failed(1, ConnectionError(), timed_out=False)
    assert not live.workers[1].up
    assert [e["event"] for e in live.events] == ["worker-down", "worker-up", "worker-down"]
