"""The appendix, checked numerically on one-step bandits with a known demonstrator.

Demonstrations come from pi_0 over four arms. A DT trained on them and asked for a return
drawn from P(R | s_0) exp(kappa x(R)), with x(R) = R / 2 here (the observed returns span
[0, 2]), acts like

    sum_R q(R) P(a | R) = pi_0(a) E[exp(kappa x(R)) | a] / Z.

With deterministic rewards that is pi_0(a) exp(kappa x(R(a))) / Z, the optimum of
E[x(R)] - KL(pi || pi_0) / kappa. With a lottery arm it is not: the agent over-weights the
arm whose return varies, which the KL-regularised optimum does not.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from ogm.agents import ConditionedDT, DTActor, make_strategy, rollout
from ogm.data.trajectory import Trajectory
from ogm.models import DecisionTransformer, DTConfig, return_bin_edges_for
from ogm.train.offline import make_optimizer, update
from ogm.train.segments import TrajectoryPool

PI_0 = np.array([0.4, 0.25, 0.15, 0.2])
# equally likely rewards of each arm; arms 1 and 2 share a return: P(a | R) matters
DETERMINISTIC = ((0.0,), (1.0,), (1.0,), (2.0,))
LOTTERY = ((0.0,), (1.0,), (0.0, 2.0), (2.0,))  # arm 2: 0 or 2, mean 1 like arm 1
SPAN = 2.0  # observed return range: exp_tilted's unit


class BanditEnv(gym.Env):
    """One step: pull an arm, receive R(arm), episode over."""

    observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(len(PI_0))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        reward = DETERMINISTIC[action][0]
        return np.zeros(1, np.float32), reward, True, False, {}


def demonstrations(arms: tuple[tuple[float, ...], ...], n: int = 1200) -> list[Trajectory]:
    """Exactly n * pi_0(a) pulls of each arm, its rewards in equal shares: the data
    distribution is pi_0 and the reward distribution exactly."""
    pulls = []
    for a, count in enumerate((PI_0 * n).round().astype(int)):
        outcomes = arms[a]
        pulls += [(a, outcomes[i % len(outcomes)]) for i in range(count)]
    return [
        Trajectory(
            observations=np.zeros((2, 1), np.float32),
            actions=np.array([a]),
            rewards=np.array([r]),
            terminations=np.array([True]),
            truncations=np.array([False]),
        )
        for a, r in pulls
    ]


def train(arms: tuple[tuple[float, ...], ...]) -> DecisionTransformer:
    torch.manual_seed(0)
    config = DTConfig(
        obs_shape=(1,),
        act_dim=len(PI_0),
        discrete=True,
        return_bin_edges=return_bin_edges_for(0.0, 2.0, 3),  # centers 0, 1, 2
        reward_scale=0.5,  # what build_model picks: 1 / max |return|
        context_len=1,
        n_layer=1,
        n_head=1,
        n_embd=32,
        dropout=0.0,
    )
    model = DecisionTransformer(config)
    pool = TrajectoryPool(demonstrations(arms))
    optimizer, scheduler = make_optimizer(model, 3e-3, 0.0, 20)
    rng = np.random.default_rng(0)
    for _ in range(1000):
        update(model, pool.sample(256, 1, rng), optimizer, scheduler, grad_clip=1.0)
    return model.eval()


@pytest.fixture(scope="module")
def model() -> DecisionTransformer:
    return train(DETERMINISTIC)


@pytest.fixture(scope="module")
def lottery_model() -> DecisionTransformer:
    return train(LOTTERY)


def strategy(spec: str):
    """A strategy that has observed the demonstrations' returns, as the callers do."""
    s = make_strategy(spec)
    s.observe([0.0, 1.0, 2.0])
    return s


def induced_policy(model: DecisionTransformer, kappa: float) -> np.ndarray:
    """Exact action distribution of exp_tilted(kappa): sum_R q(R) pi(a | s_0, R)."""
    actor = DTActor(model, 1)
    actor.reset(np.ones(1, bool))
    actor.begin_step(np.zeros((1, 1), np.float32))
    return_probs = actor.return_probs()
    centers = model.return_bin_centers.double().numpy()
    q = strategy(f"exp_tilted:{kappa}").target_probs(return_probs, centers)[0]
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


