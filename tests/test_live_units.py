"""Parts of the live run that need no network: JPEG sizing, the worker plan, the live scheduler's binding,
load learning, rebinding and decision windows (its state on a manual clock; its service through an aiohttp
test server standing in for a worker)."""

from __future__ import annotations

import asyncio
import io
import math
import time
from dataclasses import replace

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from aset_agents import constant_agent
from PIL import Image

from live.antenna import AntennaScheduler, static_policy
from live.clock import ManualClock
from live.plan import busiest_cpu_cluster, choose_real_site, plan_workers, smallest_cluster
from live.scheduler import create_app, window_loop
from live.source import JpegSizer, corrupt, pad_jpeg
from live.spec import RunSpec
from live.windowlog import WindowsLog
from scheduler.core import POLICY_NAMES, StreamRequest, policy_index
from scheduler.profiles import INPUT_TIME, PROVISIONAL_PROFILE, load_profiles
from scheduler.system import build_system
from scheduler.window import stream_class
from testbed.capture import choose_hosts
from testbed.plan import build_plan
from topologies import load_topology

LI = policy_index("least-impedance")


@pytest.fixture(scope="module")
def tiny_system():
    """tiny on the provisional profile, rate accounting: the figures below are worked out on it."""
    topo = load_topology("tiny")
    profiles = load_profiles(PROVISIONAL_PROFILE)
    assert profiles.load_accounting == "rate"
    return topo, profiles, build_system(topo, profiles)


@pytest.fixture(scope="module")
def tiny_input_time(tmp_path_factory):
    """tiny on the provisional profile with `load_accounting: input-time` and a 50 kB nominal frame."""
    import yaml

    doc = {**yaml.safe_load(PROVISIONAL_PROFILE.read_text()), "load_accounting": INPUT_TIME, "capacity_frame_kb": 50}
    path = tmp_path_factory.mktemp("profile") / "input-time.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return build_system(load_topology("tiny"), load_profiles(path))


@pytest.mark.parametrize("nbytes", [20_000, 33_333, 65_539, 65_540, 65_541, 80_000, 200_001])
def test_frames_are_valid_jpegs_of_the_exact_size(nbytes: int) -> None:
    sizer = JpegSizer()
    frame = sizer.frame(nbytes)
    assert len(frame) == nbytes
    img = Image.open(io.BytesIO(frame))
    img.load()
    assert img.format == "JPEG" and min(img.size) >= 160
    assert frame.rstrip(b"\x00").endswith(b"\xff\xd9")
    assert not corrupt(frame).endswith(b"\xff\xd9")


def test_padding_keeps_the_image_and_never_shrinks() -> None:
    sizer = JpegSizer()
    base = sizer.frame(sizer.min_bytes)
    padded = pad_jpeg(base, len(base) + 1000)
    a, b = (np.asarray(Image.open(io.BytesIO(x)).convert("RGB")) for x in (base, padded))
    assert len(padded) == len(base) + 1000 and np.array_equal(a, b)
    assert pad_jpeg(base, 10) == base


def test_worker_plan_real_only_on_cpu_variants_of_chosen_sites(tiny_system) -> None:
    topo, profiles, system = tiny_system
    assert smallest_cluster(topo, profiles, system) == "ant1"
    plans = plan_workers(system, ("dc1",), RunSpec())
    real = {p.resource for p in plans if p.real}
    assert real == {"tiny-yolov2-cpu-b4@dc1"}
    dc1 = next(p for p in plans if p.site == "dc1")
    assert dc1.queue_limit == 16 * 4 * 1 and dc1.batch == 4
    with pytest.raises(ValueError, match="'mars' is not a cluster"):
        plan_workers(system, ("mars",), RunSpec())
    full = build_system(load_topology("full-edge"), profiles)
    gpu_real = [
        p for p in plan_workers(full, ("cloud",), RunSpec()) if p.device == "gpu" and p.site == "cloud"
    ]
    assert (
        gpu_real and not any(p.real for p in gpu_real) and all("profile-driven" in p.note for p in gpu_real)
    )


