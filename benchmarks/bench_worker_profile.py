"""Benchmarks the profile-driven worker's fidelity to its profile, which the simulator assumes exactly:
how much longer than the profiled batch latency a batch takes (asyncio sleep granularity, a busy
host), and the capacity served at saturation against the profile's B / batch_ms[B].

    .venv/bin/python benchmarks/bench_worker_profile.py [--batch 4] [--duration-s 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np

REPO = Path(__file__).resolve().parents[1]
PROFILE = """version: 1
origin: bench_worker_profile
models:
  tiny-yolov2: {task: object-detection, input_size: [416, 416], accuracy: 0.237, accuracy_source: bench}
runtimes:
  - {model: tiny-yolov2, device: cpu, threads: 1, cpu_cores: 1.0, gpus: 0, memory_mib: 1,
     batch_latency_ms: {1: 6.34, 2: 11.34, 4: 21.34, 8: 41.34}, input_ms_per_mb: 0.0, source: bench}
"""
LATENCY_MS = {1: 6.34, 2: 11.34, 4: 21.34, 8: 41.34}  # fractional ms, as measured profiles are
FRAME = b"\xff\xd8" + bytes(20_000) + b"\xff\xd9"  # markers only: the profile-driven worker decodes nothing


async def load(url: str, concurrency: int, duration_s: float) -> tuple[int, float, list[tuple[int, float]]]:
    """Returns (served, seconds, [(batch size, reported batch ms)]) with back-to-back clients."""
    batches: list[tuple[int, float]] = []
    served = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def client(stop_at: float) -> None:
            nonlocal served
            while time.perf_counter() < stop_at:
                async with session.post(url, data=FRAME, headers={"Content-Type": "image/jpeg"}) as resp:
                    answer = await resp.json()
                if resp.status == 200:
                    served += 1
                    batches.append((answer["batch_size"], answer["t_infer_end_ms"] - answer["t_infer_start_ms"]))
        await asyncio.gather(*(client(time.perf_counter() + 0.5) for _ in range(concurrency)))
        served, batches = 0, []
        started = time.perf_counter()
        await asyncio.gather(*(client(started + duration_s) for _ in range(concurrency)))
        return served, time.perf_counter() - started, batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--duration-s", type=float, default=8.0)
    args = parser.parse_args()
    b = args.batch
    with tempfile.TemporaryDirectory() as tmp:
        profile = Path(tmp) / "profile.yaml"
        profile.write_text(PROFILE)
        proc = subprocess.Popen([sys.executable, "-m", "workers.serve", "--model", "tiny-yolov2", "--port", "0",
                                 "--batch", str(b), "--max-batch-delay-ms", "2", "--queue-limit", str(8 * b),
                                 "--profile-driven", str(profile)], cwd=REPO, stdout=subprocess.PIPE, text=True)
        try:
            url = proc.stdout.readline().split()[1] + "/v2/models/tiny-yolov2/frames"
            print(f"profile-driven tiny-yolov2, batch {b}, W 2 ms; host load "
                  f"{[round(x, 2) for x in os.getloadavg()]}")
            for concurrency in (1, 3 * b):
                served, secs, batches = asyncio.run(load(url, concurrency, args.duration_s))
                excess = [ms - LATENCY_MS[n] for n, ms in batches if n in LATENCY_MS]
                sizes = statistics.mean(n for n, _ in batches)
                print(f"  {concurrency:2d} clients: {served / secs:6.1f} q/s, mean batch {sizes:.2f}; batch time - "
                      f"profiled: p50 {statistics.median(excess):+.2f} ms, p99 {np.percentile(excess, 99):+.2f} ms")
            capacity = b / LATENCY_MS[b] * 1000.0
            print(f"  saturation: served {served / secs:.1f} q/s vs profile capacity B/batch_ms[B] = {capacity:.1f} q/s "
                  f"-> {served / secs / capacity:.1%}")
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
