"""Online finetuning of the GM agent (agent kind ``odt``): the OGM agent.

The algorithm is the Online Decision Transformer's (Zheng, Zhang & Grover 2022): a
Decision Transformer pretrained offline keeps training on its own trajectories. Each round

1. rolls out ``episodes_per_round`` episodes on the vector env with *sampled* actions,
   each asking for the return the run's conditioning strategy picks (the exploration target);
2. stores them in a FIFO trajectory replay buffer; their returns-to-go are recomputed from
   the rewards actually received (hindsight relabelling), and the strategies observe them;
3. makes ``updates_per_round`` gradient updates (or ``updates_per_step`` per environment
   step of the round: a replay ratio) on segments from the buffer, with ODT's
   entropy constraint: the loss has a ``- alpha * H`` term and ``alpha = exp(log_alpha)``
   follows the dual update ``min alpha * (H - target_entropy)`` with its own Adam.

``preset = "odt"`` sets ODT's published settings in both sections (model, LAMB with a
10k-step warm-up that the online phase continues from pretraining, one episode then 300
updates per round, exploration at twice the evaluation target, ...: :data:`PRESETS`), and
on D4RL's MuJoCo and AntMaze environments its per-environment targets, reward scale and
learning rates (:data:`ODT_ENVIRONMENTS`); fields set explicitly override it.

On top of ODT, the controls of the essay "Safety considerations for online generative
modeling", each a config field and each logged every round:

- ``demo_fraction = f``: exactly ``round(f * batch_size)`` segments of every batch are
  demonstrations and the rest come from online episodes only (the buffer then holds online
  episodes alone). ``None`` is ODT as published: one buffer that starts with the
  demonstrations, so their share falls as online episodes come in; it is logged
  (``demo_share``) either way;
- ``strategy``: how the exploration target is chosen (its state follows every episode);
- ``entropy``: the entropy constraint on or off (off: ``alpha = 0``, no dual update). The
  default ``target_entropy`` for discrete actions is the offline policy's own mean entropy
  on demonstration states, so the temperature holds the policy at the demonstrator's
  randomness instead of paying a fixed bonus for more;
- ``max_kl_per_round``: a cap on how fast behaviour may shift, measured on two probes: a
  fixed set of demonstration segments, and segments of the round's own episodes fed the
  returns-to-go the policy acted on (target minus rewards so far). The round's updates run
  in blocks of ``kl_check_every``; after each block the mean KL(policy at the round's start
  || policy now) is measured on both, and if either exceeds the cap the block's step is
  halved back towards its start until it fits (at most ``kl_backtracks`` times, else the
  block is undone) and the round's updates stop. So the KL logged for the round never
  exceeds the cap, yet a tight cap slows learning instead of stopping it.

Evaluation follows the protocol every ogm agent shares (:mod:`ogm.train.evaluation`:
greedy and sampled episodes from held-out starts, the evaluation strategy's target): at
round 0, i.e. after offline training alone, then after every round that crosses a multiple
of ``eval_every`` environment steps, and after the last round. The offline policy runs next
to the acting one on every evaluation step, and each episode logs its summed
KL(policy || offline policy) (``kl_to_init``; 0 at round 0).

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
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from ogm.agents.actor import (
    ConditionedDT,
    EpisodeResult,
    evaluating,
    kl_divergence,
    rollout,
)
from ogm.agents.conditioning import check_spec, make_strategy
from ogm.baselines.common import EpisodeLog, event_names_of, primary_event_of
from ogm.envs.sequence import PROXY_ENV_ID
from ogm.limits import (
    MAX_BATCH,
    MAX_EPISODES,
    MAX_EVAL_EPISODES,
    MAX_ROUNDS,
    MAX_STEPS,
    MAX_UPDATES,
    STRICT,
)
from ogm.models.decision_transformer import DecisionTransformer, Policy
from ogm.train import evaluation, offline
from ogm.train.config import CommonConfig, RunPath, describe_errors
from ogm.train.evaluation import final_summary, log_evaluation
from ogm.train.feedback import ROUND_COLUMNS as FEEDBACK_COLUMNS
from ogm.train.feedback import Feedback, FeedbackSection
from ogm.train.progress import Progress
from ogm.train.replay import ReplayBuffer
from ogm.train.rundir import (
    RunDir,
    RunDirError,
    load_checkpoint,
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
    __config__=STRICT,
    __doc__="Offline pretraining: the fields of OfflineConfig outside CommonConfig.",
    **{
        name: (info.annotation, info)
        for name, info in offline.OfflineConfig.model_fields.items()
        if name not in CommonConfig.model_fields and name != "kind"
    },
)


# ODT as published (Zheng, Zhang & Grover 2022; facebookresearch/online-dt main.py, its
# defaults, which are Hopper's), per config section; docs/online.md gives each value's
# source. One LAMB optimiser and one warm-up schedule serve both phases, as in ODT, where
# the online phase continues the pretraining's (continue_optimizer). ODT has no return head
# (return_coef 0) and learns its temperature from 0.1 during pretraining too (alpha 0.1,
# held fixed offline). Per-environment values: ODT_ENVIRONMENTS.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "odt": {
        "offline": {
            "n_layer": 4,
            "n_head": 4,
            "n_embd": 512,  # MLP 4 x 512 = 2048
            "dropout": 0.1,
            "activation": "relu",
            "context_len": 20,
            "eval_context_len": 5,
            "use_timesteps": False,
            "updates": 5000,
            "batch_size": 256,
            "optimizer": "lamb",
            "learning_rate": 1e-4,
            "weight_decay": 5e-4,
            "warmup_steps": 10_000,
            "grad_clip": 0.25,
            "alpha": 0.1,
            "return_coef": 0.0,
        },
        "online": {
            "episodes_per_round": 1,
            "updates_per_round": 300,
            "batch_size": 256,
            "optimizer": "lamb",
            "learning_rate": 1e-4,
            "weight_decay": 5e-4,
            "warmup_steps": 10_000,
            "continue_optimizer": True,
            "grad_clip": 0.25,
            "buffer_capacity": 1000,
            "strategy": "odt:2",
            "demo_fraction": None,
            "entropy": True,
            "init_temperature": 0.1,
            "temperature_lr": 1e-4,
            "max_kl_per_round": None,
        },
    }
}


@dataclasses.dataclass(frozen=True)
class OdtEnvironment:
    """ODT's settings for one D4RL environment (its launch scripts, which copy the paper's
    table). Exploration is at twice ``eval_rtg`` in all of them (the preset's ``odt:2``)."""

    eval_rtg: float  # evaluation target, in the environment's reward units
    reward_scale: float
    learning_rate: float
    weight_decay: float
    pretrain_updates: int = 5000
    n_embd: int = 512
    replay_size: int = 1000  # trajectories

    def sections(self) -> dict[str, dict[str, Any]]:
        """The values of the config sections these settings fix."""
        target = f"fixed:{self.eval_rtg:g}"
        shared = {"learning_rate": self.learning_rate, "weight_decay": self.weight_decay}
        return {
            "offline": {
                **shared,
                "n_embd": self.n_embd,
                "updates": self.pretrain_updates,
                "reward_scale": self.reward_scale,
                "strategy": target,
            },
            "online": {**shared, "buffer_capacity": self.replay_size, "eval_strategy": target},
        }


# Keyed by the D4RL environment name; d4rl_environment() reads it off an env id.
ODT_ENVIRONMENTS: dict[str, OdtEnvironment] = {
    "hopper": OdtEnvironment(3600, 1e-3, 1e-4, 5e-4),
    "walker2d": OdtEnvironment(5000, 1e-3, 1e-3, 1e-3, pretrain_updates=10_000),
    "halfcheetah": OdtEnvironment(6000, 1e-3, 1e-4, 5e-4),
    "antmaze": OdtEnvironment(
        1, 1.0, 1e-3, 0.0, pretrain_updates=7000, n_embd=1024, replay_size=1500
    ),
}
# (environment, D4RL dataset) pairs whose launch script departs from the environment's row;
# the dataset is recognised by the last part of the config's dataset name
ODT_DATASETS: dict[tuple[str, str], dict[str, Any]] = {
    ("hopper", "medium-replay"): {"learning_rate": 2e-3, "weight_decay": 1e-4},
}


def d4rl_environment(env_id: str) -> str | None:
    """The key of :data:`ODT_ENVIRONMENTS` that ``env_id`` names (a Gymnasium id such as
    ``Hopper-v5`` or ``AntMaze_UMaze-v4``, or a D4RL one such as ``hopper-medium-v2``), or
    None for any other environment."""
    name = re.sub(r"[^a-z0-9]", "", env_id.rsplit("/", 1)[-1].lower())
    return next((key for key in ODT_ENVIRONMENTS if name.startswith(key)), None)


def preset_values(preset: str, env_id: str, dataset: Any = None) -> dict[str, dict[str, Any]]:
    """The values ``preset`` gives the ``offline`` and ``online`` sections in ``env_id``,
    trained on ``dataset`` (its name, or a collect-rl recipe's quality, picks
    :data:`ODT_DATASETS`' rows). Outside the
    environments of :data:`ODT_ENVIRONMENTS`, targets and reward scale stay data-derived."""
    values = {name: dict(section) for name, section in PRESETS[preset].items()}
    environment = d4rl_environment(env_id)
    if preset != "odt" or environment is None:
        return values
    if isinstance(dataset, str):
        dataset_name = Path(dataset).name.lower().replace("_", "-")
    else:  # a collect-rl recipe names its D4RL-style dataset by its quality
        dataset_name = str(dataset.get("quality", "")) if isinstance(dataset, dict) else ""
    settings = ODT_ENVIRONMENTS[environment]
    for (env, name), changes in ODT_DATASETS.items():
        if env == environment and name in dataset_name:
            settings = dataclasses.replace(settings, **changes)
    for name, section in settings.sections().items():
        values[name].update(section)
    return values


class OnlineSection(BaseModel):
    """Online finetuning (ODT) and the controls of the essay "Safety considerations for
    online generative modeling". Defaults follow ODT where it has one; ``preset = "odt"``
    sets ODT's published settings in this section and the ``offline`` one (applied by
    :class:`OnlineConfig`, which knows the environment: :func:`preset_values`), and fields
    set explicitly override the preset."""

    model_config = STRICT

    preset: Literal["odt"] | None = None
    rounds: int = Field(50, ge=0, le=MAX_ROUNDS)
    # The budget in environment steps of online interaction, as SB3's: the online phase
    # ends with the round that reaches it (rounds stays an upper bound); None: rounds decide
    total_timesteps: int | None = Field(None, gt=0, le=MAX_STEPS)
    # default: num_envs; ODT: 1
    episodes_per_round: int | None = Field(None, gt=0, le=MAX_EVAL_EPISODES)
    # default 300 (ODT's) unless updates_per_step is set
    updates_per_round: int | None = Field(None, ge=0, le=MAX_UPDATES)
    # The replay ratio instead: gradient updates per environment step, so a round of short
    # episodes trains as much per step as one of long episodes (each round makes the updates
    # its steps bring, floor(steps * ratio) counted from the run's start)
    updates_per_step: float | None = Field(None, gt=0.0, le=MAX_UPDATES)
    batch_size: int = Field(64, gt=0, le=MAX_BATCH)  # ODT: 256
    optimizer: Literal["adamw", "lamb"] = "adamw"  # ODT: lamb
    learning_rate: float = Field(1e-4, gt=0.0)  # ODT: 1e-4
    weight_decay: float = Field(5e-4, ge=0.0)  # ODT: 5e-4
    warmup_steps: int = Field(0, ge=0, le=MAX_UPDATES)  # ODT: 10k, counted from pretraining
    # Continue the pretraining optimiser: its moments and its schedule's step count (ODT
    # keeps one optimiser and scheduler for both phases); False: a fresh optimiser
    continue_optimizer: bool = False  # ODT: True
    grad_clip: float = Field(0.25, gt=0.0)  # ODT: 0.25
    buffer_capacity: int = Field(1000, gt=0, le=MAX_EPISODES)  # trajectories; ODT: 1000
    strategy: str = "percentile:95"  # exploration target; ODT: odt:2
    eval_strategy: str | None = None  # evaluation target; default: evaluation_target()
    # the essay's controls
    demo_fraction: float | None = Field(None, ge=0.0, le=1.0)  # None: ODT's mixed buffer
    entropy: bool = True
    init_temperature: float = Field(0.1, gt=0.0)  # ODT: 0.1
    # Adam moves log_alpha by about temperature_lr per update whatever the entropy gap:
    # ODT's 1e-4 suits its ~450k updates, not a gridworld budget of a few thousand
    temperature_lr: float = Field(1e-2, gt=0.0)  # ODT: 1e-4
    target_entropy: float | None = None  # None: see target_entropy()
    max_kl_per_round: float | None = Field(None, gt=0.0)
    kl_check_every: int = Field(25, gt=0, le=MAX_UPDATES)  # updates per block of the KL cap
    kl_backtracks: int = Field(10, ge=0, le=60)  # halvings of a block that overshoots the cap
    probe_segments: int = Field(256, gt=0, le=MAX_BATCH)  # segments per KL probe
    # OGM with feedback: the proxy reward model of an ogm/ProxyReward-v0 run learns from gold
    # labels of the agent's own episodes after every round (ogm.train.feedback); None: frozen
    feedback: FeedbackSection | None = None
    checkpoint_every: int = Field(5, gt=0, le=MAX_ROUNDS)

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, spec: str) -> str:
        return check_spec(spec)  # odt:m is built in run(), on the evaluation strategy

    @field_validator("eval_strategy")
    @classmethod
    def _known_eval_strategy(cls, spec: str | None) -> str | None:
        if spec is not None:
            make_strategy(spec)
        return spec

    @model_validator(mode="after")
    def _one_update_rule(self) -> OnlineSection:
        if self.updates_per_step is None:
            if self.updates_per_round is None:
                self.updates_per_round = 300  # ODT
        elif self.updates_per_round is not None:
            raise ValueError(
                "set updates_per_round (updates per round) or updates_per_step (updates per "
                "environment step), not both"
            )
        return self

    def round_updates(self, steps_before: int, steps_after: int) -> int:
        """Gradient updates of a round that took the run from ``steps_before`` to
        ``steps_after`` environment steps."""
        if self.updates_per_step is None:
            return self.updates_per_round
        ratio = self.updates_per_step
        return math.floor(steps_after * ratio) - math.floor(steps_before * ratio)


