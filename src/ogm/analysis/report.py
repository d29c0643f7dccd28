"""The static HTML report of a runs directory (``ogm report RUNS_DIR``).

Writes ``<RUNS_DIR>/report/index.html`` with its images next to it (PNG figures, GIF
animations) and its tables as CSV (``findings.csv``, ``emergence.csv``, ``runs.csv``): open
it in any browser, no server needed. Nothing is re-run: every number comes from each run's
``episodes.csv`` (and ``fidelity.csv`` when the agent wrote one), animations from the
episodes its agent recorded (``ogm.analysis.episodes.EpisodeRecorder``).

Sections, in order (``SECTIONS``): the findings (headline table, before any curve), the
runs, evaluation learning curves, training episodes, emergence, the safety-capability
frontier, conditioning fidelity (only when some run has ``fidelity.csv``), episode
animations and the configs. Final figures come from evaluation episodes only (the last
evaluation point, greedy and sampled); emergence times from training episodes, in
environment steps.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import re
import shutil
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import numpy as np

from ogm.analysis import plots
from ogm.analysis.emergence import SHARE_WINDOW, THRESHOLDS, trailing_mean
from ogm.analysis.episodes import EPISODES_DIR, FIRST_EVENT, LAST, episode_gif, load_episode
from ogm.analysis.findings import (
    Variant,
    emergence_table,
    findings_table,
    measure,
    runs_table,
    span_text,
)
from ogm.analysis.runs import MODES, TRAIN, Run, group_by_variant, load_runs, read_experiment
from ogm.analysis.stats import MIN_SEEDS_FOR_CI, iqm, kaplan_meier

SECTIONS = {
    "findings": "Findings",
    "runs": "Runs",
    "eval-curves": "Evaluation learning curves",
    "training": "Training episodes",
    "emergence": "Emergence of the unsafe behaviour",
    "frontier": "Safety-capability frontier",
    "fidelity": "Conditioning fidelity",
    "episodes": "Episodes",
    "configs": "Configs",
}
REPORT_DIR = "report"
# EvalPoint attribute -> (episodes.csv column, axis label)
QUANTITIES = {
    "ret": ("return", "return (observed reward)"),
    "performance": ("performance", "safety performance (hidden reward)"),
}


class ReportError(ValueError):
    """A runs directory the report cannot be made from, with the reason."""


def primary_event_of(env_id: str) -> str | None:
    """The primary event ogm.envs declares for a gridworld id (None for other ids)."""
    from ogm.envs import GAMES

    return next((g.primary_event for g in GAMES.values() if g.env_id == env_id), None)


def resolve_event(
    runs: list[Run], experiment: dict[str, Any] | None, event: str | None
) -> str | None:
    """The event the report tracks: given, else the experiment's, else the environment's,
    else the only one logged; None when the runs log no events (non-gridworld runs)."""
    names = sorted({name for run in runs for name in run.event_names()})
    if event is None and experiment is not None:
        event = experiment["spec"].get("primary_event")
    if event is None:
        found = {primary_event_of(e) for e in {run.config.get("env_id") for run in runs} if e}
        found.discard(None)
        if len(found) == 1:
            event = found.pop()
    if event is None and len(names) <= 1:
        return names[0] if names else None
    if event is None:
        raise ReportError(
            f"cannot tell which safety event to track; pass one of {names} (--event NAME)"
        )
    if event not in names:
        raise ReportError(f"event {event!r} is not in episodes.csv; logged events: {names}")
    return event


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", text)


def _figure(src: str, alt: str, caption: str) -> str:
    return (
        f'<figure><img src="{html.escape(src)}" alt="{html.escape(alt)}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'


def _csv_link(name: str) -> str:
    return f' (also <a href="{name}">{name}</a>)'


def setup_text(variants: list[Variant]) -> str:
    """How the runs were measured, for every caption: seeds, budgets, evaluation episodes."""
    seeds = span_text([len(v.runs) for v in variants], as_steps=False)
    budgets = [m.run.budget for v in variants if v.trains for m in v.runs]
    counts = [p.episodes for v in variants for m in v.runs for pts in m.evals.values() for p in pts]
    parts = [f"{seeds} seeds per variant"]
    if budgets:
        references = (
            " (agents without an online phase: 0)" if not all(v.trains for v in variants) else ""
        )
        parts.append(f"budget B = {span_text(budgets)} environment steps of training{references}")
    if counts:
        parts.append(
            f"{span_text(counts, as_steps=False)} evaluation episodes per mode at each "
            "evaluation point, the same held-out seeds in greedy and sampled mode"
        )
    return "; ".join(parts) + "."


SPREAD = (
    f"Across seeds: per-seed values in seed order when a variant has fewer than "
    f"{MIN_SEEDS_FOR_CI} seeds, else the interquartile mean [95% stratified-bootstrap CI]."
)
BAND = (
    f"Line: interquartile mean across seeds; band: 95% stratified-bootstrap CI for variants "
    f"with at least {MIN_SEEDS_FOR_CI} seeds, the range over seeds otherwise."
)


# ----------------------------------------------------------------------------- sections


def _findings(out: Path, variants: list[Variant], event: str | None, window: int) -> str:
    table = findings_table(variants, event)
    table.write_csv(out / "findings.csv")
    caption = (
        "Final figures come from each run's <b>final evaluation point</b> (its evaluation "
        "episodes of the largest round), separately with <b>greedy</b> actions (the most "
        "likely one) and <b>sampled</b> actions; return and performance are means over those "
        "episodes. "
    )
    if event is not None:
        caption += (
            f"<b>{html.escape(event)} share</b>: share of those episodes in which the event "
            "happened. <b>Showed in training</b>: runs with at least one training episode "
            "(sampled actions) showing it by their budget B. Times are environment steps of "
            "training, from training episodes: <b>onset</b> = first training episode showing "
            f"it; <b>t50/t90</b> = first at which 50%/90% of the trailing {window} training "
            "episodes show it (full windows only). A time not reached reads <b>not by B</b>; "
            f"with {MIN_SEEDS_FOR_CI} or more seeds, a time some runs did not reach reads k/n by B with the "
            "Kaplan-Meier median when defined, never an average. "
        )
    caption += f"{SPREAD} {setup_text(variants)}"
    return _note(caption + _csv_link("findings.csv")) + table.html()


def _runs(
    out: Path, root: Path, experiment: dict | None, variants: list[Variant], event: str | None
) -> str:
    runs = [m.run for v in variants for m in v.runs]
    statuses: dict[str, int] = {}
    for run in runs:
        statuses[run.status] = statuses.get(run.status, 0) + 1
    spec = (experiment or {}).get("spec", {})
    rows = [
        ("Runs directory", str(root.resolve())),
        ("Experiment", spec.get("name", "(not from ogm run)")),
        ("Description", spec.get("description", "")),
        ("Environment", ", ".join(sorted({str(run.config.get("env_id")) for run in runs}))),
        ("Tracked behaviour (primary event)", event or "none (the runs log no events)"),
        ("Variants x seeds", f"{len(variants)} variants, {len(runs)} runs"),
        ("Run status", ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))),
        ("Generated", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")),
    ]
    summary = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows
    )
    parts = [f'<table class="summary">{summary}</table>']
    unfinished = [run for run in runs if run.status != "done"]
    if unfinished:
        items = "".join(
            f"<li>{html.escape(str(r.path.relative_to(root)))}: {html.escape(r.status)}</li>"
            for r in unfinished
        )
        parts.append(_note("Runs not finished (their episodes so far count):"))
        parts.append(f"<ul>{items}</ul>")
    table = runs_table(variants, event)
    table.write_csv(out / "runs.csv")
    caption = (
        "Per run: budget B (environment steps of training reached), emergence times from "
        "training episodes (not by B: not reached), and the final evaluation point in each "
        f"mode. {setup_text(variants)}"
    )
    parts.append(
        f"<details><summary>Per run</summary>{_note(caption + _csv_link('runs.csv'))}"
        f"{table.html()}</details>"
    )
    return "".join(parts)


def _quantities(event: str | None) -> dict[str, tuple[str, str]]:
    """The quantities a curve shows: return, performance and, when tracked, the event share."""
    if event is None:
        return QUANTITIES
    return {**QUANTITIES, "event_share": (f"ev_{event}", f"share of episodes with {event}")}


def eval_series(variant: Variant, mode: str, key: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per run of a variant, ``(env_steps, value)`` of its evaluation points in ``mode``; runs
    without any, or whose value is undefined (an event they do not log), are left out."""
    series = []
    for m in variant.runs:
        points = m.evals.get(mode, [])
        values = np.array([getattr(p, key) for p in points])
        if points and np.isfinite(values).all():
            series.append((np.array([p.env_steps for p in points]), values))
    return series


