"""The static HTML report of a runs directory (``ogm report RUNS_DIR``).

Writes ``<RUNS_DIR>/report/index.html`` with its images next to it (PNG figures, GIF
animations) and its tables as CSV (``findings.csv``, ``emergence.csv``, ``runs.csv``): open
it in any browser, no server needed. The findings' lines are also written to ``findings.txt``. Nothing is re-run: every number comes from each run's
``episodes.csv`` (and ``rounds.csv`` or ``fidelity.csv`` when the agent wrote them),
animations from the episodes its agent recorded (``ogm.analysis.episodes.EpisodeRecorder``).

Sections, in order (``SECTIONS``): the findings (per game: what performance is read
against, one generated line per variant and the headline table, before any curve), the runs, evaluation learning curves, training episodes, the drift of OGM agents from their
offline policy (when some run logged it), emergence, hack discovery against hack depth
(when the runs are a ``k`` sweep of ogm/HackDepth-v0), over-optimisation against the
distance from the initial policy (when some agent logged ``kl_to_init`` and moved), the
safety-capability frontier,
conditioning fidelity (when some run has ``fidelity.csv``), episode animations and the
configs as they ran. Final figures come from evaluation episodes only (the last evaluation
point, greedy and sampled); emergence times from training episodes, in environment steps.

Any folder of runs makes a report: runs of several games each track their own game's
primary event, and runs that log no events (a Pendulum SAC run) show return and
performance only. The page fits a window 1000 px wide: tables are split into parts and
wrap, figures are drawn for that width.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import replace
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import numpy as np

from ogm.analysis import discovery, plots
from ogm.analysis import overoptimisation as overopt
from ogm.analysis import overtaking as overtake
from ogm.analysis.emergence import SHARE_WINDOW, THRESHOLDS, trailing_mean
from ogm.analysis.episodes import EPISODES_DIR, FIRST_EVENT, LAST, episode_gif, load_episode
from ogm.analysis.findings import (
    Table,
    Variant,
    describe_values,
    emergence_table,
    finding,
    findings_table,
    measure,
    runs_table,
    span_text,
    steps_text,
)
from ogm.analysis.runs import (
    MODES,
    NO_SAFE_OPTIMUM,
    TRAIN,
    Run,
    baselines,
    group_by_variant,
    load_runs,
    read_experiment,
    read_table,
)
from ogm.analysis.stats import MIN_SEEDS_FOR_CI, iqm, kaplan_meier

SECTIONS = {
    "findings": "Findings",
    "runs": "Runs",
    "eval-curves": "Evaluation learning curves",
    "training": "Training episodes",
    "drift": "Drift from the offline policy",
    "emergence": "Emergence of the unsafe behaviour",
    "hack-depth": "Hack depth",
    "overoptimisation": "Over-optimisation against the distance from the initial policy",
    "overtaking": "When the online agents overtake the baselines",
    "frontier": "Safety-capability frontier",
    "fidelity": "Conditioning fidelity",
    "episodes": "Episodes",
    "configs": "Configs",
}
REPORT_DIR = "report"
MIXED_EVENT = "primary event"  # the label when runs of several games track their own event
# EvalPoint attribute -> (episodes.csv column, axis label)
QUANTITIES = {
    "ret": ("return", "return (observed reward)"),
    "performance": ("performance", "performance (hidden reward)"),
}
# rounds.csv column of OGM runs -> panel title: KL(offline policy || current policy)
DRIFT = {
    "kl_offline_demo": "on demonstration segments (a fixed probe)",
    "kl_offline_online": "on segments of the round's own episodes",
}
# Config sections a run never reads when another value is set: OGM with ``pretrained``
# starts from that run's model (online training reads only the listed keys of its offline
# section); KL-PPO and best-of-n with ``init`` do not pretrain.
UNUSED_WHEN_SET = {
    "pretrained": ("offline", ("strategy", "return_coef", "eval_context_len")),
    "init": ("pretrain", ()),
}
# How variants are called: agent names and sweep keys of the built-in experiments
AGENT_LABELS = {"kl_ppo": "KL-PPO", "filtered_bc": "filtered BC", "best_of_n": "best-of-n"}
ACRONYMS = {"gm", "ogm", "ppo", "dqn", "sac", "bc", "kl", "dt", "odt", "rl"}
KEY_LABELS = {"strategy": "", "max_kl_per_round": "shift cap"}  # strategies read as themselves
PERCENT_KEYS = {"demo_fraction": "demos", "top_fraction": "top"}  # shares read as percentages


class ReportError(ValueError):
    """A runs directory the report cannot be made from, with the reason."""


# ----------------------------------------------------------------------------- what is tracked


def primary_event_of(env_id: str) -> str | None:
    """The primary event ogm.envs declares for a gridworld id (None for other ids)."""
    from ogm.envs import GAMES

    return next((g.primary_event for g in GAMES.values() if g.env_id == env_id), None)


def resolve_events(
    runs: list[Run], experiment: dict[str, Any] | None, event: str | None
) -> tuple[str | None, dict[Path, str | None]]:
    """The event each run is measured on, and the name the report gives it.

    ``event`` (``--event``) or the experiment's ``primary_event`` applies to every run; else
    each run tracks its game's primary event, or the only event it logs. The name is the
    event's when all runs track the same one, ``MIXED_EVENT`` when they differ (runs of
    several games), None when no run tracks any.
    """
    names = sorted({name for run in runs for name in run.event_names()})
    if event is None and experiment is not None:
        event = experiment["spec"].get("primary_event")
    if event is not None:
        if event not in names:
            raise ReportError(f"event {event!r} is not in episodes.csv; logged events: {names}")
        return event, {run.path: event for run in runs}
    per_run = {}
    for run in runs:
        logged = run.event_names()
        primary = primary_event_of(str(run.config.get("env_id", "")))
        per_run[run.path] = (
            primary if primary in logged else (logged[0] if len(logged) == 1 else None)
        )
    tracked = set(per_run.values()) - {None}
    if not tracked:
        return None, per_run
    return (tracked.pop() if len(tracked) == 1 else MIXED_EVENT), per_run


# ----------------------------------------------------------------------------- variant names


def agent_label(agent: str) -> str:
    """``ogm`` -> ``OGM``, ``kl_ppo`` -> ``KL-PPO``, ``my_agent`` -> ``my agent``."""
    if agent in AGENT_LABELS:
        return AGENT_LABELS[agent]
    return " ".join(w.upper() if w in ACRONYMS else w for w in agent.split("_") if w)


def setting_label(key: str, value: Any) -> str:
    """One sweep value: ``demos 50%``, ``quantilizer:0.1``, ``entropy off``, ``beta 0.1``."""
    key = key.split(".")[-1]
    if isinstance(value, bool) or value in ("true", "false"):
        value = "on" if value in (True, "true") else "off"
    elif key in PERCENT_KEYS:
        try:
            return f"{PERCENT_KEYS[key]} {100 * float(value):g}%"
        except ValueError:  # not a number: shown as given
            pass
    return f"{KEY_LABELS.get(key, key.replace('_', ' '))} {value}".strip()


def variant_label(agent: str, point: dict[str, Any]) -> str:
    """What the report calls an agent at one sweep point, in every table, figure and finding:
    ``OGM quantilizer:0.1, demos 0%, entropy off``; ``PPO`` without a sweep."""
    label = agent_label(agent)
    if label == "best-of-n" and list(point) == ["n"]:
        return f"best-of-{point['n']}"
    settings = ", ".join(setting_label(key, value) for key, value in point.items())
    return f"{label} {settings}".strip()


def variant_labels(names: list[str], experiment: dict[str, Any] | None) -> dict[str, str]:
    """A readable name per variant folder (``variant_label``) from the experiment's agents
    and sweep values (``ogm__demo_fraction=0.5`` -> ``OGM demos 50%``), with the
    environment point of a swept experiment after it (``k=3/gm`` -> ``GM (k 3)``); folders
    from elsewhere are read as ``agent__key=value``, and other paths keep their name."""
    from ogm.experiments.spec import grid, variant_name

    points: dict[str, tuple[str, dict[str, Any]]] = {}
    for agent in (experiment or {}).get("spec", {}).get("agents", []):
        for point in grid(agent.get("sweep", {})):
            points[variant_name(agent["name"], point)] = (agent["name"], point)
    labels = {}
    for name in names:
        world, _, variant = name.rpartition("/")
        where = [s.split("=", 1) for s in world.split("__")] if world else []
        if not all(len(pair) == 2 for pair in where):  # a path, not an environment point
            labels[name] = name
            continue
        if variant in points:
            agent, point = points[variant]
        else:
            agent, *settings = variant.split("__")
            point = dict(s.split("=", 1) for s in settings if "=" in s)
        suffix = f" ({', '.join(setting_label(k, v) for k, v in where)})" if where else ""
        labels[name] = variant_label(agent, point) + suffix
    if len(set(labels.values())) < len(labels):  # two folders read the same: keep folders
        return {name: name for name in names}
    return labels


# ----------------------------------------------------------------------------- page parts


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", text)


def _figure(src: str, alt: str, caption: str) -> str:
    return (
        f'<figure><img src="{html.escape(src)}" alt="{html.escape(alt)}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'


def _markdown(text: str) -> str:
    """A note's HTML as Markdown: bold stays bold, other tags go."""
    return html.unescape(re.sub(r"<[^>]+>", "", re.sub(r"</?b>", "**", text)))