class OnlineConfig(CommonConfig):
    """The OGM agent: a Decision Transformer pretrained offline, then finetuned online.

    ``pretrained`` (a run directory or checkpoint holding a Decision Transformer) skips the
    offline phase; otherwise the ``offline`` section trains one in ``<run_dir>/offline``.
    """

    kind: Literal["odt"] = "odt"
    pretrained: RunPath | None = None
    offline: OfflineSection = Field(default_factory=OfflineSection)  # type: ignore[valid-type]
    online: OnlineSection = Field(default_factory=OnlineSection)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        """``online.preset``'s values (:func:`preset_values`) for every field of both
        sections that the config does not set itself."""
        if not isinstance(data, dict):
            return data
        sections = {name: _explicit(data.get(name)) for name in ("offline", "online")}
        if not all(isinstance(section, dict) for section in sections.values()):
            return data  # a section of the wrong type: its own field's validation says so
        preset = sections["online"].get("preset")
        if preset not in PRESETS:  # None, or a name OnlineSection rejects
            return data
        env_id = data.get("env_id", cls.model_fields["env_id"].default)
        # an env_id of the wrong type is reported by its own field's validation
        values = preset_values(
            preset, env_id if isinstance(env_id, str) else "", data.get("dataset")
        )
        if "updates_per_step" in sections["online"]:  # the config's own rule replaces ODT's
            values["online"].pop("updates_per_round", None)
        merged = {name: {**values[name], **sections[name]} for name in sections}
        # a context set shorter than the preset's acting context: act on all of it
        context, acting = (merged["offline"].get(k) for k in ("context_len", "eval_context_len"))
        explicit = "eval_context_len" in sections["offline"]
        if (
            not explicit
            and isinstance(context, int)
            and isinstance(acting, int)
            and context < acting
        ):
            merged["offline"]["eval_context_len"] = context
        return {**data, **merged}

    @model_validator(mode="after")
    def _valid_offline(self) -> OnlineConfig:
        try:
            self.offline_config()
        except ValidationError as err:  # the checks of OfflineConfig that span its fields
            raise ValueError(describe_errors(err, prefix="offline")) from None
        if self.online.feedback is not None and self.env_id != PROXY_ENV_ID:
            raise ValueError(
                f"online.feedback retrains a proxy reward model: it needs env_id "
                f"{PROXY_ENV_ID!r}, got {self.env_id!r}"
            )
        return self

    def offline_config(self) -> offline.OfflineConfig:
        """The config of the offline pretraining run."""
        common = {name: getattr(self, name) for name in CommonConfig.model_fields}
        return offline.OfflineConfig(**common, **self.offline.model_dump())

    @property
    def episodes_per_round(self) -> int:
        return self.online.episodes_per_round or self.num_envs


