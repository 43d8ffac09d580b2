"""The capacity constraint across antennas: a worker's ledger of declared load (workers/reservations.py), its
routes on a real profile-driven worker, and two live schedulers that bind on their own sharing one worker
(live/scheduler.py `admit`): the second is refused what the first took, binds elsewhere, and gets it once the
first stream closes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from worker_profile import write_worker_profile

from live.antenna import AntennaScheduler, static_policy
from live.scheduler import CLIENT, create_app
from live.workerstate import WorkerState
from scheduler.core import policy_index
from workers.deployment import WorkerSettings, resolve
from workers.reservations import Reservations
from workers.service import ENGINE
from workers.service import create_app as worker_app

CLOSEST = policy_index("closest")


def test_the_ledger_grants_what_fits_and_forgets_idle_streams() -> None:
    book = Reservations(idle_s=10.0)
    assert book.reserve("a", 6.0, 6.0, 10.0, now_s=0.0).granted
    refused = book.reserve("b", 5.0, 5.0, 10.0, now_s=1.0)
    assert not refused.granted and refused.declared_qps == 6.0 and "b" not in book.streams
    assert book.reserve("b", 4.0, 4.0, 10.0, now_s=1.0).declared_qps == 10.0  # exactly full fits
    assert not book.reserve("c", 1.0, 1.2, 10.0, now_s=1.0).granted  # a headroom is checked, not declared
    assert book.reserve("a", 2.0, 2.0, 10.0, now_s=2.0).declared_qps == 6.0  # a re-opening replaces its load
    book.seen("a", 11.5)
    assert book.declared_qps(12.0) == 2.0  # b idle since 1.0: gone; a sent a frame at 11.5
    assert book.release("a") and not book.release("a") and book.declared_qps(12.0) == 0.0
    with pytest.raises(ValueError, match="stream 'x'"):
        book.reserve("x", -1.0, 1.0, 10.0, now_s=0.0)
    book.reserve("p", 1.0, 1.0, 10.0, now_s=12.0, owner="ant1")
    book.reserve("q", 2.0, 2.0, 10.0, now_s=12.0, owner="ant1")
    book.reserve("r", 3.0, 3.0, 10.0, now_s=12.0, owner="ant2")
    assert book.release_owner("ant1") == 2 and list(book.streams) == ["r"]  # ant1's scheduler started afresh


def test_a_workers_routes_and_load_report(tmp_path: Path) -> None:
    settings = WorkerSettings(model="tiny-yolov2", profile_driven=write_worker_profile(
        tmp_path / "p.yaml", "tiny-yolov2", {1: 10.0}))

    async def scenario() -> list:
        app = worker_app(resolve(settings))
        async with TestClient(TestServer(app)) as c:
            await asyncio.wait_for(app[ENGINE].ready.wait(), 60)
            out = []
            for sid, load in (("1", 30.0), ("2", 80.0)):
                r = await c.put(f"/v2/streams/{sid}", json={"load_qps": load, "check_qps": load, "capacity_qps": 100})
                out.append(await r.json())
            out.append((await (await c.get("/v2/load")).json())["declared_qps"])
            out.append((await c.put("/v2/streams/3", json={"load_qps": "x"})).status)
            out.append(await (await c.delete("/v2/streams/1")).json())
            out.append((await (await c.get("/v2/load")).json())["declared_qps"])
            await c.put("/v2/streams/4", json={"load_qps": 5, "check_qps": 5, "capacity_qps": 100, "owner": "ant2"})
            out.append(await (await c.delete("/v2/streams", params={"owner": "ant2"})).json())
            out.append((await c.delete("/v2/streams")).status)
            return out

    one, two, declared, bad, released, after, by_owner, no_owner = asyncio.run(scenario())
    epoch = one.pop("ledger_epoch")
    assert two.pop("ledger_epoch") == epoch and isinstance(epoch, str) and len(epoch) == 27
    assert one == {"granted": True, "declared_qps": 30.0, "ledger_version": 1}
    assert two == {"granted": False, "declared_qps": 30.0, "ledger_version": 1}
    assert declared == 30.0 and bad == 400 and released == {"released": True} and after == 0.0
    assert by_owner == {"released": 1} and no_owner == 400


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]


async def _worker_and_two_schedulers(system, settings: WorkerSettings, watch: bool = False) -> tuple:
    """Starts a real worker (the antenna's resource; no other worker answers) and schedulers A and B of ant1,
    polling 100 s apart, watching the worker's ledger or not; returns (worker runner, worker url, runners, urls,
    schedulers, clients)."""
    wapp = worker_app(resolve(settings))
    wr, wurl = await _serve(wapp)
    await asyncio.wait_for(wapp[ENGINE].ready.wait(), 60)
    workers = {r.name: ("http://127.0.0.1:1", r.variant.model) for r in system.resources}  # none answers
    workers[system.resources[0].name] = (wurl, "tiny-yolov2")
    runners, urls, lives, clients = [], [], [], []
    for _ in "AB":
        live = AntennaScheduler(system, "ant1", workers, static_policy(CLOSEST), CLOSEST, seed=0, t0_s=0.0,
                                log=lambda _: None)
        app = create_app(live, poll_interval_s=100.0, watch=watch)
        runner, url = await _serve(app)
        runners.append(runner)
        urls.append(url)
        lives.append(live)
        clients.append(app[CLIENT])
    return wr, wurl, runners, urls, lives, clients


async def _answered(clients: list) -> None:
    """Returns once every reservation and release the schedulers' clients sent has its answer."""
    while any(c.pending for c in clients):
        await asyncio.gather(*(t for c in clients for t in c.pending))