def _file_link(*names: str) -> str:
    return " (also " + ", ".join(f'<a href="{name}">{name}</a>' for name in names) + ")"


def _write_markdown(path: Path, blocks: list[str | Table]) -> None:
    """A section as Markdown, for pasting into a document: its notes (HTML, converted by
    ``_markdown``) and tables in order, empty notes left out."""
    parts = [b.markdown() if isinstance(b, Table) else _markdown(b) for b in blocks]
    path.write_text("\n\n".join(p for p in parts if p) + "\n")


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


def games(variants: list[Variant]) -> dict[str, list[Variant]]:
    """The variants per game setting they played, in their order."""
    out: dict[str, list[Variant]] = {}
    for variant in variants:
        out.setdefault(variant.setting, []).append(variant)
    return out


def _number(value: float, stderr: float | None) -> str:
    """A reference number, with its standard error where it has one."""
    known = stderr is not None and np.isfinite(stderr)
    return f"{value:.2f}" + (f" ± {stderr:.2f}" if known else "")


def baseline_text(setting: str, variants: list[Variant]) -> str:
    """What one game's performance is read against (HTML): the stored safe optimum, random
    and hack levels, and the demonstrators' performance with where it came from."""
    runs = [m for v in variants for m in v.runs]
    table = next((m.baseline.headroom for m in runs if m.baseline.headroom is not None), None)
    name = f"<b>{html.escape(setting)}</b>: "
    if table is None:
        text = (
            f"{name}{NO_SAFE_OPTIMUM} (ogm.envs.headroom), so no gap closed is computed; "
            "final performance is shown as measured."
        )
    else:
        text = (
            f"{name}safe optimum (best expected hidden performance) "
            f"{_number(table.safe_optimum, table.stderr.get('safe_optimum'))}, random policy "
            f"{_number(table.random, table.stderr.get('random'))}, best observed return "
            f"{_number(table.hack_optimum, table.stderr.get('hack_optimum'))} "
            "(ogm.envs.headroom)."
        )
    levels = {m.baseline.demonstrators for m in runs} - {None}
    for level in sorted(levels, key=lambda d: d.source):
        text += (
            f" Demonstrators' performance {_number(level.performance, level.stderr)} "
            f"({html.escape(level.source)})."
        )
    if not levels:
        text += " Demonstrators' performance unknown: the runs name no demonstration dataset."
    if table is not None:
        text += (
            " <b>Gap closed</b> = (final performance − demonstrators') / (safe optimum − "
            "demonstrators'), on hidden performance, so reward gained by hacking never counts: "
            "0% is the demonstrators' level, 100% the safe optimum, below 0% worse than the "
            "demonstrators."
        )
    return text


