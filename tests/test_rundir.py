"""Run directories, checkpoints, configs and the Trajectory record."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from ogm.data.recipe import DatasetRecipe
from ogm.data.trajectory import Trajectory
from ogm.train.config import CommonConfig, ConfigError, load_config
from ogm.train.rundir import (
    RunDir,
    RunDirError,
    episode_row,
    load_checkpoint,
    pack_state,
    unpack_state,
)


def _trajectory(rewards, hidden=None, events=None) -> Trajectory:
    steps = len(rewards)
    return Trajectory(
        observations=np.zeros((steps + 1, 2), np.float32),
        actions=np.zeros(steps, np.int64),
        rewards=np.asarray(rewards, np.float32),
        terminations=np.eye(1, steps, steps - 1, dtype=bool)[0],
        truncations=np.zeros(steps, bool),
        hidden_rewards=hidden,
        events=events or {},
    )


def test_trajectory_sums_and_returns_to_go():
    traj = _trajectory([1.0, -2.0, 4.0], hidden=[0.0, 1.0, 1.0], events={"bad": [0, 1, 1]})
    assert traj.ret == 3.0 and traj.performance == 2.0 and traj.length == 3
    np.testing.assert_allclose(traj.returns_to_go(), [3.0, 2.0, 4.0])
    np.testing.assert_allclose(traj.returns_to_go(scale=0.5), [1.5, 1.0, 2.0])
    assert traj.event_counts() == {"bad": 2}
    assert len(traj.states) == 3
    assert _trajectory([1.0, 2.0]).performance == 3.0  # no hidden reward: performance = return


def test_trajectory_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="T \\+ 1"):
        Trajectory(np.zeros((3, 2)), np.zeros(3), np.zeros(3), np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="events\\['bad'\\]"):
        _trajectory([1.0, 2.0], events={"bad": [1]})


def test_pack_state_round_trips_an_optimiser_state():
    model = torch.nn.Linear(3, 2)
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    optim.step()
    tensors, skeleton = pack_state(optim.state_dict())
    json.dumps(skeleton)  # the non-tensor part is plain JSON
    restored = unpack_state(json.loads(json.dumps(skeleton)), tensors)
    fresh = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=1.0)
    fresh.load_state_dict(restored)
    assert fresh.param_groups[0]["lr"] == 1e-3
    for key in ("exp_avg", "exp_avg_sq", "step"):
        torch.testing.assert_close(
            fresh.state_dict()["state"][0][key], optim.state_dict()["state"][0][key]
        )


def test_checkpoint_round_trip_and_log_truncation(tmp_path):
    run = RunDir.create(tmp_path / "run", kind="test", config={"a": 1}, seed=3)
    episodes = run.episodes(["bad"])
    traj = _trajectory([1.0, 1.0], events={"bad": [1, 0]})
    episodes.append(
        episode_row(
            traj,
            phase="train",
            mode="sampled",
            round=0,
            episode=0,
            env_steps=2,
            event_names=["bad"],
        )
    )
    run.rounds.append({"round": 0, "loss": 0.5})
    run.save_checkpoint(
        1,
        tensors={"w": torch.arange(4.0)},
        state={"rng": np.random.default_rng(0).bit_generator.state, "x": 1.5},
        arrays={"buffer": np.arange(6).reshape(2, 3)},
    )
    episodes.append(
        episode_row(
            traj,
            phase="train",
            mode="sampled",
            round=1,
            episode=1,
            env_steps=4,
            event_names=["bad"],
        )
    )
    run.rounds.append({"round": 1, "loss": 0.25})

    reopened = RunDir.open(tmp_path / "run")
    checkpoint = reopened.resume()
    assert checkpoint is not None and checkpoint.step == 1
    torch.testing.assert_close(checkpoint.tensors["w"], torch.arange(4.0))
    np.testing.assert_array_equal(checkpoint.arrays["buffer"], np.arange(6).reshape(2, 3))
    rng = np.random.default_rng()
    rng.bit_generator.state = checkpoint.state["rng"]
    assert rng.random() == np.random.default_rng(0).random()
    rows = reopened.episodes(["bad"]).read()
    assert len(rows) == 1 and rows[0]["ev_bad"] == "1" and float(rows[0]["ev_bad_share"]) == 0.5
    assert len(reopened.rounds.read()) == 1


def test_run_dir_refuses_a_different_config_and_reports_corruption(tmp_path):
    RunDir.create(tmp_path / "run", kind="test", config={"a": 1}, seed=0)
    with pytest.raises(RunDirError, match="already holds a run"):
        RunDir.create(tmp_path / "run", kind="test", config={"a": 1}, seed=0)
    with pytest.raises(RunDirError, match="differing config keys \\['a'\\]"):
        RunDir.open_or_create(tmp_path / "run", kind="test", config={"a": 2}, seed=0)
    assert RunDir.open_or_create(tmp_path / "run", kind="test", config={"a": 1}, seed=0).seed == 0

    run = RunDir.open(tmp_path / "run")
    path = run.save_checkpoint(5, tensors={"w": torch.ones(3)})
    (path / "tensors.safetensors").write_bytes(b"garbage")
    with pytest.raises(RunDirError, match=r"tensors\.safetensors is corrupt"):
        load_checkpoint(tmp_path / "run")
    (path / "state.json").unlink()
    with pytest.raises(RunDirError, match=r"state\.json is missing"):
        load_checkpoint(path)
    with pytest.raises(RunDirError, match="not a run directory"):
        RunDir.open(tmp_path / "nowhere")


def test_run_record_holds_versions_and_seed(tmp_path):
    run = RunDir.create(tmp_path / "r", kind="test", config=CommonConfig(seed=7), seed=7)
    record = json.loads((tmp_path / "r" / "run.json").read_text())
    assert record["seed"] == 7 and record["config"]["seed"] == 7
    assert {"python", "torch", "numpy", "gymnasium"} <= set(record["versions"])
    run.set_status("done")
    assert RunDir.open(tmp_path / "r").status == "done"


def test_load_config_with_overrides_and_clear_errors(tmp_path):
    file = tmp_path / "c.toml"
    file.write_text('env_id = "ogm/BoatRace-v0"\nseed = 1\n[dataset]\nenv_id = "ogm/BoatRace-v0"\n')
    config = load_config(CommonConfig, file, ["seed=4", "dataset.episodes=12", "device=cpu"])
    assert config.seed == 4 and config.device == "cpu"
    assert isinstance(config.dataset, DatasetRecipe) and config.dataset.episodes == 12
    with pytest.raises(ConfigError, match="num_envs: Input should be greater than 0"):
        load_config(CommonConfig, None, ["num_envs=0"])
    with pytest.raises(ConfigError, match="unknown_field"):
        load_config(CommonConfig, None, ["unknown_field=1"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(CommonConfig, tmp_path / "missing.toml")
    recipe = DatasetRecipe(env_id="ogm/BoatRace-v0")
    assert recipe.digest() != recipe.model_copy(update={"seed": 1}).digest()


def test_logs_end_every_line_alike_after_a_resume(tmp_path):
    """A log written before (csv's CRLF rows) and cut back by a resume ends in LF only."""
    run = RunDir.create(tmp_path / "run", kind="test", config={}, seed=0)
    (run.path / "rounds.csv").write_bytes(b"round,loss\r\n1,0.5\r\n2,0.25\r\n3,0.1")
    run.save_checkpoint(2, state={})  # as if it had seen two rows
    state = json.loads((run.checkpoints / "step_000000002" / "state.json").read_text())
    state["state"]["_log_rows"]["rounds"] = 2
    (run.checkpoints / "step_000000002" / "state.json").write_text(json.dumps(state))
    resumed = RunDir.open(run.path)
    resumed.resume()
    resumed.rounds.append({"round": 3, "loss": 0.125})
    assert (run.path / "rounds.csv").read_bytes() == b"round,loss\n1,0.5\n2,0.25\n3,0.125\n"


def test_only_this_runs_checkpoints_are_resumed_from(tmp_path):
    one = RunDir.create(tmp_path / "one", kind="test", config={"a": 1}, seed=0)
    other = RunDir.create(tmp_path / "other", kind="test", config={"a": 2}, seed=0)
    other.save_checkpoint(3, state={"x": 1.0})
    shutil.copytree(other.checkpoints, one.checkpoints)
    with pytest.raises(RunDirError, match="was not written by the run in"):
        one.resume()
    (one.checkpoints / "LATEST").write_text("../../other/checkpoints/step_000000003\n")
    with pytest.raises(RunDirError, match="must name a checkpoint folder beside it"):
        one.resume()
    assert other.resume().state["x"] == 1.0


def test_a_checkpoint_names_what_it_lacks_and_restores_inside_its_guard(tmp_path):
    run = RunDir.create(tmp_path / "run", kind="test", config={}, seed=0)
    run.save_checkpoint(
        1, tensors={"w": torch.ones(2)}, state={"nested": {"a": 1}, "inf": float("inf")}
    )
    checkpoint = run.resume()
    assert checkpoint.state["inf"] == float("inf")  # JSON has no inf: stored exactly
    with pytest.raises(RunDirError, match=r"step_000000001/state\.json lacks 'b'"):
        checkpoint.state["nested"]["b"]
    with pytest.raises(RunDirError, match=r"tensors\.safetensors lacks 'v'"):
        checkpoint.tensors["v"]
    guard = pytest.raises(RunDirError, match=r"step_000000001 cannot be restored, .*TypeError")
    with guard, checkpoint.restoring():
        int(checkpoint.state["nested"])


def test_a_failure_is_recorded_unless_the_directory_cannot_take_it(tmp_path, monkeypatch):
    run = RunDir.create(tmp_path / "run", kind="test", config={}, seed=0)
    run.record_failure(ValueError("bad\nvalue"))
    assert RunDir.open(run.path).record["error"] == "ValueError: bad value"

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("ogm.train.rundir.tempfile.mkstemp", full)
    run.record_failure(RuntimeError("the original error"))  # no second error on top
    monkeypatch.setattr("pathlib.Path.open", full)
    with pytest.raises(OSError, match=r"No space left on device: '.*rounds\.csv'"):
        run.rounds.append({"round": 1})
