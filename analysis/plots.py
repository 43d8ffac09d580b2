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
                           policy_bands: PolicyBands | None = None) -> None:
    """Writes one line per run (policy) of the success ratio over time, smoothed over `smooth_s` seconds;
    with `policy_bands`, a panel underneath shows each antenna's policy per decision window (one colour each)."""
    if policy_bands:
        fig = plt.figure(figsize=(13, 6))
        grid = fig.add_gridspec(2, 2, width_ratios=[2.2, 1], height_ratios=[3, 1.2])
        ax = fig.add_subplot(grid[0, 0])
        bx = fig.add_subplot(grid[:, 1])
        cx = fig.add_subplot(grid[1, 0], sharex=ax)
    else:
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [2.2, 1]})
    for s in summaries:
        width = max(1, int(round(smooth_s / s.window_s)))
        t = np.arange(len(s.series_success)) * s.window_s
        ax.plot(t, _smooth(s.series_success, width), label=f"{s.policy} ({s.overall.success:.3f})", lw=1.3)
    first = summaries[0]
    ax.set(xlabel="" if policy_bands else "time [s]", ylabel="success ratio (answered on time)", ylim=(0, 1.02),
           title=f"{first.environment}: {first.topology}, lambda={first.lambda_per_min}/min per antenna")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    if policy_bands:
        _policy_panel(cx, policy_bands)
    apps = sorted(first.per_app)
    width = 0.8 / max(1, len(summaries))
    for i, s in enumerate(summaries):
        bx.bar(np.arange(len(apps)) + i * width, [s.per_app[a].success for a in apps], width, label=s.policy)
    bx.set_xticks(np.arange(len(apps)) + 0.4 - width / 2, apps, rotation=20, fontsize=8)
    bx.set(ylabel="success ratio", ylim=(0, 1.02), title="per application")
    bx.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
