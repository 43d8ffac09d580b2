"""Sweeps: independent cases run where the user says (this process, a local process pool, a Ray cluster),
their results handed back in the cases' order and equal to the serial loop's.

Owns the engine record (`Engine`), its command-line options (`--workers`, `--ray`), and the runner
(`CaseRunner.map`, `run_cases`). A case carries every seed it needs, so where it runs changes nothing; the
simulator below knows nothing of this. Ray is optional (`pip install -e .[ray]`): training/sweep_ray.py.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, TypeVar

C = TypeVar("C")
R = TypeVar("R")
S = TypeVar("S")
CaseFn = Callable[[Any, Any], Any]
"""fn(shared, case) -> result: a module-level function (a worker imports it by name)."""

RAY_LOCAL = "local"
"""`--ray local`: start a Ray instance on this machine (for trials and tests) instead of joining a cluster."""


def usable_cores() -> int:
    """Returns the cores this process may run on (its CPU affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Engine:
    """Where a sweep's cases run: serially here, on a local process pool, or on a Ray cluster."""

    workers: int | None = None
    """Local worker processes; 1 runs the cases serially in this process; None: every usable core. With
    `ray_address`: the CPUs of a Ray instance started here (`local`), ignored when joining a cluster."""
    ray_address: str | None = None
    """Ray cluster to run on (`ray.init(address=...)`, e.g. `auto` or `ray://HOST:10001`); `local` starts one."""

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers={self.workers}: need at least 1")

    @property
    def local_workers(self) -> int:
        """Returns the local processes this engine runs (1: serial)."""
        return self.workers if self.workers is not None else usable_cores()

    def describe(self) -> str:
        """Returns where the cases run, as a log line says it."""
        if self.ray_address is not None:
            return "Ray, local instance" if self.ray_address == RAY_LOCAL else f"Ray cluster at {self.ray_address}"
        n = self.local_workers
        return "serially in this process" if n == 1 else f"{n} local worker processes"


SERIAL = Engine(workers=1)
"""The plain loop in this process: the reference every engine's results equal."""


def add_engine_arguments(parser: argparse.ArgumentParser, what: str = "the runs", ray_what: str | None = None) -> None:
    """Adds --workers N and --ray ADDRESS (dest `workers`, `ray`): where the command's cases (`what`; on Ray
    `ray_what`, default the same) run."""
    parser.add_argument("--workers", type=positive_int, default=None, metavar="N",
                        help=f"local worker processes for {what}, 1 = serially in this process (default: every "
                             f"usable core, here {usable_cores()}); the results do not depend on it")
    parser.add_argument("--ray", default=None, metavar="ADDRESS",
                        help=f"run {ray_what or what} on a Ray cluster (`auto`, `ray://HOST:10001`; `local` starts "
                             "one here with --workers CPUs); needs `pip install -e .[ray]`")


def positive_int(text: str) -> int:
    """Returns the whole number >= 1 that `text` gives (an argparse type)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: need at least 1")
    return n


def engine_from_args(args: argparse.Namespace) -> Engine:
    """Returns the engine the options added by `add_engine_arguments` name."""
    return Engine(workers=args.workers, ray_address=args.ray)


class CaseRunner:
    """An open engine (worker processes started, a Ray connection made) that runs one or more sweeps.

    `with CaseRunner(engine) as runner: runner.map(fn, cases, shared)`; workers start on the first map and
    stay for the next ones, so several sweeps of one command pay their start-up once.
    """

    def __init__(self, engine: Engine = SERIAL) -> None:
        self.engine = engine
        self._backend: _Backend | None = None

    def __enter__(self) -> CaseRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stops the workers (or leaves Ray); the runner can be opened again by the next map."""
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def map(self, fn: Callable[[S, C], R], cases: Sequence[C], shared: S = None,
            on_result: Callable[[int, R], None] | None = None, cost: Callable[[C], float] | None = None) -> list[R]:
        """Returns [fn(shared, case) for case in cases], in the cases' order, whichever engine runs them.

        `shared` goes to every case (pickled once per case; Ray puts it in its object store once);
        `on_result(index, result)` is called in this process as each case finishes, in completion order (to
        write a long case's file or print progress at once). `cost(case)`, an estimate of a case's run time,
        makes workers take the costliest cases first, so that no long case starts while the others idle at the
        end. A case's exception stops the sweep: pending cases are cancelled and the exception is raised here.
        """
        cases = list(cases)
        results: list[Any] = [None] * len(cases)
        for i, r in self.imap_unordered(fn, cases, shared, cost):
            results[i] = r
            if on_result is not None:
                on_result(i, r)
        return results

    def imap_unordered(self, fn: Callable[[S, C], R], cases: Sequence[C], shared: S = None,
                       cost: Callable[[C], float] | None = None) -> Iterator[tuple[int, R]]:
        """Yields (index, fn(shared, cases[index])) as cases finish (serially: in order)."""
        if not cases:
            return iter(())
        if self._backend is None:
            self._backend = _open_backend(self.engine)
        order = list(range(len(cases)))
        if cost is not None and not isinstance(self._backend, _Serial):
            order.sort(key=lambda i: -cost(cases[i]))  # stable: equal costs keep the cases' order
        return self._backend.run(fn, [(i, cases[i]) for i in order], shared)


def run_cases(fn: Callable[[S, C], R], cases: Sequence[C], shared: S = None, engine: Engine | CaseRunner = SERIAL,
              on_result: Callable[[int, R], None] | None = None, cost: Callable[[C], float] | None = None) -> list[R]:
    """Returns [fn(shared, case) for case in cases] as `CaseRunner.map`, on an engine (opened and closed here)
    or on an open runner (left open)."""
    if isinstance(engine, CaseRunner):
        return engine.map(fn, cases, shared, on_result, cost)
    with CaseRunner(engine) as runner:
        return runner.map(fn, cases, shared, on_result, cost)


# -- backends ---------------------------------------------------------------------------------------------
class _Backend:
    def run(self, fn: CaseFn, items: list[tuple[int, Any]], shared: Any) -> Iterator[tuple[int, Any]]:
        """Runs fn(shared, case) for each (index, case), started in the items' order; yields (index, result)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


def _open_backend(engine: Engine) -> _Backend:
    if engine.ray_address is not None:
        from training.sweep_ray import RayBackend

        return RayBackend(engine)
    if engine.local_workers == 1:
        return _Serial()
    return _LocalPool(engine.local_workers)


class _Serial(_Backend):
    def run(self, fn: CaseFn, items: list[tuple[int, Any]], shared: Any) -> Iterator[tuple[int, Any]]:
        for i, case in items:
            yield i, fn(shared, case)


class _LocalPool(_Backend):
    """A pool of `spawn`ed interpreters: a fresh process each, safe beside the torch and ONNX Runtime threads
    of this one (fork is not), on every OS. Each warms the simulator's compiled loop once at start."""

    def __init__(self, workers: int) -> None:
        warm_simulator()  # compile or load the numba cache here first, so workers only read it
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=warm_simulator)

    def run(self, fn: CaseFn, items: list[tuple[int, Any]], shared: Any) -> Iterator[tuple[int, Any]]:
        pending: dict[Future, int] = {self.pool.submit(fn, shared, c): i for i, c in items}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    yield pending.pop(f), f.result()
        finally:
            for f in pending:
                f.cancel()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


_warm = False


def warm_simulator() -> None:
    """Loads the simulator's compiled inner loop in this process (compiling it into numba's cache if it is
    not there yet) by a 5-s run on full-edge, once per process."""
    global _warm
    if _warm:
        return
    from scheduler.profiles import PROVISIONAL_PROFILE, load_profiles
    from scheduler.system import build_system
    from simulator.engine import SimConfig, Simulation
    from topologies import load_topology
    from workload.arrivals import RateSchedule, generate_trace, workload_rng

    system = build_system(load_topology("full-edge"), load_profiles(PROVISIONAL_PROFILE))
    trace = generate_trace(system.antennas, RateSchedule.constant(60.0), 5.0, workload_rng(0))
    Simulation(system, trace, SimConfig(window_s=1.0, duration_s=5.0), seed=0).run(0)
    _warm = True
