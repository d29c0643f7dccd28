"""One evaluation protocol for every agent kind.

Every agent (GM, OGM, PPO / DQN / SAC, BC, filtered BC, KL-PPO, best-of-n) is judged the
same way, so that their numbers can be compared:

- An *evaluation point* plays ``eval_episodes`` episodes twice: once taking the most likely
  action at every step (mode ``greedy``) and once sampling actions from the policy (mode
  ``sampled``). Both modes land in ``episodes.csv`` (phase ``eval``, column ``mode``).
- Episode ``k`` of every evaluation point, of every agent and every run, starts from
  environment seed ``EVAL_SEED_BASE + k``: evaluation starts are common to all agents
  (paired comparisons) and disjoint from training starts, whose seeds are below
  ``2**32`` (``CommonConfig.seed`` is bounded, and derived training seeds are 32-bit).
- Sampled actions (and the target draws of return-conditioned agents) come from torch's
  generator seeded with ``EVAL_SEED_BASE`` at the start of each mode, inside
  ``torch.random.fork_rng``: evaluation never consumes the training run's random numbers,
  so a run evaluated more often trains on exactly the same numbers.
- Return-conditioned agents ask each episode for the target of their evaluation strategy;
  the strategy is not told the evaluation returns.
- Evaluation points sit on the common clock: the environment steps of *training*
  interaction so far (``env_steps``); evaluation steps never count. Agents that learn
  without interacting (GM, BC) are evaluated at ``env_steps = 0``.
- Agents that start from an initial policy measure how far they moved from it: each
  evaluation episode's summed KL(pi || pi_init) along the contexts it visited (column
  ``kl_to_init``, read from the agent's ``kl_to_init`` like its ``targets``); NaN for agents
  without one (SB3, BC).

An agent is anything with the three calls of :class:`Agent`; a stateless policy (SB3, an
MLP) is wrapped in :class:`StatelessAgent`. An agent whose models have a train mode names
them in ``networks()`` (``ConditionedDT``): they play every evaluation in eval mode, without
dropout, whatever mode training left them in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch

from ogm.agents.actor import EpisodeResult, evaluating
from ogm.baselines.common import EpisodeCollector, EpisodeLog, event_names_of, make_env
from ogm.train.config import CommonConfig

EVAL_SEED_BASE = 2**40
MODES = ("greedy", "sampled")


class Agent(Protocol):
    """What an evaluation drives: one policy acting in ``num_envs`` copies at once."""

    def reset(self, num_envs: int) -> None:
        """Start a new episode in every copy."""

    def act(self, obs: np.ndarray, deterministic: bool) -> np.ndarray:
        """Actions of all copies: the most likely ones, or samples."""

    def observe(self, actions: np.ndarray, rewards: np.ndarray, done: np.ndarray) -> None:
        """The step's outcome; ``done`` copies start a new episode at their next ``act``."""


class StatelessAgent:
    """An agent without memory from an action function ``act(obs, deterministic)``."""

    def __init__(self, act: Callable[[np.ndarray, bool], np.ndarray]) -> None:
        self._act = act

    def reset(self, num_envs: int) -> None:
        pass

    def act(self, obs: np.ndarray, deterministic: bool) -> np.ndarray:
        return np.asarray(self._act(obs, deterministic))

    def observe(self, actions: np.ndarray, rewards: np.ndarray, done: np.ndarray) -> None:
        pass


