"""Benchmarks the live testbed end to end on full-edge with profile-driven workers: the queries/s per
antenna it sustains before the success ratio drops because of the testbed itself, where the CPU goes,
and the scheduler's overhead per query on the live path (p50, p99). Needs root.

    .venv/bin/python benchmarks/bench_live.py [--rates 25,50,100,200] [--duration 20] [--mtu 9000,1500]
                                              [--overhead-frames 1000] [--only-overhead] [--tdf K|auto]
                                              [--stop-unfaithful] [--results-page]

Prints its tables; with --results-page also writes them to docs/results/live-load.md (analysis.resultspage).

Each rate runs its own network: per antenna `rate / 25` streams of 25 fps, 40 kB frames, a 1 s budget
and a low accuracy floor, bound by load-balancing, so scheduling never limits them (the profiles'
capacity is far above these rates); a drop in success is then the testbed's own (CPU) limit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.resultspage import add_results_page_argument, write_results_page  # noqa: E402
from live.cores import LiveRunBusy, live_command  # noqa: E402
from live.orchestrate import run_live  # noqa: E402
from live.procs import Proc, wait_ready  # noqa: E402
from live.report import LiveResult  # noqa: E402
from live.rundir import RunDir, write_t0  # noqa: E402
from live.spec import RunSpec, write_spec  # noqa: E402
from topologies import load_topology  # noqa: E402
from topologies.timescale import parse_tdf_or_auto  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STREAM_FPS = 25
FRAME_BYTES = 40_000
BUDGET_MS = 1000.0
SUSTAINED_SUCCESS = 0.95
SUSTAINED_LAG_MS = 100.0


def write_trace(path: Path, antennas: tuple[str, ...], per_antenna_qps: int, duration_s: float) -> None:
    """Writes streams of STREAM_FPS that together send per_antenna_qps at every antenna for the duration."""
    lines = ["stream_id,antenna,start_s,duration_s,app,fps,frame_bytes,max_delay_ms,min_accuracy,task"]
    sid = 0
    for a in antennas:
        for k in range(max(1, per_antenna_qps // STREAM_FPS)):
            start = round(k * 0.037, 3)  # spread the frames of the streams within a frame period
            lines.append(
                f"{sid},{a},{start},{duration_s + 5},video-analytics,{STREAM_FPS},{FRAME_BYTES},"
                f"{BUDGET_MS},0.2,object-detection"
            )
            sid += 1
    path.write_text("\n".join(lines) + "\n")


def one_rate(rate: int, duration_s: float, mtu: int, base: Path, tdf: float | None = 1.0) -> dict:
    """Returns the figures of one run at `rate` queries/s per antenna (virtual queries/s at --tdf K: the run
    lasts K times longer in real time; None: the K its pilots choose, live/autotdf.py)."""
    antennas = tuple(a.name for a in load_topology("full-edge").antennas)
    trace = base / f"trace-{rate}-{mtu}.csv"
    write_trace(trace, antennas, rate, duration_s)
    config = RunSpec(
        topo="full-edge",
        policy="load-balancing",
        trace=trace,
        duration_s=duration_s,
        out=base / f"run-{rate}-{mtu}",
        real_sites=(),
        pcap="none",
        measure_links=False,
        mtu=mtu,
        tdf=tdf,
    )
    auto = tdf is None
    t = time.monotonic()
    result: LiveResult = run_live(config, log=_auto_lines if auto else lambda _: None)
    wall = time.monotonic() - t
    pilots_s = 0.0
    if auto:  # its pilots went first: the run alone is its own wall time (bring-up to summary), the rest theirs
        wall, pilots_s = result.wall_s, wall - result.wall_s
    s = result.summary
    tdf = float(json.loads((result.out / "spec.json").read_text())["tdf"])  # the K it ran at (auto: chosen)
    lags = [v.get("lag_p99_ms", 0.0) for v in s.extra.get("sources", {}).values()]
    overhead = [
        v["overhead_us"] for v in result.scheduler_stats.values() if v.get("overhead_us", {}).get("n")
    ]
    n = sum(o["n"] for o in overhead)
    cpu = s.extra.get("cpu_s", {})
    return {
        "rate_per_antenna_qps": rate,
        "mtu": mtu,
        "queries": result.recorded_queries,
        "answered_per_antenna_qps": round(
            s.overall.queries * (s.overall.success + s.overall.failed) / duration_s / len(antennas), 1
        ),
        "success": round(s.overall.success, 4),
        "failed": round(s.overall.failed, 4),
        "rejected": round(s.overall.rejected, 4),
        "reasons": result.reasons,
        "source_lag_p99_ms": round(max(lags, default=0.0), 1),
        "scheduler_overhead_p50_us": round(sum(o["p50"] * o["n"] for o in overhead) / n, 1) if n else None,
        "scheduler_overhead_p99_us": round(max(o["p99"] for o in overhead), 1) if n else None,
        "cpu_s": cpu,
        "tdf": tdf,
        "tdf_auto": auto,
        "cpu_cores": round(sum(cpu.values()) / ((duration_s + 5) * tdf), 2),  # CPU s per real s
        "wall_s": round(wall, 1),
        "pilots_s": round(pilots_s, 1),
        "verdict": s.extra.get("fidelity", {}).get("verdict", ""),
        "run_dir": str(result.out),
    }


def _auto_lines(line: str) -> None:
    """Prints `--tdf auto`'s lines of a run (its pilots and the K chosen), nothing else of it."""
    if line.startswith("--tdf auto"):
        print(line, flush=True)


