"""PNG plots like the paper's figures: success ratio over time per policy, outcome shares per application."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from analysis.summary import RunSummary  # noqa: E402


def _smooth(values: list[float], width: int) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    if width <= 1 or len(x) < width:
        return x
    ok = np.isfinite(x)
    num = np.convolve(np.where(ok, x, 0.0), np.ones(width), mode="same")
    den = np.convolve(ok.astype(float), np.ones(width), mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


PolicyBands = dict[str, list[tuple[float, float, str]]]
"""Per antenna: (start s, end s, policy) of every decision window."""


def plot_success_over_time(summaries: list[RunSummary], path: str | Path, smooth_s: float = 10.0,
                           policy_bands: PolicyBands | None = None,
                           events: list[tuple[float, str]] | None = None) -> None:
    """Writes one line per run (policy) of the success ratio over time, smoothed over `smooth_s` seconds, and
    per application a bar per run; where the runs come from both environments, the testbed's (the first) is drawn
    bold and named live, the simulator's thin and dashed; `events` (seconds, label) are marked as vertical lines;
    with `policy_bands`, a panel underneath shows each antenna's policy per decision window (one colour each)."""
    if policy_bands:
        fig = plt.figure(figsize=(13, 6))
        grid = fig.add_gridspec(2, 2, width_ratios=[2.2, 1], height_ratios=[3, 1.2])
        ax = fig.add_subplot(grid[0, 0])
        bx = fig.add_subplot(grid[:, 1])
        cx = fig.add_subplot(grid[1, 0], sharex=ax)
    else:
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [2.2, 1]})
    mixed = len({s.environment for s in summaries}) > 1
    names = [_name(s, mixed) for s in summaries]
    for s, name in zip(summaries, names, strict=True):
        width = max(1, int(round(smooth_s / s.window_s)))
        t = np.arange(len(s.series_success)) * s.window_s
        live = s.environment == "testbed"
        ax.plot(t, _smooth(s.series_success, width), label=f"{name} ({s.overall.success:.3f})",
                lw=2.4 if mixed and live else 1.1 if mixed else 1.3, ls="--" if mixed and not live else "-",
                color="black" if mixed and live else None, zorder=3 if live else 2)
    at: dict[float, list[str]] = {}
    for at_s, label in events or ():
        at.setdefault(at_s, []).append(label)
    for at_s, labels in at.items():  # one line per time, its events' labels beside it
        ax.axvline(at_s, color="grey", lw=0.8, ls=":")
        ax.annotate("\n".join(labels), (at_s, 0.99), rotation=90, fontsize=6, color="dimgrey", va="top", ha="right")
    first = summaries[0]
    where = "testbed and simulator (same trace)" if mixed else first.environment
    ax.set(xlabel="" if policy_bands else "time [s]", ylabel="success ratio (answered on time)", ylim=(0, 1.02),
           title=f"{where}: {first.topology}, lambda={first.lambda_per_min}/min per antenna")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    if policy_bands:
        _policy_panel(cx, policy_bands)
    apps = sorted(first.per_app)
    width = 0.8 / max(1, len(summaries))
    for i, (s, name) in enumerate(zip(summaries, names, strict=True)):
        live = mixed and s.environment == "testbed"
        bx.bar(np.arange(len(apps)) + i * width, [s.per_app[a].success if a in s.per_app else np.nan for a in apps],
               width, label=name, color="black" if live else None)
    bx.set_xticks(np.arange(len(apps)) + 0.4 - width / 2, apps, rotation=20, fontsize=8)
    bx.set(ylabel="success ratio", ylim=(0, 1.02), title="per application (colours as on the left)")
    bx.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _name(summary: RunSummary, mixed: bool) -> str:
    """Returns a run's name in the legend: its policy, and where both environments are drawn, which one."""
    if not mixed:
        return summary.policy
    return f"live {summary.policy}" if summary.environment == "testbed" else f"sim {summary.policy}"


def _policy_panel(ax: plt.Axes, bands: PolicyBands) -> None:
    """Draws one row per antenna: a coloured span per decision window, the colour naming its policy."""
    from matplotlib.patches import Patch

    from scheduler.core import POLICY_NAMES

    cmap = plt.get_cmap("tab10")
    colour = {p: cmap(i) for i, p in enumerate(POLICY_NAMES)}
    antennas = sorted(bands)
    used: dict[str, None] = {}
    for row, ant in enumerate(antennas):
        for t0, t1, policy in bands[ant]:
            ax.axvspan(t0, t1, ymin=(row + 0.1) / len(antennas), ymax=(row + 0.9) / len(antennas),
                       facecolor=colour.get(policy, "grey"), edgecolor="white", lw=0.6)  # edges: windows
            used[policy] = None
    ax.set_ylim(0, len(antennas))
    ax.set_yticks(np.arange(len(antennas)) + 0.5, antennas, fontsize=8)
    ax.set_xlabel("time [s]; policy of each decision window per antenna")
    ax.legend(handles=[Patch(color=colour.get(p, "grey"), label=p) for p in used], fontsize=7,
              ncol=min(4, len(used)), loc="upper center", bbox_to_anchor=(0.5, -0.45), frameon=False)
