"""Batched acting: the rolling context equals a full re-encode, rollouts are exact and
reproducible."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from ogm.agents import ConditionedDT, DTActor, make_strategy, rollout
from ogm.models import DecisionTransformer, DTConfig, return_bin_edges_for


class WalkEnv(gym.Env):
    """A random walk whose episode length depends on the reset seed's draws (3 to 9 steps);
    reward = action - 1 plus noise, hidden reward = -reward, event "right" when action 2."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos, self.t = 0.0, 0
        self.length = int(self.np_random.integers(3, 10))
        return self._obs(), {}

    def _obs(self):
        return np.array([self.pos, self.t / 10], np.float32)

    def step(self, action):
        self.pos += float(action) - 1
        self.t += 1
        reward = float(action) - 1 + float(self.np_random.normal(0, 0.1))
        info = {"hidden_reward": -reward, "events": {"right": action == 2}}
        return self._obs(), reward, self.t >= self.length, False, info


def conditioned(model: DecisionTransformer, spec: str) -> ConditionedDT:
    return ConditionedDT(model, make_strategy(spec))


def make_env(n: int, mode=AutoresetMode.DISABLED) -> SyncVectorEnv:
    return SyncVectorEnv([WalkEnv] * n, autoreset_mode=mode)


@pytest.fixture(scope="module")
def model() -> DecisionTransformer:
    torch.manual_seed(0)
    config = DTConfig(
        obs_shape=(2,),
        act_dim=3,
        discrete=True,
        return_bin_edges=return_bin_edges_for(-9, 9, 19),
        context_len=3,
        use_timesteps=True,
        max_ep_len=16,
        n_layer=2,
        n_head=2,
        n_embd=32,
        dropout=0.0,
    )
    return DecisionTransformer(config).eval()


def test_rolling_context_equals_a_full_re_encode(model):
    """Every action taken equals the mode of the model re-run from scratch on the last K
    steps of that episode, with the return-to-go decreased by the rewards received."""
    K = model.config.context_len
    results = rollout(conditioned(model, "prior"), make_env(4), 30, seed=0, deterministic=True)
    assert len(results) == 30 and max(r.trajectory.length for r in results) > 2 * K  # wraps
    for r in results:
        traj = r.trajectory
        rtg = r.target_return - np.concatenate(([0.0], np.cumsum(traj.rewards.astype(np.float64))))
        for t in range(traj.length):
            w = slice(max(0, t - K + 1), t + 1)
            out = model(
                torch.tensor(rtg[w], dtype=torch.float32).view(1, -1, 1),
                torch.tensor(traj.states[w])[None],
                torch.tensor(traj.actions[w])[None],
                torch.arange(w.start, w.stop)[None],
            )
            assert out.policy.logits[0, -1].argmax().item() == traj.actions[t]


def test_rollout_replays_exactly_in_a_fresh_env(model):
    """The first episode of copy i is the env's own episode for seed + i and those actions."""
    results = rollout(conditioned(model, "fixed:2.0"), make_env(3), 7, seed=10, deterministic=False)
    for i, r in enumerate(results[:3]):
        env, traj = WalkEnv(), r.trajectory
        obs, _ = env.reset(seed=10 + i)
        np.testing.assert_array_equal(obs, traj.observations[0])
        for t, a in enumerate(traj.actions):
            obs, reward, term, _, info = env.step(a)
            np.testing.assert_array_equal(obs, traj.observations[t + 1])
            assert reward == pytest.approx(traj.rewards[t]) and term == traj.terminations[t]
            assert info["hidden_reward"] == pytest.approx(traj.hidden_rewards[t])
            assert info["events"]["right"] == traj.events["right"][t]
        assert traj.terminations[-1] and r.target_return == 2.0 and traj.source == "online"
    assert all(r.trajectory.terminations[-1] for r in results)


def test_same_seed_same_actions(model):
    def actions(seed):
        results = rollout(
            conditioned(model, "exp_tilted:1"),
            make_env(4),
            12,
            seed=seed,
            deterministic=False,
        )
        return [r.trajectory.actions.tolist() for r in results], [r.target_return for r in results]

    assert actions(3) == actions(3)
    assert actions(3) != actions(4)


def test_more_copies_than_episodes_and_checks(model):
    results = rollout(conditioned(model, "prior"), make_env(5), 2, seed=0, deterministic=True)
    assert len(results) == 2
    with pytest.raises(ValueError, match=r"autoreset_mode=AutoresetMode\.DISABLED"):
        rollout(
            conditioned(model, "prior"),
            make_env(2, AutoresetMode.NEXT_STEP),
            1,
            seed=0,
            deterministic=True,
        )


def test_buffers_are_not_reallocated(model):
    """Past 2K steps the rolling context wraps in place: no tensor is reallocated."""
    actor = DTActor(model, 2)
    pointers = [
        t.data_ptr() for t in (actor.observations, actor.actions, actor.returns_to_go, actor.mask)
    ]
    env = make_env(2)
    obs, _ = env.reset(seed=0)
    for _ in range(3 * actor.K):
        actor.begin_step(obs)
        obs = env.step(actor.act(deterministic=True))[0]
        actor.record_rewards(np.zeros(2))
        if actor.steps.max() >= 5:  # keep the walk episodes alive: restart both copies
            actor.reset(np.ones(2, bool))
            obs, _ = env.reset(seed=0)
    assert pointers == [
        t.data_ptr() for t in (actor.observations, actor.actions, actor.returns_to_go, actor.mask)
    ]