def _start(argv: list[str], log: Path) -> tuple[Proc, str]:
    """Starts a service on loopback and returns it with the URL of its READY line."""
    proc = Proc(log.stem, None, argv, log)
    proc.start()
    wait_ready([proc], 60.0)
    return proc, proc.url


def overhead_loopback(n: int, base: Path) -> dict:
    """Returns the scheduler's cost on the live path, on loopback (no emulated network, no contention
    from other testbed processes): n frames one at a time through the scheduler and n straight to the
    worker; the scheduler's own handler time (p50, p99) and the round trip it adds."""
    import asyncio

    import aiohttp
    import numpy as np

    from live.frames import JpegSizer
    from scheduler.profiles import default_profile_path

    py = sys.executable
    worker, wurl = _start(
        [
            py,
            "-m",
            "workers.serve",
            "--model",
            "mobilenet-ssd",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--batch",
            "1",
            "--instances",
            "4",
            "--max-batch-delay-ms",
            "0",
            "--profile-driven",
            str(default_profile_path()),
        ],
        base / "worker.log",
    )
    run = RunDir(base / "scheduler-run")  # the scheduler reads a run dir: spec, workers, t0
    run.make_dirs()
    write_spec(RunSpec(topo="tiny", policy="least-impedance", out=run.root), run.spec)
    run.workers.write_text(json.dumps({"mobilenet-ssd-cpu-b1@ant1": {"url": wurl, "model": "mobilenet-ssd"}}))
    write_t0(run.t0, time.time())
    sched, surl = _start(
        [py, "-m", "live.scheduler", "--spec", str(run.spec), "--antenna", "ant1", "--host", "127.0.0.1",
         "--port", "0"],
        base / "scheduler.log",
    )
    frame = JpegSizer().frame(FRAME_BYTES)

    async def drive() -> tuple[list[float], list[float], dict]:
        via, direct = [], []
        async with aiohttp.ClientSession() as s:
            body = {
                "stream_id": 1,
                "fps": 10,
                "frame_bytes": FRAME_BYTES,
                "max_delay_ms": 1e6,
                "min_accuracy": 0.2,
            }
            async with s.post(f"{surl}/streams", json=body) as r:
                assert (await r.json())["cluster"] == "ant1"
            for k in range(n):
                for url, out in (
                    (f"{surl}/streams/1/frames", via),
                    (f"{wurl}/v2/models/mobilenet-ssd/frames", direct),
                ):
                    t = time.perf_counter()
                    async with s.post(
                        url,
                        data=frame,
                        params={"query": str(k), "stream": "1"},
                        headers={"Content-Type": "image/jpeg"},
                    ) as r:
                        await r.read()
                    out.append((time.perf_counter() - t) * 1e3)
            async with s.get(f"{surl}/status") as r:
                return via, direct, await r.json()

    try:
        via, direct, status = asyncio.run(drive())
    finally:
        for p in (sched, worker):
            p.stop()
    added = np.asarray(via) - np.asarray(direct)
    return {
        "frames": n,
        "handler_p50_us": round(status["overhead_us"]["p50"], 1),
        "handler_p99_us": round(status["overhead_us"]["p99"], 1),
        "added_rtt_p50_ms": round(float(np.percentile(added, 50)), 3),
        "added_rtt_p99_ms": round(float(np.percentile(added, 99)), 3),
        "rtt_direct_p50_ms": round(float(np.percentile(direct, 50)), 3),
        "rtt_via_scheduler_p50_ms": round(float(np.percentile(via, 50)), 3),
    }


