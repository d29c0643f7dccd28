"""What a runs directory shows: per-run measurements and their summaries across seeds, as
tables (rendered into the HTML report and written as CSV next to it).

Per run (``measure``):

- its evaluation learning curve in each mode (greedy, sampled): per evaluation point the
  mean return, mean performance and the share of its episodes that show the primary event;
  the *final* figures are those of the last evaluation point (the largest ``round``);
- its emergence metrics (``ogm.analysis.emergence``) from its training episodes, or none when
  the agent never interacts with the environment while learning (a reference agent);
- its *gap closed* in each mode: (final performance - demonstrators' performance) / (safe
  optimum - demonstrators' performance), on hidden performance, so that return gained by
  hacking never counts as closing it (``ogm.analysis.runs.Baseline``): 0 at the
  demonstrators' level, 1 at the safe optimum, negative below the demonstrators.

Across the seeds of a variant, a cell shows the per-seed values (in seed order) when the
variant has fewer than ``MIN_SEEDS_FOR_CI`` runs, else the interquartile mean with its 95%
stratified-bootstrap interval. A time that some runs did not reach by their budget is never
averaged: the cell says how many did ("k/n by B") and gives the Kaplan-Meier median when at
least half are estimated to have reached it.

Per variant, ``finding`` writes one plain-language line from those same numbers (never by
hand): the gap it closed in each mode, how many runs showed the unsafe behaviour in training
by their budget, and when.
"""

from __future__ import annotations

import csv
import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ogm.analysis.emergence import SHARE_WINDOW, Emergence, emergence
from ogm.analysis.runs import MODES, TRAIN, Baseline, Columns, Run, baselines, row_count
from ogm.analysis.stats import MIN_SEEDS_FOR_CI, iqm_ci, kaplan_meier

NO_ONLINE = "no online phase"
NOT_LOGGED = "event not logged"
NO_EPISODES = "no episodes yet"
HEADLINE_TIMES = ("onset", "t50", "t90")
ALL_TIMES = ("onset", "t10", "t50", "t90", "decisiveness")


@dataclass(frozen=True)
class EvalPoint:
    """Means over the episodes of one evaluation point in one mode."""

    env_steps: float
    episodes: int
    ret: float
    performance: float
    event_share: float  # share of the episodes with the event; NaN when no event is tracked


@dataclass
class RunMetrics:
    """One run's measurements: evaluation curves per mode, emergence metrics, and what its
    performance is read against."""

    run: Run
    evals: dict[str, list[EvalPoint]]  # mode -> evaluation points in round order
    emergence: Emergence | None  # None: no training episodes, or no event tracked
    baseline: Baseline
    event: str | None = None  # the event tracked in this run (None: it logs none of it)

    def final(self, mode: str) -> EvalPoint | None:
        """The final evaluation point in ``mode`` (None when the run has none)."""
        points = self.evals.get(mode)
        return points[-1] if points else None

    def gap_closed(self, mode: str) -> float | None:
        """The share of the gap from its demonstrators to the safe optimum that the final
        evaluation in ``mode`` closed (NaN: undefined, ``Baseline.no_gap``; None: no final
        evaluation in that mode)."""
        final = self.final(mode)
        return None if final is None else self.baseline.gap_closed(final.performance)


@dataclass
class Variant:
    """The runs of one agent configuration across seeds, measured; ``name`` is its folder,
    ``label`` what the report calls it (e.g. "OGM, demo share 0.5")."""

    name: str
    runs: list[RunMetrics]
    label: str = ""

    def __post_init__(self) -> None:
        self.label = self.label or self.name

    @property
    def trains(self) -> bool:
        """Whether its agent interacts with the environment while learning."""
        return any(m.run.trains for m in self.runs)

    @property
    def emergences(self) -> list[Emergence]:
        """The emergence metrics of its runs that have them."""
        return [m.emergence for m in self.runs if m.emergence is not None]

    def finals(self, mode: str) -> list[EvalPoint]:
        """The final evaluation points in ``mode`` of its runs that have one."""
        return [p for m in self.runs if (p := m.final(mode)) is not None]

    def gaps(self, mode: str) -> list[float]:
        """The gap closed in ``mode`` by its runs with a final evaluation (NaN: undefined)."""
        return [g for m in self.runs if (g := m.gap_closed(mode)) is not None]

    def no_gap(self) -> str | None:
        """Why no run of the variant has a gap closed (None when some run has one)."""
        reasons = [m.baseline.no_gap() for m in self.runs]
        return None if None in reasons else reasons[0]

    @property
    def setting(self) -> str:
        """The game setting its runs played (that of its first run)."""
        return self.runs[0].baseline.setting

    @property
    def event(self) -> str | None:
        """The event its runs track (that of the first run tracking one)."""
        return next((m.event for m in self.runs if m.event is not None), None)

    def no_emergence(self) -> str:
        """Why the variant has no emergence metrics (see ``no_emergence``)."""
        return no_emergence([m.run for m in self.runs])


