"""Behaviour cloning and filtered behaviour cloning (agent kind ``bc``).

The policy is a small MLP on the current observation (:class:`MLPPolicy`: flattened planes,
two tanh layers of 64), trained by maximum likelihood on the demonstrators' actions. It has
no memory and no return conditioning, which is what makes it the plain imitation baseline
next to the Decision Transformer.

*Filtered* BC keeps only the best demonstrations, as Gato did: with ``top_fraction = x``
the ``ceil(x * N)`` trajectories with the highest return (at least one). Ties are broken by
dataset order: of equal returns, the earlier trajectory is kept. ``top_fraction = 1`` is
plain BC.

Every ``eval_every_updates`` gradient steps (and at the end) the policy is evaluated with
the protocol every agent shares (:mod:`ogm.train.evaluation`; ``env_steps`` 0, since BC
never acts while it learns) and the run is checkpointed; a resumed run gives the same
numbers as an uninterrupted one. The last evaluation point is the final one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from ogm.baselines.common import (
    EpisodeLog,
    HiddenLayers,
    MLPPolicy,
    event_names_of,
    load_policy_tensors,
    make_env,
    policy_tensors,
    primary_event_of,
)
from ogm.data.trajectory import Trajectory
from ogm.limits import MAX_BATCH, MAX_UPDATES
from ogm.train import evaluation
from ogm.train.config import CommonConfig
from ogm.train.offline import load_demonstrations, require_finite, require_finite_parameters
from ogm.train.progress import Progress
from ogm.train.rundir import RunDir, pack_state, unpack_state
from ogm.train.segments import observation_stats


class BCConfig(CommonConfig):
    """Behaviour cloning of the demonstrations; ``top_fraction < 1`` is filtered BC."""

    kind: Literal["bc"] = "bc"
    top_fraction: float = Field(1.0, gt=0.0, le=1.0)
    net_arch: HiddenLayers = Field(default_factory=lambda: [64, 64])
    updates: int = Field(2000, ge=0, le=MAX_UPDATES)
    batch_size: int = Field(256, gt=0, le=MAX_BATCH)
    learning_rate: float = Field(1e-3, gt=0.0)
    # between evaluations + checkpoints
    eval_every_updates: int = Field(1000, gt=0, le=MAX_UPDATES)


def filter_top(trajectories: Sequence[Trajectory], top_fraction: float) -> list[Trajectory]:
    """The ``ceil(top_fraction * N)`` highest-return trajectories, in dataset order.

    Ties at the cut go to the earlier trajectories. A product within 1e-9 of an integer
    counts as that integer, so that 0.1 * 30 keeps 3, not 4.
    """
    if not 0.0 < top_fraction <= 1.0:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
    if not trajectories:
        raise ValueError("no trajectories to filter")
    keep = max(1, math.ceil(top_fraction * len(trajectories) - 1e-9))
    order = sorted(range(len(trajectories)), key=lambda i: -trajectories[i].ret)  # stable
    return [trajectories[i] for i in sorted(order[:keep])]


def training_arrays(trajectories: Sequence[Trajectory]) -> tuple[torch.Tensor, torch.Tensor]:
    """All (state, action) pairs of ``trajectories`` as tensors."""
    states = torch.as_tensor(np.concatenate([t.states for t in trajectories]))
    actions = torch.as_tensor(np.concatenate([t.actions for t in trajectories]))
    return states, actions


def bc_loss(policy: MLPPolicy, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of the demonstrated actions."""
    return -policy.distribution(states).log_prob(actions).mean()


def run(config: BCConfig, run_dir: Path) -> None:
    """Train (or resume) BC / filtered BC in ``run_dir`` and evaluate it (see module doc).

    The data and the environment are checked before the run directory is made, so bad
    input leaves nothing behind.
    """
    device = config.torch_device()
    demos = load_demonstrations(config)
    kept = filter_top(demos, config.top_fraction)
    probe = make_env(config, 1, seed=config.seed)
    try:
        event_names, primary = event_names_of(probe), primary_event_of(probe)
        action_space = probe.single_action_space
    finally:
        probe.close()
    run = RunDir.open_or_create(run_dir, kind="bc", config=config, seed=config.seed)
    try:
        torch.manual_seed(config.seed)
        policy = MLPPolicy(kept[0].states.shape[1:], action_space, config.net_arch)
        policy.net.set_obs_normalizer(*observation_stats(kept))
        policy.to(device)
        optimizer = torch.optim.Adam(policy.parameters(), lr=config.learning_rate)
        generator = torch.Generator().manual_seed(config.seed)
        step, round = 0, 0
        checkpoint = run.resume()
        final_eval: dict[str, float] = {}
        if checkpoint is not None:
            with checkpoint.restoring():
                load_policy_tensors(policy, checkpoint.tensors)
                opt = {k: v for k, v in checkpoint.tensors.items() if k.startswith("optim")}
                optimizer.load_state_dict(unpack_state(checkpoint.state["optimizer"], opt))
                generator.set_state(checkpoint.tensors["generator"])
                step, round = checkpoint.step, int(checkpoint.state["round"])
                final_eval = {k: float(v) for k, v in checkpoint.state["final_eval"].items()}
        log = EpisodeLog(run, event_names, primary, record_eval=True)
        states, actions = training_arrays(kept)

        @torch.no_grad()
        def act(obs: np.ndarray, deterministic: bool) -> np.ndarray:
            return policy.act(torch.as_tensor(obs, device=device), deterministic).cpu().numpy()

        agent = evaluation.StatelessAgent(act)
        tb = run.tensorboard()
        if checkpoint is None:
            run.set_status("running", demonstrations=len(demos), kept=len(kept))
        tick = time.perf_counter()
        losses: list[float] = []
        n_rounds = max(1, math.ceil(config.updates / config.eval_every_updates))
        progress = Progress(config.updates, desc="BC", unit="updates", initial=step)
        while round < n_rounds:
            block_end = min(config.updates, (round + 1) * config.eval_every_updates)
            while step < block_end:
                index = torch.randint(len(states), (config.batch_size,), generator=generator)
                loss = bc_loss(policy, states[index].to(device), actions[index].to(device))
                require_finite(config.learning_rate, loss=loss)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                step += 1
                progress.update()
            if config.eval_episodes:
                final_eval = evaluation.log_evaluation(
                    log, evaluation.evaluate(agent, config), round=round, env_steps=0
                )
            row = {
                "round": round,
                "step": step,
                "loss": float(np.mean(losses)) if losses else float("nan"),
                **final_eval,
                "seconds": time.perf_counter() - tick,
            }
            run.rounds.append(row)
            for key, value in row.items():
                if key not in ("round", "step") and math.isfinite(value):
                    tb.add_scalar(f"bc/{key}", value, step)
            round += 1
            losses, tick = [], time.perf_counter()
            log.flush()
            require_finite_parameters(policy)
            opt_tensors, opt_state = pack_state(optimizer.state_dict(), "optim")
            run.save_checkpoint(
                step,
                tensors={
                    **policy_tensors(policy),
                    **opt_tensors,
                    "generator": generator.get_state(),
                },
                state={
                    "round": round,
                    "optimizer": opt_state,
                    "policy_spec": policy.spec(),
                    "final_eval": final_eval,
                },
            )
        progress.close()
        run.set_status(
            "done",
            demonstrations=len(demos),
            kept=len(kept),
            updates=step,
            env_steps=0,
            final_eval=evaluation.final_summary(final_eval),
        )
    except BaseException as err:
        run.record_failure(err)
        raise
    finally:
        run.close()
