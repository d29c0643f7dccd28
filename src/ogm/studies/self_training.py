"""Study ``self_training``: without the environment's returns, the expected update is zero.

Korbak's comment on "Safety considerations for online generative modeling": a model fed
back its own samples does not change on average, since ``E_x~p[grad log p(x)] = 0``; what
drives the online decision transformer is the environment's rewards. Two measurements:

1. **Gradients** (``gradients.csv``): the mean gradient of the DT's loss (its negative
   log-likelihood: return bin and action, ``ogm.train.segments.dt_loss``) over ``n``
   samples drawn from the model itself, at the start states of the task. Its norm should
   fall as ``1/sqrt(n)``, so ``sqrt(n) * rms norm`` stays constant (the samples' gradient
   noise). As a contrast, the same with the return drawn by ``exp_tilted:2`` instead of the
   return head (``source = tilted``): no longer the model's own samples, the mean gradient
   tends to a non-zero vector and ``sqrt(n) * norm`` grows like ``sqrt(n)``.
2. **Loops** (``loops.csv``): online rounds as ODT's (sampled actions at the strategy's
   target, then updates on the round's episodes), where the returns-to-go the model
   trains on come either from the ``environment`` (hindsight relabelling: the rewards
   received; ODT) or from the ``model``: the target it asked for, minus the rewards
   received, i.e. the return tokens it was fed while acting. With the ``prior`` strategy
   (targets drawn from the model's own return head) the model-labelled data are the
   model's own samples, so every update has mean zero: return and policy may wander but
   should not trend. Per round: the mean return of the round's episodes (environment),
   the mean target, the return head's mean and entropy at the start states (what the
   model believes it gets, and how varied), and the KL of the policy and of the return
   head from the round-0 model on a fixed probe of demonstration segments.

Settings: ``bandit`` (the lottery bandit of :mod:`ogm.studies.finite_mdp`: with a lottery
arm, the return received differs from the return asked for) and ``gridworld`` (the
config's environment and dataset). Caveats, measured rather than assumed away: the
updates use AdamW (as every ogm trainer; the step is not linear in the gradient), no
weight decay and no entropy bonus (both would pull the model in a fixed direction);
each round trains on its own episodes only, so that the model-labelled data are samples
of the current model; strategies draw targets from supported return bins only (the
returns seen so far), so the ``prior`` loop's targets are the head renormalised on those;
and in the gridworld the return tokens after the first step carry the environment's
rewards (the DT infers rewards from its return tokens), so only the first return token and
the actions are exactly the model's samples there.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from pathlib import Path
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from pydantic import Field, field_validator

from ogm.agents.actor import ConditionedDT, EpisodeResult, rollout
from ogm.agents.conditioning import check_spec, make_strategy
from ogm.data.trajectory import Trajectory
from ogm.models.decision_transformer import DecisionTransformer
from ogm.studies import finite_mdp as fm
from ogm.studies.common import Row, dt_section, fit_dt, offline_config, study_run, write_table
from ogm.studies.kl_equivalence import demonstrations
from ogm.train.config import CommonConfig
from ogm.train.offline import load_demonstrations, make_eval_env, make_optimizer, update
from ogm.train.online import derive_seed, policy_kl, probe_policy
from ogm.train.segments import SegmentBatch, TrajectoryPool, dt_loss

GRADIENTS, LOOPS = "gradients.csv", "loops.csv"
LABELS = ("environment", "model")
SOURCES = {"model": None, "tilted": "exp_tilted:2"}  # where the return of a sample comes from

DT_DEFAULTS = {  # the bandit's; the gridworld setting sets its own in the experiment file
    "context_len": 1,
    "n_layer": 1,
    "n_head": 1,
    "n_embd": 32,
    "dropout": 0.0,  # the model's distribution is the same in training and sampling
    "updates": 600,
    "batch_size": 256,
    "learning_rate": 3e-3,
    "warmup_steps": 50,
    "fidelity_targets": 0,
}
DTSection = dt_section(DT_DEFAULTS)


class SelfTrainingConfig(CommonConfig):
    """The zero-expected-gradient lemma, numerically and as online loops."""

    kind: Literal["self_training"] = "self_training"
    setting: Literal["bandit", "gridworld"] = "bandit"
    demo_episodes: int = Field(2000, gt=0)  # bandit: demonstrations of pi_0
    # 1. gradients
    sample_sizes: list[int] = Field(default_factory=lambda: [16, 64, 256, 1024, 4096])
    repeats: int = Field(20, gt=1)
    # 2. loops: every strategy x labels pair, from the same pretrained model
    strategies: list[str] = Field(default_factory=lambda: ["prior", "exp_tilted:2"])
    labels: list[Literal["environment", "model"]] = Field(default_factory=lambda: list(LABELS))
    rounds: int = Field(10, ge=1)
    episodes_per_round: int = Field(64, gt=0)
    updates_per_round: int = Field(20, gt=0)
    batch_size: int = Field(64, gt=0)
    learning_rate: float = Field(1e-3, gt=0.0)
    grad_clip: float = Field(10.0, gt=0.0)
    probe_segments: int = Field(256, gt=0)
    dt: DTSection  # the study's Decision Transformer: DT_DEFAULTS, then the config's values

    @field_validator("strategies")
    @classmethod
    def _known(cls, specs: list[str]) -> list[str]:
        for spec in specs:
            check_spec(spec)
            if spec.startswith("odt"):
                raise ValueError("odt:m needs a base strategy; use prior, exp_tilted:k, ...")
        return specs


# ----------------------------------------------------------------------------- the task


@dataclasses.dataclass
class Task:
    """The setting's demonstrations, vector env (no autoreset) and start observations."""

    demos: list[Trajectory]
    env: gym.vector.VectorEnv
    starts: np.ndarray  # (n, *obs_shape) observations at the start of demonstrations


