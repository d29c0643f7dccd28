"""What every study shares: fitting a Decision Transformer in memory, and the study's run
directory (``run.json`` with a summary, result tables as CSV; no checkpoints, no pickle).

A study computes for a few minutes at most, so it does not checkpoint: a run directory
that is not ``done`` is computed again from the start (same seed, same numbers).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import gymnasium as gym
import numpy as np
import torch
from pydantic import BaseModel, BeforeValidator, Field

from ogm.data.trajectory import Trajectory
from ogm.models.decision_transformer import DecisionTransformer
from ogm.train.config import CommonConfig
from ogm.train.offline import OfflineConfig, build_model, offline_step, optimizer_for
from ogm.train.online import OfflineSection
from ogm.train.rundir import CsvLog, RunDir

Row = dict[str, Any]


def dt_section(defaults: dict[str, Any]) -> Any:
    """The type of a study's ``dt`` field: ``OfflineConfig``'s model and training fields
    (``OfflineSection``), where the study's ``defaults`` fill every field a config leaves
    out (also when a config sets only some, e.g. ``dt.updates`` from ``--set``)."""

    def merge(value: Any) -> Any:
        return {**defaults, **value} if isinstance(value, dict) else value

    return Annotated[
        OfflineSection,
        BeforeValidator(merge),
        Field(default_factory=lambda: OfflineSection(**defaults)),
    ]


def offline_config(config: CommonConfig, dt: BaseModel, **changes: Any) -> OfflineConfig:
    """The ``OfflineConfig`` of a study's Decision Transformer (``dt`` section + changes)."""
    common = {name: getattr(config, name) for name in CommonConfig.model_fields}
    return OfflineConfig(**{**common, **dt.model_dump(), **changes})


def fit_dt(
    config: OfflineConfig, trajectories: Sequence[Trajectory], action_space: gym.Space
) -> DecisionTransformer:
    """A Decision Transformer trained on ``trajectories`` as the GM agent is
    (``ogm.train.offline``: same model, loss, optimiser and segment sampling), in memory."""
    from ogm.train.segments import TrajectoryPool

    torch.manual_seed(config.seed)
    model = build_model(config, trajectories, action_space)
    optimizer, scheduler = optimizer_for(model, config)
    pool, rng = TrajectoryPool(trajectories), np.random.default_rng(config.seed)
    for _ in range(config.updates):
        offline_step(config, model, pool, rng, optimizer, scheduler)
    return model.eval()


def write_table(path: Path, rows: Sequence[Row]) -> None:
    """Write ``rows`` as a CSV file (replacing it)."""
    path.unlink(missing_ok=True)
    CsvLog(path).extend(rows)


@contextlib.contextmanager
def study_run(run_dir: Path, kind: str, config: CommonConfig) -> Iterator[RunDir]:
    """The study's run directory; ``done`` (with ``wall_time_s``) when the block ends,
    ``failed`` with the error when it raises."""
    run = RunDir.open_or_create(run_dir, kind=kind, config=config, seed=config.seed)
    tick = time.perf_counter()
    try:
        yield run
    except BaseException as err:
        run.set_status("failed", error=f"{type(err).__name__}: {err}")
        raise
    run.set_status("done", wall_time_s=round(time.perf_counter() - tick, 1))
