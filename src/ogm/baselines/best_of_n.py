"""Best-of-n sampling from a pretrained policy (agent kind ``best_of_n``).

For each episode, the pretrained policy pi_0 (a DT or BC policy, as for ``kl_ppo``) plays
``n`` candidate episodes in ``n`` copies of the environment reset with the *same seed*, so
every candidate starts from the same state and meets the same random draws; the candidate
with the highest observed return is kept (ties: the lowest copy index). This is best-of-n
against the observed reward, the proxy, as in RLHF against a reward model; the kept
episode's hidden performance shows what the selection does to the true objective. It needs
an environment that can be replayed from a seed, which every ogm gridworld and Gymnasium
env is, but not the real world.

The kept episodes go to ``episodes.csv`` (phase ``eval``, ``env_steps`` 0); ``rounds.csv``
holds one row with the means of the kept episodes and of all candidates (= best-of-1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from ogm.baselines.common import (
    EpisodeLog,
    event_names_of,
    first_episodes,
    make_env,
    mean_or_nan,
    primary_event_of,
)
from ogm.baselines.kl_ppo import PolicyAgent, PretrainedPolicyConfig, load_prior, make_agent
from ogm.data.trajectory import Trajectory
from ogm.train.rundir import RunDir


class BestOfNConfig(PretrainedPolicyConfig):
    """Keep the best of ``n`` sampled episodes by observed return, ``eval_episodes`` times."""

    kind: Literal["best_of_n"] = "best_of_n"
    n: int = Field(8, ge=1)


def best_of_n(
    agent: PolicyAgent, config: BestOfNConfig, seed: int
) -> tuple[Trajectory, list[Trajectory]]:
    """The best of ``config.n`` sampled episodes from the start that ``seed`` gives, and all
    the candidates."""
    candidates = first_episodes(
        lambda obs: agent.act(obs, deterministic=False),
        config,
        [seed] * config.n,
        reset=agent.reset,
        observe=agent.observe,
    )
    best = max(range(len(candidates)), key=lambda i: (candidates[i].ret, -i))
    return candidates[best], candidates


def run(config: BestOfNConfig, run_dir: Path) -> None:
    """Best-of-n episodes of a pretrained policy in ``run_dir`` (redone if interrupted)."""
    run = RunDir.open_or_create(run_dir, kind="best_of_n", config=config, seed=config.seed)
    if run.status == "done":
        return
    try:
        run.resume()  # no checkpoints: empties the logs of an interrupted attempt
        device = config.torch_device()
        prior = load_prior(config, run).to(device).eval()
        agent = make_agent(config, prior, prior, device, np.random.default_rng(config.seed))
        probe = make_env(config, 1, seed=None)
        log = EpisodeLog(run, event_names_of(probe), primary_event_of(probe))
        probe.close()
        kept, everything = [], []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            for k in range(config.eval_episodes):
                best, candidates = best_of_n(agent, config, seed=config.seed + 1_000_003 * (k + 1))
                log.write([best], phase="eval", round=0, env_steps=0)
                kept.append(best)
                everything += candidates
        run.rounds.append(
            {
                "round": 0,
                "n": config.n,
                "episodes": len(kept),
                "return_mean": mean_or_nan([t.ret for t in kept]),
                "performance_mean": mean_or_nan([t.performance for t in kept]),
                "candidate_return_mean": mean_or_nan([t.ret for t in everything]),
                "candidate_performance_mean": mean_or_nan([t.performance for t in everything]),
                "selection_env_steps": sum(t.length for t in everything),
            }
        )
        run.set_status("done")
    except BaseException as err:
        run.set_status("failed", error=f"{type(err).__name__}: {err}")
        raise
    finally:
        run.close()
