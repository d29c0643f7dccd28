"""`ogm data collect-rl`: D4RL-style datasets from an SB3 agent, resumable, on CPU budgets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ogm.data.collect_rl import (
    D4RL_REFERENCE_SCORES,
    KINDS,
    CollectRLConfig,
    SnapshotCallback,
    choose_snapshots,
    collect_rl,
    dataset_base_name,
    normalised_score,
)
from ogm.data.dataset import dataset_metadata, load_trajectories

# SAC on Pendulum with rl-zoo's learning rate: about 15 s on one thread
PENDULUM = {
    "env_id": "Pendulum-v1",
    "total_timesteps": 3000,
    "snapshots": 5,
    "episodes": 8,
    "eval_episodes": 4,
    "net_arch": [64, 64],
    "hyperparams": {"learning_rate": 1e-3, "learning_starts": 200},
    "device": "cpu",
}


@pytest.fixture(scope="module")
def pendulum(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("collect") / "pendulum"
    collect_rl(CollectRLConfig(**PENDULUM), out)
    return out


def test_four_datasets_load_and_rank(pendulum: Path) -> None:
    data = {kind: load_trajectories(pendulum / "datasets" / kind) for kind in KINDS}
    returns = {kind: float(np.mean([t.ret for t in trajs])) for kind, trajs in data.items()}
    for kind in ("random", "medium", "expert"):
        assert len(data[kind]) == PENDULUM["episodes"]
        assert all(t.length == 200 for t in data[kind])  # Pendulum's time limit
    assert returns["random"] < returns["expert"] - 300  # SAC learnt (random is about -1200)
    # medium-replay: every training episode up to the medium snapshot (600 steps a chunk)
    meta = {kind: dataset_metadata(pendulum / "datasets" / kind)["ogm"] for kind in KINDS}
    assert sum(t.length for t in data["medium-replay"]) == meta["medium"]["policy_step"]
    assert meta["medium"]["policy_step"] <= meta["expert"]["policy_step"]
    actions = np.concatenate([t.actions for t in data["random"]])
    assert actions.min() >= -2.0 and actions.max() <= 2.0 and actions.std() > 1.0  # uniform


def test_metadata_names_and_normalisation(pendulum: Path) -> None:
    for kind in KINDS:
        path = pendulum / "datasets" / kind
        meta = dataset_metadata(path)["ogm"]
        assert meta["d4rl_name"] == f"pendulum-{kind}"
        assert meta["dataset_id"] == f"ogm/pendulum/{kind}-v0"
        assert meta["normalisation"] == "measured"  # no D4RL reference for Pendulum
        assert meta["ref_min_score"] == pytest.approx(meta["random_return"])
        assert meta["ref_max_score"] == pytest.approx(meta["expert_return"])
        # D4RL's normalised score: 0 for the random data, 100 for the expert data
        assert normalised_score(meta["random_return"], path) == pytest.approx(0.0)
        assert normalised_score(meta["expert_return"], path) == pytest.approx(100.0)
    rows = (pendulum / "rounds.csv").read_text().splitlines()
    assert len(rows) == 1 + 1 + PENDULUM["snapshots"]  # header, step 0, five snapshots
    assert json.loads((pendulum / "run.json").read_text())["status"] == "done"
    # snapshots are plain safetensors of the SB3 policy's state_dict
    from safetensors.torch import load_file

    policy = load_file(pendulum / "policies" / "step_000003000.safetensors")
    assert any(k.startswith("actor.") for k in policy)


def test_resumed_collection_gives_the_same_files(
    pendulum: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed between snapshots (step 1500, last checkpoint at 1200), then rerun."""
    out = tmp_path / "resumed"
    original = SnapshotCallback._on_step

    def killed(self: SnapshotCallback) -> bool:
        if self.num_timesteps == 1500:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(SnapshotCallback, "_on_step", killed)
    with pytest.raises(KeyboardInterrupt):
        collect_rl(CollectRLConfig(**PENDULUM), out)
    assert json.loads((out / "run.json").read_text())["status"] == "failed"
    assert not (out / "datasets").exists()
    monkeypatch.setattr(SnapshotCallback, "_on_step", original)
    collect_rl(CollectRLConfig(**PENDULUM), out)

    assert (out / "rounds.csv").read_text() == (pendulum / "rounds.csv").read_text()
    from safetensors.torch import load_file

    for file in sorted((pendulum / "policies").iterdir()):
        a, b = load_file(file), load_file(out / "policies" / file.name)
        assert all(torch.equal(a[k], b[k]) for k in a)
    for kind in KINDS:
        ours, theirs = out / "datasets" / kind, pendulum / "datasets" / kind
        assert dataset_metadata(ours)["ogm"] == dataset_metadata(theirs)["ogm"]
        for x, y in zip(load_trajectories(ours), load_trajectories(theirs), strict=True):
            for key in ("observations", "actions", "rewards", "terminations", "truncations"):
                np.testing.assert_array_equal(getattr(x, key), getattr(y, key))


def test_choose_snapshots() -> None:
    rows = [
        {"snapshot": str(i), "env_steps": str(100 * i), "eval_return": str(r)}
        for i, r in enumerate([-50.0, -100.0, -60.0, 0.0, 120.0, 80.0])
    ]
    chosen = choose_snapshots(rows, random_return=-90.0)
    assert chosen["expert"]["step"] == 400  # best after step 0, not the last
    assert chosen["medium_target"] == pytest.approx(-90.0 + 210.0 / 3)  # -20
    assert chosen["medium"]["step"] == 300  # 0 is closest to -20, before the expert


def test_names_references_and_bad_input() -> None:
    assert dataset_base_name("Hopper-v5", {}) == "hopper"
    assert dataset_base_name("ogm/Atari-v0", {"game": "ALE/Breakout-v5"}) == "breakout"
    assert D4RL_REFERENCE_SCORES["hopper"] == (-20.272305, 3234.3)
    with pytest.raises(ValueError, match="'dqn'"):
        collect_rl(CollectRLConfig(**{**PENDULUM, "algo": "dqn"}), "/nonexistent/never-made")
    with pytest.raises(ValueError, match="snapshots"):
        CollectRLConfig(**{**PENDULUM, "snapshots": 0})


def test_cli_collect_rl(tmp_path: Path) -> None:
    from ogm.cli.main import app

    args = ["data", "collect-rl", "Pendulum-v1", "--out", str(tmp_path / "cli")]
    args += ["--timesteps", "400", "--snapshots", "2", "--episodes", "2", "--eval-episodes", "1"]
    args += ["--net-arch", "16,16", "--hp", "learning_starts=100"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "pendulum-medium-replay" in result.output
    for kind in KINDS:
        assert len(load_trajectories(tmp_path / "cli" / "datasets" / kind)) >= 1