def _explicit(section: Any) -> Any:
    """The fields a config section (a dict, or an already validated section) sets itself."""
    if section is None:
        return {}
    if isinstance(section, BaseModel):
        return section.model_dump(exclude_unset=True)
    return section


# ----------------------------------------------------------------------------- pieces

# Independent random streams derived from the run's seed.
ROLLOUT, PROBE, TRAIN = range(3)


def derive_seed(seed: int, stream: int, index: int = 0) -> int:
    """A seed for ``(stream, index)`` (e.g. the rollout of one round), independent of others."""
    return int(np.random.SeedSequence([seed, stream, index]).generate_state(1)[0])


@torch.no_grad()
def target_entropy(
    offline_model: DecisionTransformer, setting: float | None, demo_probe: SegmentBatch, seed: int
) -> float:
    """The entropy the temperature holds the policy at.

    An explicit ``setting`` wins. Otherwise, for discrete actions, the offline policy's
    mean entropy over the demonstration probe's steps, measured once when the online phase
    starts: the demonstrator's randomness as the policy learnt it. A fixed share of
    ``log|A|`` (ODT has no rule for discrete actions) can lie above it, and the constraint
    then pays a bonus for noise, which the temperature only raises. It is
    measured as the dual update measures the entropy, in training mode (dropout on, its
    masks drawn from ``seed`` without touching the global generator), so that the offline
    policy itself sits at the target: dropout alone adds about 0.07 nats on tomato_watering.
    Continuous actions keep ODT's ``-action_dim``.
    """
    if setting is not None:
        return float(setting)
    if not offline_model.config.discrete:
        return -float(offline_model.config.act_dim)
    probe, device = demo_probe, demo_probe.mask.device
    was_training = offline_model.training
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        offline_model.train()
        out = offline_model(
            probe.returns_to_go, probe.observations, probe.actions, probe.timesteps, probe.mask
        )
    offline_model.train(was_training)
    m = probe.mask.float()
    return float((out.policy.entropy() * m).sum() / m.sum())


