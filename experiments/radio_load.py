"""Whether an antenna's radio carries the paper's loads: its load against its rate, and success with and without
the radio's queue, over time.

    .venv/bin/python experiments/radio_load.py [--topo full-edge] [--lambdas 20,60,100] [--seeds 1,2,3] \\
        [--duration 600] [--policies closest,least-impedance,load-balancing] [--results-page]

A radio sends one message at a time at its rate (`SimConfig.radio_queueing`, on by default, as the testbed's
wires and a real link do). This file owns the check of what that does at a load: for each lambda, seed and
policy it simulates the `evaluate` trace (`training.rollout.EvalCase`, simulator seed = trace seed) with the
radio's queue and without it, and reports
- the load the radio carries: the frames of admitted streams (a rejected stream sends none, on the testbed too)
  in Mbit/s per antenna and 1 s, over the run after `--settled` s (new streams keep opening while the first
  close: about three mean lifetimes pass before the number of open streams settles), its median, 90th
  percentile and maximum, and the share of antenna-seconds above the radio's rate;
- the first second an antenna's load exceeded its radio's rate;
- success (queries answered in time) over the run and over its first 120 s (what the time-dilated validation
  runs, docs/results/dilation.md) with the queue and without, and per 60 s with it.
Beside each lambda, the mean-field load: lambda / 60 x E[lifetime x fps x frame bytes] of the application mix
(`workload.apps`), in Mbit/s per antenna once the open streams have settled, every stream admitted.
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

from analysis.records import ONTIME, OUTCOMES, REJECTED, QueryBatch  # noqa: E402
from analysis.resultspage import add_results_page_argument, write_results_page  # noqa: E402
from scheduler.core import policy_index  # noqa: E402
from scheduler.names import PROFILES_OPTION_HELP  # noqa: E402
from scheduler.profiles import load_profiles  # noqa: E402
from scheduler.system import SystemModel, build_system  # noqa: E402
from simulator.engine import SimConfig, Simulation  # noqa: E402
from topologies import load_topology  # noqa: E402
from training.rollout import SIM_WINDOW_S, EvalCase  # noqa: E402
from workload.apps import sample_streams  # noqa: E402
from workload.args import add_sweep_arguments, sweep_from_args  # noqa: E402

POLICIES = "closest,least-impedance,load-balancing"
FIRST_S = 120.0
"""The first seconds apart: the length of the time-dilated validation's paper-load runs."""
PERIOD_S = 60.0
"""Success over time in periods of this length."""


@dataclass(frozen=True)
class RadioRun:
    """One simulated run: its success and, with the radio's queue, the radio's load per antenna and second."""

    success: float
    success_first: float
    success_per_period: np.ndarray
    load_mbps: np.ndarray
    """[antenna, second]: Mbit/s of the frames the antenna's admitted streams sent in that second."""


def mean_field_mbps(lambda_per_min: float, n: int = 400_000, seed: int = 0) -> float:
    """Returns lambda / 60 x E[lifetime x fps x frame bits] in Mbit/s: an antenna's radio load once its open
    streams have settled (every stream admitted), by sampling the application mix."""
    s = sample_streams(n, np.random.default_rng(seed))
    bits = s["duration_s"] * s["fps"] * s["frame_bytes"] * 8.0
    return lambda_per_min / 60.0 * float(bits.mean()) / 1e6