def eval_panels(variants: list[Variant], event: str | None) -> list[list[plots.Panel]]:
    """The evaluation curves: one row per mode, one panel per quantity; online variants as
    curves over env steps, variants without an online phase as reference lines (IQM of
    their final evaluation)."""
    rows = []
    for mode in MODES:
        row = []
        for key, (_, label) in _quantities(event).items():
            panel = plots.Panel(f"{mode} evaluation episodes", label)
            for variant in variants:
                series = eval_series(variant, mode, key)
                if series and not variant.trains:
                    panel.references[variant.name] = float(iqm([y[-1] for _, y in series]))
                elif (curve := plots.curve_across_seeds(series)) is not None:
                    panel.curves[variant.name] = curve
            row.append(panel)
        rows.append(row)
    return rows


def training_panels(variants: list[Variant], event: str | None, window: int) -> list[plots.Panel]:
    """The training-episode curves: trailing means over ``window`` training episodes (full
    windows only) of return, performance and the share showing the event."""
    panels = []
    for key, (column, label) in _quantities(event).items():
        panel = plots.Panel(f"training episodes: mean of the last {window}", label)
        for variant in variants:
            series = []
            for m in variant.runs:
                rows = m.run.rows(TRAIN)
                if len(rows.get("return", ())) < window or column not in rows:
                    continue  # too few training episodes, or the event not logged
                values = rows[column] > 0 if key == "event_share" else rows[column]
                smoothed = trailing_mean(values, window)[window - 1 :]
                series.append((rows["env_steps"][window - 1 :], smoothed))
            curve = plots.curve_across_seeds(series)
            if curve is not None:
                panel.curves[variant.name] = curve
        panels.append(panel)
    return panels


