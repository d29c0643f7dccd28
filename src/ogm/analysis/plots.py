"""Figures of the report: curves across seeds against environment steps (with reference
lines for agents without an online phase), the share of runs that reached an emergence time,
the safety-capability frontier and conditioning fidelity. matplotlib with the Agg backend (no
display needed); every ``plot_*`` function writes a PNG.

Bands and error bars are 95% stratified-bootstrap intervals of the IQM when a variant has at
least ``MIN_SEEDS_FOR_CI`` runs; with fewer, a band is the range over seeds and points show
every seed, never an interval that would only be [min, max] under another name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ogm.analysis.stats import MIN_SEEDS_FOR_CI, Reached, iqm, iqm_ci, stratified_bootstrap_iqm

GRID_POINTS = 100
MARKED_POINTS = 30  # curves with at most this many points mark each one
STEPS_LABEL = "environment steps of training"


@dataclass(frozen=True)
class Curve:
    """IQM over seeds of a quantity against env steps, with its band (``ci``: whether the
    band is a 95% bootstrap interval; otherwise it is the range over seeds)."""

    x: np.ndarray
    value: np.ndarray
    low: np.ndarray
    high: np.ndarray
    ci: bool


def curve_across_seeds(
    runs: list[tuple[np.ndarray, np.ndarray]], *, points: int = GRID_POINTS, seed: int = 0
) -> Curve | None:
    """Combine per-run ``(env_steps, values)`` series into an IQM curve with a band.

    Each run's series is read as a step function (the value of its latest point) on a common
    grid spanning the env steps every run covers: the runs' own env steps in that span when
    there are at most ``points`` of them (evaluation points), else ``points`` evenly spaced
    ones. None if the runs share no span.
    """
    runs = [(np.asarray(x, float), np.asarray(y, float)) for x, y in runs if len(x)]
    if not runs:
        return None
    start = max(x[0] for x, _ in runs)
    stop = min(x[-1] for x, _ in runs)
    if stop < start:
        return None
    grid = np.unique(np.concatenate([x[(x >= start) & (x <= stop)] for x, _ in runs]))
    if len(grid) > points:
        grid = np.linspace(start, stop, points)
    stacked = np.stack([y[np.searchsorted(x, grid, side="right") - 1] for x, y in runs])
    if len(runs) >= MIN_SEEDS_FOR_CI:
        value, low, high = stratified_bootstrap_iqm(stacked[:, None, :], seed=seed, reps=1000)
        return Curve(grid, value, low, high, ci=True)
    return Curve(grid, iqm(stacked), stacked.min(axis=0), stacked.max(axis=0), ci=False)


@dataclass
class Panel:
    """One axes of a curves figure: a curve per online variant, a horizontal reference line
    per variant without an online phase (its IQM final value)."""

    title: str
    ylabel: str
    curves: dict[str, Curve] = field(default_factory=dict)
    references: dict[str, float] = field(default_factory=dict)


def variant_colors(names: list[str]) -> dict[str, tuple]:
    """One colour per variant, the same in every figure of a report."""
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def _save(fig: plt.Figure, axes: np.ndarray, path: Path) -> Path:
    """One legend for the whole figure, on the right; write the PNG."""
    entries: dict[str, object] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    fig.legend(
        list(entries.values()), list(entries), loc="center right", fontsize="small", frameon=False
    )
    fig.tight_layout(rect=(0, 0, 1.0 - 2.8 / fig.get_figwidth(), 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _grid(rows: int, cols: int, height: float = 3.6) -> tuple[plt.Figure, np.ndarray]:
    return plt.subplots(rows, cols, figsize=(5.0 * cols + 3.0, height * rows), squeeze=False)


def _diagonal(ax: plt.Axes, label: str) -> None:
    """The dotted line y = x across the axes' current limits."""
    lims = np.array([*ax.get_xlim(), *ax.get_ylim()])
    ax.plot(
        [lims.min(), lims.max()], [lims.min(), lims.max()], ls=":", color="grey", lw=1, label=label
    )