def simulate(system: SystemModel, case: EvalCase, policy: str, radio_queueing: bool) -> RadioRun:
    """Runs one policy on the case's trace and measures what `RadioRun` holds."""
    trace = case.trace(system)
    batches: list[QueryBatch] = []
    config = SimConfig(window_s=SIM_WINDOW_S, duration_s=case.duration_s, radio_queueing=radio_queueing)
    Simulation(system, trace, config, seed=case.seed, record_sink=batches.append).run(policy_index(policy))
    send_s = np.concatenate([b.numbers["t_send_ms"] for b in batches]) / 1000.0
    stream = np.concatenate([b.numbers["stream_id"] for b in batches]).astype(np.int64)
    outcome = np.concatenate([_names(b, "outcome")[b.codes["outcome"][0]] for b in batches])
    antenna = np.concatenate([_names(b, "antenna")[b.codes["antenna"][0]] for b in batches])
    ok = outcome == OUTCOMES[ONTIME]
    periods = int(np.ceil(case.duration_s / PERIOD_S))
    period = np.minimum((send_s // PERIOD_S).astype(np.int64), periods - 1)
    per_period = np.array([ok[period == p].mean() if (period == p).any() else np.nan for p in range(periods)])
    by_id = dict(zip(trace.stream_id.tolist(), trace.frame_bytes.tolist(), strict=True))
    nbytes = np.array([by_id[s] for s in stream.tolist()], dtype=np.float64)
    sent = outcome != OUTCOMES[REJECTED]
    seconds = int(np.ceil(case.duration_s))
    load = np.zeros((len(system.antennas), seconds))
    second = np.minimum(send_s.astype(np.int64), seconds - 1)
    for a, name in enumerate(system.antennas):
        m = sent & (antenna == name)
        np.add.at(load[a], second[m], nbytes[m] * 8.0 / 1e6)
    first = send_s < FIRST_S
    return RadioRun(float(ok.mean()), float(ok[first].mean()), per_period, load)


def _names(b: QueryBatch, key: str) -> np.ndarray:
    return np.asarray(b.codes[key][1], dtype=object)


def radio_rates_mbps(system: SystemModel) -> np.ndarray:
    """Returns each antenna's radio rate (Mbit/s), in `system.antennas` order."""
    sites = {s.name: s for s in system.topology.sites}
    return np.array([sites[a].radio.bw_mbps for a in system.antennas], dtype=np.float64)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def lambda_rows(lam: float, seeds: list[int], policies: list[str], runs: dict, rates: np.ndarray,
                settled_s: float) -> tuple[list[str], list[str]]:
    """Returns the summary rows and the per-period rows of one lambda."""
    rows, periods = [], []
    for policy in policies:
        on = [runs[(lam, s, policy, True)] for s in seeds]
        off = [runs[(lam, s, policy, False)] for s in seeds]
        load = np.concatenate([r.load_mbps[:, int(settled_s):] for r in on], axis=1)
        over = load > rates[:, None]
        firsts = []
        for r in on:
            hit = np.flatnonzero((r.load_mbps > rates[:, None]).any(axis=0))
            firsts.append(f"{hit[0]}" if len(hit) else "never")
        rows.append(
            f"| {lam:g} | {policy} | {np.median(load):.0f} / {np.percentile(load, 90):.0f} / {load.max():.0f} | "
            f"{_pct(over.mean())} | {', '.join(firsts)} | {_pct(np.mean([r.success for r in on]))} | "
            f"{_pct(np.mean([r.success for r in off]))} | {_pct(np.mean([r.success_first for r in on]))} | "
            f"{_pct(np.mean([r.success_first for r in off]))} |")
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
    runs = {}
    for lam in lambdas:
        for seed in seeds:
            case = EvalCase(lam, seed, sweep.duration_s)
            for policy in policies:
                for rq in (True, False):
                    runs[(lam, seed, policy, rq)] = simulate(system, case, policy, rq)
        print(f"lambda {lam:g}: done ({time.perf_counter() - t0:.0f} s)", flush=True)
    head = ("| lambda | policy | radio load p50 / p90 / max (Mbit/s) | antenna-seconds above the rate (%) | "
            "first second above the rate (per seed) | success, queue (%) | success, no queue (%) | "
            f"first {FIRST_S:g} s, queue (%) | first {FIRST_S:g} s, no queue (%) |\n|---|---|---|---|---|---|---|---|---|")
    n_periods = int(np.ceil(sweep.duration_s / PERIOD_S))
    phead = ("| lambda | policy | seed | " + " | ".join(f"{PERIOD_S * p:g}-{min(PERIOD_S * (p + 1), sweep.duration_s):g} s"
                                                 for p in range(n_periods)) + " |\n|---|---|---|" + "---|" * n_periods)
    summary, periods, fields = [], [], []
    for lam in lambdas:
        rows, per = lambda_rows(lam, seeds, policies, runs, rates, args.settled)
        summary += rows
        periods += per
        fields.append(f"lambda {lam:g}: {mean_field_mbps(lam):.0f}")
    rate_text = ", ".join(f"{a} {r:g}" for a, r in zip(system.antennas, rates, strict=True))
    elapsed = time.perf_counter() - t0
    body = (f"`{system.topology.name}`, radios (Mbit/s): {rate_text}. Seeds {', '.join(map(str, seeds))} "
            f"({sweep.duration_s:g} s each, the `evaluate` traces and simulator seeds); the load is over 1 s and each "
            f"antenna after the first {args.settled:g} s, pooled over antennas and seeds; success is the mean over "
            f"the seeds. Mean-field radio load once the open streams settle, every stream admitted (Mbit/s per "
            f"antenna): {'; '.join(fields)}.\n\n{head}\n" + "\n".join(summary) +
            f"\n\nSuccess per {PERIOD_S:g} s with the radio's queue (%):\n\n{phead}\n" + "\n".join(periods) +
            f"\n\n{len(runs)} runs in {elapsed:.0f} s.\n")
    print(body)
    if args.results_page:
        print(f"wrote {write_results_page(args.results_page, 'Radio load at the paper lambdas', body)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
