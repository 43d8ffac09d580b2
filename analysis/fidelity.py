"""Simulator-vs-testbed fidelity: the same trace's per-query logs from both sides, compared.

Per policy the outcome ratios and their differences in points, the policies' ranking on both sides
(Spearman's rho, and the pairs the simulator orders that the testbed reverses), the per-window success series and their correlation, and per stage (network up,
queueing, inference, network down) the latency distributions and their Kolmogorov-Smirnov distance. Beside the
window correlation, the simulator's with itself under other run seeds (`self_correlation`): no emulator can be
expected to follow the simulator's windows more closely than the simulator follows itself. And query by query
(analysis/pairing.py): the queries the testbed missed that the simulator did not, and why.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
from scipy import stats

from analysis.pairing import PairedMisses, markdown_lines, pair_misses
from analysis.records import OUTCOMES, PATH_STAGES, read_records
from analysis.summary import Ratios, Tally

STAGES: tuple[tuple[str, str, str], ...] = (("network up", PATH_STAGES[0][1], PATH_STAGES[1][2]), *PATH_STAGES[2:])
"""Each stage compared as (name, start column, end column) of the per-query log: PATH_STAGES, the network up
(send to arrival at the worker) as one."""


@dataclass(frozen=True)
class PolicyComparison:
    """One policy's outcome ratios on both sides and how far apart they are."""

    policy: str
    simulator: Ratios
    testbed: Ratios
    success_diff_pts: float
    """Testbed minus simulator success ratio, in percentage points."""
    failed_diff_pts: float
    rejected_diff_pts: float
    window_correlation: float
    """Pearson correlation of the per-window success ratios (windows both sides have queries in)."""
    series_simulator: list[float]
    series_testbed: list[float]
    simulator_self_correlation: float = float("nan")
    """Median correlation of the simulator's series with its own under `other_seeds` (`self_correlation`; nan
    where not simulated again, or where its series is flat)."""


@dataclass(frozen=True)
class StageComparison:
    """One stage's latency distribution on both sides (queries answered on both sides' logs)."""

    policy: str
    stage: str
    simulator_p50_ms: float
    testbed_p50_ms: float
    simulator_p99_ms: float
    testbed_p99_ms: float
    mean_diff_ms: float
    """Testbed minus simulator mean: what this stage adds to the end-to-end gap."""
    ks_distance: float