def make_task(config: SelfTrainingConfig) -> Task:
    if config.setting == "bandit":
        mdp = fm.lottery()
        p0 = fm.trajectory_probs(mdp, mdp.prior)
        rng = np.random.default_rng([config.seed, 0])
        demos = demonstrations(mdp, fm.sample_trajectories(mdp, p0, config.demo_episodes, rng))
        env = SyncVectorEnv(
            [lambda: fm.FiniteMDPEnv(mdp)] * config.num_envs,
            autoreset_mode=AutoresetMode.DISABLED,
        )
    else:
        demos = load_demonstrations(config)
        env = make_eval_env(config, config.num_envs)
    return Task(demos, env, np.stack([t.observations[0] for t in demos]))


# ----------------------------------------------------------------------------- 1. gradients


def first_steps(observations: np.ndarray, returns: torch.Tensor, actions: torch.Tensor):
    """A batch of one-step segments at episode starts (context 1)."""
    n = len(observations)
    return SegmentBatch(
        observations=torch.as_tensor(observations).unsqueeze(1),
        actions=actions.view(n, 1),
        returns_to_go=returns.float().view(n, 1, 1),
        timesteps=torch.zeros(n, 1, dtype=torch.long),
        mask=torch.ones(n, 1, dtype=torch.bool),
    )


@torch.no_grad()
def sample_first_steps(
    model: DecisionTransformer,
    observations: np.ndarray,
    tilt: str | None,
    returns_seen: list[float],
    generator: torch.Generator,
) -> SegmentBatch:
    """One (return, action) per start observation, ancestrally from the model: the return
    bin from the return head (``tilt`` None) or from a strategy over it, then the action
    from the policy given that return."""
    n = len(observations)
    zeros = torch.zeros(n)
    out = model(**vars(first_steps(observations, zeros, zeros.long())))  # head ignores R_0, a_0
    head = torch.softmax(out.return_logits[:, 0].double(), -1)
    if tilt is not None:
        strategy = make_strategy(tilt)
        strategy.observe(returns_seen)
        centers = model.return_bin_centers.double().numpy()
        head = torch.as_tensor(strategy.target_probs(head.numpy(), centers))
    bins = torch.multinomial(head, 1, generator=generator)[:, 0]
    returns = model.return_bin_centers[bins]
    policy = model(**vars(first_steps(observations, returns, zeros.long()))).policy[:, 0]
    return first_steps(observations, returns, policy.sample(generator))


def mean_gradient(model: DecisionTransformer, batch: SegmentBatch) -> torch.Tensor:
    """The gradient of the DT's loss (mean negative log-likelihood) over the batch, flat."""
    model.zero_grad(set_to_none=True)
    loss, _ = dt_loss(model, batch, alpha=0.0, return_coef=1.0)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def exact_self_gradient(model: DecisionTransformer, observation: np.ndarray) -> torch.Tensor:
    """``E_(R, a) ~ p_theta[grad log p_theta(R, a | s)]`` at one observation, summed exactly
    over every return bin and action (the lemma: zero up to float rounding)."""
    n_bins, n_actions = model.config.n_bins, model.config.act_dim
    bins = torch.arange(n_bins).repeat_interleave(n_actions)
    actions = torch.arange(n_actions).repeat(n_bins)
    obs = np.repeat(observation[None], len(bins), 0)
    batch = first_steps(obs, model.return_bin_centers[bins], actions)
    out = model(**vars(batch))
    log_p = torch.log_softmax(out.return_logits[:, 0], -1)[torch.arange(len(bins)), bins]
    log_p = log_p + out.policy[:, 0].log_prob(actions)
    model.zero_grad(set_to_none=True)
    (log_p.exp().detach() * log_p).sum().backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def gradient_rows(config: SelfTrainingConfig, model: DecisionTransformer, task: Task) -> list[Row]:
    """Norms of the mean self-sample gradient for every sample size and source."""
    generator = torch.Generator().manual_seed(derive_seed(config.seed, 10))
    rng = np.random.default_rng([config.seed, 10])
    returns_seen = [t.ret for t in task.demos]
    rows = []
    for source, tilt in SOURCES.items():
        for n in config.sample_sizes:
            norms = []
            for _ in range(config.repeats):
                starts = task.starts[rng.integers(len(task.starts), size=n)]
                batch = sample_first_steps(model, starts, tilt, returns_seen, generator)
                norms.append(float(mean_gradient(model, batch).norm()))
            rms = float(np.sqrt(np.mean(np.square(norms))))
            rows.append(
                {
                    "setting": config.setting,
                    "source": source,
                    "n": n,
                    "mean_norm": float(np.mean(norms)),
                    "rms_norm": rms,
                    "sqrt_n_rms_norm": rms * np.sqrt(n),
                }
            )
    model.zero_grad(set_to_none=True)
    return rows


