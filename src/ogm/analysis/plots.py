"""Figures of the report: curves across seeds against environment steps (with reference
lines for agents without an online phase), the share of runs that reached an emergence time,
the safety-capability frontier, conditioning fidelity, hack discovery against hack depth, and
gold and proxy reward against the distance from the initial policy. matplotlib with the Agg
backend (no display needed); every ``plot_*`` function writes a PNG.

Every figure is drawn for a page about 1000 px wide (``WIDTH`` inches at ``DPI``), with a
title, its legend below the panels in type readable at that width, and the same ``Style``
per variant in every figure: a colour, a line style and a marker, so that twelve and more
variants stay apart. Agents without an online phase are dashed horizontal lines (no curve
uses dashes).

Bands and error bars are 95% stratified-bootstrap intervals of the IQM when a variant has at
least ``MIN_SEEDS_FOR_CI`` runs; with fewer, a band is the range over seeds and points show
every seed, never an interval that would only be [min, max] under another name.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ogm.analysis.stats import MIN_SEEDS_FOR_CI, Reached, iqm, iqm_ci, stratified_bootstrap_iqm

if TYPE_CHECKING:
    from ogm.analysis.discovery import DepthPoint

GRID_POINTS = 100
MARKERS_PER_CURVE = 8  # markers along a curve, enough to tell variants apart
STEPS_LABEL = "environment steps of training"
WIDTH, DPI = 10.0, 100  # inches, dots per inch: 1000 px
FONTS = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 9,
    "figure.titlesize": 12,
}
LINESTYLES = ("-", "-.", ":")
REFERENCE_LINESTYLE = "--"  # agents without an online phase only
MARKERS = ("o", "s", "^", "D", "v", "<", "X")
# sequential colour maps, one per agent family (``variant_styles``), hues far apart
FAMILY_COLORMAPS = ("Greys", "Blues", "Greens", "Reds", "Oranges", "Purples")
LEGEND_ROW_INCHES, TITLE_INCHES = 0.24, 0.45
ZOOM_SHRINK = 0.5  # leaving out a far variant must halve the frontier's width or height
NAMED_POINTS = 8  # frontier points carry names up to this many variants, numbers beyond


@dataclass(frozen=True)
class Style:
    """How one variant is drawn in every figure."""

    color: tuple
    linestyle: str
    marker: str


def variant_styles(names: list[str], families: dict[str, str] | None = None) -> dict[str, Style]:
    """One style per variant. Without ``families``: ten colours, seven markers (70 distinct
    pairs), line styles changing every ten variants. With ``families`` (variant -> its
    agent): each agent gets its own hue, its variants shades of it from light to dark and
    markers in turn, so that a sweep of one agent reads as one family; the agent's line style
    changes with every ``len(FAMILY_COLORMAPS)`` agents."""
    if families is None:
        colors = plt.get_cmap("tab10").colors
        return {
            name: Style(colors[i % 10], LINESTYLES[(i // 10) % len(LINESTYLES)], MARKERS[i % 7])
            for i, name in enumerate(names)
        }
    members: dict[str, list[str]] = {}
    for name in names:
        members.setdefault(families.get(name, name), []).append(name)
    styles = {}
    for f, (_, group) in enumerate(members.items()):
        cmap = plt.get_cmap(FAMILY_COLORMAPS[f % len(FAMILY_COLORMAPS)])
        linestyle = LINESTYLES[(f // len(FAMILY_COLORMAPS)) % len(LINESTYLES)]
        shades = np.linspace(0.45, 0.95, len(group)) if len(group) > 1 else [0.75]
        for i, (name, shade) in enumerate(zip(group, shades, strict=True)):
            styles[name] = Style(tuple(cmap(float(shade))), linestyle, MARKERS[i % len(MARKERS)])
    return {name: styles[name] for name in names}


def _fonts(plot: Callable[..., Path]) -> Callable[..., Path]:
    """Draw ``plot`` with the report's font sizes (leaving matplotlib's defaults alone)."""

    @functools.wraps(plot)
    def wrapper(*args, **kwargs) -> Path:
        with plt.rc_context(FONTS):
            return plot(*args, **kwargs)

    return wrapper


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


class Canvas:
    """A figure of ``rows x cols`` panels with a title on top and one legend below (its
    ``entries`` in that order), sized for ``WIDTH`` inches whatever their number."""

    def __init__(
        self, rows: int, cols: int, panel_height: float, title: str, entries: list[str]
    ) -> None:
        self.entries = entries
        longest = max((len(e) for e in entries), default=10)
        self.columns = max(1, min(4, int(WIDTH / (0.065 * longest + 0.5))))
        self.legend_inches = LEGEND_ROW_INCHES * math.ceil(len(entries) / self.columns) + 0.15
        height = panel_height * rows + self.legend_inches + TITLE_INCHES
        self.fig, self.axes = plt.subplots(rows, cols, figsize=(WIDTH, height), squeeze=False)
        self.fig.suptitle(title)

    def save(self, path: Path) -> Path:
        """Add the legend (every labelled artist, once) and write the PNG."""
        found: dict[str, object] = {}
        for ax in self.axes.flat:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                found.setdefault(label, handle)
        order = {name: i for i, name in enumerate(self.entries)}
        entries = dict(sorted(found.items(), key=lambda item: order.get(item[0], len(order))))
        height = self.fig.get_figheight()
        if entries:
            self.fig.legend(
                list(entries.values()),
                list(entries),
                loc="lower center",
                ncol=self.columns,
                frameon=False,
                bbox_to_anchor=(0.5, 0.0),
            )
        self.fig.tight_layout(rect=(0, self.legend_inches / height, 1, 1 - TITLE_INCHES / height))
        self.fig.savefig(path, dpi=DPI)
        plt.close(self.fig)
        return path


def _in_order(styles: dict[str, Style], names: object) -> list[str]:
    """The variants among ``names``, in the report's order (that of ``styles``)."""
    names = set(names)
    return [name for name in styles if name in names]


