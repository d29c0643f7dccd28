"""One evaluation protocol for every agent kind (ogm.train.evaluation).

The review that motivated it found the GM agent's and BC's finals measured on greedy
evaluation episodes while OGM, PPO and KL-PPO were judged on their sampled *training*
episodes; these tests pin the protocol that replaced that.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from ogm.baselines.bc import BCConfig
from ogm.baselines.bc import run as run_bc
from ogm.baselines.best_of_n import BestOfNConfig
from ogm.baselines.best_of_n import run as run_best_of_n
from ogm.baselines.kl_ppo import KLPPOConfig
from ogm.baselines.kl_ppo import run as run_kl_ppo
from ogm.baselines.sb3 import SB3Config
from ogm.baselines.sb3 import run as run_sb3
from ogm.data.dataset import write_dataset
from ogm.data.demonstrators import collect
from ogm.envs import GridworldEnv
from ogm.train import evaluation
from ogm.train.config import CommonConfig
from ogm.train.offline import OfflineConfig
from ogm.train.offline import run as run_offline
from ogm.train.online import OnlineConfig, derive_seed
from ogm.train.online import run as run_online

TOMATO = "ogm/TomatoWatering-v0"
EPISODES = 3  # per mode at every evaluation point


def always(action: int) -> evaluation.StatelessAgent:
    return evaluation.StatelessAgent(lambda obs, deterministic: np.full(len(obs), action))


def test_evaluation_starts_are_held_out_and_common_to_every_evaluation():
    """Episode k starts from seed EVAL_SEED_BASE + k (the tomatoes dry by the env's random
    numbers, so the rewards of a fixed action sequence fingerprint the seed); training
    seeds cannot reach that range."""
    config = CommonConfig(env_id=TOMATO, num_envs=2, eval_episodes=EPISODES)
    results = evaluation.evaluate(always(3), config)
    assert [len(results[m]) for m in evaluation.MODES] == [EPISODES, EPISODES]
    for k, (greedy, sampled) in enumerate(zip(results["greedy"], results["sampled"], strict=True)):
        env = GridworldEnv("tomato_watering")
        env.reset(seed=evaluation.EVAL_SEED_BASE + k)
        rewards = [env.step(3)[1] for _ in range(greedy.trajectory.length)]
        np.testing.assert_allclose(greedy.trajectory.rewards, rewards)
        np.testing.assert_array_equal(greedy.trajectory.rewards, sampled.trajectory.rewards)
    # ... and differ between episodes (distinct seeds, not one start repeated)
    assert len({tuple(r.trajectory.rewards) for r in results["greedy"]}) == EPISODES
    assert evaluation.EVAL_SEED_BASE >= 2**32
    with pytest.raises(ValidationError, match="seed"):
        CommonConfig(seed=2**32)
    assert max(derive_seed(2**32 - 1, stream, 10**6) for stream in range(3)) < 2**32


def test_evaluation_is_reproducible_and_leaves_training_randomness_alone():
    """Sampled episodes draw from their own seeded generator: the same numbers every time,
    and torch's global generator (training's) is where it was."""
    torch.manual_seed(123)
    policy = torch.nn.Linear(1, 4)

    def act(obs: np.ndarray, deterministic: bool) -> np.ndarray:
        logits = policy(torch.zeros(len(obs), 1))
        if deterministic:
            return logits.argmax(-1).numpy()
        return torch.multinomial(torch.softmax(logits, -1), 1)[:, 0].numpy()

    config = CommonConfig(env_id=TOMATO, num_envs=3, eval_episodes=EPISODES)
    before = torch.get_rng_state()
    first = evaluation.evaluate(evaluation.StatelessAgent(act), config)
    assert torch.equal(before, torch.get_rng_state())
    again = evaluation.evaluate(evaluation.StatelessAgent(act), config)

    def actions(results, mode):
        return [r.trajectory.actions.tolist() for r in results[mode]]

    assert actions(first, "sampled") == actions(again, "sampled")
    assert len({a for ep in actions(first, "greedy") for a in ep}) == 1  # the argmax, always
    assert len({a for ep in actions(first, "sampled") for a in ep}) > 1


def test_an_env_played_again_gives_the_episodes_of_a_fresh_one():
    """Evaluation waves and best-of-n re-use one vector env: every copy is reset with its
    seed, so what the env played before (episodes cut short by the first-episode rule,
    auto-resets) changes nothing."""
    config = CommonConfig(env_id=TOMATO, num_envs=3, eval_episodes=EPISODES)
    rng = np.random.default_rng(0)
    agent = evaluation.StatelessAgent(lambda obs, deterministic: rng.integers(4, size=len(obs)))
    waves = [[5, 6, 7], [8, 5, 9], [5, 6, 7]]

    def play(env_of):
        rng.bit_generator.state = np.random.default_rng(0).bit_generator.state
        return [
            r.trajectory
            for seeds in waves
            for r in evaluation.first_episodes(
                agent, config, seeds, deterministic=False, env=env_of(len(seeds))
            )
        ]

    shared = evaluation.make_env(config, 3, seed=None)
    again, fresh = play(lambda n: shared), play(lambda n: None)
    for a, b in zip(again, fresh, strict=True):
        np.testing.assert_array_equal(a.observations, b.observations)
        np.testing.assert_array_equal(a.rewards, b.rewards)
    assert len({a.rewards.tobytes() for a in again}) > 1
    with pytest.raises(ValueError, match="2 seeds for an env of 3 copies"):
        evaluation.first_episodes(agent, config, [1, 2], deterministic=True, env=shared)
    shared.close()


def test_a_decision_transformer_is_evaluated_without_dropout():
    """Training leaves the model in train mode; its evaluation must still judge the policy
    itself, not one dropout sample of it: the same episodes as in eval mode, every time, and
    the model back in train mode after."""
    from ogm.agents.actor import ConditionedDT
    from ogm.agents.conditioning import Fixed
    from ogm.models import DecisionTransformer, DTConfig, return_bin_edges_for

    torch.manual_seed(0)
    obs_shape = GridworldEnv("tomato_watering").observation_space.shape
    model = DecisionTransformer(
        DTConfig(
            obs_shape=obs_shape,
            act_dim=4,
            discrete=True,
            return_bin_edges=return_bin_edges_for(0.0, 60.0, 16),
            n_layer=1,
            n_embd=32,
            context_len=4,
            dropout=0.5,
        )
    )
    config = CommonConfig(env_id=TOMATO, num_envs=3, eval_episodes=EPISODES)

    def played(train_mode: bool) -> list[list[int]]:
        model.train(train_mode)
        results = evaluation.evaluate(ConditionedDT(model, Fixed(10.0)), config)
        assert model.training == train_mode
        return [r.trajectory.actions.tolist() for m in evaluation.MODES for r in results[m]]

    assert played(True) == played(True) == played(False)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "tomato"
    return write_dataset(collect(TOMATO, 12, epsilon=0.1, seed=0), out, env_id=TOMATO)


DT = {"n_layer": 1, "n_embd": 32, "context_len": 4, "n_bins": 16, "updates": 20}
COMMON = {"env_id": TOMATO, "num_envs": 2, "eval_episodes": EPISODES, "eval_every": 400}


def rows(run_dir: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run_dir / "episodes.csv").open()))


def test_every_agent_kind_is_evaluated_the_same_way(dataset, tmp_path):
    """GM, OGM, PPO, BC, KL-PPO and best-of-n: every evaluation point plays the same held-out
    starts in both modes on the env-step clock, and run.json's finals are the last point's
    evaluation means (never training episodes)."""
    data = {"dataset": str(dataset)}
    run_offline(OfflineConfig(**COMMON, **data, **DT, fidelity_targets=4), tmp_path / "gm")
    # the GM agent also measures its conditioning fidelity on the same protocol
    fidelity = list(csv.DictReader((tmp_path / "gm" / "fidelity.csv").open()))
    assert len(fidelity) == 4 * 2 * EPISODES and len({r["target"] for r in fidelity}) == 4
    summary = json.loads((tmp_path / "gm" / "run.json").read_text())["fidelity"]
    assert set(summary) == set(evaluation.MODES) and "slope" in summary["greedy"]
    kinds = {
        "gm": None,
        "ogm": lambda out: run_online(
            OnlineConfig(
                **COMMON,
                **data,
                pretrained=str(tmp_path / "gm"),
                online={"rounds": 5, "episodes_per_round": 2, "updates_per_round": 2},
            ),
            out,
        ),
        "ppo": lambda out: run_sb3(
            SB3Config(
                **COMMON, total_timesteps=800, hyperparams={"n_steps": 100, "batch_size": 100}
            ),
            out,
        ),
        "bc": lambda out: run_bc(BCConfig(**COMMON, **data, updates=4, eval_every_updates=2), out),
        "kl_ppo": lambda out: run_kl_ppo(
            KLPPOConfig(
                **COMMON,
                **data,
                init=str(tmp_path / "gm"),
                total_timesteps=800,
                n_steps=100,
                batch_size=100,
            ),
            out,
        ),
        "best_of_n": lambda out: run_best_of_n(
            BestOfNConfig(**COMMON, **data, init=str(tmp_path / "gm"), n=2), out
        ),
    }
    for kind, train in kinds.items():
        out = tmp_path / kind
        if train is not None:
            train(out)
        table = rows(out)
        evals = [r for r in table if r["phase"] == "eval"]
        train_rows = [r for r in table if r["phase"] == "train"]
        assert all(r["mode"] == "sampled" for r in train_rows), kind
        points = sorted({int(r["round"]) for r in evals})
        for point in points:
            at = [r for r in evals if int(r["round"]) == point]
            for mode in evaluation.MODES:
                assert sum(r["mode"] == mode for r in at) == EPISODES, (kind, point, mode)
            assert len({r["env_steps"] for r in at}) == 1, kind  # one clock value per point
        clock = [int(next(r for r in evals if int(r["round"]) == p)["env_steps"]) for p in points]
        assert clock == sorted(clock), kind
        if kind in ("gm", "bc", "best_of_n"):
            assert not train_rows and set(clock) == {0}, kind
        else:  # points every eval_every steps of training interaction, and at the end
            assert clock[-1] == max(int(r["env_steps"]) for r in train_rows) > 0, kind
            assert len(points) >= 2, kind
        # finals: the last evaluation point, per mode
        final = json.loads((out / "run.json").read_text())["final_eval"]
        for mode in evaluation.MODES:
            last = [r for r in evals if int(r["round"]) == points[-1] and r["mode"] == mode]
            assert final[mode]["return"] == pytest.approx(
                np.mean([float(r["return"]) for r in last])
            ), (kind, mode)


def test_an_ogm_agent_is_judged_by_its_gm_agents_target(tmp_path):
    """Without ``online.eval_strategy`` an OGM agent started from a GM run evaluates with
    that run's strategy, not with its own (unused) offline section's default."""
    from ogm.train.online import evaluation_target
    from ogm.train.rundir import RunDir

    gm = OfflineConfig(env_id=TOMATO, strategy="percentile:95")
    RunDir.create(tmp_path / "gm", kind="dt", config=gm, seed=0).close()
    config = OnlineConfig(env_id=TOMATO, pretrained=str(tmp_path / "gm"))
    assert config.offline.strategy != "percentile:95"
    assert evaluation_target(config) == "percentile:95"
    explicit = OnlineConfig(
        env_id=TOMATO, pretrained=str(tmp_path / "gm"), online={"eval_strategy": "fixed:3"}
    )
    assert evaluation_target(explicit) == "fixed:3"
