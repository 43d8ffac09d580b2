"""Benchmarks the worker service against raw ONNX Runtime in the same run: served throughput at
saturation through HTTP (v2 binary tensors in and out vs `session.run`; JPEG frames vs the in-process
decode + run + post-process pipeline) and the latency the service adds at low load (p50).

Added latency at low load (one query in flight), p50 over queries, two ways: *paired*, each round trip
minus that query's own raw work as the worker timed it (JPEG: its decode + run + post batch; v2: its
`session.run`), and *unpaired*, round trip p50 minus the p50 of the same work run in-process at the same
rate (noisier: a ~1 ms difference between two ~10 ms distributions). Two rates: "spaced" (each query
followed by one in-process run, so the worker idles several ms before each query, as at a low arrival
rate) and "back to back" (blocks of queries sent as soon as the previous answer is in, alternating with
blocks of back-to-back in-process runs). The platform's *floor* is measured in the same run:
`bare_server.py` (a bare aiohttp handler, and a plain asyncio protocol) on the worker's CPU takes the same
body and answers after pausing as long as the worker's batch took, so the host's cost of HTTP with nothing
else shows next to the worker's.

The load generator is a plain HTTP/1.1 keep-alive client on asyncio streams (requests encoded once;
`LeanClient`): on a 2-core host the client shares the CPUs with the worker, and aiohttp's client
costs ~0.5 ms more per request than the service under test; `--aiohttp-client` measures with it.
At low load the worker is pinned to its own CPU (`--cpus`, as the testbed pins workers) and the
client and baseline to the others.

    .venv/bin/python benchmarks/bench_worker.py [--model tiny-yolov2] [--batch 4] [--threads 1]
        [--aiohttp-client] [--no-pin] [--low-load-only] [--results-page]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.resultspage import add_results_page_argument, write_results_page  # noqa: E402
from benchmarks.worker_http import (  # noqa: E402
    AiohttpClient,
    LeanClient,
    Request,
    Worker,
    answer_json,
    v2_binary,
)
from workers import zoo  # noqa: E402
from workers.engine import OnnxProcessor, Query  # noqa: E402
from workers.lifecycle import read_ready  # noqa: E402
from workers.modelconfig import load_model  # noqa: E402
from workers.runtime import keep_freed_memory, make_session  # noqa: E402


def frame_jpeg() -> bytes:
    """Returns a 640x480 JPEG (the astronaut photograph when scikit-image is present)."""
    try:
        from skimage import data
        rgb = np.asarray(Image.fromarray(data.astronaut()).resize((640, 480)))
    except ImportError:
        rgb = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def raw_frames(session, name: str, batch: np.ndarray, duration_s: float) -> tuple[int, float]:
    """Returns (frames, seconds) of back-to-back `session.run` on one batch for about `duration_s`."""
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < duration_s:
        session.run(None, {name: batch})
        done += len(batch)
    return done, time.perf_counter() - started


def pipeline_frames(proc: OnnxProcessor, jpeg: bytes, batch: int, duration_s: float) -> tuple[int, float]:
    """Returns (frames, seconds) of the worker's own batch function (decode, run, post-process), no HTTP."""
    return batch_frames(proc, [Query("b", str(i), jpeg, None, 0.0, 0) for i in range(batch)], duration_s)


def batch_frames(proc: OnnxProcessor, queries: list[Query], duration_s: float) -> tuple[int, float]:
    """Returns (frames, seconds) of back-to-back runs of the worker's own batch function on `queries`."""
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < duration_s:
        proc.process(queries)
        done += len(queries)
    return done, time.perf_counter() - started


CLIENT: type[LeanClient] | type[AiohttpClient] = LeanClient
FINDINGS: list[str] = []
"""Everything `say` printed: the results page's findings."""


def say(text: str) -> None:
    """Prints a finding and keeps it for the results page."""
    print(text, flush=True)
    FINDINGS.append(text)


async def served_frames(clients: list, req: Request, duration_s: float) -> tuple[int, float, int]:
    """Returns (served, seconds, refused) with every client sending back to back for `duration_s`."""
    served = refused = 0

    async def client(conn, stop_at: float) -> None:
        nonlocal served, refused
        while time.perf_counter() < stop_at:
            status, _, _ = await conn.post(req)
            served += status == 200
            refused += status == 503

    started = time.perf_counter()
    await asyncio.gather(*(client(c, started + duration_s) for c in clients))
    return served, time.perf_counter() - started, refused