def test_two_schedulers_sharing_a_worker_keep_its_capacity(tiny_system, tmp_path: Path) -> None:
    """Schedulers A and B (no load report between them: polls 100 s apart) both find the antenna's worker
    closest. A's stream takes 60 % of its capacity; B's stream of 60 % is refused there and bound again (on tiny
    nothing else takes it: rejected); once A's stream closes and B has polled the worker, B's next one is granted
    there."""
    _, _, system = tiny_system
    capacity = float(system.capacity_qps[0])
    fps = 0.6 * capacity  # rate accounting: a stream's load is its frame rate
    settings = WorkerSettings(model="tiny-yolov2", profile_driven=write_worker_profile(
        tmp_path / "p.yaml", "tiny-yolov2", {1: 10.0}))

    async def scenario() -> tuple[list, AntennaScheduler]:
        wr, wurl, runners, urls, lives, clients = await _worker_and_two_schedulers(system, settings)

        body = {"fps": fps, "frame_bytes": 1000, "max_delay_ms": 1e6, "min_accuracy": 0.0}
        out = []
        async with aiohttp.ClientSession() as s:
            for url, sid in ((urls[0], 1), (urls[1], 2)):
                async with s.post(f"{url}/streams", json={"stream_id": sid, **body}) as r:
                    out.append(await r.json())  # bound as decided; the reservation follows
            await _answered(clients)
            out.append(lives[1].streams[2].resource)
            async with s.delete(f"{urls[0]}/streams/1"):
                pass
            await _answered(clients)  # the release reached the worker
            async with s.get(f"{wurl}/v2/load") as r:  # B's next poll, made now
                lives[1].apply_report(0, await r.json())
            async with s.post(f"{urls[1]}/streams", json={"stream_id": 3, **body}) as r:
                out.append(await r.json())
            await _answered(clients)
            out.append(lives[1].streams[3].resource)
        for runner in (*runners, wr):
            await runner.cleanup()
        return out, lives[1]

    (a, b, b_moved_to, b_later, b_later_at), live_b = asyncio.run(scenario())
    antenna_worker = system.resources[0]
    for opened in (a, b, b_later):  # each scheduler first decides alone: the antenna's worker
        assert (opened["cluster"], opened["variant"]) == (antenna_worker.site, antenna_worker.variant.name)
    assert b_moved_to != 0 and b_later_at == 0  # refused there (bound elsewhere or rejected); later granted
    assert live_b.workers[0].declared_qps == pytest.approx(fps)  # the grant: its own stream, A's gone
    assert live_b.workers[0].ledger[1] == 3  # type: ignore[index]  # A's grant, A's release, B's grant
    refused = [e for e in live_b.events if e["event"] == "reservation-refused"]
    assert [(e["stream"], e["at"]) for e in refused] == [(2, antenna_worker.name)]
    assert refused[0]["declared_qps"] == pytest.approx(fps, abs=1e-3)  # what A had declared there