@dataclass(frozen=True)
class FidelityReport:
    """The whole comparison; `largest_gap_stage` names the stage whose mean differs most (in ms)."""

    topology: str
    calibrated: str
    window_s: float
    policies: list[PolicyComparison]
    ranking_spearman_rho: float
    ranking_reversals: list[str]
    """Each pair of policies the simulator orders strictly by success and the testbed the other way round, as
    "A > B" (the simulator's order); empty when the testbed keeps every strict order (a simulator tie may go
    either way, which rho alone counts against it)."""
    stages: list[StageComparison]
    largest_gap_stage: str
    paired: list[PairedMisses] = field(default_factory=list)
    """Per policy, the queries paired across both logs: which the testbed missed that the simulator did not, and
    why (analysis/pairing.py)."""
    full_links: dict[str, list[dict]] = field(default_factory=dict)
    """Per policy, the link directions full on the testbed in some virtual second (summary.json's `links_full`,
    live/linkload.py)."""
    testbed_fidelity: dict[str, dict] = field(default_factory=dict)
    """Per policy, the testbed run's fidelity record (summary.json's `extra.fidelity`, live/verdict.py): whether its
    figures are the emulated system's at all."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, allow_nan=True)

    def to_markdown(self) -> str:
        lines = [f"# Simulator vs testbed: {self.topology}", "",
                 f"Simulator inputs: {self.calibrated}. Windows of {self.window_s:g} s.", "",
                 "| policy | success sim | success testbed | diff (pts) | failed diff | rejected diff | "
                 "window corr | sim vs itself |", "|---|---|---|---|---|---|---|---|"]
        for p in self.policies:
            lines.append(f"| {p.policy} | {p.simulator.success:.3f} | {p.testbed.success:.3f} | "
                         f"{p.success_diff_pts:+.2f} | {p.failed_diff_pts:+.2f} | {p.rejected_diff_pts:+.2f} | "
                         f"{p.window_correlation:.3f} | {p.simulator_self_correlation:.3f} |")
        if self.testbed_fidelity:
            lines += ["", "Testbed runs judged by the fidelity monitor (docs/fidelity.md): "
                      + "; ".join(f"{p}: {verdict_line(f)}" for p, f in self.testbed_fidelity.items()) + "."]
        lines += ["", "Sim vs itself: the median window correlation of the simulator with itself on the same trace "
                  f"under run seeds {', '.join(map(str, SELF_SEEDS))} (jitter and random choices drawn again; nan: "
                  "not simulated again, or its series is flat), what a faithful testbed's correlation can be "
                  "expected to reach.", "", f"Ranking of the policies by success: Spearman's rho = {self.ranking_spearman_rho:.3f}; "
                  + (f"reversed on the testbed: {', '.join(self.ranking_reversals)}" if self.ranking_reversals
                     else "no order the simulator gives is reversed on the testbed"), "",
                  "| policy | stage | p50 sim (ms) | p50 testbed (ms) | p99 sim (ms) | p99 testbed (ms) | "
                  "mean diff (ms) | KS |", "|---|---|---|---|---|---|---|---|"]
        for s in self.stages:
            lines.append(f"| {s.policy} | {s.stage} | {s.simulator_p50_ms:.2f} | {s.testbed_p50_ms:.2f} | "
                         f"{s.simulator_p99_ms:.2f} | {s.testbed_p99_ms:.2f} | {s.mean_diff_ms:+.2f} | "
                         f"{s.ks_distance:.3f} |")
        lines += ["", f"Largest gap: **{self.largest_gap_stage}**."]
        if self.paired:
            lines += [""] + markdown_lines(self.paired, self.window_s)
        if any(self.full_links.values()):
            lines += ["", "Links full on the testbed (testbed/<policy>/link_load.csv):", "",
                      *full_links_table(self.full_links)]
        return "\n".join(lines) + "\n"


FULL_BUSY = 0.9
"""A link direction that spent at least this share of a virtual second sending was full in it (live/linkload.py)."""


def verdict_line(fidelity: dict) -> str:
    """Returns a run's fidelity record in a few words: its verdict, K, and each hard invariant it broke (value
    against threshold, from which virtual second), why it stopped early (the sources' lag, or a server's cores no
    longer held), or why it was not judged."""
    if not fidelity:
        return "not judged (no fidelity record)"
    line = fidelity.get("verdict", "not judged") + (f" at K {fidelity['tdf']:g}" if "tdf" in fidelity else "")
    broken = [f"{v['invariant']} {v['statistic']} {v['value']:g} > {v['threshold']:g} {v['unit']}"
              + (f" from {v['first_window_s']:g} s" if v.get("first_window_s") is not None else "")
              for v in fidelity.get("violations", [])]
    if stop := fidelity.get("stopped_early"):  # live/verdict.py's format_fidelity gives its two shapes in full
        where = f" on server {stop['server']}" if "server" in stop else ""
        broken.append(f"stopped early at {stop.get('windows_from_s', float('nan')):g} s: "
                      f"{stop.get('invariant', 'unknown')}{where}")
    if fidelity.get("error"):
        broken.append(" ".join(str(fidelity["error"]).split()))
    return line + (f" ({', '.join(broken)})" if broken else "")


def full_links_table(full_links: dict[str, list[dict]]) -> list[str]:
    """Returns the markdown table of the link directions full on the testbed per policy (summary.json's
    `links_full`, live/linkload.py), with what it means for the comparison."""
    lines = [f"A link direction is full in a virtual second it spent sending at least {FULL_BUSY:.0%} of (the "
             "wires' counts). "
             "Frames queue there on both sides (the simulator on the antennas' radios and the paths' links); the "
             "testbed's TCP also loses and resends where the queue in front of the link overflows, which the "
             "simulator does not (docs/fidelity.md, \"A full link\").", "",
             "| policy | link | direction | full (virtual s) | from (s) | busy max | longest wait at the wire (ms) |",
             "|---|---|---|---|---|---|---|"]
    return lines + [f"| {p} | {f['link']} | "
                    f"{f['direction']} | {f['full_s']:g} | {f['first_full_s']:g} | {f['busy_max']:.2f} | "
                    f"{f['wait_max_ms']:.1f} |" for p, fs in full_links.items() for f in fs]


def ranking_reversals(simulator: dict[str, float], testbed: dict[str, float]) -> list[str]:
    """Returns the pairs of policies that `simulator` (success per policy) orders strictly and `testbed` orders the
    other way round, as "A > B" in the simulator's order."""
    names = sorted(simulator, key=lambda p: -simulator[p])
    return [f"{a} > {b}" for i, a in enumerate(names) for b in names[i + 1:]
            if simulator[a] > simulator[b] and testbed[a] < testbed[b]]


