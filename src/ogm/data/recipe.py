"""How to make a demonstration dataset: the part of a config that names the data.

Two kinds of recipe, told apart by ``source``: without it, a :class:`DatasetRecipe` (the
scripted demonstrators of ogm's gridworlds); with ``source = "collect-rl"``, an
:class:`RLDatasetRecipe` (one of the D4RL-style datasets that ``ogm data collect-rl`` records
from a Stable-Baselines3 agent's training, for any Gymnasium environment). :data:`Recipe`
is the union a config's ``dataset`` takes.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ogm.limits import MAX_EPISODES, MAX_EVAL_EPISODES, MAX_ROUNDS, MAX_STEPS, STRICT

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


# The datasets one collect-rl run records (ogm.data.collect_rl)
QUALITIES = ("random", "medium", "medium-replay", "expert")
Quality = Literal["random", "medium", "medium-replay", "expert"]


def dataset_base_name(env_id: str, env_kwargs: dict[str, Any]) -> str:
    """D4RL's name stem: ``Hopper-v5`` -> ``hopper``, ``ALE/Breakout-v5`` -> ``breakout``
    (an Atari game is named by the ``game`` option of ogm's preprocessed Atari env)."""
    name = str(env_kwargs.get("game", env_id))
    return re.sub(r"-v\d+$", "", name.split("/")[-1]).lower()


def _digest(values: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]


class RLDatasetRecipe(BaseModel):
    """One of the D4RL-style datasets of an ``ogm data collect-rl`` run, described by the run.

    ``quality`` picks the dataset (``random``, ``medium``, ``medium-replay``, ``expert``:
    ``ogm.data.collect_rl`` says how each is made); the other fields are the collection's
    (:class:`ogm.data.collect_rl.CollectRLConfig`), so that the datasets of one run, say
    ``medium`` and ``medium-replay``, share one training of the SB3 agent. The run lies in
    the dataset cache, named by :meth:`collection_digest`, and resumes there when killed.
    """

    model_config = ConfigDict(**STRICT, frozen=True)

    source: Literal["collect-rl"]
    env_id: str
    env_kwargs: dict[str, Any] = Field(default_factory=dict)
    quality: Quality = "medium"
    # auto: SAC for continuous actions, DQN for image observations, PPO otherwise
    algo: Literal["auto", "ppo", "dqn", "sac"] = "auto"
    total_timesteps: int = Field(gt=0, le=MAX_STEPS)
    snapshots: int = Field(10, gt=0, le=MAX_ROUNDS)
    episodes: int = Field(100, gt=0, le=MAX_EPISODES)
    eval_episodes: int = Field(10, gt=0, le=MAX_EVAL_EPISODES)
    net_arch: list[int] | None = None  # None: collect-rl's default (SAC's 256 x 256)
    hyperparams: dict[str, Any] = Field(default_factory=dict)
    seed: int = Field(0, ge=0, lt=2**32)

    def collect_config(self) -> dict[str, Any]:
        """The values of the collection's ``CollectRLConfig`` (all but ``source``, ``quality``)."""
        values = self.model_dump(mode="json", exclude={"source", "quality"})
        if values["net_arch"] is None:
            del values["net_arch"]
        return {**values, "device": "auto"}

    @model_validator(mode="after")
    def _valid_collection(self) -> RLDatasetRecipe:
        from ogm.data.collect_rl import CollectRLConfig

        CollectRLConfig.model_validate(self.collect_config())
        return self

    def collection_digest(self) -> str:
        """A short stable hash of the collection (the recipe less its ``quality``)."""
        return _digest(self.model_dump(mode="json", exclude={"quality"}))

    def collection_dir(self, cache_dir: str | Path) -> Path:
        """The collect-rl run directory of this recipe's collection in the dataset cache."""
        name = dataset_base_name(self.env_id, self.env_kwargs)
        return Path(cache_dir).expanduser() / f"collect-rl-{name}-{self.collection_digest()}"

    def path(self, cache_dir: str | Path) -> Path:
        """Where the dataset lies once its collection has run."""
        return self.collection_dir(cache_dir) / "datasets" / self.quality


def recipe_source(value: Any) -> str | None:
    """Which kind a ``dataset`` value is: ``"path"`` for a string (a dataset directory or
    Minari id), ``"collect-rl"`` for ``source = "collect-rl"``, ``"demonstrators"`` without a
    ``source``; None (an error) for another source."""
    if isinstance(value, str):
        return "path"
    source = value.get("source") if isinstance(value, dict) else getattr(value, "source", None)
    if source is None:
        return "demonstrators"
    return "collect-rl" if source == "collect-rl" else None


def recipe_union(demonstrators: type[BaseModel], rl: type[BaseModel], path: bool = False) -> Any:
    """The union of a scripted-demonstrator model and a collect-rl one (and a path string
    when ``path``), told apart by :func:`recipe_source`: errors are those of the kind meant,
    at ``dataset.<kind>.<field>``."""
    kinds = Annotated[demonstrators, Tag("demonstrators")] | Annotated[rl, Tag("collect-rl")]
    if path:
        kinds = kinds | Annotated[str, Tag("path")]
    return Annotated[
        kinds,
        Discriminator(
            recipe_source,
            custom_error_type="dataset_source",
            custom_error_message=(
                "source must be 'collect-rl' (a dataset recorded from an SB3 agent's "
                "training) or left out (the scripted demonstrators)"
            ),
        ),
    ]


# A config's ``dataset``: a dataset path, scripted demonstrators or a collect-rl dataset
Recipe = recipe_union(DatasetRecipe, RLDatasetRecipe)
DatasetSource = recipe_union(DatasetRecipe, RLDatasetRecipe, path=True)
