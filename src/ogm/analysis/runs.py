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

What a run's performance is read against (``baselines``): the *safe optimum* of its game
setting from ``ogm.envs.headroom`` (the best expected hidden performance; none for games
without a stored entry) and its *demonstrators' performance*, the mean hidden performance
of the demonstration dataset it learned from. That dataset is the one its config names, or
that of the run it started from (``pretrained``, ``init``); a recipe is found in the dataset
cache (``$OGM_CACHE_DIR/datasets``) by the recipe stored in each dataset's metadata. Only when
the dataset is not on this machine does the headroom table's level for the recipe's skill
and epsilon stand in, and ``Demonstrators.source`` says which was used.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ogm.envs.headroom import Headroom, headroom
from ogm.train.rundir import RUN_FILE, CsvLog, RunDir

SEED_DIR = re.compile(r"^seed_(\d+)$")
TEXT_COLUMNS = ("phase", "mode")
EXPERIMENT_FILE = "experiment.json"
FIDELITY_FILE = "fidelity.csv"
TRAIN, EVAL = "train", "eval"
GREEDY, SAMPLED = "greedy", "sampled"
MODES = (GREEDY, SAMPLED)
OLD_PHASES = {"online": TRAIN, "offline_eval": EVAL}
START_KEYS = ("pretrained", "init")  # config keys naming the run a run started from
NO_SAFE_OPTIMUM = "no safe optimum stored"
NO_DEMONSTRATORS = "demonstrators' performance unknown"
NO_HEADROOM = "no headroom: the demonstrators are at the safe optimum"

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


# ----------------------------------------------------------------------------- baselines


@dataclass(frozen=True)
class Demonstrators:
    """The demonstrators' mean hidden performance a run is read against, its standard error
    and where it came from (``source``: the measured dataset, or the headroom table)."""

    performance: float
    stderr: float
    source: str


@dataclass(frozen=True)
class Baseline:
    """What a run's final performance is read against: its game setting (``setting``, as
    text), the headroom stored for it (None: no safe optimum stored) and its demonstrators
    (None: unknown)."""

    setting: str
    headroom: Headroom | None
    demonstrators: Demonstrators | None

    def no_gap(self) -> str | None:
        """Why the gap closed is undefined here (None when it is defined)."""
        if self.headroom is None:
            return NO_SAFE_OPTIMUM
        if self.demonstrators is None:
            return NO_DEMONSTRATORS
        if self.headroom.safe_optimum <= self.demonstrators.performance:
            return NO_HEADROOM
        return None

    def gap_closed(self, performance: float) -> float:
        """``(performance - demonstrators) / (safe optimum - demonstrators)``: 0 at the
        demonstrators' level, 1 at the safe optimum, negative below the demonstrators; NaN
        when undefined (``no_gap``)."""
        if self.no_gap() is not None:
            return math.nan
        assert self.headroom is not None and self.demonstrators is not None
        level = self.demonstrators.performance
        return (performance - level) / (self.headroom.safe_optimum - level)


def game_setting(env_id: str, env_kwargs: dict[str, Any]) -> tuple[str, int, dict[str, Any]] | None:
    """The gridworld ``(game, level, options)`` that an env id and its kwargs make (None for
    other environments). A variant may choose its level (conveyor_belt's ``sushi_goal``)."""
    from ogm.envs.env import game_info

    try:
        info = game_info(env_id)
    except ValueError:
        return None
    options = dict(env_kwargs)
    level = options.pop("level", None)
    if level is None:
        level = getattr(info.engine, "variants", {}).get(options.get("variant"), 0)
    return info.name, int(level), options


def setting_text(env_id: str, env_kwargs: dict[str, Any]) -> str:
    """A game setting as text: ``boat_race level 0`` (with its options), or the env id."""
    setting = game_setting(env_id, env_kwargs)
    if setting is None:
        return env_id
    game, level, options = setting
    extra = " ".join(f"{k}={v}" for k, v in sorted(options.items()))
    return f"{game} level {level}" + (f" {extra}" if extra else "")


def headroom_of(env_id: str, env_kwargs: dict[str, Any]) -> Headroom | None:
    """The headroom stored for a game setting; None for other environments and settings."""
    setting = game_setting(env_id, env_kwargs)
    if setting is None:
        return None
    game, level, options = setting
    try:
        return headroom(game, level, **options)
    except ValueError:
        return None


def _run_home(path: Path) -> Path | None:
    """The run directory ``path`` names: itself or, for a checkpoint folder
    (``<run>/checkpoints/step_<n>``), the run holding it."""
    return next((p for p in (path, *path.parents[:2]) if (p / RUN_FILE).is_file()), None)