def test_a_frame_answer_brings_the_ledger_without_a_poll(tiny_system, tmp_path: Path) -> None:
    """Schedulers A and B share the antenna's worker and never poll it (100 s apart). A's stream takes 60 % of its
    capacity, B's small stream 10 %; B's second stream of 60 % is refused there (rejected on tiny). A's stream
    closes; B relays one frame of its small stream, and the worker's answer carries its ledger (A's stream gone):
    B's next stream of 60 % is bound there and granted. Without the ledger in the answer B would still count A's
    stream and reject it without asking (the worker's measured rate is not what a ledger worker is judged by)."""
    _, _, system = tiny_system
    capacity = float(system.capacity_qps[0])
    settings = WorkerSettings(model="tiny-yolov2", profile_driven=write_worker_profile(
        tmp_path / "p.yaml", "tiny-yolov2", {1: 10.0}))
    jpeg = b"\xff\xd8" + bytes(100) + b"\xff\xd9"

    async def scenario() -> tuple[list, AntennaScheduler]:
        wr, wurl, runners, urls, lives, clients = await _worker_and_two_schedulers(system, settings)


        def body(share: float) -> dict:
            return {"fps": share * capacity, "frame_bytes": 1000, "max_delay_ms": 1e6, "min_accuracy": 0.0}
        out = []
        async with aiohttp.ClientSession() as s:
            for url, sid, share in ((urls[0], 1, 0.6), (urls[1], 5, 0.1), (urls[1], 2, 0.6)):
                async with s.post(f"{url}/streams", json={"stream_id": sid, **body(share)}):
                    pass
                await _answered(clients)
            out.append(lives[1].streams[2].resource)  # refused there, rejected
            async with s.delete(f"{urls[0]}/streams/1"):
                pass
            await _answered(clients)  # the release reached the worker
            async with s.post(f"{urls[1]}/streams/5/frames", data=jpeg, params={"query": "0"},
                              headers={"Content-Type": "image/jpeg", "X-Send-Ms": "0"}) as r:
                out.append((await r.json())["ok"])
            async with s.post(f"{urls[1]}/streams", json={"stream_id": 3, **body(0.6)}) as r:
                out.append(await r.json())
            await _answered(clients)
            out.append(lives[1].streams[3].resource)
        for runner in (*runners, wr):
            await runner.cleanup()
        return out, lives[1]

    (refused_to, frame_ok, opened, granted_at), live_b = asyncio.run(scenario())
    assert refused_to == -1 and frame_ok
    assert opened["cluster"] == system.resources[0].site and granted_at == 0
    assert live_b.workers[0].declared_qps == pytest.approx(0.7 * capacity)  # B's two streams, A's gone
    assert not [e for e in live_b.events if e["event"] == "reservation-refused" and e["stream"] == 3]


def test_a_ledger_watch_is_held_until_the_ledger_changes(tmp_path: Path) -> None:
    """GET /v2/ledger on a real worker: at once without a version or with another one; held while the ledger
    stays at the version given, answered when a reservation changes it, or unchanged after wait_s; bad
    parameters are a 400; a watch held when the worker stops is answered then, not after its wait_s (60 s)."""
    settings = WorkerSettings(model="tiny-yolov2", profile_driven=write_worker_profile(
        tmp_path / "p.yaml", "tiny-yolov2", {1: 10.0}))

    async def scenario() -> list:
        app = worker_app(resolve(settings))
        runner, url = await _serve(app)
        await asyncio.wait_for(app[ENGINE].ready.wait(), 60)
        out = []
        async with aiohttp.ClientSession() as s:
            async def watch(**params: str) -> dict:
                async with s.get(f"{url}/v2/ledger", params=params) as r:
                    return await r.json() if r.status == 200 else {"status": r.status}

            first = await asyncio.wait_for(watch(), 5)  # at once, not after the default wait_s (10)
            at = {"epoch": first["ledger_epoch"], "version": str(first["ledger_version"])}
            held = asyncio.create_task(watch(**at, wait_s="30"))
            await asyncio.sleep(0.3)
            out += [first, held.done()]
            async with s.put(f"{url}/v2/streams/7", json={"load_qps": 30, "check_qps": 30, "capacity_qps": 100}):
                pass
            changed = await asyncio.wait_for(held, 10)
            out += [changed, await asyncio.wait_for(watch(**at, wait_s="30"), 5)]  # an older version: at once
            out.append(await watch(epoch=at["epoch"], version=str(changed["ledger_version"]), wait_s="0.2"))
            out += [await watch(wait_s="0"), await watch(wait_s="61"), await watch(version="x")]
            stopping = asyncio.create_task(watch(epoch=at["epoch"], version=str(changed["ledger_version"]),
                                                 wait_s="60"))
            await asyncio.sleep(0.3)
            await asyncio.wait_for(runner.cleanup(), 20)
            out.append(await asyncio.wait_for(stopping, 5))
        return out

    first, held_done, changed, older, unchanged, bad0, bad61, badv, stopped = asyncio.run(scenario())
    assert first["ledger_version"] == 0 and first["declared_qps"] == 0.0 and not held_done
    assert changed["ledger_version"] == 1 and changed["declared_qps"] == 30.0
    assert older == changed and unchanged == changed and stopped == changed
    assert bad0 == bad61 == badv == {"status": 400}


