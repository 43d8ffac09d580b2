"""A scheduler's connections to a worker kept ahead of its frames (live/warmpool.py, live/workerclient.py): the
pool's arithmetic, and a live scheduler with a real profile-driven worker, counting the worker's TCP connections
(each an ESTABLISHED socket on the worker's port in this process)."""

from __future__ import annotations

import asyncio
import resource
from pathlib import Path

import aiohttp
import psutil
from worker_profile import write_worker_profile

from live.antenna import AntennaScheduler, static_policy
from live.scheduler import CLIENT, create_app
from live.warmpool import WarmPool, raise_open_files_limit
from scheduler.core import policy_index
from workers.deployment import WorkerSettings, resolve
from workers.service import ENGINE
from workers.service import create_app as worker_app

CLOSEST = policy_index("closest")
JPEG = b"\xff\xd8" + bytes(100) + b"\xff\xd9"


def test_a_pool_warms_at_start_and_again_once_half_its_spare_is_in_use() -> None:
    pool = WarmPool(spare=4)
    assert pool.start() and pool.warming and pool.warmed_for == 0
    assert not pool.enter() and not pool.enter()  # warming: nothing more until it is done
    pool.warmed()
    assert pool.in_flight == 2
    assert pool.enter()  # 3 in flight >= 0 + 2 (half the spare): warm again, for 3
    assert pool.warmed_for == 3 and pool.warmings == 2
    pool.warmed()
    for _ in range(3):
        pool.leave()
    assert pool.in_flight == 0
    assert [pool.enter() for _ in range(5)] == [False] * 4 + [True]  # 5 >= 3 + 2
    assert not WarmPool(spare=0).start() and not WarmPool(spare=0).enter()


def test_raising_the_open_files_limit_reaches_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 256), hard))
        assert raise_open_files_limit() == (hard if hard != resource.RLIM_INFINITY else 1 << 20)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _established(port: int) -> int:
    return sum(1 for c in psutil.Process().net_connections(kind="tcp")
               if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED)


async def _serve(app) -> tuple[aiohttp.web.AppRunner, str, int]:
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}", port


def _scenario(system, tmp_path: Path, spare: int) -> dict:
    """A scheduler of ant1 with `spare` warm connections and the antenna's worker (200 ms a frame, one at a
    time): the worker's connections once the scheduler is up, then while 3 frames are in flight."""
    settings = WorkerSettings(model="tiny-yolov2", profile_driven=write_worker_profile(
        tmp_path / "p.yaml", "tiny-yolov2", {1: 200.0}))

    async def go() -> dict:
        wapp = worker_app(resolve(settings))
        wr, wurl, wport = await _serve(wapp)
        await asyncio.wait_for(wapp[ENGINE].ready.wait(), 60)
        workers = {r.name: ("http://127.0.0.1:1", r.variant.model) for r in system.resources}  # none answers
        workers[system.resources[0].name] = (wurl, "tiny-yolov2")
        live = AntennaScheduler(system, "ant1", workers, static_policy(CLOSEST), CLOSEST, seed=0, t0_s=0.0,
                                log=lambda _: None)
        app = create_app(live, poll_interval_s=100.0, warm_connections=spare, watch=False)  # no held watch
        runner, url, _ = await _serve(app)
        client = app[CLIENT]

        async def answered() -> None:
            while client.pending:
                await asyncio.gather(*client.pending)

        out: dict = {}
        async with aiohttp.ClientSession() as s:
            await answered()
            await asyncio.sleep(0.2)  # the first poll's answer
            out["at_start"] = _established(wport)
            body = {"stream_id": 1, "fps": 1.0, "frame_bytes": 1000, "max_delay_ms": 1e6, "min_accuracy": 0.0}
            async with s.post(f"{url}/streams", json=body) as r:
                out["bound"] = (await r.json())["cluster"]
            await answered()

            async def frame(k: int) -> bool:
                async with s.post(f"{url}/streams/1/frames", data=JPEG, params={"query": str(k)},
                                  headers={"Content-Type": "image/jpeg", "X-Send-Ms": "0"}) as r:
                    return (await r.json())["ok"]

            frames = [asyncio.create_task(frame(k)) for k in range(3)]
            await asyncio.sleep(0.1)  # the 3 frames at the worker, the first in inference
            await answered()
            out["in_flight"] = _established(wport)
            out["ok"] = await asyncio.gather(*frames)
            pool = client.pools.get(0)
            out["warmings"] = pool.warmings if pool else 0
        for r in (runner, wr):
            await r.cleanup()
        return out

    return asyncio.run(go())


def test_a_scheduler_opens_its_spare_connections_before_any_frame_and_keeps_them_ahead(tiny_system,
                                                                                      tmp_path: Path) -> None:
    """Spare 4: 4 connections (or 5, with the first poll's) before any frame; with 3 frames in flight (half the
    spare used and more) it opens 4 more beside them: at least 7. Without warm connections the poll's is the only
    one, and each frame in flight opens its own."""
    _, _, system = tiny_system
    warm = _scenario(system, tmp_path, spare=4)
    assert warm["bound"] == "ant1" and warm["ok"] == [True, True, True]
    assert 4 <= warm["at_start"] <= 5, warm
    assert warm["in_flight"] >= 7 and warm["warmings"] == 2, warm
    cold = _scenario(system, tmp_path, spare=0)
    assert cold["at_start"] == 1 and cold["warmings"] == 0, cold
    assert 3 <= cold["in_flight"] <= 4, cold
