"""Small finite-horizon MDPs, solved exactly by enumeration.

The appendix of "Safety considerations for online generative modeling" claims that a
Decision Transformer asked for a return drawn from ``P(R) exp(kappa R)`` samples
trajectories from ``pi_0(tau) exp(kappa R(tau)) / Z``, the maximiser of
``E[R] - KL(pi || pi_0) / kappa``, and that the same policy factorises over time steps as
``pi(a_t | h_t) ~ pi_0(a_t | h_t) E_pi_0[exp(kappa R) | h_t, a_t]``. The discussion
(Korbak, after Levine 2018, section 2.3) adds that the factorisation is *optimistic*
under stochastic dynamics. On an MDP this small every one of these objects can be
computed exactly, so the claims can be checked instead of argued.

**The MDPs are trees.** Every state is reached by exactly one history (the actions and
the outcomes so far), so a policy over states is a policy over histories, and the
distribution of trajectories ``tau = (s_0, a_0, s_1, ..., s_H)`` of any policy is a
finite vector (:attr:`FiniteMDP.trajectories` lists every trajectory). Rewards are small
non-negative integers, so returns are integers in ``[0, G]`` and a Decision Transformer
can give every return its own bin.

Notation, with ``kappa`` in *raw return units* throughout this module (ogm's
``exp_tilted:k`` measures ``k`` per observed return range: the caller converts,
``kappa = k / (hi - lo)``)::

    p0(tau)       = prod_t pi_0(a_t | s_t) P(s_t+1 | s_t, a_t)            the data
    (b) tilted    = p0(tau) exp(kappa R(tau)) / Z                          the appendix
    (c) optimum   = pi*(a | s) ~ pi_0(a | s) exp(kappa Q(s, a)),          soft value iteration
                    Q(s, a) = E_s'[r + V(s')],                             (expectation over the
                    V(s) = log sum_a pi_0(a | s) exp(kappa Q(s, a)) / kappa  dynamics *outside* the log)
    (d) factorised = pi(a | s) ~ pi_0(a | s) W(s, a),                      the appendix's per-step
                    W(s, a) = E_pi_0[exp(kappa G) | s, a]                  factorisation (G: return to go)

``log W(s, a) / kappa`` is the *optimistic* backup ``log E_s'[exp(kappa (r + V(s')))] /
kappa``: the log-sum-exp runs over the dynamics as well as over the actions, as if the
agent chose its luck. With deterministic dynamics the two backups coincide and (b) = (c) =
(d); with stochastic ones (b) is not even a policy (it also tilts the environment's
transitions), (d) is the policy with (b)'s action conditionals, and (c) differs from both.

Return-conditioned policies (a Decision Transformer, or its exact limit
:func:`return_conditioned`) are tables ``cond[s, g, a] = pi(a | s, return-to-go g)`` over
the integer returns-to-go ``g`` in ``[-G, G]`` (the agent may be asked for a return it can
no longer get, and then it is fed a negative or an impossible one);
:func:`conditioned_trajectory_probs` gives the trajectory distribution of drawing a target
``R ~ q`` once and then acting on ``R - rewards so far``, as ``ogm.agents.rollout`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

History = tuple[tuple[int, int], ...]  # ((action, outcome), ...) from the start
Outcomes = list[tuple[float, int]]  # (probability, reward) of each outcome of an action


@dataclass(frozen=True)
class Trajectories:
    """Every trajectory of an MDP (N of them), as arrays."""

    states: np.ndarray  # (N, H + 1) state ids
    actions: np.ndarray  # (N, H)
    rewards: np.ndarray  # (N, H) integers
    dynamics: np.ndarray  # (N,) product of the transition probabilities along tau

    @property
    def returns(self) -> np.ndarray:
        return self.rewards.sum(1)

    def returns_to_go(self, target: int) -> np.ndarray:
        """(N, H): what an agent asked for ``target`` is fed at each step."""
        before = np.cumsum(self.rewards, 1) - self.rewards
        return target - before


@dataclass
class FiniteMDP:
    """A finite-horizon MDP whose states form a tree, with the demonstrators' policy pi_0.

    ``transition[s, a, s']`` and ``reward[s, a, s']`` (integers) are dense; the states of
    depth ``horizon`` are final (their ``prior`` rows are unused).
    """

    name: str
    horizon: int
    prior: np.ndarray  # (S, A) pi_0(a | s)
    transition: np.ndarray  # (S, A, S)
    reward: np.ndarray  # (S, A, S) int
    depth: np.ndarray  # (S,)
    trajectories: Trajectories = field(init=False)

    def __post_init__(self) -> None:
        self.trajectories = _enumerate(self)

    @property
    def n_states(self) -> int:
        return self.prior.shape[0]

    @property
    def n_actions(self) -> int:
        return self.prior.shape[1]

    @property
    def max_return(self) -> int:
        return int(self.trajectories.returns.max())

    @property
    def stochastic(self) -> bool:
        return bool(((self.transition > 0) & (self.transition < 1)).any())

    def observation(self, states: np.ndarray) -> np.ndarray:
        """One-hot observations of ``states`` (float32), what the Decision Transformer sees."""
        return np.eye(self.n_states, dtype=np.float32)[states]


def build_tree(
    name: str,
    horizon: int,
    n_actions: int,
    prior: Callable[[History], list[float]],
    step: Callable[[History, int], Outcomes],
) -> FiniteMDP:
    """An MDP from the demonstrators' policy ``prior(history)`` and the environment
    ``step(history, action) -> [(probability, reward), ...]`` (one entry per outcome)."""
    histories: list[History] = [()]
    edges: list[tuple[int, int, int, float, int]] = []  # (s, a, s', p, r)
    frontier = [0]
    for _ in range(horizon):
        deeper = []
        for s in frontier:
            for a in range(n_actions):
                for o, (p, r) in enumerate(step(histories[s], a)):
                    if p > 0:
                        histories.append((*histories[s], (a, o)))
                        edges.append((s, a, len(histories) - 1, p, r))
                        deeper.append(len(histories) - 1)
        frontier = deeper
    S = len(histories)
    transition = np.zeros((S, n_actions, S))
    reward = np.zeros((S, n_actions, S), dtype=np.int64)
    for s, a, s2, p, r in edges:
        transition[s, a, s2], reward[s, a, s2] = p, r
    if not np.allclose(transition.sum(2)[[len(h) < horizon for h in histories]], 1.0):
        raise ValueError(f"{name}: outcome probabilities must sum to 1 for every action")
    policy = np.full((S, n_actions), 1.0 / n_actions)
    for s, h in enumerate(histories):
        if len(h) < horizon:
            policy[s] = prior(h)
    if (reward < 0).any():
        raise ValueError(f"{name}: rewards must be non-negative integers")
    depth = np.array([len(h) for h in histories])
    return FiniteMDP(name, horizon, policy, transition, reward, depth)


def _enumerate(mdp: FiniteMDP) -> Trajectories:
    """Every trajectory from the start: each path extended by every action and outcome."""
    paths = [([0], [], [], 1.0)]
    for _ in range(mdp.horizon):
        paths = [
            ([*states, s2], [*actions, a], [*rewards, int(mdp.reward[states[-1], a, s2])], p * q)
            for states, actions, rewards, p in paths
            for a in range(mdp.n_actions)
            for s2 in np.flatnonzero(mdp.transition[states[-1], a])
            if (q := mdp.transition[states[-1], a, s2]) > 0
        ]
    states, actions, rewards, dynamics = (np.array(x) for x in zip(*paths, strict=True))
    return Trajectories(states, actions, rewards.astype(np.int64), dynamics)


# ----------------------------------------------------------------------------- the MDPs

PI_0 = (0.4, 0.25, 0.15, 0.2)  # the arms of tests/test_conditioning_bandit.py


def bandit() -> FiniteMDP:
    """Four arms paying 0, 1, 1, 2: deterministic. Arms 1 and 2 share a return."""
    pays = (0, 1, 1, 2)
    return build_tree("bandit", 1, 4, lambda h: list(PI_0), lambda h, a: [(1.0, pays[a])])


def lottery() -> FiniteMDP:
    """The bandit with arm 2 a lottery: 0 or 2, each with probability 1/2 (mean 1, as arm 1)."""
    arms = ([(1.0, 0)], [(1.0, 1)], [(0.5, 0), (0.5, 2)], [(1.0, 2)])
    return build_tree("lottery", 1, 4, lambda h: list(PI_0), lambda h, a: arms[a])


def _chain_reward(h: History, move: int, horizon: int) -> int:
    """+1 for the ambitious move (1), and +2 more for a whole episode of ambitious moves."""
    moves = [m for _, m in h] + [move]
    bonus = 2 if len(moves) == horizon and all(moves) else 0
    return move + bonus


def _chain_prior(h: History) -> list[float]:
    """Demonstrators rarely start ambitious (0.3) and keep on half the time once they do."""
    p = 0.5 if h and h[-1][1] == 1 else 0.3
    return [1 - p, p]


def chain(horizon: int = 4) -> FiniteMDP:
    """Deterministic: two moves per step, and a return that depends on the whole path (the
    bonus needs every move ambitious: a plan of many simultaneous changes)."""
    return build_tree("chain", horizon, 2, _chain_prior, lambda h, a: _move(h, a, 0.0, horizon))


def slippery_chain(horizon: int = 4, slip: float = 0.2) -> FiniteMDP:
    """The chain with stochastic dynamics: the move made is the one chosen with probability
    ``1 - slip``, the other one otherwise; rewards follow the move made."""
    return build_tree(
        "slippery_chain", horizon, 2, _chain_prior, lambda h, a: _move(h, a, slip, horizon)
    )


def _move(h: History, chosen: int, slip: float, horizon: int) -> Outcomes:
    """Outcome ``o`` is the move made: the chosen one with probability ``1 - slip``."""
    return [
        (1 - slip if move == chosen else slip, _chain_reward(h, move, horizon)) for move in (0, 1)
    ]


def gamble(horizon: int = 3, win: float = 0.3) -> FiniteMDP:
    """Stochastic: each step a sure +1 (action 0) or a gamble paying 3 with probability
    ``win`` (action 1; mean 0.9: worse on average). pi_0 gambles 30% of the time."""
    return build_tree(
        "gamble",
        horizon,
        2,
        lambda h: [0.7, 0.3],
        lambda h, a: [(1.0, 1)] if a == 0 else [(1 - win, 0), (win, 3)],
    )


MDPS: dict[str, Callable[[], FiniteMDP]] = {
    "bandit": bandit,
    "lottery": lottery,
    "chain": chain,
    "slippery_chain": slippery_chain,
    "gamble": gamble,
}


# ----------------------------------------------------------------------------- exact solvers


def trajectory_probs(mdp: FiniteMDP, policy: np.ndarray) -> np.ndarray:
    """(N,) probability of each trajectory under a Markov policy ``policy[s, a]``."""
    T = mdp.trajectories
    steps = policy[T.states[:, :-1], T.actions]  # (N, H)
    return T.dynamics * steps.prod(1)


def tilted(mdp: FiniteMDP, kappa: float) -> np.ndarray:
    """(b): ``p0(tau) exp(kappa R(tau)) / Z`` over trajectories."""
    p0 = trajectory_probs(mdp, mdp.prior)
    w = p0 * np.exp(kappa * (mdp.trajectories.returns - mdp.max_return))  # shifted: no overflow
    return w / w.sum()


def _expected_next(mdp: FiniteMDP, values: np.ndarray) -> np.ndarray:
    """(S, A): ``E_s'[reward + values(s')]``, the expectation over the dynamics."""
    return (mdp.transition * (mdp.reward + values[None, None, :])).sum(2)


def soft_value_iteration(mdp: FiniteMDP, kappa: float) -> tuple[np.ndarray, np.ndarray]:
    """(c): the maximiser of ``E[R] - KL(pi || pi_0) / kappa`` over policies, and its
    value ``V(s)`` (``V(s_0)`` is the optimal objective). ``kappa = 0`` gives pi_0."""
    V = np.zeros(mdp.n_states)
    for _ in range(mdp.horizon):  # a tree of depth H is exact after H sweeps
        Q = _expected_next(mdp, V)
        if kappa == 0:
            V = (mdp.prior * Q).sum(1)
        else:
            top = Q.max(1, keepdims=True)
            V = top[:, 0] + np.log((mdp.prior * np.exp(kappa * (Q - top))).sum(1)) / kappa
        V[mdp.depth == mdp.horizon] = 0.0
    Q = _expected_next(mdp, V)
    logits = np.log(mdp.prior) + kappa * (Q - Q.max(1, keepdims=True))
    policy = np.exp(logits - logits.max(1, keepdims=True))
    return policy / policy.sum(1, keepdims=True), V


def return_distribution(mdp: FiniteMDP) -> tuple[np.ndarray, np.ndarray]:
    """Under pi_0: ``P(G = g | s)`` (S, G + 1) and ``P(a, G = g | s)`` (S, A, G + 1), where
    G is the return still to come from ``s``."""
    G = mdp.max_return
    dist = np.zeros((mdp.n_states, G + 1))
    dist[mdp.depth == mdp.horizon, 0] = 1.0
    for _ in range(mdp.horizon):
        joint = np.zeros((mdp.n_states, mdp.n_actions, G + 1))
        for r in np.unique(mdp.reward):
            p = mdp.transition * (mdp.reward == r)  # (S, A, S')
            joint[:, :, r:] += p @ dist[:, : G + 1 - r]
        joint *= mdp.prior[:, :, None]
        final = mdp.depth == mdp.horizon
        dist = np.where(final[:, None], dist, joint.sum(1))
    return dist, joint


def exp_return_to_go(mdp: FiniteMDP, kappa: float) -> np.ndarray:
    """(S, A): ``W(s, a) = E_pi_0[exp(kappa G) | s, a]``, G the return from ``s`` on."""
    dist, joint = return_distribution(mdp)
    g = np.exp(kappa * np.arange(dist.shape[1]))
    return (joint @ g) / mdp.prior


def factorised(mdp: FiniteMDP, kappa: float) -> np.ndarray:
    """(d): ``pi(a | s) ~ pi_0(a | s) E_pi_0[exp(kappa G) | s, a]`` (the appendix's per-step
    factorisation, with the exact expectation)."""
    w = mdp.prior * exp_return_to_go(mdp, kappa)
    final = (mdp.depth == mdp.horizon)[:, None]  # no action there: keep pi_0's row
    return np.where(final, mdp.prior, w / np.where(final, 1.0, w.sum(1, keepdims=True)))


def return_conditioned(mdp: FiniteMDP) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The exact return-conditioned imitation of pi_0, the limit of a perfectly fitted
    Decision Transformer: ``(head, cond, defined)``.

    ``head[s, g] = P(G = g | s)`` (S, G + 1); ``cond[s, j, a] = pi_0(a | s, G = g_j)`` for the
    returns-to-go ``g_j = j - G`` in ``[-G, G]`` (S, 2G + 1, A); ``defined[s, j]`` is False
    where ``P(G = g_j | s) = 0``: nothing in the data says what to do there, and ``cond``
    holds pi_0 itself.
    """
    dist, joint = return_distribution(mdp)
    G = mdp.max_return
    cond = np.repeat(mdp.prior[:, None, :], 2 * G + 1, axis=1)
    defined = np.zeros((mdp.n_states, 2 * G + 1), bool)
    possible = (dist > 0) & (mdp.depth < mdp.horizon)[:, None]  # final states: no action
    defined[:, G:] = possible
    ratio = joint / np.where(possible, dist, 1.0)[:, None, :]  # (S, A, G + 1)
    cond[:, G:] = np.where(possible[:, :, None], ratio.transpose(0, 2, 1), cond[:, G:])
    return dist, cond, defined