def test_a_watching_scheduler_learns_a_departure_without_a_poll_or_a_frame(tiny_system, tmp_path: Path) -> None:
    """Schedulers A and B share the antenna's worker, never poll it (100 s apart) and watch its ledger. A's
    stream takes 60 % of its capacity: B learns it from the watch alone (its own stream there is refused without
    B ever asking for it). A's stream closes: B learns that too, and its next stream of 60 % is bound there and
    granted. Without the watch (the test above) B needed a frame answer from the worker to learn it."""
    _, _, system = tiny_system
    capacity = float(system.capacity_qps[0])
    settings = WorkerSettings(model="tiny-yolov2", profile_driven=write_worker_profile(
        tmp_path / "p.yaml", "tiny-yolov2", {1: 10.0}))

    async def until(cond, what: str) -> None:
        for _ in range(500):
            if cond():
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"not within 5 s: {what}")

    async def scenario() -> tuple[list, AntennaScheduler]:
        wr, wurl, runners, urls, lives, clients = await _worker_and_two_schedulers(system, settings, watch=True)
        w_b = lives[1].workers[0]
        await until(lambda: w_b.ledger is not None, "B watches the worker")


        body = {"fps": 0.6 * capacity, "frame_bytes": 1000, "max_delay_ms": 1e6, "min_accuracy": 0.0}
        out = []
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{urls[0]}/streams", json={"stream_id": 1, **body}):
                pass
            await _answered(clients)
            await until(lambda: w_b.declared_qps > 0, "B learns A's stream")
            async with s.post(f"{urls[1]}/streams", json={"stream_id": 2, **body}) as r:
                out.append(await r.json())  # decided knowing A's stream: rejected without asking the worker
            async with s.delete(f"{urls[0]}/streams/1"):
                pass
            await _answered(clients)
            await until(lambda: w_b.declared_qps == 0, "B learns that A's stream left")
            async with s.post(f"{urls[1]}/streams", json={"stream_id": 3, **body}) as r:
                out.append(await r.json())
            await _answered(clients)
            out.append(lives[1].streams[3].resource)
        for runner in (*runners, wr):
            await runner.cleanup()
        return out, lives[1]

    (rejected, opened, granted_at), live_b = asyncio.run(scenario())
    assert rejected == {"stream_id": 2, "rejected": "capacity"}
    assert opened["cluster"] == system.resources[0].site and granted_at == 0
    assert live_b.workers[0].declared_qps == pytest.approx(0.6 * capacity)  # B's stream, granted
    assert not [e for e in live_b.events if e["event"] == "reservation-refused"]
    assert live_b.statistics()["ledger_watch_answers"] >= 4  # the first, A's grant and release, B's grant


def test_reservations_on_their_way_count_until_answered() -> None:
    """Streams 1 and 2 (10 each) reserved at once on a worker where others declared 60: the grant of 1 (70
    declared) keeps 2 counted until its own answer; a refusal counts nothing of its stream."""
    w = WorkerState("http://w", "m", declared_qps=60.0)
    w.pending.update({1: 10.0, 2: 10.0})
    assert w.learnt_qps() == 80.0
    w.take_answer(1, 70.0)
    assert w.learnt_qps() == 80.0  # 70 declared, 2's 10 on its way
    w.take_answer(2, 70.0)  # refused: 70 declared without it
    assert w.learnt_qps() == 70.0 and w.pending == {}
    w.reported_qps, w.since_report[4] = 75.0, 10.0  # measured above declared, own binding since
    assert w.learnt_qps() == 85.0
    w.forget(4)  # stream 4 closed (or refused and bound elsewhere): it no longer counts here
    assert w.learnt_qps() == 75.0
    with pytest.raises(ValueError, match="declared_qps"):
        w.take_answer(3, float("inf"))


def test_a_worker_with_a_ledger_is_judged_by_it_not_by_its_measured_rate() -> None:
    """The measured rate (averaged over the report's window) still counts a stream that ended; a ledger does not.
    A frame answer's ledger is taken like a report's, in version order, and garbage leaves the state as it was."""
    w = WorkerState("http://w", "m", reported_qps=90.0)
    w.take_ledger({"declared_qps": 40.0, "ledger_epoch": "e", "ledger_version": 4})
    w.pending[1] = 5.0
    assert w.learnt_qps() == 45.0  # the ledger and own reservation on its way, not the 90 measured
    w.take_ledger({"declared_qps": 70.0, "ledger_epoch": "e", "ledger_version": 3})  # an older answer, late
    assert w.declared_qps == 40.0
    for garbage in ({"declared_qps": float("nan")}, {"declared_qps": "x"}, {}):
        with pytest.raises((ValueError, TypeError, KeyError)):
            w.take_ledger(garbage)
    assert (w.declared_qps, w.ledger) == (40.0, ("e", 4))
    w.unreserved[3] = 7.0  # bound here, its reservation unanswered: in no ledger
    assert w.learnt_qps() == 52.0
    w.forget(3)
    assert w.learnt_qps() == 45.0
    assert WorkerState("http://w", "m", reported_qps=90.0, declared_qps=40.0).learnt_qps() == 90.0  # no ledger