def normalise(w: np.ndarray) -> np.ndarray:
    return w / w.sum()


def kl_optimum(arms, kappa: float) -> np.ndarray:
    """pi_0(a) exp(kappa E[x(R) | a]) / Z: the maximiser of E[x(R)] - KL(pi || pi_0) / kappa."""
    return normalise(PI_0 * np.exp(kappa * np.array([np.mean(r) for r in arms]) / SPAN))


def hindsight_policy(arms, kappa: float) -> np.ndarray:
    """pi_0(a) E[exp(kappa x(R)) | a] / Z: what conditioning on a tilted return gives."""
    return normalise(PI_0 * np.array([np.mean(np.exp(kappa * np.array(r) / SPAN)) for r in arms]))


def tv(p: np.ndarray, q: np.ndarray) -> float:
    return 0.5 * float(np.abs(p - q).sum())


@pytest.mark.parametrize("kappa", [0.0, 2.0, 6.0])
def test_exp_tilted_is_the_kl_regularised_optimum_when_rewards_are_deterministic(model, kappa):
    pi = induced_policy(model, kappa)
    assert tv(pi, kl_optimum(DETERMINISTIC, kappa)) < 0.03
    # its value: E[x] - KL(pi || pi_0) / kappa is maximal, log E_pi0[exp(kappa x)] / kappa
    if kappa > 0:
        x = np.array([r[0] for r in DETERMINISTIC]) / SPAN
        value = pi @ x - np.sum(pi * np.log(pi / PI_0)) / kappa
        assert abs(value - np.log(PI_0 @ np.exp(kappa * x)) / kappa) < 0.02


def test_exp_tilted_favours_lotteries_when_rewards_are_stochastic(lottery_model):
    """Arms 1 and 2 have the same mean return; the optimum keeps pi_0's 0.25 : 0.15, the
    return-conditioned agent prefers the lottery arm 2."""
    kappa = 4.0
    pi = induced_policy(lottery_model, kappa)
    assert tv(pi, hindsight_policy(LOTTERY, kappa)) < 0.03
    optimum = kl_optimum(LOTTERY, kappa)
    assert tv(optimum, hindsight_policy(LOTTERY, kappa)) > 0.1  # the two differ: a real test
    assert tv(pi, optimum) > 0.1
    assert pi[2] / pi[1] > 1.5 * optimum[2] / optimum[1]


def test_rollout_samples_the_tilted_policy(model):
    """The same through the whole acting path: strategy draws, agent, vector env."""
    env = SyncVectorEnv([BanditEnv] * 50, autoreset_mode=AutoresetMode.DISABLED)
    agent = ConditionedDT(model, strategy("exp_tilted:6"))
    sampled = rollout(agent, env, 4000, seed=1, deterministic=False)
    arms = np.array([r.trajectory.actions[0] for r in sampled])
    freq = np.bincount(arms, minlength=len(PI_0)) / len(arms)
    assert tv(freq, kl_optimum(DETERMINISTIC, 6.0)) < 0.03  # sampling error ~0.01 at n=4000
    greedy = rollout(agent, env, 1000, seed=2, deterministic=True)
    arms = np.array([r.trajectory.actions[0] for r in greedy])
    reward = np.array([r[0] for r in DETERMINISTIC])
    assert np.array_equal(reward[arms], [r.target_return for r in greedy])  # pays what asked


def test_quantilizer_on_the_learned_return_distribution(model):
    """quantilizer(0.3) never asks below the 0.7 quantile of P(R | s_0) (R = 1 here)."""
    env = SyncVectorEnv([BanditEnv] * 50, autoreset_mode=AutoresetMode.DISABLED)
    agent = ConditionedDT(model, strategy("quantilizer:0.3"))
    results = rollout(agent, env, 1000, seed=2, deterministic=True)
    targets = np.array([r.target_return for r in results])
    assert targets.min() >= 1.0
    # top 30 % of P(R): all of R = 2 (0.2) and 0.1 of the 0.4 at R = 1 -> P(R = 2) = 2/3
    assert abs((targets == 2.0).mean() - 2 / 3) < 0.05