def _tally(table: pa.Table, window_s: float, apps: tuple[str, ...]) -> Tally:
    tally = Tally(window_s, apps)
    lookup = {a: i for i, a in enumerate(apps)}
    out = {o: i for i, o in enumerate(OUTCOMES)}
    tally.add(np.asarray(table.column("t_send_ms")),
              np.array([lookup[a] for a in table.column("app").to_pylist()], dtype=np.int64),
              np.array([out[o] for o in table.column("outcome").to_pylist()], dtype=np.int64))
    return tally


def _series(tally: Tally, n_windows: int) -> np.ndarray:
    c = tally.trimmed(n_windows).sum(axis=1)
    total = c.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, c[:, 0] / np.maximum(total, 1), np.nan)


def series_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Returns Pearson's correlation of two per-window series over the windows both have (nan: fewer than two, or
    one flat and the other not)."""
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 2:
        return float("nan")
    if np.std(a) == 0 or np.std(b) == 0:
        return 1.0 if np.allclose(a, b) else float("nan")  # a flat series has no correlation
    return float(np.corrcoef(a, b)[0, 1])


SELF_SEEDS = (101, 202, 303, 404, 505)
"""The run seeds the simulator is run with again to measure its correlation with itself."""


def other_seeds(seed: int) -> tuple[int, ...]:
    """Returns SELF_SEEDS, one that is `seed` itself moved by 1000 (the simulator against another draw, always)."""
    return tuple(s + 1000 if s == seed else s for s in SELF_SEEDS)


def self_correlation(own: np.ndarray, others: list[np.ndarray]) -> list[float]:
    """Returns the defined correlations of the simulator's per-window series `own` with each of `others` (the
    same trace under other run seeds, cut to the shorter length): none where `own` is flat or has fewer than two
    windows (nothing correlates with it), 0 for another that is flat on the windows both have (it does not follow
    `own` at all); another sharing fewer than two windows with `own` is left out."""
    finite = own[np.isfinite(own)]
    if len(finite) < 2 or np.std(finite) == 0:
        return []
    out = []
    for other in others:
        n = min(len(own), len(other))
        a, b = own[:n], other[:n]
        ok = np.isfinite(a) & np.isfinite(b)
        if ok.sum() < 2 or np.std(a[ok]) == 0:
            continue
        out.append(0.0 if np.std(b[ok]) == 0 else float(np.corrcoef(a[ok], b[ok])[0, 1]))
    return out


def _stage(table: pa.Table, start: str, end: str) -> np.ndarray:
    served = np.asarray(table.column("outcome").to_pylist(), dtype=object) != "rejected"
    d = np.asarray(table.column(end))[served] - np.asarray(table.column(start))[served]
    return d[np.isfinite(d)]


def compare_tables(pairs: dict[str, tuple[pa.Table, pa.Table]], topology: str, calibrated: str,
                   window_s: float = 1.0, sim_again: dict[str, list[np.ndarray]] | None = None,
                   one_side_again: dict[str, list[int]] | None = None) -> FidelityReport:
    """Returns the report for {policy: (simulator records, testbed records)} of one trace; `sim_again`: per policy
    the simulator's per-window success series under SELF_SEEDS, for its correlation with itself; `one_side_again`:
    per policy, under each of those seeds, the queries missed by that simulation or the own seed's alone
    (analysis.pairing.one_side)."""
    policies, stage_rows = [], []
    for policy, (sim, tb) in pairs.items():
        apps = tuple(sorted(set(sim.column("app").to_pylist()) | set(tb.column("app").to_pylist())))
        ts, tt = _tally(sim, window_s, apps), _tally(tb, window_s, apps)
        n_w = max(ts.counts.shape[0], tt.counts.shape[0])
        rs, rt = Ratios.of(ts.counts), Ratios.of(tt.counts)
        ss, st = _series(ts, n_w), _series(tt, n_w)
        policies.append(PolicyComparison(
            policy=policy, simulator=rs, testbed=rt,
            success_diff_pts=100 * (rt.success - rs.success), failed_diff_pts=100 * (rt.failed - rs.failed),
            rejected_diff_pts=100 * (rt.rejected - rs.rejected), window_correlation=series_correlation(ss, st),
            series_simulator=[float(x) for x in ss], series_testbed=[float(x) for x in st],
            simulator_self_correlation=float(np.median(c))
            if (c := self_correlation(ss, (sim_again or {}).get(policy, []))) else float("nan")))
        for name, start, end in STAGES:
            a, b = _stage(sim, start, end), _stage(tb, start, end)
            if len(a) == 0 or len(b) == 0:
                continue
            stage_rows.append(StageComparison(
                policy=policy, stage=name,
                simulator_p50_ms=float(np.percentile(a, 50)), testbed_p50_ms=float(np.percentile(b, 50)),
                simulator_p99_ms=float(np.percentile(a, 99)), testbed_p99_ms=float(np.percentile(b, 99)),
                mean_diff_ms=float(b.mean() - a.mean()), ks_distance=float(stats.ks_2samp(a, b, method="asymp").statistic)))
    rho = float("nan")
    if len(policies) >= 2:
        sim_s = [p.simulator.success for p in policies]
        tb_s = [p.testbed.success for p in policies]
        if sim_s == tb_s:
            rho = 1.0
        elif np.ptp(sim_s) > 0 and np.ptp(tb_s) > 0:
            rho = float(stats.spearmanr(sim_s, tb_s).statistic)
        # else: one side ranks every policy equal, so the rank correlation is undefined (nan)
    worst = max(stage_rows, key=lambda s: abs(s.mean_diff_ms), default=None)
    return FidelityReport(topology=topology, calibrated=calibrated, window_s=window_s, policies=policies,
                          ranking_spearman_rho=rho,
                          ranking_reversals=ranking_reversals({p.policy: p.simulator.success for p in policies},
                                                              {p.policy: p.testbed.success for p in policies}),
                          stages=stage_rows,
                          largest_gap_stage=f"{worst.stage} ({worst.policy}: {worst.mean_diff_ms:+.2f} ms on "
                                            f"average, KS {worst.ks_distance:.3f})"
                          if worst else "none",
                          paired=[replace(pair_misses(policy, sim, tb, window_s),
                                          simulator_self_one_side=list((one_side_again or {}).get(policy, [])))
                                  for policy, (sim, tb) in pairs.items()])


def compare_dirs(pairs: dict[str, tuple[Path, Path]], topology: str, calibrated: str,
                 window_s: float = 1.0, sim_again: dict[str, list[np.ndarray]] | None = None,
                 one_side_again: dict[str, list[int]] | None = None) -> FidelityReport:
    """Returns the report for {policy: (simulator records file, testbed records file)} (`sim_again`,
    `one_side_again`: see `compare_tables`)."""
    return compare_tables({p: (read_records(a), read_records(b)) for p, (a, b) in pairs.items()},
                          topology, calibrated, window_s, sim_again, one_side_again)


def write_report(report: FidelityReport, out_dir: Path) -> None:
    """Writes report.md, report.json and the plots (series per policy, stage CDFs) to out_dir."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.md").write_text(report.to_markdown())
    (out_dir / "report.json").write_text(report.to_json() + "\n")
    n = max(1, len(report.policies))
    fig, axes = plt.subplots(n, 1, figsize=(9, 2.4 * n), squeeze=False)
    for ax, p in zip(axes[:, 0], report.policies, strict=False):
        t = np.arange(len(p.series_simulator)) * report.window_s
        ax.plot(t, p.series_simulator, label=f"simulator ({p.simulator.success:.3f})")
        ax.plot(t, p.series_testbed, label=f"testbed ({p.testbed.success:.3f})")
        ax.set(title=f"{p.policy}: corr {p.window_correlation:.2f}", ylabel="success", ylim=(0, 1.02))
        ax.legend(fontsize=8)
    axes[-1, 0].set_xlabel("time [s]")
    fig.tight_layout()
    fig.savefig(out_dir / "series.png", dpi=100)
    plt.close(fig)
