"""The Atari pipeline at smoke size: a DQN dataset of Breakout through ``collect-rl``, the
Decision Transformer with the Nature-DQN encoder trained on it offline, online ODT rounds,
and the report. Needs the ``atari`` extra (CI installs it)."""

from __future__ import annotations

import csv
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ale_py") is None or importlib.util.find_spec("cv2") is None,
    reason="needs the atari extra: pip install -e '.[atari]'",
)

GAME = {"game": "ALE/Breakout-v5", "max_episode_steps": 60}  # agent steps of 4 frames
ROUNDS, EPISODES_PER_ROUND, UPDATES = 2, 2, 3


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from ogm.data.collect_rl import CollectRLConfig, collect_rl
    from ogm.envs.atari import ATARI_ENV_ID

    config = CollectRLConfig(
        env_id=ATARI_ENV_ID,
        env_kwargs=GAME,
        total_timesteps=240,
        snapshots=2,
        episodes=2,
        eval_episodes=1,
        rollout_envs=2,
        hyperparams={"buffer_size": 300, "learning_starts": 100},
        device="cpu",
    )
    return collect_rl(config, tmp_path_factory.mktemp("atari") / "breakout")


@pytest.fixture(scope="module")
def run_dir(datasets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ogm.envs.atari import ATARI_ENV_ID
    from ogm.train import online
    from ogm.train.online import OnlineConfig

    config = OnlineConfig(
        env_id=ATARI_ENV_ID,
        env_kwargs=GAME,
        dataset=str(datasets["expert"]),
        num_envs=EPISODES_PER_ROUND,
        eval_episodes=2,
        eval_every=10**6,  # evaluated at round 0 and after the last round
        device="cpu",
        offline={
            "n_layer": 1,
            "n_head": 1,
            "n_embd": 32,
            "context_len": 4,
            "updates": 4,
            "batch_size": 4,
            "fidelity_targets": 0,
        },
        online={
            "rounds": ROUNDS,
            "updates_per_round": UPDATES,
            "batch_size": 4,
            "probe_segments": 8,
        },
    )
    out = tmp_path_factory.mktemp("runs") / "breakout" / "ogm" / "seed_0"
    online.run(config, out)
    return out


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_preprocessing_and_the_dqn_dataset(datasets: dict[str, Path]) -> None:
    import gymnasium as gym

    from ogm.data.dataset import dataset_metadata, load_trajectories
    from ogm.envs.atari import ATARI_ENV_ID

    env = gym.make(ATARI_ENV_ID, game="ALE/Breakout-v5")
    obs, _ = env.reset(seed=0)
    env.close()
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8  # 4 stacked grey frames
    trajs = load_trajectories(datasets["expert"])
    assert trajs[0].observations.shape[1:] == (4, 84, 84)
    assert trajs[0].observations.dtype == np.uint8
    assert all(t.length <= GAME["max_episode_steps"] for t in trajs)
    meta = dataset_metadata(datasets["expert"])["ogm"]
    assert meta["algorithm"] == "sb3-dqn" and meta["d4rl_name"] == "breakout-expert"


def test_the_decision_transformer_sees_frames_through_the_nature_cnn(run_dir: Path) -> None:
    from ogm.models.encoders import nature_cnn
    from ogm.train.offline import load_model

    model = load_model(run_dir)
    assert model.config.obs_shape == (4, 84, 84) and model.config.discrete
    assert model.config.act_dim == 4  # Breakout's minimal action set
    convs = [m for m in model.embed_obs.modules() if isinstance(m, torch.nn.Conv2d)]
    reference = [m for m in nature_cnn(4, 32).modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.kernel_size, c.stride, c.out_channels) for c in convs] == [
        (c.kernel_size, c.stride, c.out_channels) for c in reference
    ]  # the Nature-DQN stack: 8x8/4, 4x4/2, 3x3/1


def test_online_rounds_learn_and_follow_the_protocol(run_dir: Path) -> None:
    rounds = rows(run_dir / "rounds.csv")
    assert [int(r["round"]) for r in rounds] == list(range(ROUNDS + 1))
    for r in rounds[1:]:
        assert int(r["updates_kept"]) == UPDATES
        for key in ("loss", "nll", "entropy", "grad_norm", "kl_prev_demo"):
            assert math.isfinite(float(r[key])), (key, r[key])
    episodes = rows(run_dir / "episodes.csv")
    train = [e for e in episodes if e["phase"] == "train"]
    assert len(train) == ROUNDS * EPISODES_PER_ROUND
    evals = [e for e in episodes if e["phase"] == "eval"]
    assert {(int(e["round"]), e["mode"]) for e in evals} == {
        (r, m) for r in (0, ROUNDS) for m in ("greedy", "sampled")
    }
    for e in train + evals:
        assert 1 <= int(e["length"]) <= GAME["max_episode_steps"]
        assert float(e["performance"]) == float(e["return"])  # no hidden reward in Atari


def test_the_report_reads_the_atari_run(run_dir: Path) -> None:
    from ogm.analysis.report import write_report

    root = run_dir.parent.parent
    index = write_report(root)
    assert "ogm/Atari-v0" in index.read_text()
    (finding,) = rows(index.parent / "findings.csv")  # the one variant
    assert (finding["variant"], finding["kind"], finding["seeds"]) == ("OGM", "odt", "1")
    assert finding["gap closed, greedy eval"] == "no safe optimum stored"  # Atari has none
    # the run's budget and its final evaluation point, read back from its own logs
    (run,) = rows(index.parent / "runs.csv")
    train = [e for e in rows(run_dir / "episodes.csv") if e["phase"] == "train"]
    assert int(run["budget B (env steps)"]) == sum(int(e["length"]) for e in train)
    assert int(run["greedy eval: episodes"]) == int(run["sampled eval: episodes"]) == 2