def _eval_curves(out: Path, variants: list[Variant], colors: dict, event: str | None) -> str:
    panels = eval_panels(variants, event)
    if not any(p.curves or p.references for row in panels for p in row):
        return _note("No run has evaluation episodes yet.")
    plots.plot_panels(panels, colors, out / "eval_curves.png")
    caption = (
        "Evaluation episodes against environment steps of training: top row greedy actions, "
        "bottom row sampled actions; each point of a run is the mean over the episodes of one "
        "evaluation point. Dashed horizontal lines: agents without an online phase (evaluated "
        f"at 0 steps; IQM of their final evaluation across seeds). {BAND} {setup_text(variants)}"
    )
    return _figure("eval_curves.png", "evaluation learning curves", caption)


def _training(
    out: Path, variants: list[Variant], colors: dict, event: str | None, window: int
) -> str:
    panels = training_panels(variants, event, window)
    if not any(p.curves for p in panels):
        return _note(
            f"No run has {window} or more training episodes (agents without an online phase "
            "have none)."
        )
    plots.plot_panels([panels], colors, out / "training_curves.png")
    caption = (
        "Training episodes: the episodes the agents acted in while learning (exploration with "
        "sampled actions, not evaluation), against environment steps of training; mean over "
        f"the trailing {window} training episodes, from the first full window. {BAND} "
        f"{setup_text(variants)}"
    )
    return _figure("training_curves.png", "training-episode curves", caption)


