"""The worker against what its users would pick instead, in the same run, on the same model, frames, batch
and load: a FastAPI service on uvicorn written the way FastAPI's documentation shows
(benchmarks/alt_fastapi.py) and Triton Inference Server's own HTTP front end and dynamic batcher through
NVIDIA PyTriton (benchmarks/alt_pytriton.py). Each does the worker's own work per frame (JPEG decode and
letterbox, tiny-yolov2 in ONNX Runtime with one intra-op thread, NMS), so that what differs is the service.

Two figures, as ratios (the worker's over the alternative's, > 1 where the worker is ahead):
- served throughput at saturation: 3 x B clients sending back to back, the worker and Triton batching up
  to B with a W ms batching delay (FastAPI runs each frame alone in its thread pool); the services take
  turns in short slices, so that all see the same host;
- added latency at low load: one frame in flight, each followed by one in-process run of the same work on
  the services' CPU (so the service idles between frames, as at a low arrival rate, and the in-process run
  sees the CPU the services see); added = round trip p50 - in-process p50.
  Batching off for it (B 1, W 0) where a service batches: a lone frame would wait W.
Every service is pinned to one CPU (the last), as the testbed pins workers; the load generator (a lean
HTTP/1.1 keep-alive client, benchmarks/worker_http.py) and the in-process runs use the others. PyTriton
needs numpy < 2 and so a virtualenv of its own (alt_pytriton.py says how); without `--pytriton-python`
it is left out, and the page says so.

    .venv/bin/python benchmarks/bench_worker_alternatives.py [--model tiny-yolov2] [--batch 4]
        [--pytriton-python /tmp/venv-pytriton/bin/python] [--results-page]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.resultspage import add_results_page_argument, write_results_page  # noqa: E402
from benchmarks.bench_worker import frame_jpeg, served_frames  # noqa: E402
from benchmarks.worker_http import LeanClient, Request, Worker  # noqa: E402
from workers import zoo  # noqa: E402
from workers.engine import OnnxProcessor, Query  # noqa: E402
from workers.lifecycle import read_ready  # noqa: E402
from workers.modelconfig import REPO_ROOT, load_model  # noqa: E402
from workers.runtime import keep_freed_memory  # noqa: E402

HERE = Path(__file__).resolve().parent


@dataclass
class Service:
    """One running service: its process, address and the request that sends it one frame."""

    name: str
    proc: subprocess.Popen
    port: int
    request: Request
    own_group: bool = False
    """The service leads a process group of its own, whose members `stop` ends too."""

    def stop(self) -> None:
        """Stops the service and whatever it started (Triton's server and Python stub)."""
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=60)
        if self.own_group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def wait_ready(proc: subprocess.Popen, what: str, timeout_s: float = 120.0) -> int:
    """Returns the port from the process's `READY <port>` line (other lines, e.g. Triton's log, skipped)."""
    return int(read_ready(proc, what, timeout_s).rsplit(":", 1)[-1])


def start_worker(model: str, batch: int, delay_ms: float, cpu: int, jpeg: bytes) -> Service:
    w = Worker(model, batch, 1, delay_ms=delay_ms, queue_limit=64, cpus={cpu})
    return Service("this worker", w.proc, w.port, Request(f"/v2/models/{model}/frames?stream=b", jpeg,
                                                          {"Content-Type": "image/jpeg"}))


def start_fastapi(model: str, cpu: int, jpeg: bytes) -> Service:
    proc = subprocess.Popen([sys.executable, str(HERE / "alt_fastapi.py"), "--model", model, "--cpu", str(cpu)],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True)
    return Service("FastAPI + uvicorn", proc, wait_ready(proc, "FastAPI"),
                   Request("/predict", jpeg, {"Content-Type": "image/jpeg"}), own_group=True)


