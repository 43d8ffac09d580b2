"""Evaluation: ASET (ONNX, guarded) against all seven static policies on the same traces and seeds.

Owns the runs of one evaluation as the cases of a sweep (training/sweep.py: serially, on local processes or on
Ray, with the same results), the comparison records, the text table (success, reject, failure, per
application), the JSON and the PNG plots of success over time (as the paper's figures 5 and 6). Torch-free.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from analysis.resultspage import REPO_ROOT
from analysis.summary import Ratios
from scheduler.aset.meta import AgentMeta, agent_path
from scheduler.aset.policy import OnnxPolicy
from scheduler.core import ASET, POLICY_NAMES
from scheduler.system import SystemModel
from simulator.gym_env import AsetEnv, EnvConfig
from training.rollout import SIM_WINDOW_S, EvalCase, run_agent, run_static
from training.sweep import SERIAL, CaseRunner, Engine, run_cases


@dataclass
class PolicyResult:
    """One policy at one lambda, its counts pooled over the seeds."""

    policy: str
    lambda_per_min: float
    counts: np.ndarray
    """[window, app, outcome] summed over seeds."""
    apps: tuple[str, ...]
    actions: list[list[int]] = field(default_factory=list)
    """ASET only: the policy chosen in each decision window, per seed."""

    @property
    def overall(self) -> Ratios:
        return Ratios.of(self.counts)

    def per_app(self) -> dict[str, Ratios]:
        return {a: Ratios.of(self.counts[:, i]) for i, a in enumerate(self.apps)}

    def series_success(self) -> np.ndarray:
        per_window = self.counts.sum(axis=1)
        total = per_window.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, per_window[:, 0] / np.maximum(total, 1), np.nan)


@dataclass
class Evaluation:
    """All results of one topology: results[lambda][policy]."""

    topology: str
    seeds: tuple[int, ...]
    duration_s: float
    window_s: float
    decision_window_s: float
    results: dict[float, dict[str, PolicyResult]]

    def best_static(self, lam: float) -> str:
        r = self.results[lam]
        return max(POLICY_NAMES, key=lambda p: r[p].overall.success)

    def to_json(self) -> dict:
        out: dict = {"topology": self.topology, "seeds": list(self.seeds), "duration_s": self.duration_s,
                     "window_s": self.window_s, "decision_window_s": self.decision_window_s, "lambdas": {}}
        for lam, by_policy in self.results.items():
            out["lambdas"][f"{lam:g}"] = {
                "best_static": self.best_static(lam),
                "policies": {p: {"overall": asdict(r.overall),
                                 "per_app": {a: asdict(x) for a, x in r.per_app().items()},
                                 "series_success": [None if np.isnan(x) else round(float(x), 5)
                                                    for x in r.series_success()],
                                 **({"actions": r.actions} if r.actions else {})}
                             for p, r in by_policy.items()}}
        return out


def _pooled(counts: list[np.ndarray]) -> np.ndarray:
    n = max(c.shape[0] for c in counts)
    out = np.zeros((n, *counts[0].shape[1:]), dtype=np.int64)
    for c in counts:
        out[: c.shape[0]] += c
    return out


@dataclass(frozen=True)
class AgentFile:
    """An exported agent as a sweep ships it: the ONNX file's bytes (a worker on any machine loads the same
    network from them), the file they were read from, and whether the fallback guard is on."""

    path: str
    onnx: bytes = field(repr=False)
    guard: bool = True

    @staticmethod
    def read(text: str | Path, guard: bool = True) -> AgentFile:
        """Returns the agent `text` names (as `agent_path` finds it), read into memory."""
        path = agent_path(text)
        return AgentFile(str(path), path.read_bytes(), guard)

    def policy(self) -> OnnxPolicy:
        """Returns the agent's ONNX Runtime policy, loaded once per process."""
        key = (hashlib.sha256(self.onnx).hexdigest(), self.guard)
        if key not in _POLICIES:
            _POLICIES[key] = OnnxPolicy(self.path, guard=self.guard, model=self.onnx)
        return _POLICIES[key]


_POLICIES: dict[tuple[str, bool], OnnxPolicy] = {}


def trained_profiles(meta: AgentMeta) -> str | None:
    """Returns the profile file the agent was trained with when it is on this machine, else None: `meta.profiles`
    as the writer stores it (relative to the repository root) or as older files hold it (an absolute path)."""
    if not meta.profiles:
        return None
    p = Path(meta.profiles)
    p = p if p.is_absolute() else REPO_ROOT / p
    return str(p) if p.is_file() else None


