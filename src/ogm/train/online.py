"""Online finetuning of the GM agent (agent kind ``odt``): the OGM agent.

The algorithm is the Online Decision Transformer's (Zheng, Zhang & Grover 2022): a
Decision Transformer pretrained offline keeps training on its own trajectories. Each round

1. rolls out ``episodes_per_round`` episodes on the vector env with *sampled* actions,
   each asking for the return the run's conditioning strategy picks (the exploration target);
2. stores them in a FIFO trajectory replay buffer; their returns-to-go are recomputed from
   the rewards actually received (hindsight relabelling), and the strategies observe them;
3. makes ``updates_per_round`` gradient updates on segments from the buffer, with ODT's
   entropy constraint: the loss has a ``- alpha * H`` term and ``alpha = exp(log_alpha)``
   follows the dual update ``min alpha * (H - target_entropy)`` with its own Adam.

On top of ODT, the seed essay's controls, each a config field and each logged:

- ``demo_fraction``: exactly ``round(demo_fraction * batch_size)`` segments of every batch
  come from the original demonstrations, whatever the buffer holds;
- ``strategy``: how the exploration target is chosen (its state follows every episode);
- ``entropy``: the entropy constraint on or off (off: ``alpha = 0``, no dual update);
- ``max_kl_per_round``: a cap on how fast behaviour may shift. A fixed probe set of
  demonstration segments is drawn once. The round's updates run in blocks of
  ``kl_check_every``; after each block the mean KL(policy at the round's start || policy
  now) over the probe steps is measured, and if it exceeds the cap the block is rolled back
  (model, optimisers, temperature) and the round's updates stop. So the KL logged for the
  round never exceeds the cap. The KL to the previous round and to the offline policy are
  logged every round whether or not a cap is set.

Evaluation episodes (deterministic actions, the evaluation strategy's target, seeds apart
from training's) run at round 0, i.e. after offline training alone, then every
``eval_every`` rounds and at the last round.

Everything a round needs is restored from its checkpoint (model, optimisers, temperature,
strategies, replay buffer, RNG states, log rows), and each round's rollout is seeded from
``(seed, round)``, so ``run`` on a directory killed at any moment continues it with the
same numbers as a run never interrupted (on CPU).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator
from tqdm.auto import tqdm

from ogm.agents.actor import DTActor, EpisodeResult, rollout
from ogm.agents.conditioning import ConditioningStrategy, make_strategy
from ogm.analysis.episodes import EpisodeRecorder
from ogm.baselines.common import event_names_of, primary_event_of
from ogm.models.decision_transformer import CategoricalPolicy, DecisionTransformer, DTConfig, Policy
from ogm.train import offline
from ogm.train.config import CommonConfig
from ogm.train.replay import ReplayBuffer
from ogm.train.rundir import (
    RunDir,
    episode_row,
    pack_state,
    set_torch_rng_state,
    torch_rng_state,
    unpack_state,
)
from ogm.train.segments import SegmentBatch, TrajectoryPool

# ----------------------------------------------------------------------------- config

# The offline section holds OfflineConfig's own fields (model and pretraining), so that
# `ogm train` pretrains exactly as `ogm train-offline` would with the same values.
OfflineSection = create_model(
    "OfflineSection",
    __config__=ConfigDict(extra="forbid"),
    __doc__="Offline pretraining: the fields of OfflineConfig outside CommonConfig.",
    **{
        name: (info.annotation, info)
        for name, info in offline.OfflineConfig.model_fields.items()
        if name not in CommonConfig.model_fields and name != "kind"
    },
)


class OnlineSection(BaseModel):
    """Online finetuning (ODT) and the seed's controls. Defaults follow ODT where it has one."""

    model_config = ConfigDict(extra="forbid")

    rounds: int = Field(50, ge=0)
    episodes_per_round: int | None = Field(None, gt=0)  # default: num_envs
    updates_per_round: int = Field(300, ge=0)  # ODT: 300
    batch_size: int = Field(64, gt=0)
    learning_rate: float = Field(1e-4, gt=0.0)  # ODT: 1e-4
    weight_decay: float = Field(5e-4, ge=0.0)  # ODT: 5e-4
    warmup_steps: int = Field(0, ge=0)
    grad_clip: float = Field(0.25, gt=0.0)  # ODT: 0.25
    buffer_capacity: int = Field(1000, gt=0)  # trajectories; ODT: 1000
    strategy: str = "percentile:95"  # exploration target
    eval_strategy: str | None = None  # evaluation target; default: the offline section's
    eval_every: int = Field(5, gt=0)
    # the seed's controls
    demo_fraction: float = Field(0.0, ge=0.0, le=1.0)
    entropy: bool = True
    init_temperature: float = Field(0.1, gt=0.0)  # ODT: 0.1
    temperature_lr: float = Field(1e-4, gt=0.0)  # ODT: 1e-4
    target_entropy_fraction: float = Field(0.5, ge=0.0, le=1.0)  # of log|A| (discrete)
    max_kl_per_round: float | None = Field(None, gt=0.0)
    kl_check_every: int = Field(25, gt=0)  # updates per block of the KL cap
    probe_segments: int = Field(256, gt=0)
    checkpoint_every: int = Field(5, gt=0)

    @field_validator("strategy", "eval_strategy")
    @classmethod
    def _known_strategy(cls, spec: str | None) -> str | None:
        if spec is not None:
            make_strategy(spec)
        return spec


