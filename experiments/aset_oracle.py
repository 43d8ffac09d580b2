"""A clairvoyant per-window rollout oracle over ASET's seven actions: how much can ANY per-window choice gain?

    .venv/bin/python experiments/aset_oracle.py --topo full-edge --lambdas 60,100 --seeds 1,2,3 \\
        --duration 600 [--horizon N] [--agent runs/aset/full-edge/agent.onnx] --out DIR
    .venv/bin/python experiments/aset_oracle.py --merge DIR          # pools the case files in DIR
    .venv/bin/python experiments/aset_oracle.py --lambdas 100 --seeds 1,2,3 --duration 600 \\
        --refine DIR --passes 1 --out DIR2                            # coordinate ascent from DIR's actions

This file owns the oracle, its clone of the simulation state, the check that the clone is faithful, the
per-case JSON files, their merge and the markdown tables. It changes nothing in the simulator.

The oracle drives the simulation the agent drives (`AsetEnv.reset` with the evaluation's trace and simulator
seed, as `training.rollout.run_agent` does) one decision window (T simulator windows) at a time. At each
decision it clones the whole simulation state and, for each of the seven static policies p, rolls the clone
forward: p for this decision window, then the base policy (load-balancing, the best static on full-edge) for
the next `--horizon` decision windows (default: to the end of the episode). It commits to the p whose rollout
answers the most queries on time (ties: the base policy, then the lowest index) and goes on. With the rollout
run to the end, the simulator being deterministic given its state, the result is never below the base
policy's (the base policy's own candidate at the next decision is exactly the committed rollout), so the
oracle's gain over the base is a lower bound on what a per-window choice among the seven policies can gain.

`--refine` goes on from such a run's actions by coordinate ascent (`refine`): the same per-window search,
with every rollout's tail the committed sequence itself instead of load-balancing, so each sweep can only
raise the count. The greedy oracle above is the first sweep of that ascent started from all load-balancing.

It is clairvoyant: it sees the actual trace (future arrivals and their parameters) and, because the clone
copies the simulator's generators, the actual future random draws. Those draws depend on the policy: the
network generator draws two normals and two uniforms per query sent to a resource and per answer (so their
number depends on how many streams a policy rejects and on when queries finish), and the random-proportional
policies draw from the scheduler's generator; each rollout sees exactly the draws the committed trajectory
would see, which only makes the oracle stronger.

Figures are those of `run_testbed.py evaluate`: the same topology and profile loaders (the profile the agent
was trained with when `--agent` is given), `EvalCase(lambda, seed, duration)` traces, simulator seed = seed,
the statics by `run_static` with the evaluation's simulator window, success = on-time / all queries as
`success_of`; the per-lambda figures pool the seeds' counts as `evaluate` does.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.summary import Ratios  # noqa: E402
from scheduler.core import POLICY_NAMES, policy_index  # noqa: E402
from scheduler.profiles import load_profiles  # noqa: E402
from scheduler.system import SystemModel, build_system  # noqa: E402
from simulator.engine import Simulation  # noqa: E402
from simulator.gym_env import AsetEnv, EnvConfig  # noqa: E402
from topologies import load_topology  # noqa: E402
from training.rollout import EvalCase, run_static, success_of  # noqa: E402

BASE = "load-balancing"
SIM_WINDOW_S = 1.0
"""The simulator step `evaluate` uses (its `sim_window_s` default, which `run_testbed.py evaluate` keeps)."""

_SHARED = ("system", "physics", "trace", "config", "apps", "s_ant", "s_app", "s_task", "s_end", "s_class",
           "replicas", "batch", "batch_ms", "input_ms_per_byte", "queue_limit")
"""Attributes of a Simulation that no step mutates: a clone shares them instead of copying them."""


# -- the simulation the agent drives, and its clone -------------------------------------------------------
def env_config(agent: str | None) -> tuple[EnvConfig, str | None]:
    """Returns the EnvConfig `evaluate` builds for this agent (T, K, theta 0) and the agent's profile file."""
    if agent is None:
        cfg = replace(EnvConfig(), sim_window_s=SIM_WINDOW_S, theta=0.0, baseline_policy=None)
        return cfg, None
    from scheduler.aset.policy import OnnxPolicy

    path = Path(agent)
    meta = OnnxPolicy(path / "agent.onnx" if path.is_dir() else path).meta
    cfg = EnvConfig(decision_window_s=meta.decision_window_s, sim_window_s=SIM_WINDOW_S,
                    history=meta.state_shape[0], theta=0.0)
    return cfg, meta.profiles or None