def load_table(rows: list[dict]) -> list[str]:
    """Returns the Markdown table of the load runs and, per MTU, the rate sustained."""
    auto = any(r.get("tdf_auto") for r in rows)  # --tdf auto: each rate's own K, chosen by its pilots
    lines = [
        "| MTU | offered q/s/antenna | " + ("K (auto) | verdict | " if auto else "") + "answered q/s/antenna | "
        "success | source lag p99 ms | sched overhead p50/p99 us | CPU cores | CPU s by group |",
        "|---|---|---|---|---|---|---|---|" + ("---|---|" if auto else ""),
    ]
    for r in rows:
        groups = ", ".join(
            f"{k} {v:.0f}" for k, v in sorted(r["cpu_s"].items(), key=lambda kv: -kv[1]) if v >= 0.5
        )
        lines.append(
            f"| {r['mtu']} | {r['rate_per_antenna_qps']} | "
            + (f"{r['tdf']:g} | {r['verdict'] or '-'} | " if auto else "")
            + f"{r['answered_per_antenna_qps']} | "
            f"{r['success']:.3f} | "
            f"{r['source_lag_p99_ms']} | {r['scheduler_overhead_p50_us']}/{r['scheduler_overhead_p99_us']} | "
            f"{r['cpu_cores']} | {groups} |"
        )
    lines.append("")
    for mtu in sorted({r["mtu"] for r in rows}):
        ok = [
            r["rate_per_antenna_qps"]
            for r in rows
            if r["mtu"] == mtu
            and r["success"] >= SUSTAINED_SUCCESS
            and r["source_lag_p99_ms"] <= SUSTAINED_LAG_MS
        ]
        lines.append(
            f"MTU {mtu}: sustained (success >= {SUSTAINED_SUCCESS}, "
            f"source lag p99 <= {SUSTAINED_LAG_MS:g} ms): "
            f"{max(ok) if ok else 'none of the rates'} q/s per antenna (goal 1000)"
        )
    return lines


def results_page(overhead: dict | None, rows: list[dict], duration_s: float) -> str:
    """Returns the Markdown body of docs/results/live-load.md: what was measured, the tables."""
    body = [__doc__.split("\n\n")[0].replace("\n", " "), ""]
    if overhead is not None:
        body += ["## Scheduler overhead on the live path (loopback, one frame at a time)", "",
                 "| " + " | ".join(overhead) + " |", "|" + "---|" * len(overhead),
                 "| " + " | ".join(str(v) for v in overhead.values()) + " |", ""]
    if rows:
        k = rows[0].get("tdf", 1.0)
        dilation = (", time dilation --tdf auto (each rate's K in the table): virtual rates and seconds"
                    if any(r.get("tdf_auto") for r in rows) else
                    f", time dilation K = {k:g}: virtual rates and seconds" if k != 1.0 else "")
        body += [f"## Load on full-edge ({duration_s:g} s per rate, profile-driven workers, load-balancing{dilation})", "",
                 *load_table(rows)]
    return "\n".join(body)


def measure(args: argparse.Namespace, base: Path) -> int:
    """Runs the overhead test and the load runs `args` ask for, under `base`; prints and writes what they measured."""
    ov = None
    if args.overhead_frames:
        ov = overhead_loopback(args.overhead_frames, base)
        print(
            "scheduler overhead on the live path (loopback, one frame at a time): " + json.dumps(ov),
            flush=True,
        )
    rows = []
    if not args.only_overhead:
        for mtu in (int(x) for x in args.mtu.split(",")):
            for rate in (int(x) for x in args.rates.split(",")):
                row = one_rate(rate, args.duration, mtu, base, args.tdf)
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k not in ("reasons", "run_dir")}), flush=True)
                if args.stop_unfaithful and row["verdict"] != "faithful":
                    print(f"{rate} queries/s per antenna judged {row['verdict'] or 'without a verdict'}: no higher "
                          f"rate run at MTU {mtu}", flush=True)
                    break
        print()
        print("\n".join(load_table(rows)))
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1) + "\n")
        print(f"run dirs under {base}")
    if args.results_page and (ov is not None or rows):
        page = write_results_page(args.results_page, "Live testbed load and scheduler overhead",
                                  results_page(ov, rows, args.duration))
        print(f"wrote {page}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="25,50,100,200", help="queries/s per antenna, comma separated")
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--mtu", default="9000", help="MTU(s) to compare, comma separated")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--overhead-frames", type=int, default=1000, help="frames of the loopback overhead test (0: skip)"
    )
    ap.add_argument("--only-overhead", action="store_true", help="skip the end-to-end load runs")
    ap.add_argument("--tdf", type=parse_tdf_or_auto, default=1.0, metavar="K|auto",
                    help="time dilation factor of the load runs: rates and durations are virtual, each run lasts "
                         "K times longer in real time (default 1); auto: each rate at the "
                         "K its pilots choose (the smallest that passed, three at most: docs/live-run.md#time-dilation; "
                         "pilots beside its run dir)")
    ap.add_argument("--stop-unfaithful", action="store_true",
                    help="run no higher rate (at that MTU) once a rate is judged not faithful by the fidelity monitor")
    add_results_page_argument(ap, "live-load")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-live-"))
    try:  # no other live run beside the overhead test or between two rates (the overhead test alone: no lock)
        with contextlib.nullcontext() if args.only_overhead else live_command(base):
            return measure(args, base)
    except LiveRunBusy as exc:
        with contextlib.suppress(OSError):
            base.rmdir()  # still empty
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