def sample_batch(
    demo_pool: TrajectoryPool | None,
    online_pool: TrajectoryPool | None,
    batch_size: int,
    demo_fraction: float | None,
    context_len: int,
    rng: np.random.Generator,
) -> tuple[SegmentBatch, int]:
    """A batch, demonstration segments first, and how many of its segments are demonstrations.

    ``demo_fraction = f``: exactly ``round(f * batch_size)`` segments from ``demo_pool``
    (the demonstrations), the rest from ``online_pool`` (the buffer's online episodes).
    ``None`` (ODT): the pools are the buffer's two parts, and ODT draws every segment from
    the whole buffer, a trajectory with probability proportional to its length. Drawing the
    number of demonstration segments first, ``Binomial(batch_size, demo steps / buffer
    steps)``, then each part's segments from its own pool, is that same distribution, and
    it tells the batch's share of demonstrations.
    """
    if demo_fraction is None:
        demo_steps = demo_pool.num_steps if demo_pool is not None else 0
        online_steps = online_pool.num_steps if online_pool is not None else 0
        n_demo = int(rng.binomial(batch_size, demo_steps / (demo_steps + online_steps)))
    else:
        n_demo = round(demo_fraction * batch_size)
    parts = [
        pool.sample(n, context_len, rng)
        for pool, n in ((demo_pool, n_demo), (online_pool, batch_size - n_demo))
        if n > 0
    ]
    return (parts[0] if len(parts) == 1 else SegmentBatch.cat(*parts)), n_demo