def _findings(out: Path, variants: list[Variant], event: str | None, window: int) -> str:
    caption = (
        "Final figures come from each run's <b>final evaluation point</b> (its evaluation "
        "episodes of the largest round), separately with <b>greedy</b> actions (the most "
        "likely one) and <b>sampled</b> actions; return and performance are means over those "
        "episodes. "
    )
    if event is not None:
        mixed = " (each run: its game's primary event)" if event == MIXED_EVENT else ""
        caption += (
            f"<b>{html.escape(event)} share</b>{mixed}: share of those episodes in which the "
            "event happened. <b>Showed in training</b>: runs with at least one training "
            "episode (sampled actions) showing it by their budget B. Times are environment "
            "steps of training, from training episodes: <b>onset</b> = first training episode "
            f"showing it; <b>t50/t90</b> = first at which 50%/90% of the trailing {window} "
            "training episodes show it (full windows only). A time not reached reads "
            f"<b>not by B</b>; with {MIN_SEEDS_FOR_CI} or more seeds, a time some runs did not "
            "reach reads k/n by B with the Kaplan-Meier median when defined, never an average. "
        )
    caption += (
        "The line per variant is generated from the table's numbers: the gap closed counts "
        "as closed when every run (fewer than "
        f"{MIN_SEEDS_FOR_CI} seeds) or the whole 95% interval lies above 0. "
        f"{SPREAD} {setup_text(variants)}"
    )
    per_game = games(variants)
    parts, lines = [], []
    markdown = [_markdown(caption)]
    for index, (setting, members) in enumerate(per_game.items()):
        name = "findings.csv" if len(per_game) == 1 else f"findings_{index + 1}.csv"
        table = findings_table(members, event)
        table.write_csv(out / name)
        found = [finding(v, event) for v in members]
        lines += found
        heading = f"<h3>{html.escape(setting)}</h3>" if len(per_game) > 1 else ""
        items = "".join(f"<li>{html.escape(line)}</li>" for line in found)
        parts.append(
            heading
            + _note(baseline_text(setting, members))
            + f'<ul class="findings">{items}</ul>'
            + _note(f"Per variant{_file_link(name)}:")
            + table.html()
        )
        markdown += [f"### {setting}", _markdown(baseline_text(setting, members))]
        markdown += ["\n".join(f"- {line}" for line in found), table.markdown()]
    (out / "findings.txt").write_text("\n".join(lines) + "\n")
    (out / "findings.md").write_text("\n\n".join(markdown) + "\n")
    links = ' (also <a href="findings.txt">findings.txt</a>; all of it as Markdown: '
    return _note(caption + links + '<a href="findings.md">findings.md</a>)') + "".join(parts)


def _tracked_text(variants: list[Variant], event: str | None) -> str:
    """The tracked event per environment, e.g. ``on_transformer (ogm/TomatoWatering-v0)``."""
    if event is None:
        return "none (the runs log no events)"
    per_env: dict[str, set[str]] = {}
    for m in (m for v in variants for m in v.runs):
        per_env.setdefault(str(m.run.config.get("env_id")), set()).add(m.event or "none")
    return "; ".join(f"{', '.join(sorted(e))} ({env})" for env, e in sorted(per_env.items()))


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
        ("Tracked behaviour (primary event)", _tracked_text(variants, event)),
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
        f"<details><summary>Per run</summary>{_note(caption + _file_link('runs.csv'))}"
        f"{table.html()}</details>"
    )
    return "".join(parts)


def _quantities(event: str | None) -> dict[str, tuple[str, str]]:
    """The quantities a curve shows: return, performance and, when tracked, the event share."""
    if event is None:
        return QUANTITIES
    return {**QUANTITIES, "event_share": ("event", f"{event} share")}


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
    their final evaluation). Curves are keyed by variant label."""
    rows = []
    for mode in MODES:
        row = []
        for key, (_, label) in _quantities(event).items():
            panel = plots.Panel(f"{mode}: {label.split(' (')[0]}", label)
            for variant in variants:
                series = eval_series(variant, mode, key)
                if series and not variant.trains:
                    panel.references[variant.label] = float(iqm([y[-1] for _, y in series]))
                elif (curve := plots.curve_across_seeds(series)) is not None:
                    panel.curves[variant.label] = curve
            row.append(panel)
        rows.append(row)
    return rows


def training_panels(variants: list[Variant], event: str | None, window: int) -> list[plots.Panel]:
    """The training-episode curves: trailing means over ``window`` training episodes (full
    windows only) of return, performance and the share showing the run's tracked event."""
    panels = []
    for key, (column, label) in _quantities(event).items():
        panel = plots.Panel(f"training: {label.split(' (')[0]}, last {window}", label)
        for variant in variants:
            series = []
            for m in variant.runs:
                rows = m.run.rows(TRAIN)
                if key == "event_share":
                    if m.event is None:
                        continue  # the event not logged
                    column = f"ev_{m.event}"
                if len(rows.get("return", ())) < window:
                    continue  # too few training episodes
                values = rows[column] > 0 if key == "event_share" else rows[column]
                smoothed = trailing_mean(values, window)[window - 1 :]
                series.append((rows["env_steps"][window - 1 :], smoothed))
            curve = plots.curve_across_seeds(series)
            if curve is not None:
                panel.curves[variant.label] = curve
        panels.append(panel)
    return panels


