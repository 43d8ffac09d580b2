"""Starts one worker process: `python -m workers.serve --model NAME --host ADDR --port P ...`;
pins it to its CPU set, prints `READY <url>` once the replicas are warmed up, and exits cleanly
(status 0) on SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from topologies.timescale import TimeScale, parse_tdf

from .deployment import WorkerSettings, resolve
from .lifecycle import RUN_KEEPALIVE_S, serving
from .limits import MIB, RequestLimits
from .runtime import keep_freed_memory, parse_cpus, pin_process
from .service import ENGINE, GUARD, STATS, create_app

_log = logging.getLogger("workers.serve")


def add_worker_arguments(parser: argparse.ArgumentParser, host_default: str = "127.0.0.1") -> None:
    """Adds the worker's options to a parser (shared by this module and `run_testbed.py worker`)."""
    parser.add_argument("--model", required=True, help="model name in the zoo (see: run_testbed.py models)")
    parser.add_argument("--host", default=host_default)
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--batch", type=int, default=None, help="max batch size B (default: model config)")
    parser.add_argument("--instances", type=int, default=None, help="replicas K (default: model config)")
    parser.add_argument("--max-batch-delay-ms", type=float, default=None, help="W (default: model config)")
    parser.add_argument("--queue-limit", type=int, default=None, help="queued queries before 503 overload")
    parser.add_argument("--cpus", type=parse_cpus, default=None, help="CPU set to pin to, e.g. 0,1 or 0-3")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads per replica (default: CPUs in --cpus / instances, else 1)")
    parser.add_argument("--inference-cgroup", type=Path, default=None, metavar="GROUP_DIR",
                        help="a cgroup directory (e.g. a cpuset) that each replica's inference thread moves into "
                             "before it loads its session, ONNX Runtime's intra-op threads following it; the event "
                             "loop stays where the worker was started (cgroup v1: `tasks`; v2: a threaded cgroup)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--profile-driven", type=Path, default=None, metavar="PROFILE_FILE",
                        help="sleep the profiled delays instead of running the network")
    parser.add_argument("--real-instances", type=int, default=None, metavar="N",
                        help="with --profile-driven: N of the replicas run the real network (the first in the "
                             "batcher's order), the others sleep the profile (default: none)")
    parser.add_argument("--real-batch-log", type=Path, default=None, metavar="FILE",
                        help="append each batch a real replica ran to FILE, one JSON line (virtual epoch ms, size, "
                             "frames answered, bytes)")
    parser.add_argument("--models-dir", type=Path, default=None, help="model repository (default: models/)")
    parser.add_argument("--max-body-mb", type=float, default=8.0, help="largest request body accepted")
    defaults = RequestLimits()
    parser.add_argument("--body-budget-mb", type=float, default=defaults.body_budget_bytes / MIB,
                        help="request bodies in flight, all together; beyond it: 503 body_budget")
    parser.add_argument("--header-timeout-s", type=float, default=defaults.header_timeout_s,
                        help="a request's headers must be in this long after its first byte, or the connection closes")
    parser.add_argument("--body-timeout-s", type=float, default=defaults.body_timeout_s,
                        help="a request's body must be in this long after its headers, or 408 and the connection closes")
    parser.add_argument("--tdf", type=parse_tdf, default=1.0, metavar="K",
                        help="time dilation factor of the run the worker serves: its times are virtual, its delays, "
                             "deadlines and profile sleeps x K in real time (default 1: none)")
    parser.add_argument("--tdf-anchor-s", type=float, default=0.0, metavar="EPOCH_S",
                        help="epoch seconds at which the run's virtual and real time coincide (default 0)")


def settings_from_args(args: argparse.Namespace) -> WorkerSettings:
    return WorkerSettings(model=args.model, max_batch_size=args.batch, max_batch_delay_ms=args.max_batch_delay_ms,
                          instances=args.instances, queue_limit=args.queue_limit, device=args.device,
                          threads=args.threads, cpus=args.cpus, profile_driven=args.profile_driven,
                          models_dir=args.models_dir, max_body_bytes=int(args.max_body_mb * 2**20),
                          time_scale=TimeScale(args.tdf, args.tdf_anchor_s), inference_cgroup=args.inference_cgroup,
                          real_instances=args.real_instances, real_batch_log=args.real_batch_log)


def limits_from_args(args: argparse.Namespace) -> RequestLimits:
    """Returns the request limits; the deadlines, given in the run's (virtual) seconds, x K in real time."""
    return RequestLimits(body_budget_bytes=int(args.body_budget_mb * MIB),
                         header_timeout_s=args.header_timeout_s * args.tdf, body_timeout_s=args.body_timeout_s * args.tdf)


async def serve(settings: WorkerSettings, host: str, port: int, announce=print,
                limits: RequestLimits | None = None) -> int:
    """Runs the worker until SIGTERM/SIGINT; returns the process exit status."""
    if settings.cpus:
        pin_process(settings.cpus)
    dep = resolve(settings)
    if dep.real_instances:  # a real replica allocates MBs per batch
        keep_freed_memory()
    app = create_app(dep, limits)
    guard = app[GUARD]
    async with serving(app, host, port, shutdown_timeout_s=5.0, header_timeout_s=guard.limits.header_timeout_s,
                       on_header_timeout=guard.on_header_timeout,
                       keepalive_timeout_s=settings.time_scale.real_duration(RUN_KEEPALIVE_S)) as service:
        engine = app[ENGINE]
        while not engine.ready.is_set():
            if engine.startup_error:
                print(f"worker failed to start: {engine.startup_error}", file=sys.stderr, flush=True)
                return 1
            if service.stop.is_set():
                return 0
            await asyncio.sleep(0.02)
        _log.info("%s: %d replica(s), %d real (ONNX Runtime, first in the batcher's order), %d profile-driven",
                  dep.variant, dep.instances, dep.real_instances, dep.instances - dep.real_instances)
        service.announce(announce)
        await service.stop.wait()
        t = app[STATS].totals
        _log.info("%s: served %d queries, %d by real replicas, in %d batches (%d real)", dep.variant, t.served,
                  t.served_real, t.batches, t.batches_real)
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.serve", description=__doc__)
    add_worker_arguments(parser)
    args = parser.parse_args(argv)
    # One line per event worth a look (a dropped client, a connection closed for slowness); no access log.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        settings = settings_from_args(args)
        return asyncio.run(serve(settings, args.host, args.port, limits=limits_from_args(args)))
    except (KeyError, ValueError, OSError) as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