def acting_probe(
    results: list[EpisodeResult], n: int, context_len: int, rng: np.random.Generator
) -> SegmentBatch:
    """``n`` segments of the episodes in ``results`` with the returns-to-go the policy was
    fed while acting them: the target asked for minus the rewards received so far (not the
    hindsight returns-to-go it trains on). A trajectory whose last reward also carries
    ``target - return`` has exactly these as its hindsight returns-to-go."""
    as_asked = []
    for r in results:
        rewards = r.trajectory.rewards.copy()
        rewards[-1] += r.target_return - r.trajectory.ret
        as_asked.append(dataclasses.replace(r.trajectory, rewards=rewards))
    return TrajectoryPool(as_asked).sample(n, context_len, rng)


@torch.no_grad()
def probe_policy(model: DecisionTransformer, probe: SegmentBatch) -> Policy:
    """The policy at every probe step, without dropout."""
    with evaluating(model):
        out = model(
            probe.returns_to_go, probe.observations, probe.actions, probe.timesteps, probe.mask
        )
    return out.policy


def policy_kl(p: Policy, q: Policy, mask: torch.Tensor) -> float:
    """Mean KL(p || q) over the unpadded steps (exact: :func:`kl_divergence`)."""
    kl = kl_divergence(p, q)
    m = mask.float()
    return float((kl * m).sum() / m.sum().clamp_min(1.0))


class Learner:
    """The trainable state of the online phase: model, optimiser, temperature.

    ``pretraining``: the state of the optimiser that pretrained ``model`` and the number of
    updates its schedule made (:func:`pretraining_optimizer`), continued as ODT does: the
    moments carry over and the warm-up goes on from that step. The online section's
    ``optimizer``, ``learning_rate``, ``weight_decay`` and ``warmup_steps`` still apply.
    """

    def __init__(
        self,
        model: DecisionTransformer,
        config: OnlineConfig,
        target_entropy: float,
        pretraining: tuple[dict[str, Any], int] | None = None,
    ) -> None:
        cfg = config.online
        self.model = model
        self.optimizer, self.scheduler = offline.make_optimizer(
            model,
            cfg.learning_rate,
            cfg.weight_decay,
            cfg.warmup_steps,
            kind=cfg.optimizer,
            start_step=0 if pretraining is None else pretraining[1],
        )
        if pretraining is not None:  # its moments, under this phase's hyperparameters
            own_groups = self.optimizer.state_dict()["param_groups"]
            self.optimizer.load_state_dict(
                {"state": pretraining[0]["state"], "param_groups": own_groups}
            )
        self.log_alpha = torch.tensor(math.log(cfg.init_temperature), requires_grad=True)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=cfg.temperature_lr)
        self.entropy = cfg.entropy
        self.target_entropy = target_entropy
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
        """A deep copy of the state, for taking back an update block."""
        return copy.deepcopy(self.state_dict())

    def scale_back(self, start: dict[str, Any], fits: Callable[[], bool], halvings: int) -> float:
        """Take back part of the step made since the snapshot ``start``, as in a backtracking
        line search: the parameters go to ``start + fraction * step`` for the largest
        ``fraction`` in 1/2, 1/4, ... (at most ``halvings`` tries) at which ``fits()``, else
        back to ``start`` (fraction 0). Optimisers and temperature return to ``start``.
        Returns the fraction of the step kept."""
        params = dict(self.model.named_parameters())
        end = {name: p.detach().clone() for name, p in params.items()}
        self.load_state_dict(start)
        origin = {name: p.detach().clone() for name, p in params.items()}
        fraction = 1.0
        for _ in range(halvings):
            fraction /= 2
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(origin[name] + fraction * (end[name] - origin[name]))
            if fits():
                return fraction
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(origin[name])
        return 0.0