def _eval_curves(out: Path, variants: list[Variant], styles: dict, event: str | None) -> str:
    panels = eval_panels(variants, event)
    if not any(p.curves or p.references for row in panels for p in row):
        return _note("No run has evaluation episodes yet.")
    title = "Evaluation episodes (held-out starts) against environment steps of training"
    plots.plot_panels(panels, styles, out / "eval_curves.png", title)
    caption = (
        "Evaluation episodes against environment steps of training: top row greedy actions, "
        "bottom row sampled actions; each point of a run is the mean over the episodes of one "
        "evaluation point. Dashed horizontal lines: agents without an online phase (evaluated "
        f"at 0 steps; IQM of their final evaluation across seeds). {BAND} {setup_text(variants)}"
    )
    return _figure("eval_curves.png", "evaluation learning curves", caption)


def _training(
    out: Path, variants: list[Variant], styles: dict, event: str | None, window: int
) -> str:
    panels = training_panels(variants, event, window)
    if not any(p.curves for p in panels):
        return _note(
            f"No run has {window} or more training episodes (agents without an online phase "
            "have none)."
        )
    title = f"Training episodes (sampled actions): mean of the last {window}"
    plots.plot_panels([panels], styles, out / "training_curves.png", title)
    caption = (
        "Training episodes: the episodes the agents acted in while learning (exploration with "
        "sampled actions, not evaluation), against environment steps of training; mean over "
        f"the trailing {window} training episodes, from the first full window. {BAND} "
        f"{setup_text(variants)}"
    )
    return _figure("training_curves.png", "training-episode curves", caption)


def _rounds(run: Run) -> dict[str, np.ndarray]:
    """A run's rounds.csv as columns; {} when it has none, or one that is not all numbers."""
    try:
        return read_table(run.path / "rounds.csv")
    except ValueError:
        return {}


def drift_panels(variants: list[Variant]) -> list[plots.Panel]:
    """Per ``DRIFT`` column of the runs' rounds.csv (OGM runs log them): its value against
    env steps, IQM across seeds; variants without it are left out."""
    tables = {m.run.path: _rounds(m.run) for v in variants for m in v.runs}
    panels = []
    for column, where in DRIFT.items():
        panel = plots.Panel(where, "KL(offline policy || current)")
        for variant in variants:
            series = []
            for m in variant.runs:
                table = tables[m.run.path]
                if column in table and "env_steps" in table:
                    keep = np.isfinite(table[column])
                    series.append((table["env_steps"][keep], table[column][keep]))
            curve = plots.curve_across_seeds(series)
            if curve is not None:
                panel.curves[variant.label] = curve
        panels.append(panel)
    return panels


def _drift(out: Path, variants: list[Variant], styles: dict) -> str | None:
    panels = drift_panels(variants)
    if not any(p.curves for p in panels):
        return None
    drifting = [v for v in variants if any(v.label in p.curves for p in panels)]
    title = "How far online finetuning moved the policy from the offline one"
    plots.plot_panels([panels], styles, out / "drift.png", title)
    caption = (
        "KL divergence from the offline (pretrained) policy to the current policy of each OGM "
        "run, in nats per step, at the end of every round against environment steps of "
        "training (rounds.csv: kl_offline_demo, kl_offline_online): left on a fixed probe of "
        "demonstration segments, right on segments of the episodes the agent played in that "
        f"round. {BAND} {setup_text(drifting)}"
    )
    return _figure("drift.png", "KL divergence from the offline policy", caption)


def _emergence(
    out: Path, variants: list[Variant], styles: dict, event: str | None, window: int
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
        f"{key}: {level:.0%} of the last {window}": {
            v.label: (
                kaplan_meier(*zip(*[m.survival(key) for m in v.emergences], strict=True)),
                max(m.budget for m in v.emergences),
            )
            for v in online
        }
        for key, level in THRESHOLDS.items()
    }
    title = f"Share of runs whose training episodes reached t10, t50, t90 ({event})"
    plots.plot_reached(panels, styles, out / "reached.png", title)
    caption = (
        "Share of runs that reached t10, t50 and t90 by each number of environment steps of "
        "training: Kaplan-Meier estimate, each run censored at its budget (+ where a run "
        f"ended without reaching it). {setup_text(variants)}"
    )
    return (
        _note(note + _file_link("emergence.csv"))
        + table.html()
        + _figure("reached.png", "share of runs that reached each emergence time", caption)
    )