def agent_sim(system: SystemModel, case: EvalCase, cfg: EnvConfig) -> Simulation:
    """Returns the fresh simulation `run_agent` would drive on this case (same env code path)."""
    env = AsetEnv(system, replace(cfg, baseline_policy=None, theta=0.0))
    env.reset(seed=case.seed, options={"trace": case.trace(system), "sim_seed": case.seed,
                                       "duration_s": case.duration_s, "lambda": case.lambda_per_min})
    assert env.sim is not None
    return env.sim


def clone(sim: Simulation) -> Simulation:
    """Returns a deep copy of the simulation's state that shares its immutable inputs (trace, system, ...)."""
    if sim.sink is not None:
        raise ValueError("clone: a simulation with a record sink cannot be cloned faithfully")
    memo: dict[int, Any] = {id(getattr(sim, a)): getattr(sim, a) for a in _SHARED}
    memo[id(sim.scheduler.system)] = sim.scheduler.system
    return copy.deepcopy(sim, memo)


def advance(sim: Simulation, policy: int, windows: int | None) -> None:
    """Steps `windows` simulator windows (None: to the end) with `policy`, stopping at the end."""
    n = 0
    while not sim.done and (windows is None or n < windows):
        sim.step(policy)
        n += 1


def ontime(sim: Simulation) -> int:
    return int(sim.tally.counts[..., 0].sum())


def counts_of(sim: Simulation) -> np.ndarray:
    return sim.tally.trimmed(sim.windows)


# -- the oracle -------------------------------------------------------------------------------------------
def candidate_window(sim: Simulation, j: int, base: int, steps: int, placebo: bool) -> None:
    """Advances one decision window with candidate j: policy j, or (placebo) the base policy after
    j + 1 extra draws from the network generator (none for j = base)."""
    if placebo:
        if j != base:
            sim.rng_net.random(j + 1)
        advance(sim, base, steps)
    else:
        advance(sim, j, steps)


def oracle(sim: Simulation, steps_per_decision: int, horizon: int | None, base: int,
           verify_reuse: bool = False, progress: bool = False, placebo: bool = False) -> dict[str, Any]:
    """Runs the rollout oracle on `sim` to the end, in place; returns its choices and candidate values.

    `horizon`: decision windows of base policy after the candidate's window (None: to the end). With the
    rollout to the end, the base policy's value at a decision is the committed rollout's value at the
    previous one, which is reused (`verify_reuse`: recomputed and compared). `placebo`: the seven candidates
    are the base policy with seven different network-noise streams (`candidate_window`): what picking the
    luckiest future noise alone gains, the control for the oracle's clairvoyance on the random draws.
    """
    actions: list[int] = []
    values: list[list[int]] = []
    reused_lb = 0
    carried: int | None = None  # value of the committed rollout (to the end), the next base candidate's
    t0 = time.perf_counter()
    while not sim.done:
        vals = [0] * len(POLICY_NAMES)
        for p in range(len(POLICY_NAMES)):
            if p == base and carried is not None and not verify_reuse:
                vals[p] = carried
                reused_lb += 1
                continue
            c = clone(sim)
            candidate_window(c, p, base, steps_per_decision, placebo)
            advance(c, base, None if horizon is None else horizon * steps_per_decision)
            vals[p] = ontime(c)
            if p == base and carried is not None and vals[p] != carried:
                raise AssertionError(f"decision {len(actions)}: base rollout {vals[p]} != carried {carried}")
        best = max(vals)
        choice = base if vals[base] == best else vals.index(best)
        actions.append(choice)
        values.append(vals)
        carried = vals[choice] if horizon is None else None
        candidate_window(sim, choice, base, steps_per_decision, placebo)
        if progress and len(actions) % 10 == 0:
            print(f"    decision {len(actions)}: {time.perf_counter() - t0:.0f} s", flush=True)
    if horizon is None and values and ontime(sim) != values[-1][actions[-1]]:
        raise AssertionError(f"final on-time {ontime(sim)} != last committed rollout {values[-1][actions[-1]]}")
    return {"actions": actions, "values": values, "reused_base_candidates": reused_lb}


