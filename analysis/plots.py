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


def plot_success_over_time(summaries: list[RunSummary], path: str | Path, smooth_s: float = 10.0) -> None:
    """Writes one line per run (policy) of the success ratio over time, smoothed over `smooth_s` seconds."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [2.2, 1]})
    for s in summaries:
        width = max(1, int(round(smooth_s / s.window_s)))
        t = np.arange(len(s.series_success)) * s.window_s
        ax.plot(t, _smooth(s.series_success, width), label=f"{s.policy} ({s.overall.success:.3f})", lw=1.3)
    first = summaries[0]
    ax.set(xlabel="time [s]", ylabel="success ratio (answered on time)", ylim=(0, 1.02),
           title=f"{first.environment}: {first.topology}, lambda={first.lambda_per_min}/min per antenna")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
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
