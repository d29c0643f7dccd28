"""The exact solvers of ``ogm.studies.finite_mdp`` on cases with known answers.

kappa below is in raw return units (the solvers' unit). With kappa = ln 2 the tilt
``exp(kappa R)`` is ``2^R``, so the bandit's numbers are fractions one can check by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ogm.studies import finite_mdp as fm

LN2 = math.log(2.0)


def policy_of(mdp: fm.FiniteMDP, probs: np.ndarray) -> np.ndarray:
    """The action conditionals of a trajectory distribution: P(a_t = a | s_t = s)."""
    T = mdp.trajectories
    through = np.zeros((mdp.n_states, mdp.n_actions))
    for t in range(mdp.horizon):
        np.add.at(through, (T.states[:, t], T.actions[:, t]), probs)
    total = through.sum(1, keepdims=True)
    return np.where(total > 0, through / np.where(total > 0, total, 1), mdp.prior)


# ----------------------------------------------------------------------------- by hand


def test_bandit_tilted_and_optimum_by_hand():
    """pi_0 = (0.4, 0.25, 0.15, 0.2), returns (0, 1, 1, 2), 2^R: weights (0.4, 0.5, 0.3, 0.8),
    Z = 2; the optimum's value is log(Z) / kappa = 1."""
    mdp = fm.bandit()
    expected = np.array([0.2, 0.25, 0.15, 0.4])
    assert np.allclose(fm.tilted(mdp, LN2), expected)
    policy, V = fm.soft_value_iteration(mdp, LN2)
    assert np.allclose(policy[0], expected)
    assert V[0] == pytest.approx(1.0)
    assert fm.objective(mdp, fm.tilted(mdp, LN2), LN2) == pytest.approx(1.0)
    assert np.allclose(fm.factorised(mdp, LN2)[0], expected)


def test_lottery_bandit_by_hand():
    """Arm 2 pays 0 or 2: E[2^R] = 2.5 but 2^E[R] = 2. Factorised: pi_0 x (1, 2, 2.5, 4) / 2.075;
    optimum: pi_0 x (1, 2, 2, 4) / 2; the tilted distribution also tilts the lottery's
    outcome (0 and 2 in the ratio 1 : 4), which no policy can."""
    mdp = fm.lottery()
    factorised = fm.factorised(mdp, LN2)[0]
    assert np.allclose(factorised, np.array([0.4, 0.5, 0.375, 0.8]) / 2.075)
    optimum, V = fm.soft_value_iteration(mdp, LN2)
    assert np.allclose(optimum[0], np.array([0.4, 0.5, 0.3, 0.8]) / 2.0)
    assert V[0] == pytest.approx(1.0)
    b = fm.tilted(mdp, LN2)
    T = mdp.trajectories
    lottery = T.actions[:, 0] == 2
    assert np.allclose(np.sort(b[lottery]), np.array([0.075, 0.3]) / 2.075)
    assert fm.objective(mdp, b, LN2) == pytest.approx(math.log(2.075) / LN2)  # above the optimum


def test_two_step_chain_by_hand():
    """Depth 2: returns 0 (00), 1 (01, 10), 4 (11: 1 + 1 + bonus 2); pi_0(1) = 0.3 at the
    start, then 0.5 after a 1 and 0.3 after a 0."""
    mdp = fm.chain(horizon=2)
    p0 = fm.trajectory_probs(mdp, mdp.prior)
    by_moves = {
        tuple(a): (p, r)
        for a, p, r in zip(mdp.trajectories.actions, p0, mdp.trajectories.returns, strict=True)
    }
    assert by_moves[(0, 0)] == pytest.approx((0.49, 0))
    assert by_moves[(0, 1)] == pytest.approx((0.21, 1))
    assert by_moves[(1, 0)] == pytest.approx((0.15, 1))
    assert by_moves[(1, 1)] == pytest.approx((0.15, 4))
    z = 0.49 + (0.21 + 0.15) * 2 + 0.15 * 16  # E_p0[2^R] = 3.61
    _, V = fm.soft_value_iteration(mdp, LN2)
    assert V[0] == pytest.approx(math.log(z) / LN2)