def follow(sim: Simulation, actions: list[int], steps_per_decision: int, base: int) -> None:
    """Advances `sim` one decision window per action of `actions`, then the base policy to the end."""
    for a in actions:
        advance(sim, a, steps_per_decision)
    advance(sim, base, None)


def refine(make_sim: Callable[[], Simulation], steps_per_decision: int, actions: list[int], base: int,
           passes: int = 1, progress: bool = False,
           expect_start: int | None = None) -> tuple[Simulation, dict[str, Any]]:
    """Coordinate ascent on a whole action sequence, clairvoyantly: the oracle, with the committed sequence
    itself instead of load-balancing as every rollout's tail.

    At decision w, with `actions[:w]` already played, each policy p is tried for window w followed by
    `actions[w + 1:]` (then the base policy, if the episode is longer) to the end; the best replaces
    `actions[w]` (ties: keep it). The sequence's own candidate is the carried value of the previous decision,
    so the sequence's final count never decreases. Each of `passes` sweeps starts from `make_sim()`, a fresh
    simulation at decision 0. Returns the last pass's committed simulation and, per pass, the sequence's
    value before and after and how many decisions changed, with the final actions. `expect_start`: the
    count the sequence must replay to (checked at the first decision, before the sweep's long part).
    """
    seq = list(actions)
    history: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    if passes < 1:
        raise ValueError("refine: passes must be >= 1")
    if not seq:
        raise ValueError("refine: the action sequence is empty")
    for k in range(passes):
        run = make_sim()
        carried: int | None = None
        changed = 0
        start_value: int | None = None
        for w in range(len(seq)):
            if run.done:
                raise ValueError(f"refine: the simulation ended before decision {w} of {len(seq)}")
            vals = [0] * len(POLICY_NAMES)
            for p in range(len(POLICY_NAMES)):
                if p == seq[w] and carried is not None:
                    vals[p] = carried
                    continue
                c = clone(run)
                advance(c, p, steps_per_decision)
                follow(c, seq[w + 1:], steps_per_decision, base)
                vals[p] = ontime(c)
            if start_value is None:
                start_value = vals[seq[w]]
                if k == 0 and expect_start is not None and start_value != expect_start:
                    raise ValueError(f"refine: the actions replay to {start_value} on-time queries, expected "
                                     f"{expect_start}")
            best = max(vals)
            if vals[seq[w]] != best:
                seq[w] = vals.index(best)
                changed += 1
            carried = vals[seq[w]]
            advance(run, seq[w], steps_per_decision)
            if progress and (w + 1) % 10 == 0:
                print(f"    pass {k + 1} decision {w + 1}: {time.perf_counter() - t0:.0f} s, "
                      f"{changed} changed", flush=True)
        advance(run, base, None)
        if ontime(run) != carried:
            raise AssertionError(f"refine pass {k + 1}: final on-time {ontime(run)} != carried {carried}")
        history.append({"pass": k + 1, "start_ontime": start_value, "end_ontime": ontime(run),
                        "changed": changed, "wall_s": time.perf_counter() - t0})
    return run, {"actions": seq, "passes": history}