def test_real_workers_take_only_the_cores_real_inference_has(tiny_system) -> None:
    """full-edge's ant1: tiny-yolov2-cpu-b1 (1 replica) and mobilenet-ssd-cpu-b1 (2 replicas); a real
    replica runs one thread, one core."""
    _, profiles, _ = tiny_system
    full = build_system(load_topology("full-edge"), profiles)
    ssd, tiny = "mobilenet-ssd-cpu-b1@ant1", "tiny-yolov2-cpu-b1@ant1"

    def real(cores: float, queries: dict[str, int] | None = None) -> set[str]:
        return {p.resource for p in plan_workers(full, ("ant1",), RunSpec(), queries, cores) if p.real}

    assert real(1.0, {ssd: 500, tiny: 100}) == {tiny}  # the SSD's two replicas do not fit in one core
    assert real(2.0, {ssd: 500, tiny: 100}) == {ssd}  # the busier first
    assert real(2.0, {ssd: 100, tiny: 500}) == {tiny}
    assert real(3.0) == {ssd, tiny}
    assert real(0.5) == set()
    note = next(p.note for p in plan_workers(full, ("ant1",), RunSpec(), None, 1.0) if p.resource == ssd)
    assert note == "2 replica(s) need 2 core(s); real inference has 1, 1 taken"


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
        sr = web.AppRunner(create_app(live, poll_interval_s=0.05))
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
    assert good["ok"] and good["t_worker_ms"] == 1000.0 and good["t_infer_end_ms"] == 1011.0
    assert not bad["ok"] and bad["reason"] == "bad-frame"
    assert not dead["ok"] and dead["reason"] == "worker-down"
    assert unknown == 404
    assert stats["queries"] == {"ontime": 1, "failed": 0, "rejected": 2}
    assert stats["workers_down"] == ["mobilenet-ssd-cpu-b1@ant1"] and stats["overhead_us"]["n"] == 3


def test_default_real_site_is_where_the_policy_sends_cpu_work() -> None:
    system = build_system(load_topology("full-edge"), load_profiles("provisional"))  # worked out on these figures
    trace, duration_s = RunSpec().workload().build(system.antennas)
    site, per_resource = busiest_cpu_cluster(system, trace, "closest", duration_s, 1, 1.0)
    assert site is not None and system.topology.site(site).layer == "antenna"

    # closest gives no dry-run query to a variant that fits in the one core (ant sites' SSDs have two
    # replicas), so the choice falls back to the antenna with the most CPU-variant queries
    fits = {r.name for r in system.resources if r.variant.device == "cpu" and r.replicas == 1}
    assert fits and not any(per_resource.get(name, 0) for name in fits)
    assert site == max(system.antennas, key=lambda a: sum(
        n for r, n in per_resource.items() if r.endswith(f"@{a}") and "-cpu-" in r))
    # with the provisional profiles least-impedance prefers the GPU variants of CO and DC: no CPU work
    assert busiest_cpu_cluster(system, trace, "least-impedance", duration_s, 1, 1.0)[0] is None


def test_the_real_site_is_where_real_inference_would_carry_the_most_queries() -> None:
    system = build_system(load_topology("full-edge"), load_profiles())
    ssd, tiny = "mobilenet-ssd-cpu-b1@{}", "tiny-yolov2-cpu-b1@{}"
    queries = {ssd.format("ant1"): 900, tiny.format("ant1"): 10, ssd.format("ant2"): 100, tiny.format("ant2"): 300}
    assert choose_real_site(system, queries, 1.0) == "ant2"  # only tiny-yolov2 (1 replica) fits: 300 > 10
    assert choose_real_site(system, queries, 2.0) == "ant1"  # the SSD's two replicas fit: 900 > 300
    assert choose_real_site(system, {ssd.format("ant3"): 5}, 1.0) == "ant3"  # nothing fits: most CPU queries
    assert choose_real_site(system, {"tiny-yolov2-gpu-b8@cloud": 50}, 1.0) is None


def test_pcap_host_selection() -> None:
    hosts = build_plan(load_topology("tiny"), "x").hosts
    assert choose_hosts(hosts, "default") == ["worker-ant1", "sources-ant1", "worker-dc1", "worker-cloud"]
    assert choose_hosts(hosts, "none") == [] and len(choose_hosts(hosts, "all")) == 5
    assert choose_hosts(hosts, "scheduler-ant1, worker-dc1") == ["scheduler-ant1", "worker-dc1"]
    with pytest.raises(ValueError, match="--pcap: unknown host 'worker-mars'"):
        choose_hosts(hosts, "worker-mars")


