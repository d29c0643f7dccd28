"""How to make a demonstration dataset: the part of a config that names the data."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class DatasetRecipe(BaseModel):
    """A demonstration dataset described by how it is collected.

    ``epsilon`` is the trembling hand (probability of a uniformly random action) and
    ``skill`` in [0, 1] how directly the scripted demonstrator does the task.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    env_id: str
    env_kwargs: dict[str, Any] = Field(default_factory=dict)
    episodes: int = Field(200, gt=0)
    epsilon: float = Field(0.05, ge=0.0, le=1.0)
    skill: float = Field(1.0, ge=0.0, le=1.0)
    seed: int = 0

    def digest(self) -> str:
        """A short stable hash of the recipe, used to cache the collected dataset."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]
