"""Slow clients against one worker: connections that announce large bodies and send them a few bytes a
second (slow bodies), and connections that send their headers a byte at a time (slow headers), while a
normal client keeps sending JPEG frames. Measures the worker's resident memory (RSS) before, at its peak
and after the attack, when each slow connection was closed, and the normal client's round trips before
and during the attack (p50, p99).

`--before-tree DIR` first measures a worker started from another checkout of the repository (e.g. the
commit before the limits, unpacked with `git archive COMMIT | tar -x -C DIR`), so that both are measured by
the same client in the same run.

    .venv/bin/python benchmarks/bench_worker_attack.py [--slow-bodies 150] [--slow-headers 500]
        [--announce-mb 8] [--bytes-per-s 16] [--attack-s 40] [--before-tree DIR] [--results-page]
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
from dataclasses import dataclass, field
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.resultspage import add_results_page_argument, write_results_page  # noqa: E402
from benchmarks.bench_worker import frame_jpeg  # noqa: E402
from benchmarks.worker_http import LeanClient, Request  # noqa: E402
from workers import zoo  # noqa: E402
from workers.lifecycle import read_ready  # noqa: E402
from workers.modelconfig import REPO_ROOT  # noqa: E402


@dataclass
class Attack:
    """When each slow connection was closed by the worker (seconds after the attack began; None: open)."""

    closed_s: list[float | None] = field(default_factory=list)

    def summary(self, total_s: float) -> str:
        closed = sorted(t for t in self.closed_s if t is not None)
        if not closed:
            return f"0 of {len(self.closed_s)} closed in {total_s:.0f} s"
        return (f"{len(closed)} of {len(self.closed_s)} closed in {total_s:.0f} s, after p50 "
                f"{statistics.median(closed):.1f} s, max {closed[-1]:.1f} s")


async def slow_connection(host: str, port: int, head: bytes, trickle: bytes, every_s: float, until: float,
                          started: float, attack: Attack, index: int) -> None:
    """Sends `head` (whole, or nothing), then `trickle` every `every_s` until closed or `until`."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        attack.closed_s[index] = 0.0
        return
    try:
        writer.write(head)
        while time.monotonic() < until:
            writer.write(trickle)
            await writer.drain()
            try:
                data = await asyncio.wait_for(reader.read(4096), every_s)
            except asyncio.TimeoutError:
                continue
            if not data or reader.at_eof():
                attack.closed_s[index] = time.monotonic() - started
                return
    except (ConnectionError, OSError):
        attack.closed_s[index] = time.monotonic() - started
    finally:
        writer.close()


def slow_body_head(host: str, path: str, size: int) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {size}\r\n\r\n").encode() + b"\xff\xd8"


async def round_trips(client: LeanClient, req: Request, until: float, gap_s: float) -> list[float]:
    """Returns round trips (ms) of normal requests sent one at a time, `gap_s` apart, until `until`."""
    out = []
    while time.monotonic() < until:
        t0 = time.perf_counter()
        status, _, _ = await client.post(req)
        if status == 200:
            out.append((time.perf_counter() - t0) * 1000.0)
        await asyncio.sleep(gap_s)
    return out


async def sample_rss(pid: int, until: float, samples: list[float]) -> None:
    proc = psutil.Process(pid)
    while time.monotonic() < until:
        samples.append(proc.memory_info().rss / 2**20)
        await asyncio.sleep(0.1)


def percentiles(ms: list[float]) -> str:
    if not ms:
        return "no answers"
    q = statistics.quantiles(ms, n=100) if len(ms) > 1 else [ms[0]] * 99
    return f"p50 {statistics.median(ms):.2f} ms, p99 {q[98]:.2f} ms ({len(ms)} requests)"


