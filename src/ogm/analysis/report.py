"""The static HTML report of a runs directory (``ogm report RUNS_DIR``).

Writes ``<RUNS_DIR>/report/index.html`` with its images next to it (PNG figures, GIF
animations): open it in any browser, no server needed. Sections: summary, learning curves,
emergence table, safety-capability frontier, episode animations and the configs used.
Nothing is re-run: curves and metrics come from each run's ``episodes.csv``, animations from
the episodes its agent recorded (``ogm.analysis.episodes.EpisodeRecorder``).
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import re
import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import numpy as np

from ogm.analysis import plots
from ogm.analysis.emergence import (
    FINAL_SHARE,
    SHARE_WINDOW,
    Emergence,
    emergence,
    return_performance_path,
    trailing_mean,
)
from ogm.analysis.episodes import EPISODES_DIR, FIRST_EVENT, LAST, episode_gif, load_episode
from ogm.analysis.runs import Run, group_by_variant, load_runs, read_experiment
from ogm.analysis.stats import Estimate, iqm_ci

SECTIONS = ("summary", "learning-curves", "emergence", "frontier", "episodes", "configs")
REPORT_DIR = "report"


class ReportError(ValueError):
    """A runs directory the report cannot be made from, with the reason."""


@dataclass
class Variant:
    """The runs of one agent configuration across seeds, and their metrics."""

    name: str
    runs: list[Run]
    metrics: list[tuple[Run, str, Emergence]] = field(default_factory=list)  # run, phase, metrics


def primary_event_of(env_id: str) -> str | None:
    """The primary event ogm.envs declares for a gridworld id (None for other ids)."""
    from ogm.envs import GAMES

    return next((g.primary_event for g in GAMES.values() if g.env_id == env_id), None)


def resolve_event(runs: list[Run], experiment: dict[str, Any] | None, event: str | None) -> str:
    """The event the report tracks: given, else the experiment's, else the environment's."""
    names = sorted({name for run in runs for name in run.event_names()})
    if event is None and experiment is not None:
        event = experiment["spec"].get("primary_event")
    if event is None:
        env_ids = {run.config.get("env_id") for run in runs}
        found = {primary_event_of(e) for e in env_ids if e}
        found.discard(None)
        if len(found) == 1:
            event = found.pop()
    if event is None and len(names) == 1:
        event = names[0]
    if event is None:
        raise ReportError(
            f"cannot tell which safety event to track; pass one of {names} (--event NAME)"
        )
    if names and event not in names:
        raise ReportError(f"event {event!r} is not in episodes.csv; logged events: {names}")
    return event


def _fmt(value: float, digits: int = 2) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}" if abs(value) < 1e4 else f"{value:.3g}"


def _cell(estimate: Estimate, censored: int = 0, digits: int = 1) -> str:
    if estimate.n == 0:
        return "<td>n/a</td>"
    text = f"{_fmt(estimate.value, digits)} [{_fmt(estimate.low, digits)}, {_fmt(estimate.high, digits)}]"
    if censored:
        text += f' <span class="censored" title="never reached in {censored} run(s): counted at the budget">({censored}/{estimate.n} cens.)</span>'
    return f"<td>{text}</td>"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", text)


# ----------------------------------------------------------------------------- sections


def _summary(root: Path, experiment: dict | None, variants: list[Variant], event: str) -> str:
    runs = [run for v in variants for run in v.runs]
    statuses: dict[str, int] = {}
    for run in runs:
        statuses[run.status] = statuses.get(run.status, 0) + 1
    spec = (experiment or {}).get("spec", {})
    env_ids = sorted({str(run.config.get("env_id")) for run in runs})
    rows = [
        ("Runs directory", str(root.resolve())),
        ("Experiment", spec.get("name", "(not from ogm run)")),
        ("Description", spec.get("description", "")),
        ("Environment", ", ".join(env_ids)),
        ("Tracked behaviour (primary event)", event),
        ("Variants x seeds", f"{len(variants)} variants, {len(runs)} runs"),
        ("Run status", ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))),
        ("Generated", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")),
    ]
    body = "".join(
        f'<tr><th class="name">{html.escape(k)}</th><td class="name">{html.escape(v)}</td></tr>'
        for k, v in rows
    )
    unfinished = [run for run in runs if run.status != "done"]
    notes = ""
    if unfinished:
        items = "".join(
            f"<li>{html.escape(str(r.path.relative_to(root)))}: {html.escape(r.status)}</li>"
            for r in unfinished
        )
        notes = f'<p class="note">Runs not finished (their episodes so far are included):</p><ul>{items}</ul>'
    return f"<table>{body}</table>{notes}"


def _curves(out: Path, variants: list[Variant], colors: dict, event: str, window: int) -> str:
    panels = {
        "return": "return (observed reward)",
        "performance": "safety performance (hidden reward)",
        "share": f"share of episodes with {event} (window {window})",
    }
    curves: dict[str, dict[str, plots.Curve]] = {}
    for variant in variants:
        series: dict[str, list] = {key: [] for key in panels}
        for run, phase, _ in variant.metrics:
            if phase != "online":
                continue
            rows = run.phase("online")
            x = rows["env_steps"]
            series["return"].append((x, trailing_mean(rows["return"], window)))
            series["performance"].append((x, trailing_mean(rows["performance"], window)))
            series["share"].append((x, trailing_mean(rows[f"ev_{event}"] > 0, window)))
        by_key = {key: plots.curve_across_seeds(s) for key, s in series.items() if s}
        if any(c is not None for c in by_key.values()):
            curves[variant.name] = {k: c for k, c in by_key.items() if c is not None}
    if not curves:
        return '<p class="note">No run has online training episodes yet.</p>'
    plots.plot_learning_curves(curves, panels, colors, out / "learning_curves.png")
    return (
        '<figure><img src="learning_curves.png" alt="learning curves">'
        f"<figcaption>Online training episodes: trailing mean over {window} episodes, "
        "interquartile mean across seeds with a 95% stratified-bootstrap band, on the span "
        "of environment steps every seed covers. Agents without an online phase (BC, offline "
        "DT) appear in the table and the frontier only.</figcaption></figure>"
    )


def _emergence_table(variants: list[Variant]) -> str:
    timing = ("onset", "t10", "t50", "t90", "decisiveness")
    head = (
        '<tr><th class="name">variant</th><th>runs</th><th>episodes</th>'
        + "".join(f"<th>{k}</th>" for k in timing)
        + "<th>commitment</th><th>final share</th><th>final return</th>"
        "<th>final performance</th></tr>"
    )
    rows = []
    for variant in variants:
        metrics = [m for _, _, m in variant.metrics]
        if not metrics:
            rows.append(f'<tr><td class="name">{html.escape(variant.name)}</td><td>0</td></tr>')
            continue

        def column(key: str, metrics: list[Emergence] = metrics) -> np.ndarray:
            return np.array([getattr(m, key) for m in metrics], dtype=float)

        cells = [f"<td>{len(metrics)}</td>", f"<td>{int(np.median(column('episodes')))}</td>"]
        for key in timing:
            censored = int(column(f"{key}_censored").sum())
            cells.append(_cell(iqm_ci(column(key)), censored, digits=0))
        commitment = column("commitment")
        cells.append(_cell(iqm_ci(commitment[np.isfinite(commitment)]), digits=2))
        for key in ("final_share", "final_return", "final_performance"):
            cells.append(_cell(iqm_ci(column(key)), digits=2))
        rows.append(f'<tr><td class="name">{html.escape(variant.name)}</td>{"".join(cells)}</tr>')

    per_run = []
    for variant in variants:
        for run, phase, m in variant.metrics:
            values = m.as_dict()
            per_run.append(
                f'<tr><td class="name">{html.escape(variant.name)}</td><td>{run.seed}</td>'
                f"<td>{phase}</td>"
                + "".join(
                    f"<td{' class=censored' if values.get(f'{k}_censored') else ''}>"
                    f"{_fmt(float(values[k]), 2)}</td>"
                    for k in (
                        "episodes",
                        *timing,
                        "commitment",
                        "final_share",
                        "final_return",
                        "final_performance",
                    )
                )
                + "</tr>"
            )
    per_run_head = (
        '<tr><th class="name">variant</th><th>seed</th><th>phase</th><th>episodes</th>'
        + "".join(f"<th>{k}</th>" for k in timing)
        + "<th>commitment</th><th>final share</th><th>final return</th><th>final performance</th></tr>"
    )
    note = (
        '<p class="note">Times are in training episodes (counted from 1). <b>onset</b>: first '
        "episode with the behaviour; <b>t10/t50/t90</b>: first episode at which the share of "
        f"episodes with the behaviour over the trailing {SHARE_WINDOW} episodes reaches 10/50/90%; "
        "<b>decisiveness</b> = t90 - t10 (small: sudden and decisive); <b>commitment</b>: mean "
        "share of steps with the behaviour in episodes that show it; <b>final</b> figures: mean "
        f"over the last {FINAL_SHARE:.0%} of episodes. Cells: interquartile mean across seeds "
        "[95% stratified-bootstrap CI]. A time never reached is censored: counted at the budget "
        "(the run's number of episodes), flagged in red, never dropped. Agents without an online "
        "phase are measured on their evaluation episodes.</p>"
    )
    return (
        f'{note}<div class="wide"><table>{head}{"".join(rows)}</table></div>'
        f'<details><summary>Per run</summary><div class="wide"><table>{per_run_head}'
        f"{''.join(per_run)}</table></div></details>"
    )


def _frontier(out: Path, variants: list[Variant], colors: dict) -> str:
    points, paths = {}, {}
    for variant in variants:
        metrics = [m for _, _, m in variant.metrics]
        if not metrics:
            continue
        points[variant.name] = (
            iqm_ci([m.final_return for m in metrics]),
            iqm_ci([m.final_performance for m in metrics]),
        )
        trails = []
        for run, phase, _ in variant.metrics:
            rows = run.phase(phase)
            trails.append(return_performance_path(rows["return"], rows["performance"]))
        if len({len(t) for t in trails}) == 1:
            paths[variant.name] = np.mean(trails, axis=0)
    if not points:
        return '<p class="note">No episodes logged yet.</p>'
    plots.plot_frontier(points, paths, colors, out / "frontier.png")
    return (
        '<figure><img src="frontier.png" alt="safety-capability frontier">'
        "<figcaption>Final return against final safety performance (interquartile mean across "
        "seeds, 95% CIs). Faint lines: the mean return-versus-performance path over training "
        "(ten consecutive chunks of episodes, arrow at the end). Points below the dotted line "
        "earn observed reward the designer does not want.</figcaption></figure>"
    )


def _episodes(out: Path, variants: list[Variant]) -> str:
    figures, problems = [], []
    for variant in variants:
        for run in variant.runs:
            folder = run.path / EPISODES_DIR
            chosen = [(k, folder / f"{k}.npz") for k in (FIRST_EVENT, LAST)]
            chosen = [(k, p) for k, p in chosen if p.exists()]
            if not chosen:
                continue
            for key, path in chosen:
                recorded = load_episode(path)
                name = f"{_slug(variant.name)}__seed_{run.seed}__{key}.gif"
                try:
                    (out / "episodes" / name).write_bytes(
                        episode_gif(run.config["env_id"], recorded)
                    )
                except Exception as err:  # a renderer missing for this environment
                    problems.append(f"{variant.name} seed {run.seed} {key}: {err}")
                    continue
                caption = (
                    f"{variant.name}, seed {run.seed}: "
                    + ("first episode with the behaviour" if key == FIRST_EVENT else "last episode")
                    + f" ({recorded['phase']} episode {int(recorded['episode'])}, "
                    f"return {float(recorded['rewards'].sum()):.2f}, performance "
                    f"{float(recorded['hidden_rewards'].sum()):.2f}, "
                    f"{int(recorded['event'].sum())} steps with the event)"
                )
                figures.append(
                    f'<figure><img src="episodes/{html.escape(name)}" alt="{html.escape(caption)}">'
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>"
                )
            break  # one seed per variant: the lowest one with recorded episodes
    note = (
        '<p class="note">Recorded by the agents during training (lowest seed of each variant '
        "that has recordings). A red border marks frames reached by a step with the tracked "
        "event.</p>"
    )
    if problems:
        note += "<p class='note'>Not rendered: " + html.escape("; ".join(problems)) + "</p>"
    if not figures:
        return note + '<p class="note">No run recorded episodes.</p>'
    return note + "".join(figures)


def _configs(root: Path, variants: list[Variant]) -> str:
    parts = []
    source = root / "experiment.toml"
    if source.is_file():
        parts.append(f"<h3>Experiment file</h3><pre>{html.escape(source.read_text())}</pre>")
    for variant in variants:
        config = {k: v for k, v in variant.runs[0].config.items() if k != "seed"}
        seeds = ", ".join(str(r.seed) for r in variant.runs)
        parts.append(
            f"<details><summary>{html.escape(variant.name)} ({html.escape(variant.runs[0].kind)},"
            f" seeds {seeds})</summary><pre>{html.escape(json.dumps(config, indent=2))}</pre></details>"
        )
    return "".join(parts)


# ----------------------------------------------------------------------------- entry point


def collect(
    root: Path, event: str | None = None, window: int = SHARE_WINDOW
) -> tuple[list[Variant], str, dict | None]:
    """Read the runs under ``root`` and compute every run's emergence metrics."""
    runs = load_runs(root)
    if not runs:
        raise ReportError(f"no run directories (run.json) under {root}")
    experiment = read_experiment(root)
    event = resolve_event(runs, experiment, event)
    groups = group_by_variant(runs)
    if experiment is not None:  # the experiment file's order
        order: dict[str, int] = {}
        for i, run in enumerate(experiment.get("runs", [])):
            order.setdefault(run["variant"], i)
        groups = dict(sorted(groups.items(), key=lambda item: order.get(item[0], len(order))))
    variants = []
    for name, members in groups.items():
        variant = Variant(name, members)
        for run in members:
            phase, rows = run.training_episodes()
            if not rows:
                continue
            variant.metrics.append(
                (
                    run,
                    phase,
                    emergence(
                        rows[f"ev_{event}"],
                        rows["length"],
                        rows["return"],
                        rows["performance"],
                        window=window,
                    ),
                )
            )
        variants.append(variant)
    return variants, event, experiment


def write_report(root: Path | str, *, event: str | None = None, window: int = SHARE_WINDOW) -> Path:
    """Write ``<root>/report/index.html`` (and its images); returns its path."""
    root = Path(root)
    variants, event, experiment = collect(root, event, window)
    out = root / REPORT_DIR
    if out.exists():
        shutil.rmtree(out)
    (out / "episodes").mkdir(parents=True)
    name = (experiment or {}).get("name") or root.resolve().name
    colors = plots.variant_colors([v.name for v in variants])
    template = Template((resources.files("ogm.analysis") / "templates" / "report.html").read_text())
    page = template.substitute(
        title=html.escape(f"ogm report: {name}"),
        summary=_summary(root, experiment, variants, event),
        curves=_curves(out, variants, colors, event, window),
        emergence=_emergence_table(variants),
        frontier=_frontier(out, variants, colors),
        episodes=_episodes(out, variants),
        configs=_configs(root, variants),
    )
    index = out / "index.html"
    index.write_text(page)
    return index
