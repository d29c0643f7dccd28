"""ogm.data: trajectories, Minari datasets and the scripted safe demonstrators."""

from ogm.data.dataset import (
    DatasetError,
    build_dataset,
    collect_dataset,
    dataset_metadata,
    load_trajectories,
    summarize,
    write_dataset,
)
from ogm.data.demonstrators import collect, make_demonstrator
from ogm.data.recipe import DatasetRecipe, RLDatasetRecipe
from ogm.data.trajectory import Trajectory

__all__ = [
    "DatasetError",
    "DatasetRecipe",
    "RLDatasetRecipe",
    "Trajectory",
    "build_dataset",
    "collect",
    "collect_dataset",
    "dataset_metadata",
    "load_trajectories",
    "make_demonstrator",
    "summarize",
    "write_dataset",
]
