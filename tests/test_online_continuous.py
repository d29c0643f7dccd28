"""The online loop (ODT) end to end on continuous actions: Pendulum, tanh-Gaussian policy,
on a dataset recorded by ``collect-rl``."""

from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from ogm.data.collect_rl import CollectRLConfig, collect_rl
from ogm.models.decision_transformer import TanhGaussianPolicy
from ogm.train import online
from ogm.train.offline import load_model
from ogm.train.online import OnlineConfig

EPISODES_PER_ROUND = 2
ROUNDS = 2


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("continuous")
    data = collect_rl(
        CollectRLConfig(
            env_id="Pendulum-v1",
            total_timesteps=400,
            snapshots=2,
            episodes=4,
            eval_episodes=1,
            net_arch=[16, 16],
            hyperparams={"learning_starts": 100},
            device="cpu",
        ),
        root / "collect",
    )
    config = OnlineConfig(
        env_id="Pendulum-v1",
        dataset=str(data["medium-replay"]),
        num_envs=EPISODES_PER_ROUND,
        eval_episodes=2,
        eval_every=10**6,  # evaluated at round 0 and after the last round
        device="cpu",
        precision="fp32",
        offline={
            "n_layer": 1,
            "n_head": 1,
            "n_embd": 32,
            "context_len": 5,
            "n_bins": 16,
            "updates": 30,
            "batch_size": 16,
            "warmup_steps": 5,
            "learning_rate": 3e-3,
            "fidelity_targets": 0,
        },
        online={
            "rounds": ROUNDS,
            "episodes_per_round": EPISODES_PER_ROUND,
            "updates_per_round": 20,
            "batch_size": 16,
            "strategy": "odt:2",
        },
    )
    out = root / "odt"
    online.run(config, out)
    return out


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_losses_finite_and_policy_is_tanh_gaussian(run_dir: Path) -> None:
    model = load_model(run_dir)
    assert not model.config.discrete and model.config.act_dim == 1
    assert model.config.action_low == (-2.0,) and model.config.action_high == (2.0,)
    rounds = rows(run_dir / "rounds.csv")
    assert [int(r["round"]) for r in rounds] == list(range(ROUNDS + 1))
    for r in rounds[1:]:
        for key in ("loss", "nll", "entropy", "grad_norm", "kl_prev_demo", "kl_offline_online"):
            assert math.isfinite(float(r[key])), (key, r[key])
        assert int(r["updates_kept"]) == 20
    import torch

    obs = torch.zeros(1, 1, 3)
    out = model(torch.zeros(1, 1, 1), obs, torch.zeros(1, 1, 1), torch.zeros(1, 1).long())
    assert isinstance(out.policy, TanhGaussianPolicy)


def test_temperature_follows_the_entropy_constraint(run_dir: Path) -> None:
    """ODT's dual step: alpha falls while the entropy is above -|A| and rises below it."""
    rounds = rows(run_dir / "rounds.csv")
    assert all(float(r["target_entropy"]) == -1.0 for r in rounds)  # ODT: -action_dim
    assert float(rounds[0]["temperature"]) == pytest.approx(0.1)  # ODT's initial alpha
    for before, after in itertools.pairwise(rounds):
        gap = float(after["entropy"]) - float(after["target_entropy"])
        change = math.log(float(after["temperature"]) / float(before["temperature"]))
        assert abs(gap) > 0.05 and np.sign(change) == -np.sign(gap), (gap, change)
        # Adam moves log_alpha by about temperature_lr (1e-2) per update, 20 updates a round
        assert abs(change) <= 20 * 1e-2 * 1.05


def test_evaluation_rows_follow_the_protocol(run_dir: Path) -> None:
    episodes = rows(run_dir / "episodes.csv")
    evals = [e for e in episodes if e["phase"] == "eval"]
    assert {(int(e["round"]), e["mode"]) for e in evals} == {
        (r, m) for r in (0, ROUNDS) for m in ("greedy", "sampled")
    }
    for e in evals:
        assert int(e["length"]) == 200  # Pendulum's time limit
        assert -200 * 16.3 <= float(e["return"]) <= 0.0  # Pendulum's reward range per step
        assert float(e["performance"]) == float(e["return"])  # no hidden reward outside ogm
        assert math.isfinite(float(e["target_return"]))
    final = [e for e in evals if int(e["round"]) == ROUNDS]
    assert {int(e["env_steps"]) for e in final} == {ROUNDS * EPISODES_PER_ROUND * 200}
    train = [e for e in episodes if e["phase"] == "train"]
    assert len(train) == ROUNDS * EPISODES_PER_ROUND
    assert all(e["mode"] == "sampled" for e in train)


def test_replay_buffer_grows(run_dir: Path) -> None:
    rounds = rows(run_dir / "rounds.csv")
    demos = int(rounds[0]["buffer_demo"])
    assert demos > 0 and int(rounds[0]["buffer_online"]) == 0
    for r in rounds:
        k = int(r["round"])
        assert int(r["buffer_online"]) == k * EPISODES_PER_ROUND
        assert int(r["buffer_demo"]) == demos  # far below the capacity of 1000: none leave
        assert int(r["env_steps"]) == k * EPISODES_PER_ROUND * 200