def _hack_depth(out: Path, variants: list[Variant], experiment: dict | None) -> str | None:
    series = discovery.depth_series(variants, experiment)
    if not series:
        return None
    labels = variant_labels([s.name for s in series], experiment)
    series = [replace(s, label=labels[s.name]) for s in series]
    assert experiment is not None  # a k sweep comes from experiment.json
    lines = discovery.analytic_steps(experiment, series)
    names = {
        discovery.UNIFORM: "uniform random play (analytic)",
        discovery.DEMONSTRATORS: (
            f"demonstrators, {discovery.demonstrators_text(experiment)} (analytic)"
        ),
    }
    title = "Hack discovery against hack depth k"
    plots.plot_discovery(
        {s.label: list(s.points.values()) for s in series if s.points},
        {s.label: s.eval_share("sampled") for s in series if not s.trains},
        {names[name]: line for name, line in lines.items() if line},
        plots.variant_styles([s.label for s in series]),
        out / "hack_depth.png",
        title,
    )
    overview = discovery.overview_table(series)
    growth, depths = discovery.growth_table(series), discovery.depth_table(series)
    growth.write_csv(out / "hack_depth_growth.csv")
    depths.write_csv(out / "hack_depth.csv")
    caption = (
        "Discovery step: environment steps of training at the end of a run's first training "
        "episode with the exploit (its emergence onset); a run that did not discover it by its "
        "budget B is censored there. Left: Kaplan-Meier median over seeds per depth (line), "
        f"with its 95% bootstrap interval from {MIN_SEEDS_FOR_CI} seeds on (drawn up to B "
        "when it reaches past it), each run faint (hollow triangle: censored at B), a filled "
        "triangle at B where fewer than half discovered. Analytic lines: expected episodes "
        "until the first exploit of uniform random play and of the demonstrators "
        "(ogm.envs.hack_depth) times the measured mean length of all training episodes at that "
        "depth. Right: share of runs that discovered by B; dashed, agents without training "
        "episodes: share of their final sampled evaluation episodes with the exploit. Variants "
        f"are spread a little along k. {setup_text(variants)}"
    )
    note = (
        "Growth rate b: maximum likelihood of log(discovery step) = a + b k + sigma W, a "
        "Weibull accelerated-failure-time model (sigma = 1: exponential waiting times, as for "
        "repeated tries), over every run: a run that did not discover enters as later than "
        "B, so locks that nobody cracked count. 95% interval from a bootstrap that resamples "
        "runs within each depth; exp(b) is the factor each added lock multiplies discovery "
        "time by."
    )
    overview_note = (
        "Per depth: runs that discovered the exploit by B, of all runs, and the Kaplan-Meier "
        "median discovery step where at least half are estimated to have discovered by B; "
        "agents without training episodes: share of their final sampled evaluation episodes "
        f"with the exploit. {setup_text(variants)}"
    )
    _write_markdown(out / "hack_depth.md", [overview_note, overview, note, growth, caption])
    return (
        _figure("hack_depth.png", "discovery step against hack depth", caption)
        + _note(overview_note + _file_link("hack_depth.md"))
        + overview.html()
        + _note(note + _file_link("hack_depth_growth.csv"))
        + growth.html()
        + "<details><summary>Per variant and depth</summary>"
        + _note(
            "Discovery (runs by B, Kaplan-Meier median, per seed), adoption (t50), "
            "decisiveness and commitment from the emergence metrics; agents without training "
            "episodes: their final evaluation share of episodes with the exploit."
            + _file_link("hack_depth.csv")
        )
        + f"{depths.html()}</details>"
    )


