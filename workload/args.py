"""The workload arguments every command shares (`--trace`, `--lambda`, `--duration`, `--seed`): one parser,
one reader, and `Workload.build`, which turns them into the streams to run.

Each command states its defaults once, where it registers the arguments (`add_workload_arguments`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from workload.arrivals import RateSchedule, check_duration, generate_trace, workload_rng
from workload.trace import Trace, read_trace

_DEFAULT_DURATION = "_workload_default_duration_s"


@dataclass(frozen=True)
class Workload:
    """What to run: a trace file to replay, or Poisson arrivals generated from a rate schedule."""

    lambda_per_min: str = "60"
    """New streams per minute per antenna: a number, or a schedule START_S:LAMBDA,... (RateSchedule)."""
    duration_s: float | None = None
    """Seconds of queries; None: the default duration when generating, the whole trace when replaying."""
    seed: int = 1
    """Seed of the generated arrivals (and, by convention, of the run)."""
    trace: Path | None = None
    """Replay this trace (CSV) instead of generating arrivals."""
    default_duration_s: float = 600.0
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

    def build(self, antennas: tuple[str, ...]) -> tuple[Trace, float]:
        """Returns the streams to run and the duration (s) over which queries are sent."""
        if self.trace is not None:
            trace = read_trace(self.trace, antennas)
            end = self.duration_s if self.duration_s is not None else float(trace.end_s.max(initial=0.0))
            return trace, end
        duration = self.duration_s if self.duration_s is not None else self.default_duration_s
        schedule = RateSchedule.parse(self.lambda_per_min)
        return generate_trace(antennas, schedule, duration, workload_rng(self.seed)), duration


def add_workload_arguments(
    parser: argparse.ArgumentParser, *, lambda_default: str, duration_default_s: float, seed_default: int = 1,
    replay: bool = True,
) -> None:
    """Adds --lambda, --duration, --seed (and --trace with `replay`) with this command's defaults."""
    if replay:
        parser.add_argument("--trace", type=Path, default=None, help="replay this trace (CSV) instead of generating load")
    parser.add_argument(
        "--lambda", dest="lambda_per_min", default=lambda_default,
        help=f"new streams (clients) per minute per antenna: a number or a schedule START_S:LAMBDA,... "
             f"(default {lambda_default})")
    parser.add_argument(
        "--duration", type=float, default=None,
        help=f"seconds of queries (default {duration_default_s:g}" + ("; with --trace: the whole trace)" if replay else ")"))
    parser.add_argument("--seed", type=int, default=seed_default,
                        help=f"seed of the workload and of the run (default {seed_default})")
    parser.set_defaults(**{_DEFAULT_DURATION: duration_default_s})


def workload_from_args(args: argparse.Namespace) -> Workload:
    """Returns the workload the arguments added by `add_workload_arguments` describe (refuses bad values)."""
    trace = getattr(args, "trace", None)
    return Workload(lambda_per_min=str(args.lambda_per_min), duration_s=args.duration, seed=int(args.seed),
                    trace=Path(trace) if trace else None, default_duration_s=getattr(args, _DEFAULT_DURATION))
