"""`--tdf auto`: the smallest time dilation factor K at which a short pilot of the trace's busiest moment is
judged faithful by the fidelity monitor. The pilot replays the streams alive at the trace's busiest second,
started one after another over a warm-up of PILOT_WARMUP_S and judged after it, for PILOT_S of virtual time.
The first K is estimated from this machine's CPU cost per query and the cores the emulation has, rounded up on
a ladder; then the pilots go down the ladder while they pass and up while they fail, MAX_PILOTS at most. Each
pilot is a live run on a fresh network (`<run dir>-pilots/k<K>/`); the run itself follows at the K chosen, and
its config.json's `time_dilation` gets `auto` (the estimate, the pilots and their verdicts). `compare` pilots
each of its policies at each K (`choose_tdf`) and runs them all at the one K chosen. The search takes the
pilots as a callable, so it is tested on its own.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from live.rundir import default_run_dir
from topologies import load_topology
from topologies.timescale import TDF_LADDER, ladder_up
from workload.trace import Trace, write_trace

MAX_PILOTS = 3
PILOT_S = 10.0
"""Virtual seconds of a pilot judged, after its warm-up."""
PILOT_WARMUP_S = 2.0
"""Virtual seconds over which a pilot's streams start, in trace order, evenly spaced, before it is judged
(`RunSpec.judged_from_s`): every stream of the busiest second opening at once made a burst the trace never has
(the scheduler's relay of each stream's first query took 4.1 ms on average against 0.4-0.6 later, at lambda 20
on full-edge at K 6: p99 6.4 and 3.0 virtual ms in the first two windows, 1.4-2.0 in the others)."""
CPU_MS_PER_QUERY = 5.0
"""CPU a query sent costs the emulation on this machine (source, relay, wires, switch, worker's HTTP)."""
FIXED_CORES = {"ovs": 0.7, "lxbr": 0.2}
"""Cores the network costs with no traffic (userspace Open vSwitch, or Linux bridges), in real time."""
USABLE_SHARE = 0.75
"""Share of the emulation's cores a faithful run may keep busy."""


@dataclass(frozen=True)
class Peak:
    """The trace's busiest second and the pilot trace made of it."""

    at_s: float
    queries_per_s: float
    """Frames per second of every stream alive then, all antennas together."""
    pilot: Trace


def peak_slice(trace: Trace, duration_s: float, length_s: float = PILOT_S,
               warmup_s: float = PILOT_WARMUP_S) -> Peak:
    """Returns the busiest whole second of the trace (the most frames per second of the streams alive at its
    start; the first on ties) and its streams, the i-th of n (in trace order) starting at warmup_s x i / n and
    running until `warmup_s` + at most `length_s` (at most what it had left)."""
    end = np.minimum(trace.end_s, duration_s)
    seconds = np.arange(0.0, max(math.ceil(duration_s), 1), 1.0)
    alive = (trace.start_s[None, :] <= seconds[:, None]) & (seconds[:, None] < end[None, :])
    load = (alive * trace.fps[None, :]).sum(axis=1) if len(trace) else np.zeros(len(seconds))
    t = int(np.argmax(load))
    keep = alive[t]
    cols = {f.name: getattr(trace, f.name)[keep] for f in fields(Trace)}
    n = int(keep.sum())
    order = Trace(**cols).order()
    start = np.empty(n)
    start[order] = warmup_s * np.arange(n) / max(n, 1)
    cols["start_s"] = start
    cols["duration_s"] = warmup_s - start + np.minimum(end[keep] - seconds[t], length_s)
    return Peak(float(seconds[t]), float(load[t]), Trace(**cols).sorted())


def first_k(queries_per_s: float, cores: float, switch: str) -> float:
    """Returns the first K to pilot: the CPU the queries cost over what the emulation's cores carry (the
    network's fixed cost first), rounded up on the ladder; the top step where the cores carry nothing."""
    room = cores * USABLE_SHARE - FIXED_CORES.get(switch, FIXED_CORES["ovs"])
    if room <= 0:
        return TDF_LADDER[-1]
    return ladder_up(max(1.0, math.ceil(CPU_MS_PER_QUERY / 1000.0 * queries_per_s / room)))


@dataclass(frozen=True)
class AutoTdf:
    """What the search chose and why: config.json's `auto_pilots`."""

    tdf: float
    estimate: float
    pilots: tuple[tuple[float, bool], ...]
    """(K, judged faithful) in the order piloted."""
    piloted: bool
    """Whether a pilot at the chosen K passed (False: every pilot failed, the step above the last is taken)."""

    def record(self, peak: Peak) -> dict:
        return {"tdf": self.tdf, "estimate": self.estimate, "chosen_piloted": self.piloted,
                "peak_at_s": peak.at_s, "peak_queries_per_s": peak.queries_per_s,
                "pilots": [{"tdf": k, "faithful": ok} for k, ok in self.pilots]}


def search(estimate: float, pilot: Callable[[float], bool], max_pilots: int = MAX_PILOTS) -> AutoTdf:
    """Returns the smallest K whose pilot passes, starting at `estimate` and moving one ladder step at a time:
    down while the pilots pass, up while they fail, `max_pilots` pilots at most. If none passed, the step above
    the largest K that failed (not piloted)."""
    k = ladder_up(estimate)
    done: dict[float, bool] = {}
    order: list[tuple[float, bool]] = []
    while len(order) < max_pilots and k not in done:
        ok = bool(pilot(k))
        done[k] = ok
        order.append((k, ok))
        i = TDF_LADDER.index(k)
        nxt = TDF_LADDER[i - 1] if ok and i > 0 else TDF_LADDER[i + 1] if not ok and i + 1 < len(TDF_LADDER) else None
        if nxt is None:
            break
        k = nxt
    passed = [x for x, ok in done.items() if ok]
    if passed:
        return AutoTdf(min(passed), estimate, tuple(order), True)
    worst = max(done)
    return AutoTdf(TDF_LADDER[min(TDF_LADDER.index(worst) + 1, len(TDF_LADDER) - 1)], estimate, tuple(order), False)


def choose_tdf(spec: Any, log: Callable[[str], None], run_live: Callable[..., Any], pilots: Path,
               policies: tuple[str, ...] = ()) -> tuple[AutoTdf, Peak]:
    """Returns the K `search` walks to for `spec`'s trace, and the trace's peak: at each K a pilot of every one of
    `policies` (`spec.policy` alone when none are given; the first that is judged not faithful fails the K, the
    rest are not run), each on a fresh network under `pilots`/k<K>[/<policy>]."""
    topo = load_topology(spec.topo)
    trace, duration_s = spec.workload().build(tuple(a.name for a in topo.antennas))
    peak = peak_slice(trace, duration_s)
    write_trace(peak.pilot, pilots / "trace.csv")
    reserved = 0 if spec.real_sites == () else 1  # one core is real inference's (live/cores.py)
    cores = max(1, len(os.sched_getaffinity(0)) - reserved)
    estimate = first_k(peak.queries_per_s, cores, spec.switch)
    each = policies or (spec.policy,)
    log(f"--tdf auto: the trace's busiest second ({peak.at_s:g} s, {peak.queries_per_s:g} queries/s) as a "
        f"{PILOT_S:g} s pilot after a {PILOT_WARMUP_S:g} s warm-up"
        + (f" of each policy ({', '.join(each)})" if policies else "")
        + f"; first K {estimate:g} ({CPU_MS_PER_QUERY:g} ms CPU per query on {cores} core(s)); pilots in {pilots}")

    def pilot(k: float) -> bool:
        for policy in each:
            out = pilots / f"k{k:g}" / policy if policies else pilots / f"k{k:g}"
            result = run_live(replace(spec, policy=policy, tdf=k, trace=(pilots / "trace.csv").resolve(),
                                      duration_s=PILOT_WARMUP_S + PILOT_S, judged_from_s=PILOT_WARMUP_S,
                                      out=out, kill_worker=(), restart_scheduler=(), events=None, cli=False,
                                      cli_script=None, pcap="none"), log=lambda _: None)
            verdict = result.summary.extra.get("fidelity", {}).get("verdict")
            log(f"--tdf auto: pilot at K {k:g}" + (f", {policy}" if policies else "") + f": {verdict}")
            if verdict != "faithful":
                return False
        return True

    found = search(estimate, pilot)
    log(f"--tdf auto: K {found.tdf:g}" + ("" if found.piloted else " (no pilot passed: the step above the last)"))
    return found, peak


def record_auto(run_dir: Path, found: AutoTdf, peak: Peak, pilots: Path) -> None:
    """Writes what `--tdf auto` chose and why into a run's config.json (`time_dilation.auto`)."""
    config = run_dir / "config.json"
    cfg = json.loads(config.read_text())
    cfg.setdefault("time_dilation", {})["auto"] = {**found.record(peak), "pilots_dir": str(pilots)}
    config.write_text(json.dumps(cfg, indent=1) + "\n")


def run_auto(spec: Any, log: Callable[[str], None], run_live: Callable[..., Any]) -> Any:
    """Runs `--tdf auto`: pilots at the K `search` walks to, then the run at the K chosen; returns the run's
    result (live.report.LiveResult) with config.json's `time_dilation.auto` written."""
    out = Path(spec.out) if spec.out else default_run_dir(load_topology(spec.topo).name)
    pilots = out.with_name(out.name + "-pilots")
    found, peak = choose_tdf(replace(spec, out=out), log, run_live, pilots)
    result = run_live(replace(spec, out=out, tdf=found.tdf), log=log)
    record_auto(result.out, found, peak, pilots)
    return result
