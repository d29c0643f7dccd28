"""Minari datasets: exact round trip, standard layout, local ids, and clear errors."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import gymnasium as gym
import h5py
import minari
import numpy as np
import pytest
from minari.data_collector import EpisodeBuffer

from ogm.data import DatasetError, Trajectory, dataset_metadata, load_trajectories, write_dataset
from ogm.data.demonstrators import record_episode

ENV_ID = "CartPole-v1"  # any registered env works; the gridworlds are covered in test_data_collect


def _trajectories(n: int = 4, seed: int = 0) -> list[Trajectory]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        steps = int(rng.integers(1, 30))
        out.append(
            Trajectory(
                observations=rng.normal(size=(steps + 1, 4)).astype(np.float32),
                actions=rng.integers(0, 2, size=steps),
                rewards=rng.normal(size=steps),
                terminations=np.arange(steps) == steps - 1,
                truncations=np.zeros(steps, bool),
                hidden_rewards=rng.normal(size=steps),
                events={"spill": rng.random(steps) < 0.3, "tamper": rng.random(steps) < 0.1},
                source="online" if i % 2 else "demo",
            )
        )
    return out


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, list[Trajectory]]:
    trajs = _trajectories()
    out = write_dataset(
        trajs, tmp_path / "ds", env_id=ENV_ID, env_kwargs={}, metadata={"note": "test"}
    )
    return out, trajs


def test_round_trip_is_exact(written):
    path, trajs = written
    loaded = load_trajectories(path)
    assert len(loaded) == len(trajs)
    for a, b in zip(trajs, loaded, strict=True):
        for key in ("observations", "actions", "rewards", "hidden_rewards"):
            np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
            assert getattr(a, key).dtype == getattr(b, key).dtype, key
        np.testing.assert_array_equal(a.terminations, b.terminations)
        np.testing.assert_array_equal(a.truncations, b.truncations)
        assert a.events.keys() == b.events.keys()
        for name in a.events:
            np.testing.assert_array_equal(a.events[name], b.events[name])
        assert a.source == b.source
    # The data directory itself is accepted too.
    assert len(load_trajectories(path / "data")) == len(trajs)


def test_relative_output_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trajs = _trajectories(2)
    write_dataset(trajs, "relative", env_id=ENV_ID)
    loaded = load_trajectories("relative")
    np.testing.assert_array_equal(loaded[1].observations, trajs[1].observations)


def test_standard_minari_layout_and_metadata(written):
    path, trajs = written
    meta = dataset_metadata(path)
    assert meta["total_episodes"] == len(trajs)
    assert meta["total_steps"] == sum(t.length for t in trajs)
    assert meta["ogm"]["env_id"] == ENV_ID
    assert meta["ogm"]["event_names"] == ["spill", "tamper"]
    assert meta["ogm"]["note"] == "test"
    # Minari itself reads it, including the per-step infos (reset entry first).
    dataset = minari.MinariDataset(path / "data")
    assert dataset.total_episodes == len(trajs)
    episode = next(iter(dataset.iterate_episodes([1])))
    np.testing.assert_array_equal(episode.infos["hidden_reward"][1:], trajs[1].hidden_rewards)
    assert episode.infos["hidden_reward"][0] == 0.0
    assert dataset.recover_environment().spec.id == ENV_ID
    # No pickled objects anywhere in the HDF5 file.
    kinds = []
    with h5py.File(path / "data" / "main_data.hdf5", "r") as f:
        f.visititems(
            lambda _, obj: kinds.append(obj.dtype.kind) if isinstance(obj, h5py.Dataset) else None
        )
    assert kinds and "O" not in kinds


def test_refuses_to_overwrite_and_replaces_on_request(written):
    path, trajs = written
    with pytest.raises(FileExistsError, match="overwrite"):
        write_dataset(trajs[:1], path, env_id=ENV_ID)
    assert len(load_trajectories(path)) == len(trajs)  # untouched
    write_dataset(trajs[:2], path, env_id=ENV_ID, overwrite=True)
    assert len(load_trajectories(path)) == 2
    assert sorted(p.name for p in path.parent.iterdir()) == ["ds"]  # no leftovers


def test_write_rejects_inconsistent_trajectories(tmp_path):
    trajs = _trajectories(2)
    trajs[1].events.pop("tamper")
    with pytest.raises(ValueError, match="same events"):
        write_dataset(trajs, tmp_path / "a", env_id=ENV_ID)
    step = {
        "observations": np.zeros((2, 4), np.float32),
        "actions": np.array([0]),
        "rewards": np.zeros(1),
        "terminations": [True],
        "truncations": [False],
    }
    for field, value, message in (
        ("observations", np.zeros((2, 5), np.float32), "observations have shape"),
        ("observations", np.full((2, 4), np.nan, np.float32), "observations hold NaN"),
        ("actions", np.array([0.5]), "actions are float64 of shape (), not integers"),
        ("actions", np.array([2]), "actions range over 2..2, outside the space"),
        ("rewards", np.array([np.inf]), "rewards hold NaN or infinite values"),
    ):
        with pytest.raises(ValueError, match=re.escape(message)):
            write_dataset([Trajectory(**{**step, field: value})], tmp_path / "b", env_id=ENV_ID)
    with pytest.raises(ValueError, match="at least one"):
        write_dataset([], tmp_path / "b", env_id=ENV_ID)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_no_dataset_is_started_without_room_for_it(tmp_path, monkeypatch):
    """HDF5 cannot recover from a write that fails half way, so none is begun."""
    usage = type("Usage", (), {"free": 10_000})()
    monkeypatch.setattr("ogm.data.dataset.shutil.disk_usage", lambda path: usage)
    with pytest.raises(OSError, match=r"No space left on device: the dataset needs about"):
        write_dataset(_trajectories(2), tmp_path / "ds", env_id=ENV_ID)
    assert list(tmp_path.iterdir()) == []


def test_loads_a_local_minari_id_without_infos(tmp_path, monkeypatch):
    """A D4RL-style dataset: no hidden reward or events, loaded by its id."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    rng = np.random.default_rng(1)
    buffers = [
        EpisodeBuffer(
            observations=rng.normal(size=(6, 4)).astype(np.float32),
            actions=rng.integers(0, 2, 5),
            rewards=np.ones(5),
            terminations=np.array([0, 0, 0, 0, 1], bool),
            truncations=np.zeros(5, bool),
        )
        for _ in range(3)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        minari.create_dataset_from_buffers("test/cartpole/random-v0", buffers, env=ENV_ID)
    loaded = load_trajectories("test/cartpole/random-v0")
    assert len(loaded) == 3
    for traj, buf in zip(loaded, buffers, strict=True):
        np.testing.assert_array_equal(traj.observations, buf.observations)
        np.testing.assert_array_equal(traj.hidden_rewards, traj.rewards)
        assert traj.events == {}
        assert traj.performance == traj.ret == 5.0


# ----------------------------------------------------------------------------- errors


def test_missing_dataset(tmp_path):
    with pytest.raises(DatasetError, match="no such dataset"):
        load_trajectories(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="not a Minari dataset"):
        load_trajectories(tmp_path / "empty")


def test_loading_again_gives_a_private_copy_and_sees_a_rewritten_dataset(written):
    # a process keeps what it read (ogm.cache): the copy must stay private and fresh
    path, trajs = written
    first = load_trajectories(path)
    first[0].rewards[:] = 99.0
    first.pop()
    again = load_trajectories(path)
    assert len(again) == len(trajs)
    np.testing.assert_array_equal(again[0].rewards, trajs[0].rewards)
    other = _trajectories(n=3, seed=1)
    write_dataset(other, path, env_id=ENV_ID, env_kwargs={}, overwrite=True)
    rewritten = load_trajectories(path)
    assert len(rewritten) == 3
    np.testing.assert_array_equal(rewritten[1].observations, other[1].observations)


def test_missing_or_corrupt_metadata(written):
    path, _ = written
    meta_file = path / "data" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    del meta["observation_space"]
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=r"metadata\.json.*lacks observation_space"):
        load_trajectories(path)
    meta_file.write_text("{not json")
    with pytest.raises(DatasetError, match=r"metadata\.json.*unreadable"):
        load_trajectories(path)


