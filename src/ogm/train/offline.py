"""Offline training of the GM agent (agent kind ``dt``), then its evaluation.

``run(config, run_dir)`` loads the demonstrations, fits a :class:`DecisionTransformer` on
segments of them (AdamW or LAMB, linear warm-up, grad-norm clipping), checkpoints it, and
finally evaluates it with the protocol every agent shares (:mod:`ogm.train.evaluation`; the
configured conditioning strategy picks the targets, its percentiles taken over the
dataset's returns), at ``env_steps = 0``: the GM agent never acts while it learns; it is
its own initial policy, so its episodes' ``kl_to_init`` is 0. A run directory that already
holds a checkpoint is resumed from it, with the same numbers as an uninterrupted run.

The building blocks (``build_model``, ``make_optimizer``, ``update``, ``load_model``) are
public so that the online trainer and the baselines use the same ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from pydantic import Field, field_validator, model_validator

from ogm.agents.actor import ConditionedDT
from ogm.agents.conditioning import make_strategy
from ogm.agents.fidelity import fidelity_targets, measure_fidelity, write_fidelity
from ogm.baselines.common import EpisodeLog, event_names_of, primary_event_of
from ogm.cache import cache_dir
from ogm.data.trajectory import Trajectory
from ogm.limits import (
    MAX_BATCH,
    MAX_BATCH_STEPS,
    MAX_BINS,
    MAX_CONTEXT,
    MAX_EPISODE_LENGTH,
    MAX_LAYERS,
    MAX_MAGNITUDE,
    MAX_PARAMETERS,
    MAX_UPDATES,
    MAX_WIDTH,
)
from ogm.models.decision_transformer import DecisionTransformer, DTConfig, return_bin_edges_for
from ogm.train import evaluation
from ogm.train.config import CommonConfig
from ogm.train.lamb import Lamb
from ogm.train.progress import Progress
from ogm.train.rundir import (
    Checkpoint,
    RunDir,
    RunDirError,
    load_checkpoint,
    pack_state,
    set_torch_rng_state,
    torch_rng_state,
    unpack_state,
)
from ogm.train.segments import SegmentBatch, TrajectoryPool, dt_loss, observation_stats

Magnitude = Annotated[float, Field(ge=-MAX_MAGNITUDE, le=MAX_MAGNITUDE)]


class OfflineConfig(CommonConfig):
    """The GM agent: a Decision Transformer trained offline on demonstrations."""

    kind: Literal["dt"] = "dt"
    # model (names as in the DT / ODT papers and code)
    n_layer: int = Field(3, gt=0, le=MAX_LAYERS)
    n_head: int = Field(1, gt=0, le=MAX_WIDTH)
    n_embd: int = Field(128, gt=0, le=MAX_WIDTH)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    activation: Literal["relu", "gelu"] = "relu"
    context_len: int = Field(20, gt=0, le=MAX_CONTEXT)  # K during training
    # K when acting (default: context_len)
    eval_context_len: int | None = Field(None, gt=0, le=MAX_CONTEXT)
    # Timestep embedding; None: on when a time limit cut any demonstration (build_model)
    use_timesteps: bool | None = None
    # None: the longest demonstration
    max_ep_len: int | None = Field(None, gt=0, le=MAX_EPISODE_LENGTH)
    n_bins: int = Field(64, gt=0, le=MAX_BINS)  # return bins of the return head
    # Range of the return bins' centers (unscaled). Default: the data's returns-to-go. Set
    # it wider for online runs, so the return head can represent returns found online.
    return_range: tuple[Magnitude, Magnitude] | None = None
    # Returns-to-go are multiplied by this in the model; None: 1 / max |return-to-go| of the
    # data, so that the return token sees values in [-1, 1] (see build_model)
    reward_scale: float | None = Field(None, gt=0.0, le=MAX_MAGNITUDE)
    # optimisation
    optimizer: Literal["adamw", "lamb"] = "adamw"  # ODT: lamb (ogm.train.lamb)
    updates: int = Field(3000, ge=0, le=MAX_UPDATES)
    batch_size: int = Field(64, gt=0, le=MAX_BATCH)
    learning_rate: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(5e-4, ge=0.0)
    warmup_steps: int = Field(300, ge=0, le=MAX_UPDATES)
    grad_clip: float = Field(0.25, gt=0.0)
    alpha: float = Field(0.0, ge=0.0)  # entropy bonus (fixed offline)
    return_coef: float = Field(1.0, ge=0.0)  # weight of the return head's cross-entropy
    # bookkeeping and evaluation
    log_every: int = Field(100, gt=0, le=MAX_UPDATES)
    checkpoint_every: int = Field(1000, gt=0, le=MAX_UPDATES)
    strategy: str = "percentile:90"
    # Conditioning fidelity (ogm.agents.fidelity) after training: this many targets over
    # the demonstrations' return range (0: not measured), each asked of eval_episodes
    # episodes per mode; written to fidelity.csv and summarised in run.json
    fidelity_targets: int = Field(9, ge=0, le=100)

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        make_strategy(value)
        return value

    @field_validator("return_range")
    @classmethod
    def _increasing(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not value[0] < value[1]:
            raise ValueError(f"return_range must be (low, high) with low < high, got {value}")
        return value

    @model_validator(mode="after")
    def _buildable(self) -> OfflineConfig:
        """The model and a batch fit the bounds of :mod:`ogm.limits` (sizes that pass one
        by one can still multiply into one that would exhaust memory)."""
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        parameters = 12 * self.n_layer * self.n_embd**2  # attention + MLP blocks
        if parameters > MAX_PARAMETERS:
            raise ValueError(
                f"n_layer={self.n_layer} and n_embd={self.n_embd} make a model of about "
                f"{parameters:.2g} parameters, above the bound of {MAX_PARAMETERS:.0g}"
            )
        if (self.eval_context_len or 0) > self.context_len:
            raise ValueError(
                f"eval_context_len={self.eval_context_len} is longer than the context the model "
                f"is trained on (context_len={self.context_len})"
            )
        steps = self.batch_size * self.context_len
        if steps > MAX_BATCH_STEPS:
            raise ValueError(
                f"batch_size={self.batch_size} segments of context_len={self.context_len} "
                f"steps make {steps} steps a batch, above the bound of {MAX_BATCH_STEPS}"
            )
        return self


# ----------------------------------------------------------------------------- data


def dataset_cache_dir() -> Path:
    """Where datasets built from recipes are cached (``$OGM_CACHE_DIR/datasets``)."""
    return cache_dir("datasets")


def load_demonstrations(config: CommonConfig) -> list[Trajectory]:
    """The trajectories the config's ``dataset`` names (a path, or a recipe built once),
    checked against the spaces of the config's environment, where they will be used."""
    from ogm.data.dataset import DatasetError, build_dataset, check_trajectories, load_trajectories

    if config.dataset is None:
        raise ValueError(
            f"dataset must name the demonstrations {type(config).__name__} learns from (a "
            "Minari dataset directory, or a [dataset] recipe table); it is not set"
        )
    if isinstance(config.dataset, str):
        path = Path(config.dataset)
    else:
        path = build_dataset(config.dataset, dataset_cache_dir())
    trajectories = load_trajectories(path)
    with contextlib.closing(make_eval_env(config, 1)) as env:
        spaces = env.single_observation_space, env.single_action_space
    try:
        check_trajectories(trajectories, *spaces)
    except ValueError as err:
        raise DatasetError(f"dataset {path} does not fit {config.env_id}: {err}") from None
    return trajectories