def first_episodes(
    agent: Agent,
    config: CommonConfig,
    seeds: Sequence[int],
    *,
    deterministic: bool,
    env: gym.vector.VectorEnv | None = None,
) -> list[EpisodeResult]:
    """The first episode of each of ``len(seeds)`` copies, copy ``i`` reset with ``seeds[i]``.

    The target return of each episode is read from ``agent.targets`` when the agent has
    one (return-conditioned agents), its KL from the initial policy from
    ``agent.kl_to_init`` (agents that measure it), NaN otherwise; both at the episode's
    last step. ``env``: a vector env of the config's environment with ``len(seeds)``
    copies (from :func:`make_env`), left open for the next call; by default one is made
    and closed here. Every copy is reset with its seed, so the episodes are the same.
    """
    n = len(seeds)
    networks = getattr(agent, "networks", tuple)()  # a DT agent's models act without dropout
    own = env is None
    if env is None:
        env = make_env(config, n, seed=None)
    elif env.num_envs != n:
        raise ValueError(f"first_episodes: {n} seeds for an env of {env.num_envs} copies")
    with contextlib.closing(env) if own else contextlib.nullcontext(), evaluating(*networks):
        obs, _ = env.reset(seed=[int(s) for s in seeds])
        collector = EpisodeCollector(n, event_names_of(env))
        collector.start(obs)
        agent.reset(n)
        first: list[EpisodeResult | None] = [None] * n
        while any(r is None for r in first):
            actions = agent.act(obs, deterministic)
            obs, rewards, terminated, truncated, infos = env.step(actions)
            done = np.logical_or(terminated, truncated)
            targets = getattr(agent, "targets", None)
            kls = getattr(agent, "kl_to_init", None)
            ended = iter(collector.step(actions, obs, rewards, terminated, truncated, infos))
            for i in np.flatnonzero(done):
                trajectory = next(ended)
                if first[i] is None:
                    target = float(targets[i]) if targets is not None else float("nan")
                    kl = float(kls[i]) if kls is not None else float("nan")
                    first[i] = EpisodeResult(trajectory, target, kl)
            agent.observe(actions, rewards, done)
    return first  # type: ignore[return-value]


def evaluate(
    agent: Agent, config: CommonConfig, *, episodes: int | None = None
) -> dict[str, list[EpisodeResult]]:
    """One evaluation point: ``episodes`` (default ``config.eval_episodes``) held-out
    episodes in each mode, played in waves of up to ``config.num_envs`` copies."""
    n = config.eval_episodes if episodes is None else episodes
    results: dict[str, list[EpisodeResult]] = {}
    envs: dict[int, gym.vector.VectorEnv] = {}  # by number of copies: made once per call
    with contextlib.ExitStack() as closing:
        for mode in MODES:
            results[mode] = []
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(EVAL_SEED_BASE)
                while len(results[mode]) < n:
                    start = len(results[mode])
                    seeds = [
                        EVAL_SEED_BASE + k for k in range(start, min(n, start + config.num_envs))
                    ]
                    if len(seeds) not in envs:
                        envs[len(seeds)] = make_env(config, len(seeds), seed=None)
                        closing.callback(envs[len(seeds)].close)
                    results[mode] += first_episodes(
                        agent,
                        config,
                        seeds,
                        deterministic=mode == "greedy",
                        env=envs[len(seeds)],
                    )
    return results


def log_evaluation(
    log: EpisodeLog, results: Mapping[str, list[EpisodeResult]], *, round: int, env_steps: int
) -> dict[str, float]:
    """Write an evaluation point to ``episodes.csv``; returns its means per mode
    (``eval_return_greedy``, ``eval_performance_sampled``, ...) for ``rounds.csv``."""
    means: dict[str, float] = {}
    for mode, episodes in results.items():
        log.write(
            [r.trajectory for r in episodes],
            phase="eval",
            mode=mode,
            round=round,
            env_steps=env_steps,
            target_returns=[r.target_return for r in episodes],
            kl_to_init=[r.kl_to_init for r in episodes],
        )
        means.update(
            {
                f"eval_{key}_{mode}": float(np.mean(values)) if episodes else float("nan")
                for key, values in (
                    ("return", [r.trajectory.ret for r in episodes]),
                    ("performance", [r.trajectory.performance for r in episodes]),
                )
            }
        )
    return means


def final_summary(means: Mapping[str, float]) -> dict[str, Any]:
    """The final evaluation point's means, as stored in ``run.json`` (``final_eval``);
    ``None`` where nothing was evaluated."""

    def value(key: str) -> float | None:
        found = means.get(key)
        return float(found) if found is not None and np.isfinite(found) else None

    return {
        mode: {key: value(f"eval_{key}_{mode}") for key in ("return", "performance")}
        for mode in MODES
    }