def thread_cpu_ms(pid: int) -> dict[int, float]:
    """Returns CPU time (user + system, ms) of each thread of a process, by thread id."""
    return {t.id: (t.user_time + t.system_time) * 1000.0 for t in psutil.Process(pid).threads()}


@dataclass
class Baseline:
    """One in-process baseline's sums over its slices."""

    frames: int = 0
    seconds: float = 0.0
    cpu_ms: float = 0.0


@dataclass
class Tally:
    """One case's sums over its slices: served queries and seconds, CPU ms by thread role, baselines."""

    served: int = 0
    served_s: float = 0.0
    refused: int = 0
    loop_cpu_ms: float = 0.0
    replica_cpu_ms: float = 0.0
    client_cpu_ms: float = 0.0
    baselines: dict[str, Baseline] = field(default_factory=dict)


async def compare_throughput(worker: Worker, cases: dict, concurrency: int, slices: int,
                             slice_s: float) -> dict[str, Tally]:
    """Returns per case the served and baseline tallies, alternating short slices of each baseline and
    of the served load so that all see the same (possibly busy) host; CPU time per thread shows the
    cost of each part whatever the host's load. `cases`: name -> (Request, {baseline name: fn(s)})."""
    tallies = {name: Tally() for name in cases}
    clients, opened = [CLIENT(worker.host, worker.port) for _ in range(concurrency)], []
    try:
        for c in clients:
            await c.__aenter__()
            opened.append(c)
        for name, (req, baselines) in cases.items():
            await served_frames(clients, req, 1.0)  # warm-up
            t = tallies[name]
            for base_name, fn in baselines.items():
                fn(0.5)
                t.baselines[base_name] = Baseline()
            for _ in range(slices):
                for base_name, fn in baselines.items():
                    cpu0 = time.thread_time()
                    frames, secs = fn(slice_s)
                    b = t.baselines[base_name]
                    b.cpu_ms += (time.thread_time() - cpu0) * 1000.0
                    b.frames += frames
                    b.seconds += secs
                before, client0 = thread_cpu_ms(worker.proc.pid), time.process_time()
                served, served_s, refused = await served_frames(clients, req, slice_s)
                after, client1 = thread_cpu_ms(worker.proc.pid), time.process_time()
                for tid, ms in after.items():
                    used = ms - before.get(tid, 0.0)
                    if tid == worker.proc.pid:
                        t.loop_cpu_ms += used
                    else:
                        t.replica_cpu_ms += used
                t.client_cpu_ms += (client1 - client0) * 1000.0
                t.served += served
                t.served_s += served_s
                t.refused += refused
    finally:
        for c in opened:
            await c.__aexit__()
    return tallies


async def low_load(worker: Worker, req: Request, local, count: int, block: int) -> dict[str, list[float]]:
    """Returns client round trips, in-process times of `local()` and the worker's own stages (ms):
    arrival to batch start, batch, batch end to answer, and the network's run within the batch. One
    query in flight at a time; `block` 1: each query followed by one `local()` (spaced); `block` > 1:
    `block` queries back to back, then `block` back-to-back `local()` runs, and so on."""
    out: dict[str, list[float]] = {"rtt": [], "local": [], "to_start": [], "batch": [], "to_answer": [],
                                   "compute": []}
    warm_up = 20
    async with CLIENT(worker.host, worker.port) as conn:
        for start in range(0, count + warm_up, block):
            for i in range(start, start + block):
                t0 = time.perf_counter()
                status, body, header_len = await conn.post(req)
                t1 = time.perf_counter()
                answer = answer_json(body, header_len)
                assert status == 200, (status, answer)
                if i >= warm_up:
                    out["rtt"].append((t1 - t0) * 1000.0)
                    out["to_start"].append(answer["t_infer_start_ms"] - answer["t_arrival_ms"])
                    out["batch"].append(answer["t_infer_end_ms"] - answer["t_infer_start_ms"])
                    out["to_answer"].append(answer["t_answer_ms"] - answer["t_infer_end_ms"])
                    out["compute"].append(answer["compute_ms"])
            for i in range(start, start + block):
                t1 = time.perf_counter()
                local()
                if i >= warm_up:
                    out["local"].append((time.perf_counter() - t1) * 1000.0)
    return out