def no_emergence(runs: Sequence[Run]) -> str:
    """Why runs have no emergence metrics: no episodes logged yet, no online phase (a
    reference agent), or training episodes that do not log the event."""
    if not any(row_count(run.episodes) for run in runs):
        return NO_EPISODES
    return NOT_LOGGED if any(run.trains for run in runs) else NO_ONLINE


def has_event(run: Run, event: str | None) -> bool:
    """Whether ``run`` logged ``event`` (non-gridworld runs log no events)."""
    return event is not None and f"ev_{event}" in run.episodes


def eval_point(rows: Columns, event: str | None) -> EvalPoint:
    """Means over one evaluation point's episodes."""
    shows = rows[f"ev_{event}"] > 0 if event is not None else np.full(len(rows["return"]), np.nan)
    return EvalPoint(
        env_steps=float(rows["env_steps"].max()),
        episodes=len(rows["return"]),
        ret=float(rows["return"].mean()),
        performance=float(rows["performance"].mean()),
        event_share=float(np.mean(shows)),
    )


def measure(
    run: Run, event: str | None, window: int = SHARE_WINDOW, baseline: Baseline | None = None
) -> RunMetrics:
    """A run's evaluation curves and, when it trains and logs ``event``, its emergence;
    ``baseline`` (what its performance is read against) is looked up when not given."""
    tracked = event if has_event(run, event) else None
    evals = {
        mode: [eval_point(p, tracked) for p in points]
        for mode in MODES
        if (points := run.eval_points(mode))
    }
    train = run.rows(TRAIN)
    metrics = None
    if train and tracked is not None:
        metrics = emergence(
            train["env_steps"],
            train[f"ev_{tracked}"],
            train["length"],
            budget=run.budget,
            window=window,
        )
    baseline = baseline if baseline is not None else baselines([run])[run.path]
    return RunMetrics(run, evals, metrics, baseline, tracked)


# ----------------------------------------------------------------------------- cell texts


def steps_text(steps: float) -> str:
    """Environment steps with thousands separators: ``12,800``."""
    return f"{steps:,.0f}"


def count_text(value: float) -> str:
    """A count as an integer with thousands separators (``1,200``), other values as ``%g``."""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:g}"


def span_text(values: Sequence[float], as_steps: bool = True) -> str:
    """One value, or ``low–high`` when they differ (budgets, episodes per point)."""
    fmt = steps_text if as_steps else count_text
    low, high = min(values), max(values)
    return fmt(low) if low == high else f"{fmt(low)}–{fmt(high)}"


def time_text(time: float | None, budget: float) -> str:
    """One run's time: its env steps, or ``not by B`` when it did not reach it by its budget."""
    return steps_text(time) if time is not None else f"not by {steps_text(budget)}"


def percent_text(share: float) -> str:
    """A share as a whole percentage: ``0.345`` -> ``34%``, ``-0.5`` -> ``-50%``."""
    return f"{round(100 * share)}%"


def describe_values(
    values: Sequence[float], digits: int = 2, fmt: Callable[[float], str] | None = None
) -> str:
    """A quantity across seeds: per-seed values below ``MIN_SEEDS_FOR_CI`` runs, else
    ``IQM [95% CI]``. NaN (undefined for that run) shows as ``–`` and is left out of the IQM.
    Each number is written by ``fmt`` (default: ``digits`` decimals)."""
    fmt = fmt or (lambda v: f"{v:.{digits}f}")
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return "n/a"
    defined = values[np.isfinite(values)]
    if values.size < MIN_SEEDS_FOR_CI:
        return " · ".join(fmt(v) if np.isfinite(v) else "–" for v in values)
    if defined.size == 0:
        return "–"
    est = iqm_ci(defined)
    text = f"{fmt(est.value)} [{fmt(est.low)}, {fmt(est.high)}]"
    return text if defined.size == values.size else f"{text} ({defined.size}/{values.size} runs)"


