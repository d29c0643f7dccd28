"""The frozen proxy reward model: learning from comparisons, the Bradley-Terry loss, label
noise, files, the proxy wrappers, and the KL of best-of-n."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

import ogm.envs
from ogm.envs import GridworldEnv, GridworldVectorEnv
from ogm.envs.reward_model import (
    META_FILE,
    WEIGHTS_FILE,
    ProxyReward,
    ProxyRewardVector,
    RewardModel,
    RewardModelError,
    best_of_n_kl,
    bradley_terry_loss,
    label_pairs,
    load_reward_model,
    save_reward_model,
    train_reward_model,
)
from ogm.envs.sequence import ENV_ID, PROXY_ENV_ID, gold_reward

SUMMARY_DIM = 8 + 8 * 9


@pytest.fixture(scope="module")
def small_model() -> RewardModel:
    model, _ = train_reward_model(ENV_ID, 40, held_out_pairs=40, steps=30, seed=3)
    return model


def test_held_out_accuracy_rises_with_the_number_of_comparisons():
    # the same 500 held-out pairs (they depend on the seed only); measured: 0.776 vs 0.896
    few = train_reward_model(ENV_ID, 30, seed=0)[1]
    many = train_reward_model(ENV_ID, 1000, seed=0)[1]
    assert few["held_out_compared"] == many["held_out_compared"] > 450
    assert many["held_out_accuracy"] > 0.85
    assert many["held_out_accuracy"] - few["held_out_accuracy"] > 0.08  # > 4 standard errors
    assert many["held_out_spearman"] > few["held_out_spearman"]
    assert few["label_agreement"] == many["label_agreement"] == 1.0


def test_training_is_reproducible():
    a, _ = train_reward_model(ENV_ID, 20, held_out_pairs=10, steps=20, seed=5)
    b, _ = train_reward_model(ENV_ID, 20, held_out_pairs=10, steps=20, seed=5)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


@pytest.mark.parametrize("label, sign_a", [(1.0, -1), (0.0, 1)])
def test_bradley_terry_gradient_moves_scores_towards_the_label(label, sign_a):
    score_a = torch.tensor([0.3], requires_grad=True)
    score_b = torch.tensor([0.1], requires_grad=True)
    loss = bradley_terry_loss(score_a, score_b, torch.tensor([label]))
    loss.backward()
    # d loss / d score_a = sigmoid(a - b) - label
    expected = 1 / (1 + math.exp(-0.2)) - label
    assert score_a.grad.item() == pytest.approx(expected) and np.sign(expected) == sign_a
    assert score_b.grad.item() == pytest.approx(-expected)
    # a gradient step makes the labelled preference more likely
    with torch.no_grad():
        after = bradley_terry_loss(
            score_a - 0.1 * score_a.grad, score_b - 0.1 * score_b.grad, torch.tensor([label])
        )
    assert after < loss


def test_bradley_terry_tie_label_is_flat_at_equal_scores():
    s = torch.tensor([0.7], requires_grad=True)
    t = torch.tensor([0.7], requires_grad=True)
    loss = bradley_terry_loss(s, t, torch.tensor([0.5]))
    loss.backward()
    assert loss.item() == pytest.approx(math.log(2)) and s.grad.item() == pytest.approx(0.0)


def test_label_noise():
    rng = np.random.default_rng(0)
    gold_a, gold_b = rng.normal(size=20000), rng.normal(size=20000)
    truth = (gold_a > gold_b).astype(float)
    flipped = label_pairs(gold_a, gold_b, rng, flip_prob=0.2)
    assert abs(np.mean(flipped != truth) - 0.2) < 4 * math.sqrt(0.2 * 0.8 / 20000)
    beta = 2.0
    boltzmann = label_pairs(gold_a, gold_b, rng, beta=beta)
    p = 1 / (1 + np.exp(-beta * (gold_a - gold_b)))
    assert abs(boltzmann.mean() - p.mean()) < 4 * math.sqrt(np.mean(p * (1 - p)) / 20000)
    assert label_pairs(np.array([1.0]), np.array([1.0]), rng).tolist() == [0.5]
    with pytest.raises(ValueError, match="flip_prob must be in"):
        label_pairs(gold_a, gold_b, rng, flip_prob=0.7)
    with pytest.raises(ValueError, match="beta must be"):
        label_pairs(gold_a, gold_b, rng, beta=-1.0)


def test_bad_training_arguments_name_the_value():
    with pytest.raises(ValueError, match=r"n_pairs must be in 1\.\.\d+, got 0"):
        train_reward_model(ENV_ID, 0)
    with pytest.raises(ValueError, match="features must be one of"):
        train_reward_model(ENV_ID, 5, features="mean")
    with pytest.raises(ValueError, match=r"hidden must be .* got \[0\]"):
        RewardModel(4, [0], env_id=ENV_ID)


def test_save_load_round_trip_is_exact(small_model, tmp_path):
    save_reward_model(small_model, tmp_path / "rm")
    loaded = load_reward_model(tmp_path / "rm")
    assert loaded.describe() == json.loads(json.dumps(small_model.describe()))
    for (name, x), (_, y) in zip(
        small_model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(x, y), name
    x = np.random.default_rng(0).random((16, SUMMARY_DIM), dtype=np.float32)
    assert np.array_equal(small_model.score(x), loaded.score(x))
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())


def test_loading_again_gives_a_private_model_and_sees_a_new_save(small_model, tmp_path):
    # a process keeps the models it read (ogm.cache); OGM with feedback trains its own
    path = save_reward_model(small_model, tmp_path / "rm")
    first = load_reward_model(path)
    with torch.no_grad():
        next(first.parameters()).add_(1.0)
    first.metrics["note"] = "changed"
    again = load_reward_model(path)
    assert torch.equal(next(again.parameters()), next(small_model.parameters()))
    assert "note" not in again.metrics
    other, _ = train_reward_model(ENV_ID, 40, held_out_pairs=40, steps=30, seed=4)
    save_reward_model(other, path)
    assert torch.equal(next(load_reward_model(path).parameters()), next(other.parameters()))


def test_missing_or_corrupt_files_give_clear_errors(small_model, tmp_path):
    with pytest.raises(RewardModelError, match=f"no reward model at .*{META_FILE} is missing"):
        load_reward_model(tmp_path / "nothing")
    path = save_reward_model(small_model, tmp_path / "rm")
    weights = (path / WEIGHTS_FILE).read_bytes()
    (path / WEIGHTS_FILE).write_bytes(weights[: len(weights) // 2])
    with pytest.raises(RewardModelError, match=f"{WEIGHTS_FILE} is corrupt"):
        load_reward_model(path)
    (path / WEIGHTS_FILE).write_bytes(weights)
    meta = json.loads((path / META_FILE).read_text())
    (path / META_FILE).write_text(json.dumps({**meta, "hidden": [3]}))
    with pytest.raises(RewardModelError, match=f"does not match {META_FILE}"):
        load_reward_model(path)
    (path / META_FILE).write_text("{not json")
    with pytest.raises(RewardModelError, match=f"{META_FILE} is corrupt"):
        load_reward_model(path)
    (path / WEIGHTS_FILE).unlink()
    with pytest.raises(RewardModelError, match=f"{WEIGHTS_FILE} is missing"):
        load_reward_model(path)


def test_proxy_reward_scores_the_finished_summary_and_keeps_the_gold(small_model, tmp_path):
    save_reward_model(small_model, tmp_path / "rm")
    env = gym.make(PROXY_ENV_ID, reward_model=str(tmp_path / "rm"))
    obs, _ = env.reset(seed=1)
    for t, a in enumerate([3, 1, 3, 0, 2, 5, 0, 0]):
        obs, reward, terminated, _, info = env.step(a)
        if t < 7:
            assert reward == 0.0 and not terminated
    u = env.unwrapped
    gold = gold_reward(u.salience, u.tokens)
    assert terminated and info["hidden_reward"] == info["env_reward"] == pytest.approx(gold)
    assert reward == small_model.score(obs[None])[0] != pytest.approx(gold)
    with pytest.raises(RewardModelError, match="scores 80 features"):
        ProxyReward(gym.make("ogm/IslandNavigation-v0"), small_model)


def test_proxy_env_through_a_gymnasium_vector_env(small_model, tmp_path):
    save_reward_model(small_model, tmp_path / "rm")
    venv = gym.make_vec(
        PROXY_ENV_ID,
        2,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": AutoresetMode.DISABLED},
        reward_model=str(tmp_path / "rm"),
    )
    venv.reset(seed=0)
    for _ in range(8):
        obs, reward, terminated, _, infos = venv.step(np.array([1, 2]))
    assert terminated.all()
    assert np.allclose(reward, small_model.score(obs), rtol=1e-6)  # batch of 2 vs 1
    assert np.array_equal(infos["hidden_reward"], infos["env_reward"])
    assert not np.allclose(reward, infos["hidden_reward"])
    venv.reset(options={"reset_mask": terminated})  # ogm.agents.rollout's convention


@pytest.mark.parametrize("mode", [AutoresetMode.SAME_STEP, AutoresetMode.DISABLED])
def test_make_vector_keeps_the_gold_as_performance_and_the_events(small_model, tmp_path, mode):
    """Through ``ogm.envs.make_vector`` (every agent's path) the observed reward is the
    proxy while ``hidden_reward`` stays the gold and the task's events come through, also
    for a copy that finishes and resets in the same step."""
    from ogm.baselines.common import event_names_of
    from ogm.envs import make_vector

    save_reward_model(small_model, tmp_path / "rm")
    venv = make_vector(PROXY_ENV_ID, 2, autoreset_mode=mode, reward_model=str(tmp_path / "rm"))
    venv.reset(seed=0)
    for _ in range(8):
        _, reward, terminated, _, infos = venv.step(np.array([1, 1]))
    assert terminated.all() and event_names_of(venv) == ("repeat", "low_salience")
    gold = (
        infos.get("final_info", infos)["env_reward"]
        if mode == AutoresetMode.SAME_STEP
        else infos["env_reward"]
    )
    assert np.array_equal(infos["hidden_reward"], gold)
    assert not np.allclose(reward, infos["hidden_reward"])
    assert infos["events"]["repeat"].all()  # token 1 seven times over


@pytest.mark.parametrize(
    "mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED]
)
def test_vector_wrapper_equals_single_wrappers_on_a_gridworld(mode):
    game, n, seed = "island_navigation", 4, 2
    dim = int(np.prod(GridworldEnv(game).observation_space.shape))
    torch.manual_seed(0)
    model = RewardModel(dim, (16,), env_id="ogm/IslandNavigation-v0", features="sum").eval()
    venv = ProxyRewardVector(GridworldVectorEnv(game, n, autoreset_mode=mode), model)
    singles = [ProxyReward(GridworldEnv(game), model) for _ in range(n)]
    venv.reset(seed=seed)
    for i, env in enumerate(singles):
        env.reset(seed=seed + i)
    pending = np.zeros(n, bool)  # single envs to reset before their next step
    rng = np.random.default_rng(1)
    ended = 0
    for _ in range(150):
        actions = rng.choice(4, size=n, p=[0.2, 0.4, 0.2, 0.2])
        _, reward, terminated, truncated, infos = venv.step(actions)
        for i, env in enumerate(singles):
            if pending[i] and mode == AutoresetMode.NEXT_STEP:
                env.reset()
                pending[i] = False
                assert reward[i] == 0.0
                continue
            _, r, te, tr, info = env.step(actions[i])
            assert reward[i] == pytest.approx(r, rel=1e-6) and terminated[i] == te
            assert infos["hidden_reward"][i] == info["hidden_reward"]
            assert infos["env_reward"][i] == info["env_reward"]
            if te or tr:
                ended += 1
                pending[i] = mode != AutoresetMode.SAME_STEP
                if mode == AutoresetMode.SAME_STEP:
                    env.reset()
        done = terminated | truncated
        if mode == AutoresetMode.DISABLED and done.any():
            venv.reset(options={"reset_mask": done})
            for i in np.flatnonzero(done):
                singles[i].reset()
                pending[i] = False
    assert ended > 2 * n  # several episodes per copy, ended by water, goal or time


def test_best_of_n_kl_values():
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(2) == pytest.approx(math.log(2) - 0.5)
    assert best_of_n_kl(10) == pytest.approx(1.4026, abs=1e-4)  # research.md
    # two equally likely rewards, n = 2: q = (1/4, 3/4)
    hand = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert best_of_n_kl(2, [0.5, 0.5]) == pytest.approx(hand)
    assert hand == pytest.approx(0.1308, abs=1e-4) and hand < best_of_n_kl(2)
    # many small atoms approach the continuous value from below
    fine = best_of_n_kl(8, np.full(100_000, 1e-5))
    assert best_of_n_kl(8) - 1e-3 < fine < best_of_n_kl(8)
    with pytest.raises(ValueError, match="n must be a positive integer, got 0"):
        best_of_n_kl(0)
    with pytest.raises(ValueError, match="level_probs must be probabilities"):
        best_of_n_kl(2, [0.5, 0.6])


@pytest.mark.parametrize("n", [2, 8, 32])
def test_best_of_n_on_the_summaries_reaches_the_analytic_kl(n):
    """Best-of-n as ogm.baselines.best_of_n selects (highest return, ties to the lowest
    copy: np.argmax) from a uniformly random writer, by the gold. The density ratio of the
    kept summary is n F(G)**(n-1), F the writer's CDF of the gold on that document (no
    ties), so KL = E[log n + (n-1) log F(G)], estimated with F from 2000 reference
    summaries per document."""
    rng = np.random.default_rng(n)
    docs, reference, estimates = 2000, 2000, []
    for _ in range(docs // 100):  # 100 documents at a time: bounded memory
        w = rng.dirichlet(np.full(8, 0.5), size=100).astype(np.float32)
        tokens = rng.integers(9, size=(100, reference, 8))
        ref = gold_reward(w[:, None], tokens)
        candidates = gold_reward(w[:, None], rng.integers(9, size=(100, n, 8)))
        kept = candidates[np.arange(100), np.argmax(candidates, axis=1)]
        below = (ref < kept[:, None]).sum(axis=1)
        cdf = (below + 0.5) / (reference + 1)
        estimates.append(np.log(n) + (n - 1) * np.log(cdf))
        summaries = np.unique(tokens[0], axis=0)  # no two different summaries tie
        assert len(np.unique(gold_reward(w[0], summaries))) == len(summaries)
    estimates = np.concatenate(estimates)
    se = estimates.std(ddof=1) / math.sqrt(docs)
    assert abs(estimates.mean() - best_of_n_kl(n)) < 4 * se + 0.01


def test_registered_ids_are_known_to_ogm():
    ogm.envs.check_env(PROXY_ENV_ID)
    with pytest.raises(RewardModelError, match="is missing"):
        gym.make(PROXY_ENV_ID, reward_model="/nonexistent/rm")


RECIPE = {"task": ENV_ID, "pairs": 40, "rm_seed": 3, "rm_steps": 30}


def test_a_recipe_is_trained_once_cached_and_rebuilt_when_corrupt(tmp_path, monkeypatch):
    from ogm.envs.reward_model import RewardModelRecipe, build_reward_model

    monkeypatch.setenv("OGM_CACHE_DIR", str(tmp_path))
    recipe = RewardModelRecipe(**RECIPE)
    path = build_reward_model(recipe)
    assert path.parent == tmp_path / "reward_models" and path.name.startswith("Summarize-40-")
    model = load_reward_model(path)
    assert model.metrics["recipe"] == recipe.model_dump(mode="json")
    direct, _ = train_reward_model(ENV_ID, 40, steps=30, seed=3)  # the recipe's arguments
    for (name, x), (_, y) in zip(
        model.state_dict().items(), direct.state_dict().items(), strict=True
    ):
        assert torch.equal(x, y), name
    stamp = (path / WEIGHTS_FILE).stat().st_mtime_ns
    rng = torch.get_rng_state()
    load_reward_model(path)
    assert torch.equal(torch.get_rng_state(), rng)  # loading draws nothing from the caller's RNG
    assert build_reward_model(recipe) == path  # cached: not trained again
    assert (path / WEIGHTS_FILE).stat().st_mtime_ns == stamp
    with monkeypatch.context() as patch:  # checked once per process while its files stay
        patch.setattr("ogm.envs.reward_model.load_reward_model", lambda _: pytest.fail("read"))
        assert build_reward_model(recipe) == path
    (path / WEIGHTS_FILE).write_bytes(b"not safetensors")
    assert build_reward_model(recipe) == path  # rebuilt whole
    assert load_reward_model(path).metrics["recipe"] == recipe.model_dump(mode="json")
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no staging left
    other = build_reward_model(RewardModelRecipe(**{**RECIPE, "pairs": 41}))
    assert other != path  # another N, another model


def test_the_proxy_env_from_a_recipe_and_its_bad_options(tmp_path, monkeypatch):
    monkeypatch.setenv("OGM_CACHE_DIR", str(tmp_path))
    env = gym.make(PROXY_ENV_ID, **RECIPE)
    obs, _ = env.reset(seed=0)
    for _ in range(8):
        obs, reward, terminated, _, info = env.step(1)
    assert terminated and reward != info["hidden_reward"]  # the proxy, and the gold apart
    w, tokens = env.unwrapped.decode(obs)
    assert info["hidden_reward"] == pytest.approx(gold_reward(w, tokens))
    with pytest.raises(RewardModelError, match="not both"):
        gym.make(PROXY_ENV_ID)
    with pytest.raises(RewardModelError, match="pairs: Input should be greater than 0"):
        gym.make(PROXY_ENV_ID, task=ENV_ID, pairs=0)
    with pytest.raises(RewardModelError, match="rm_sed: Extra inputs"):
        gym.make(PROXY_ENV_ID, task=ENV_ID, pairs=10, rm_sed=1)  # a typo is named


def test_demonstrations_in_the_proxy_env_are_the_tasks_scored_by_the_proxy(tmp_path, monkeypatch):
    from ogm.data.demonstrators import collect

    monkeypatch.setenv("OGM_CACHE_DIR", str(tmp_path))
    scored = collect(PROXY_ENV_ID, 6, epsilon=0.05, skill=0.5, seed=7, **RECIPE)
    plain = collect(ENV_ID, 6, epsilon=0.05, skill=0.5, seed=7)
    model = load_reward_model(next((tmp_path / "reward_models").iterdir()))
    for proxy, task in zip(scored, plain, strict=True):
        assert np.array_equal(proxy.actions, task.actions)  # the same writer, the same draws
        assert proxy.performance == pytest.approx(task.ret)  # the gold
        assert proxy.ret == pytest.approx(float(model.score(proxy.observations[-1:])[0]))