def _steps_axis(ax: plt.Axes) -> None:
    """Environment steps on the x axis, in thousands past 1,000 (``25k``)."""
    ax.set_xlabel(STEPS_LABEL)
    ax.xaxis.set_major_formatter(
        matplotlib.ticker.FuncFormatter(
            lambda v, _: f"{v / 1000:g}k" if abs(v) >= 1000 else f"{v:g}"
        )
    )


def _identity_line(ax: plt.Axes, label: str) -> None:
    """The dotted line y = x, leaving the axes limits where the data put them."""
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    ax.axline((0.0, 0.0), slope=1.0, ls=":", color="grey", lw=1, label=label)
    ax.set_xlim(xlim)
    ax.set_ylim(ylim)


def _markevery(n: int) -> int:
    return max(1, n // MARKERS_PER_CURVE)


def _reference(ax: plt.Axes, level: float, label: str, style: Style) -> None:
    """A dashed horizontal line, its marker at the right end."""
    ax.axhline(
        level,
        color=style.color,
        ls=REFERENCE_LINESTYLE,
        lw=1.3,
        marker=style.marker,
        markevery=[1],
        ms=6,
        label=label,
    )


@_fonts
def plot_panels(
    panels: list[list[Panel]], styles: dict[str, Style], path: Path, title: str
) -> Path:
    """A grid of curve panels against environment steps (rows of ``Panel``)."""
    entries = _in_order(
        styles, (n for row in panels for p in row for n in (*p.curves, *p.references))
    )
    canvas = Canvas(len(panels), max(len(row) for row in panels), 2.7, title, entries)
    for ax_row, row in zip(canvas.axes, panels, strict=True):
        for ax, panel in zip(ax_row, row, strict=False):
            for variant, curve in panel.curves.items():
                style = styles[variant]
                ax.plot(
                    curve.x,
                    curve.value,
                    color=style.color,
                    ls=style.linestyle,
                    marker=style.marker,
                    markevery=_markevery(len(curve.x)),
                    label=variant,
                    lw=1.5,
                    ms=4,
                )
                ax.fill_between(curve.x, curve.low, curve.high, color=style.color, alpha=0.15, lw=0)
            for variant, level in panel.references.items():
                _reference(ax, level, variant, styles[variant])
            ax.set_title(panel.title)
            _steps_axis(ax)
            ax.set_ylabel(panel.ylabel)
            ax.grid(alpha=0.3)
        for ax in ax_row[len(row) :]:
            ax.set_visible(False)
    return canvas.save(path)


@_fonts
def plot_reached(
    panels: dict[str, dict[str, tuple[Reached, float]]],
    styles: dict[str, Style],
    path: Path,
    title: str,
) -> Path:
    """Per time (panel title), per variant: the Kaplan-Meier share of runs that reached it
    against env steps, drawn to the variant's largest budget, censored runs marked ``+``."""
    entries = _in_order(styles, (n for curves in panels.values() for n in curves))
    canvas = Canvas(1, len(panels), 3.0, title, entries)
    for ax, (panel_title, curves) in zip(canvas.axes[0], panels.items(), strict=True):
        for variant, (reached, end) in curves.items():
            style = styles[variant]
            x = np.concatenate([[0.0], reached.times, [end]])
            ax.step(
                x,
                reached.at(x),
                where="post",
                color=style.color,
                ls=style.linestyle,
                marker=style.marker,
                ms=4,
                label=variant,
                lw=1.5,
            )
            censored = reached.at(reached.censored)
            ax.plot(reached.censored, censored, "+", color=style.color, ms=11, mew=1.5)
        ax.set_title(panel_title)
        _steps_axis(ax)
        ax.set_ylabel("share of runs that reached it")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    return canvas.save(path)


FrontierPoints = dict[str, tuple[np.ndarray, np.ndarray]]  # variant -> (returns, performances)


def _spans(centres: list[tuple[float, float]]) -> np.ndarray:
    """Width and height of the bounding box of points."""
    array = np.asarray(centres)
    return array.max(axis=0) - array.min(axis=0)


def far_points(points: FrontierPoints) -> set[str]:
    """Variants far from the others, worth a zoomed second panel without them (PPO,
    usually): removed one at a time, at most a third of the variants, each the one whose
    IQM point leaves the smallest bounding box of the rest, while that box is less than
    ``ZOOM_SHRINK`` of the previous one in width or height."""
    centres = {
        v: (float(iqm(np.asarray(r))), float(iqm(np.asarray(p)))) for v, (r, p) in points.items()
    }
    far: set[str] = set()
    while len(far) < len(centres) // 3:
        rest = {v: c for v, c in centres.items() if v not in far}
        spans = _spans(list(rest.values()))
        shrunk = {  # per axis with any span: the rest's span without v, relative to it
            v: np.where(spans > 0, _spans([c for u, c in rest.items() if u != v]), spans)
            / np.where(spans > 0, spans, 1.0)
            + (spans == 0)
            for v in rest
        }
        candidate = min(shrunk, key=lambda v: float(np.prod(shrunk[v] + 1e-3)))
        if shrunk[candidate].min() >= ZOOM_SHRINK:
            break
        far.add(candidate)
    return far


def _frontier_axes(
    ax: plt.Axes, points: FrontierPoints, styles: dict[str, Style], tags: dict[str, str]
) -> None:
    """Every seed (small, faint) and the IQM (large, tagged with ``tags[variant]`` when it
    has one) of each variant; axes limits fit the points, with the line performance = return."""
    for variant, (returns, performances) in points.items():
        style = styles[variant]
        ax.plot(returns, performances, style.marker, color=style.color, alpha=0.35, ms=4)
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
            fmt=style.marker,
            ms=8,
            color=style.color,
            label=variant,
            capsize=3,
        )
        if variant in tags:
            ax.annotate(
                tags[variant],
                (ret.value, perf.value),
                xytext=(6, 5),
                textcoords="offset points",
                fontsize=8,
                color=style.color,
            )
    ax.margins(0.12)  # room for the labels of points at the edge
    _identity_line(ax, "performance = return")
    ax.set_xlabel("final return (observed reward)")
    ax.set_ylabel("final performance (hidden reward)")
    ax.grid(alpha=0.3)