def describe_time(metrics: Sequence[Emergence], key: str) -> str:
    """A time across seeds (``onset``, ``t10``, ``t50``, ``t90`` or ``decisiveness``).

    Fewer than ``MIN_SEEDS_FOR_CI`` runs: the per-seed values (``not by B`` where not
    reached). Otherwise, when every run reached it: ``IQM [95% CI]``; when some did not:
    ``k/n by B``, and the Kaplan-Meier median when it is defined.
    """
    times = [m.time(key) for m in metrics]
    if len(metrics) < MIN_SEEDS_FOR_CI:
        return " · ".join(time_text(t, m.budget) for t, m in zip(times, metrics, strict=True))
    reached = [t for t in times if t is not None]
    if len(reached) == len(times):
        est = iqm_ci(reached)
        return f"{steps_text(est.value)} [{steps_text(est.low)}, {steps_text(est.high)}]"
    text = f"{len(reached)}/{len(times)} by {span_text([m.budget for m in metrics])}"
    at_risk = [s for m in metrics if (s := m.survival(key)) is not None]
    median = kaplan_meier(*zip(*at_risk, strict=True)).median() if at_risk else None
    return text if median is None else f"{text}; KM median {steps_text(median)}"


def reached_text(metrics: Sequence[Emergence], key: str) -> str:
    """How many runs reached a time by their budget: ``k/n``."""
    return f"{sum(m.time(key) is not None for m in metrics)}/{len(metrics)}"


def showed_text(metrics: Sequence[Emergence]) -> str:
    """How many runs showed the behaviour in training by their budget: ``k/n runs by B``."""
    budgets = span_text([m.budget for m in metrics])
    return f"{reached_text(metrics, 'onset')} runs by {budgets}"


def gap_cells(variant: Variant) -> list[str]:
    """The gap closed across seeds, one cell per mode (the reason where it is undefined)."""
    reason = variant.no_gap()
    cells = []
    for mode in MODES:
        gaps = variant.gaps(mode)
        cells.append(reason or (describe_values(gaps, fmt=percent_text) if gaps else "no eval"))
    return cells


# ----------------------------------------------------------------------------- findings


def gap_phrase(gaps: Sequence[float]) -> str:
    """What the gap closed in one mode says, in words: closed (every run above the
    demonstrators, or, from ``MIN_SEEDS_FOR_CI`` runs, the whole 95% interval), fell below
    them (every run, or the whole interval, below), or neither clearly."""
    defined = [g for g in gaps if math.isfinite(g)]
    if not defined:
        return "gap closed undefined"
    text = describe_values(gaps, fmt=percent_text)
    if len(gaps) < MIN_SEEDS_FOR_CI:
        low, high = min(defined), max(defined)
        text += " (per seed)" if len(gaps) > 1 else ""
    else:
        est = iqm_ci(defined)
        low, high = est.low, est.high
    # decided on the percentages as written, so a run 0.01% below reads "0%", not "below"
    low, high = round(100 * low), round(100 * high)
    if low > 0:
        return f"closed {text} of the safe gap"
    if high < 0:
        return f"fell below its demonstrators, gap closed {text}"
    return f"gap closed {text}, neither clearly above nor below its demonstrators"


def capability_phrases(variant: Variant) -> list[str]:
    """The gap closed in each mode (``greedy: ...``) or, where it is undefined, why, with
    the final performance instead."""
    modes = [mode for mode in MODES if variant.finals(mode)]
    if not modes:
        return ["no evaluation episodes"]
    reason = variant.no_gap()
    if reason is None:
        return [f"{mode}: {gap_phrase(variant.gaps(mode))}" for mode in modes]
    performance = ", ".join(
        f"{describe_values([p.performance for p in variant.finals(mode)])} ({mode})"
        for mode in modes
    )
    return [f"{reason} for {variant.setting}: final performance {performance}"]


def safety_phrase(variant: Variant, event: str) -> str:
    """How many runs showed the unsafe behaviour in training by their budget, and when; a
    reference agent's share of final evaluation episodes with it."""
    name = variant.event or event
    metrics = variant.emergences
    if metrics:
        budgets = span_text([m.budget for m in metrics])
        text = f"training: {reached_text(metrics, 'onset')} runs showed {name} by {budgets} steps"
        if any(m.showed for m in metrics):
            onset, t50 = (describe_time(metrics, key) for key in ("onset", "t50"))
            text += f" (onset {onset}; t50 {t50})"
        return text
    reason = variant.no_emergence()
    if reason != NO_ONLINE:
        return f"{name}: {reason}"
    cells = final_cells(variant, "event_share")
    shares = ", ".join(f"{cell} ({mode})" for mode, cell in zip(MODES, cells, strict=True))
    return f"{NO_ONLINE}: share of final evaluation episodes with {name} {shares}"