def _overoptimisation(out: Path, variants: list[Variant], experiment: dict | None) -> str | None:
    curves = overopt.kl_curves(variants)
    points = [p for runs in curves.values() for c in runs for p in c.points]
    # nothing to show: no policy moved, or the gold is the proxy (performance = return, as in
    # Atari and MuJoCo, where there is no hidden reward to fall behind the observed one)
    if not any(p.d > 0 for p in points) or all(p.gold == p.proxy for p in points):
        return None
    worlds = overopt.world_of_variants(experiment)
    names = {name: name.rpartition("/")[2] for name in curves}
    labels = variant_labels(sorted(set(names.values())), experiment)
    by_world: dict[str, dict[str, list[overopt.KLCurve]]] = {}
    for name, runs in curves.items():
        by_world.setdefault(worlds.get(name, ""), {})[name] = runs
    fits: list[overopt.FamilyFit] = []
    events: list[list[str]] = []
    levels: list[list[str]] = []
    figure: dict[str, dict[str, plots.KLSeries]] = {}
    bon_label = "best-of-n (a point per n)"
    agent_of = {bon_label: overopt.BEST_OF_N}  # label -> its agent, for the figure's colours
    for world, runs_of in by_world.items():
        config_labels = {name: labels[names[name]] for name in runs_of}
        world_fits = overopt.family_fits(world, runs_of, config_labels)
        fits += world_fits
        fit_of = {f.name: f for f in world_fits}
        series: dict[str, plots.KLSeries] = {}
        bon = [name for name, runs in runs_of.items() if runs[0].run.kind == overopt.BEST_OF_N]
        # best-of-n: a stage per n, in the order of d (each n's mean over seeds)
        stages = [(name, p) for name in bon for p in overopt.mean_curve(runs_of[name])]
        stages.sort(key=lambda stage: stage[1].d)
        if stages:
            path = [(f"n = {runs_of[name][0].run.config.get('n')}", p) for name, p in stages]
            series[bon_label] = _kl_series([p for _, p in path], fit_of.get("best-of-n"))
            levels.append(overopt.level_row(world, "best-of-n", path, runs_of[stages[-1][0]]))
        for name, runs in runs_of.items():
            if name in bon:
                continue
            label = config_labels[name]
            if mean := overopt.mean_curve(runs):
                series[label] = _kl_series(mean, fit_of.get(label))
                agent_of[label] = names[name].partition("__")[0]
                path = [(f"step {steps_text(p.env_steps)}", p) for p in mean]
                levels.append(overopt.level_row(world, label, path, runs))
            found = overopt.run_events([c for c in runs if c.start is not None])
            if found:
                events.append(overopt.event_row(world, label, found))
        if series:
            figure[world] = series
    if not figure:
        return _note(
            "Some agents logged their KL from the initial policy, but no gains over it are "
            "known: pi_0's level comes from a run's own first point at d = 0 or from best-of-n "
            "runs of the same pi_0 (ogm.analysis.overoptimisation)."
        )
    drawn = list(dict.fromkeys(n for s in figure.values() for n in s))
    styles = plots.variant_styles(drawn, agent_of)
    title = "Gold and proxy against d = sqrt(KL(pi || pi_0))"
    plots.plot_overoptimisation(figure, styles, out / "overoptimisation.png", title)
    fits_table = overopt.fits_table(fits)
    events_table = Table(overopt.EVENT_HEADER, events, keys=2)
    levels_table = Table(overopt.LEVEL_HEADER, levels, keys=2)
    if set(by_world) == {""}:  # no environment sweep: no world column
        levels_table, fits_table, events_table = (
            Table(t.header[1:], [row[1:] for row in t.rows], keys=1)
            for t in (levels_table, fits_table, events_table)
        )
    levels_table.write_csv(out / "overoptimisation_levels.csv")
    fits_table.write_csv(out / "overoptimisation_fits.csv")
    events_table.write_csv(out / "overoptimisation_events.csv")
    caption = (
        "Each point: a variant's mean over seeds of one <b>sampled</b> evaluation point (its "
        "held-out episodes; greedy episodes are not a sample of the policy whose KL is "
        "measured), at the evaluation points all its seeds have. d = sqrt of the mean over "
        "the point's episodes of kl_to_init, each episode's summed exact KL(pi || pi_0) along "
        "the contexts it visited (best-of-n: the analytic log n − (n−1)/n). Levels, not "
        "gains: agents that condition pi_0 differently start apart. pi_0's level as the agent "
        "conditions it is best-of-n's candidates (n = 1, at d = 0), OGM's round 0 (at d = 0), "
        "for KL-PPO the candidates of best-of-n runs of the same pi_0 (its first evaluation "
        "comes after training has begun); variants without a known level are not drawn. "
        "Dashed: the fitted closed form of Gao et al. (2022) for the gold gain, drawn from "
        "pi_0's gold at d = 0: best-of-n d(alpha − beta d) for the best-of-n family, RL "
        "d(alpha − beta log d) for each trained variant. An agent that retrains its reward "
        "model (OGM with feedback) reports the proxy of the model it has at each point, so "
        "its proxy curve is on a moving scale. Colours: a hue per agent, shades for its "
        "settings. PPO from scratch and BC have no pi_0 and are not drawn. "
        f"{setup_text(variants)}"
    )
    note = (
        "Fits: least squares through the origin of the gold gain on every point of every seed, "
        "over pi_0's gold as the agent conditions it (its mean over seeds in the table: "
        "agents that condition pi_0 differently start from different levels, so equal gains "
        "are not equal golds); "
        "95% percentile-bootstrap intervals that resample seeds (1,000 resamples); R² is the "
        "share of the gains' variance the form explains; d* the fitted peak (∞: the fit never "
        "turns down within any d; a d* below the smallest d measured lies where the RL form "
        "is known not to hold, and is not compared across worlds; the gold at d* is given only "
        "where d* lies within the d measured)."
    )
    event_note = (
        "Over-optimisation as an event (sampled evaluation points on the environment-step "
        "clock, from pi_0's level at step 0): the gold's peak, and the <b>onset</b>, the first "
        "later point where the gold has fallen by 10% of its gain at the peak, and by at least "
        "twice the standard error of the difference between the two points' means (their "
        "episodes' spread), while the proxy is at or above its value there. Medians over the "
        "runs (onset and width: over the runs with an onset)."
    )
    trends = overopt.peak_trends(fits)
    trend_text = (
        "<p><b>Does the peak move out across worlds?</b> (bootstrap intervals in brackets) "
        + " ".join(html.escape(t) for t in trends)
        + "</p>"
        if trends
        else ""
    )
    level_note = (
        "Where each agent takes the gold from pi_0's level: the best gold of its mean over "
        "seeds on the way (at an evaluation point of training; best-of-n: at an n), and the "
        "gold of its last evaluation point (best-of-n: the largest n), with each run's change "
        "from its own pi_0's gold; IQM over seeds with 95% stratified-bootstrap intervals "
        f"(fewer than {MIN_SEEDS_FOR_CI} seeds: the range over them). "
        "pi_0's gold here is the mean over the runs at the end (best-of-n: those of its "
        "largest n, whose candidates are the most), so it can differ in the last digit from "
        "the fits' mean over all runs. Sampled evaluation episodes, as in the figure."
    )
    _write_markdown(
        out / "overoptimisation.md",
        [
            trend_text,
            caption,
            level_note,
            levels_table,
            note,
            fits_table,
            *([event_note, events_table] if events else []),
        ],
    )
    return (
        trend_text
        + _figure("overoptimisation.png", "gold and proxy against KL", caption)
        + _note(level_note + _file_link("overoptimisation_levels.csv"))
        + levels_table.html()
        + _note(note + _file_link("overoptimisation_fits.csv", "overoptimisation.md"))
        + fits_table.html()
        + (
            _note(event_note + _file_link("overoptimisation_events.csv")) + events_table.html()
            if events
            else ""
        )
    )


def _steps_text(step: float | None, budget: float) -> str:
    return f"{step:,.0f}" if step is not None else f"not by {budget:,.0f}"


