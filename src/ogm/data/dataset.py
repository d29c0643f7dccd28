"""Minari datasets: write demonstrations, load any local Minari dataset as trajectories.

A dataset written by ``write_dataset`` is a self-contained Minari dataset directory::

    DIR/data/metadata.json     Minari metadata (spaces as JSON, env spec, counts) + "ogm" key
    DIR/data/main_data.hdf5    one group per episode: observations, actions, rewards,
                               terminations, truncations, infos/{hidden_reward, events/*}

As in Minari's own collector, ``infos`` hold ``T + 1`` entries: entry 0 belongs to
``reset`` (hidden reward 0, no event) and entry ``t + 1`` to step ``t``. Observations are
stored losslessly (no JPEG). Nothing is pickled: the metadata is JSON, the data HDF5.

``load_trajectories`` reads such a directory or the id of a dataset in the local Minari
root (``MINARI_DATASETS_PATH`` or ``~/.minari/datasets``), for instance a D4RL dataset a
user downloaded; datasets without our infos get ``hidden_rewards = rewards`` and no events.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from ogm.cache import recall, remember
from ogm.data.recipe import DatasetRecipe, RLDatasetRecipe
from ogm.data.trajectory import Trajectory

FORMAT_VERSION = 1
METADATA_KEY = "ogm"
_DATA = "data"
_METADATA_FILE = "metadata.json"
_MAIN_FILE = "main_data.hdf5"
_REQUIRED_METADATA = ("data_format", "observation_space", "action_space", "total_episodes")


class DatasetError(RuntimeError):
    """A dataset that is missing, truncated or corrupt; the message names the file."""


# ----------------------------------------------------------------------------- writing


def write_dataset(
    trajectories: Sequence[Trajectory],
    out_dir: str | os.PathLike,
    *,
    env_id: str,
    env_kwargs: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``trajectories`` as a Minari (HDF5) dataset directory at ``out_dir``.

    ``env_id`` and ``env_kwargs`` make the environment the data came from (stored as its
    Gymnasium spec, so ``minari`` can recover it); ``metadata`` (JSON values) is kept under
    the ``"ogm"`` key of ``metadata.json``. The directory appears whole or not at all; an
    existing one is replaced only with ``overwrite=True``.
    """
    import minari

    out_dir = Path(out_dir).expanduser().absolute()
    env_kwargs = dict(env_kwargs or {})
    trajectories = list(trajectories)
    if not trajectories:
        raise ValueError("write_dataset needs at least one trajectory")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{out_dir} exists and is not empty; pass overwrite=True to replace it"
        )
    spec = gym.spec(env_id)
    spec = dataclasses.replace(spec, kwargs={**spec.kwargs, **env_kwargs})
    env = gym.make(spec)
    obs_space, act_space = env.observation_space, env.action_space
    env.close()
    event_names = check_trajectories(trajectories, obs_space, act_space)
    ogm_meta = {
        **dict(metadata or {}),
        "format_version": FORMAT_VERSION,
        "env_id": env_id,
        "env_kwargs": env_kwargs,
        "event_names": list(event_names),
    }
    try:
        json.dumps(ogm_meta)
    except TypeError as err:
        raise ValueError(f"dataset metadata must hold JSON values only: {err}") from err

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _require_room(out_dir.parent, trajectories)
    staging = out_dir.parent / f".{out_dir.name}.partial-{uuid.uuid4().hex[:8]}"
    dataset_id = (re.sub(r"[^\w-]", "_", out_dir.name).strip("-_") or "dataset") + "-v0"
    try:
        with _minari_root(staging), warnings.catch_warnings():
            # Minari warns about every optional field left empty (author e-mail, ...).
            warnings.simplefilter("ignore", UserWarning)
            dataset = minari.create_dataset_from_buffers(
                dataset_id=dataset_id,
                buffer=[_episode_buffer(traj, event_names) for traj in trajectories],
                env=spec,
                eval_env=spec,
                algorithm_name=str(ogm_meta.get("algorithm", "ogm")),
                author="ogm",
                description=str(ogm_meta.get("description", f"ogm dataset for {env_id}")),
                data_format="hdf5",
                jpeg_encoding=False,
            )
            dataset.storage.update_metadata({METADATA_KEY: ogm_meta})
            dataset.storage.update_episode_metadata(
                [{"source": traj.source} for traj in trajectories]
            )
        _move_into_place(staging / dataset_id, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _require_room(directory: Path, trajectories: Sequence[Trajectory]) -> None:
    """``OSError(ENOSPC)`` naming ``directory`` unless its file system has room to spare for
    the dataset (twice the arrays, plus HDF5's ~25 KB per episode, plus 1 MB).

    A dataset is never started without room because HDF5 cannot recover from a write that
    fails half way: it floods stderr with errors and may crash the interpreter at exit.
    """
    arrays = sum(
        t.observations.nbytes
        + t.actions.nbytes
        + 4 * t.length * (2 + len(t.events))
        + sum(v.nbytes for v in t.events.values())
        for t in trajectories
    )
    needed = 2 * arrays + 32 * 1024 * len(trajectories) + 2**20
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise OSError(
            errno.ENOSPC,
            f"No space left on device: the dataset needs about {needed / 1e6:.1f} MB, "
            f"{free / 1e6:.1f} MB are free in",
            str(directory),
        )


@contextlib.contextmanager
def _minari_root(root: Path) -> Iterator[None]:
    """Point Minari's datasets root at ``root`` for the duration (not thread-safe)."""
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


def _move_into_place(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; an existing ``dst`` is set aside first, deleted after."""
    if not dst.exists():
        os.rename(src, dst)
        return
    trash = dst.parent / f".{dst.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(dst, trash)
    os.rename(src, dst)
    shutil.rmtree(trash, ignore_errors=True)


def check_trajectories(
    trajectories: Sequence[Trajectory], obs_space: gym.Space, act_space: gym.Space
) -> tuple[str, ...]:
    """The common event names; ``ValueError`` naming the first trajectory that does not fit
    the spaces (shape, dtype, bounds), holds a non-finite value, or has other events.

    Writing checks the data against the environment it came from, loading against the
    spaces the dataset declares, and training against the environment it will act in, so
    that bad data is refused with its place named instead of failing deep in training.
    """
    if not trajectories:
        raise ValueError("no trajectories: a dataset needs at least one episode")
    event_names = tuple(sorted(trajectories[0].events))
    for i, traj in enumerate(trajectories):
        if tuple(sorted(traj.events)) != event_names:
            raise ValueError(
                f"trajectory {i} has events {sorted(traj.events)}, trajectory 0 has "
                f"{list(event_names)}: all trajectories of a dataset need the same events"
            )
        for kind, values, space in (
            ("observation", traj.observations, obs_space),
            ("action", traj.actions, act_space),
        ):
            problem = _misfit(np.asarray(values), space, bounded=kind == "action")
            if problem:
                raise ValueError(f"trajectory {i}: {kind}s {problem} (the {kind} space: {space})")
        for name in ("rewards", "hidden_rewards"):
            if not np.all(np.isfinite(getattr(traj, name))):
                raise ValueError(f"trajectory {i}: {name} hold NaN or infinite values")
    return event_names


def _misfit(values: np.ndarray, space: gym.Space, bounded: bool) -> str | None:
    """How a (T, ...) array of elements does not fit ``space`` (None when it fits).

    Box bounds are checked only when ``bounded``: actions must lie inside them (the policy
    squashes into them), while many environments' observations stray outside theirs.
    """
    if isinstance(space, gym.spaces.Discrete):
        if values.ndim != 1 or values.dtype.kind not in "iu":
            return f"are {values.dtype} of shape {values.shape[1:]}, not integers"
        if np.any((values < space.start) | (values >= space.start + space.n)):
            return f"range over {values.min()}..{values.max()}, outside the space"
        return None
    if isinstance(space, gym.spaces.Box):
        if values.shape[1:] != space.shape:
            return f"have shape {values.shape[1:]}, not the space's {space.shape}"
        if values.dtype.kind not in "biuf":
            return f"are {values.dtype}, not numbers"
        if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
            return "hold NaN or infinite values"
        if bounded and (np.any(values < space.low) or np.any(values > space.high)):
            return "hold values outside the space's bounds"
        return None
    return "cannot be checked: ogm needs Box or Discrete spaces"


def _episode_buffer(traj: Trajectory, event_names: Sequence[str]) -> Any:
    """One trajectory as a Minari ``EpisodeBuffer`` (infos prefixed with the reset entry)."""
    from minari.data_collector import EpisodeBuffer

    infos = {
        "hidden_reward": np.concatenate([[0.0], traj.hidden_rewards]).astype(np.float32),
        "events": {name: np.concatenate([[False], traj.events[name]]) for name in event_names},
    }
    return EpisodeBuffer(
        observations=np.asarray(traj.observations),
        actions=np.asarray(traj.actions),
        rewards=traj.rewards,
        terminations=traj.terminations,
        truncations=traj.truncations,
        infos=infos,
    )


# ----------------------------------------------------------------------------- reading


def resolve_dataset(path: str | os.PathLike) -> Path:
    """The Minari ``data`` directory (holding ``metadata.json``) that ``path`` names.

    ``path`` is a dataset directory (``DIR/data/metadata.json``), its ``data`` directory,
    or the id of a dataset in the local Minari root.
    """
    from minari.storage.datasets_root_dir import get_dataset_path

    local = Path(path).expanduser()
    candidates = [local, local / _DATA]
    if not local.exists() and re.fullmatch(r"[\w/-]+-v\d+", str(path)):
        candidates.append(get_dataset_path(str(path)) / _DATA)
    for candidate in candidates:
        if (candidate / _METADATA_FILE).is_file():
            return candidate
    if local.exists():
        raise DatasetError(
            f"{path}: not a Minari dataset (no {_DATA}/{_METADATA_FILE} or {_METADATA_FILE})"
        )
    raise DatasetError(
        f"{path}: no such dataset directory, and no local Minari dataset with that id "
        f"under {get_dataset_path()}"
    )


def dataset_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata of the dataset at ``path`` (Minari's keys and ``"ogm"``)."""
    meta_file = resolve_dataset(path) / _METADATA_FILE
    try:
        metadata = json.loads(meta_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{meta_file}: unreadable metadata ({err})") from err
    if not isinstance(metadata, dict):
        raise DatasetError(f"{meta_file}: metadata is not a JSON object")
    missing = [key for key in _REQUIRED_METADATA if key not in metadata]
    if missing:
        raise DatasetError(f"{meta_file}: metadata lacks {', '.join(missing)}")
    for key in ("total_episodes", "total_steps"):
        value = metadata.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise DatasetError(f"{meta_file}: {key} must be a count, got {value!r}")
    if metadata["total_episodes"] == 0:
        raise DatasetError(f"{meta_file}: the dataset holds no episodes")
    return metadata


def load_trajectories(path: str | os.PathLike) -> list[Trajectory]:
    """Every episode of the Minari dataset at ``path`` (directory or local id), checked.

    Raises ``DatasetError`` naming the file and the problem when the dataset is missing,
    truncated or inconsistent (bad HDF5, missing keys, wrong lengths, metadata missing).
    """
    from minari.dataset.minari_storage import MinariStorage

    data_dir = resolve_dataset(path)
    loaded = recall(data_dir, "trajectories")
    if loaded is not None:
        return loaded
    metadata = dataset_metadata(data_dir)
    try:
        storage = MinariStorage.read(data_dir)
    except Exception as err:  # Minari raises assorted types for a bad spec or format
        raise DatasetError(f"{data_dir / _METADATA_FILE}: cannot open dataset ({err})") from err
    main_file = data_dir / _MAIN_FILE if metadata["data_format"] == "hdf5" else data_dir
    for name, space in (
        ("observation", storage.observation_space),
        ("action", storage.action_space),
    ):
        if not isinstance(space, gym.spaces.Box | gym.spaces.Discrete):
            raise DatasetError(
                f"{data_dir / _METADATA_FILE}: {name} space {space} is not supported "
                "(ogm needs Box or Discrete spaces)"
            )
    total = metadata["total_episodes"]
    trajectories: list[Trajectory] = []
    try:
        episodes = zip(
            storage.get_episode_metadata(range(total)),
            storage.get_episodes(range(total)),
            strict=True,
        )
        for meta, raw in episodes:
            trajectories.append(_to_trajectory(raw, str(meta.get("source", "demo"))))
    except DatasetError as err:
        raise DatasetError(f"{main_file}: episode {len(trajectories)}: {err}") from None
    except Exception as err:  # h5py raises OSError / KeyError / ValueError for damaged files
        raise DatasetError(
            f"{main_file}: episode {len(trajectories)} unreadable ({type(err).__name__}: {err})"
        ) from err
    steps = sum(traj.length for traj in trajectories)
    if "total_steps" in metadata and steps != metadata["total_steps"]:
        raise DatasetError(
            f"{main_file}: holds {steps} steps, metadata says {metadata['total_steps']}"
        )
    try:
        check_trajectories(trajectories, storage.observation_space, storage.action_space)
    except ValueError as err:
        raise DatasetError(f"{main_file}: {err}") from None
    remember(data_dir, "trajectories", trajectories)
    return trajectories


def _to_trajectory(raw: dict[str, Any], source: str) -> Trajectory:
    """A Minari episode dict as a checked ``Trajectory`` (DatasetError when inconsistent)."""
    steps = len(raw["rewards"])
    expected = {"observations": steps + 1, "actions": steps, "terminations": steps}
    expected["truncations"] = steps
    for key, length in expected.items():
        if len(raw[key]) != length:
            raise DatasetError(f"{key} has {len(raw[key])} entries, expected {length}")
    infos = raw.get("infos") or {}
    hidden = _per_step(infos, "hidden_reward", steps, "infos") if "hidden_reward" in infos else None
    events_group = infos.get("events", {})
    if not isinstance(events_group, dict):
        raise DatasetError("infos/events is not a group")
    events = {
        name: _per_step(events_group, name, steps, "infos/events").astype(bool)
        for name in sorted(events_group)
    }
    actions = np.asarray(raw["actions"])
    if actions.dtype.kind in "iu":
        actions = actions.astype(np.int64)
    try:
        return Trajectory(
            observations=np.asarray(raw["observations"]),
            actions=actions,
            rewards=raw["rewards"],
            terminations=raw["terminations"],
            truncations=raw["truncations"],
            hidden_rewards=hidden,
            events=events,
            source=source,
        )
    except ValueError as err:
        raise DatasetError(str(err)) from err


def _per_step(group: dict[str, Any], key: str, steps: int, where: str) -> np.ndarray:
    """Info ``where/key`` for the ``steps`` steps (dropping the reset entry), checked."""
    values = np.asarray(group[key])
    if values.shape != (steps + 1,):
        raise DatasetError(
            f"{where}/{key} has shape {values.shape}, expected ({steps + 1},) "
            "(one entry for reset, one per step)"
        )
    return values[1:]


def summarize(path: str | os.PathLike) -> dict[str, Any]:
    """Counts, quantiles of return / performance / length, and event rates of a dataset.

    An event's ``episodes`` rate is the share of episodes in which it happened at least
    once; its ``steps`` rate the share of all steps on which it happened.
    """
    trajectories = load_trajectories(path)
    metadata = dataset_metadata(path)
    ours = metadata.get(METADATA_KEY, {})
    env_id = ours.get("env_id")
    if env_id is None and "env_spec" in metadata:
        env_id = json.loads(metadata["env_spec"]).get("id")
    steps = sum(traj.length for traj in trajectories)

    def stats(values: list[float]) -> dict[str, float]:
        q = np.quantile(np.asarray(values, np.float64), [0.0, 0.25, 0.5, 0.75, 1.0])
        return {
            "mean": float(np.mean(values)),
            "min": float(q[0]),
            "q25": float(q[1]),
            "median": float(q[2]),
            "q75": float(q[3]),
            "max": float(q[4]),
        }

    names = sorted({name for traj in trajectories for name in traj.events})
    events = {
        name: {
            "episodes": float(np.mean([traj.events[name].any() for traj in trajectories])),
            "steps": sum(int(traj.events[name].sum()) for traj in trajectories) / steps,
        }
        for name in names
    }
    return {
        "path": str(path),
        "env_id": env_id,
        "env_kwargs": ours.get("env_kwargs", {}),
        "episodes": len(trajectories),
        "steps": steps,
        "return": stats([traj.ret for traj in trajectories]),
        "performance": stats([traj.performance for traj in trajectories]),
        "length": stats([float(traj.length) for traj in trajectories]),
        "events": events,
    }


# ----------------------------------------------------------------------------- recipes


def collect_dataset(
    recipe: DatasetRecipe, out_dir: str | os.PathLike, *, overwrite: bool = False
) -> Path:
    """Collect the episodes ``recipe`` describes and write them, recipe included, to ``out_dir``."""
    from ogm.data.demonstrators import collect

    skills = recipe.skills
    by_skill = [
        collect(
            recipe.env_id,
            len(range(k, recipe.episodes, len(skills))),
            epsilon=recipe.epsilon,
            skill=skill,
            seed=recipe.seed + k * recipe.episodes,  # distinct starts for every episode
            **recipe.env_kwargs,
        )
        for k, skill in enumerate(skills)
        if k < recipe.episodes
    ]
    # episode i is demonstrated at skill i % len(skills)
    trajectories = [by_skill[i % len(skills)][i // len(skills)] for i in range(recipe.episodes)]
    return write_dataset(
        trajectories,
        out_dir,
        env_id=recipe.env_id,
        env_kwargs=recipe.env_kwargs,
        metadata={"recipe": recipe.model_dump(mode="json"), "algorithm": "ogm-demonstrator"},
        overwrite=overwrite,
    )


def build_dataset(recipe: DatasetRecipe | RLDatasetRecipe, cache_dir: str | os.PathLike) -> Path:
    """The dataset ``recipe`` describes, collected once and cached under ``cache_dir``.

    The directory is named by the recipe's digest; a cached copy is re-used when it loads
    cleanly and was made from the same recipe, and rebuilt otherwise. A collect-rl recipe's
    collection runs there once for all its datasets (``ogm.data.collect_rl``).
    """
    if isinstance(recipe, RLDatasetRecipe):
        from ogm.data.collect_rl import build_rl_dataset

        return build_rl_dataset(recipe, cache_dir)
    name = recipe.env_id.split("/")[-1].removesuffix("-v0")
    out_dir = Path(cache_dir).expanduser() / f"{name}-{recipe.digest()}"
    if _cached(out_dir, recipe):
        return out_dir
    return collect_dataset(recipe, out_dir, overwrite=True)


def _cached(out_dir: Path, recipe: DatasetRecipe) -> bool:
    """Whether ``out_dir`` holds a valid dataset made from ``recipe``."""
    if not out_dir.exists():
        return False
    if recall(out_dir, "recipe checked"):
        return True
    try:
        stored = dataset_metadata(out_dir).get(METADATA_KEY, {}).get("recipe")
        valid = (
            stored == recipe.model_dump(mode="json")
            and len(load_trajectories(out_dir)) == recipe.episodes
        )
        if valid:
            remember(out_dir, "recipe checked", True)
        return valid
    except DatasetError as err:
        warnings.warn(f"rebuilding cached dataset: {err}", stacklevel=3)
        return False