def test_a_bad_mtu_is_refused_before_anything(tmp_path) -> None:
    from live.orchestrate import LiveRun

    with pytest.raises(ValueError, match="mtu 9 is not an integer from 68 to 65535"):
        LiveRun(RunSpec(topo="tiny", mtu=9, real_sites=(), out=tmp_path / "run"), log=lambda _: None)
    assert not (tmp_path / "run").exists()


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
    w.served_total, w.bytes_total, w.declared_since_report_qps = 100.0, 1e6, 0.0  # as a poll leaves it
    live.count("ontime", a.resource, 30_000)
    rej = StreamRequest(0, fps=10, frame_bytes=60_000, max_delay_ms=1000, min_accuracy=0.5)
    live.open_rejected(9, rej)
    live.rejected_open[9].opened_s = t0 + 1.0  # opened 1 s into the window: 40 queries by its end
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
    live.close_rejected(9)  # closed at once (t0 + 10 s): its queries up to now, 51 more
    closed = live.close_window(t0 + 10.0)
    windows.write(closed)
    m = closed.measurement
    assert m.responses[j] == pytest.approx(30.0 * 5) and m.bytes_in[j] == pytest.approx(3e5 * 5)
    assert m.rejected == 4 * 51 and not live.rejected_open  # its queries at 5.0, 5.1, ..., 10.0 s: the close counts the last
    rows = list(csv.DictReader((tmp_path / "w.csv").open()))
    assert tuple(rows[0]) == WINDOW_COLUMNS and [r["window"] for r in rows] == ["0", "1"]
    assert [r["policy"] for r in rows] == ["least-impedance"] * 2
    assert rows[0]["decide_us"] == rows[0]["decide_cpu_us"] == ""  # window 0: chosen before the run
    assert float(rows[1]["decide_us"]) > 0 and float(rows[1]["decide_cpu_us"]) > 0
    assert rows[0]["t_start_ms"] == "0.0" and rows[1]["t_end_ms"] == "10000.0"
    assert int(rows[0]["sent"]) == 40 and int(rows[0]["rejected"]) == 40 and int(rows[0]["streams_all"]) == 3
    assert live.statistics()["windows"]["policies"] == {"least-impedance": 2}


def test_the_real_workers_models_are_timed_here_and_the_run_decides_with_those_figures(tmp_path) -> None:
    """Real ONNX at dc1 (tiny-yolov2-cpu-b4): its CPU entry in the run's profile is what this host
    measured; every other entry, the profile's capacity_frame_kb and load_accounting and the resources stay as
    given; config.json records both figures."""
    import json

    import yaml

    from live.orchestrate import LiveRun
    from scheduler.profiles import PROVISIONAL_PROFILE, read_profile
    from workers import zoo

    given = tmp_path / "given.yaml"
    given.write_text(yaml.safe_dump({**yaml.safe_load(PROVISIONAL_PROFILE.read_text()), "capacity_frame_kb": 60,
                                     "load_accounting": "input-time"}, sort_keys=False))
    zoo.build(names=["tiny-yolov2"], log=lambda _: None)  # cached: a no-op once setup built the zoo
    run = LiveRun(RunSpec(topo="tiny", profiles=given, real_sites=("dc1",), pcap="none",
                             out=tmp_path / "run"), log=lambda _: None)
    resources = [r.name for r in run.system.resources]
    run.profile_real_workers()
    run.write_inputs()
    assert run.profiles.source == str(tmp_path / "run" / "profiles.yaml")
    assert sorted(r.name for r in run.system.resources) == sorted(resources)  # tiny's deployments are fixed
    assert [p.resource for p in run.workers_plan] == [r.name for r in run.system.resources]
    (timed,) = run.profiled
    # tiny's dc1 runs batch 4; the provisional entry also has 2 and 8, timed too so no variant is lost
    assert timed.model == "tiny-yolov2" and sorted(timed.measured_ms) == [1, 2, 4, 8]
    nominal, merged = read_profile(given), read_profile(tmp_path / "run" / "profiles.yaml")
    assert merged.capacity_frame_kb == 60 and run.profiles.capacity_frame_kb == 60
    assert merged.load_accounting == run.profiles.load_accounting == "input-time"
    entry = merged.runtime("tiny-yolov2", "cpu")
    assert entry.batch_latency_ms == timed.measured_ms and entry.threads == 1
    assert 0 < entry.batch_latency_ms[1] <= entry.batch_latency_ms[4] and "measured on CPU" in entry.source
    assert entry.cpu_cores == nominal.runtime("tiny-yolov2", "cpu").cpu_cores
    assert [rt for rt in merged.runtimes if (rt.model, rt.device) != ("tiny-yolov2", "cpu")] == [
        rt for rt in nominal.runtimes if (rt.model, rt.device) != ("tiny-yolov2", "cpu")]
    variant = next(r.variant for r in run.system.resources if r.name == "tiny-yolov2-cpu-b4@dc1")
    assert variant.batch_ms[4] == pytest.approx(timed.measured_ms[4], abs=1e-3)  # the schedulers' figure
    assert variant.capacity_input_ms == pytest.approx(entry.input_ms_per_mb * 0.06) and variant.capacity_input_ms > 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["profiles_file"] == run.profiles.source
    assert config["profiled_real_workers"][0]["profile_ms"]["4"] == nominal.runtime("tiny-yolov2", "cpu").batch_latency_ms[4]