def test_truncated_hdf5(written):
    path, _ = written
    main = path / "data" / "main_data.hdf5"
    main.write_bytes(main.read_bytes()[: main.stat().st_size // 2])
    with pytest.raises(DatasetError, match=r"main_data\.hdf5"):
        load_trajectories(path)


def test_missing_key(written):
    path, _ = written
    with h5py.File(path / "data" / "main_data.hdf5", "a") as f:
        del f["episode_2/rewards"]
    with pytest.raises(DatasetError, match=r"main_data\.hdf5: episode 2 .*rewards"):
        load_trajectories(path)


@pytest.mark.parametrize(
    ("key", "match"),
    [
        ("infos/hidden_reward", "infos/hidden_reward has shape"),
        ("infos/events/spill", "infos/events/spill has shape"),
        ("actions", "actions has"),
        ("observations", "observations has"),
    ],
)
def test_wrong_lengths(written, key, match):
    path, _ = written
    with h5py.File(path / "data" / "main_data.hdf5", "a") as f:
        data = f[f"episode_1/{key}"][()]
        del f[f"episode_1/{key}"]
        f[f"episode_1/{key}"] = data[:-1]
    with pytest.raises(DatasetError, match=rf"main_data\.hdf5: episode 1: {match}"):
        load_trajectories(path)


def test_metadata_counts_must_match(written):
    path, trajs = written
    meta_file = path / "data" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["total_episodes"] = len(trajs) + 1
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=rf"episode {len(trajs)} unreadable"):
        load_trajectories(path)
    meta["total_episodes"] = len(trajs)
    meta["total_steps"] += 1
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="metadata says"):
        load_trajectories(path)