def start_pytriton(python: str, model: str, batch: int, delay_ms: float, cpu: int, jpeg: bytes) -> Service:
    proc = subprocess.Popen([python, str(HERE / "alt_pytriton.py"), "--model", model, "--batch", str(batch),
                             "--delay-ms", str(delay_ms), "--cpu", str(cpu)],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    header = json.dumps({"inputs": [{"name": "frame", "datatype": "BYTES", "shape": [1, 1],
                                     "parameters": {"binary_data_size": len(jpeg) + 4}}]}).encode()
    request = Request(f"/v2/models/{model}/infer", header + struct.pack("<I", len(jpeg)) + jpeg,
                      {"Inference-Header-Content-Length": str(len(header))})
    port = wait_ready(proc, "PyTriton")
    # Triton logs on stdout: keep reading it, or the server blocks on a full pipe.
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return Service("Triton (PyTriton)", proc, port, request, own_group=True)


@dataclass
class Saturation:
    served: int = 0
    seconds: float = 0.0
    refused: int = 0


async def saturation(services: list[Service], concurrency: int, rounds: int, slice_s: float) -> dict[str, Saturation]:
    """Returns per service what it served, the services taking turns in `rounds` slices of `slice_s`."""
    out = {s.name: Saturation() for s in services}
    clients = {s.name: [LeanClient("127.0.0.1", s.port) for _ in range(concurrency)] for s in services}
    for cs in clients.values():
        for c in cs:
            await c.__aenter__()
    try:
        for s in services:
            await served_frames(clients[s.name], s.request, 2.0)  # warm-up
        for _ in range(rounds):
            for s in services:
                served, secs, refused = await served_frames(clients[s.name], s.request, slice_s)
                t = out[s.name]
                t.served, t.seconds, t.refused = t.served + served, t.seconds + secs, t.refused + refused
    finally:
        for cs in clients.values():
            for c in cs:
                await c.__aexit__()
    return out


@dataclass
class LowLoad:
    rtt_ms: list[float] = field(default_factory=list)
    local_ms: list[float] = field(default_factory=list)


async def low_load(services: list[Service], local, rounds: int, per_round: int) -> dict[str, LowLoad]:
    """Returns per service the round trips of frames sent one at a time, each followed by one in-process
    run of `local`, the services taking turns in blocks of `per_round` frames."""
    out = {s.name: LowLoad() for s in services}
    clients = {s.name: LeanClient("127.0.0.1", s.port) for s in services}
    for c in clients.values():
        await c.__aenter__()
    try:
        for r in range(rounds + 1):
            for s in services:
                for _ in range(per_round):
                    t0 = time.perf_counter()
                    status, body, _ = await clients[s.name].post(s.request)
                    t1 = time.perf_counter()
                    if status != 200:
                        raise RuntimeError(f"{s.name} answered {status}: {body[:300]!r}")
                    local()
                    if r:  # the first round warms up
                        out[s.name].rtt_ms.append((t1 - t0) * 1000.0)
                        out[s.name].local_ms.append((time.perf_counter() - t1) * 1000.0)
    finally:
        for c in clients.values():
            await c.__aexit__()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-yolov2")
    parser.add_argument("--batch", type=int, default=4, help="B for the services that batch")
    parser.add_argument("--delay-ms", type=float, default=5.0, help="W for the services that batch")
    parser.add_argument("--rounds", type=int, default=6, help="turns of each service at saturation and low load")
    parser.add_argument("--slice-s", type=float, default=2.0, help="seconds per turn at saturation")
    parser.add_argument("--per-round", type=int, default=30, help="frames per turn at low load")
    parser.add_argument("--pytriton-python", default=None, help="python of a virtualenv with nvidia-pytriton")
    add_results_page_argument(parser, "worker-alternatives")
    args = parser.parse_args()
    started = time.monotonic()
    findings: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        findings.append(text)

    zoo.build(names=[args.model], log=lambda _: None)
    keep_freed_memory()  # as the worker does: the in-process runs get the same malloc
    cpus = sorted(os.sched_getaffinity(0))
    service_cpu = cpus[-1]
    os.sched_setaffinity(0, set(cpus[:-1]) or set(cpus))
    jpeg = frame_jpeg()
    load0 = [round(x, 2) for x in os.getloadavg()]
    say(f"model {args.model}, {len(jpeg) // 1000} kB JPEG frames, 1 intra-op thread; services pinned to CPU "
        f"{service_cpu}, load generator and in-process runs on {sorted(os.sched_getaffinity(0))}; host load {load0}")
    pytriton_note = None
    if args.pytriton_python is None:
        pytriton_note = "not measured: no --pytriton-python (PyTriton needs numpy < 2: a virtualenv of its own)"

    def start_all(batch: int, delay_ms: float) -> list[Service]:
        nonlocal pytriton_note
        services = [start_worker(args.model, batch, delay_ms, service_cpu, jpeg),
                    start_fastapi(args.model, service_cpu, jpeg)]
        if args.pytriton_python and pytriton_note is None:
            try:
                services.append(start_pytriton(args.pytriton_python, args.model, batch, delay_ms, service_cpu, jpeg))
            except (OSError, RuntimeError) as exc:
                pytriton_note = f"not measured: {exc}"
        return services

    def stop_all(services: list[Service]) -> None:
        for s in services:
            s.stop()

    concurrency = 3 * args.batch
    services = start_all(args.batch, args.delay_ms)
    try:
        sat = asyncio.run(saturation(services, concurrency, args.rounds, args.slice_s))
    finally:
        stop_all(services)
    say(f"saturation: {concurrency} clients back to back, the worker and Triton batching up to {args.batch} "
        f"with W {args.delay_ms:g} ms, {args.rounds} turns of {args.slice_s:g} s each:")
    worker_qps = sat["this worker"].served / sat["this worker"].seconds
    for name, t in sat.items():
        qps = t.served / t.seconds
        ratio = "" if name == "this worker" else f"; the worker serves {worker_qps / qps:.2f}x (goal > 1)"
        say(f"    {name:<20} {qps:6.1f} frames/s, {t.refused} refused{ratio}")

    config = load_model(args.model)
    proc = OnnxProcessor(config, "cpu", 1)
    frame_query = [Query("b", "1", jpeg, None, 0.0, 0)]
    client_cpus = os.sched_getaffinity(0)

    def local() -> None:  # on the services' CPU, which is idle meanwhile (the frame was answered)
        os.sched_setaffinity(0, {service_cpu})
        proc.process(frame_query)
        os.sched_setaffinity(0, client_cpus)

    services = start_all(1, 0.0)
    try:
        low = asyncio.run(low_load(services, local, args.rounds, args.per_round))
    finally:
        stop_all(services)
        proc.close()
    med = statistics.median
    local_p50 = med([t for m in low.values() for t in m.local_ms])
    say(f"low load: one frame in flight, each followed by one in-process run on CPU {service_cpu} (decode + run "
        f"+ NMS, p50 {local_p50:.2f} ms); batching off; added = round trip p50 - in-process p50 of the same turns:")
    added = {name: med(m.rtt_ms) - med(m.local_ms) for name, m in low.items()}
    for name, m in low.items():
        q = statistics.quantiles(m.rtt_ms, n=100)
        ratio = "" if name == "this worker" else f"; it adds {added[name] / added['this worker']:.2f}x the worker's (goal > 1)"
        say(f"    {name:<20} round trip p50 {med(m.rtt_ms):6.2f} ms, p99 {q[98]:6.2f} ms; added p50 "
            f"{added[name]:5.2f} ms{ratio}")
    if pytriton_note:
        say(f"Triton (PyTriton): {pytriton_note}")
    say(f"host load at the end {[round(x, 2) for x in os.getloadavg()]}; measured in "
        f"{time.monotonic() - started:.0f} s")
    os.sched_setaffinity(0, set(cpus))
    if args.results_page:
        intro = __doc__.split("\n    .venv/bin/python")[0].strip()
        page = write_results_page(args.results_page, "The worker against FastAPI and Triton",
                                  f"{intro}\n\n## Findings\n\n```text\n" + "\n".join(findings) + "\n```\n")
        print(f"wrote {page}")


if __name__ == "__main__":
    main()