def test_the_given_profile_is_kept_when_asked_or_with_an_agent(tiny_system, tmp_path) -> None:
    from live.orchestrate import LiveRun
    from scheduler.profiles import PROVISIONAL_PROFILE

    _, _, system = tiny_system
    agent = constant_agent(tmp_path / "agent.onnx", system, "closest")
    for i, config in enumerate((
        RunSpec(topo="tiny", profiles=PROVISIONAL_PROFILE, real_sites=("dc1",), profile_real_workers=False),
        RunSpec(topo="tiny", profiles=PROVISIONAL_PROFILE, real_sites=("dc1",), agent=agent),
    )):
        logged: list[str] = []
        run = LiveRun(replace(config, out=tmp_path / f"run{i}"), log=logged.append)
        run.profile_real_workers()
        assert run.profiles.source == str(PROVISIONAL_PROFILE) and run.profiled == []
        assert not (tmp_path / f"run{i}" / "profiles.yaml").exists()
        assert (config.agent is None) or any("agent's state is defined by" in line for line in logged)


def test_a_model_that_cannot_be_timed_is_named(tmp_path, monkeypatch) -> None:
    from live import realprofile
    from scheduler.profiles import PROVISIONAL_PROFILE

    def broken(*_args, **_kwargs):
        raise OSError("models/tiny-yolov2/model.onnx: no such file")

    monkeypatch.setattr(realprofile, "profile_runtime", broken)
    with pytest.raises(RuntimeError, match="timing tiny-yolov2 for its real worker failed: .*no such file"):
        realprofile.measure_real_models(PROVISIONAL_PROFILE, {"tiny-yolov2": (1,)}, tmp_path / "p.yaml")
    assert not (tmp_path / "p.yaml").exists()
    with pytest.raises(KeyError, match="no runtime profile for model 'nope'"):
        realprofile.measure_real_models(PROVISIONAL_PROFILE, {"nope": (1,)}, tmp_path / "p.yaml")


def test_the_run_spec_is_the_command_line() -> None:
    """Every RunSpec option comes from its field (help: its docstring); the workload's from workload.args."""
    import argparse
    import dataclasses

    from live.options import field_docs, options
    from live.spec import add_run_arguments, spec_from_args

    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    assert spec_from_args(parser.parse_args([])) == RunSpec()
    spec = spec_from_args(parser.parse_args([
        "--topo", "tiny", "--policy", "load-balancing", "--real-workers", "none", "--kill-worker", "w@dc1=3",
        "--kill-worker", "v@dc1=4.5", "--no-measure", "--window", "2", "--lambda", "0:20,10:60", "--timeout", "7",
        "--no-profile-real-workers", "--load-poll", "1"]))
    assert spec == dataclasses.replace(
        RunSpec(), topo="tiny", policy="load-balancing", real_sites=(), kill_worker=(("w@dc1", 3.0), ("v@dc1", 4.5)),
        measure_links=False, window_s=2.0, lambda_per_min="0:20,10:60", timeout_s=7.0, profile_real_workers=False,
        load_poll_s=1.0)
    assert spec_from_args(parser.parse_args(["--real-workers", "ant1, dc1"])).real_sites == ("ant1", "dc1")
    assert spec_from_args(parser.parse_args(["--trace", "t.csv"])).duration_s is None  # the whole trace
    docs = field_docs(RunSpec)
    assert all(docs.get(f.name) for f, o in options(RunSpec) if not o.external)
    assert "seconds between each scheduler's polls" in parser.format_help()
    for bad, message in ((["--policy", "fastest"], "unknown policy 'fastest'"), (["--lambda", "lots"], "lambda 'lots'"),
                         (["--policy", "aset"], "--policy aset needs --agent")):
        with pytest.raises(ValueError, match=message):
            spec_from_args(parser.parse_args(bad))