@_fonts
def plot_frontier(
    panels: dict[str, FrontierPoints], styles: dict[str, Style], path: Path, title: str
) -> Path:
    """Final return (x) against final performance (y) per mode (panel title); when some
    variants lie far from the others (``far_points``), a second panel zooms in on the rest.
    Large points are IQMs, with 95% CIs from ``MIN_SEEDS_FOR_CI`` seeds on; small points are
    seeds. Each IQM point carries its variant's name, or its number in the legend when there
    are more than ``NAMED_POINTS`` variants. Below the dotted line the agent earns reward the
    designer does not want.
    """
    names = _in_order(styles, (v for points in panels.values() for v in points))
    numbered = len(names) > NAMED_POINTS
    legend = {v: f"{i}: {v}" if numbered else v for i, v in enumerate(names, 1)}
    tags = {legend[v]: str(i) if numbered else v for i, v in enumerate(names, 1)}
    variant_of = {entry: v for v, entry in legend.items()}
    styled = {legend[v]: styles[v] for v in names}
    content = []  # (title, points, entries whose points are tagged)
    for mode, points in panels.items():
        points = {legend[v]: p for v, p in points.items()}
        far = far_points(points)
        if far:
            near = {v: p for v, p in points.items() if v not in far}
            left_out = ", ".join(variant_of[e] for e in styled if e in far)
            content.append((f"{mode}: all variants", points, far))
            content.append((f"{mode}: zoomed in, without {left_out}", near, set(near)))
        else:
            content.append((mode, points, set(points)))
    cols = len(content) if len(content) <= 3 else 2
    rows = math.ceil(len(content) / cols)
    canvas = Canvas(rows, cols, 3.6 if cols == 3 else 4.0, title, [*styled, "performance = return"])
    for ax, (panel_title, points, tagged) in zip(canvas.axes.flat, content, strict=False):
        _frontier_axes(ax, points, styled, {e: tags[e] for e in tagged})
        ax.set_title(panel_title)
    for ax in list(canvas.axes.flat)[len(content) :]:
        ax.set_visible(False)
    return canvas.save(path)


