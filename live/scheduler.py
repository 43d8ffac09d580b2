"""The live scheduler service of one antenna: its aiohttp application (stream open, its load then reserved at
the worker it is bound to, and close; frame relay to the bound worker and the answer back; status), the loops
that poll the workers' load, watch their ledgers and close the decision windows, and
`python -m live.scheduler --spec RUN_DIR/spec.json --antenna NAME [--restart N]`.

Runs inside the antenna's scheduler host, listening only on that host's emulated address. The state it
serves (bindings, load, windows) is `live.antenna.AntennaScheduler`; the policy of each decision window
comes from a `PolicyChooser`: a static policy, or an ASET agent handed each window's measurement.

Time is the state's clock's: under time dilation the polls, windows and every timeout run K times slower in
real time, and the times it answers are virtual.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from live.antenna import AntennaScheduler, LiveStream, PolicyChooser, static_policy
from live.clock import DilatedClock, Stopwatch, real_duration_s
from live.ledgerwatch import watch_ledgers
from live.rundir import SCHEDULER_PORT, RunDir, wait_t0
from live.spec import DEFAULT_POLICY, read_spec
from live.warmpool import SPARE_CONNECTIONS, raise_open_files_limit
from live.windowlog import WindowsLog
from live.workerclient import Client
from scheduler.core import ASET, POLICY_NAMES, StreamRequest, check_policy, policy_index
from scheduler.profiles import load_profiles
from scheduler.system import SystemModel, build_system
from scheduler.timeline import SystemTimeline
from topologies import load_topology
from topologies.events import load_events
from workers.lifecycle import RUN_KEEPALIVE_S, serving

if TYPE_CHECKING:
    from scheduler.aset.policy import AsetController


LIVE = web.AppKey("live", AntennaScheduler)
CLIENT = web.AppKey("client", Client)


def create_app(live: AntennaScheduler, poll_interval_s: float = 1.0,
               windows: WindowsLog | None = None, relay_timeout_s: float = 5.0,
               worker_clock_ms: dict[int, float] | None = None,
               warm_connections: int = SPARE_CONNECTIONS, watch: bool = True) -> web.Application:
    """Returns the scheduler's application: stream open/close, frame relay, status; its decision windows
    logged to `windows`; with `watch`, every worker's ledger watched (live/ledgerwatch.py). A frame whose worker
    has not answered within `relay_timeout_s` (the run's query timeout, `--timeout`; on the state's clock, so x K
    in real time under time dilation) fails as `timeout`; its worker is slow, not down."""
    app = web.Application(client_max_size=16 * 2**20)
    app[LIVE] = live
    app[CLIENT] = client = Client(aiohttp.ClientTimeout(total=real_duration_s(live.clock, relay_timeout_s)),
                                  worker_clock_ms=dict(worker_clock_ms or {}))

    async def background(app: web.Application):
        raise_open_files_limit()
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=real_duration_s(live.clock, RUN_KEEPALIVE_S))
        client.session = session = aiohttp.ClientSession(connector=connector)
        client.warm_up(live.workers, warm_connections)
        await release_mine(live, client)
        tasks = [asyncio.create_task(poll_loads(live, session, poll_interval_s, client)),
                 asyncio.create_task(window_loop(live, windows))]
        held = None
        if watch:  # on a session of their own: the watches hold no warm frame connection
            held = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                limit=0, keepalive_timeout=real_duration_s(live.clock, RUN_KEEPALIVE_S)))
            tasks.append(asyncio.create_task(watch_ledgers(live, held, poll_interval_s)))
        yield
        for task in (*tasks, *client.pending):
            task.cancel()
        await asyncio.gather(*tasks, *client.pending, return_exceptions=True)
        await session.close()
        if held is not None:
            await held.close()

    app.cleanup_ctx.append(background)
    app.add_routes(
        [
            web.post("/streams", open_stream),
            web.delete("/streams/{sid}", close_stream),
            web.post("/streams/{sid}/frames", relay_frame),
            web.get("/status", status),
            web.get("/health", health),
        ]
    )
    return app


async def poll_loads(live: AntennaScheduler, session: aiohttp.ClientSession, interval_s: float,
                     client: Client | None = None) -> None:
    """Polls every worker's GET /v2/load every `interval_s` (the state's clock) and hands the reports (or
    failures) to the state; the streams a worker found down had bound again are reserved through `client`."""
    timeout = aiohttp.ClientTimeout(total=real_duration_s(live.clock, max(0.5, 2 * interval_s)))
    window = f"{min(10.0, max(0.1, interval_s)):g}"  # the report's rate over the poll period
    live.poll_interval_s = interval_s

    async def one(j: int, url: str) -> None:
        try:
            async with session.get(f"{url}/v2/load", params={"window_s": window}, timeout=timeout) as r:
                report = await r.json()
            live.apply_report(j, report)
        except asyncio.TimeoutError as exc:
            live.report_failed(j, exc, timed_out=True)
        except (aiohttp.ClientError, ConnectionError, ValueError, KeyError, TypeError) as exc:  # refused, garbage
            live.report_failed(j, exc, timed_out=False)

    while True:
        await asyncio.gather(*(one(j, w.url) for j, w in enumerate(live.workers) if w is not None))
        if client is not None:
            reserve_rebound(live, client)
        live.release_idle()
        await live.clock.sleep(interval_s)


async def window_loop(live: AntennaScheduler, windows: WindowsLog | None = None) -> None:
    """Closes each decision window at its end (aligned on t0, once t0 is known) on the state's clock, and
    logs it to `windows`."""
    while not live.t0_known:
        await asyncio.sleep(0.01)
    live.begin_windows()
    while True:
        end = live.next_window_end_s()
        await live.clock.sleep_until(end)
        closed = live.close_window(end)
        if windows is not None:
            windows.write(closed)


_REQUEST_KEYS = ("fps", "frame_bytes", "max_delay_ms", "min_accuracy")


async def open_stream(request: web.Request) -> web.Response:
    """POST /streams {stream_id, fps, frame_bytes, max_delay_ms, min_accuracy, task}: binds the stream."""
    live = request.app[LIVE]
    try:
        body = await request.json()
        sid = int(body["stream_id"])
        values = {k: float(body[k]) for k in _REQUEST_KEYS}
    except (ValueError, KeyError, TypeError) as exc:
        return web.json_response(
            {"error": "bad_request", "detail": f"stream attributes: {exc!r}"}, status=400
        )
    task = live.system.task_index(str(body.get("task", "object-detection")))
    old = live.streams.get(sid)
    stream = live.open_stream(sid, StreamRequest(antenna=live.antenna_index, task=task, **values))
    if old is not None and old.resource >= 0 and old.resource != stream.resource:  # a re-opening moved it
        request.app[CLIENT].release_at(live.workers[old.resource].url, sid)  # type: ignore[union-attr]
    request.app[CLIENT].spawn(admit(live, request.app[CLIENT], sid, stream))
    if stream.resource < 0:
        return web.json_response({"stream_id": sid, "rejected": stream.reason})
    res = live.system.resources[stream.resource]
    return web.json_response(
        {
            "stream_id": sid,
            "cluster": res.site,
            "variant": res.variant.name,
            "policy": POLICY_NAMES[live.policy],
        }
    )


RESERVE_TRIES = 2
"""Times a reservation is sent to a worker that does not answer it (it is idempotent) before the binding stays
unreserved."""


async def admit(live: AntennaScheduler, client: Client, sid: int, stream: LiveStream) -> None:
    """Reserves the load of a stream just bound at its worker (workers/reservations.py: the capacity constraint
    checked against every antenna's bindings), while the stream's first frames already go there: on a refusal
    the stream is bound again knowing what is declared there (that worker is then infeasible for it), until a
    worker grants it or the stream is rejected; its next frames go to the new binding. A worker that does not
    answer, or has no reservations (a stand-in), keeps the binding as decided, unreserved; a stream closed or
    re-opened meanwhile gives back what was granted for it."""
    while stream.resource >= 0 and client.session is not None:
        j = stream.resource
        w = live.workers[j]
        assert w is not None
        load = stream.load_qps
        body = {"load_qps": load, "check_qps": load * live.scheduler.capacity_headroom,
                "capacity_qps": float(live.scheduler.system.capacity_qps[j]), "owner": live.antenna}
        live.reserving(sid, stream)
        answer = None
        for _ in range(RESERVE_TRIES):
            try:
                async with client.session.put(f"{w.url}/v2/streams/{sid}", json=body,
                                              timeout=client.relay_timeout) as r:
                    answer = await r.json() if r.status == 200 else {}
                granted, declared = bool(answer["granted"]), float(answer["declared_qps"])
                int(answer.get("ledger_version", 0))  # garbage is no answer
                break
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError, TypeError):
                if answer is not None:  # answered, but not a reservation's answer: a worker without them
                    break
        else:
            answer = None
        if answer is None or "granted" not in answer:
            live.unanswered(sid, j)
            return
        now = live.streams.get(sid)
        if now is not stream:  # closed, re-opened or moved while the reservation was on its way
            live.unanswered(sid, j)
            if granted and (now is None or now.resource != j):
                client.release_at(w.url, sid)
            return
        if granted:
            live.granted(sid, j, declared, answer)
            return
        stream = live.refused(sid, declared, answer)


async def release_mine(live: AntennaScheduler, client: Client) -> None:
    """Releases, at every worker, what this antenna's scheduler reserved before (a restart: it binds afresh, and
    its own earlier reservations would count against the streams opening again); before the first poll."""
    session = client.session
    assert session is not None

    async def one(url: str) -> None:
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            async with session.delete(f"{url}/v2/streams", params={"owner": live.antenna},
                                      timeout=client.relay_timeout):
                pass

    await asyncio.gather(*(one(w.url) for w in live.workers if w is not None))


def reserve_rebound(live: AntennaScheduler, client: Client) -> None:
    """Reserves the streams bound again since their worker went down."""
    for sid in live.take_rebound():
        stream = live.streams.get(sid)
        if stream is not None:
            client.spawn(admit(live, client, sid, stream))


async def close_stream(request: web.Request) -> web.Response:
    live, sid = request.app[LIVE], int(request.match_info["sid"])
    stream = live.streams.get(sid)
    live.close_stream(sid)
    if stream is not None and stream.resource >= 0:
        request.app[CLIENT].release_at(live.workers[stream.resource].url, sid)  # type: ignore[union-attr]
    return web.json_response({"closed": True})


async def health(request: web.Request) -> web.Response:
    """GET /health: answers at once (a source opens its connections ahead of its frames with it)."""
    return web.Response(text="ok")


async def status(request: web.Request) -> web.Response:
    return web.json_response(request.app[LIVE].statistics())


async def relay_frame(request: web.Request) -> web.Response:
    """POST /streams/{sid}/frames?query=K (JPEG; header X-Send-Ms): relays to the bound worker and answers
    the timestamps and outcome: {ok, cluster, variant, t_sched_ms, t_worker_ms, ..., reason}."""
    watch = Stopwatch()  # the scheduler's overhead: without reading the body (the radio) and the worker's time
    live = request.app[LIVE]
    try:
        sid = int(request.match_info["sid"])
    except ValueError:
        return web.json_response({"error": "bad_request", "detail": "stream ids are integers"}, status=400)
    stream = live.streams.get(sid) or live.closed.get(sid)  # a closed stream's last frames are still relayed
    if stream is None:
        return web.json_response({"error": "unknown_stream", "stream_id": sid}, status=404)
    live.seen(stream)
    with watch.excluding():
        body = await request.read()
    t_sched = live.now_ms()  # the scheduler has the frame: its last byte has crossed the radio
    answer: dict = {"t_sched_ms": t_sched, "cluster": "", "variant": ""}
    if stream.resource < 0:
        answer.update(ok=False, reason=stream.reason)
        live.count("rejected")
        return _answer(live, answer, watch)
    j = stream.resource
    res, w = live.system.resources[j], live.workers[j]
    assert w is not None
    answer.update(cluster=res.site, variant=res.variant.name)
    url = f"{w.url}/v2/models/{w.model}/frames"
    params = {"stream": str(sid), "query": request.query.get("query", "")}
    try:
        with watch.excluding(), request.app[CLIENT].in_flight(j, w.url):
            async with request.app[CLIENT].session.post(  # type: ignore[union-attr]
                url, data=body, params=params, headers={"Content-Type": "image/jpeg"},
                timeout=request.app[CLIENT].relay_timeout,
            ) as r:
                raw = await r.read()
                code = r.status
    except asyncio.TimeoutError:  # no answer within the query timeout: the query failed, the worker is slow
        answer.update(ok=False, reason="timeout")
        live.count("failed", j, len(body))
        return _answer(live, answer, watch)
    except aiohttp.ClientError as exc:  # refused, reset, dropped: it is gone
        live.mark_down(j, f"{type(exc).__name__} relaying a frame")
        reserve_rebound(live, request.app[CLIENT])
        answer.update(ok=False, reason="worker-down")
        live.count("rejected")
        return _answer(live, answer, watch)
    try:
        reply = json.loads(raw)
    except ValueError:  # an answer that is not JSON: the worker is alive, the query is lost
        reply = {}
    if not isinstance(reply, dict):
        reply = {}
    for key in ("t_arrival_ms", "t_infer_start_ms", "t_infer_end_ms"):
        if isinstance(reply.get(key), (int, float)):
            answer["t_worker_ms" if key == "t_arrival_ms" else key] = (
                reply[key] - live.t0_s * 1000.0 - request.app[CLIENT].worker_clock_ms.get(j, 0.0))
    answer["batch_size"] = int(reply.get("batch_size") or 0)
    if "declared_qps" in reply:
        with contextlib.suppress(ValueError, TypeError, KeyError):  # garbage: the next report tells
            w.take_ledger(reply)
    ok, reason = live.answered(stream, code, float(request.headers.get("X-Send-Ms", t_sched)), len(body))
    answer.update(ok=ok, reason=reason)
    return _answer(live, answer, watch)


def _answer(live: AntennaScheduler, answer: dict, watch: Stopwatch) -> web.Response:
    live.overhead_us.append(watch.wall_us())
    return web.json_response(answer)


@dataclass(frozen=True)
class PolicyChoice:
    """How a scheduler picks each window's policy."""

    chooser: PolicyChooser
    first: int
    """The first window's policy (an index into POLICY_NAMES)."""
    window_s: float
    """The decision window's length."""
    controller: AsetController | None = None
    """The agent's controller (its state and Q-values are logged per window); None for a static policy."""