class OnlineConfig(CommonConfig):
    """The OGM agent: a Decision Transformer pretrained offline, then finetuned online.

    ``pretrained`` (a run directory or checkpoint holding a Decision Transformer) skips the
    offline phase; otherwise the ``offline`` section trains one in ``<run_dir>/offline``.
    """

    kind: Literal["odt"] = "odt"
    pretrained: str | None = None
    offline: OfflineSection = Field(default_factory=OfflineSection)  # type: ignore[valid-type]
    online: OnlineSection = Field(default_factory=OnlineSection)

    @model_validator(mode="after")
    def _valid_offline(self) -> OnlineConfig:
        self.offline_config()
        return self

    def offline_config(self) -> offline.OfflineConfig:
        """The config of the offline pretraining run."""
        common = {name: getattr(self, name) for name in CommonConfig.model_fields}
        return offline.OfflineConfig(**common, **self.offline.model_dump())

    @property
    def episodes_per_round(self) -> int:
        return self.online.episodes_per_round or self.num_envs


# ----------------------------------------------------------------------------- pieces

# Independent random streams derived from the run's seed.
ROLLOUT, EVAL, PROBE, TRAIN = range(4)


def derive_seed(seed: int, stream: int, index: int = 0) -> int:
    """A seed for ``(stream, index)`` (e.g. the rollout of one round), independent of others."""
    return int(np.random.SeedSequence([seed, stream, index]).generate_state(1)[0])


def target_entropy(config: DTConfig, fraction: float) -> float:
    """ODT's target: ``-action_dim`` for continuous actions, ``fraction * log|A|`` discrete."""
    return fraction * math.log(config.act_dim) if config.discrete else -float(config.act_dim)


def sample_batch(
    demo_pool: TrajectoryPool,
    replay_pool: TrajectoryPool,
    batch_size: int,
    demo_fraction: float,
    context_len: int,
    rng: np.random.Generator,
) -> SegmentBatch:
    """``round(demo_fraction * batch_size)`` demonstration segments, then replay segments."""
    n_demo = round(demo_fraction * batch_size)
    parts = [
        pool.sample(n, context_len, rng)
        for pool, n in ((demo_pool, n_demo), (replay_pool, batch_size - n_demo))
        if n > 0
    ]
    return parts[0] if len(parts) == 1 else SegmentBatch.cat(*parts)


@torch.no_grad()
def probe_policy(model: DecisionTransformer, probe: SegmentBatch) -> Policy:
    """The policy at every probe step, without dropout."""
    was_training = model.training
    model.eval()
    out = model(probe.returns_to_go, probe.observations, probe.actions, probe.timesteps, probe.mask)
    model.train(was_training)
    return out.policy


def policy_kl(p: Policy, q: Policy, mask: torch.Tensor) -> float:
    """Mean KL(p || q) over the unpadded steps.

    For the tanh-squashed Gaussian the KL of the Gaussians before squashing is exact: KL
    is unchanged by an invertible map applied to both distributions.
    """
    if isinstance(p, CategoricalPolicy):
        logp, logq = F.log_softmax(p.logits, -1), F.log_softmax(q.logits, -1)
        kl = (logp.exp() * (logp - logq)).sum(-1)
    else:
        log_ratio = q.log_std - p.log_std
        z = (p.mean - q.mean) / q.log_std.exp()
        kl = (log_ratio + 0.5 * ((-2 * log_ratio).exp() + z**2 - 1)).sum(-1)
    m = mask.float()
    return float((kl * m).sum() / m.sum().clamp_min(1.0))


