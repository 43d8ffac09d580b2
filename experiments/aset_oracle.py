"""A clairvoyant per-window rollout oracle over ASET's seven actions: how much can ANY per-window choice gain?

    .venv/bin/python experiments/aset_oracle.py --topo full-edge --lambdas 60,100 --seeds 1,2,3 \\
        --duration 600 [--horizon N] [--agent runs/aset/full-edge/agent.onnx] [--workers N | --ray ADDR] --out DIR
    .venv/bin/python experiments/aset_oracle.py --merge DIR [--results-page]  # pools the case files in DIR
    .venv/bin/python experiments/aset_oracle.py --lambdas 100 --seeds 1,2,3 --duration 600 \\
        --refine DIR --passes 1 --out DIR2                            # coordinate ascent from DIR's actions

This file owns one case's figures (the seven statics, the oracle and the clone check), the per-case JSON
files (the cases are a sweep's: on every local core by default, or on a Ray cluster; each case's file is
written as it ends), their merge, the markdown tables and the results page (`--merge DIR --results-page`:
docs/results/aset-oracle.md). The search itself (oracle, refinement, clone) is experiments/oracle_search.py.

Figures are those of `run_testbed.py evaluate`: the same topology and profile loaders (the profile the agent
was trained with when `--agent` is given), `EvalCase(lambda, seed, duration)` traces, simulator seed = seed,
the statics by `run_static` with the evaluation's simulator window, success = on-time / all queries as
`success_of`; the per-lambda figures pool the seeds' counts as `evaluate` does.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.resultspage import add_results_page_argument, write_results_page  # noqa: E402
from analysis.summary import Ratios  # noqa: E402
from experiments.oracle_search import (  # noqa: E402
    BASE,
    STUDY_LAMBDAS,
    advance,
    agent_sim,
    check_clone,
    counts_of,
    env_config,
    oracle,
    refine,
)
from scheduler.core import POLICY_NAMES, policy_index  # noqa: E402
from scheduler.profiles import load_profiles  # noqa: E402
from scheduler.system import SystemModel, build_system  # noqa: E402
from simulator.gym_env import EnvConfig  # noqa: E402
from topologies import load_topology  # noqa: E402
from training.rollout import EvalCase, run_static  # noqa: E402
from training.sweep import add_engine_arguments, engine_from_args, run_cases  # noqa: E402
from workload.args import add_sweep_arguments, sweep_from_args  # noqa: E402


# -- one case ---------------------------------------------------------------------------------------------
def ratios_json(counts: np.ndarray) -> dict[str, Any]:
    r = Ratios.of(counts)
    c = np.asarray(counts).reshape(-1, 3).sum(axis=0)
    return {"queries": r.queries, "ontime": int(c[0]), "failed_n": int(c[1]), "rejected_n": int(c[2]),
            "success": float(r.success), "failed": float(r.failed), "rejected": float(r.rejected)}


def run_case(system: SystemModel, case: EvalCase, cfg: EnvConfig, horizon: int | None, check: bool,
             verify_reuse: bool, progress: bool, placebo: bool = False, start: list[int] | None = None,
             passes: int = 1, sweeps_before: int = 0, expect_start: int | None = None) -> dict[str, Any]:
    """Returns every figure of one (lambda, seed): the seven statics, the oracle and the clone check.
    With `start` (an earlier run's actions, after `sweeps_before` sweeps of refinement; the greedy oracle
    is none), the oracle is `refine` from that sequence, `passes` more sweeps."""
    base = policy_index(BASE)
    trace = case.trace(system)
    t = time.perf_counter()
    statics = {name: counts_of(run_static(system, trace, case, p, cfg.sim_window_s))
               for p, name in enumerate(POLICY_NAMES)}
    static_wall = time.perf_counter() - t
    env_base = agent_sim(system, case, cfg)
    advance(env_base, base, None)
    env_matches_static = bool(np.array_equal(counts_of(env_base), statics[BASE]))
    out: dict[str, Any] = {"lambda": case.lambda_per_min, "seed": case.seed, "duration_s": case.duration_s,
                           "streams": len(trace), "decision_window_s": cfg.decision_window_s,
                           "sim_window_s": cfg.sim_window_s, "horizon_decisions": horizon, "base": BASE,
                           "env_base_run_equals_run_static": env_matches_static,
                           "static": {n: ratios_json(c) for n, c in statics.items()},
                           "static_wall_s": static_wall}
    if check:
        t = time.perf_counter()
        n_dec = int(np.ceil(case.duration_s / cfg.decision_window_s - 1e-9))
        prefix = [i % len(POLICY_NAMES) for i in range(n_dec // 2)]  # every policy, mid-episode
        out["clone_check"] = check_clone(system, case, cfg, prefix)
        out["clone_check"]["wall_s"] = time.perf_counter() - t
    t = time.perf_counter()
    if start is None:
        sim = agent_sim(system, case, cfg)
        res = oracle(sim, cfg.sim_steps_per_decision, horizon, base, verify_reuse, progress, placebo)
    else:
        sim, res = refine(lambda: agent_sim(system, case, cfg), cfg.sim_steps_per_decision, start, base,
                          passes, progress, expect_start)
        res.update(values=[], reused_base_candidates=0)
        out["refine"] = {"start_actions": start, "passes": res["passes"], "sweeps_total": sweeps_before + passes}
    wall = time.perf_counter() - t
    hist = np.bincount(res["actions"], minlength=len(POLICY_NAMES))
    names = [f"{_short(BASE)}+rng{0 if i == base else i + 1}" for i in range(len(POLICY_NAMES))] if placebo \
        else list(POLICY_NAMES)
    out["mode"] = "placebo" if placebo else \
        ("oracle" if start is None else f"refined oracle ({sweeps_before + passes} sweeps)")
    out["oracle"] = {**ratios_json(counts_of(sim)), "wall_s": wall, "decisions": len(res["actions"]),
                     "windows_per_policy": {n: int(hist[i]) for i, n in enumerate(names)},
                     "decisions_not_base": int(sum(a != base for a in res["actions"])),
                     "actions": res["actions"], "candidate_ontime": res["values"],
                     "reused_base_candidates": res["reused_base_candidates"],
                     "counts_per_window": counts_of(sim).sum(axis=1).tolist()}
    if (horizon is None or start is not None) and out["oracle"]["ontime"] < out["static"][BASE]["ontime"]:
        raise AssertionError("full-horizon rollout fell below its base policy: the simulator is not deterministic")
    return out


@dataclass(frozen=True)
class OracleSetup:
    """What every case of one oracle run shares (sent to each case, wherever it runs)."""

    system: SystemModel
    cfg: EnvConfig
    horizon: int | None
    check: bool
    """Run the clone check (never on a refined case)."""
    verify_reuse: bool
    progress: bool
    placebo: bool
    passes: int
    profiles: str
    agent: str | None


@dataclass(frozen=True)
class OracleCase:
    """One (lambda, seed) of an oracle run; with `start`, the refinement of an earlier run's actions."""

    case: EvalCase
    start: tuple[int, ...] | None
    sweeps_before: int
    expect_start: int | None
    """The earlier run's on-time count that `start` must replay to."""


