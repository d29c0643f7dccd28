"""How to make a demonstration dataset: the part of a config that names the data."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from ogm.limits import MAX_EPISODES, STRICT

Skill = Annotated[float, Field(ge=0.0, le=1.0)]


class DatasetRecipe(BaseModel):
    """A demonstration dataset described by how it is collected.

    ``epsilon`` is the trembling hand (probability of a slip: a uniformly random action
    among those that are safe now, see ``ogm.data.demonstrators``) and ``skill`` in
    [0, 1] how directly the scripted demonstrator does the task. A list of
    skills is a population of demonstrators: episode ``i`` is demonstrated at
    ``skill[i % len(skill)]``, so the returns spread with what the demonstrators did, which
    return conditioning needs (with one skill, returns may differ only by luck).
    """

    model_config = ConfigDict(**STRICT, frozen=True)

    env_id: str
    env_kwargs: dict[str, Any] = Field(default_factory=dict)
    episodes: int = Field(200, gt=0, le=MAX_EPISODES)
    epsilon: float = Field(0.05, ge=0.0, le=1.0)
    skill: Skill | Annotated[list[Skill], Field(min_length=1, max_length=100)] = 1.0
    seed: int = Field(0, ge=0, lt=2**32)

    @field_validator("env_id")
    @classmethod
    def _demonstrated(cls, env_id: str) -> str:
        from ogm.data.demonstrators import demonstrated_env_ids

        ids = demonstrated_env_ids()
        if env_id not in ids:
            raise ValueError(
                f"no demonstrator collects {env_id!r}; envs with one: {', '.join(ids)}"
            )
        return env_id

    @field_validator("env_kwargs")
    @classmethod
    def _known_options(cls, env_kwargs: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        from ogm.envs import check_env

        if "env_id" in info.data:
            check_env(info.data["env_id"], env_kwargs)
        return env_kwargs

    @property
    def skills(self) -> list[float]:
        """The skill of each demonstrator in the population (one for a single skill)."""
        return [float(s) for s in self.skill] if isinstance(self.skill, list) else [self.skill]

    def digest(self) -> str:
        """A short stable hash of the recipe, used to cache the collected dataset."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]