def dataset_of(run: Run) -> dict[str, Any] | str | None:
    """The demonstration dataset a run names (a recipe table or a path): its own config's,
    else that of the run it started from (``pretrained``, ``init``); None if neither names one."""
    if run.config.get("dataset") is not None:
        return run.config["dataset"]
    for key in START_KEYS:
        start = run.config.get(key)
        home = _run_home(Path(start)) if isinstance(start, str) else None
        if home is not None and (dataset := RunDir.open(home).config.get("dataset")) is not None:
            return dataset
    return None


def locate_dataset(dataset: dict[str, Any] | str) -> Path | None:
    """Where the dataset lies on this machine: a path as given, a recipe in the dataset cache
    (the dataset whose stored recipe is this one, or a collect-rl recipe's folder there);
    None when it is not here."""
    from ogm.data.dataset import METADATA_KEY, DatasetError, dataset_metadata, resolve_dataset
    from ogm.data.recipe import DatasetRecipe, RLDatasetRecipe, recipe_source
    from ogm.train.offline import dataset_cache_dir

    if isinstance(dataset, str):
        try:
            return resolve_dataset(dataset)
        except DatasetError:
            return None
    if recipe_source(dataset) == "collect-rl":
        try:
            path = RLDatasetRecipe.model_validate(dataset).path(dataset_cache_dir())
        except ValueError:
            return None
        return path if (path / "data" / "metadata.json").is_file() else None
    try:
        recipe = DatasetRecipe.model_validate(dataset).model_dump(mode="json")
    except ValueError:
        return None
    cache = dataset_cache_dir()
    for folder in sorted(cache.iterdir()) if cache.is_dir() else ():
        try:
            if dataset_metadata(folder).get(METADATA_KEY, {}).get("recipe") == recipe:
                return folder
        except DatasetError:
            continue
    return None


def measured_demonstrators(dataset: dict[str, Any] | str) -> Demonstrators | None:
    """The mean hidden performance of the dataset's episodes, if the dataset is here."""
    from ogm.data.dataset import DatasetError, load_trajectories

    path = locate_dataset(dataset)
    if path is None:
        return None
    try:
        performance = np.array([t.performance for t in load_trajectories(path)])
    except DatasetError:
        return None
    stderr = (
        float(performance.std(ddof=1) / np.sqrt(performance.size))
        if performance.size > 1
        else math.nan
    )
    source = f"measured: mean of the {performance.size} episodes of the dataset {path}"
    return Demonstrators(float(performance.mean()), stderr, source)


def table_demonstrators(dataset: dict[str, Any] | str) -> Demonstrators | None:
    """The headroom table's level for a recipe (its skills weighted by their episodes),
    or None when the dataset is a path or the table lacks a setting of it."""
    from ogm.data.recipe import DatasetRecipe

    if isinstance(dataset, str):
        return None
    try:
        recipe = DatasetRecipe.model_validate(dataset)
    except ValueError:
        return None
    table = headroom_of(recipe.env_id, recipe.env_kwargs)
    skills = recipe.skills
    stored = [table.demonstrators.get((s, recipe.epsilon)) for s in skills] if table else [None]
    if any(level is None for level in stored):
        return None
    weights = np.array([len(range(k, recipe.episodes, len(skills))) for k in range(len(skills))])
    means, errors = np.array(stored, dtype=np.float64).T
    total = weights.sum()
    skill = "/".join(f"{s:g}" for s in skills)
    source = (
        f"headroom table: demonstrators at skill {skill}, epsilon {recipe.epsilon:g} (the "
        "dataset itself is not on this machine)"
    )
    return Demonstrators(
        float(weights @ means / total), float(np.sqrt(weights**2 @ errors**2) / total), source
    )


def baselines(runs: Sequence[Run]) -> dict[Path, Baseline]:
    """Per run (by path), what its final performance is read against; each dataset is read
    once, however many runs learned from it."""
    levels: dict[str, Demonstrators | None] = {}
    out = {}
    for run in runs:
        env_id = str(run.config.get("env_id", ""))
        env_kwargs = dict(run.config.get("env_kwargs") or {})
        dataset = dataset_of(run)
        demonstrators = None
        if dataset is not None:
            key = json.dumps(dataset, sort_keys=True)
            if key not in levels:
                levels[key] = measured_demonstrators(dataset) or table_demonstrators(dataset)
            demonstrators = levels[key]
        out[run.path] = Baseline(
            setting_text(env_id, env_kwargs), headroom_of(env_id, env_kwargs), demonstrators
        )
    return out