def check_clone(system: SystemModel, case: EvalCase, cfg: EnvConfig, prefix: list[int]) -> dict[str, Any]:
    """Faithfulness of `clone`: after `prefix` decisions, a clone run to the end with p must give exactly the
    counts of an independent fresh simulation driven by prefix + p, for every p; and the original, run on
    after its clones, must give them too (nothing shared is mutated)."""
    k = cfg.sim_steps_per_decision
    sim = agent_sim(system, case, cfg)
    for a in prefix:
        advance(sim, a, k)
    out: dict[str, Any] = {"prefix_decisions": len(prefix), "policies": {}}
    ok = True
    for p, name in enumerate(POLICY_NAMES):
        c = clone(sim)
        advance(c, p, None)
        fresh = agent_sim(system, case, cfg)
        for a in prefix:
            advance(fresh, a, k)
        advance(fresh, p, None)
        same = bool(np.array_equal(counts_of(c), counts_of(fresh)))
        ok &= same
        out["policies"][name] = {"clone": success_of(c), "fresh": success_of(fresh), "identical_counts": same}
    last = len(POLICY_NAMES) - 1
    ref = agent_sim(system, case, cfg)
    for a in prefix:
        advance(ref, a, k)
    advance(ref, last, None)
    advance(sim, last, None)
    out["original_after_clones_identical"] = bool(np.array_equal(counts_of(sim), counts_of(ref)))
    out["passed"] = bool(ok and out["original_after_clones_identical"])
    return out


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
    head = ["lambda", "seed", mode, *(_short(n) for n in POLICY_NAMES), "gain vs best static (pts)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in cases:
        best = max(POLICY_NAMES, key=lambda n: c["static"][n]["success"])
        gain = 100 * (c["oracle"]["success"] - c["static"][best]["success"])
        lines.append(f"| {c['lambda']:g} | {c['seed']} | {_pct(c['oracle']['success'])} | "
                     + " | ".join(_pct(c["static"][n]["success"]) for n in POLICY_NAMES)
                     + f" | {gain:+.2f} ({_short(best)}) |")
    for lam in sorted({c["lambda"] for c in cases}):
        group = [c for c in cases if c["lambda"] == lam]
        pooled = {n: _pool([c["static"][n] for c in group]) for n in POLICY_NAMES}
        pooled["oracle"] = _pool([c["oracle"] for c in group])
        best = max(POLICY_NAMES, key=lambda n: pooled[n]["success"])
        gain = 100 * (pooled["oracle"]["success"] - pooled[best]["success"])
        seeds = ",".join(str(c["seed"]) for c in group)
        lines.append(f"| **{lam:g}** | pooled {seeds} | **{_pct(pooled['oracle']['success'])}** | "
                     + " | ".join(_pct(pooled[n]["success"]) for n in POLICY_NAMES)
                     + f" | **{gain:+.2f}** ({_short(best)}) |")
        mean_gain = np.mean([100 * (c["oracle"]["success"] - max(c["static"][n]["success"] for n in POLICY_NAMES))
                             for c in group])
        mean_or = np.mean([100 * c["oracle"]["success"] for c in group])
        lines.append(f"| {lam:g} | mean of seeds | {mean_or:.2f} | "
                     + " | ".join(f"{np.mean([100 * c['static'][n]['success'] for c in group]):.2f}"
                                  for n in POLICY_NAMES) + f" | {mean_gain:+.2f} |")
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


def merge(out_dir: Path) -> dict[str, Any]:
    """Reads the case files in `out_dir`; returns the summary (pooled per lambda) with the cases."""
    cases = [json.loads(p.read_text()) for p in sorted(out_dir.glob("case_*.json"))]
    if not cases:
        raise SystemExit(f"{out_dir}: no case_*.json files")
    keys = {(c["horizon_decisions"], c["duration_s"], c["decision_window_s"], c.get("mode", "oracle"))
            for c in cases}
    if len(keys) > 1:
        raise SystemExit(f"{out_dir}: cases with different horizon/duration/window/mode: {sorted(keys, key=str)}")
    summary: dict[str, Any] = {"lambdas": {}}
    for lam in sorted({c["lambda"] for c in cases}):
        group = [c for c in cases if c["lambda"] == lam]
        pooled = {n: _pool([c["static"][n] for c in group]) for n in POLICY_NAMES}
        pooled["oracle"] = _pool([c["oracle"] for c in group])
        best = max(POLICY_NAMES, key=lambda n: pooled[n]["success"])
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
        raise SystemExit(f"--refine: {folder}/{pat}: need exactly one full-horizon oracle case for lambda "
                         f"{lam:g} seed {seed}, found {len(srcs)}")
    src = json.loads(srcs[0].read_text())
    want = {"decision_window_s": cfg.decision_window_s, "sim_window_s": cfg.sim_window_s,
            "duration_s": duration_s, "horizon_decisions": None, "profiles": profiles}
    for key, value in want.items():
        if src.get(key) != value:
            raise SystemExit(f"--refine: {srcs[0]}: {key} is {src.get(key)!r}, this run uses {value!r}")
    n = int(np.ceil(duration_s / cfg.decision_window_s - 1e-9))
    if len(src["oracle"]["actions"]) != n:
        raise SystemExit(f"--refine: {srcs[0]}: {len(src['oracle']['actions'])} actions, the episode has {n} "
                         "decisions")
    before = src.get("refine", {}).get("sweeps_total", len(src.get("refine", {}).get("passes", [])))
    return src, int(before)


# -- CLI --------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--topo", default="full-edge", help="topology name or file (default full-edge)")
    ap.add_argument("--lambdas", default="60,100", help="comma-separated lambdas (default 60,100)")
    ap.add_argument("--seeds", default="1,2,3", help="comma-separated seeds (default 1,2,3)")
    ap.add_argument("--duration", type=float, default=600.0, help="seconds per run (default 600)")
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
    args = ap.parse_args(argv)
    if args.merge:
        d = Path(args.merge)
        m = merge(d)
        print(m["table"])
        path = d / "oracle_summary.json"
        path.write_text(json.dumps(m, indent=1) + "\n")
        print(f"\nwrote {path}")
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
    lambdas = [float(x) for x in args.lambdas.split(",") if x.strip()]
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    out = Path(args.out) if args.out else None
    cases = []
    for lam in lambdas:
        for seed in seeds:
            t = time.perf_counter()
            start, src, before = None, None, 0
            if args.refine:
                src, before = refine_source(Path(args.refine), system.topology.name, lam, seed, args.duration,
                                            cfg, str(profiles or "default"))
                start = src["oracle"]["actions"]
            try:
                c = run_case(system, EvalCase(lam, seed, args.duration), cfg, args.horizon,
                             not args.no_check and start is None, args.verify_reuse, args.progress, args.placebo,
                             start, args.passes, before, None if src is None else int(src["oracle"]["ontime"]))
            except ValueError as e:
                if src is None:
                    raise
                raise SystemExit(f"--refine: lambda {lam:g} seed {seed}: {e} (the source's count): different "
                                 "code, profile or trace") from None
            c.update(topology=system.topology.name, profiles=str(profiles or "default"), agent=args.agent,
                     case_wall_s=time.perf_counter() - t)
            cases.append(c)
            print(f"lambda {lam:g} seed {seed}: {c['mode']} {_pct(c['oracle']['success'])} %, {BASE} "
                  f"{_pct(c['static'][BASE]['success'])} %, oracle {c['oracle']['wall_s']:.0f} s, "
                  f"case {c['case_wall_s']:.0f} s, clone check "
                  f"{c.get('clone_check', {}).get('passed', 'skipped')}, env = run_static: "
                  f"{c['env_base_run_equals_run_static']}", flush=True)
            if out:
                out.mkdir(parents=True, exist_ok=True)
                h = ("end" if args.horizon is None else str(args.horizon)) + ("_placebo" if args.placebo else "") \
                    + (f"_refine{before + args.passes}" if args.refine else "")
                (out / f"case_{system.topology.name}_lam{lam:g}_seed{seed}_h{h}_d{args.duration:g}.json"
                 ).write_text(json.dumps(c, indent=1) + "\n")
    print()
    print(tables(cases))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