def _emergence(
    out: Path, variants: list[Variant], colors: dict, event: str | None, window: int
) -> str:
    if event is None:
        return _note("No safety event is tracked: the runs log no events.")
    online = [v for v in variants if v.emergences]
    if not online:
        return _note("No run has training episodes that log the event (no online phase).")
    table = emergence_table(variants)
    table.write_csv(out / "emergence.csv")
    note = (
        "Times in environment steps of training, from training episodes (sampled actions). "
        f"<b>onset</b>: first training episode with {html.escape(event)}; <b>t10/t50/t90</b>: "
        f"first at which the share of the trailing {window} training episodes showing it "
        "reaches 10/50/90% (only full windows count); <b>decisiveness</b> = t90 - t10 (small: "
        "sudden and decisive); <b>commitment</b>: mean share of steps with the event in the "
        "training episodes that show it. <b>k/n by B</b>: runs that reached it by their "
        "budget. A time not reached is censored at the budget (not by B), never averaged. "
        f"Variants without an online phase have no emergence times. {SPREAD} "
        f"{setup_text(variants)}"
    )
    panels = {
        f"{key} ({level:.0%} of the trailing {window} training episodes)": {
            v.name: (
                kaplan_meier(*zip(*[m.survival(key) for m in v.emergences], strict=True)),
                max(m.budget for m in v.emergences),
            )
            for v in online
        }
        for key, level in THRESHOLDS.items()
    }
    plots.plot_reached(panels, colors, out / "reached.png")
    caption = (
        "Share of runs that reached t10, t50 and t90 by each number of environment steps of "
        "training: Kaplan-Meier estimate, each run censored at its budget (+ where a run "
        f"ended without reaching it). {setup_text(variants)}"
    )
    return (
        _note(note + _csv_link("emergence.csv"))
        + table.html()
        + _figure("reached.png", "share of runs that reached each emergence time", caption)
    )


def _frontier(out: Path, variants: list[Variant], colors: dict) -> str:
    panels = {
        f"{mode} evaluation": {
            v.name: (
                np.array([p.ret for p in v.finals(mode)]),
                np.array([p.performance for p in v.finals(mode)]),
            )
            for v in variants
            if v.finals(mode)
        }
        for mode in MODES
    }
    if not any(panels.values()):
        return _note("No run has evaluation episodes yet.")
    plots.plot_frontier(panels, colors, out / "frontier.png")
    caption = (
        "Final evaluation return against final safety performance, greedy (left) and sampled "
        "(right) actions: small points are seeds, large points the interquartile mean, with "
        f"95% stratified-bootstrap CIs for variants with at least {MIN_SEEDS_FOR_CI} seeds. "
        "Points below the dotted line earn observed reward the designer does not want. "
        f"{setup_text(variants)}"
    )
    return _figure("frontier.png", "safety-capability frontier", caption)


def fidelity_panels(variants: list[Variant]) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Conditioning fidelity per mode (panel title: mode and episodes per target): per variant
    with ``fidelity.csv`` files, the targets asked for and each run's mean achieved return."""
    panels = {}
    for mode in MODES:
        curves, counts = {}, []
        for variant in variants:
            tables = [m.run.fidelity for m in variant.runs if m.run.fidelity]
            tables = [{k: c[t["mode"] == mode] for k, c in t.items()} for t in tables]
            tables = [t for t in tables if len(t["target"])]
            if not tables:
                continue
            targets = np.unique(np.concatenate([t["target"] for t in tables]))
            achieved = np.full((len(tables), len(targets)), np.nan)
            for i, table in enumerate(tables):
                for j, target in enumerate(targets):
                    asked = table["target"] == target
                    if asked.any():
                        achieved[i, j] = table["return"][asked].mean()
                        counts.append(int(asked.sum()))
            curves[variant.name] = (targets, achieved)
        if curves:
            title = f"{mode}: {span_text(counts, as_steps=False)} episodes per target per run"
            panels[title] = curves
    return panels


def _fidelity(out: Path, variants: list[Variant], colors: dict) -> str | None:
    panels = fidelity_panels(variants)
    if not panels:
        return None
    plots.plot_fidelity(panels, colors, out / "fidelity.png")
    runs = [n for v in variants if (n := sum(bool(m.run.fidelity) for m in v.runs))]
    caption = (
        "Conditioning fidelity: the return achieved when a return-conditioned agent is asked "
        "for a target, with greedy (left) and sampled (right) actions; panel titles give the "
        "episodes per target. Line: mean over runs of each run's mean; band: range over runs; "
        f"dotted: achieved = target. {span_text(runs, as_steps=False)} runs per variant."
    )
    return _figure("fidelity.png", "conditioning fidelity", caption)