# ----------------------------------------------------------------------------- model


def build_model(
    config: OfflineConfig, trajectories: Sequence[Trajectory], action_space: gym.Space
) -> DecisionTransformer:
    """A fresh model sized for the data: return bins over its returns-to-go, normaliser
    from its observations, action head from ``action_space``.

    Fields the config leaves at None are read off the data, so that the return token can
    condition the policy in every game (see the model's module docstring):

    - ``reward_scale = 1 / max |return-to-go|``: the model sees returns in [-1, 1];
    - ``use_timesteps`` is on when a time limit cut any demonstration (it ends truncated).
      The return still to come then depends on the steps left, which a gridworld's
      observation does not show (every ogm gridworld stops at ``max_steps=100``), so the
      model needs the clock. Demonstrations that all end by termination go without (ODT);
    - ``max_ep_len`` is the longest demonstration: the time limit, when one cut them.
    """
    rtg = np.concatenate([t.returns_to_go() for t in trajectories])
    largest = float(np.abs(rtg).max())
    reward_scale = config.reward_scale or (1.0 / largest if largest > 0 else 1.0)
    use_timesteps = config.use_timesteps
    if use_timesteps is None:
        use_timesteps = any(bool(t.truncations.any()) for t in trajectories)
    if isinstance(action_space, gym.spaces.Discrete):
        action = {"act_dim": int(action_space.n), "discrete": True}
    elif isinstance(action_space, gym.spaces.Box):
        action = {
            "act_dim": int(np.prod(action_space.shape)),
            "discrete": False,
            "action_low": tuple(np.ravel(action_space.low)),
            "action_high": tuple(np.ravel(action_space.high)),
        }
    else:
        raise ValueError(
            f"the Decision Transformer needs Discrete or Box actions, got {action_space}"
        )
    dt_config = DTConfig(
        obs_shape=trajectories[0].states.shape[1:],
        return_bin_edges=return_bin_edges_for(
            *(config.return_range or (rtg.min(), rtg.max())), config.n_bins
        ),
        reward_scale=reward_scale,
        context_len=config.context_len,
        max_ep_len=config.max_ep_len or max(t.length for t in trajectories),
        use_timesteps=use_timesteps,
        n_layer=config.n_layer,
        n_head=config.n_head,
        n_embd=config.n_embd,
        activation=config.activation,
        dropout=config.dropout,
        **action,
    )
    model = DecisionTransformer(dt_config)
    model.set_obs_normalizer(*observation_stats(trajectories))
    return model