# ----------------------------------------------------------------------------- identities


@pytest.mark.parametrize("name", list(fm.MDPS))
def test_distributions_are_normalised(name):
    mdp = fm.MDPS[name]()
    assert fm.trajectory_probs(mdp, mdp.prior).sum() == pytest.approx(1.0)
    dist, joint = fm.return_distribution(mdp)
    assert np.allclose(dist.sum(1), 1.0)
    inner = mdp.depth < mdp.horizon
    assert np.allclose(joint[inner].sum((1, 2)), 1.0)
    _, cond, _ = fm.return_conditioned(mdp)
    assert np.allclose(cond.sum(2), 1.0)
    for kappa in (0.5, 2.0):
        for p in (fm.tilted(mdp, kappa), fm.trajectory_probs(mdp, fm.factorised(mdp, kappa))):
            assert p.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["bandit", "chain"])
@pytest.mark.parametrize("kappa", [0.3, 1.0, 3.0])
def test_deterministic_dynamics_everything_coincides(name, kappa):
    """(b) tilted = (c) KL optimum = (d) factorised = (a*) exact return conditioning, and
    the optimum's value is log E_p0[exp(kappa R)] / kappa."""
    mdp = fm.MDPS[name]()
    b = fm.tilted(mdp, kappa)
    policy, V = fm.soft_value_iteration(mdp, kappa)
    c = fm.trajectory_probs(mdp, policy)
    d = fm.trajectory_probs(mdp, fm.factorised(mdp, kappa))
    head, cond, defined = fm.return_conditioned(mdp)
    q = head[0] * np.exp(kappa * np.arange(mdp.max_return + 1))
    a_star, off = fm.conditioned_trajectory_probs(mdp, q / q.sum(), cond, defined)
    for p in (c, d, a_star):
        assert fm.tv(p, b) < 1e-12
    assert off == 0.0
    p0 = fm.trajectory_probs(mdp, mdp.prior)
    log_z = math.log(p0 @ np.exp(kappa * mdp.trajectories.returns)) / kappa
    assert V[0] == pytest.approx(log_z)
    assert fm.objective(mdp, c, kappa) == pytest.approx(log_z)


@pytest.mark.parametrize("name", list(fm.MDPS))
def test_the_optimum_beats_every_perturbed_policy(name):
    """(c) maximises E[R] - KL / kappa over policies: random policies near it do worse."""
    mdp, kappa = fm.MDPS[name](), 0.7
    policy, V = fm.soft_value_iteration(mdp, kappa)
    best = fm.objective(mdp, fm.trajectory_probs(mdp, policy), kappa)
    assert best == pytest.approx(V[0])
    rng = np.random.default_rng(0)
    for _ in range(20):
        other = policy * np.exp(0.3 * rng.standard_normal(policy.shape))
        other /= other.sum(1, keepdims=True)
        assert fm.objective(mdp, fm.trajectory_probs(mdp, other), kappa) < best + 1e-12


@pytest.mark.parametrize("name", list(fm.MDPS))
def test_factorised_policy_is_the_tilted_distributions_action_conditionals(name):
    """(d) takes each action with (b)'s conditional probability given the state, also with
    stochastic dynamics, where (b) itself is no policy's distribution."""
    mdp, kappa = fm.MDPS[name](), 1.3
    conditionals = policy_of(mdp, fm.tilted(mdp, kappa))
    inner = mdp.depth < mdp.horizon
    assert np.allclose(conditionals[inner], fm.factorised(mdp, kappa)[inner])


