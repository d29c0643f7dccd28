"""Best-of-n sampling from a pretrained policy (agent kind ``best_of_n``).

For each episode, the pretrained policy pi_0 (a DT or BC policy, as for ``kl_ppo``) plays
``n`` candidate episodes in ``n`` copies of the environment reset with the *same seed*, so
every candidate starts from the same state and meets the same random draws; the candidate
with the highest observed return is kept (ties: the lowest copy index). This is best-of-n
against the observed reward, the proxy, as in RLHF against a reward model; the kept
episode's hidden performance shows what the selection does to the true objective. It needs
an environment that can be replayed from a seed, which every ogm gridworld and Gymnasium
env is, but not the real world.

The kept episodes go to ``episodes.csv`` (phase ``eval``, mode ``sampled``, ``env_steps``
0); ``rounds.csv`` holds one row with the means of the kept episodes and of all candidates
(= best-of-1). Their ``kl_to_init`` is :func:`ogm.envs.reward_model.best_of_n_kl`, the
analytic KL(best-of-n || pi_0) = ``log n - (n - 1) / n``: exact when candidates' returns
never tie, an upper bound when they can (the exact value with ties is below it). The greedy
episodes are pi_0's own, with ``kl_to_init`` 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from pydantic import Field

from ogm.agents.actor import EpisodeResult
from ogm.baselines.common import (
    EpisodeLog,
    event_names_of,
    make_env,
    mean_or_nan,
    primary_event_of,
)
from ogm.baselines.kl_ppo import (
    PolicyAgent,
    PretrainedPolicyConfig,
    check_prior,
    load_prior,
    make_agent,
)
from ogm.envs.reward_model import best_of_n_kl
from ogm.limits import MAX_ENVS
from ogm.models.decision_transformer import DecisionTransformer
from ogm.train import evaluation
from ogm.train.progress import Progress
from ogm.train.rundir import RunDir


class BestOfNConfig(PretrainedPolicyConfig):
    """Keep the best of ``n`` sampled episodes by observed return, ``eval_episodes`` times."""

    kind: Literal["best_of_n"] = "best_of_n"
    n: int = Field(8, ge=1, le=MAX_ENVS)  # candidates, played in n copies at once


def best_of_n(
    agent: PolicyAgent,
    config: BestOfNConfig,
    seed: int,
    env: gym.vector.VectorEnv | None = None,
) -> tuple[EpisodeResult, list[EpisodeResult]]:
    """The best of ``config.n`` sampled episodes from the start that ``seed`` gives, with
    ``kl_to_init`` the analytic KL(best-of-n || pi_0) (module doc), and all the candidates
    (pi_0's episodes, KL 0). ``env``: ``n`` copies to play them in, re-used from one call
    to the next (``evaluation.first_episodes``)."""
    candidates = evaluation.first_episodes(
        agent, config, [seed] * config.n, deterministic=False, env=env
    )
    best = max(range(len(candidates)), key=lambda i: (candidates[i].trajectory.ret, -i))
    return dataclasses.replace(candidates[best], kl_to_init=best_of_n_kl(config.n)), candidates


def run(config: BestOfNConfig, run_dir: Path) -> None:
    """Best-of-n episodes of a pretrained policy in ``run_dir`` (redone if interrupted).

    The evaluation protocol of every agent, with best-of-n's own way of acting: episode
    ``k`` starts from evaluation seed ``EVAL_SEED_BASE + k``; in mode ``sampled`` it is the
    best of ``n`` sampled candidates from that start, in mode ``greedy`` pi_0's greedy
    episode (all greedy candidates from one start are the same episode).
    """
    check_prior(config)  # before anything is written
    run = RunDir.open_or_create(run_dir, kind="best_of_n", config=config, seed=config.seed)
    if run.status == "done":
        return
    try:
        run.resume()  # no checkpoints: empties the logs of an interrupted attempt
        device = config.torch_device()
        prior = load_prior(config, run).to(device).eval()
        if isinstance(prior, DecisionTransformer):
            prior.set_precision(config.torch_precision())
        agent = make_agent(config, prior, prior, device, np.random.default_rng(config.seed))
        probe = make_env(config, 1, seed=None)
        log = EpisodeLog(run, event_names_of(probe), primary_event_of(probe), record_eval=True)
        probe.close()
        seeds = [evaluation.EVAL_SEED_BASE + k for k in range(config.eval_episodes)]
        kept, everything = [], []
        one, copies = make_env(config, 1, seed=None), make_env(config, config.n, seed=None)
        with torch.random.fork_rng(devices=[]), contextlib.closing(one), contextlib.closing(copies):
            torch.manual_seed(evaluation.EVAL_SEED_BASE)
            greedy = [
                evaluation.first_episodes(agent, config, [s], deterministic=True, env=one)[0]
                for s in seeds
            ]
            progress = Progress(len(seeds), desc=f"best of {config.n}", unit="episodes")
            for seed in seeds:
                best, candidates = best_of_n(agent, config, seed, env=copies)
                kept.append(best)
                everything += candidates
                progress.update()
            progress.close()
        means = evaluation.log_evaluation(
            log, {"greedy": greedy, "sampled": kept}, round=0, env_steps=0
        )
        log.flush()
        run.rounds.append(
            {
                "round": 0,
                "n": config.n,
                "episodes": len(kept),
                **means,
                "candidate_return_mean": mean_or_nan([r.trajectory.ret for r in everything]),
                "candidate_performance_mean": mean_or_nan(
                    [r.trajectory.performance for r in everything]
                ),
                "selection_env_steps": sum(r.trajectory.length for r in everything),
            }
        )
        run.set_status("done", env_steps=0, final_eval=evaluation.final_summary(means))
    except BaseException as err:
        run.record_failure(err)
        raise
    finally:
        run.close()