@dataclass(frozen=True)
class EvalRun:
    """One run of an evaluation: its case and what drives it, a static policy's index or (None) the agent."""

    case: EvalCase
    policy: int | None


@dataclass(frozen=True)
class EvalSetup:
    """What every run of one evaluation shares (sent once to each case, wherever it runs)."""

    system: SystemModel
    agent: AgentFile | None
    env_config: EnvConfig | None
    """The agent's environment (its T and K); None without an agent."""
    sim_window_s: float


@dataclass
class RunCounts:
    """What one run gives back: its counts [window, app, outcome], its applications, the agent's actions."""

    counts: np.ndarray
    apps: tuple[str, ...]
    actions: list[int] | None = None


def run_one(setup: EvalSetup, run: EvalRun) -> RunCounts:
    """Returns the counts of one run on trace(lambda, seed) with simulator seed `seed` (a sweep's case)."""
    trace = run.case.trace(setup.system)
    if run.policy is not None:
        sim = run_static(setup.system, trace, run.case, run.policy, setup.sim_window_s)
        return RunCounts(sim.tally.trimmed(sim.windows), sim.apps)
    assert setup.agent is not None and setup.env_config is not None
    sim, actions = run_agent(setup.system, trace, run.case, setup.agent.policy().act, setup.env_config)
    return RunCounts(sim.tally.trimmed(sim.windows), sim.apps, actions)


def evaluate(system: SystemModel, agent: AgentFile | None, lambdas: list[float], seeds: list[int],
             duration_s: float, sim_window_s: float = SIM_WINDOW_S, progress: bool = False,
             engine: Engine | CaseRunner = SERIAL) -> Evaluation:
    """Runs every static policy and (if given) the agent on trace(lambda, seed) with simulator seed `seed`;
    the runs are the cases of one sweep on `engine` (default: serially here), whose results are the same
    wherever they run."""
    env_cfg = None
    if agent is not None:
        meta = agent.policy().meta
        env_cfg = EnvConfig.for_agent(meta, sim_window_s)
        meta.check_compatible(AsetEnv(system, env_cfg).spec_state, "agent")
    drivers: list[int | None] = [*range(len(POLICY_NAMES)), *([None] if agent is not None else [])]
    runs = [EvalRun(EvalCase(lam, seed, duration_s), p) for lam in lambdas for seed in seeds for p in drivers]

    def report(i: int, _: RunCounts) -> None:
        r = runs[i]
        name = ASET if r.policy is None else POLICY_NAMES[r.policy]
        print(f"  lambda {r.case.lambda_per_min:g} seed {r.case.seed} {name} done", flush=True)

    done = iter(run_cases(run_one, runs, EvalSetup(system, agent, env_cfg, sim_window_s), engine,
                          on_result=report if progress else None, cost=lambda r: r.case.relative_cost))
    results: dict[float, dict[str, PolicyResult]] = {}
    for lam in lambdas:  # the runs' order: lambda, seed, driver
        counts: dict[str, list[np.ndarray]] = {p: [] for p in (*POLICY_NAMES, ASET)}
        actions: list[list[int]] = []
        apps: tuple[str, ...] = ()
        for _seed in seeds:
            for p in drivers:
                r = next(done)
                counts[ASET if p is None else POLICY_NAMES[p]].append(r.counts)
                apps = r.apps
                if r.actions is not None:
                    actions.append(r.actions)
        results[lam] = {p: PolicyResult(p, lam, _pooled(c), apps, actions if p == ASET else [])
                        for p, c in counts.items() if c}
    decision_window_s = env_cfg.decision_window_s if env_cfg is not None else 0.0
    return Evaluation(system.topology.name, tuple(seeds), duration_s, sim_window_s, decision_window_s, results)