# ----------------------------------------------------------------------------- 2. loops


def as_asked(result: EpisodeResult) -> Trajectory:
    """The episode with the return it was asked for: its last reward also carries
    ``target - return``, so its returns-to-go are those the model was fed while acting."""
    rewards = result.trajectory.rewards.copy()
    rewards[-1] += result.target_return - result.trajectory.ret
    return dataclasses.replace(result.trajectory, rewards=rewards)


@torch.no_grad()
def head_probs(model: DecisionTransformer, probe: SegmentBatch) -> torch.Tensor:
    """The return head's distribution at every probe step (B, K, n_bins)."""
    out = model(probe.returns_to_go, probe.observations, probe.actions, probe.timesteps, probe.mask)
    return torch.softmax(out.return_logits.double(), -1)


def head_kl(p: torch.Tensor, q: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean KL(p || q) between return distributions over the unpadded probe steps."""
    kl = (p * (p.clamp_min(1e-300).log() - q.clamp_min(1e-300).log())).sum(-1)
    return float((kl * mask).sum() / mask.sum())


def run_loop(
    config: SelfTrainingConfig,
    pretrained: DecisionTransformer,
    task: Task,
    strategy_spec: str,
    labels: str,
) -> list[Row]:
    """One online loop from a copy of the pretrained model (module doc); one row per round."""
    model = copy.deepcopy(pretrained)
    K = model.config.context_len
    optimizer, scheduler = make_optimizer(model, config.learning_rate, 0.0, 0)
    strategy = make_strategy(strategy_spec)
    strategy.observe([t.ret for t in task.demos])
    rng = np.random.default_rng([config.seed, 20])
    probe = TrajectoryPool(task.demos).sample(config.probe_segments, K, rng)
    n = len(task.starts)
    start_probe = first_steps(task.starts, torch.zeros(n), torch.zeros(n, dtype=torch.long))
    policy0, head0 = probe_policy(model, probe), head_probs(model, probe)
    centers = model.return_bin_centers.double()
    rows = []
    for round_ in range(config.rounds + 1):
        agent = ConditionedDT(model, strategy)
        seed = derive_seed(config.seed, 30, round_)
        results = rollout(
            agent, task.env, config.episodes_per_round, seed=seed, deterministic=False
        )
        start_head = head_probs(model, start_probe)[:, 0]  # P(R | s_0), (n, n_bins)
        entropy = -(start_head * start_head.clamp_min(1e-300).log()).sum(-1)
        rows.append(
            {
                "setting": config.setting,
                "strategy": strategy_spec,
                "labels": labels,
                "round": round_,
                "return": float(np.mean([r.trajectory.ret for r in results])),
                "target": float(np.mean([r.target_return for r in results])),
                "belief": float((start_head @ centers).mean()),
                "head_entropy": float(entropy.mean()),
                "kl_policy": policy_kl(policy0, probe_policy(model, probe), probe.mask),
                "kl_head": head_kl(head0, head_probs(model, probe), probe.mask),
            }
        )
        if round_ == config.rounds:
            break
        episodes = [r.trajectory if labels == "environment" else as_asked(r) for r in results]
        strategy.observe([t.ret for t in episodes])
        pool = TrajectoryPool(episodes)
        for _ in range(config.updates_per_round):
            batch = pool.sample(config.batch_size, K, rng)
            update(model, batch, optimizer, scheduler, grad_clip=config.grad_clip)
        model.eval()
    return rows


def run(config: SelfTrainingConfig, run_dir: Path) -> None:
    """Pretrain the GM agent, measure the gradients, run every loop (module doc)."""
    with study_run(run_dir, "self_training", config) as run:
        task = make_task(config)
        with contextlib.closing(task.env):
            model = fit_dt(
                offline_config(config, config.dt), task.demos, task.env.single_action_space
            )
            write_table(run.path / GRADIENTS, gradient_rows(config, model, task))
            rows = [
                row
                for spec in config.strategies
                for labels in config.labels
                for row in run_loop(config, model, task, spec, labels)
            ]
            write_table(run.path / LOOPS, rows)
