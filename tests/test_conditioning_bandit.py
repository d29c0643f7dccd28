"""The appendix, checked numerically on a one-step bandit with a known demonstrator.

Demonstrations come from pi_0 over four arms with deterministic rewards R(a). A DT trained
on them and asked for a return sampled from P(R | s_0) exp(kappa R) must act like
pi_0(a) exp(kappa R(a)) / Z, the optimum of E[R] - KL(pi || pi_0) for kappa = 1.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from ogm.agents import DTActor, make_strategy, rollout
from ogm.data.trajectory import Trajectory
from ogm.models import DecisionTransformer, DTConfig, return_bin_edges_for
from ogm.train.offline import make_optimizer, update
from ogm.train.segments import TrajectoryPool

PI_0 = np.array([0.4, 0.25, 0.15, 0.2])
REWARD = np.array([0.0, 1.0, 1.0, 2.0])  # arms 1 and 2 share a return: P(a | R) matters


class BanditEnv(gym.Env):
    """One step: pull an arm, receive R(arm), episode over."""

    observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(len(PI_0))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        return np.zeros(1, np.float32), float(REWARD[action]), True, False, {}


def demonstrations(n: int = 1000) -> list[Trajectory]:
    """Exactly n * pi_0(a) pulls of each arm, so the data distribution is pi_0 itself."""
    arms = np.repeat(np.arange(len(PI_0)), (PI_0 * n).round().astype(int))
    return [
        Trajectory(
            observations=np.zeros((2, 1), np.float32),
            actions=np.array([a]),
            rewards=np.array([REWARD[a]]),
            terminations=np.array([True]),
            truncations=np.array([False]),
        )
        for a in arms
    ]


@pytest.fixture(scope="module")
def model() -> DecisionTransformer:
    torch.manual_seed(0)
    config = DTConfig(
        obs_shape=(1,),
        act_dim=len(PI_0),
        discrete=True,
        return_bin_edges=return_bin_edges_for(0.0, 2.0, 3),  # centers 0, 1, 2
        context_len=1,
        n_layer=1,
        n_head=1,
        n_embd=32,
        dropout=0.0,
    )
    model = DecisionTransformer(config)
    pool = TrajectoryPool(demonstrations())
    optimizer, scheduler = make_optimizer(model, 3e-3, 0.0, 20)
    rng = np.random.default_rng(0)
    for _ in range(400):
        update(model, pool.sample(256, 1, rng), optimizer, scheduler, grad_clip=1.0)
    return model.eval()


def induced_policy(model: DecisionTransformer, kappa: float) -> np.ndarray:
    """Exact action distribution of exp_tilted(kappa): sum_R q(R) pi(a | s_0, R)."""
    actor = DTActor(model, 1)
    actor.reset(np.ones(1, bool))
    actor.begin_step(np.zeros((1, 1), np.float32))
    return_probs = actor.return_probs()
    centers = model.return_bin_centers.double().numpy()
    q = make_strategy(f"exp_tilted:{kappa}").target_probs(return_probs, centers)[0]
    n = len(centers)
    with torch.no_grad():
        out = model(
            torch.tensor(centers, dtype=torch.float32).view(n, 1, 1),
            torch.zeros(n, 1, 1),
            torch.zeros(n, 1, dtype=torch.long),
            torch.zeros(n, 1, dtype=torch.long),
        )
    action_given_return = out.policy.probs()[:, 0].double().numpy()  # (n_bins, A)
    return q @ action_given_return


def tilted(kappa: float) -> np.ndarray:
    w = PI_0 * np.exp(kappa * REWARD)
    return w / w.sum()


@pytest.mark.parametrize("kappa", [0.0, 1.0, 3.0])
def test_exp_tilted_matches_tilted_demonstrator(model, kappa):
    pi = induced_policy(model, kappa)
    assert 0.5 * np.abs(pi - tilted(kappa)).sum() < 0.03


def test_exp_tilted_is_the_kl_regularised_optimum(model):
    pi = induced_policy(model, 1.0)
    value = pi @ REWARD - np.sum(pi * np.log(pi / PI_0))
    assert abs(value - np.log(PI_0 @ np.exp(REWARD))) < 0.05


def test_rollout_samples_the_tilted_policy(model):
    """The same through the whole acting path: strategy draws, actor, vector env."""
    env = SyncVectorEnv([BanditEnv] * 50, autoreset_mode=AutoresetMode.DISABLED)
    results = rollout(
        DTActor(model, 50), env, make_strategy("exp_tilted:3"), 4000, seed=1, deterministic=True
    )
    arms = np.array([r.trajectory.actions[0] for r in results])
    freq = np.bincount(arms, minlength=len(PI_0)) / len(arms)
    assert 0.5 * np.abs(freq - tilted(3.0)).sum() < 0.04  # sampling error ~0.01 at n=4000
    targets = np.array([r.target_return for r in results])
    assert np.array_equal(REWARD[arms], targets)  # each arm pays the return asked for


def test_quantilizer_on_the_learned_return_distribution(model):
    """quantilizer(0.3) never asks below the 0.7 quantile of P(R | s_0) (R = 1 here)."""
    env = SyncVectorEnv([BanditEnv] * 50, autoreset_mode=AutoresetMode.DISABLED)
    results = rollout(
        DTActor(model, 50), env, make_strategy("quantilizer:0.3"), 1000, seed=2, deterministic=True
    )
    targets = np.array([r.target_return for r in results])
    assert targets.min() >= 1.0
    # top 30 % of P(R): all of R = 2 (0.2) and 0.1 of the 0.4 at R = 1 -> P(R = 2) = 2/3
    assert abs((targets == 2.0).mean() - 2 / 3) < 0.05