def test_an_answer_and_a_report_that_overtake_each_other_keep_the_later_ledger() -> None:
    """The ledger's version orders what the worker said: a report read before a grant (version 3) that arrives
    after the grant's answer (version 2) does not undo the grant; a restarted worker's ledger (a later epoch) is
    taken whatever its version, and a late answer of its earlier life is not; a worker that gives no version is
    taken as it comes; an answer with garbage for a version still ends its reservation's wait."""
    book = Reservations()
    assert book.reserve("a", 10.0, 10.0, 100.0, 0.0).version == 1
    report = {"queries_in_per_s": 0.0, "declared_qps": book.declared_qps(0.0), "ledger_epoch": book.ledger.epoch,
              "ledger_version": book.ledger.version}  # read now, delivered late
    grant = book.reserve("b", 20.0, 20.0, 100.0, 0.0)
    assert grant.granted and grant.version == 2 and grant.declared_qps == 30.0
    refused = book.reserve("c", 90.0, 90.0, 100.0, 0.0)
    assert not refused.granted and refused.version == 2  # nothing changed in the ledger
    assert book.release("a") and book.ledger.version == 3 and not book.release("a") and book.ledger.version == 3

    variant = None  # reports without a byte rate: their queries count as they are
    w = WorkerState("http://w", "m")
    w.pending[2] = 20.0
    w.take_answer(2, grant.declared_qps, {"ledger_epoch": book.ledger.epoch, "ledger_version": grant.version})
    w.take_report(report, variant, 1, 1.0)
    assert w.declared_qps == 30.0 and w.ledger == (book.ledger.epoch, 2)  # the late report's 10 is not taken
    w.take_report({**report, "ledger_version": 3, "declared_qps": 20.0}, variant, 1, 2.0)
    assert w.declared_qps == 20.0 and w.ledger == (book.ledger.epoch, 3)
    later = Reservations().ledger.epoch
    assert later > book.ledger.epoch
    w.take_report({**report, "ledger_epoch": later, "ledger_version": 0, "declared_qps": 0.0}, variant, 1, 3.0)
    assert w.declared_qps == 0.0 and w.ledger == (later, 0)
    w.take_answer(9, 80.0, {"ledger_epoch": book.ledger.epoch, "ledger_version": 57})  # the earlier life's, late
    assert w.declared_qps == 0.0 and w.ledger == (later, 0)
    w.take_report({"queries_in_per_s": 0.0, "declared_qps": 5.0}, variant, 1, 4.0)
    assert w.declared_qps == 5.0 and w.ledger is None
    with pytest.raises(ValueError):
        w.take_report({"queries_in_per_s": 0.0, "declared_qps": 1.0, "ledger_epoch": "e", "ledger_version": "x"},
                      variant, 1, 5.0)
    assert w.declared_qps == 5.0 and w.reported_at_s == 4.0  # garbage leaves the state as it was
    w.pending[7] = 20.0
    with pytest.raises(ValueError):
        w.take_answer(7, 30.0, {"ledger_epoch": "e", "ledger_version": "x"})
    assert w.pending == {} and w.declared_qps == 5.0


def test_streams_bound_again_off_a_dead_worker_are_handed_over_for_reservation(tiny_system) -> None:
    from live.clock import ManualClock

    _, _, system = tiny_system
    names = {r.name: ("http://127.0.0.1:1", r.variant.model) for r in system.resources}
    live = AntennaScheduler(system, "ant1", names, static_policy(CLOSEST), CLOSEST, seed=0, t0_s=0.0,
                            log=lambda _: None, clock=ManualClock())
    from scheduler.core import StreamRequest

    live.open_stream(4, StreamRequest(antenna=live.antenna_index, fps=1.0, frame_bytes=1000.0, max_delay_ms=1e6,
                                      min_accuracy=0.0))
    first = live.streams[4].resource
    assert live.take_rebound() == []
    live.mark_down(first, "test")
    assert live.streams[4].resource != first and live.take_rebound() == [4] and live.take_rebound() == []
