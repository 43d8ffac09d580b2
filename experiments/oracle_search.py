"""The clairvoyant per-window search over ASET's seven actions, on clones of the simulation an agent drives.

This file owns the search (the greedy rollout oracle and its refinement by coordinate ascent), the clone of
the simulation state and the check that the clone is faithful; experiments/aset_oracle.py runs it per case
and tabulates it, experiments/aset_warmup.py reuses its simulations. It changes nothing in the simulator.

The oracle drives the simulation the agent drives (`training.rollout.agent_env`: `AsetEnv.reset` with the
evaluation's trace and simulator seed) one decision window (T simulator windows) at a time. At each
decision it clones the whole simulation state and, for each of the seven static policies p, rolls the clone
forward: p for this decision window, then the base policy (load-balancing, the best static on full-edge) for
the next `horizon` decision windows (default: to the end of the episode). It commits to the p whose rollout
answers the most queries on time (ties: the base policy, then the lowest index) and goes on. With the rollout
run to the end, the simulator being deterministic given its state, the result is never below the base
policy's (the base policy's own candidate at the next decision is exactly the committed rollout), so the
oracle's gain over the base is a lower bound on what a per-window choice among the seven policies can gain.

`refine` goes on from such a run's actions by coordinate ascent: the same per-window search, with every
rollout's tail the committed sequence itself instead of load-balancing, so each sweep can only raise the
count. The greedy oracle above is the first sweep of that ascent started from all load-balancing.

It is clairvoyant: it sees the actual trace (future arrivals and their parameters) and, because the clone
copies the simulator's generators, the actual future random draws. Those draws depend on the policy: the
network generator draws two normals and two uniforms per query sent to a resource and per answer (so their
number depends on how many streams a policy rejects and on when queries finish), and the random-proportional
policies draw from the scheduler's generator; each rollout sees exactly the draws the committed trajectory
would see, which only makes the oracle stronger.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from scheduler.aset.meta import agent_path
from scheduler.core import POLICY_NAMES
from scheduler.system import SystemModel
from simulator.engine import Simulation
from simulator.gym_env import EnvConfig
from training.rollout import SIM_WINDOW_S, EvalCase, agent_env, success_of

BASE = "load-balancing"
"""The base policy of every rollout (the best static on full-edge)."""
STUDY_LAMBDAS = "60,100"
"""The loads of the oracle study and of those beside it (warm-up rule, admission what-if): the paper's middle
load and its highest."""

_SHARED = ("system", "physics", "trace", "config", "apps", "s_ant", "s_app", "s_task", "s_end", "s_class",
           "replicas", "batch", "batch_ms", "input_ms_per_byte", "queue_limit", "timeline", "physics_timeline")
"""Attributes of a Simulation that no step mutates: a clone shares them instead of copying them."""


# -- the simulation the agent drives, and its clone ----------------------------------------------------------
def env_config(agent: str | None) -> tuple[EnvConfig, str | None]:
    """Returns the EnvConfig `evaluate` builds for this agent (T, K, theta 0) and the agent's profile file."""
    if agent is None:
        cfg = replace(EnvConfig(), sim_window_s=SIM_WINDOW_S, theta=0.0, baseline_policy=None)
        return cfg, None
    from scheduler.aset.policy import OnnxPolicy

    meta = OnnxPolicy(agent_path(agent)).meta
    cfg = EnvConfig.for_agent(meta, SIM_WINDOW_S)
    return cfg, meta.profiles or None


def agent_sim(system: SystemModel, case: EvalCase, cfg: EnvConfig) -> Simulation:
    """Returns the fresh simulation `run_agent` would drive on this case (the same `agent_env`)."""
    env, _ = agent_env(system, case.trace(system), case, cfg)
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