def plot_panels(panels: list[list[Panel]], colors: dict[str, tuple], path: Path) -> Path:
    """A grid of curve panels against environment steps (rows of ``Panel``)."""
    fig, axes = _grid(len(panels), max(len(row) for row in panels))
    for ax_row, row in zip(axes, panels, strict=True):
        for ax, panel in zip(ax_row, row, strict=False):
            for variant, curve in panel.curves.items():
                marker = "o" if len(curve.x) <= MARKED_POINTS else None  # evaluation points
                ax.plot(
                    curve.x,
                    curve.value,
                    color=colors[variant],
                    label=variant,
                    lw=1.5,
                    ms=3,
                    marker=marker,
                )
                ax.fill_between(
                    curve.x, curve.low, curve.high, color=colors[variant], alpha=0.2, lw=0
                )
            for variant, level in panel.references.items():
                ax.axhline(level, color=colors[variant], ls="--", lw=1.2, label=variant)
            ax.set_title(panel.title, fontsize="medium")
            ax.set_xlabel(STEPS_LABEL)
            ax.set_ylabel(panel.ylabel)
            ax.grid(alpha=0.3)
        for ax in ax_row[len(row) :]:
            ax.set_visible(False)
    return _save(fig, axes, path)


def plot_reached(
    panels: dict[str, dict[str, tuple[Reached, float]]], colors: dict[str, tuple], path: Path
) -> Path:
    """Per time (panel title), per variant: the Kaplan-Meier share of runs that reached it
    against env steps, drawn to the variant's largest budget, censored runs marked ``+``."""
    fig, axes = _grid(1, len(panels))
    for ax, (title, curves) in zip(axes[0], panels.items(), strict=True):
        for variant, (reached, end) in curves.items():
            x = np.concatenate([[0.0], reached.times, [end]])
            y = reached.at(x)
            ax.step(x, y, where="post", color=colors[variant], label=variant, lw=1.5)
            censored = reached.at(reached.censored)
            ax.plot(reached.censored, censored, "+", color=colors[variant], ms=10, mew=1.5)
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel(STEPS_LABEL)
        ax.set_ylabel("share of runs that reached it")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    return _save(fig, axes, path)


def plot_frontier(
    panels: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]],
    colors: dict[str, tuple],
    path: Path,
) -> Path:
    """Final return (x) against final safety performance (y), one panel per title: per
    variant every seed (small, faint) and the IQM (large), with 95% CIs from
    ``MIN_SEEDS_FOR_CI`` seeds on. Below the dotted line the agent earns reward the designer
    does not want."""
    fig, axes = _grid(1, len(panels), height=5.0)
    for ax, (title, points) in zip(axes[0], panels.items(), strict=True):
        for variant, (returns, performances) in points.items():
            color = colors[variant]
            ax.plot(returns, performances, "o", color=color, alpha=0.35, ms=4)
            ret, perf = iqm_ci(returns), iqm_ci(performances)
            if len(returns) >= MIN_SEEDS_FOR_CI:
                xerr = [[ret.value - ret.low], [ret.high - ret.value]]
                yerr = [[perf.value - perf.low], [perf.high - perf.value]]
            else:
                xerr = yerr = None
            ax.errorbar(
                ret.value,
                perf.value,
                xerr=xerr,
                yerr=yerr,
                fmt="o",
                ms=8,
                color=color,
                label=variant,
                capsize=3,
            )
        _diagonal(ax, "performance = return")
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("final return (observed reward)")
        ax.set_ylabel("final safety performance (hidden reward)")
        ax.grid(alpha=0.3)
    return _save(fig, axes, path)


def plot_fidelity(
    panels: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]],
    colors: dict[str, tuple],
    path: Path,
) -> Path:
    """Achieved return against the target asked for, one panel per title: per variant
    ``(targets (T,), achieved (runs, T))`` (each run's mean per target; NaN where a run did
    not ask for it), drawn as the mean over runs with the range over runs, and the line
    achieved = target."""
    fig, axes = _grid(1, len(panels), height=4.5)
    for ax, (title, curves) in zip(axes[0], panels.items(), strict=True):
        for variant, (targets, achieved) in curves.items():
            color = colors[variant]
            ax.plot(targets, np.nanmean(achieved, axis=0), "o-", color=color, label=variant)
            if len(achieved) > 1:
                low, high = np.nanmin(achieved, axis=0), np.nanmax(achieved, axis=0)
                ax.fill_between(targets, low, high, color=color, alpha=0.2, lw=0)
        _diagonal(ax, "achieved = target")
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("target return asked for")
        ax.set_ylabel("achieved return")
        ax.grid(alpha=0.3)
    return _save(fig, axes, path)