def _overtaking(out: Path, variants: list[Variant]) -> str | None:
    found = overtake.overtakings(variants, MODES)
    if not found:
        return None
    labels = {v.name: v.label for v in variants}
    rows = [
        [
            o.setting or "-",
            labels[o.variant],
            labels[o.baseline],
            o.mode,
            _steps_text(o.step, o.budget),
            f"[{_steps_text(o.low, o.budget)}, {_steps_text(o.high, o.budget)}]"
            if o.interval
            else f"needs {MIN_SEEDS_FOR_CI} seeds a side",
            f"{o.seeds[0]} / {o.seeds[1]}",
        ]
        for o in found
    ]
    header = ["setting", "OGM variant", "baseline", "mode", "overtakes at", "95% CI", "seeds"]
    table = Table(header, rows, keys=3)
    table.write_csv(out / "overtaking.csv")
    text = (
        _note(
            "Overtaking step: the first evaluation step (environment steps of training) from which "
            "the OGM variant's mean evaluation performance over seeds stays above the baseline's "
            "to the end of the budget both reached; a baseline without an online phase is its "
            "final evaluation (a reference line). Interval: 2.5th and 97.5th percentiles over "
            f"{overtake.BOOTSTRAP} bootstrap resamples of the seeds of both; a resample that never "
            f"overtakes counts as beyond the budget; none with fewer than {MIN_SEEDS_FOR_CI} "
            f"seeds on a side. {setup_text(variants)}" + _file_link("overtaking.csv")
        )
        + table.html()
    )
    scored = [(v, scores) for v in variants if (scores := overtake.reference_scores(v))]
    if scored:
        from ogm.data.collect_rl import normalised

        score_rows = []
        for variant, scores in scored:
            cells = [overtake.setting_of(variant.name) or "-", variant.label]
            for mode in MODES:
                finals = [normalised(p.performance, scores) for p in variant.finals(mode)]
                cells.append(describe_values(finals, digits=1) if finals else "-")
            cells.append(str(len(variant.runs)))
            score_rows.append(cells)
        scores_table = Table(
            ["setting", "variant", "greedy", "sampled", "seeds"], score_rows, keys=2
        )
        scores_table.write_csv(out / "normalised_scores.csv")
        text += (
            _note(
                "Final evaluation episodes as normalised scores, 100 (R - min) / (max - min) "
                "with the reference returns the dataset records: D4RL's for Hopper, "
                "HalfCheetah and Walker2d, the literature's random and human scores for Breakout "
                "and Q*bert (human-normalised), else the mean returns of its random and expert "
                "datasets. Each run's mean over its final evaluation episodes; across seeds the "
                f"per-seed values in seed order below {MIN_SEEDS_FOR_CI} seeds, else their IQM "
                "[95% bootstrap CI]." + _file_link("normalised_scores.csv")
            )
            + scores_table.html()
        )
    return text


def _kl_series(
    points: Sequence[overopt.KLPoint], family: overopt.FamilyFit | None
) -> plots.KLSeries:
    """The figure's series through mean ``points``, with the fitted gain drawn from pi_0's
    gold (the mean over seeds that the fit is over)."""
    d, proxy, gold = (np.array([getattr(p, key) for p in points]) for key in overopt.MEANS)
    if family is None or family.fit is None:
        return plots.KLSeries(d, gold, proxy)
    grid = np.linspace(0.0, float(d.max()), 50)
    return plots.KLSeries(d, gold, proxy, grid, family.start_gold + family.fit.predict(grid))


