"""Reading finished (or unfinished) run directories back for analysis.

A runs directory is any folder holding run directories (each with ``run.json``) at any depth.
Runs are grouped into *variants*, the runs of one agent configuration across seeds: the
experiment runner lays runs out as ``<out>/<variant>/seed_<n>/``, so a run whose folder is
named ``seed_<n>`` belongs to the variant named by its parent folder; any other run is a
variant of its own, named by its path.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ogm.train.rundir import RUN_FILE, CsvLog, RunDir

SEED_DIR = re.compile(r"^seed_(\d+)$")
TEXT_COLUMNS = ("phase",)
EXPERIMENT_FILE = "experiment.json"


@dataclass
class Run:
    """One run directory read back: its record and its episodes as numpy columns."""

    path: Path
    variant: str
    kind: str
    seed: int
    status: str
    config: dict[str, Any]
    episodes: dict[str, np.ndarray] = field(repr=False)

    def phase(self, name: str) -> dict[str, np.ndarray]:
        """The episode columns restricted to one phase, in logged order."""
        if not self.episodes:
            return {}
        keep = self.episodes["phase"] == name
        return {key: column[keep] for key, column in self.episodes.items()}

    def training_episodes(self) -> tuple[str, dict[str, np.ndarray]]:
        """The episodes the emergence metrics follow: ``online`` ones, else ``eval`` ones.

        Agents without an online phase (BC, an offline DT) are measured on their evaluation
        episodes, so that they still appear, as a flat line, next to the online agents.
        """
        for name in ("online", "eval", "offline_eval"):
            rows = self.phase(name)
            if rows and len(rows["phase"]):
                return name, rows
        return "none", {}

    def event_names(self) -> list[str]:
        """Event names logged in episodes.csv (``ev_<name>`` columns)."""
        return [c[3:] for c in self.episodes if c.startswith("ev_") and not c.endswith("_share")]


def read_episodes(path: Path) -> dict[str, np.ndarray]:
    """episodes.csv as columns: ``phase`` as strings, every other column as float64."""
    rows = CsvLog(path).read()
    if not rows:
        return {}
    columns: dict[str, np.ndarray] = {}
    for key in rows[0]:
        values = [row[key] for row in rows]
        if key in TEXT_COLUMNS:
            columns[key] = np.array(values, dtype=str)
        else:
            try:
                columns[key] = np.array([float(v) if v != "" else np.nan for v in values])
            except ValueError as err:
                raise ValueError(f"{path}: column {key!r} holds a non-number: {err}") from None
    return columns


def variant_of(run_path: Path, root: Path) -> str:
    """The variant a run belongs to, from the runner's ``<variant>/seed_<n>`` layout."""
    relative = run_path.resolve().relative_to(root.resolve())
    if SEED_DIR.match(relative.name) and len(relative.parts) > 1:
        return relative.parent.as_posix()
    return relative.as_posix() or run_path.name


def find_run_dirs(root: Path) -> list[Path]:
    """Every run directory under ``root`` (``root`` itself included), sorted by path.

    A run directory inside another one (an agent's own sub-run, such as the offline
    pretraining of an OGM run) is part of that run, not a run of its own.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"runs directory {root} does not exist")
    found = sorted(p.parent for p in root.rglob(RUN_FILE))
    top = set(found)
    return [p for p in found if not any(parent in top for parent in p.parents)]


def load_runs(root: Path) -> list[Run]:
    """Read every run under ``root``."""
    root = Path(root)
    runs = []
    for path in find_run_dirs(root):
        record = RunDir.open(path).record
        runs.append(
            Run(
                path=path,
                variant=variant_of(path, root),
                kind=record["kind"],
                seed=int(record["seed"]),
                status=record["status"],
                config=record["config"],
                episodes=read_episodes(path / "episodes.csv"),
            )
        )
    return runs


def group_by_variant(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs per variant (in first-seen order), each list sorted by seed."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.variant, []).append(run)
    return {name: sorted(members, key=lambda r: r.seed) for name, members in groups.items()}


def read_experiment(root: Path) -> dict[str, Any] | None:
    """The runner's ``experiment.json`` under ``root``, when the runs came from ``ogm run``."""
    file = Path(root) / EXPERIMENT_FILE
    return json.loads(file.read_text()) if file.is_file() else None