@dataclasses.dataclass
class RoundUpdates:
    """What :func:`train_round` did."""

    stats: list[dict[str, float]]  # one per update kept in full
    kl: dict[str, float]  # KL(policy at the round's start || policy now), per probe
    capped: bool  # whether the cap stopped the round's updates
    block_fraction: float  # share of the overshooting block's step kept; NaN if not capped
    policies: dict[str, Policy]  # the policy now on each probe (the next round starts there)


def train_round(
    learner: Learner,
    sample: Callable[[], tuple[SegmentBatch, int]],
    updates: int,
    probes: dict[str, SegmentBatch],
    max_kl: float | None,
    block: int,
    backtracks: int,
    known: dict[str, Policy] | None = None,
) -> RoundUpdates:
    """The round's updates, in blocks of ``block`` under the KL cap when set (module doc).

    ``sample()`` gives each batch and its number of demonstration segments; the stats of
    each update hold its batch's ``demo_share``. ``known``: the policy on some probes
    already measured at the current parameters (the last round's ``policies``).
    """
    known = known or {}
    start = {
        name: known[name] if name in known else probe_policy(learner.model, probe)
        for name, probe in probes.items()
    }
    now: dict[str, Policy] = {}

    def kl() -> dict[str, float]:
        now.update({name: probe_policy(learner.model, probe) for name, probe in probes.items()})
        return {
            name: policy_kl(start[name], now[name], probe.mask) for name, probe in probes.items()
        }

    def fits() -> bool:
        return max(kl().values()) <= max_kl

    kept: list[dict[str, float]] = []
    while len(kept) < updates:
        saved = learner.snapshot() if max_kl is not None else None
        stats = []
        for _ in range(min(block, updates - len(kept))):
            batch, n_demo = sample()
            stats.append({**learner.update(batch), "demo_share": n_demo / len(batch)})
        if saved is not None and not fits():
            fraction = learner.scale_back(saved, fits, backtracks)
            return RoundUpdates(kept, kl(), True, fraction, now)
        kept += stats
    return RoundUpdates(kept, kl(), False, math.nan, now)


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
    model = DecisionTransformer(offline.stored_model_config(model_config))
    stored = {
        "model." + k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)
    }
    offline.load_model_tensors(model, stored, where)
    return model


def pretraining_optimizer(config: OnlineConfig, run_dir: Path) -> tuple[dict[str, Any], int]:
    """The state of the optimiser that pretrained the offline policy and the number of
    updates its learning-rate schedule made, from the checkpoint the policy came from
    (``pretrained``, else ``<run_dir>/offline``): what ``continue_optimizer`` continues."""
    source = Path(config.pretrained) if config.pretrained is not None else run_dir / "offline"
    checkpoint = load_checkpoint(source)
    if not {"optimizer", "scheduler"} <= set(checkpoint.state):
        raise RunDirError(
            f"checkpoint {checkpoint.path} holds no optimiser state to continue; set "
            "online.continue_optimizer = false to start a fresh optimiser"
        )
    with checkpoint.restoring():
        state = unpack_state(checkpoint.state["optimizer"], checkpoint.tensors)
        return state, int(checkpoint.state["scheduler"]["last_epoch"])


def evaluation_target(config: OnlineConfig) -> str:
    """The evaluation strategy: ``online.eval_strategy`` when set, else the one the GM agent
    was evaluated with (the ``pretrained`` run's ``strategy``, or the offline section's), so
    that an OGM agent is judged by the rule its GM agent was judged by."""
    if config.online.eval_strategy is not None:
        return config.online.eval_strategy
    if config.pretrained is not None:
        path = Path(config.pretrained)
        for candidate in (path, path.parent.parent):  # a run directory, or a checkpoint in one
            if (candidate / "run.json").is_file():
                strategy = RunDir.open(candidate).config.get("strategy")
                if isinstance(strategy, str):
                    return check_spec(strategy)
    return config.offline.strategy


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

ROUND_STATS = ("loss", "nll", "entropy", "return_ce", "grad_norm", "demo_share")
ROUND_COLUMNS = (
    "round",
    "env_steps",
    "episodes",
    "updates_kept",
    *ROUND_STATS,
    "temperature",
    "target_entropy",
    "kl_prev_demo",
    "kl_prev_online",
    "kl_offline_demo",
    "kl_offline_online",
    "kl_capped",
    "kl_block_fraction",
    "demo_fraction",
    "buffer_demo",
    "buffer_online",
    "online_return",
    "online_performance",
    "online_target",
    "eval_return_greedy",
    "eval_performance_greedy",
    "eval_return_sampled",
    "eval_performance_sampled",
    *FEEDBACK_COLUMNS,
    "wall_time_s",
)


