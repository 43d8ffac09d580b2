"""ASET agents, the statics and the clairvoyant oracle side by side on one workload: a constant lambda or a scenario.

    .venv/bin/python experiments/aset_compare.py --scenario day-cycle --topo full-edge --train-steps 20000 \\
        --out runs/aset/scenario-day-cycle                   # DQN trained on the scenario's episodes
    .venv/bin/python experiments/aset_compare.py (--scenario day-cycle | --lambda 100) --topo full-edge \\
        --seeds 1,2,3 --duration 600 [--agent LABEL=DIR ...] [--oracle-seeds 1] [--oracle-out DIR] \\
        [--oracle-cases DIR ...] [--workers N | --ray ADDR] [--results-page [NAME]]

This file owns that comparison and its page (docs/results/aset-compare.md by default). With `--lambda` a case
is `evaluate`'s (`EvalCase`: the same trace and simulator seed); with `--scenario` it is `ScenarioCase`:
`evaluate`'s case with the trace drawn from the scenario (workload/scenario.py; seed S: `workload_rng(S)`, the
cycle unshifted, nominal lambdas and mix) instead of a constant lambda, the scenario's network events if it has
any, and simulator seed S. Every static policy and
every agent (`--agent`, guarded as `evaluate` runs them) runs on the same cases through the sweep layer; the
oracle (`experiments/aset_oracle.py`'s case) runs on `--oracle-seeds` and is replayed to count its queries per
application; `--oracle-cases DIR` takes the oracle's runs from `experiments/aset_oracle.py --out DIR` case
files instead (constant lambda: the same topology, lambda, seed and duration). Training (`--train-steps`, or `--train-minutes` of wall time) is `run_testbed.py train`'s DQN with the
environment drawing its episodes from the scenario (`EnvConfig.scenario`: a random shift of the cycle and of its
network events, lambdas x 0.8-1.2, the mix perturbed), then the guard calibrated on the scenario's held-out
runs (DQNConfig.validation_seeds). The page lists every seed's figures too, with ASET's margin over the best
static per seed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.resultspage import add_results_page_argument, repo_relative, write_results_page  # noqa: E402
from analysis.summary import Ratios  # noqa: E402
from experiments.aset_oracle import OracleCase, OracleSetup, oracle_case  # noqa: E402
from experiments.oracle_search import env_config  # noqa: E402
from scheduler.core import ASET, POLICY_NAMES  # noqa: E402
from scheduler.profiles import load_profiles  # noqa: E402
from scheduler.system import SystemModel, build_system  # noqa: E402
from simulator.gym_env import AsetEnv, EnvConfig  # noqa: E402
from topologies import load_topology  # noqa: E402
from training.config import DQNConfig  # noqa: E402
from training.evaluate import AgentFile, EvalRun, EvalSetup, run_one  # noqa: E402
from training.rollout import SIM_WINDOW_S, EvalCase, ScenarioCase, agent_env, mean_lambda  # noqa: E402
from training.sweep import add_engine_arguments, engine_from_args, run_cases  # noqa: E402
from workload.apps import APP_NAMES  # noqa: E402
from workload.scenario import Scenario, load_scenario  # noqa: E402


def replay_counts(system: SystemModel, case: ScenarioCase, actions: list[int], cfg: EnvConfig) -> np.ndarray:
    """Returns the [window, app, outcome] counts of the case driven by `actions`, one per decision window."""
    env, _ = agent_env(system, case.trace(system), case, cfg)
    for a in actions:
        env.step(int(a))
    assert env.sim is not None
    return env.sim.tally.trimmed(env.sim.windows)


def row(name: str, counts: np.ndarray, apps: tuple[str, ...]) -> str:
    o = Ratios.of(counts)
    per_app = " | ".join(f"{100 * Ratios.of(counts[:, i]).success:.2f}" for i in range(len(apps)))
    return f"| {name} | {100 * o.success:.2f} | {100 * o.failed:.2f} | {100 * o.rejected:.2f} | {per_app} |"


def table(title: str, rows: dict[str, np.ndarray], apps: tuple[str, ...]) -> str:
    head = ["policy", "success", "failed", "rejected", *(f"{a} success" for a in apps)]
    statics = [n for n in rows if n in POLICY_NAMES]
    best = max(statics, key=lambda n: Ratios.of(rows[n]).success)
    lines = [title, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += [row(f"**{n}**" if n == best else n, c, apps) for n, c in rows.items()]
    return "\n".join(lines)


def phase_table(sc: Scenario, rows: dict[str, np.ndarray], sim_window_s: float) -> str:
    """Returns the success of every row in each phase of the scenario's cycle (each simulator window's queries
    counted in the phase in force at the window's middle, as training/dagger.py's expert counts them) and each
    phase's best static."""
    n_windows = next(iter(rows.values())).shape[0]
    phase = np.array([sc.phase_at((w + 0.5) * sim_window_s) for w in range(n_windows)])
    ks = sorted(set(phase.tolist()))  # the phases the runs reach
    head = ["policy", *(f"phase {k}: {sc.phases[k].duration_s:g} s at lambda {sc.phases[k].lambda_per_min:g}"
                        for k in ks)]
    pct = {n: [100 * Ratios.of(c[phase == k]).success for k in ks] for n, c in rows.items()}
    statics = [n for n in rows if n in POLICY_NAMES]
    best = [max(statics, key=lambda n: pct[n][j]) for j in range(len(ks))]
    lines = ["Per phase of the cycle (success in %; each phase's best static in bold):", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in rows:
        cells = [f"**{v:.2f}**" if n == best[j] else f"{v:.2f}" for j, v in enumerate(pct[n])]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def train_on(system: SystemModel, sc: Scenario, minutes: float | None, steps: int | None, seed: int, out: str,
             engine, n_envs: int = 1) -> None:
    """Trains DQN (DQNConfig's defaults) on episodes drawn from the scenario, for `steps` decisions (or 85 % of
    `minutes` of wall time), then calibrates its guard on the scenario's held-out runs; writes the agent under
    `out`."""
    from training.train import train

    lam = mean_lambda(sc)
    base = DQNConfig()
    budget = dict(total_steps=steps, time_budget_s=None) if steps is not None else \
        dict(total_steps=10**9, time_budget_s=minutes * 60.0 * 0.85)
    cfg = DQNConfig(topology=system.topology.name, lambda_per_min=lam, seed=seed, out_dir=out, progress=False,
                    env=replace(base.env, scenario=sc), n_envs=n_envs, **budget)
    print(f"training on scenario {sc.name} ({system.topology.name}), "
          + (f"{steps} decisions" if steps is not None else f"{minutes:g} min"), flush=True)
    r = train(cfg, system, engine)
    g = r.guard
    print(f"{r.steps} decisions, {r.episodes} episodes, {r.train_s:.0f} s; guard fallback "
          f"{POLICY_NAMES[g.fallback_policy] if g else None}, margin {g.guard_margin if g else None}", flush=True)


def read_inputs(args: argparse.Namespace) -> tuple[Scenario | None, SystemModel, dict[str, AgentFile]]:
    """Returns the scenario (None: a constant lambda), the system and the agents by label, every file read and
    checked; raises ValueError with one line naming the option and the file at fault."""
    sc = load_scenario(args.scenario) if args.scenario else None
    system = build_system(load_topology(args.topo), load_profiles(args.profiles))
    agents = {}
    for opt, a, guard in [("--agent", a, True) for a in args.agent] + [("--raw-agent", a, False)
                                                                        for a in args.raw_agent]:
        label, _, path = a.partition("=")
        try:
            agent = AgentFile.read(path or label, guard=guard)
            meta = agent.policy().meta
            meta.check_compatible(AsetEnv(system, EnvConfig.for_agent(meta, SIM_WINDOW_S)).spec_state, agent.path)
        except ValueError as e:
            raise ValueError(f"{opt} {a}: {e}") from None
        agents[label if guard else f"{label}, no guard"] = agent
    for d in args.oracle_cases:
        if not Path(d).is_dir():
            raise ValueError(f"--oracle-cases {d}: no such folder")
    return sc, system, agents


def per_seed_margins(per_seed: dict[int, dict[str, np.ndarray]], seeds: list[int], pooled: dict[str, np.ndarray],
                     agents: list[str]) -> str:
    """Returns the per-seed table: every agent's success minus the best static's (the pooled best, and each seed's
    own best), with their mean, sample standard deviation and range over the seeds."""
    best = max((n for n in pooled if n in POLICY_NAMES), key=lambda n: Ratios.of(pooled[n]).success)
    pct = lambda c: 100 * Ratios.of(c).success  # noqa: E731
    head = ["seed", f"{best} (pooled best)", "seed's best static", *(f"{a} minus {best} (pts)" for a in agents),
            *(f"{a} minus seed's best (pts)" for a in agents)]
    lines = ["Per seed (success in %; margins in points):", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    margins: dict[str, list[float]] = {}
    for s in seeds:
        own = max((n for n in per_seed[s] if n in POLICY_NAMES), key=lambda n: pct(per_seed[s][n]))
        row = [str(s), f"{pct(per_seed[s][best]):.2f}", f"{own} {pct(per_seed[s][own]):.2f}"]
        for kind, ref in (("pooled", best), ("own", own)):
            for a in agents:
                m = pct(per_seed[s][a]) - pct(per_seed[s][ref])
                margins.setdefault(f"{kind} {a}", []).append(m)
                row.append(f"{m:+.2f}")
        lines.append("| " + " | ".join(row) + " |")
    stats = ["mean (sd; min..max)", "", ""]
    for kind in ("pooled", "own"):
        for a in agents:
            v = np.array(margins[f"{kind} {a}"])
            stats.append(f"{v.mean():+.2f} ({v.std(ddof=1):.2f}; {v.min():+.2f}..{v.max():+.2f})")
    lines.append("| " + " | ".join(stats) + " |")
    return "\n".join(lines)


def oracle_share(pooled: dict[str, np.ndarray], seeds: list[int]) -> str:
    """Returns, pooled over the seeds, the oracle's gain over the best static and each agent's gain as a share of
    it (the issue's test: the agent captures at least half)."""
    best = max((n for n in pooled if n in POLICY_NAMES), key=lambda n: Ratios.of(pooled[n]).success)
    gain = {n: 100 * (Ratios.of(c).success - Ratios.of(pooled[best]).success) for n, c in pooled.items()}
    text = (f"Seeds {','.join(map(str, seeds))} pooled: the oracle gains {gain['oracle']:+.2f} points over the best "
            f"static ({best})")
    for n in pooled:
        if n.startswith(ASET):
            share = f"{100 * gain[n] / gain['oracle']:.0f} % of the oracle's" if gain["oracle"] > 0 else "n/a"
            text += f"; {n} {gain[n]:+.2f} ({share})"
    return text + "."


def agent_facts(label: str, agent: AgentFile) -> str:
    """Returns one note line of what the agent's train.json (beside its ONNX file) says: how it was trained, its
    guard, and on the guard's held-out runs the agent at margin 0 minus the fallback policy (points)."""
    path = Path(agent.path).with_name("train.json")
    if not path.is_file():
        m = agent.policy().meta
        margin = "never" if m.guard_margin == float("inf") else f"margin {m.guard_margin:g}"
        return (f"- {ASET} ({label}): `{repo_relative(agent.path)}`, no train.json beside it; its metadata: "
                f"{m.trained_steps} decisions in {m.train_s:.0f} s, guard fallback {POLICY_NAMES[m.fallback_policy]}, "
                f"overriding it at {margin}")
    t = json.loads(path.read_text())
    text = f"- {ASET} ({label}): `{repo_relative(path.parent)}`, {t['steps']} decisions in {t['train_s']:.0f} s"
    im = t.get("imitation")
    if im:
        loss = {True: "class-balanced cross-entropy, ", False: "plain cross-entropy, "}.get(im.get("balanced"), "")
        text += (f", behaviour cloning ({loss}{im['epochs']} epochs) of the oracle's runs at (lambda, seed) "
                 + ", ".join(f"({lam:g}, {seed})" for lam, seed, _ in im["oracle_cases"])
                 + f", reproducing {100 * im['training_accuracy']:.1f} % of their choices")
    dg = t.get("dagger")
    if dg:
        last = dg["rounds"][-1]
        text += (f", DAgger ({len(dg['rounds'])} rounds, {last['pairs']} labelled states) from {dg['expert']} ("
                 + ", ".join(f"phase {k}: {e}" for k, e in enumerate(dg["phase_experts"]))
                 + (f"); in the last round the learner agreed with the expert on "
                    f"{100 * last['learner_agreement_on_visited']:.1f} % of the states it visited"
                    if last["learner_agreement_on_visited"] is not None else ")"))
    g = t.get("guard")
    if g:
        base = g["static_success"][g["fallback_policy"]]
        own = g["agent_success"].get("0", g["agent_success"].get("0.0"))
        text += f"; guard: fallback {g['fallback_policy']}, margin {g['guard_margin']}"
        if own is not None:
            text += "; held-out runs (lambda, seed), the agent at margin 0 minus the fallback: " + ", ".join(
                f"({lam:g}, {seed}) {100 * (a - b):+.2f}" for (lam, seed), a, b in zip(g["cases"], own, base,
                                                                                       strict=True))
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    work = ap.add_mutually_exclusive_group(required=True)
    work.add_argument("--scenario", default=None, help="scenario file or name in workload/scenarios/")
    work.add_argument("--lambda", dest="lam", type=float, default=None, help="a constant lambda instead")
    ap.add_argument("--topo", default="full-edge", help="topology (default full-edge)")
    ap.add_argument("--profiles", default=None, help="profile file (default: the default profile)")
    ap.add_argument("--seeds", default="1,2,3", help="trace and simulator seeds (default 1,2,3)")
    ap.add_argument("--duration", type=float, default=600.0, help="seconds per run (default 600)")
    ap.add_argument("--agent", action="append", default=[], metavar="LABEL=DIR", help="an agent to evaluate")
    ap.add_argument("--raw-agent", action="append", default=[], metavar="LABEL=DIR",
                    help="an agent to evaluate without its guard (its plain greedy choice)")
    ap.add_argument("--oracle-seeds", default="", help="seeds to run the oracle on (default none)")
    ap.add_argument("--oracle-out", default=None, help="folder for the oracle's case files (and reuse of them)")
    ap.add_argument("--oracle-horizon", type=int, default=None, metavar="N",
                    help="the oracle's rollouts: N decision windows of load-balancing after the candidate's window "
                    "(default: to the end of the run)")
    ap.add_argument("--oracle-cases", action="append", default=[], metavar="DIR",
                    help="constant lambda: read the oracle's runs from aset_oracle.py case files in DIR")
    budget = ap.add_mutually_exclusive_group()
    budget.add_argument("--train-steps", type=int, default=None,
                        help="train DQN on the scenario instead, for this many decisions")
    budget.add_argument("--train-minutes", type=float, default=None,
                        help="train DQN on the scenario instead, for this wall time")
    ap.add_argument("--seed", type=int, default=1, help="training seed (default 1)")
    ap.add_argument("--n-envs", type=int, default=1, help="training: environments stepping side by side, in up to "
                    "--workers processes (DQNConfig.n_envs; default 1)")
    ap.add_argument("--out", default=None, help="training: the agent's folder")
    ap.add_argument("--input-command", action="append", default=[], metavar="CMD",
                    help="a command that made one of the inputs (an agent, oracle case files), listed on the page "
                    "in order before this one, so that the page can be rebuilt from nothing (repeatable)")
    add_engine_arguments(ap)
    add_results_page_argument(ap, "aset-compare")
    args = ap.parse_args(argv)
    try:
        sc, system, agents = read_inputs(args)
    except ValueError as e:  # a file or a key at fault (scenario, topology, profile, agent, oracle cases)
        print(f"error: {e}", file=sys.stderr)
        return 2
    engine = engine_from_args(args)
    if args.train_minutes is not None or args.train_steps is not None:
        if sc is None:
            ap.error("--train-steps/--train-minutes need --scenario (constant lambdas: run_testbed.py train)")
        if not args.out:
            ap.error("--train-steps/--train-minutes need --out")
        train_on(system, sc, args.train_minutes, args.train_steps, args.seed, args.out, engine, args.n_envs)
        return 0
    t0 = time.perf_counter()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    cases: dict[int, EvalCase] = {s: ScenarioCase.of(sc, s, args.duration) if sc is not None
                                  else EvalCase(args.lam, s, args.duration) for s in seeds}
    workload = sc.name if sc is not None else f"lambda{args.lam:g}"
    per_seed: dict[int, dict[str, np.ndarray]] = {s: {} for s in seeds}
    apps: tuple[str, ...] = ()
    runs = [EvalRun(cases[s], p) for s in seeds for p in range(len(POLICY_NAMES))]
    for s_run, r in zip(runs, run_cases(run_one, runs, EvalSetup(system, None, None, SIM_WINDOW_S), engine),
                        strict=True):
        per_seed[s_run.case.seed][POLICY_NAMES[s_run.policy]] = r.counts
        apps = r.apps
    notes = [agent_facts(label, agent) for label, agent in agents.items()]
    for label, agent in agents.items():
        meta = agent.policy().meta
        cfg = EnvConfig.for_agent(meta, SIM_WINDOW_S)
        aruns = [EvalRun(cases[s], None) for s in seeds]
        for s_run, r in zip(aruns, run_cases(run_one, aruns, EvalSetup(system, agent, cfg, SIM_WINDOW_S), engine),
                            strict=True):
            per_seed[s_run.case.seed][f"{ASET} ({label})"] = r.counts
            used = np.bincount(r.actions or [], minlength=len(POLICY_NAMES))
            notes.append(f"- {ASET} ({label}), seed {s_run.case.seed}: windows per policy "
                         + ", ".join(f"{POLICY_NAMES[i]} {c}" for i, c in enumerate(used) if c))
    oracle_seeds = [int(s) for s in args.oracle_seeds.split(",") if s.strip()]
    if oracle_seeds:
        cfg, _ = env_config(None)
        setup = OracleSetup(system, cfg, args.oracle_horizon, False, False, False, False, 1,
                            str(args.profiles or "default"), None)
        out = Path(args.oracle_out) if args.oracle_out else None
        horizon = "" if args.oracle_horizon is None else f"_h{args.oracle_horizon}"
        todo, done = [], {}
        for s in oracle_seeds:
            f = out / f"case_{workload}_{system.topology.name}_seed{s}_d{args.duration:g}{horizon}.json" if out else None
            if f is not None and f.is_file():
                done[s] = json.loads(f.read_text())
            else:
                todo.append(s)
        items = [OracleCase(cases[s], None, 0, None) for s in todo]
        for s, c in zip(todo, run_cases(oracle_case, items, setup, engine), strict=True):
            done[s] = c
            if out:
                out.mkdir(parents=True, exist_ok=True)
                (out / f"case_{workload}_{system.topology.name}_seed{s}_d{args.duration:g}{horizon}.json").write_text(
                    json.dumps(c, indent=1) + "\n")
    else:
        cfg, _ = env_config(None)
        done = {}
        for d in args.oracle_cases:
            for f in sorted(Path(d).glob("case_*.json")):
                c = json.loads(f.read_text())
                if sc is None and c.get("topology") == system.topology.name and c["lambda"] == args.lam \
                        and c["duration_s"] == args.duration and c["seed"] in seeds and c.get("mode") == "oracle":
                    done[c["seed"]] = c
        oracle_seeds = sorted(done)
    if oracle_seeds:
        for s, c in sorted(done.items()):
            per_seed[s]["oracle"] = replay_counts(system, cases[s], c["oracle"]["actions"], cfg)
            assert int(per_seed[s]["oracle"][..., 0].sum()) == c["oracle"]["ontime"], "oracle replay differs"
            hist = c["oracle"]["windows_per_policy"]
            h = c["horizon_decisions"]
            notes.append(f"- oracle, seed {s} (rollouts {'to the end' if h is None else f'of {h} windows'}): windows "
                         "per policy " + ", ".join(f"{n} {k}" for n, k in hist.items() if k)
                         + f"; {c['oracle']['wall_s']:.0f} s")
    sections = []
    names = list(per_seed[seeds[0]])
    pooled_names = [n for n in names if all(n in per_seed[s] for s in seeds)]
    pooled = {n: sum(per_seed[s][n] for s in seeds) for n in pooled_names}
    sections.append(table(f"Seeds {','.join(map(str, seeds))} pooled:", pooled, apps))
    if sc is not None:
        sections.append(phase_table(sc, pooled, SIM_WINDOW_S))
    if oracle_seeds and oracle_seeds != sorted(seeds):
        names = [n for n in per_seed[oracle_seeds[0]] if all(n in per_seed[s] for s in oracle_seeds)]
        sections.append(table(f"Seeds {','.join(map(str, oracle_seeds))} (the oracle's) pooled:",
                              {n: sum(per_seed[s][n] for s in oracle_seeds) for n in names}, apps))
    agent_names = [n for n in pooled_names if n.startswith(ASET) or n == "oracle"]
    if agent_names and len(seeds) > 1:
        sections.append(per_seed_margins(per_seed, seeds, pooled, agent_names))
    if "oracle" in pooled_names:
        sections.append(oracle_share(pooled, seeds))
    text = "\n\n".join(sections) + ("\n\n" + "\n".join(notes) if notes else "")
    print(text)
    wall = time.perf_counter() - t0
    if args.results_page:
        if sc is None:
            what = f"Constant lambda {args.lam:g} (`evaluate`'s traces)"
        else:
            phases = "; ".join(f"{p.duration_s:g} s at lambda {p.lambda_per_min:g}, mix " + ", ".join(
                f"{a} {w:g}" for a, w in zip(APP_NAMES, p.app_weight, strict=True) if w) for p in sc.phases)
            what = f"Scenario `{sc.name}` ({sc.description.strip()}): a cycle of {sc.period_s:g} s: {phases}"
        body = (f"{what}. Topology {system.topology.name}, profiles `{repo_relative(system.profiles.source)}`, {args.duration:g} s "
                f"per run, trace and simulator seed = the seed; success, failed and rejected in % of queries, per "
                f"application the success; the best static in bold. Agents with their fallback guard unless marked "
                f"'no guard'. {wall:.0f} s of "
                f"computing ({engine.describe()}).\n\n{text}\n")
        if args.input_command:
            body += ("\nThe inputs (agents, oracle case files) were made by these commands, in this order, before "
                     "the command above:\n\n" + "\n".join(f"1. `{c}`" for c in args.input_command) + "\n")
        title = f"ASET on the {sc.name} scenario" if sc is not None else f"ASET at lambda {args.lam:g}"
        print(f"wrote {write_results_page(args.results_page, f'{title} ({system.topology.name})', body)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