def model_checkpoint(model: DecisionTransformer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors (``model.*``) and JSON state (``model_config``) that :func:`load_model` reads."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    return tensors, {"model_config": model.config.to_dict()}


def load_model(
    path: Path | str,
    *,
    expect: DTConfig | None = None,
    device: torch.device | str = "cpu",
) -> DecisionTransformer:
    """The model stored in a checkpoint (or a run directory's latest one).

    With ``expect``, a checkpoint whose config differs is an error naming the fields; a
    checkpoint whose tensors do not fit its own config is an error naming the tensors.
    """
    checkpoint = load_checkpoint(Path(path))
    if "model_config" not in checkpoint.state:
        raise RunDirError(f"checkpoint {checkpoint.path} holds no Decision Transformer")
    with checkpoint.restoring():
        config = stored_model_config(checkpoint.state["model_config"])
    if expect is not None and expect != config:
        ours, theirs = expect.to_dict(), config.to_dict()
        fields = sorted(k for k in ours if ours[k] != theirs[k])
        raise RunDirError(
            f"checkpoint {checkpoint.path} has a different model config; differing: "
            + ", ".join(f"{k} ({theirs[k]!r} stored, {ours[k]!r} expected)" for k in fields)
        )
    with checkpoint.restoring():
        model = DecisionTransformer(config)
        load_model_tensors(model, checkpoint.tensors, str(checkpoint.path))
    return model.to(device)


def stored_model_config(data: dict[str, Any]) -> DTConfig:
    """The :class:`DTConfig` a checkpoint stores, whose sizes must lie within the bounds of
    a config (:mod:`ogm.limits`): a damaged checkpoint must not build a model that
    exhausts memory. ``ValueError`` naming the size otherwise."""
    config = DTConfig.from_dict(dict(data))
    bounds = {
        "n_layer": MAX_LAYERS,
        "n_head": MAX_WIDTH,
        "n_embd": MAX_WIDTH,
        "n_inner": 4 * MAX_WIDTH,
        "context_len": MAX_CONTEXT,
        "max_ep_len": MAX_EPISODE_LENGTH,
        "act_dim": MAX_WIDTH,
        "conv_channels": MAX_WIDTH,
        "observation size": MAX_BATCH_STEPS,
    }
    sizes = {name: getattr(config, name, None) for name in bounds}
    sizes["observation size"] = math.prod(config.obs_shape)
    for name, bound in bounds.items():
        if sizes[name] is not None and not 0 < sizes[name] <= bound:
            raise ValueError(f"model_config: {name} {sizes[name]} is outside 1..{bound}")
    if 12 * config.n_layer * config.n_embd**2 > MAX_PARAMETERS:
        raise ValueError(
            f"model_config: a model above the bound of {MAX_PARAMETERS:.0g} parameters"
        )
    return config


def load_model_tensors(
    model: DecisionTransformer, tensors: dict[str, torch.Tensor], where: str
) -> None:
    """Copy the ``model.*`` tensors into ``model``; any missing, extra or misshapen tensor is
    an error naming it."""
    own = model.state_dict()
    stored = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    problems = [f"missing {k}" for k in own if k not in stored]
    problems += [f"unexpected {k}" for k in stored if k not in own]
    problems += [
        f"{k} has shape {tuple(stored[k].shape)}, config needs {tuple(v.shape)}"
        for k, v in own.items()
        if k in stored and stored[k].shape != v.shape
    ]
    if problems:
        raise RunDirError(
            f"checkpoint {where} does not fit its model config: " + "; ".join(problems)
        )
    model.load_state_dict(stored)


# ----------------------------------------------------------------------------- optimisation


# The optimisers a config may name (its ``optimizer`` field)
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {"adamw": torch.optim.AdamW, "lamb": Lamb}


def make_optimizer(
    model: torch.nn.Module,
    learning_rate: float,
    weight_decay: float,
    warmup_steps: int,
    *,
    kind: str = "adamw",
    start_step: int = 0,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The optimiser ``kind`` (AdamW or LAMB; weight decay on matrices only, as in nanoGPT)
    with a linear warm-up: update ``k`` (from 0) runs at ``learning_rate * min(1, (k + 1) /
    warmup_steps)``. ``start_step`` updates have already run under this schedule: ODT's
    online phase continues the schedule of its pretraining."""
    if kind not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {kind!r}")
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    optimizer = OPTIMIZERS[kind](groups, lr=learning_rate)
    for group in optimizer.param_groups:  # a scheduler started past step 0 needs it
        group["initial_lr"] = learning_rate
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(1.0, (step + 1) / max(1, warmup_steps)),
        last_epoch=start_step - 1,
    )
    return optimizer, scheduler


def optimizer_for(
    model: torch.nn.Module, config: OfflineConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """:func:`make_optimizer` with the GM agent's settings in ``config``."""
    return make_optimizer(
        model,
        config.learning_rate,
        config.weight_decay,
        config.warmup_steps,
        kind=config.optimizer,
    )


def update(
    model: DecisionTransformer,
    batch: SegmentBatch,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    *,
    alpha: float | torch.Tensor = 0.0,
    return_coef: float = 1.0,
    grad_clip: float = 0.25,
) -> dict[str, float]:
    """One gradient step on :func:`dt_loss`; returns its stats plus ``grad_norm``."""
    model.train()
    loss, stats = dt_loss(model, batch, alpha=alpha, return_coef=return_coef)
    learning_rate = optimizer.param_groups[0]["lr"]
    require_finite(learning_rate, loss=loss)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip))
    require_finite(learning_rate, grad_norm=stats["grad_norm"])
    optimizer.step()
    scheduler.step()
    return stats


