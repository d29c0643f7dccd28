"""ogm/Summarize-v0: the API checks, the gold by hand, its optimum and tie-freeness, the
demonstrator, and the Gymnasium vector env with the conventions ogm's rollouts use."""

from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

import ogm.envs
from ogm.data.demonstrators import SummaryWriter, make_demonstrator
from ogm.envs.sequence import ENV_ID, SummarizeEnv, best_summary, gold_reward

W = np.array([0.4, 0.3, 0.1, 0.05, 0.05, 0.05, 0.03, 0.02])


def test_passes_gymnasium_and_ogm_env_checks():
    env = gym.make(ENV_ID, render_mode="ansi")
    check_env(env.unwrapped)
    ogm.envs.check_env(ENV_ID)
    obs, _ = env.reset(seed=3)
    assert env.observation_space.contains(obs) and obs.shape == (8 + 8 * 9,)
    assert env.action_space.n == 9
    assert "summary []" in env.render()


@pytest.mark.parametrize(
    "kwargs",
    [{"topics": 1}, {"length": 0}, {"decay": 0.0}, {"repeat_cost": -1.0}, {"concentration": 0}],
)
def test_bad_options_name_the_value(kwargs):
    ((name, value),) = kwargs.items()
    with pytest.raises(ValueError, match=f"bad {name} {value!r}"):
        SummarizeEnv(**kwargs)


def test_gold_by_hand():
    # cost 1/8; attention 0.9**i; token k is topic k - 1, 0 a blank
    # [1, 2, 1, 0, 3, 0, 0, 0]: 0.4 - 1/8, then 0.9 (0.3 - 1/8), a repeat of topic 0 at
    # 0.81 (-0.5 * 0.4 - 1/8), a blank, topic 2 (below the cost) at 0.9**4 (0.1 - 1/8)
    hand = 0.275 + 0.9 * 0.175 + 0.81 * (-0.325) + 0.6561 * (-0.025)
    tokens = np.array([[1, 2, 1, 0, 3, 0, 0, 0], [1, 2, 0, 0, 0, 0, 0, 0], [0] * 8])
    gold = gold_reward(np.stack([W] * 3), tokens)
    assert gold == pytest.approx([hand, 0.275 + 0.9 * 0.175, 0.0], abs=1e-12)
    assert hand == pytest.approx(0.1528475, abs=1e-12)
    assert best_summary(W, 8, 1 / 8).tolist() == [1, 2, 0, 0, 0, 0, 0, 0]
    with pytest.raises(ValueError, match=r"tokens must be in 0\.\.8, got 0\.\.9"):
        gold_reward(W, np.array([9, 0, 0, 0, 0, 0, 0, 0]))


def test_env_pays_the_gold_once_at_the_end_with_events():
    env = gym.make(ENV_ID)
    env.reset(seed=5)
    u = env.unwrapped
    low = int(np.argmin(u.salience)) + 1  # the least salient topic: below the cost
    top = int(np.argmax(u.salience)) + 1
    tokens = [top, low, top, 0, 0, 0, 0, 0]
    seen = []
    for a in tokens:
        obs, reward, terminated, truncated, info = env.step(a)
        seen.append((reward, terminated or truncated, info))
    for reward, ended, info in seen[:-1]:
        assert reward == 0.0 and info["hidden_reward"] == 0.0 and not ended
        assert "performance" not in info
    assert terminated and not truncated
    reward, _, info = seen[-1]
    gold = gold_reward(u.salience, np.array(tokens))
    assert reward == info["hidden_reward"] == info["performance"] == pytest.approx(gold)
    assert [i["events"]["repeat"] for _, _, i in seen[:3]] == [False, False, True]
    assert [i["events"]["low_salience"] for _, _, i in seen[:3]] == [False, True, False]
    salience, written = u.decode(obs)
    assert np.array_equal(salience, u.salience) and written.tolist() == tokens
    with pytest.raises(ValueError, match="finished"):
        u.step(0)


def test_best_summary_is_the_unique_optimum_and_gold_has_no_ties():
    # every one of the 5**4 summaries of 4 topics and 4 positions, on 20 documents
    all_tokens = np.array(list(itertools.product(range(5), repeat=4)))
    rng = np.random.default_rng(0)
    for _ in range(20):
        w = rng.dirichlet(np.full(4, 0.5)).astype(np.float32)
        gold = gold_reward(np.broadcast_to(w, (len(all_tokens), 4)), all_tokens)
        assert len(np.unique(gold)) == len(all_tokens)  # tie-free
        best = best_summary(w, 4, 1 / 4)
        assert np.array_equal(all_tokens[np.argmax(gold)], best)


def test_demonstrator_skill_one_writes_the_optimum_and_lower_skill_writes_worse():
    env = gym.make(ENV_ID)
    golds = {}
    for skill in (0.0, 1.0):
        demo = make_demonstrator(ENV_ID, skill=skill, rng=np.random.default_rng(1), env=env)
        assert isinstance(demo, SummaryWriter)
        golds[skill] = []
        for seed in range(200):
            obs, _ = env.reset(seed=seed)
            for t in range(8):
                obs, reward, *_ = env.step(demo.act(obs, 8 - t))
            golds[skill].append(reward)
            if skill == 1.0:
                u = env.unwrapped
                assert reward == pytest.approx(u.gold(best_summary(u.salience, 8, 1 / 8)))
    gap = np.mean(golds[1.0]) - np.mean(golds[0.0])
    assert gap > 5 * np.std(golds[0.0]) / np.sqrt(200)  # clearly worse, not by chance
    assert np.mean(golds[0.0]) > 0  # decent: still better than an empty summary


@pytest.mark.parametrize("mode", [AutoresetMode.DISABLED, AutoresetMode.SAME_STEP])
def test_vector_env_equals_single_envs_and_carries_the_gold(mode):
    n, seed = 3, 7
    venv = gym.make_vec(
        ENV_ID, n, vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode}
    )
    singles = [gym.make(ENV_ID) for _ in range(n)]
    obs, _ = venv.reset(seed=seed)
    for i, env in enumerate(singles):  # copy i is the single env seeded seed + i
        assert np.array_equal(obs[i], env.reset(seed=seed + i)[0])
    rng = np.random.default_rng(0)
    for _ in range(2):  # two episodes: the second after a reset_mask / an autoreset
        for _step in range(8):
            actions = rng.integers(9, size=n)
            obs, reward, terminated, _, infos = venv.step(actions)
            for i, env in enumerate(singles):
                o, r, te, _, info = env.step(actions[i])
                assert reward[i] == r and terminated[i] == te
                final = infos["final_info"] if te and mode == AutoresetMode.SAME_STEP else infos
                assert final["hidden_reward"][i] == info["hidden_reward"]
                if te and mode == AutoresetMode.SAME_STEP:
                    o = env.reset()[0]
                assert np.array_equal(obs[i], o)
        assert terminated.all()
        if mode == AutoresetMode.DISABLED:  # what ogm.agents.rollout does
            obs, _ = venv.reset(options={"reset_mask": terminated})
            for i, env in enumerate(singles):
                assert np.array_equal(obs[i], env.reset()[0])
