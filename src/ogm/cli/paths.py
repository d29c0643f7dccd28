"""Paths in configs made absolute, so that a run continues from any working directory."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import BaseModel

PATH_FIELDS = ("dataset", "pretrained", "init")  # config fields that may name a file or folder


def resolved(config: BaseModel) -> BaseModel:
    """``config`` with every relative path in ``PATH_FIELDS`` that exists here made absolute
    (a value that names no file, such as a Minari dataset id, is left as it is)."""
    updates = {}
    for name in PATH_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, str) and not Path(value).is_absolute() and Path(value).exists():
            updates[name] = str(Path(value).resolve())
    return config.model_copy(update=updates) if updates else config