def per_step_tilt(head: np.ndarray, cond: np.ndarray, kappa: float, support: np.ndarray):
    """(S, A): ``pi(a | s) = sum_g q_s(g) cond(s, g, a)`` with ``q_s(g) ~ head(s, g) e^(kappa g)``
    on the ``support`` (bool over ``g = 0..G``): the factorisation (d) computed from a
    return-conditioned model's own two heads, ``head`` (S, G + 1) and ``cond``
    (S, 2G + 1, A) as in :func:`return_conditioned`. Exact when the heads are (Bayes:
    ``pi_0(a|s) E[e^(kappa G)|s,a] = sum_g P(g|s) e^(kappa g) pi_0(a|s,g)``)."""
    G = head.shape[1] - 1
    w = head * support * np.exp(kappa * (np.arange(G + 1) - G))
    q = w / w.sum(1, keepdims=True)
    return np.einsum("sg,sga->sa", q, cond[:, G:])


def conditioned_trajectory_probs(
    mdp: FiniteMDP, q: np.ndarray, cond: np.ndarray, defined: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """(N,) trajectory distribution of a return-conditioned policy asked for ``R ~ q``
    (over ``R = 0..G``), and the probability that it is ever asked for a return-to-go the
    data never showed it in that state (``defined`` False; 0 when ``defined`` is None).

    Tables as in :func:`return_conditioned`: the return-to-go fed at step t is
    ``R - rewards before t``, indexed ``g + G`` in ``cond``.
    """
    T = mdp.trajectories
    G = (cond.shape[1] - 1) // 2
    probs = np.zeros(len(T.dynamics))
    off_support = 0.0
    for R in np.flatnonzero(q > 0):
        index = T.returns_to_go(R) + G  # (N, H), in [0, 2G]
        steps = cond[T.states[:, :-1], index, T.actions]
        p = q[R] * T.dynamics * steps.prod(1)
        probs += p
        if defined is not None:
            unknown = ~defined[T.states[:, :-1], index]
            off_support += float(p[unknown.any(1)].sum())
    return probs, off_support


# ----------------------------------------------------------------------------- measures


def tv(p: np.ndarray, q: np.ndarray) -> float:
    """Total variation distance between two distributions over the same outcomes."""
    return 0.5 * float(np.abs(p - q).sum())


def kl(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) in nats (``inf`` if p puts mass where q has none)."""
    mask = p > 0
    if (q[mask] == 0).any():
        return float("inf")
    return float((p[mask] * np.log(p[mask] / q[mask])).sum())


def expected_return(mdp: FiniteMDP, probs: np.ndarray) -> float:
    return float(probs @ mdp.trajectories.returns)


def objective(mdp: FiniteMDP, probs: np.ndarray, kappa: float) -> float:
    """``E[R] - KL(p || p0) / kappa`` of a trajectory distribution (``kappa`` > 0, raw units).
    For a policy acting in the MDP, the trajectory KL is the policy KL: dynamics cancel."""
    return expected_return(mdp, probs) - kl(probs, trajectory_probs(mdp, mdp.prior)) / kappa


def sample_trajectories(
    mdp: FiniteMDP, probs: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """Indices of ``n`` trajectories drawn from ``probs``."""
    return rng.choice(len(probs), size=n, p=probs / probs.sum())


# ----------------------------------------------------------------------------- as an env

# A Gymnasium id for these MDPs (``env_kwargs = {"mdp": name}``). The module prefix makes
# ``gymnasium.make`` import this module, which registers it, in any process.
ENV_ID = "ogm.studies.finite_mdp:ogm_studies/FiniteMDP-v0"


class FiniteMDPEnv(gym.Env):
    """The MDP as a Gymnasium env (one-hot observations), for ``ogm.agents.rollout``."""

    def __init__(self, mdp: FiniteMDP) -> None:
        self.mdp = mdp
        self.observation_space = gym.spaces.Box(0.0, 1.0, (mdp.n_states,), np.float32)
        self.action_space = gym.spaces.Discrete(mdp.n_actions)
        self.state = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.state = 0
        return self.mdp.observation(np.array(0)), {}

    def step(self, action):
        p = self.mdp.transition[self.state, int(action)]
        nxt = int(self.np_random.choice(len(p), p=p))
        reward = float(self.mdp.reward[self.state, int(action), nxt])
        self.state = nxt
        done = bool(self.mdp.depth[nxt] == self.mdp.horizon)
        return self.mdp.observation(np.array(nxt)), reward, done, False, {}


def make_env(mdp: str = "lottery") -> FiniteMDPEnv:
    """The MDP named ``mdp`` (a key of :data:`MDPS`) as an env."""
    return FiniteMDPEnv(MDPS[mdp]())


if ENV_ID.split(":")[1] not in gym.registry:
    gym.register(ENV_ID.split(":")[1], entry_point=make_env)