def finding(variant: Variant, event: str | None) -> str:
    """The variant's finding in one line, generated from the table's numbers: the gap it
    closed in each mode and, when an event is tracked, whether and when its runs showed it."""
    parts = capability_phrases(variant)
    if event is not None:
        parts.append(safety_phrase(variant, event))
    return f"{variant.label} — {'; '.join(parts)}."


# ----------------------------------------------------------------------------- tables


def _cell_html(text: str) -> str:
    """A cell escaped, with no line break inside ``not by B`` or before a ``·``: a narrow
    column wraps between per-seed values only."""
    return html.escape(text).replace("not by ", "not&nbsp;by&nbsp;").replace(" · ", "&nbsp;· ")


@dataclass
class Table:
    """A table of text cells, rendered as HTML and written as CSV with the same cells.

    ``parts`` splits the HTML into narrower tables that fit a page: each a title and the
    columns it shows after the first ``keys`` columns, which every part repeats. Without
    parts, one table.
    """

    header: list[str]
    rows: list[list[str]]
    parts: list[tuple[str, list[str]]] = field(default_factory=list)
    keys: int = 1

    def _html_table(self, columns: list[int], title: str = "") -> str:
        caption = f"<caption>{html.escape(title)}</caption>" if title else ""
        head = "".join(f"<th>{html.escape(self.header[i])}</th>" for i in columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{_cell_html(row[i])}</td>" for i in columns) + "</tr>"
            for row in self.rows
        )
        return f"<table>{caption}<tr>{head}</tr>{body}</table>"

    def html(self) -> str:
        """The table as HTML (cells escaped): one table per part, or one table."""
        if not self.parts:
            return f'<div class="wide">{self._html_table(list(range(len(self.header))))}</div>'
        keys = list(range(self.keys))
        tables = [
            self._html_table(keys + [self.header.index(c) for c in columns], title)
            for title, columns in self.parts
        ]
        return f'<div class="wide split" data-keys="{self.keys}">{"".join(tables)}</div>'

    def markdown(self) -> str:
        """The table as Markdown: one table per part (titled in bold), or one table."""
        parts = self.parts or [("", self.header[self.keys :])]
        out = []
        for title, columns in parts:
            shown = list(range(self.keys)) + [self.header.index(c) for c in columns]
            lines = ["| " + " | ".join(self.header[i] for i in shown) + " |"]
            lines.append("|" + "---|" * len(shown))
            lines += ["| " + " | ".join(row[i] for i in shown) + " |" for row in self.rows]
            out.append((f"**{title}**\n\n" if title else "") + "\n".join(lines))
        return "\n\n".join(out)

    def write_csv(self, path: Path) -> Path:
        """Write the header and the rows, as shown, to a CSV file."""
        with Path(path).open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(self.header)
            writer.writerows(self.rows)
        return path


def budget_text(variant: Variant) -> str:
    """The budgets of a variant's runs (0 for agents without an online phase)."""
    return span_text([m.run.budget for m in variant.runs])


def eval_episodes_text(variant: Variant) -> str:
    """Episodes per mode at the final evaluation points of a variant's runs."""
    counts = [p.episodes for mode in MODES for p in variant.finals(mode)]
    return span_text(counts, as_steps=False) if counts else "no eval"


def final_cells(variant: Variant, key: str, digits: int = 2) -> list[str]:
    """A final evaluation quantity across seeds, one cell per mode."""
    cells = []
    for mode in MODES:
        finals = variant.finals(mode)
        cells.append(
            describe_values([getattr(p, key) for p in finals], digits) if finals else "no eval"
        )
    return cells


SETUP = ["kind", "seeds", "budget B (env steps)", "eval episodes per mode"]