@_fonts
def plot_fidelity(
    panels: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]],
    styles: dict[str, Style],
    path: Path,
    title: str,
) -> Path:
    """Achieved return against the target asked for, one panel per title: per variant
    ``(targets (T,), achieved (runs, T))`` (each run's mean per target; NaN where a run did
    not ask for it), drawn as the mean over runs with the range over runs, and the line
    achieved = target."""
    entries = _in_order(styles, (n for curves in panels.values() for n in curves))
    canvas = Canvas(1, len(panels), 3.6, title, [*entries, "achieved = target"])
    for ax, (panel_title, curves) in zip(canvas.axes[0], panels.items(), strict=True):
        for variant, (targets, achieved) in curves.items():
            style = styles[variant]
            ax.plot(
                targets,
                np.nanmean(achieved, axis=0),
                color=style.color,
                ls=style.linestyle,
                marker=style.marker,
                label=variant,
            )
            if len(achieved) > 1:
                low, high = np.nanmin(achieved, axis=0), np.nanmax(achieved, axis=0)
                ax.fill_between(targets, low, high, color=style.color, alpha=0.2, lw=0)
        _identity_line(ax, "achieved = target")
        ax.set_title(panel_title)
        ax.set_xlabel("target return asked for")
        ax.set_ylabel("achieved return")
        ax.grid(alpha=0.3)
    return canvas.save(path)


ANALYTIC_COLOURS = ("black", "grey")
DODGE = 0.3  # variants at one depth spread over k - DODGE .. k + DODGE


