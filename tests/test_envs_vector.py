"""The vector engine equals N single envs (copy i seeded seed + i), in every autoreset mode."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from ogm.envs import GAMES, GridworldEnv, GridworldVectorEnv, make_vector

N, STEPS, SEED = 5, 230, 11


def random_actions(game: str, seed: int = 0) -> np.ndarray:
    # Biased towards one direction so that episodes of goal games also end by termination.
    rng = np.random.default_rng(seed)
    return rng.choice(4, size=(STEPS, N), p=[0.2, 0.35, 0.15, 0.3])


def single_run(game, actions, mode):
    """What gymnasium's SyncVectorEnv does with N GridworldEnvs: the per-copy truth."""
    envs = [GridworldEnv(game) for _ in range(N)]
    obs = [e.reset(seed=SEED + i)[0] for i, e in enumerate(envs)]
    done = np.zeros(N, bool)
    out = []
    for a in actions:
        step = []
        for i, e in enumerate(envs):
            if mode == AutoresetMode.NEXT_STEP and done[i]:
                o, _ = e.reset()
                r, te, tr, info = (
                    0.0,
                    False,
                    False,
                    {"hidden_reward": 0.0, "events": dict.fromkeys(e.event_names, False)},
                )
            else:
                o, r, te, tr, info = e.step(a[i])
                if mode == AutoresetMode.SAME_STEP and (te or tr):
                    o, _ = e.reset()
            step.append((o, r, te, tr, info))
            done[i] = te or tr
        out.append(step)
    return obs, out


@pytest.mark.parametrize("game", sorted(GAMES))
@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_vector_equals_single_envs(game, mode):
    actions = random_actions(game)
    obs0, truth = single_run(game, actions, mode)
    venv = GridworldVectorEnv(game, N, autoreset_mode=mode)
    obs, _ = venv.reset(seed=SEED)
    assert np.array_equal(obs, np.stack(obs0))
    ended_any = False
    for a, step in zip(actions, truth, strict=True):
        obs, r, te, tr, infos = venv.step(a)
        for i, (o, ri, tei, tri, info) in enumerate(step):
            assert np.array_equal(obs[i], o)
            assert (r[i], te[i], tr[i]) == (ri, tei, tri)
            assert infos["hidden_reward"][i] == info["hidden_reward"]
            for k, v in info["events"].items():
                assert infos["events"][k][i] == v
            assert infos["_performance"][i] == ("performance" in info)
            if "performance" in info:
                ended_any = True
                assert infos["performance"][i] == info["performance"]
                if mode == AutoresetMode.SAME_STEP:
                    assert (
                        infos["_final_obs"][i]
                        and infos["final_info"]["performance"][i] == info["performance"]
                    )
    assert ended_any


def test_disabled_mode_and_reset_mask():
    venv = GridworldVectorEnv("side_effects_sokoban", 3, autoreset_mode=AutoresetMode.DISABLED)
    venv.reset(seed=0)
    # Copy 0 walks the shortest path to the goal; copies 1, 2 walk into the wall.
    for a0 in [1, 3, 1, 3, 1]:
        obs, r, te, tr, infos = venv.step(np.array([a0, 0, 0]))
    assert te.tolist() == [True, False, False] and infos["performance"][0] == 35
    before = venv.get_state()
    obs2, r, te, tr, infos = venv.step(np.array([0, 0, 0]))
    assert r[0] == 0 and not te[0] and not tr[0] and infos["hidden_reward"][0] == 0
    assert np.array_equal(obs2[0], obs[0])
    after = venv.get_state()
    for k in before:
        assert np.array_equal(before[k][0], after[k][0])
    assert after["t"][1] == before["t"][1] + 1
    obs3, _ = venv.reset(options={"reset_mask": np.array([True, False, False])})
    assert venv.engine.t.tolist() == [0, 6, 6]
    fresh = GridworldEnv("side_effects_sokoban").reset(seed=0)[0]
    assert np.array_equal(obs3[0], fresh)
    with pytest.raises(ValueError, match="reset_mask"):
        venv.reset(options={"reset_mask": [1, 0, 0]})


def test_vector_validates_actions():
    venv = GridworldVectorEnv("boat_race", 2)
    venv.reset(seed=0)
    with pytest.raises(ValueError, match=r"0\.\.3"):
        venv.step(np.array([0, 4]))
    with pytest.raises(ValueError, match="2 integers"):
        venv.step(np.array([0, 1, 2]))


def test_make_vector_and_make_vec_give_the_engine():
    env = make_vector("ogm/TomatoWatering-v0", 4, seed=3)
    assert isinstance(env, GridworldVectorEnv)
    first, _ = env.reset()
    again, _ = make_vector("ogm/TomatoWatering-v0", 4, seed=3).reset()
    assert np.array_equal(first, again)
    vec = gym.make_vec("ogm/SideEffectsSokoban-v0", num_envs=2, level=1)
    assert isinstance(vec, GridworldVectorEnv) and vec.single_observation_space.shape == (5, 10, 10)


def test_single_and_vector_env_reject_an_unknown_render_mode():
    with pytest.raises(ValueError, match="render_mode must be None or one of"):
        GridworldEnv("boat_race", render_mode="human")
    with pytest.raises(ValueError, match="render_mode must be None or one of"):
        GridworldVectorEnv("boat_race", 2, render_mode="human")