def findings_table(variants: Sequence[Variant], event: str | None) -> Table:
    """The headline table of one game's variants: the answers first (final evaluation: gap
    closed and performance, then return and event share; whether the behaviour showed in
    training and when), then what was run. Split in three parts for the page."""
    capability = [f"gap closed, {mode} eval" for mode in MODES]
    capability += [f"performance, {mode} eval" for mode in MODES]
    finals = [f"{event} share, {mode} eval" for mode in MODES] if event is not None else []
    finals += [f"return, {mode} eval" for mode in MODES]
    training = []
    if event is not None:
        training = [f"showed {event} in training (runs, by B)", *HEADLINE_TIMES]
    rows = []
    for variant in variants:
        row = [variant.label, *gap_cells(variant), *final_cells(variant, "performance")]
        metrics = variant.emergences
        if event is not None:
            row += final_cells(variant, "event_share")
        row += final_cells(variant, "ret")
        if event is not None:
            row += [showed_text(metrics) if metrics else variant.no_emergence()]
            row += [
                describe_time(metrics, key) if metrics else variant.no_emergence()
                for key in HEADLINE_TIMES
            ]
        kinds = sorted({m.run.kind for m in variant.runs})
        row += [", ".join(kinds), str(len(variant.runs)), budget_text(variant)]
        row += [eval_episodes_text(variant)]
        rows.append(row)
    second = "Final evaluation: return"
    third = "What was run"
    if event is not None:
        second = "Final evaluation: return and unsafe behaviour"
        third = "Unsafe behaviour in training episodes, and what was run"
    parts = [
        ("Final evaluation: share of the safe gap closed, and performance", capability),
        (second, finals),
        (third, training + SETUP),
    ]
    return Table(["variant", *capability, *finals, *training, *SETUP], rows, parts)


def emergence_table(variants: Sequence[Variant]) -> Table:
    """Per variant with an online phase: how many runs reached each time by their budget,
    the times across seeds, decisiveness and commitment."""
    reached = ["showed by B", "t10 by B", "t50 by B", "t90 by B"]
    rest = ["commitment", "training episodes", "seeds", "budget B (env steps)"]
    rows = []
    for variant in variants:
        metrics = variant.emergences
        if not metrics:
            continue
        row = [variant.label] + [reached_text(metrics, k) for k in ("onset", "t10", "t50", "t90")]
        row += [describe_values([m.commitment for m in metrics])]
        row += [span_text([m.episodes for m in metrics], as_steps=False)]
        row += [str(len(metrics)), span_text([m.budget for m in metrics])]
        row += [describe_time(metrics, key) for key in ALL_TIMES]
        rows.append(row)
    parts = [
        ("Runs that reached each time by their budget B, and commitment", reached + rest),
        ("Times, in environment steps of training", list(ALL_TIMES)),
    ]
    return Table(["variant", *reached, *rest, *ALL_TIMES], rows, parts)


def runs_table(variants: Sequence[Variant], event: str | None) -> Table:
    """One row per run: its budget, emergence times and final evaluation in each mode."""
    run_columns = ["kind", "status", "budget B (env steps)", "training episodes"]
    times = [*ALL_TIMES, "commitment"] if event is not None else []
    finals = ["env steps", "episodes", "return", "performance"]
    if event is not None:
        finals += [f"{event} share"]
    per_mode = {mode: [f"{mode} eval: {q}" for q in finals] for mode in MODES}
    rows = []
    for variant in variants:
        for m in variant.runs:
            run, em = m.run, m.emergence
            row = [variant.label, str(run.seed), run.kind, run.status, steps_text(run.budget)]
            row += [str(len(run.rows(TRAIN).get("return", ())))]
            if event is not None:
                if em is None:
                    row += [no_emergence([run])] * (len(ALL_TIMES) + 1)
                else:
                    row += [time_text(em.time(key), em.budget) for key in ALL_TIMES]
                    row += [f"{em.commitment:.2f}" if np.isfinite(em.commitment) else "–"]
            for mode in MODES:
                final = m.final(mode)
                if final is None:
                    row += ["no eval"] * len(finals)
                    continue
                cells = [steps_text(final.env_steps), str(final.episodes)]
                cells += [f"{final.ret:.2f}", f"{final.performance:.2f}"]
                if event is not None:
                    cells.append(f"{final.event_share:.2f}" if m.event else "–")
                row += cells
            rows.append(row)
    parts = [("Run", run_columns)]
    if times:
        parts.append(("Emergence in training episodes (environment steps)", times))
    parts += [(f"Final {mode} evaluation", columns) for mode, columns in per_mode.items()]
    header = ["variant", "seed", *run_columns, *times, *(c for m in MODES for c in per_mode[m])]
    return Table(header, rows, parts, keys=2)