def oracle_case(setup: OracleSetup, oc: OracleCase) -> dict[str, Any]:
    """Returns one case's figures as `run_case` does, with where they come from and the case's wall time
    (a sweep's case: training/sweep.py runs it here, on a local worker or on Ray)."""
    t = time.perf_counter()
    try:
        c = run_case(setup.system, oc.case, setup.cfg, setup.horizon, setup.check and oc.start is None,
                     setup.verify_reuse, setup.progress, setup.placebo,
                     None if oc.start is None else list(oc.start), setup.passes, oc.sweeps_before, oc.expect_start)
    except ValueError as e:
        if oc.start is None:
            raise
        raise ValueError(f"--refine: lambda {oc.case.lambda_per_min:g} seed {oc.case.seed}: {e} (the source's "
                         "count): different code, profile or trace") from None
    c.update(topology=setup.system.topology.name, profiles=setup.profiles, agent=setup.agent,
             case_wall_s=time.perf_counter() - t)
    return c


# -- tables -----------------------------------------------------------------------------------------------
def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _short(name: str) -> str:
    return {"random-proportional-latency": "rp-latency", "random-proportional-load": "rp-load",
            "least-impedance": "least-imp"}.get(name, name)


def tables(cases: list[dict[str, Any]]) -> str:
    """Returns the markdown tables: per case and pooled per lambda (success of the oracle and of every static,
    the oracle's gain over the best static, failed/rejected shares, windows per chosen policy, wall time)."""
    cases = sorted(cases, key=lambda c: (c["lambda"], c["seed"]))
    h = cases[0]["horizon_decisions"]
    mode = cases[0].get("mode", "oracle")
    lines = [f"{mode}; horizon: {'to the end of the episode' if h is None else f'{h} decision windows'}; "
             f"T = {cases[0]['decision_window_s']:g} s; {cases[0]['duration_s']:g} s per run; % of queries", ""]
    head = ["lambda", "seed", mode, *(_short(n) for n in POLICY_NAMES), "gain vs best static (pts)",
            "at most (100 - best static)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in cases:
        best = max(POLICY_NAMES, key=lambda n: c["static"][n]["success"])
        gain = 100 * (c["oracle"]["success"] - c["static"][best]["success"])
        lines.append(f"| {c['lambda']:g} | {c['seed']} | {_pct(c['oracle']['success'])} | "
                     + " | ".join(_pct(c["static"][n]["success"]) for n in POLICY_NAMES)
                     + f" | {gain:+.2f} ({_short(best)}) | {100 * (1 - c['static'][best]['success']):.2f} |")
    for lam, group, pooled, best in by_lambda(cases):
        gain = 100 * (pooled["oracle"]["success"] - pooled[best]["success"])
        seeds = ",".join(str(c["seed"]) for c in group)
        lines.append(f"| **{lam:g}** | pooled {seeds} | **{_pct(pooled['oracle']['success'])}** | "
                     + " | ".join(_pct(pooled[n]["success"]) for n in POLICY_NAMES)
                     + f" | **{gain:+.2f}** ({_short(best)}) | {100 * (1 - pooled[best]['success']):.2f} |")
        mean_gain = np.mean([100 * (c["oracle"]["success"] - max(c["static"][n]["success"] for n in POLICY_NAMES))
                             for c in group])
        mean_or = np.mean([100 * c["oracle"]["success"] for c in group])
        lines.append(f"| {lam:g} | mean of seeds | {mean_or:.2f} | "
                     + " | ".join(f"{np.mean([100 * c['static'][n]['success'] for c in group]):.2f}"
                                  for n in POLICY_NAMES) + f" | {mean_gain:+.2f} | |")
    lines += ["", "| lambda | seed | oracle failed | oracle rejected | LB failed | LB rejected | decisions "
              "not LB | windows per chosen policy | oracle wall (s) | clone check |", "|" + "---|" * 10]
    for c in cases:
        o, b = c["oracle"], c["static"][BASE]
        wins = ", ".join(f"{_short(n)} {k}" for n, k in o["windows_per_policy"].items() if k)
        chk = c.get("clone_check", {}).get("passed")
        lines.append(f"| {c['lambda']:g} | {c['seed']} | {_pct(o['failed'])} | {_pct(o['rejected'])} | "
                     f"{_pct(b['failed'])} | {_pct(b['rejected'])} | {o['decisions_not_base']}/{o['decisions']} | "
                     f"{wins} | {o['wall_s']:.0f} | {'n/a' if chk is None else ('passed' if chk else 'FAILED')} |")
    return "\n".join(lines)


def _pool(rs: list[dict[str, Any]]) -> dict[str, Any]:
    q = sum(r["queries"] for r in rs)
    return {"queries": q, "success": sum(r["ontime"] for r in rs) / q, "failed": sum(r["failed_n"] for r in rs) / q,
            "rejected": sum(r["rejected_n"] for r in rs) / q}


def by_lambda(cases: list[dict[str, Any]]) -> list[tuple[float, list[dict[str, Any]], dict[str, Any], str]]:
    """Returns, per lambda in increasing order: its cases (in the given order), the pooled ratios of every static
    and of the oracle (their counts summed over the seeds, as `evaluate` pools them) and the best static."""
    out = []
    for lam in sorted({c["lambda"] for c in cases}):
        group = [c for c in cases if c["lambda"] == lam]
        pooled = {n: _pool([c["static"][n] for c in group]) for n in POLICY_NAMES}
        pooled["oracle"] = _pool([c["oracle"] for c in group])
        out.append((lam, group, pooled, max(POLICY_NAMES, key=lambda n: pooled[n]["success"])))
    return out


def merge(out_dir: Path) -> dict[str, Any]:
    """Reads the case files in `out_dir`; returns the summary (pooled per lambda) with the cases."""
    cases = [json.loads(p.read_text()) for p in sorted(out_dir.glob("case_*.json"))]
    if not cases:
        raise ValueError(f"{out_dir}: no case_*.json files")
    keys = {(c["horizon_decisions"], c["duration_s"], c["decision_window_s"], c.get("mode", "oracle"))
            for c in cases}
    if len(keys) > 1:
        raise ValueError(f"{out_dir}: cases with different horizon/duration/window/mode: {sorted(keys, key=str)}")
    topologies = sorted({c.get("topology", "?") for c in cases})
    if len(topologies) > 1:  # one summary and one table per topology
        parts = {t: _merge_cases([c for c in cases if c.get("topology", "?") == t]) for t in topologies}
        return {"summary": {t: m["summary"] for t, m in parts.items()},
                "table": "\n\n".join(f"## {t}\n\n{m['table']}" for t, m in parts.items()), "cases": cases}
    return _merge_cases(cases)


def _merge_cases(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Returns the summary (pooled per lambda) and the tables of one topology's cases."""
    summary: dict[str, Any] = {"lambdas": {}}
    for lam, group, pooled, best in by_lambda(cases):
        summary["lambdas"][f"{lam:g}"] = {
            "seeds": [c["seed"] for c in group], "pooled": pooled, "best_static": best,
            "oracle_gain_points": 100 * (pooled["oracle"]["success"] - pooled[best]["success"]),
            "windows_per_policy": {n: sum(c["oracle"]["windows_per_policy"][n] for c in group)
                                   for n in group[0]["oracle"]["windows_per_policy"]},
            "oracle_wall_s": [c["oracle"]["wall_s"] for c in group],
            "clone_checks_passed": None if any("clone_check" not in c for c in group)  # skipped (--refine)
            else all(c["clone_check"]["passed"] for c in group)}
    return {"summary": summary, "table": tables(cases), "cases": cases}


def refine_source(folder: Path, topo: str, lam: float, seed: int, duration_s: float, cfg: EnvConfig,
                  profiles: str) -> tuple[dict[str, Any], int]:
    """Returns the one full-horizon (greedy or refined) oracle case of `folder` for this lambda and seed, and
    how many refinement sweeps it already had; refuses one run with another T, duration or profile."""
    pat = f"case_{topo}_lam{lam:g}_seed{seed}_hend*_d{duration_s:g}.json"
    srcs = [q for q in folder.glob(pat) if "placebo" not in q.name]
    if len(srcs) != 1:
        raise ValueError(f"--refine: {folder}/{pat}: need exactly one full-horizon oracle case for lambda "
                         f"{lam:g} seed {seed}, found {len(srcs)}")
    src = json.loads(srcs[0].read_text())
    want = {"decision_window_s": cfg.decision_window_s, "sim_window_s": cfg.sim_window_s,
            "duration_s": duration_s, "horizon_decisions": None, "profiles": profiles}
    for key, value in want.items():
        if src.get(key) != value:
            raise ValueError(f"--refine: {srcs[0]}: {key} is {src.get(key)!r}, this run uses {value!r}")
    n = int(np.ceil(duration_s / cfg.decision_window_s - 1e-9))
    if len(src["oracle"]["actions"]) != n:
        raise ValueError(f"--refine: {srcs[0]}: {len(src['oracle']['actions'])} actions, the episode has {n} "
                         "decisions")
    before = src.get("refine", {}).get("sweeps_total", len(src.get("refine", {}).get("passes", [])))
    return src, int(before)


def results_page(name: str, cases: list[dict[str, Any]], table: str) -> Path:
    """Writes the tables of these cases as docs/results/<name>.md, with what the cases were run on."""
    first = cases[0]
    agent = f"agent `{first['agent']}` (its T, K and profile)" if first.get("agent") else "no agent (EnvConfig's T, K)"
    topologies = ", ".join(sorted({c.get("topology", "?") for c in cases}))
    body = (f"Topology {topologies}, profiles `{first.get('profiles', '?')}`, {agent}, {len(cases)} cases, "
            f"{sum(c.get('case_wall_s', 0.0) for c in cases) / 60:.0f} min of computing in all. Success, failed "
            f"and rejected are % of queries; per lambda, the seeds' counts are pooled as `evaluate` pools "
            f"them.\n\n{table}\n")
    return write_results_page(name, "Clairvoyant per-window oracle over ASET's seven actions", body)


# -- CLI --------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--topo", default="full-edge", help="topology name or file (default full-edge)")
    add_sweep_arguments(ap, lambdas_default=STUDY_LAMBDAS)
    ap.add_argument("--horizon", type=int, default=None,
                    help="decision windows of load-balancing after the candidate's (default: to the end)")
    ap.add_argument("--agent", default=None, help="agent.onnx (or its folder): T, K and the profile file as "
                    "`evaluate` takes them (default: EnvConfig's T and the default profile)")
    ap.add_argument("--profiles", default=None, help="profile file (default: the agent's, else the default)")
    ap.add_argument("--no-check", action="store_true", help="skip the clone-faithfulness check")
    ap.add_argument("--verify-reuse", action="store_true",
                    help="recompute the base candidate instead of reusing the committed rollout (full horizon)")
    ap.add_argument("--out", default=None, help="folder for case_*.json (and oracle_summary.json on --merge)")
    ap.add_argument("--merge", default=None, metavar="DIR", help="only merge the case files in DIR")
    ap.add_argument("--progress", action="store_true", help="print progress every 10 decisions")
    ap.add_argument("--placebo", action="store_true",
                    help="control: candidates are load-balancing with 7 network-noise streams, not 7 policies")
    ap.add_argument("--refine", default=None, metavar="DIR",
                    help="start from the actions of DIR's full-horizon oracle cases and refine them by coordinate "
                    "ascent (every rollout's tail is the sequence itself); --out must be another folder")
    ap.add_argument("--passes", type=int, default=1, help="sweeps of --refine (default 1)")
    add_engine_arguments(ap)
    add_results_page_argument(ap, "aset-oracle")
    args = ap.parse_args(argv)
    try:
        return run(ap, args)
    except ValueError as e:  # a file or a key at fault (topology, profile, agent, case files): one line, status 2
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(ap: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Runs (or merges) the cases the parsed arguments name."""
    if args.merge:
        d = Path(args.merge)
        m = merge(d)
        print(m["table"])
        path = d / "oracle_summary.json"
        path.write_text(json.dumps(m, indent=1) + "\n")
        print(f"\nwrote {path}")
        if args.results_page:
            print(f"wrote {results_page(args.results_page, m['cases'], m['table'])}")
        return 0
    if args.horizon is not None and args.horizon < 0:
        ap.error("--horizon must be >= 0")
    if args.refine and (args.placebo or args.horizon is not None):
        ap.error("--refine takes neither --placebo nor --horizon")
    if args.refine and args.out and Path(args.out).resolve() == Path(args.refine).resolve():
        ap.error("--refine: --out must differ from the folder refined (merge refuses mixed modes)")
    if args.passes < 1:
        ap.error("--passes must be >= 1")
    if args.passes != 1 and not args.refine:
        ap.error("--passes needs --refine")
    cfg, agent_profiles = env_config(args.agent)
    profiles = args.profiles or (agent_profiles if agent_profiles and Path(agent_profiles).is_file() else None)
    system = build_system(load_topology(args.topo), load_profiles(profiles))
    sweep = sweep_from_args(args)
    out = Path(args.out) if args.out else None
    setup = OracleSetup(system, cfg, args.horizon, not args.no_check, args.verify_reuse, args.progress, args.placebo,
                        args.passes, str(profiles or "default"), args.agent)
    items = []
    for lam in sweep.lambdas_per_min:
        for seed in sweep.seeds:
            start, src, before = None, None, 0
            if args.refine:
                src, before = refine_source(Path(args.refine), system.topology.name, lam, seed, sweep.duration_s,
                                            cfg, setup.profiles)
                start = tuple(src["oracle"]["actions"])
            items.append(OracleCase(EvalCase(lam, seed, sweep.duration_s), start, before,
                                    None if src is None else int(src["oracle"]["ontime"])))

    def finished(i: int, c: dict[str, Any]) -> None:  # as each case ends: its line and its file
        lam, seed = c["lambda"], c["seed"]
        print(f"lambda {lam:g} seed {seed}: {c['mode']} {_pct(c['oracle']['success'])} %, {BASE} "
              f"{_pct(c['static'][BASE]['success'])} %, oracle {c['oracle']['wall_s']:.0f} s, "
              f"case {c['case_wall_s']:.0f} s, clone check "
              f"{c.get('clone_check', {}).get('passed', 'skipped')}, env = run_static: "
              f"{c['env_base_run_equals_run_static']}", flush=True)
        if out:
            out.mkdir(parents=True, exist_ok=True)
            h = ("end" if args.horizon is None else str(args.horizon)) + ("_placebo" if args.placebo else "") \
                + (f"_refine{items[i].sweeps_before + args.passes}" if args.refine else "")
            (out / f"case_{system.topology.name}_lam{lam:g}_seed{seed}_h{h}_d{sweep.duration_s:g}.json"
             ).write_text(json.dumps(c, indent=1) + "\n")

    engine = engine_from_args(args)
    print(f"{len(items)} cases, {engine.describe()}", flush=True)
    try:
        cases = run_cases(oracle_case, items, setup, engine, on_result=finished, cost=lambda c: c.case.relative_cost)
    except ValueError as e:
        if not args.refine:
            raise RuntimeError(e) from e  # a fault of the code, not of the input: its traceback
        raise
    table = tables(cases)
    print()
    print(table)
    if args.results_page:
        print(f"wrote {results_page(args.results_page, cases, table)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