def offline_step(
    config: OfflineConfig,
    model: DecisionTransformer,
    pool: TrajectoryPool,
    rng: np.random.Generator,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> dict[str, float]:
    """One update of the GM agent's offline training: a batch of segments from ``pool``,
    the loss terms and clipping of ``config``."""
    batch = pool.sample(config.batch_size, config.context_len, rng).to(model.obs_mean.device)
    return update(
        model,
        batch,
        optimizer,
        scheduler,
        alpha=config.alpha,
        return_coef=config.return_coef,
        grad_clip=config.grad_clip,
    )


class DivergedError(RuntimeError):
    """Training met a NaN or infinite number. It stops before the step that would spread
    it into the parameters, and writes no checkpoint, so the run keeps its last good one."""


def require_finite(learning_rate: float, **values: float | torch.Tensor) -> None:
    """:class:`DivergedError` naming each of ``values`` (a loss, a gradient norm) that is
    not finite; called before an optimiser step."""
    numbers = {name: float(torch.as_tensor(v).detach()) for name, v in values.items()}
    bad = {name: v for name, v in numbers.items() if not math.isfinite(v)}
    if bad:
        found = ", ".join(f"the {name.replace('_', ' ')} is {v}" for name, v in bad.items())
        raise DivergedError(
            f"training diverged: {found} (learning rate {learning_rate:g}; lower it); "
            "stopped before the update, so the run keeps its last good checkpoint"
        )


def require_finite_parameters(module: torch.nn.Module) -> None:
    """:class:`DivergedError` naming parameters of ``module`` that hold NaN or infinite
    values; called before a checkpoint, so that none is written from a diverged state."""
    bad = [name for name, p in module.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise DivergedError(
            f"training diverged: parameters {', '.join(bad[:3])}"
            f"{' ...' if len(bad) > 3 else ''} hold NaN or infinite values (lower the "
            "learning rate); no checkpoint written, the run keeps its last good one"
        )


# ----------------------------------------------------------------------------- run


def training_state(
    model: DecisionTransformer,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rng: np.random.Generator,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Everything a resumed run needs, as safetensors tensors and JSON state."""
    tensors, state = model_checkpoint(model)
    opt_tensors, opt_state = pack_state(optimizer.state_dict(), "optim")
    tensors.update(opt_tensors)
    tensors.update({f"rng.{k}": v for k, v in torch_rng_state().items()})
    state.update(
        optimizer=opt_state, scheduler=scheduler.state_dict(), numpy_rng=rng.bit_generator.state
    )
    return tensors, state


def restore(
    checkpoint: Checkpoint,
    model: DecisionTransformer,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rng: np.random.Generator,
) -> int:
    """Load what :func:`training_state` saved; returns the checkpoint's step."""
    with checkpoint.restoring():
        load_model_tensors(model, checkpoint.tensors, str(checkpoint.path))
        optimizer.load_state_dict(unpack_state(checkpoint.state["optimizer"], checkpoint.tensors))
        scheduler.load_state_dict(checkpoint.state["scheduler"])
        rng.bit_generator.state = checkpoint.state["numpy_rng"]
        set_torch_rng_state(
            {
                k.removeprefix("rng."): v
                for k, v in checkpoint.tensors.items()
                if k.startswith("rng.")
            }
        )
    return checkpoint.step


def make_eval_env(config: CommonConfig, num_envs: int) -> gym.vector.VectorEnv:
    """The config's environment as ``num_envs`` copies without autoreset (for rollout)."""
    from ogm.envs import make_vector

    return make_vector(
        config.env_id, num_envs, autoreset_mode=AutoresetMode.DISABLED, **config.env_kwargs
    )


def run(config: OfflineConfig, run_dir: Path) -> None:
    """Train (or resume) the offline DT in ``run_dir``, then evaluate it (see module doc).

    The data and the environment are checked before the run directory is made, so bad
    input leaves nothing behind.
    """
    trajectories = load_demonstrations(config)
    with contextlib.closing(make_eval_env(config, 1)) as env:
        action_space = env.single_action_space
    run = RunDir.open_or_create(run_dir, kind="dt", config=config, seed=config.seed)
    try:
        model = train(config, run, trajectories, action_space)
        evaluate(config, run, model, [t.ret for t in trajectories])
    except BaseException as err:
        run.record_failure(err)
        raise
    finally:
        run.close()


def train(
    config: OfflineConfig, run: RunDir, trajectories: Sequence[Trajectory], action_space: gym.Space
) -> DecisionTransformer:
    """Fit the model on segments of ``trajectories``, resuming from the run's checkpoint."""
    device = config.torch_device()
    torch.manual_seed(config.seed)
    model = build_model(config, trajectories, action_space).to(device)
    model.set_precision(config.torch_precision())
    optimizer, scheduler = optimizer_for(model, config)
    rng = np.random.default_rng(config.seed)
    checkpoint = run.resume()
    step = 0 if checkpoint is None else restore(checkpoint, model, optimizer, scheduler, rng)

    def save(step: int) -> None:
        require_finite_parameters(model)
        tensors, state = training_state(model, optimizer, scheduler, rng)
        run.save_checkpoint(step, tensors=tensors, state=state)

    pool = TrajectoryPool(trajectories)
    tb = run.tensorboard()
    tick, tick_step = time.perf_counter(), step
    progress = Progress(config.updates, desc="offline DT", unit="updates", initial=step)
    while step < config.updates:
        stats = offline_step(config, model, pool, rng, optimizer, scheduler)
        step += 1
        progress.update()
        if step % config.log_every == 0 or step == config.updates:
            now = time.perf_counter()
            stats["updates_per_s"] = (step - tick_step) / max(now - tick, 1e-9)
            stats["lr"] = scheduler.get_last_lr()[0]
            tick, tick_step = now, step
            run.rounds.append({"step": step, **stats})
            for key, value in stats.items():
                tb.add_scalar(f"offline/{key}", value, step)
        if step % config.checkpoint_every == 0 or step == config.updates:
            save(step)
    progress.close()
    if checkpoint is None and config.updates == 0:
        save(0)
    return model


def evaluate(
    config: OfflineConfig,
    run: RunDir,
    model: DecisionTransformer,
    dataset_returns: Sequence[float],
) -> None:
    """Evaluate the trained model (see the module doc) and measure its conditioning
    fidelity; the means and the fidelity summary go to ``run.json``."""
    strategy = make_strategy(config.strategy)
    strategy.observe(dataset_returns)
    agent = ConditionedDT(model, strategy, context_len=config.eval_context_len)
    with contextlib.closing(make_eval_env(config, 1)) as env:
        log = EpisodeLog(run, event_names_of(env), primary_event_of(env), record_eval=True)
    results = {  # pi is pi_init: KL 0 without measuring it
        mode: [dataclasses.replace(r, kl_to_init=0.0) for r in episodes]
        for mode, episodes in evaluation.evaluate(agent, config).items()
    }
    means = evaluation.log_evaluation(log, results, round=0, env_steps=0)
    log.flush()
    fidelity = None
    if config.fidelity_targets and config.eval_episodes:
        measured = measure_fidelity(
            model,
            config,
            fidelity_targets(dataset_returns, config.fidelity_targets),
            episodes_per_target=config.eval_episodes,
            context_len=config.eval_context_len,
        )
        fidelity = write_fidelity(run.path, measured)
    run.set_status(
        "done", env_steps=0, final_eval=evaluation.final_summary(means), fidelity=fidelity
    )