def choose_policy(system: SystemModel, policy: str | None, agent: Path | None, window_s: float) -> PolicyChoice:
    """Returns a static policy's choice, or an ASET agent file's (its policy per decision window, the window
    it was trained with; a mismatched agent is refused)."""
    policy = check_policy(policy, agent, default=DEFAULT_POLICY)
    if policy != ASET:
        first = policy_index(policy)
        return PolicyChoice(static_policy(first), first, window_s)
    assert agent is not None
    from scheduler.aset.policy import AsetController

    controller = AsetController.for_system(agent, system)
    return PolicyChoice(controller.decide, controller.first_action(), controller.decision_window_s, controller)


def read_workers(path: Path) -> dict[str, tuple[str, str]]:
    """Returns {resource name: (worker base URL, model name)} from the orchestrator's workers file (its
    `clock_offset_ms`: read_worker_clocks)."""
    raw = json.loads(Path(path).read_text())
    try:
        return {name: (str(w["url"]), str(w["model"])) for name, w in raw.items()}
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: each entry needs 'url' and 'model': {exc!r}") from None


def read_worker_clocks(path: Path, system: SystemModel) -> dict[int, float]:
    """Returns per resource index how far its worker's clock is ahead of this server's, in ms (the workers
    file's `clock_offset_ms`, written per server by a run across servers; absent: 0)."""
    raw = json.loads(Path(path).read_text())
    names = [r.name for r in system.resources]
    try:
        return {names.index(n): float(w.get("clock_offset_ms", 0.0)) for n, w in raw.items() if n in names}
    except (TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{path}: a worker's clock_offset_ms is not a number: {exc}") from None


async def serve(
    live: AntennaScheduler,
    host: str,
    port: int,
    poll_interval_s: float,
    stats_path: Path | None,
    t0_file: Path | None = None,
    windows: WindowsLog | None = None,
    relay_timeout_s: float = 5.0,
    worker_clock_ms: dict[int, float] | None = None,
    warm_connections: int = SPARE_CONNECTIONS,
    watch: bool = True,
) -> int:
    """Runs the scheduler until SIGTERM/SIGINT; writes its statistics; returns the exit status."""
    live.warm_up()
    try:
        app = create_app(live, poll_interval_s, windows, relay_timeout_s, worker_clock_ms, warm_connections, watch)
        keepalive_s = real_duration_s(live.clock, RUN_KEEPALIVE_S)
        async with serving(app, host, port, keepalive_timeout_s=keepalive_s) as service:
            service.announce()
            if t0_file is not None:
                t0_s = await wait_t0(t0_file, stop=service.stop)
                if t0_s is not None:
                    live.set_t0(t0_s)
            await service.stop.wait()
    finally:  # the application's loops are cancelled by now: the window under way is logged once
        closed = live.stop()
        if closed is not None and windows is not None:
            windows.write(closed)
        if stats_path is not None:
            stats_path.write_text(json.dumps(live.statistics(), indent=1) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m live.scheduler", description=__doc__)
    p.add_argument("--spec", type=Path, required=True, help="the run's spec.json; its folder is the run dir")
    p.add_argument("--antenna", required=True, help="the antenna this scheduler serves")
    p.add_argument("--restart", type=int, default=0,
                   help="how many times this antenna's scheduler was restarted before (numbers its files, seeds it)")
    p.add_argument("--host", default=None,
                   help="address to listen on (default: the antenna's scheduler host in the run's network.json)")
    p.add_argument("--port", type=int, default=SCHEDULER_PORT, help=f"0 picks a free port (default {SCHEDULER_PORT})")
    args = p.parse_args(argv)
    try:
        spec = read_spec(args.spec)
        run = RunDir(args.spec.resolve().parent)
        system = build_system(load_topology(spec.topo), load_profiles(spec.profiles))
        choice = choose_policy(system, spec.policy, spec.agent, spec.window_s)
        live = AntennaScheduler(
            system,
            args.antenna,
            read_workers(run.workers),
            choice.chooser,
            choice.first,
            seed=spec.seed + 1000 * system.antenna_index(args.antenna) + args.restart,
            capacity_headroom=spec.capacity_headroom,
            window_s=choice.window_s,
            log=lambda line: print(line, flush=True),
            clock=DilatedClock(spec.time_scale),
        )
        windows = WindowsLog(run.windows_log(args.antenna, args.restart), choice.controller)
        if spec.events is not None:
            live.timeline = SystemTimeline.build(system, load_events(spec.events, system.topology))
        host = args.host if args.host is not None else run.host_address("scheduler", args.antenna)
        return asyncio.run(serve(live, host, args.port, spec.load_poll_s,
                                 run.scheduler_stats(args.antenna, args.restart), run.t0, windows, spec.timeout_s,
                                 read_worker_clocks(run.workers, system), spec.warm_connections,
                                 spec.watch_ledgers))
    except (KeyError, ValueError, OSError) as exc:
        print(f"scheduler: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
