"""Whether an antenna's radio carries the paper's loads: the load offered to it against its rate, and success with
and without the radio's queue, over time.

    .venv/bin/python experiments/radio_load.py [--topo full-edge] [--lambdas 20,60,100] [--seeds 1,2,3] \\
        [--duration 600] [--policies closest,least-impedance,load-balancing] [--results-page]

A radio sends one message at a time at its rate (`SimConfig.radio_queueing`, on by default, as the testbed's
wires and a real link do). This file owns the check of what that does at a load: for each lambda, seed and
policy it simulates the `evaluate` trace (`training.rollout.EvalCase`, simulator seed = trace seed) with the
radio's queue and without it, and reports
- the load offered to the radio: the frames that went up it (every query past its radio, `t_sched_ms` known:
  a stream rejected when it opens sends none, on the testbed too; a query a full worker queue refused did
  cross it), in Mbit/s per antenna and 1 s of sending, over the run after `--settled` s (new streams keep
  opening while the first close: about three mean lifetimes pass before the number of open streams settles),
  its median, 90th percentile and maximum, and the share of antenna-seconds above the radio's rate;
- the first second in which an antenna was offered more than its radio's rate;
- success (queries answered in time) over the run, with the queue and without, and per 60 s with it;
- success on the 120 s traces of the same lambda and seed (`compare --duration 120`), which the time-dilated
  validation's paper-load cases replay at lambda 20 and 60 (docs/results/dilation.md): a 120 s trace is its own
  draw, not the first 120 s of the longer one.
Beside each lambda, the mean-field load: lambda / 60 x the bits a stream sends over its lifetime
(`workload.apps.mean_bits_per_stream`), in Mbit/s per antenna once the open streams have settled, every stream
admitted.
`--results-page` also writes docs/results/radio-load.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.records import ONTIME, QueryBatch  # noqa: E402
from analysis.resultspage import add_results_page_argument, write_results_page  # noqa: E402
from scheduler.core import policy_index  # noqa: E402
from scheduler.names import PROFILES_OPTION_HELP  # noqa: E402
from scheduler.profiles import load_profiles  # noqa: E402
from scheduler.system import SystemModel, build_system  # noqa: E402
from simulator.engine import SimConfig, Simulation  # noqa: E402
from topologies import load_topology  # noqa: E402
from training.rollout import SIM_WINDOW_S, EvalCase  # noqa: E402
from workload.apps import mean_bits_per_stream  # noqa: E402
from workload.args import add_sweep_arguments, sweep_from_args  # noqa: E402

POLICIES = "closest,least-impedance,load-balancing"
SHORT_S = 120.0
"""The length of the time-dilated validation's paper-load runs, whose traces are simulated too."""
PERIOD_S = 60.0
"""Success over time in periods of this length."""


@dataclass(frozen=True)
class RadioRun:
    """One simulated run: its success, and the load offered to each antenna's radio per second."""

    success: float
    success_per_period: np.ndarray
    """Per PERIOD_S of sending (the last one possibly shorter); NaN where no query was sent."""
    load_mbps: np.ndarray
    """[antenna, second]: Mbit/s of the frames sent up the antenna's radio in that second of sending."""


RunKey = tuple[float, int, str, bool]
"""(lambda, seed, policy, radio_queueing)."""


def mean_field_mbps(lambda_per_min: float) -> float:
    """Returns lambda / 60 x the bits a stream sends over its lifetime, in Mbit/s: an antenna's radio load once
    its open streams have settled, every stream admitted."""
    return lambda_per_min / 60.0 * mean_bits_per_stream() / 1e6