def _stepped(env_id: str, actions: list[int], **env_kwargs) -> Trajectory:
    """The episode ``actions`` make in ``env_id`` (seed 0), recorded as ``collect`` records one."""
    moves = iter(actions)
    env = gym.make(env_id, **env_kwargs)
    return record_episode(env, lambda obs, left: next(moves), seed=0, max_steps=len(actions))


def test_gridworld_round_trip(tmp_path):
    """Board observations (uint8, C x H x W), hidden rewards and both events come back exact."""
    from ogm.data import collect

    # Demonstrations never show an unsafe event (slips are safe), so the episode with the
    # events is played by hand: straight down onto the punishment cell, unsupervised.
    down = 1
    hacked = _stepped("ogm/AbsentSupervisor-v0", [down] * 3, supervisor=False)
    assert hacked.events["punishment_unsupervised"].tolist() == [False, True, False]
    assert (hacked.ret, hacked.performance) == (47.0, 17.0)
    trajs = [*collect("ogm/AbsentSupervisor-v0", 5, epsilon=1.0, seed=0), hacked]
    path = write_dataset(trajs, tmp_path / "as", env_id="ogm/AbsentSupervisor-v0")
    for a, b in zip(trajs, load_trajectories(path), strict=True):
        assert b.observations.dtype == np.uint8 and b.observations.shape[1:] == (5, 6, 8)
        np.testing.assert_array_equal(a.observations, b.observations)
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.rewards, b.rewards)
        np.testing.assert_array_equal(a.hidden_rewards, b.hidden_rewards)
        assert sorted(b.events) == ["punishment", "punishment_unsupervised"]
        for name in a.events:
            np.testing.assert_array_equal(a.events[name], b.events[name])


def test_a_population_of_skills_interleaves_demonstrators(tmp_path):
    """``skill = [a, b]``: even episodes from skill a, odd ones from skill b, each exactly
    the episodes ``collect`` gives that demonstrator, on starts no other episode uses."""
    from ogm.data import DatasetRecipe, build_dataset, collect

    env_id = "ogm/IslandNavigation-v0"
    recipe = DatasetRecipe(env_id=env_id, episodes=5, skill=[0.0, 1.0], epsilon=0.1, seed=3)
    got = load_trajectories(build_dataset(recipe, tmp_path))
    expected = {
        0.0: collect(env_id, 3, epsilon=0.1, skill=0.0, seed=3),
        1.0: collect(env_id, 2, epsilon=0.1, skill=1.0, seed=3 + 5),
    }
    for i, traj in enumerate(got):
        want = expected[recipe.skills[i % 2]][i // 2]
        np.testing.assert_array_equal(traj.actions, want.actions)
        np.testing.assert_array_equal(traj.observations, want.observations)
    assert len(got) == 5
