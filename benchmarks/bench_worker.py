"""Benchmarks the worker service against raw ONNX Runtime in the same run: served throughput at
saturation through HTTP (v2 binary tensors vs `session.run`; JPEG frames vs the in-process
decode + run + post-process pipeline) and the latency the service adds at low load (p50).

    .venv/bin/python benchmarks/bench_worker.py [--model tiny-yolov2] [--batch 4] [--threads 1]
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
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers import zoo  # noqa: E402
from workers.engine import OnnxProcessor, Query  # noqa: E402
from workers.modelconfig import REPO_ROOT, load_model  # noqa: E402
from workers.runtime import make_session  # noqa: E402


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
    queries = [Query("b", str(i), jpeg, None, 0.0, 0) for i in range(batch)]
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < duration_s:
        proc.process(queries)
        done += batch
    return done, time.perf_counter() - started


class Worker:
    """A worker process started with `python -m workers.serve`, stopped with SIGTERM."""

    def __init__(self, model: str, batch: int, threads: int, delay_ms: float, queue_limit: int) -> None:
        cmd = [sys.executable, "-m", "workers.serve", "--model", model, "--port", "0", "--batch", str(batch),
               "--instances", "1", "--threads", str(threads), "--max-batch-delay-ms", str(delay_ms),
               "--queue-limit", str(queue_limit)]
        self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("READY "):
            raise RuntimeError(f"worker did not start: {line!r}")
        self.url = line.split()[1]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def v2_binary(tensor: np.ndarray, datatype: str = "FP32") -> tuple[bytes, dict]:
    raw = tensor.astype(np.uint8 if datatype == "UINT8" else np.float32).tobytes()
    header = json.dumps({"inputs": [{"name": "images", "datatype": datatype, "shape": list(tensor.shape),
                                     "parameters": {"binary_data_size": len(raw)}}]}).encode()
    return header + raw, {"Inference-Header-Content-Length": str(len(header)),
                          "Content-Type": "application/octet-stream"}


async def served_frames(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict, concurrency: int,
                        duration_s: float) -> tuple[int, float, int]:
    """Returns (served, seconds, refused) with `concurrency` clients sending back to back for `duration_s`."""
    served = refused = 0

    async def client(stop_at: float) -> None:
        nonlocal served, refused
        while time.perf_counter() < stop_at:
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                served += resp.status == 200
                refused += resp.status == 503

    started = time.perf_counter()
    await asyncio.gather(*(client(started + duration_s) for _ in range(concurrency)))
    return served, time.perf_counter() - started, refused


def thread_cpu_ms(pid: int) -> dict[int, float]:
    """Returns CPU time (user + system, ms) of each thread of a process, by thread id."""
    tick_ms = 1000.0 / os.sysconf("SC_CLK_TCK")
    cpu = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu[int(tid)] = (int(fields[11]) + int(fields[12])) * tick_ms
    return cpu


@dataclass
class Tally:
    """One case's sums over its slices: frames and seconds, CPU ms by thread role."""

    served: int = 0
    served_s: float = 0.0
    refused: int = 0
    base_frames: int = 0
    base_s: float = 0.0
    base_cpu_ms: float = 0.0
    loop_cpu_ms: float = 0.0
    replica_cpu_ms: float = 0.0
    client_cpu_ms: float = 0.0


async def compare_throughput(cases: dict, worker_pid: int, concurrency: int, slices: int,
                             slice_s: float) -> dict[str, Tally]:
    """Returns per case the served and baseline tallies, alternating short slices of the baseline and
    of the served load so that both see the same (possibly busy) host; CPU time per thread shows the
    cost of each part whatever the host's load."""
    tallies = {name: Tally() for name in cases}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        for name, (url, body, headers, baseline) in cases.items():
            await served_frames(session, url, body, headers, concurrency, 1.0)  # warm-up
            baseline(0.5)
            t = tallies[name]
            for _ in range(slices):
                cpu0 = time.thread_time()
                frames, secs = baseline(slice_s)
                t.base_cpu_ms += (time.thread_time() - cpu0) * 1000.0
                before, client0 = thread_cpu_ms(worker_pid), time.process_time()
                served, served_s, refused = await served_frames(session, url, body, headers, concurrency, slice_s)
                after, client1 = thread_cpu_ms(worker_pid), time.process_time()
                for tid, ms in after.items():
                    used = ms - before.get(tid, 0.0)
                    if tid == worker_pid:
                        t.loop_cpu_ms += used
                    else:
                        t.replica_cpu_ms += used
                t.client_cpu_ms += (client1 - client0) * 1000.0
                t.served += served
                t.served_s += served_s
                t.refused += refused
                t.base_frames += frames
                t.base_s += secs
    return tallies