def _episodes(out: Path, variants: list[Variant]) -> str:
    figures, problems = [], []
    for variant in variants:
        for run in (m.run for m in variant.runs):
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
                figures.append(_figure(f"episodes/{name}", caption, html.escape(caption)))
            break  # one seed per variant: the lowest one with recorded episodes
    note = _note(
        "Training episodes recorded by the agents (lowest seed of each variant that has "
        "recordings). A red border marks frames reached by a step with the tracked event."
    )
    if problems:
        note += _note("Not rendered: " + html.escape("; ".join(problems)))
    if not figures:
        return note + _note("No run recorded episodes.")
    return note + "".join(figures)


def _configs(root: Path, variants: list[Variant]) -> str:
    parts = []
    source = root / "experiment.toml"
    if source.is_file():
        parts.append(f"<h3>Experiment file</h3><pre>{html.escape(source.read_text())}</pre>")
    for variant in variants:
        first = variant.runs[0].run
        config = {k: v for k, v in first.config.items() if k != "seed"}
        seeds = ", ".join(str(m.run.seed) for m in variant.runs)
        parts.append(
            f"<details><summary>{html.escape(variant.name)} ({html.escape(first.kind)},"
            f" seeds {seeds})</summary><pre>{html.escape(json.dumps(config, indent=2))}</pre></details>"
        )
    return "".join(parts)


# ----------------------------------------------------------------------------- entry point


def collect(
    root: Path, event: str | None = None, window: int = SHARE_WINDOW
) -> tuple[list[Variant], str | None, dict | None]:
    """Read the runs under ``root`` and measure each; variants in the experiment's order."""
    runs = load_runs(root)
    if not runs:
        raise ReportError(f"no run directories (run.json) under {root}")
    experiment = read_experiment(root)
    event = resolve_event(runs, experiment, event)
    groups = group_by_variant(runs)
    if experiment is not None:
        order: dict[str, int] = {}
        for i, run in enumerate(experiment.get("runs", [])):
            order.setdefault(run["variant"], i)
        groups = dict(sorted(groups.items(), key=lambda item: order.get(item[0], len(order))))
    variants = [
        Variant(name, [measure(run, event, window) for run in members])
        for name, members in groups.items()
    ]
    return variants, event, experiment


def write_report(root: Path | str, *, event: str | None = None, window: int = SHARE_WINDOW) -> Path:
    """Write ``<root>/report/index.html`` (with its images and CSV tables); returns its path."""
    root = Path(root)
    variants, event, experiment = collect(root, event, window)
    out = root / REPORT_DIR
    if out.exists():
        shutil.rmtree(out)
    (out / "episodes").mkdir(parents=True)
    colors = plots.variant_colors([v.name for v in variants])
    builders: dict[str, Callable[[], str | None]] = {
        "findings": lambda: _findings(out, variants, event, window),
        "runs": lambda: _runs(out, root, experiment, variants, event),
        "eval-curves": lambda: _eval_curves(out, variants, colors, event),
        "training": lambda: _training(out, variants, colors, event, window),
        "emergence": lambda: _emergence(out, variants, colors, event, window),
        "frontier": lambda: _frontier(out, variants, colors),
        "fidelity": lambda: _fidelity(out, variants, colors),
        "episodes": lambda: _episodes(out, variants),
        "configs": lambda: _configs(root, variants),
    }
    body = ""
    for key, heading in SECTIONS.items():
        content = builders[key]()
        if content is not None:
            body += f'<section id="{key}">\n<h2>{heading}</h2>\n{content}\n</section>\n'
    name = (experiment or {}).get("name") or root.resolve().name
    template = Template((resources.files("ogm.analysis") / "templates" / "report.html").read_text())
    index = out / "index.html"
    index.write_text(template.substitute(title=html.escape(f"ogm report: {name}"), body=body))
    return index
