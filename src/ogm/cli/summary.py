"""The few lines a command prints when a run (or an experiment) ends: where it is and how
its final evaluation went, read back from the run directory, never re-measured."""

from __future__ import annotations

import csv
import json
from pathlib import Path

MODES = ("greedy", "sampled")


def final_evaluation(run_dir: Path) -> dict[str, dict[str, float]]:
    """Per mode: mean return, performance and primary-event share of the run's last
    evaluation point, and how many episodes it holds (empty when never evaluated)."""
    from ogm.envs import game_info

    record = json.loads((run_dir / "run.json").read_text())
    try:
        event = game_info(record["config"]["env_id"]).primary_event
    except (KeyError, ValueError):
        event = None
    path = run_dir / "episodes.csv"
    rows = list(csv.DictReader(path.open(newline=""))) if path.is_file() else []
    evals = [r for r in rows if r["phase"] == "eval"]
    if not evals:
        return {}
    last = max(int(r["round"]) for r in evals)
    out = {}
    for mode in MODES:
        point = [r for r in evals if int(r["round"]) == last and r["mode"] == mode]
        if not point:
            continue
        n = len(point)
        summary = {
            "episodes": n,
            "return": sum(float(r["return"]) for r in point) / n,
            "performance": sum(float(r["performance"]) for r in point) / n,
        }
        if event is not None and f"ev_{event}" in point[0]:
            summary[event] = sum(int(r[f"ev_{event}"]) > 0 for r in point) / n
        out[mode] = summary
    return out


def table(rows: list[list[str]]) -> str:
    """Left-aligned first column, right-aligned numbers."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def run_summary(run_dir: Path) -> str:
    """Where the run is and its final evaluation, greedy and sampled."""
    record = json.loads((run_dir / "run.json").read_text())
    steps = record.get("env_steps")
    head = f"{run_dir}: {record['kind']} run, seed {record['seed']}, {record['status']}" + (
        f", {steps:,} environment steps of training" if steps is not None else ""
    )
    final = final_evaluation(run_dir)
    if not final:
        return head + "\n  not evaluated (eval_episodes = 0)"
    events = [
        k for k in next(iter(final.values())) if k not in ("episodes", "return", "performance")
    ]
    rows = [["final evaluation", "episodes", "return", "performance"]]
    rows[0] += [f"share with {e}" for e in events]
    for mode, values in final.items():
        rows.append(
            [
                mode,
                str(values["episodes"]),
                f"{values['return']:.2f}",
                f"{values['performance']:.2f}",
            ]
            + [f"{values[e]:.2f}" for e in events]
        )
    return head + "\n" + table(rows)


def experiment_summary(out: Path, relpaths: list[str]) -> str:
    """One line per run of an experiment: its final greedy and sampled evaluation."""
    rows = [["run", "greedy return", "performance", "sampled return", "performance"]]
    for relpath in relpaths:
        run_dir = out / relpath
        final = final_evaluation(run_dir) if (run_dir / "run.json").is_file() else {}
        cells = [relpath]
        for mode in MODES:
            values = final.get(mode)
            cells += (
                [f"{values['return']:.2f}", f"{values['performance']:.2f}"]
                if values
                else ["-", "-"]
            )
        rows.append(cells)
    return "final evaluation of each run (held-out episodes):\n" + table(rows)