async def low_load(url: str, body: bytes, headers: dict, local, count: int) -> dict[str, list[float]]:
    """Returns, one query at a time, client round trips, in-process times of `local()` (alternated with
    the queries) and the worker's own stages (ms): arrival to batch start, batch, batch end to answer."""
    out: dict[str, list[float]] = {"rtt": [], "local": [], "to_start": [], "batch": [], "to_answer": []}
    async with aiohttp.ClientSession() as session:
        for i in range(count + 20):
            t0 = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as resp:
                answer = await resp.json()
                assert resp.status == 200, resp.status
            t1 = time.perf_counter()
            local()
            t2 = time.perf_counter()
            if i >= 20:  # warm-up
                out["rtt"].append((t1 - t0) * 1000.0)
                out["local"].append((t2 - t1) * 1000.0)
                out["to_start"].append(answer["t_infer_start_ms"] - answer["t_arrival_ms"])
                out["batch"].append(answer["t_infer_end_ms"] - answer["t_infer_start_ms"])
                out["to_answer"].append(answer["t_answer_ms"] - answer["t_infer_end_ms"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-yolov2")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--duration-s", type=float, default=12.0, help="per case, split in --rounds slices")
    parser.add_argument("--rounds", type=int, default=8, help="baseline/served alternations (the host may be busy)")
    parser.add_argument("--low-load-queries", type=int, default=200)
    args = parser.parse_args()
    zoo.build(names=[args.model], log=lambda _: None)
    cfg = load_model(args.model)
    shape = (3, cfg.input_height, cfg.input_width)
    pixels = np.random.default_rng(0).integers(0, 256, (1, *shape)).astype(np.float32)
    jpeg = frame_jpeg()
    b, concurrency, secs = args.batch, 3 * args.batch, args.duration_s
    print(f"model {args.model}, batch {b}, {args.threads} intra-op thread(s), 1 replica, {concurrency} concurrent "
          f"clients, {secs:.0f} s per measurement, {args.rounds} rounds; host load {Path('/proc/loadavg').read_text().split()[:3]}")

    session = make_session(cfg.onnx_path, "cpu", args.threads)
    proc = OnnxProcessor(cfg, "cpu", args.threads)
    frames_q = [Query("b", "1", jpeg, None, 0.0, 0)]
    bodies = {dt: v2_binary(pixels, dt) for dt in ("FP32", "UINT8")}
    raw_batch = np.repeat(pixels, b, axis=0)
    worker = Worker(args.model, b, args.threads, delay_ms=5.0, queue_limit=4 * concurrency)
    infer_url = f"{worker.url}/v2/models/{args.model}/infer"
    frames_url = f"{worker.url}/v2/models/{args.model}/frames?stream=b"
    cases = {
        "v2 FP32 tensors vs raw session.run": (infer_url, *bodies["FP32"],
                                               lambda s: raw_frames(session, cfg.input_name, raw_batch, s)),
        "v2 UINT8 tensors vs raw session.run": (infer_url, *bodies["UINT8"],
                                                lambda s: raw_frames(session, cfg.input_name, raw_batch, s)),
        f"JPEG frames ({len(jpeg) // 1000} kB) vs in-process decode+run+post":
            (frames_url, jpeg, {"Content-Type": "image/jpeg"}, lambda s: pipeline_frames(proc, jpeg, b, s)),
    }
    try:
        results = asyncio.run(compare_throughput(cases, worker.proc.pid, concurrency, args.rounds,
                                                 args.duration_s / args.rounds))
    finally:
        worker.stop()
    for name, t in results.items():
        served_qps, base_qps = t.served / t.served_s, t.base_frames / t.base_s
        per_q = {k: getattr(t, f"{k}_cpu_ms") / t.served for k in ("loop", "replica", "client")}
        base_per_q = t.base_cpu_ms / t.base_frames
        print(f"saturation, {name}:\n    served {served_qps:6.1f} q/s / baseline {base_qps:6.1f} q/s = "
              f"{served_qps / base_qps:6.1%} (goal >= 90%), {t.refused} refused\n"
              f"    CPU per query: replica threads {per_q['replica']:.2f} ms vs baseline {base_per_q:.2f} ms "
              f"(= {base_per_q / per_q['replica']:.1%} efficiency); event loop {per_q['loop']:.2f} ms, "
              f"load generator {per_q['client']:.2f} ms")

    worker = Worker(args.model, 1, args.threads, delay_ms=0.0, queue_limit=8)
    try:
        n = args.low_load_queries
        infer_url = f"{worker.url}/v2/models/{args.model}/infer"
        frames_url = f"{worker.url}/v2/models/{args.model}/frames?stream=b"
        v2 = asyncio.run(low_load(infer_url, *bodies["UINT8"],
                                  lambda: session.run(None, {cfg.input_name: pixels}), n))
        jp = asyncio.run(low_load(frames_url, jpeg, {"Content-Type": "image/jpeg"}, lambda: proc.process(frames_q), n))
    finally:
        worker.stop()
        proc.close()
    med = statistics.median
    for name, m, baseline in (("v2 UINT8 tensors", v2, "session.run"), ("JPEG frames", jp, "decode+run+post")):
        print(f"low load, {name} (batch 1, W 0): round trip p50 {med(m['rtt']):.2f} ms - in-process {baseline} "
              f"p50 {med(m['local']):.2f} ms -> added p50 {med(m['rtt']) - med(m['local']):.2f} ms (goal < 1 ms)\n"
              f"    worker stages p50: arrival -> batch start {med(m['to_start']):.2f} ms, batch {med(m['batch']):.2f} "
              f"ms, batch end -> answer {med(m['to_answer']):.2f} ms; HTTP + client + transfer "
              f"{med(m['rtt']) - med(m['to_start']) - med(m['batch']) - med(m['to_answer']):.2f} ms")


if __name__ == "__main__":
    main()