def run(config: OnlineConfig, run_dir: Path) -> None:
    """Finetune (or resume finetuning) the OGM agent in ``run_dir`` (see the module doc)."""
    cfg = config.online
    run_dir = Path(run_dir)
    device = config.torch_device()
    # the data and a given pretrained model are checked before the run directory is made,
    # so that bad input leaves nothing behind
    demos = offline.load_demonstrations(config)
    if config.pretrained is not None:
        offline.load_model(config.pretrained)
    feedback = (
        None
        if cfg.feedback is None
        else Feedback(cfg.feedback, config.env_id, config.env_kwargs, config.seed)
    )
    rd = RunDir.open_or_create(run_dir, kind="odt", config=config, seed=config.seed)
    env = make_env(config)
    try:
        tb = rd.tensorboard()

        # ---- state: fresh from the offline policy, or from the latest checkpoint
        checkpoint = rd.resume()
        log = EpisodeLog(rd, event_names_of(env), primary_event_of(env))  # counts what is kept
        if checkpoint is None:
            model = pretrained_model(config, run_dir)
            reference = copy.deepcopy(model)
        else:
            with checkpoint.restoring():
                where = str(checkpoint.path)
                model = _model_from(
                    checkpoint.tensors, "model.", checkpoint.state["model_config"], where
                )
                reference = _model_from(
                    checkpoint.tensors, "offline.", checkpoint.state["model_config"], where
                )
                stored_entropy = float(checkpoint.state["target_entropy"])
        model, reference = model.to(device), reference.to(device)
        model.set_precision(config.torch_precision())
        reference.set_precision(config.torch_precision())
        K = model.config.context_len
        demo_pool = TrajectoryPool(demos)
        demo_probe = demo_pool.sample(
            cfg.probe_segments, K, np.random.default_rng([config.seed, PROBE])
        ).to(device)
        offline_policy = probe_policy(reference, demo_probe)
        # the temperature's target is measured once, on the offline policy, then kept
        entropy_target = (
            target_entropy(
                reference, cfg.target_entropy, demo_probe, derive_seed(config.seed, PROBE)
            )
            if checkpoint is None
            else stored_entropy
        )
        torch.manual_seed(config.seed)
        continued = cfg.continue_optimizer and checkpoint is None  # a resume restores its own
        learner = Learner(
            model,
            config,
            entropy_target,
            pretraining_optimizer(config, run_dir) if continued else None,
        )
        rng = np.random.default_rng([config.seed, TRAIN])
        eval_strategy = make_strategy(evaluation_target(config))
        strategy = make_strategy(cfg.strategy, base=eval_strategy)  # odt:m multiplies it
        # ODT's buffer starts with the demonstrations; a set demo_fraction draws them apart
        buffer = ReplayBuffer(
            cfg.buffer_capacity,
            [dataclasses.replace(t, source="demo") for t in demos if cfg.demo_fraction is None],
        )
        round_, env_steps, episodes = 0, 0, 0
        final_eval: dict[str, float] = {}
        demo_now: Policy | None = None  # the policy on the demo probe, once a round measured it
        if checkpoint is None:
            for s in (strategy, eval_strategy):
                s.observe([t.ret for t in demos])
        else:
            with checkpoint.restoring():
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
                env_steps, episodes = int(state["env_steps"]), int(state["episodes"])
                final_eval = {k: float(v) for k, v in state["final_eval"].items()}
                if feedback is not None:  # the buffer was saved scored by this proxy
                    feedback.load(tensors, checkpoint.arrays)
                    feedback.rescore(demos)
                    demo_pool = TrajectoryPool(demos)

        def save() -> None:
            offline.require_finite_parameters(model)
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
                **(feedback.tensors() if feedback is not None else {}),
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
                "final_eval": final_eval,
                "target_entropy": learner.target_entropy,
            }
            arrays = {f"buffer.{k}": v for k, v in buffer.to_arrays().items()}
            arrays |= feedback.arrays() if feedback is not None else {}
            log.flush()
            rd.save_checkpoint(round_, tensors=tensors, state=state, arrays=arrays)

        def explore() -> list[EpisodeResult]:
            """The round's training episodes: sampled actions at the exploration target."""
            agent = ConditionedDT(model, strategy, context_len=config.offline.eval_context_len)
            seed = derive_seed(config.seed, ROLLOUT, round_)
            return rollout(agent, env, config.episodes_per_round, seed=seed, deterministic=False)

        def evaluate() -> dict[str, float]:
            nonlocal final_eval
            if config.eval_episodes == 0:
                return {}
            agent = ConditionedDT(
                model,
                eval_strategy,
                context_len=config.offline.eval_context_len,
                reference=reference,
            )
            results = evaluation.evaluate(agent, config)
            if feedback is not None:  # the proxy of the moment, as in training
                for episodes_ in results.values():
                    feedback.rescore([r.trajectory for r in episodes_])
            final_eval = log_evaluation(log, results, round=round_, env_steps=env_steps)
            return final_eval

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
                "kl_offline_demo": policy_kl(
                    offline_policy,
                    probe_policy(model, demo_probe) if demo_now is None else demo_now,
                    demo_probe.mask,
                ),
                "demo_fraction": math.nan if cfg.demo_fraction is None else cfg.demo_fraction,
                "buffer_demo": composition["demo"],
                "buffer_online": composition["online"],
                **values,
                "wall_time_s": time.perf_counter() - tick,
            }
            rd.rounds.append(row)
            for key, value in row.items():
                if key != "round" and not math.isnan(value):
                    tb.add_scalar(f"online/{key}", value, round_)

        if checkpoint is None:  # round 0: the offline policy, evaluated before finetuning
            tick = time.perf_counter()
            log_round({"updates_kept": 0, **evaluate()}, tick)
            save()

        def budget_spent() -> bool:
            spent = cfg.total_timesteps is not None and env_steps >= cfg.total_timesteps
            return round_ >= cfg.rounds or spent

        by_steps = cfg.total_timesteps is not None
        progress = Progress(
            cfg.total_timesteps if by_steps else cfg.rounds,
            desc="online ODT",
            unit="env steps" if by_steps else "rounds",
            initial=env_steps if by_steps else round_,
        )
        while not budget_spent():
            round_ += 1
            tick = time.perf_counter()

            # 1. explore: sampled actions at the exploration target
            results = explore()
            trajectories = [r.trajectory for r in results]
            if feedback is not None:
                feedback.rescore(trajectories)
            steps = (env_steps + np.cumsum([t.length for t in trajectories])).tolist()
            log.write(
                trajectories,
                phase="train",
                round=round_,
                env_steps=steps,
                target_returns=[r.target_return for r in results],
            )
            previous_steps, env_steps = env_steps, steps[-1]
            episodes += len(results)
            returns = [t.ret for t in trajectories]
            for s in (strategy, eval_strategy):
                s.observe(returns)

            # 2. store with hindsight returns-to-go (TrajectoryPool derives them from rewards)
            buffer.add(trajectories)
            learned: dict[str, float] = {}
            if feedback is not None:  # OGM with feedback: the proxy learns, then rescores
                learned = feedback.learn(trajectories, round_)
                if not math.isnan(learned["rm_loss"]):
                    feedback.rescore(buffer.trajectories)
                    feedback.rescore(demos)
                    demo_pool = TrajectoryPool(demos)

            # 3. learn on the demonstrations and the buffer's online episodes, under the
            # behaviour-shift cap when set
            if cfg.demo_fraction is None:  # ODT: the demonstrations the buffer still holds
                buffer_demos = buffer.from_source("demo")
                round_demo_pool = TrajectoryPool(buffer_demos) if buffer_demos else None
            else:
                round_demo_pool = demo_pool
            online_pool = TrajectoryPool(buffer.from_source("online"))
            sample = functools.partial(
                sample_batch,
                round_demo_pool,
                online_pool,
                cfg.batch_size,
                cfg.demo_fraction,
                K,
                rng,
            )
            online_probe = acting_probe(
                results, cfg.probe_segments, K, np.random.default_rng([config.seed, PROBE, round_])
            ).to(device)
            done = train_round(
                learner,
                sample,
                cfg.round_updates(previous_steps, env_steps),
                {"demo": demo_probe, "online": online_probe},
                cfg.max_kl_per_round,
                cfg.kl_check_every,
                cfg.kl_backtracks,
                known={} if demo_now is None else {"demo": demo_now},
            )
            demo_now = done.policies["demo"]
            values = {
                **mean_stats(done.stats, ROUND_STATS),
                "updates_kept": len(done.stats),
                "kl_capped": float(done.capped),
                "kl_block_fraction": done.block_fraction,
                "kl_prev_demo": done.kl["demo"],
                "kl_prev_online": done.kl["online"],
                "kl_offline_online": policy_kl(
                    probe_policy(reference, online_probe),
                    done.policies["online"],
                    online_probe.mask,
                ),
                "online_return": float(np.mean(returns)),
                "online_performance": float(np.mean([t.performance for t in trajectories])),
                "online_target": float(np.mean([r.target_return for r in results])),
                **learned,
            }
            last = budget_spent()
            if env_steps // config.eval_every > previous_steps // config.eval_every or last:
                values.update(evaluate())
            log_round(values, tick)
            if round_ % cfg.checkpoint_every == 0 or last:
                save()
            progress.update(
                env_steps - previous_steps if by_steps else 1,
                round=round_,
                env_steps=env_steps,
                train_return=f"{np.mean(returns):.2f}",
            )
        progress.close()
        log.flush()
        rd.set_status(
            "done", rounds=round_, env_steps=env_steps, final_eval=final_summary(final_eval)
        )
    except BaseException as err:
        rd.record_failure(err)
        raise
    finally:
        env.close()
        rd.close()
