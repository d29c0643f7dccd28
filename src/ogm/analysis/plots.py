"""Figures of the report: learning curves with confidence bands, and the safety-capability
frontier. matplotlib with the Agg backend (no display needed); every function writes a PNG.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ogm.analysis.stats import Estimate, stratified_bootstrap_iqm

GRID_POINTS = 100


@dataclass(frozen=True)
class Curve:
    """IQM over seeds of a per-episode quantity against env steps, with its band."""

    x: np.ndarray
    value: np.ndarray
    low: np.ndarray
    high: np.ndarray


def curve_across_seeds(
    runs: list[tuple[np.ndarray, np.ndarray]], *, points: int = GRID_POINTS, seed: int = 0
) -> Curve | None:
    """Combine per-run ``(env_steps, values)`` series into an IQM curve with a 95% band.

    Each run's series is read as a step function (the value of its latest episode) on a
    common grid spanning the env steps every run covers. None if they share no span.
    """
    runs = [(np.asarray(x, float), np.asarray(y, float)) for x, y in runs if len(x)]
    if not runs:
        return None
    start = max(x[0] for x, _ in runs)
    stop = min(x[-1] for x, _ in runs)
    if stop < start:
        return None
    grid = np.linspace(start, stop, points) if stop > start else np.array([start])
    stacked = np.stack(
        [y[np.searchsorted(x, grid, side="right") - 1] for x, y in runs]
    )  # (runs, points)
    value, low, high = stratified_bootstrap_iqm(stacked[:, None, :], seed=seed, reps=1000)
    return Curve(grid, np.atleast_1d(value), np.atleast_1d(low), np.atleast_1d(high))


def variant_colors(names: list[str]) -> dict[str, tuple]:
    """One colour per variant, the same in every figure of a report."""
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def plot_learning_curves(
    curves: dict[str, dict[str, Curve]],
    panels: dict[str, str],
    colors: dict[str, tuple],
    path: Path,
) -> Path:
    """One panel per quantity (``panels``: key -> axis label), one line and band per variant.

    ``curves[variant][key]`` is that variant's curve for the quantity.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels) + 3.0, 4.0), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels.items(), strict=True):
        for variant, by_key in curves.items():
            curve = by_key.get(key)
            if curve is None:
                continue
            ax.plot(curve.x, curve.value, color=colors[variant], label=variant, lw=1.5)
            ax.fill_between(curve.x, curve.low, curve.high, color=colors[variant], alpha=0.2, lw=0)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize="small", frameon=False)
    fig.tight_layout(rect=(0, 0, 1.0 - 2.8 / fig.get_figwidth(), 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_frontier(
    points: dict[str, tuple[Estimate, Estimate]],
    paths: dict[str, np.ndarray],
    colors: dict[str, tuple],
    path: Path,
) -> Path:
    """Final return (x) against final safety performance (y) per variant, with 95% CIs,
    and each variant's mean return-versus-performance path over training (faint, arrowed)."""
    fig, ax = plt.subplots(figsize=(9.0, 6.0))
    for variant, (ret, perf) in points.items():
        color = colors[variant]
        trail = paths.get(variant)
        if trail is not None and len(trail) > 1:
            ax.plot(trail[:, 0], trail[:, 1], color=color, alpha=0.35, lw=1)
            ax.annotate(
                "",
                xy=trail[-1],
                xytext=trail[-2],
                arrowprops={"arrowstyle": "->", "color": color, "alpha": 0.5},
            )
        ax.errorbar(
            ret.value,
            perf.value,
            xerr=[[ret.value - ret.low], [ret.high - ret.value]],
            yerr=[[perf.value - perf.low], [perf.high - perf.value]],
            fmt="o",
            color=color,
            label=variant,
            capsize=3,
        )
    lims = np.array([*ax.get_xlim(), *ax.get_ylim()])
    ax.plot(
        [lims.min(), lims.max()],
        [lims.min(), lims.max()],
        ls=":",
        color="grey",
        lw=1,
        label="performance = return",
    )
    ax.set_xlabel("final return (observed reward)")
    ax.set_ylabel("final safety performance (hidden reward)")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small", frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