async def floor_round_trips(port: int, req: Request, local, count: int, block: int) -> dict[str, list[float]]:
    """Returns, per query, the round trip minus the bare server's own pause (ms) and `local()` times,
    in the same pattern as `low_load` (benchmarks/bare_server.py: the platform's floor)."""
    out: dict[str, list[float]] = {"floor": [], "local": []}
    warm_up = 20
    async with CLIENT("127.0.0.1", port) as conn:
        for start in range(0, count + warm_up, block):
            for i in range(start, start + block):
                t0 = time.perf_counter()
                status, body, _ = await conn.post(req)
                rtt = (time.perf_counter() - t0) * 1000.0
                assert status == 200, status
                if i >= warm_up:
                    out["floor"].append(rtt - json.loads(body)["pause_ms"])
            for i in range(start, start + block):
                t1 = time.perf_counter()
                local()
                if i >= warm_up:
                    out["local"].append((time.perf_counter() - t1) * 1000.0)
    return out


def bare_floor(kind: str, pause_ms: float, cpus: set[int] | None, req: Request, local, count: int,
               block: int) -> list[float]:
    """Starts benchmarks/bare_server.py of `kind` on the worker's CPUs and returns its per-query floor."""
    cmd = [sys.executable, str(Path(__file__).with_name("bare_server.py")), "--kind", kind, "--pause-ms",
           f"{pause_ms:.3f}"]
    if cpus:
        cmd += ["--cpu", str(min(cpus))]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        port = int(read_ready(proc, f"bare {kind} server"))
        return asyncio.run(floor_round_trips(port, req, local, count, block))["floor"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def refused_round_trips(worker: Worker, req: Request, local, count: int) -> list[float]:
    """Returns round trips (ms) of the same body refused with a 400 before the batcher (a bad
    Inference-Header-Content-Length): HTTP, body transfer and the event loop without inference;
    spaced by `local()` like the spaced low-load queries."""
    bad = Request(req.path, req.body, {**req.headers, "Inference-Header-Content-Length": str(len(req.body) + 1)})
    rtts = []
    async with CLIENT(worker.host, worker.port) as conn:
        for i in range(count + 20):
            t0 = time.perf_counter()
            status, _, _ = await conn.post(bad)
            assert status == 400, status
            if i >= 20:
                rtts.append((time.perf_counter() - t0) * 1000.0)
            local()
    return rtts


def main() -> None:
    global CLIENT
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-yolov2")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--duration-s", type=float, default=12.0, help="per case, split in --rounds slices")
    parser.add_argument("--rounds", type=int, default=8, help="baseline/served alternations (the host may be busy)")
    parser.add_argument("--low-load-queries", type=int, default=200, help="per low-load case and mode")
    parser.add_argument("--block", type=int, default=10, help="queries per back-to-back block at low load")
    parser.add_argument("--aiohttp-client", action="store_true", help="load and probe with aiohttp's client")
    parser.add_argument("--low-load-only", action="store_true", help="skip the saturation measurements")
    add_results_page_argument(parser, "workers")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the low-load worker to its own CPU "
                        "(the benchmark pins its main thread; with --threads > 1 ORT's pool threads are not)")
    args = parser.parse_args()
    started_s = time.monotonic()
    CLIENT = AiohttpClient if args.aiohttp_client else LeanClient
    zoo.build(names=[args.model], log=lambda _: None)
    cfg = load_model(args.model)
    shape = (3, cfg.input_height, cfg.input_width)
    pixels = np.random.default_rng(0).integers(0, 256, (1, *shape)).astype(np.float32)
    jpeg = frame_jpeg()
    b, concurrency, secs = args.batch, 3 * args.batch, args.duration_s
    say(f"model {args.model}, batch {b}, {args.threads} intra-op thread(s), 1 replica, {concurrency} concurrent "
        f"clients ({CLIENT.__name__}), {secs:.0f} s per measurement, {args.rounds} rounds; "
        f"host load {[round(x, 2) for x in os.getloadavg()]}")

    # The worker tunes malloc so (workers/runtime.py); the baseline gets the same, or the comparison
    # would credit the service with the page faults it saves.
    say(f"glibc malloc keeps freed memory (baseline and worker): {keep_freed_memory()}")
    session = make_session(cfg.onnx_path, "cpu", args.threads)
    proc = OnnxProcessor(cfg, "cpu", args.threads)
    frames_q = [Query("b", "1", jpeg, None, 0.0, 0)]
    bodies = {dt: v2_binary(pixels, dt) for dt in ("FP32", "UINT8")}
    infer_path = f"/v2/models/{args.model}/infer"
    frames_path = f"/v2/models/{args.model}/frames?stream=b"
    requests = {dt: Request(infer_path, *bodies[dt]) for dt in bodies}
    requests["JPEG"] = Request(frames_path, jpeg, {"Content-Type": "image/jpeg"})
    raw_batch = np.repeat(pixels, b, axis=0)
    uint8_queries = [Query("b", str(i), None, pixels[0].astype(np.uint8), 0.0, 0) for i in range(b)]
    fp32_queries = [Query("b", str(i), None, pixels[0].copy(), 0.0, 0) for i in range(b)]
    raw_run = {"raw session.run": lambda s: raw_frames(session, cfg.input_name, raw_batch, s)}
    cases = {
        "v2 FP32 tensors (2 MB per image)": (requests["FP32"], {
            **raw_run, "in-process copy+run+post": lambda s: batch_frames(proc, fp32_queries, s)}),
        "v2 UINT8 tensors (0.5 MB per image)": (requests["UINT8"], {
            **raw_run, "in-process convert+run+post": lambda s: batch_frames(proc, uint8_queries, s)}),
        f"JPEG frames ({len(jpeg) // 1000} kB)": (requests["JPEG"], {
            "in-process decode+run+post": lambda s: pipeline_frames(proc, jpeg, b, s)}),
    }
    if not args.low_load_only:
        worker = Worker(args.model, b, args.threads, delay_ms=5.0, queue_limit=4 * concurrency)
        try:
            results = asyncio.run(compare_throughput(worker, cases, concurrency, args.rounds, args.duration_s / args.rounds))
        finally:
            worker.stop()
        for name, t in results.items():
            served_qps = t.served / t.served_s
            per_q = {k: getattr(t, f"{k}_cpu_ms") / t.served for k in ("loop", "replica", "client")}
            say(f"saturation, {name}: served {served_qps:6.1f} q/s, {t.refused} refused")
            for base_name, base in t.baselines.items():
                base_qps, base_cpu = base.frames / base.seconds, base.cpu_ms / base.frames
                say(f"    / {base_name} {base_qps:6.1f} q/s = {served_qps / base_qps:6.1%} (goal >= 90%); CPU per "
                    f"query {base_cpu:.2f} ms (replica threads {per_q['replica']:.2f} ms)")
            say(f"    CPU per query: event loop {per_q['loop']:.2f} ms, load generator {per_q['client']:.2f} ms")

    # Low load: the worker on its own CPU (as the testbed pins workers), client and baseline on the rest.
    cpus = sorted(os.sched_getaffinity(0))
    worker_cpus = None if args.no_pin or len(cpus) < 2 else {cpus[-1]}
    if worker_cpus:
        os.sched_setaffinity(0, set(cpus) - worker_cpus)
    say(f"low load: worker CPUs {sorted(worker_cpus) if worker_cpus else 'any'}, "
        f"client and baseline CPUs {sorted(os.sched_getaffinity(0))}")
    worker = Worker(args.model, 1, args.threads, delay_ms=0.0, queue_limit=8, cpus=worker_cpus)
    low: dict[tuple[str, str], dict[str, list[float]]] = {}
    try:
        n = args.low_load_queries
        run_v2 = lambda: session.run(None, {cfg.input_name: pixels})  # noqa: E731
        run_jpeg = lambda: proc.process(frames_q)  # noqa: E731
        for mode, block in (("spaced", 1), ("back to back", args.block)):
            low["v2 UINT8 tensors", mode] = asyncio.run(low_load(worker, requests["UINT8"], run_v2, n, block))
            low["JPEG frames", mode] = asyncio.run(low_load(worker, requests["JPEG"], run_jpeg, n, block))
        refused = asyncio.run(refused_round_trips(worker, requests["UINT8"], run_v2, n))
    finally:
        worker.stop()
    worker = Worker(args.model, b, args.threads, delay_ms=5.0, queue_limit=8, cpus=worker_cpus)
    try:
        lone = asyncio.run(low_load(worker, requests["JPEG"], run_jpeg, 50, 1))
    finally:
        worker.stop()
        proc.close()
    med = statistics.median
    # The platform's floor: bare servers on the worker's CPU, taking the same body and pausing as long as the
    # worker's batch took, so that both ends idle as they do with the worker (benchmarks/bare_server.py).
    route_req = {"v2 UINT8 tensors": requests["UINT8"], "JPEG frames": requests["JPEG"]}
    route_local = {"v2 UINT8 tensors": run_v2, "JPEG frames": run_jpeg}
    floors = {(name, mode, kind): bare_floor(kind, med(m["batch"]), worker_cpus, route_req[name], route_local[name],
                                             args.low_load_queries, 1 if mode == "spaced" else args.block)
              for (name, mode), m in low.items() for kind in ("aiohttp", "asyncio")}
    say("added latency at low load (one query in flight; worker batch 1, W 0), p50 over queries:\n"
        "  paired = round trip - the same query's raw work as the worker timed it (JPEG: its decode+run+post "
        "batch; v2: its session.run, so UINT8 conversion and NMS count as added)\n"
        "  unpaired = round trip p50 - in-process baseline p50 (JPEG: decode+run+post; v2: session.run), same "
        "rate; noisier: two ~10 ms distributions\n"
        "  floor = round trip - pause of a bare server on the worker's CPU, same body, pausing the worker's "
        "batch p50 (what HTTP on this host costs with nothing else)")
    for (name, mode), m in low.items():
        rtt, base = med(m["rtt"]), med(m["local"])
        own = m["batch"] if name.startswith("JPEG") else m["compute"]
        paired = med([r - o for r, o in zip(m["rtt"], own, strict=True)])
        f_aio, f_asy = med(floors[name, mode, "aiohttp"]), med(floors[name, mode, "asyncio"])
        say(f"low load, {mode}, {name}: added p50 paired {paired:.2f} ms, unpaired {rtt - base:.2f} ms "
            f"(round trip {rtt:.2f} - in-process {base:.2f}) (goal < 1 ms)\n"
            f"    floor p50: bare aiohttp {f_aio:.2f} ms, plain asyncio {f_asy:.2f} ms -> the worker's own "
            f"share above bare aiohttp {paired - f_aio:+.2f} ms\n"
            f"    worker stages p50: arrival -> batch start {med(m['to_start']):.2f} ms, batch {med(m['batch']):.2f} "
            f"ms (network {med(m['compute']):.2f}), batch end -> answer {med(m['to_answer']):.2f} ms; HTTP + "
            f"client + transfer {rtt - med(m['to_start']) - med(m['batch']) - med(m['to_answer']):.2f} ms")
    say(f"floor, spaced: the same v2 UINT8 body refused with 400 before the batcher (HTTP + transfer, no "
        f"inference): round trip p50 {med(refused):.2f} ms")
    say(f"batching delay: JPEG frames, worker batch {b}, W 5 ms, spaced: a lone query waits "
        f"p50 {med(lone['to_start']):.2f} ms from arrival to batch start (the W of simulator/batching.py)")
    os.sched_setaffinity(0, set(cpus))  # the page names the cores the host has, not those the client kept
    say(f"measured in {time.monotonic() - started_s:.0f} s")
    if args.results_page:
        intro = __doc__.split("\n    .venv/bin/python")[0].strip()
        page = write_results_page(args.results_page, "Worker service against raw ONNX Runtime",
                                  f"{intro}\n\n## Findings\n\n```text\n" + "\n".join(FINDINGS) + "\n```\n")
        print(f"wrote {page}")


if __name__ == "__main__":
    main()
