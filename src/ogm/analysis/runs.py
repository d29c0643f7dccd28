"""Reading finished (or unfinished) run directories back for analysis.

A runs directory is any folder holding run directories (each with ``run.json``) at any depth.
Runs are grouped into *variants*, the runs of one agent configuration across seeds: the
experiment runner lays runs out as ``<out>/<variant>/seed_<n>/``, so a run whose folder is
named ``seed_<n>`` belongs to the variant named by its parent folder; any other run is a
variant of its own, named by its path.

Each run's ``episodes.csv`` (schema in docs/architecture.md) has a ``phase`` (``train``:
episodes the agent acted in while learning; ``eval``: evaluation episodes) and a ``mode``
(``greedy`` or ``sampled`` actions). Files from before that schema are read with ``online``
as ``train``, ``offline_eval`` as ``eval``, and a missing ``mode`` filled in (training
episodes sampled; evaluation episodes as the run's ``eval_deterministic`` config says).
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
TEXT_COLUMNS = ("phase", "mode")
EXPERIMENT_FILE = "experiment.json"
FIDELITY_FILE = "fidelity.csv"
TRAIN, EVAL = "train", "eval"
GREEDY, SAMPLED = "greedy", "sampled"
MODES = (GREEDY, SAMPLED)
OLD_PHASES = {"online": TRAIN, "offline_eval": EVAL}

Columns = dict[str, np.ndarray]


def row_count(columns: Columns) -> int:
    """Number of rows of a table held as equal-length columns (0 for no columns)."""
    return len(next(iter(columns.values()), ()))


def select(columns: Columns, index: np.ndarray) -> Columns:
    """The rows of ``columns`` picked by ``index`` (a boolean mask or row numbers)."""
    return {key: column[index] for key, column in columns.items()}


@dataclass
class Run:
    """One run directory read back: its record, its episodes (and conditioning fidelity,
    when the agent wrote ``fidelity.csv``) as numpy columns."""

    path: Path
    variant: str
    kind: str
    seed: int
    status: str
    config: dict[str, Any]
    episodes: Columns = field(repr=False)
    budget: float = 0.0
    fidelity: Columns = field(default_factory=dict, repr=False)

    def rows(self, phase: str, mode: str | None = None) -> Columns:
        """The episode rows of one phase (and mode) in order of ``env_steps`` (logged order
        among equal ones); ``{}`` if none."""
        if not row_count(self.episodes):
            return {}
        keep = self.episodes["phase"] == phase
        if mode is not None:
            keep &= self.episodes["mode"] == mode
        if not keep.any():
            return {}
        rows = select(self.episodes, keep)
        return select(rows, np.argsort(rows["env_steps"], kind="stable"))

    @property
    def trains(self) -> bool:
        """Whether the agent interacted with the environment while learning (has train rows)."""
        return row_count(self.episodes) > 0 and bool((self.episodes["phase"] == TRAIN).any())

    def eval_points(self, mode: str) -> list[Columns]:
        """The evaluation points in one mode, in round order: each the rows of one round."""
        rows = self.rows(EVAL, mode)
        if not rows:
            return []
        return [select(rows, rows["round"] == r) for r in np.unique(rows["round"])]

    def event_names(self) -> list[str]:
        """Event names logged in episodes.csv (``ev_<name>`` columns)."""
        return [c[3:] for c in self.episodes if c.startswith("ev_") and not c.endswith("_share")]


def read_table(path: Path) -> Columns:
    """A CSV file as columns: ``phase`` and ``mode`` as strings, every other one as float64."""
    rows = CsvLog(path).read()
    if not rows:
        return {}
    columns: Columns = {}
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


def read_episodes(path: Path, *, eval_greedy: bool = True) -> Columns:
    """episodes.csv as columns, old phase names mapped and a missing ``mode`` filled in
    (``eval_greedy``: whether an old file's evaluation episodes took the greedy action)."""
    columns = read_table(path)
    if not columns:
        return {}
    phase = np.array([OLD_PHASES.get(p, p) for p in columns["phase"]], dtype=str)
    columns["phase"] = phase
    if "mode" not in columns:
        old_eval = GREEDY if eval_greedy else SAMPLED
        columns["mode"] = np.where(phase == EVAL, old_eval, SAMPLED)
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


def load_run(path: Path, variant: str) -> Run:
    """Read one run directory.

    Its budget is the environment steps of training it reached: the largest ``env_steps``
    in episodes.csv, or run.json's ``env_steps`` when that is larger (0 for agents that never
    interact with the environment while learning).
    """
    record = RunDir.open(path).record
    config = record["config"]
    episodes = read_episodes(
        path / "episodes.csv", eval_greedy=bool(config.get("eval_deterministic", True))
    )
    logged = float(np.nanmax(episodes["env_steps"])) if row_count(episodes) else 0.0
    return Run(
        path=path,
        variant=variant,
        kind=record["kind"],
        seed=int(record["seed"]),
        status=record["status"],
        config=config,
        episodes=episodes,
        budget=max(logged, float(record.get("env_steps") or 0.0)),
        fidelity=read_table(path / FIDELITY_FILE),
    )


def load_runs(root: Path) -> list[Run]:
    """Read every run under ``root``."""
    root = Path(root)
    return [load_run(path, variant_of(path, root)) for path in find_run_dirs(root)]


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