async def run(args: argparse.Namespace, host: str, port: int, pid: int, say) -> None:
    path = f"/v2/models/{args.model}/frames?stream=probe"
    req = Request(path, frame_jpeg(), {"Content-Type": "image/jpeg"})
    async with LeanClient(host, port) as client:
        for _ in range(30):  # warm-up
            await client.post(req)
        rss_before = psutil.Process(pid).memory_info().rss / 2**20
        quiet = await round_trips(client, req, time.monotonic() + args.probe_s, args.gap_s)
        started = time.monotonic()
        until = started + args.attack_s
        bodies, headers = Attack([None] * args.slow_bodies), Attack([None] * args.slow_headers)
        head = slow_body_head(host, path, int(args.announce_mb * 2**20))
        every = 16 / args.bytes_per_s
        header_text = f"GET /v2/health/live HTTP/1.1\r\nHost: {host}\r\nX-Slow: ".encode()
        rss: list[float] = []
        tasks = [asyncio.create_task(slow_connection(host, port, head, b"\0" * 16, every, until, started, bodies, i))
                 for i in range(args.slow_bodies)]
        tasks += [asyncio.create_task(slow_connection(host, port, header_text, b"a", 1.0, until, started, headers, i))
                  for i in range(args.slow_headers)]
        sampler = asyncio.create_task(sample_rss(pid, until, rss))
        await asyncio.sleep(1.0)  # every connection open and its headers (or first bytes) sent
        during = await round_trips(client, req, until, args.gap_s)
        await asyncio.gather(*tasks, sampler)
        await asyncio.sleep(2.0)
        rss_after = psutil.Process(pid).memory_info().rss / 2**20
    say(f"worker RSS: before {rss_before:.0f} MiB, peak during the attack {max(rss):.0f} MiB "
        f"(+{max(rss) - rss_before:.0f}), 2 s after it {rss_after:.0f} MiB (+{rss_after - rss_before:.0f})")
    say(f"slow bodies ({args.slow_bodies} x {args.announce_mb:g} MiB announced, {args.bytes_per_s:g} bytes/s): "
        f"{bodies.summary(args.attack_s)}")
    say(f"slow headers ({args.slow_headers} x 1 byte/s): {headers.summary(args.attack_s)}")
    say(f"normal JPEG frames, one at a time every {args.gap_s * 1000:.0f} ms: before the attack {percentiles(quiet)}; "
        f"during it {percentiles(during)}")


def measure(args: argparse.Namespace, tree: Path | None, worker_args: list[str], say) -> None:
    """Starts a worker from `tree` (None: this one) and runs the attack on it."""
    cmd = [sys.executable, "-m", "workers.serve", "--model", args.model, "--port", "0", "--batch", "1",
           "--max-batch-delay-ms", "0", "--models-dir", str(REPO_ROOT / "models"), *worker_args]
    say(f"worker: {args.model}, batch 1, from {'this tree' if tree is None else tree}; options "
        f"{' '.join(worker_args) or '(defaults)'}; host load {[round(x, 2) for x in os.getloadavg()]}")
    # The worker's log goes to a file: a pipe nobody reads until the end would fill and stop the worker.
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, cwd=tree or REPO_ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            host, port = read_ready(proc, "worker").removeprefix("http://").rsplit(":", 1)
            asyncio.run(run(args, host, int(port), proc.pid, say))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        log.seek(0)
        lines = log.read().strip().splitlines()
    say(f"worker log: {len(lines)} lines, {sum('Traceback' in x for x in lines)} tracebacks")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-yolov2")
    parser.add_argument("--slow-bodies", type=int, default=150)
    parser.add_argument("--slow-headers", type=int, default=500)
    parser.add_argument("--announce-mb", type=float, default=8.0, help="Content-Length each slow body announces")
    parser.add_argument("--bytes-per-s", type=float, default=16.0, help="rate of each slow body")
    parser.add_argument("--attack-s", type=float, default=40.0, help="how long the slow clients keep at it")
    parser.add_argument("--probe-s", type=float, default=5.0, help="normal requests before the attack")
    parser.add_argument("--gap-s", type=float, default=0.05, help="pause between normal requests")
    parser.add_argument("--before-tree", type=Path, default=None,
                        help="first measure a worker started from this checkout (started with defaults)")
    parser.add_argument("--worker-arg", action="append", default=[], help="extra option of this tree's worker")
    add_results_page_argument(parser, "worker-attack")
    args = parser.parse_args()
    zoo.build(names=[args.model], log=lambda _: None)
    findings: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        findings.append(text)

    if args.before_tree is not None:
        measure(args, args.before_tree, [], say)
        say("")
    measure(args, None, args.worker_arg, say)
    if args.results_page:
        intro = __doc__.split("\n    .venv/bin/python")[0].strip()
        page = write_results_page(args.results_page, "Worker under slow clients",
                                  f"{intro}\n\n## Findings\n\n```text\n" + "\n".join(findings) + "\n```\n")
        print(f"wrote {page}")


if __name__ == "__main__":
    main()