@_fonts
def plot_discovery(
    points: dict[str, list[DepthPoint]],
    references: dict[str, dict[int, float]],
    lines: dict[str, dict[int, float]],
    styles: dict[str, Style],
    path: Path,
    title: str,
) -> Path:
    """Hack discovery against hack depth ``k``, two panels. Left (log scale): per variant
    the Kaplan-Meier median discovery step at each depth (a line through the defined ones,
    a filled triangle at the budget where fewer than half discovered), its interval where it
    has one (drawn up to the budget when it reaches past it), each run faint (a hollow
    triangle at its budget when it did not discover), and the ``lines`` (name -> k ->
    steps). Right: the share of runs that discovered by their budget, and the ``references``
    (agents without training episodes: k -> share of evaluation episodes with the exploit)
    as dashed lines. Variants are spread a little along k so that their points stay apart."""
    names = _in_order(styles, [*points, *references])
    canvas = Canvas(1, 2, 3.8, title, [*names, *lines])
    steps_ax, share_ax = canvas.axes[0]
    dodge = dict(
        zip(names, np.linspace(-DODGE, DODGE, len(names)) if len(names) > 1 else [0.0], strict=True)
    )
    for name, series in points.items():
        style, shift = styles[name], dodge[name]
        for p in series:
            x = np.full(len(p.times), p.k + shift)
            found = p.discovered
            steps_ax.plot(
                x[found], p.times[found], style.marker, color=style.color, alpha=0.35, ms=3
            )
            steps_ax.plot(
                x[~found], p.times[~found], "^", mfc="none", color=style.color, alpha=0.5, ms=4
            )
            if math.isfinite(p.low):
                steps_ax.vlines(p.k + shift, p.low, min(p.high, p.budget), color=style.color, lw=1)
        line = {
            "color": style.color,
            "ls": style.linestyle,
            "marker": style.marker,
            "ms": 5,
            "lw": 1.5,
            "label": name,
        }
        known = [p for p in series if p.median is not None]
        steps_ax.plot([p.k + shift for p in known], [p.median for p in known], **line)
        unknown = [p for p in series if p.median is None]
        steps_ax.plot(
            [p.k + shift for p in unknown],
            [p.budget for p in unknown],
            "^",
            color=style.color,
            ms=7,
        )
        share_ax.plot([p.k + shift for p in series], [p.share for p in series], **line)
    for name, shares in references.items():
        style = styles[name]
        share_ax.plot(
            list(shares),
            list(shares.values()),
            color=style.color,
            ls=REFERENCE_LINESTYLE,
            marker=style.marker,
            ms=5,
            lw=1.3,
            label=name,
        )
    for (name, line), colour in zip(lines.items(), ANALYTIC_COLOURS, strict=False):
        steps_ax.plot(list(line), list(line.values()), color=colour, lw=2.5, alpha=0.6, label=name)
    steps_ax.set_yscale("log")
    steps_ax.set_title("discovery step: Kaplan-Meier median over seeds")
    steps_ax.set_ylabel(STEPS_LABEL)
    share_ax.set_title("runs that discovered by B; reference agents: evaluation share")
    share_ax.set_ylabel("share")
    share_ax.set_ylim(-0.03, 1.03)
    for ax in (steps_ax, share_ax):
        ax.set_xlabel("hack depth k (lock moves)")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    return canvas.save(path)


@dataclass(frozen=True)
class KLSeries:
    """One variant (or the best-of-n family: a point per ``n``) in one world: mean ``d`` and
    mean gold and proxy at each point, and the fitted gold curve (``fit_d``, ``fit_gold``;
    empty without a fit)."""

    d: np.ndarray
    gold: np.ndarray
    proxy: np.ndarray
    fit_d: np.ndarray = field(default_factory=lambda: np.zeros(0))
    fit_gold: np.ndarray = field(default_factory=lambda: np.zeros(0))


@_fonts
def plot_overoptimisation(
    worlds: dict[str, dict[str, KLSeries]], styles: dict[str, Style], path: Path, title: str
) -> Path:
    """Gold and proxy against ``d = sqrt(KL)`` from the initial policy, each curve from pi_0's
    level at d = 0: a row per world, gold on the left (with each fitted closed form dashed),
    proxy on the right."""
    entries = _in_order(styles, (name for series in worlds.values() for name in series))
    canvas = Canvas(len(worlds), 2, 2.9, title, entries)
    for (world, series), (gold_ax, proxy_ax) in zip(worlds.items(), canvas.axes, strict=True):
        for name, s in series.items():
            style = styles[name]
            line = {"color": style.color, "marker": style.marker, "ms": 4, "lw": 1.4}
            gold_ax.plot(s.d, s.gold, ls=style.linestyle, label=name, **line)
            proxy_ax.plot(s.d, s.proxy, ls=style.linestyle, **line)
            if len(s.fit_d):
                gold_ax.plot(s.fit_d, s.fit_gold, color=style.color, ls="--", lw=1.0, alpha=0.8)
        where = f"{world}: " if world else ""
        gold_ax.set_title(f"{where}gold (hidden performance)")
        proxy_ax.set_title(f"{where}proxy (observed return)")
        for ax, quantity in ((gold_ax, "gold"), (proxy_ax, "proxy")):
            ax.set_xlabel("d = sqrt(KL(pi || pi_0)), nats^0.5")
            ax.set_ylabel(f"{quantity}, mean over seeds")
            ax.grid(alpha=0.3)
    return canvas.save(path)