def test_agent_is_the_file_or_the_folder_train_writes(tmp_path) -> None:
    import argparse

    from live.spec import add_run_arguments, spec_from_args
    from training.evaluate import AgentFile

    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    out = tmp_path / "full-edge"  # as `train --out agents/full-edge` leaves it
    out.mkdir()
    (out / "agent.onnx").write_bytes(b"onnx")
    for given in (out, out / "agent.onnx", out / "agent.pt"):
        spec = spec_from_args(parser.parse_args(["--agent", str(given)]))
        assert spec.agent == out / "agent.onnx" and spec.effective_policy == "aset"
        assert AgentFile.read(str(given)).path == str(spec.agent)  # one resolver: what `evaluate --agent` takes
    with pytest.raises(ValueError, match=r"--agent .*empty: no ONNX agent there"):
        spec_from_args(parser.parse_args(["--agent", str(tmp_path / "empty")]))


def test_a_child_reads_the_spec_and_refuses_a_malformed_one_in_one_line(tmp_path) -> None:
    import subprocess
    import sys

    from live.spec import SpecError, read_spec, write_spec

    spec = RunSpec(topo="tiny", agent=tmp_path / "a.onnx", kill_worker=(("w@dc1", 3.0),), real_sites=("dc1",))
    write_spec(spec, tmp_path / "spec.json")
    assert read_spec(tmp_path / "spec.json") == spec
    text = (tmp_path / "spec.json").read_text()
    headroom = '"capacity_headroom": 1.0'
    for broken, message in ((text.replace(headroom, '"capacity_headroom": "fast"'),
                             r"spec.json: capacity_headroom: 'fast' is not a number"),
                            (text.replace(headroom, headroom + ', "speed": 2'), r"spec.json: speed: unknown key"),
                            (text.replace('"mtu": 9000', '"mtu": "9000"'), r"spec.json: mtu: '9000' is not a whole number"),
                            (text[:20], r"spec.json: \(top level\): invalid JSON: EOF while parsing")):
        (tmp_path / "spec.json").write_text(broken)
        with pytest.raises(SpecError, match=message):
            read_spec(tmp_path / "spec.json")
        for module in ("live.scheduler", "live.source"):
            r = subprocess.run([sys.executable, "-m", module, "--spec", str(tmp_path / "spec.json"), "--antenna", "ant1"],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
            assert str(tmp_path / "spec.json") in r.stderr


def test_the_run_dir_says_where_every_child_finds_its_files(tmp_path) -> None:
    import json

    from live.rundir import RunDir

    run = RunDir(tmp_path)
    assert run.windows_log("ant1") == tmp_path / "windows" / "ant1.csv"
    assert run.scheduler_stats("ant1", 2) == tmp_path / "schedulers" / "ant1.2.json"
    assert run.log("scheduler", "ant1", 1) == tmp_path / "logs" / "scheduler-ant1.1.log"
    with pytest.raises(ValueError, match="network.json: no address for host scheduler-ant1"):
        run.host_address("scheduler", "ant1")
    run.network.write_text(json.dumps({"hosts": [{"name": "scheduler-ant1", "ip": "10.0.0.3"}]}))
    assert run.scheduler_url("ant1") == "http://10.0.0.3:7000"
    with pytest.raises(ValueError, match="no host sources-ant9"):
        run.host_address("sources", "ant9")


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


def test_run_options_help_says_what_each_flag_does() -> None:
    import argparse

    from live.spec import add_run_arguments

    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    actions = {a.dest: a for a in parser._actions}
    assert actions["measure_links"].help.startswith("skip measuring the links")  # the flag turns it off
    assert actions["profile_real_workers"].help.startswith("decide with --profiles as given")
    assert {actions[d].metavar for d in ("timeout_s", "window_s", "load_poll_s")} == {"SECONDS"}
    assert all(") (" not in (a.help or "") for a in parser._actions), "a help with two parentheses in a row"
