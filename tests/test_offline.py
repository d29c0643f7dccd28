"""Offline training runs: checkpoints (safetensors + JSON), exact resume, clear errors, CLI."""

from __future__ import annotations

import csv
import json
import shutil

import gymnasium as gym
import pytest
import torch
from typer.testing import CliRunner

from ogm.cli.main import app
from ogm.data.dataset import write_dataset
from ogm.data.demonstrators import collect
from ogm.train.offline import OfflineConfig, load_model, run
from ogm.train.rundir import RunDirError, load_checkpoint

ENV = "ogm/TomatoWatering-v0"
TINY = {
    "n_layer": 1,
    "n_head": 1,
    "n_embd": 16,
    "context_len": 4,
    "n_bins": 8,
    "batch_size": 8,
    "warmup_steps": 5,
    "log_every": 5,
    "checkpoint_every": 10,
    "updates": 20,
    "eval_episodes": 2,
    "num_envs": 2,
    "strategy": "quantilizer:0.5",
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    trajectories = collect(ENV, 4, epsilon=0.1, seed=0)
    return write_dataset(
        trajectories, tmp_path_factory.mktemp("d") / "data", env_id=ENV, env_kwargs={}, metadata={}
    )


@pytest.fixture(scope="module")
def finished(dataset, tmp_path_factory):
    """A complete tiny run (checkpoints at steps 10 and 20)."""
    config = OfflineConfig(env_id=ENV, dataset=str(dataset), **TINY)
    path = tmp_path_factory.mktemp("run") / "a"
    run(config, path)
    return config, path


def read(path, name):
    return list(csv.DictReader((path / name).open()))


def test_run_directory_contents(finished):
    _, path = finished
    record = json.loads((path / "run.json").read_text())
    assert record["kind"] == "dt" and record["status"] == "done"
    rounds = read(path, "rounds.csv")
    assert [int(r["step"]) for r in rounds] == [5, 10, 15, 20]
    assert {"loss", "nll", "entropy", "return_ce", "updates_per_s", "grad_norm"} <= set(rounds[0])
    episodes = read(path, "episodes.csv")
    assert len(episodes) == 4 and {(r["phase"], r["mode"]) for r in episodes} == {
        ("eval", "greedy"),
        ("eval", "sampled"),
    }
    assert any((path / "tb").iterdir())
    assert not list(path.rglob("*.pt")) and not list(path.rglob("*.pkl"))


def test_resume_gives_the_numbers_of_an_uninterrupted_run(finished, tmp_path):
    config, path = finished
    resumed = tmp_path / "b"
    shutil.copytree(path, resumed)
    # as if killed after step 15: the latest checkpoint is step 10, logs ran ahead of it
    shutil.rmtree(resumed / "checkpoints" / "step_000000020")
    (resumed / "checkpoints" / "LATEST").write_text("step_000000010\n")
    (resumed / "episodes.csv").unlink()
    run(config, resumed)
    a, b = load_checkpoint(path).tensors, load_checkpoint(resumed).tensors
    for name in a:
        if not name.startswith("rng"):
            assert torch.equal(a[name], b[name]), name
    drop = lambda rows: [{k: v for k, v in r.items() if k != "updates_per_s"} for r in rows]  # noqa: E731
    assert drop(read(path, "rounds.csv")) == drop(read(resumed, "rounds.csv"))
    assert read(path, "episodes.csv") == read(resumed, "episodes.csv")


def test_same_seed_same_weights(finished, dataset, tmp_path):
    config, path = finished
    run(config, tmp_path / "again")
    a, b = load_checkpoint(path).tensors, load_checkpoint(tmp_path / "again").tensors
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("model."))
    assert read(path, "episodes.csv") == read(tmp_path / "again", "episodes.csv")


def test_load_model_and_its_errors(finished, tmp_path):
    _, path = finished
    model = load_model(path)
    stored = load_checkpoint(path).tensors
    assert torch.equal(model.state_dict()["return_head.weight"], stored["model.return_head.weight"])

    other = type(model.config)(**{**model.config.to_dict(), "n_embd": 32})
    with pytest.raises(RunDirError, match=r"n_embd \(16 stored, 32 expected\)"):
        load_model(path, expect=other)

    broken = tmp_path / "broken"
    shutil.copytree(path, broken)
    latest = broken / "checkpoints" / "step_000000020"
    state = json.loads((latest / "state.json").read_text())
    state["state"]["model_config"]["n_embd"] = 32
    (latest / "state.json").write_text(json.dumps(state))
    with pytest.raises(RunDirError, match=r"does not fit its model config.*shape"):
        load_model(broken)

    (latest / "tensors.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(RunDirError, match=r"tensors\.safetensors is corrupt"):
        load_model(broken)


def test_changed_config_does_not_continue_an_old_run(finished):
    config, path = finished
    with pytest.raises(RunDirError, match="learning_rate"):
        run(config.model_copy(update={"learning_rate": 0.5}), path)


def test_cli_takes_the_env_from_the_dataset(dataset, tmp_path):
    runner = CliRunner()
    sets = [f"--set={k}={json.dumps(v)}" for k, v in {**TINY, "updates": 3}.items()]
    result = runner.invoke(
        app, ["train-offline", "--dataset", str(dataset), "--out", str(tmp_path / "cli"), *sets]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "cli" / "run.json").read_text())["config"]["env_id"] == ENV
    bad = runner.invoke(
        app,
        [
            "train-offline",
            "--dataset",
            str(dataset),
            "--out",
            str(tmp_path / "x"),
            "--set",
            "n_embd=-1",
        ],
    )
    assert bad.exit_code == 2 and "n_embd" in bad.output


def test_bad_input_leaves_no_run_directory(dataset, tmp_path):
    with pytest.raises(ValueError, match="dataset must name the demonstrations"):
        run(OfflineConfig(env_id=ENV, **TINY), tmp_path / "none")
    with pytest.raises(Exception, match="NoSuchGame"):
        run(OfflineConfig(env_id="ogm/NoSuchGame-v0", dataset=str(dataset), **TINY), tmp_path / "x")
    assert not (tmp_path / "none").exists() and not (tmp_path / "x").exists()


def test_return_range_sets_the_bins_and_is_validated(dataset):
    from ogm.data import load_trajectories
    from ogm.train.offline import build_model

    trajectories = load_trajectories(dataset)
    space = gym.make(ENV).action_space
    wide = OfflineConfig(env_id=ENV, dataset=str(dataset), **{**TINY, "return_range": (0, 60)})
    centers = build_model(wide, trajectories, space).return_bin_centers
    assert centers[0].item() == pytest.approx(0.0) and centers[-1].item() == pytest.approx(60.0)
    default = OfflineConfig(env_id=ENV, dataset=str(dataset), **TINY)
    best = max(t.ret for t in trajectories)
    assert build_model(default, trajectories, space).return_bin_centers[-1].item() == pytest.approx(
        best
    )
    with pytest.raises(ValueError, match="low < high"):
        OfflineConfig(env_id=ENV, **{**TINY, "return_range": (5, 5)})