def simulate(system: SystemModel, case: EvalCase, policy: str, radio_queueing: bool) -> RadioRun:
    """Runs one policy on the case's trace and measures what `RadioRun` holds."""
    trace = case.trace(system)
    seconds = max(int(np.ceil(case.duration_s)), 1)
    load_bits = np.zeros((len(system.antennas), seconds))
    frame_bits = np.zeros(int(trace.stream_id.max(initial=0)) + 1)
    frame_bits[trace.stream_id] = trace.frame_bytes * 8.0
    index = {name: i for i, name in enumerate(system.antennas)}

    def count(b: QueryBatch) -> None:
        up = np.isfinite(b.numbers["t_sched_ms"])  # past the radio
        codes, labels = b.codes["antenna"]
        antenna = np.array([index[str(x)] for x in labels], dtype=np.int64)[codes[up]]
        second = np.minimum((b.numbers["t_send_ms"][up] // 1000.0).astype(np.int64), seconds - 1)
        np.add.at(load_bits, (antenna, second), frame_bits[b.numbers["stream_id"][up].astype(np.int64)])

    config = SimConfig(window_s=SIM_WINDOW_S, duration_s=case.duration_s, radio_queueing=radio_queueing)
    sim = Simulation(system, trace, config, seed=case.seed, record_sink=count)
    sim.run(policy_index(policy))
    counts = sim.tally.trimmed(sim.windows).sum(axis=1)  # [window of sending, outcome]
    per_window = int(round(PERIOD_S / SIM_WINDOW_S))
    periods = [counts[w:w + per_window].sum(axis=0) for w in range(0, len(counts), per_window)]
    widths = np.ones(seconds)
    widths[-1] = case.duration_s - (seconds - 1)  # a last partial second
    return RadioRun(_success(counts.sum(axis=0)), np.array([_success(c) for c in periods]),
                    load_bits / 1e6 / widths)


def _success(outcomes: np.ndarray) -> float:
    """Returns the share answered in time of [ontime, failed, rejected] counts (NaN for none)."""
    return float(outcomes[ONTIME] / outcomes.sum()) if outcomes.sum() else float("nan")


def radio_rates_mbps(system: SystemModel) -> np.ndarray:
    """Returns each antenna's radio rate (Mbit/s), in `system.antennas` order."""
    return np.array([system.topology.site(a).radio.bw_mbps for a in system.antennas], dtype=np.float64)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def lambda_rows(lam: float, seeds: list[int], policies: list[str], runs: dict[RunKey, RadioRun],
                short: dict[RunKey, float], rates: np.ndarray, settled_s: float) -> tuple[list[str], list[str]]:
    """Returns the summary rows and the per-period rows of one lambda (`short`: success on the 120 s traces)."""
    rows, periods = [], []
    for policy in policies:
        on = [runs[(lam, s, policy, True)] for s in seeds]
        off = [runs[(lam, s, policy, False)] for s in seeds]
        load = np.concatenate([r.load_mbps[:, int(settled_s):] for r in on], axis=1)
        firsts = []
        for r in on:
            hit = np.flatnonzero((r.load_mbps > rates[:, None]).any(axis=0))
            firsts.append(f"{hit[0]}" if len(hit) else "never")
        rows.append(
            f"| {lam:g} | {policy} | {np.median(load):.0f} / {np.percentile(load, 90):.0f} / {load.max():.0f} | "
            f"{_pct((load > rates[:, None]).mean())} | {', '.join(firsts)} | {_pct(np.mean([r.success for r in on]))} | "
            f"{_pct(np.mean([r.success for r in off]))} | "
            f"{_pct(np.mean([short[(lam, s, policy, True)] for s in seeds]))} | "
            f"{_pct(np.mean([short[(lam, s, policy, False)] for s in seeds]))} |")
        for s, r in zip(seeds, on, strict=True):
            periods.append(f"| {lam:g} | {policy} | {s} | " + " | ".join(_pct(x) for x in r.success_per_period) + " |")
    return rows, periods


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--topo", default="full-edge", help="topology name or file (default full-edge)")
    ap.add_argument("--profiles", default=None, help=PROFILES_OPTION_HELP)
    ap.add_argument("--policies", default=POLICIES, help=f"comma-separated static policies (default {POLICIES})")
    ap.add_argument("--settled", type=float, default=180.0,
                    help="seconds after which the radio's load is summarised (default 180: the open streams settle)")
    add_sweep_arguments(ap, lambdas_default="20,60,100")
    add_results_page_argument(ap, "radio-load")
    args = ap.parse_args(argv)
    sweep = sweep_from_args(args)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    try:
        if not policies:
            raise ValueError(f"{args.policies!r} names no policy")
        for p in policies:
            policy_index(p)
    except (KeyError, ValueError) as e:
        print(f"error: --policies: {e}", file=sys.stderr)
        return 2
    if not (0 <= args.settled < sweep.duration_s):
        print(f"error: --settled {args.settled:g}: must be at least 0 and below --duration {sweep.duration_s:g}",
              file=sys.stderr)
        return 2
    system = build_system(load_topology(args.topo), load_profiles(args.profiles))
    rates = radio_rates_mbps(system)
    seeds, lambdas = list(sweep.seeds), list(sweep.lambdas_per_min)
    t0 = time.perf_counter()
    runs: dict[RunKey, RadioRun] = {}
    short: dict[RunKey, float] = {}
    for lam in lambdas:
        for seed in seeds:
            for policy in policies:
                for rq in (True, False):
                    runs[(lam, seed, policy, rq)] = simulate(system, EvalCase(lam, seed, sweep.duration_s), policy, rq)
                    short[(lam, seed, policy, rq)] = simulate(system, EvalCase(lam, seed, SHORT_S), policy, rq).success
        print(f"lambda {lam:g}: done ({time.perf_counter() - t0:.0f} s)", flush=True)
    head = ("| lambda | policy | offered load p50 / p90 / max (Mbit/s) | antenna-seconds above the rate (%) | "
            "first second above the rate (per seed) | success, queue (%) | success, no queue (%) | "
            f"{SHORT_S:g} s traces, queue (%) | {SHORT_S:g} s traces, no queue (%) |\n|---|---|---|---|---|---|---|---|---|")
    n_periods = len(next(iter(runs.values())).success_per_period)
    phead = ("| lambda | policy | seed | " + " | ".join(f"{PERIOD_S * p:g}-{min(PERIOD_S * (p + 1), sweep.duration_s):g} s"
                                                 for p in range(n_periods)) + " |\n|---|---|---|" + "---|" * n_periods)
    summary, periods, fields = [], [], []
    for lam in lambdas:
        rows, per = lambda_rows(lam, seeds, policies, runs, short, rates, args.settled)
        summary += rows
        periods += per
        fields.append(f"lambda {lam:g}: {mean_field_mbps(lam):.0f}")
    rate_text = ", ".join(f"{a} {r:g}" for a, r in zip(system.antennas, rates, strict=True))
    elapsed = time.perf_counter() - t0
    body = (f"`{system.topology.name}`, radios (Mbit/s): {rate_text}. Seeds {', '.join(map(str, seeds))} "
            f"({sweep.duration_s:g} s each, the `evaluate` traces and simulator seeds). The offered load: the frames "
            f"sent up each antenna's radio per 1 s of sending, after the first {args.settled:g} s, pooled over "
            f"antennas and seeds; success is the mean over the seeds. The {SHORT_S:g} s traces are those of the same "
            f"lambda and seed that `compare --duration {SHORT_S:g}` replays (at lambda 20 and 60 the time-dilated "
            f"validation's paper-load cases, [dilation.md](dilation.md)): each its own draw, not the first {SHORT_S:g} s of the longer one. "
            f"Mean-field load once the open streams settle, every stream admitted (Mbit/s per antenna): "
            f"{'; '.join(fields)}.\n\n{head}\n" + "\n".join(summary) +
            f"\n\nSuccess per {PERIOD_S:g} s of sending with the radio's queue (%; nan: no query sent):\n\n{phead}\n"
            + "\n".join(periods) + f"\n\n{len(runs) + len(short)} runs in {elapsed:.0f} s.\n")
    print(body)
    if args.results_page:
        print(f"wrote {write_results_page(args.results_page, 'Radio load at the paper lambdas', body)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