@pytest.mark.parametrize("name", list(fm.MDPS))
def test_per_step_tilt_of_exact_heads_is_the_factorisation(name):
    """Bayes: pi_0(a|s) E[e^(kappa G)|s,a] ~ sum_g P(g|s) e^(kappa g) pi_0(a|s,g)."""
    mdp, kappa = fm.MDPS[name](), 0.9
    head, cond, _ = fm.return_conditioned(mdp)
    tilt = fm.per_step_tilt(head, cond, kappa, np.ones(mdp.max_return + 1, bool))
    inner = mdp.depth < mdp.horizon
    assert np.allclose(tilt[inner], fm.factorised(mdp, kappa)[inner])


def test_stochastic_dynamics_the_factorisation_is_optimistic():
    """(c) != (d), the gap growing with kappa; (d)'s objective is below the optimum's."""
    for name in ("lottery", "slippery_chain", "gamble"):
        mdp = fm.MDPS[name]()
        distances, gaps = [], []
        for kappa in (0.1, 0.3, 1.0):
            policy, V = fm.soft_value_iteration(mdp, kappa)
            c = fm.trajectory_probs(mdp, policy)
            d = fm.trajectory_probs(mdp, fm.factorised(mdp, kappa))
            distances.append(fm.tv(c, d))
            gaps.append(V[0] - fm.objective(mdp, d, kappa))
        assert 0 < distances[0] < distances[1] < distances[2], name
        assert 0 < gaps[0] < gaps[1] < gaps[2], name


def test_return_conditioning_under_stochastic_dynamics():
    """On the one-step lottery exact return conditioning is (d); on the multi-step gamble it
    is not, and it is asked for returns-to-go that bad luck made impossible, even when its
    target is drawn from P(R) itself (kappa = 0), so that it is not pi_0 either."""
    for name, equal in (("lottery", True), ("gamble", False)):
        mdp = fm.MDPS[name]()
        head, cond, defined = fm.return_conditioned(mdp)
        for kappa in (0.0, 0.5):
            q = head[0] * np.exp(kappa * np.arange(mdp.max_return + 1))
            a_star, off = fm.conditioned_trajectory_probs(mdp, q / q.sum(), cond, defined)
            d = fm.trajectory_probs(mdp, fm.factorised(mdp, kappa))
            assert (fm.tv(a_star, d) < 1e-12) == equal
            assert (off == 0.0) == equal
    gamble = fm.gamble()
    head, cond, defined = fm.return_conditioned(gamble)
    _, off = fm.conditioned_trajectory_probs(gamble, head[0], cond, defined)
    assert 0.15 < off < 0.25  # measured 0.195


def test_tv_and_kl():
    rng = np.random.default_rng(1)
    for _ in range(20):
        p, q = rng.dirichlet(np.ones(6)), rng.dirichlet(np.ones(6))
        assert fm.tv(p, q) == pytest.approx(fm.tv(q, p))
        assert 0 <= fm.tv(p, q) <= 1
        assert fm.tv(p, q) == pytest.approx(max(p[p > q].sum() - q[p > q].sum(), 0))
        assert fm.tv(p, q) <= math.sqrt(fm.kl(p, q) / 2) + 1e-12  # Pinsker
        assert fm.kl(p, p) == pytest.approx(0.0, abs=1e-12)
    assert fm.kl(np.array([0.5, 0.5]), np.array([1.0, 0.0])) == math.inf


def test_env_follows_the_mdp():
    mdp = fm.gamble()
    env = fm.make_env("gamble")
    obs, _ = env.reset(seed=0)
    assert obs.argmax() == 0 and obs.sum() == 1
    returns = []
    for _ in range(2000):  # reseeded once above
        env.reset()
        total, done, steps = 0.0, False, 0
        while not done:
            _, reward, done, truncated, _ = env.step(1)  # always gamble: 3 w.p. 0.3
            total, steps = total + reward, steps + 1
        assert steps == mdp.horizon and not truncated
        returns.append(total)
    # 3 gambles of mean 0.9; the standard error of the mean is 0.053
    assert np.mean(returns) == pytest.approx(3 * 0.9, abs=0.2)
