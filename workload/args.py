"""The workload arguments every command shares: one parser and one reader of each.

- one run (simulate, trace, the live run, train, the simulator benchmark): `--trace`, `--lambda` (a number or a
  rate schedule; a number only where `number_only`), `--duration`, `--seed`, read into a `Workload`, whose
  `build` gives the streams to run;
- a sweep (evaluate and the experiments): `--lambdas`, `--seeds` (comma-separated lists), `--duration`, read
  into a `Sweep`: every lambda with every seed.

Each command states its defaults once, where it registers the arguments.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workload.arrivals import RateSchedule, check_duration, generate_trace, workload_rng
from workload.trace import Trace, read_trace

_DEFAULT_DURATION = "_workload_default_duration_s"


@dataclass(frozen=True)
class Workload:
    """What to run: a trace file to replay, or Poisson arrivals generated from a rate schedule. No field has a
    default: each command gives its own (`add_workload_arguments`), so there is one per command."""

    lambda_per_min: str
    """New streams per minute per antenna: a number, or a schedule START_S:LAMBDA,... (RateSchedule)."""
    duration_s: float | None
    """Seconds of queries; None: the default duration when generating, the whole trace when replaying."""
    seed: int
    """Seed of the generated arrivals (and, by convention, of the run)."""
    trace: Path | None
    """Replay this trace (CSV) instead of generating arrivals."""
    default_duration_s: float
    """The duration of a generated workload when `duration_s` is None (the command's default)."""

    def __post_init__(self) -> None:
        if self.duration_s is not None:
            check_duration(self.duration_s)
        if self.trace is None:
            RateSchedule.parse(self.lambda_per_min)  # refuses a bad --lambda before anything runs

    @property
    def label(self) -> str:
        """The load as summaries print it: the rate schedule, or `trace:<file name>`."""
        return f"trace:{self.trace.name}" if self.trace is not None else str(RateSchedule.parse(self.lambda_per_min))

    @property
    def generated_duration_s(self) -> float:
        """Seconds of a generated workload: `duration_s`, else the command's default."""
        return self.duration_s if self.duration_s is not None else self.default_duration_s

    def build(self, antennas: tuple[str, ...]) -> tuple[Trace, float]:
        """Returns the streams to run and the duration (s) over which queries are sent."""
        if self.trace is not None:
            trace = read_trace(self.trace, antennas)
            end = self.duration_s if self.duration_s is not None else float(trace.end_s.max(initial=0.0))
            return trace, end
        duration = self.generated_duration_s
        schedule = RateSchedule.parse(self.lambda_per_min)
        return generate_trace(antennas, schedule, duration, workload_rng(self.seed)), duration


def lambda_number(text: str) -> float:
    """Returns a constant lambda (new streams per minute per antenna): a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (np.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r}: lambda must be a finite number >= 0")
    return value


def lambda_list(text: str) -> tuple[float, ...]:
    """Returns the lambdas of a comma-separated list (empty items ignored), each as `lambda_number`."""
    values = tuple(lambda_number(x.strip()) for x in text.split(",") if x.strip())
    if not values:
        raise argparse.ArgumentTypeError(f"{text!r}: no lambda given")
    return values


def duration_arg(text: str) -> float:
    """Returns a command line's duration in seconds (finite, > 0), refused at parse time with argparse's one line."""
    try:
        return check_duration(float(text), "")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number of seconds > 0") from None


def seed_list(text: str) -> tuple[int, ...]:
    """Returns the seeds of a comma-separated list of whole numbers (empty items ignored)."""
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated whole numbers") from None
    if not values:
        raise argparse.ArgumentTypeError(f"{text!r}: no seed given")
    return values


def add_lambda_argument(parser: argparse.ArgumentParser, *, default: str, number_only: bool = False,
                        what: str | None = None) -> None:
    """Adds --lambda (dest `lambda_per_min`): a number or a rate schedule, or with `number_only` a number (float).
    `what` replaces the help's description; the default is appended to it."""
    if what is None:
        what = "new streams (clients) per minute per antenna: " + \
            ("a number" if number_only else "a number or a schedule START_S:LAMBDA,...")
    parser.add_argument("--lambda", dest="lambda_per_min", default=default,
                        type=lambda_number if number_only else str, help=f"{what} (default {default})")


def add_seed_argument(parser: argparse.ArgumentParser, *, default: int = 1,
                      what: str = "seed of the workload and of the run") -> None:
    """Adds --seed (an int) with this command's default."""
    parser.add_argument("--seed", type=int, default=default, help=f"{what} (default {default})")


def add_workload_arguments(
    parser: argparse.ArgumentParser, *, lambda_default: str, duration_default_s: float, seed_default: int = 1,
    replay: bool = True, number_only: bool = False,
) -> None:
    """Adds --lambda, --duration, --seed (and --trace with `replay`) with this command's defaults; with
    `number_only`, --lambda takes a number only (no rate schedule)."""
    if replay:
        parser.add_argument("--trace", type=Path, default=None, help="replay this trace (CSV) instead of generating load")
    add_lambda_argument(parser, default=lambda_default, number_only=number_only)
    parser.add_argument(
        "--duration", type=float, default=None,
        help=f"seconds of queries (default {duration_default_s:g}" + ("; with --trace: the whole trace)" if replay else ")"))
    add_seed_argument(parser, default=seed_default)
    parser.set_defaults(**{_DEFAULT_DURATION: duration_default_s})


def workload_from_args(args: argparse.Namespace) -> Workload:
    """Returns the workload the arguments added by `add_workload_arguments` describe (refuses bad values)."""
    trace = getattr(args, "trace", None)
    return Workload(lambda_per_min=str(args.lambda_per_min), duration_s=args.duration, seed=int(args.seed),
                    trace=Path(trace) if trace else None, default_duration_s=getattr(args, _DEFAULT_DURATION))


@dataclass(frozen=True)
class Sweep:
    """Runs at constant lambdas: every lambda with every seed, each `duration_s` of traffic."""

    lambdas_per_min: tuple[float, ...]
    """New streams per minute per antenna, one run per lambda and seed."""
    seeds: tuple[int, ...]
    """Seeds of the traces and of the simulator runs."""
    duration_s: float
    """Seconds of traffic per run."""

    def __post_init__(self) -> None:
        check_duration(self.duration_s)


def add_sweep_arguments(parser: argparse.ArgumentParser, *, lambdas_default: str, seeds_default: str = "1,2,3",
                        duration_default_s: float = 600.0) -> None:
    """Adds --lambdas, --seeds (comma-separated lists) and --duration with this command's defaults."""
    parser.add_argument("--lambdas", type=lambda_list, default=lambdas_default,
                        help=f"constant lambdas (new streams per minute per antenna), comma-separated; one run per "
                             f"lambda and seed (default {lambdas_default})")
    parser.add_argument("--seeds", type=seed_list, default=seeds_default,
                        help=f"seeds of the traces and of the simulator runs, comma-separated (default {seeds_default})")
    parser.add_argument("--duration", type=duration_arg, default=duration_default_s,
                        help=f"seconds of traffic per run (default {duration_default_s:g})")


def sweep_from_args(args: argparse.Namespace) -> Sweep:
    """Returns the sweep the arguments added by `add_sweep_arguments` describe (refuses a bad duration)."""
    return Sweep(lambdas_per_min=tuple(args.lambdas), seeds=tuple(args.seeds), duration_s=float(args.duration))