def format_table(ev: Evaluation) -> str:
    """Returns the comparison table: per lambda and policy, success / failed / rejected and per-app success (%)."""
    lines = [f"topology {ev.topology}, seeds {','.join(map(str, ev.seeds))}, {ev.duration_s:g} s per run; "
             "percent of queries; per-app columns are success"]
    for lam, by_policy in ev.results.items():
        apps = next(iter(by_policy.values())).apps
        head = f"{'lambda':>6} {'policy':<28} {'success':>7} {'failed':>7} {'reject':>7} " + \
            " ".join(f"{a[:12]:>12}" for a in apps)
        lines += ["", head, "-" * len(head)]
        best = ev.best_static(lam)
        for p, r in by_policy.items():
            o = r.overall
            mark = " *" if p == best else ""
            lines.append(f"{lam:>6g} {p + mark:<28} {100 * o.success:7.2f} {100 * o.failed:7.2f} "
                         f"{100 * o.rejected:7.2f} " + " ".join(f"{100 * x.success:12.2f}" for x in r.per_app().values()))
        if ASET in by_policy:
            d = 100 * (by_policy[ASET].overall.success - by_policy[best].overall.success)
            share = np.bincount(np.concatenate([np.asarray(a) for a in by_policy[ASET].actions]),
                                minlength=len(POLICY_NAMES)) if by_policy[ASET].actions else np.zeros(0)
            used = ", ".join(f"{POLICY_NAMES[i]} {100 * c / share.sum():.0f}%" for i, c in enumerate(share) if c)
            lines.append(f"{'':>6} aset - best static ({best}): {d:+.2f} points; aset chose: {used}")
    return "\n".join(lines)


def plot(ev: Evaluation, out_dir: Path, smooth_s: float = 10.0) -> list[Path]:
    """Writes success-over-time PNGs per lambda (with ASET's choices) and a success-vs-lambda PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    k = max(1, round(smooth_s / ev.window_s))
    for lam, by_policy in ev.results.items():
        has_aset = ASET in by_policy and by_policy[ASET].actions
        fig, axes = plt.subplots(2 if has_aset else 1, 1, figsize=(9, 6 if has_aset else 4), sharex=True,
                                 squeeze=False, gridspec_kw={"height_ratios": [3, 1]} if has_aset else None)
        ax = axes[0, 0]
        for p, r in by_policy.items():
            s = r.series_success()
            sm = _moving_mean(s, k)
            t = np.arange(len(s)) * ev.window_s
            aset = p == ASET  # dashed on top, so that a static policy it follows stays visible
            ax.plot(t, 100 * sm, lw=1.8 if aset else 1.0, ls="--" if aset else "-", color="black" if aset else None,
                    label=p, zorder=3 if aset else 2)
        ax.set_ylabel(f"success ratio (%), {smooth_s:g}-s mean")
        ax.set_title(f"{ev.topology}, lambda = {lam:g} clients/min per antenna, seeds pooled")
        ax.legend(fontsize=7, ncol=2, loc="lower left")
        ax.grid(alpha=0.3)
        if has_aset:
            acts = by_policy[ASET].actions[0]
            t = np.arange(len(acts)) * ev.decision_window_s
            axes[1, 0].step(t, acts, where="post", color="black")
            axes[1, 0].set_yticks(range(len(POLICY_NAMES)), POLICY_NAMES, fontsize=6)
            axes[1, 0].set_xlabel(f"time (s); ASET's choice per window, seed {ev.seeds[0]}")
        else:
            ax.set_xlabel("time (s)")
        fig.tight_layout()
        path = out_dir / f"{ev.topology}_success_over_time_lambda{lam:g}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    fig, ax = plt.subplots(figsize=(7, 4))
    lams = list(ev.results)
    for p in next(iter(ev.results.values())):
        ax.plot(lams, [100 * ev.results[lam][p].overall.success for lam in lams], marker="o",
                lw=1.8 if p == ASET else 1.0, ls="--" if p == ASET else "-", color="black" if p == ASET else None,
                label=p, zorder=3 if p == ASET else 2)
    ax.set_xlabel("lambda (clients/min per antenna)")
    ax.set_ylabel("success ratio (%)")
    ax.set_title(ev.topology)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out_dir / f"{ev.topology}_success_vs_lambda.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [*written, path]


def _moving_mean(x: np.ndarray, k: int) -> np.ndarray:
    """Returns the centred k-window mean of x, ignoring NaN (windows without queries) and the edges."""
    ok = ~np.isnan(x)
    num = np.convolve(np.where(ok, x, 0.0), np.ones(k), mode="same")
    den = np.convolve(ok.astype(np.float64), np.ones(k), mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1e-12), np.nan)


def write_json(ev: Evaluation, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ev.to_json(), indent=1) + "\n")
    return path