class Learner:
    """The trainable state of the online phase: model, optimiser, temperature."""

    def __init__(self, model: DecisionTransformer, config: OnlineConfig) -> None:
        cfg = config.online
        self.model = model
        self.optimizer, self.scheduler = offline.make_optimizer(
            model, cfg.learning_rate, cfg.weight_decay, cfg.warmup_steps
        )
        self.log_alpha = torch.tensor(math.log(cfg.init_temperature), requires_grad=True)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=cfg.temperature_lr)
        self.entropy = cfg.entropy
        self.target_entropy = target_entropy(model.config, cfg.target_entropy_fraction)
        self.grad_clip = cfg.grad_clip
        self.return_coef = config.offline.return_coef

    @property
    def alpha(self) -> float:
        return math.exp(self.log_alpha.item()) if self.entropy else 0.0

    def update(self, batch: SegmentBatch) -> dict[str, float]:
        """One gradient step on the DT loss, then one dual step on the temperature."""
        stats = offline.update(
            self.model,
            batch.to(self.model.obs_mean.device),
            self.optimizer,
            self.scheduler,
            alpha=self.alpha,
            return_coef=self.return_coef,
            grad_clip=self.grad_clip,
        )
        if self.entropy:
            alpha_loss = self.log_alpha.exp() * (stats["entropy"] - self.target_entropy)
            self.alpha_optimizer.zero_grad()
            alpha_loss.backward()
            self.alpha_optimizer.step()
        return stats

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "log_alpha": self.log_alpha.detach(),
            "alpha_optimizer": self.alpha_optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.alpha_optimizer.load_state_dict(state["alpha_optimizer"])

    def snapshot(self) -> dict[str, Any]:
        """A deep copy of the state, for rolling back an update block."""
        return copy.deepcopy(self.state_dict())


def train_round(
    learner: Learner,
    sample: Callable[[], SegmentBatch],
    updates: int,
    probe: SegmentBatch,
    max_kl: float | None,
    block: int,
) -> tuple[list[dict[str, float]], bool]:
    """The round's updates (``sample()`` gives each batch), under the KL cap when set.

    Returns the stats of the updates kept and whether the cap stopped the round.
    """
    start = probe_policy(learner.model, probe) if max_kl is not None else None
    kept: list[dict[str, float]] = []
    while len(kept) < updates:
        saved = learner.snapshot() if max_kl is not None else None
        stats = [learner.update(sample()) for _ in range(min(block, updates - len(kept)))]
        if (
            start is not None
            and policy_kl(start, probe_policy(learner.model, probe), probe.mask) > max_kl
        ):
            learner.load_state_dict(saved)
            return kept, True
        kept += stats
    return kept, False


def mean_stats(stats: list[dict[str, float]], keys: tuple[str, ...]) -> dict[str, float]:
    """Mean of each key over the updates (NaN when there were none)."""
    return {k: float(np.mean([s[k] for s in stats])) if stats else math.nan for k in keys}


def make_env(config: OnlineConfig) -> gym.vector.VectorEnv:
    """``num_envs`` copies without autoreset, as ``rollout`` needs them."""
    return offline.make_eval_env(config, config.num_envs)


# ----------------------------------------------------------------------------- checkpoints


def _model_from(
    tensors: dict[str, torch.Tensor], prefix: str, model_config: dict[str, Any], where: str
) -> DecisionTransformer:
    """The model stored under ``prefix``: ``model.`` (finetuned) or ``offline.`` (pretrained)."""
    model = DecisionTransformer(DTConfig.from_dict(model_config))
    stored = {
        "model." + k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)
    }
    offline.load_model_tensors(model, stored, where)
    return model


def pretrained_model(config: OnlineConfig, run_dir: Path) -> DecisionTransformer:
    """The offline policy: ``config.pretrained``, or trained now in ``<run_dir>/offline``."""
    if config.pretrained is not None:
        return offline.load_model(config.pretrained)
    offline_dir = Path(run_dir) / "offline"
    done = (offline_dir / "run.json").exists() and RunDir.open(offline_dir).status == "done"
    if not done:
        offline.run(config.offline_config(), offline_dir)
    return offline.load_model(offline_dir)


# ----------------------------------------------------------------------------- run

ROUND_STATS = ("loss", "nll", "entropy", "return_ce", "grad_norm")
ROUND_COLUMNS = (
    "round",
    "env_steps",
    "episodes",
    "updates",
    *ROUND_STATS,
    "temperature",
    "target_entropy",
    "kl_prev",
    "kl_offline",
    "kl_capped",
    "demo_fraction",
    "buffer_demo",
    "buffer_online",
    "online_return",
    "online_performance",
    "online_target",
    "eval_return",
    "eval_performance",
    "wall_time_s",
)