def _frontier(out: Path, variants: list[Variant], styles: dict) -> str:
    panels = {
        f"{mode} evaluation": {
            v.label: (
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
    title = "Final return against final performance (safety-capability frontier)"
    plots.plot_frontier(panels, styles, out / "frontier.png", title)
    caption = (
        "Final evaluation return against final safety performance, greedy and sampled "
        "actions: small points are seeds, large named points the interquartile mean, with "
        f"95% stratified-bootstrap CIs for variants with at least {MIN_SEEDS_FOR_CI} seeds. "
        "When some variants lie far from the rest (leaving them out at least halves the "
        "width or height the points span), a second panel zooms in on the others. With more "
        f"than {plots.NAMED_POINTS} variants the points carry their number in the legend. "
        "Points below the dotted "
        f"line earn observed reward the designer does not want. {setup_text(variants)}"
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
            curves[variant.label] = (targets, achieved)
        if curves:
            title = f"{mode}: {span_text(counts, as_steps=False)} episodes per target per run"
            panels[title] = curves
    return panels


def _fidelity(out: Path, variants: list[Variant], styles: dict) -> str | None:
    panels = fidelity_panels(variants)
    if not panels:
        return None
    title = "Return achieved when asked for a target return"
    plots.plot_fidelity(panels, styles, out / "fidelity.png", title)
    runs = [n for v in variants if (n := sum(bool(m.run.fidelity) for m in v.runs))]
    caption = (
        "Conditioning fidelity: the return achieved when a return-conditioned agent is asked "
        "for a target, with greedy (left) and sampled (right) actions; panel titles give the "
        "episodes per target. Line: mean over runs of each run's mean; band: range over runs; "
        f"dotted: achieved = target. {span_text(runs, as_steps=False)} runs per variant."
    )
    return _figure("fidelity.png", "conditioning fidelity", caption)


def colour_key(env_id: str) -> str | None:
    """An HTML key of the colours the animations draw a gridworld's tiles in (None for other
    environments)."""
    from ogm.envs import GAMES
    from ogm.envs.env import COLOURS, FLOOR_COLOUR

    info = next((g for g in GAMES.values() if g.env_id == env_id), None)
    if info is None:
        return None
    tiles = [("floor", FLOOR_COLOUR)] + [(k, COLOURS[k]) for k in info.engine.kinds()]
    items = "".join(
        f'<span class="tile"><span class="swatch" style="background: rgb{colour}"></span>'
        f"{html.escape(name.replace('_', ' '))}</span>"
        for name, colour in tiles
    )
    return f'<p class="key"><b>{html.escape(env_id)} tiles</b>{items}</p>'


def _episodes(out: Path, variants: list[Variant]) -> str:
    figures, skipped, envs, problems = [], set(), [], []
    for variant in variants:
        for run in (m.run for m in variant.runs):
            env_id = str(run.config.get("env_id"))
            folder = run.path / EPISODES_DIR
            chosen = [(k, folder / f"{k}.npz") for k in (FIRST_EVENT, LAST)]
            chosen = [(k, p) for k, p in chosen if p.exists()]
            if not chosen:
                continue
            if colour_key(env_id) is None:
                skipped.add(env_id)
                break
            envs.append(env_id)
            for key, path in chosen:
                name = f"{_slug(variant.name)}__seed_{run.seed}__{key}.gif"
                try:
                    recorded = load_episode(path)
                    (out / "episodes" / name).write_bytes(episode_gif(env_id, recorded))
                except (ValueError, KeyError, OSError) as err:  # a recording it cannot draw
                    problems.append(f"{variant.label} seed {run.seed} {key}: {err}")
                    continue
                what = "first episode with the behaviour" if key == FIRST_EVENT else "last episode"
                caption = (
                    f"{variant.label}, seed {run.seed}: {what} ({recorded['phase']} episode "
                    f"{int(recorded['episode'])}, return {float(recorded['rewards'].sum()):.2f}, "
                    f"performance {float(recorded['hidden_rewards'].sum()):.2f}, "
                    f"{int(recorded['event'].sum())} steps with the event)"
                )
                figures.append(_figure(f"episodes/{name}", caption, html.escape(caption)))
            break  # one seed per variant: the lowest one with recorded episodes
    note = _note(
        "Episodes recorded by the agents: training episodes of agents that learn by acting, "
        "the greedy evaluation episodes of the others (lowest seed of each variant that has "
        "recordings). A red border marks frames reached by a step with the tracked event."
    )
    note += "".join(key for env in dict.fromkeys(envs) if (key := colour_key(env)))
    if skipped:
        note += _note(
            "Not animated (no tile renderer for these environments): "
            + html.escape(", ".join(sorted(skipped)))
        )
    if problems:
        note += _note("Not rendered: " + html.escape("; ".join(problems)))
    if not figures:
        return note + _note("No run recorded episodes.")
    return note + f'<div class="gallery">{"".join(figures)}</div>'


def config_as_run(config: dict[str, Any]) -> dict[str, Any]:
    """A run's config without its seed and without the sections it never read
    (``UNUSED_WHEN_SET``), which show as a one-line note instead."""
    shown = {k: v for k, v in config.items() if k != "seed"}
    for setting, (section, read) in UNUSED_WHEN_SET.items():
        if shown.get(setting) and isinstance(shown.get(section), dict):
            kept = {k: v for k, v in shown[section].items() if k in read}
            shown[section] = {
                **kept,
                "(not run)": f"{setting} = {shown[setting]} was used instead; see its config",
            }
    return shown


def _configs(root: Path, variants: list[Variant]) -> str:
    parts = [
        _note(
            "Each variant's config as its runs read it (the seed left out; a section that the "
            "run never read, such as the offline section of an OGM agent that starts from a "
            "pretrained run, is cut to the keys it did read)."
        )
    ]
    source = root / "experiment.toml"
    if source.is_file():
        parts.append(f"<h3>Experiment file</h3><pre>{html.escape(source.read_text())}</pre>")
    for variant in variants:
        first = variant.runs[0].run
        config = config_as_run(first.config)
        seeds = ", ".join(str(m.run.seed) for m in variant.runs)
        parts.append(
            f"<details><summary>{html.escape(variant.label)} ({html.escape(first.kind)}, "
            f"folder {html.escape(variant.name)}, seeds {seeds})</summary>"
            f"<pre>{html.escape(json.dumps(config, indent=2))}</pre></details>"
        )
    return "".join(parts)


# ----------------------------------------------------------------------------- entry point


def collect(
    root: Path, event: str | None = None, window: int = SHARE_WINDOW
) -> tuple[list[Variant], str | None, dict | None]:
    """Read the runs under ``root`` and measure each; variants in the experiment's order.

    Returns the variants, the name of the tracked event (``resolve_events``) and the
    experiment record (None when the runs did not come from ``ogm run``).
    """
    runs = load_runs(root)
    if not runs:
        raise ReportError(f"no run directories (run.json) under {root}")
    experiment = read_experiment(root)
    event, per_run = resolve_events(runs, experiment, event)
    groups = group_by_variant(runs)
    if experiment is not None:
        order: dict[str, int] = {}
        for i, run in enumerate(experiment.get("runs", [])):
            order.setdefault(run["variant"], i)
        groups = dict(sorted(groups.items(), key=lambda item: order.get(item[0], len(order))))
    labels = variant_labels(list(groups), experiment)
    against = baselines(runs)
    variants = [
        Variant(
            name,
            [measure(run, per_run[run.path], window, against[run.path]) for run in members],
            labels[name],
        )
        for name, members in groups.items()
    ]
    return variants, event, experiment


def write_report(root: Path | str, *, event: str | None = None, window: int = SHARE_WINDOW) -> Path:
    """Write ``<root>/report/index.html`` (with its images and CSV tables); returns its path."""
    root = Path(root)
    from ogm.analysis import studies  # runs of ogm.studies have their own page (docs/studies.md)

    if (page := studies.write_report(root)) is not None:
        return page
    variants, event, experiment = collect(root, event, window)
    out = root / REPORT_DIR
    if out.exists():
        shutil.rmtree(out)
    (out / "episodes").mkdir(parents=True)
    styles = plots.variant_styles([v.label for v in variants])
    builders: dict[str, Callable[[], str | None]] = {
        "findings": lambda: _findings(out, variants, event, window),
        "runs": lambda: _runs(out, root, experiment, variants, event),
        "eval-curves": lambda: _eval_curves(out, variants, styles, event),
        "training": lambda: _training(out, variants, styles, event, window),
        "drift": lambda: _drift(out, variants, styles),
        "emergence": lambda: _emergence(out, variants, styles, event, window),
        "hack-depth": lambda: _hack_depth(out, variants, experiment),
        "overoptimisation": lambda: _overoptimisation(out, variants, experiment),
        "overtaking": lambda: _overtaking(out, variants),
        "frontier": lambda: _frontier(out, variants, styles),
        "fidelity": lambda: _fidelity(out, variants, styles),
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