def run(config: OnlineConfig, run_dir: Path) -> None:
    """Finetune (or resume finetuning) the OGM agent in ``run_dir`` (see the module doc)."""
    cfg = config.online
    run_dir = Path(run_dir)
    rd = RunDir.open_or_create(run_dir, kind="odt", config=config, seed=config.seed)
    device = config.torch_device()
    env = make_env(config)
    try:
        demos = offline.load_demonstrations(config)
        event_names = list(event_names_of(env))
        episodes_log = rd.episodes(event_names)
        recorder = EpisodeRecorder(run_dir, primary_event_of(env))
        tb = rd.tensorboard()

        # ---- state: fresh from the offline policy, or from the latest checkpoint
        checkpoint = rd.resume()
        if checkpoint is None:
            model = pretrained_model(config, run_dir)
            reference = copy.deepcopy(model)
        else:
            where = str(checkpoint.path)
            model = _model_from(
                checkpoint.tensors, "model.", checkpoint.state["model_config"], where
            )
            reference = _model_from(
                checkpoint.tensors, "offline.", checkpoint.state["model_config"], where
            )
        model, reference = model.to(device), reference.to(device)
        K = model.config.context_len
        torch.manual_seed(config.seed)
        learner = Learner(model, config)
        rng = np.random.default_rng([config.seed, TRAIN])
        strategy = make_strategy(cfg.strategy)
        eval_strategy = make_strategy(cfg.eval_strategy or config.offline.strategy)
        buffer = ReplayBuffer(
            cfg.buffer_capacity, [dataclasses.replace(t, source="demo") for t in demos]
        )
        round_, env_steps, episodes, eval_episodes = 0, 0, 0, 0
        if checkpoint is None:
            for s in (strategy, eval_strategy):
                s.observe([t.ret for t in demos])
        else:
            tensors, state = checkpoint.tensors, checkpoint.state
            learner.load_state_dict(
                {
                    "model": model.state_dict(),  # already the checkpoint's
                    "optimizer": unpack_state(state["optimizer"], tensors),
                    "scheduler": state["scheduler"],
                    "log_alpha": tensors["log_alpha"],
                    "alpha_optimizer": unpack_state(state["alpha_optimizer"], tensors),
                }
            )
            rng.bit_generator.state = state["numpy_rng"]
            set_torch_rng_state({k[4:]: v for k, v in tensors.items() if k.startswith("rng.")})
            strategy.load_state_dict(state["strategy"])
            eval_strategy.load_state_dict(state["eval_strategy"])
            buffer = ReplayBuffer.from_arrays(
                {k[7:]: v for k, v in checkpoint.arrays.items() if k.startswith("buffer.")}
            )
            round_ = checkpoint.step
            env_steps, episodes = state["env_steps"], state["episodes"]
            eval_episodes = state["eval_episodes"]

        demo_pool = TrajectoryPool(demos)
        probe = demo_pool.sample(
            cfg.probe_segments, K, np.random.default_rng([config.seed, PROBE])
        ).to(device)
        offline_policy = probe_policy(reference, probe)

        def save() -> None:
            opt_tensors, opt_state = pack_state(learner.optimizer.state_dict(), "optim")
            alpha_tensors, alpha_state = pack_state(
                learner.alpha_optimizer.state_dict(), "alpha_optim"
            )
            tensors = {
                **{f"model.{k}": v for k, v in model.state_dict().items()},
                **{f"offline.{k}": v for k, v in reference.state_dict().items()},
                **opt_tensors,
                **alpha_tensors,
                "log_alpha": learner.log_alpha.detach(),
                **{f"rng.{k}": v for k, v in torch_rng_state().items()},
            }
            state = {
                "model_config": model.config.to_dict(),
                "optimizer": opt_state,
                "scheduler": learner.scheduler.state_dict(),
                "alpha_optimizer": alpha_state,
                "numpy_rng": rng.bit_generator.state,
                "strategy": strategy.state_dict(),
                "eval_strategy": eval_strategy.state_dict(),
                "env_steps": env_steps,
                "episodes": episodes,
                "eval_episodes": eval_episodes,
            }
            arrays = {f"buffer.{k}": v for k, v in buffer.to_arrays().items()}
            recorder.flush()
            rd.save_checkpoint(round_, tensors=tensors, state=state, arrays=arrays)

        def play(n: int, strat: ConditioningStrategy, seed: int, deterministic: bool):
            actor = DTActor(model, env.num_envs, context_len=config.offline.eval_context_len)
            return rollout(actor, env, strat, n, seed=seed, deterministic=deterministic)

        def log_episodes(
            results: list[EpisodeResult], phase: str, first: int, steps: list[int]
        ) -> None:
            """episodes.csv rows; ``steps`` are the training env steps at each episode's end."""
            episodes_log.extend(
                episode_row(
                    r.trajectory,
                    phase=phase,
                    round=round_,
                    episode=first + i,
                    env_steps=steps[i],
                    event_names=event_names,
                    target_return=r.target_return,
                )
                for i, r in enumerate(results)
            )

        def evaluate() -> dict[str, float]:
            nonlocal eval_episodes
            if config.eval_episodes == 0:
                return {}
            results = play(
                config.eval_episodes, eval_strategy, derive_seed(config.seed, EVAL), True
            )
            log_episodes(results, "eval", eval_episodes, [env_steps] * len(results))
            eval_episodes += len(results)
            return {
                "eval_return": float(np.mean([r.trajectory.ret for r in results])),
                "eval_performance": float(np.mean([r.trajectory.performance for r in results])),
            }

        def log_round(values: dict[str, float], tick: float) -> None:
            """Write the round's rounds.csv row (every column, NaN where not measured)."""
            composition = buffer.composition()
            row = {
                **dict.fromkeys(ROUND_COLUMNS, math.nan),
                "round": round_,
                "env_steps": env_steps,
                "episodes": episodes,
                "temperature": learner.alpha,
                "target_entropy": learner.target_entropy,
                "kl_offline": policy_kl(offline_policy, prev_policy, probe.mask),
                "demo_fraction": cfg.demo_fraction,
                "buffer_demo": composition["demo"],
                "buffer_online": composition["online"],
                **values,
                "wall_time_s": time.perf_counter() - tick,
            }
            rd.rounds.append(row)
            for key, value in row.items():
                if key != "round" and not math.isnan(value):
                    tb.add_scalar(f"online/{key}", value, round_)

        prev_policy = probe_policy(model, probe)
        if checkpoint is None:  # round 0: the offline policy, evaluated before finetuning
            tick = time.perf_counter()
            log_round({"updates": 0, **evaluate()}, tick)
            save()

        bar = tqdm(total=cfg.rounds, initial=round_, desc="odt", unit="round", disable=None)
        while round_ < cfg.rounds:
            round_ += 1
            tick = time.perf_counter()

            # 1. explore: sampled actions at the exploration target
            results = play(
                config.episodes_per_round,
                strategy,
                derive_seed(config.seed, ROLLOUT, round_),
                False,
            )
            trajectories = [r.trajectory for r in results]
            steps = (env_steps + np.cumsum([t.length for t in trajectories])).tolist()
            log_episodes(results, "online", episodes, steps)
            for i, traj in enumerate(trajectories):
                recorder.record(traj, episode=episodes + i)
            env_steps = steps[-1]
            episodes += len(results)
            returns = [t.ret for t in trajectories]
            for s in (strategy, eval_strategy):
                s.observe(returns)

            # 2. store with hindsight returns-to-go (TrajectoryPool derives them from rewards)
            buffer.add(trajectories)
            replay_pool = TrajectoryPool(buffer.trajectories)

            # 3. learn, under the behaviour-shift cap when set
            sample = functools.partial(
                sample_batch, demo_pool, replay_pool, cfg.batch_size, cfg.demo_fraction, K, rng
            )
            stats, capped = train_round(
                learner,
                sample,
                cfg.updates_per_round,
                probe,
                cfg.max_kl_per_round,
                cfg.kl_check_every,
            )
            policy = probe_policy(model, probe)
            values = {
                **mean_stats(stats, ROUND_STATS),
                "updates": len(stats),
                "kl_capped": float(capped),
                "kl_prev": policy_kl(prev_policy, policy, probe.mask),
                "online_return": float(np.mean(returns)),
                "online_performance": float(np.mean([t.performance for t in trajectories])),
                "online_target": float(np.mean([r.target_return for r in results])),
            }
            prev_policy = policy
            if round_ % cfg.eval_every == 0 or round_ == cfg.rounds:
                values.update(evaluate())
            log_round(values, tick)
            if round_ % cfg.checkpoint_every == 0 or round_ == cfg.rounds:
                save()
            bar.update(1)
            bar.set_postfix(episodes=episodes, env_steps=env_steps, ret=f"{np.mean(returns):.2f}")
        bar.close()
        recorder.flush()
        rd.set_status("done", rounds=round_, env_steps=env_steps)
    except BaseException:
        rd.set_status("failed")
        raise
    finally:
        env.close()
        rd.close()
