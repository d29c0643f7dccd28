"""KL-regularised PPO finetuning of a pretrained policy (agent kind ``kl_ppo``).

The policy pi starts as a copy of a pretrained policy pi_0 (the Decision Transformer of a
``dt`` / ``odt`` run, or the MLP of a ``bc`` run) and is trained by PPO (clipped surrogate,
GAE) on its own rollouts, with the per-step reward of Ziegler et al. (2019)::

    r_t - beta * log(pi(a_t | h_t) / pi_0(a_t | h_t))

where ``h_t`` is what the policy sees (the observation for the MLP; the context of the last
K steps with the return-to-go for the DT) and pi_0 is frozen. The penalty uses the log
probabilities of the policy that collected the rollout, so it is a fixed part of the reward
during the update epochs. ``beta = 0`` is plain PPO: the penalty vanishes and pi_0's action
distribution is not even computed (for the DT, pi_0's return head still picks the targets).

One mechanism serves both policy types; they differ only in the :class:`PolicyAgent` that
builds a step's network input (:class:`MLPAgent`, :class:`DTAgent`). Design choices:

- the value function is a separate MLP critic on the current observation (the same for both
  policy types, trained with the policy by one Adam step on ``pg + vf_coef * value`` loss);
- time-limit truncation bootstraps with the critic's value of the final observation;
- the DT runs without dropout throughout (``eval`` mode) so that the rollout's and the
  update's log probabilities agree;
- the DT is conditioned on a target return drawn once per episode by the strategy
  ``target`` (default ``prior``: a sample of the frozen pi_0's own return distribution
  ``P(R | s_0)``, so pi_0 acts unconditioned) from the frozen prior's return head.

Without ``init``, the prior is first pretrained in ``<run_dir>/prior`` (a ``bc`` or ``dt``
run on the config's ``dataset``, with ``pretrain`` overrides).

Evaluation episodes log ``kl_to_init``: the episode's summed KL(pi || pi_0) on the inputs it
visited, exact for both policy types and both action kinds
(:func:`ogm.agents.actor.kl_divergence`).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from pydantic import Field, ValidationError, field_validator, model_validator
from torch import nn

from ogm.agents.actor import DTActor, EpisodeResult, kl_divergence
from ogm.agents.conditioning import make_strategy
from ogm.baselines.bc import BCConfig
from ogm.baselines.bc import run as run_bc
from ogm.baselines.common import (
    MLP,
    EpisodeCollector,
    EpisodeLog,
    HiddenLayers,
    episode_state,
    event_names_of,
    load_mlp_policy,
    load_policy_tensors,
    make_env,
    mean_or_nan,
    policy_tensors,
    primary_event_of,
    restore_episode_state,
)
from ogm.data.trajectory import Trajectory
from ogm.limits import MAX_BATCH, MAX_BATCH_STEPS, MAX_STEPS, MAX_UPDATES
from ogm.models.decision_transformer import CategoricalPolicy, DecisionTransformer, Policy
from ogm.train import evaluation
from ogm.train.config import CommonConfig, RunPath, describe_errors
from ogm.train.offline import (
    OfflineConfig,
    load_demonstrations,
    load_model,
    load_model_tensors,
    model_checkpoint,
    require_finite,
    require_finite_parameters,
)
from ogm.train.offline import run as run_offline
from ogm.train.progress import Progress
from ogm.train.rundir import RunDir, pack_state, unpack_state


class PretrainedPolicyConfig(CommonConfig):
    """Which pretrained policy pi_0 an agent starts from (shared with best-of-n)."""

    policy: Literal["dt", "mlp"] = "dt"
    init: RunPath | None = None  # run directory of the prior (kind dt/odt for "dt", bc for "mlp")
    pretrain: dict[str, Any] = Field(default_factory=dict)  # overrides when init is None
    target: str = "prior"  # conditioning strategy of the DT (ignored by the MLP)

    @field_validator("target")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        make_strategy(value)
        return value

    @model_validator(mode="after")
    def _valid_pretraining(self) -> PretrainedPolicyConfig:
        if self.init is None:
            try:
                self.pretrain_config()
            except ValidationError as err:
                raise ValueError(describe_errors(err, prefix="pretrain")) from None
        return self

    def pretrain_config(self) -> BCConfig | OfflineConfig:
        """The config of the run that pretrains the prior when ``init`` is not given."""
        fields = {**{k: getattr(self, k) for k in CommonConfig.model_fields}, **self.pretrain}
        return BCConfig(**fields) if self.policy == "mlp" else OfflineConfig(**fields)


class KLPPOConfig(PretrainedPolicyConfig):
    """PPO finetuning of a pretrained policy with a KL penalty of weight ``beta`` towards it."""

    kind: Literal["kl_ppo"] = "kl_ppo"
    beta: float = Field(0.1, ge=0.0)
    total_timesteps: int = Field(50_000, gt=0, le=MAX_STEPS)
    n_steps: int = Field(128, gt=0, le=MAX_BATCH)  # steps per copy per rollout
    n_epochs: int = Field(4, gt=0, le=MAX_UPDATES)
    batch_size: int = Field(256, gt=0, le=MAX_BATCH)
    learning_rate: float = Field(3e-4, gt=0.0)  # policy
    critic_learning_rate: float = Field(1e-3, gt=0.0)
    gamma: float = Field(0.99, ge=0.0, le=1.0)
    gae_lambda: float = Field(0.95, ge=0.0, le=1.0)
    clip_coef: float = Field(0.2, gt=0.0)
    ent_coef: float = Field(0.0, ge=0.0)
    vf_coef: float = Field(0.5, ge=0.0)
    max_grad_norm: float = Field(0.5, gt=0.0)
    critic_arch: HiddenLayers = Field(default_factory=lambda: [64, 64])

    @model_validator(mode="after")
    def _rollout_fits(self) -> KLPPOConfig:
        if self.n_steps * self.num_envs > MAX_BATCH_STEPS:
            raise ValueError(
                f"n_steps={self.n_steps} x num_envs={self.num_envs} steps a rollout is above "
                f"the bound of {MAX_BATCH_STEPS}"
            )
        return self


# ----------------------------------------------------------------------------- the penalty


def kl_shaped_rewards(
    rewards: torch.Tensor, logp: torch.Tensor, logp_prior: torch.Tensor, beta: float
) -> torch.Tensor:
    """Per-step reward ``r_t - beta * (log pi(a_t|h_t) - log pi_0(a_t|h_t))``."""
    return rewards - beta * (logp - logp_prior)


def ppo_policy_loss(
    logp: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor, clip_coef: float
) -> torch.Tensor:
    """PPO's clipped surrogate, negated for minimisation (Schulman et al. 2017, eq. 7)."""
    ratio = (logp - logp_old).exp()
    clipped = ratio.clamp(1.0 - clip_coef, 1.0 + clip_coef)
    return -torch.min(ratio * advantages, clipped * advantages).mean()


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    last_value: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns for a (T, N) rollout.

    ``dones[t]`` marks that the episode ended at step ``t`` (no bootstrap across it).
    """
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(last_value)
    for t in reversed(range(len(rewards))):
        next_value = last_value if t == len(rewards) - 1 else values[t + 1]
        alive = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_value * alive - values[t]
        running = delta + gamma * gae_lambda * alive * running
        advantages[t] = running
    return advantages, advantages + values


# ----------------------------------------------------------------------------- policy agents


class PolicyAgent:
    """Acts with a policy in ``num_envs`` copies and builds each step's network input.

    ``inputs(obs)`` returns a dict of batched tensors that ``distribution(module, inputs)``
    turns into the action distribution of ``module`` (the policy or the frozen prior) at
    that step; stored inputs give the same distribution again during the PPO update. While
    acting, :meth:`step_policies` gives both distributions at the step just built (the DT
    from its cached tokens); :meth:`refresh` after the policy's weights change.

    ``starting`` flags the copies whose episode starts at the next step; ``kl_to_init``
    holds each copy's summed KL(pi || pi_0) over the steps :meth:`act` took in its current
    episode (evaluation: training steps go through :meth:`inputs` alone).
    """

    def __init__(self, policy: nn.Module, prior: nn.Module, device: torch.device) -> None:
        self.policy, self.prior, self.device = policy, prior, device
        self.starting = np.zeros(0, bool)
        self.kl_to_init = np.zeros(0)

    def reset(self, num_envs: int) -> None:
        """Start new episodes in ``num_envs`` copies."""
        self.starting = np.ones(num_envs, bool)
        self.kl_to_init = np.zeros(num_envs)

    def inputs(self, obs: np.ndarray) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def distribution(self, module: nn.Module, inputs: dict[str, torch.Tensor]) -> Policy:
        raise NotImplementedError

    def observe(self, actions: np.ndarray, rewards: np.ndarray, done: np.ndarray) -> None:
        """The step's actions and rewards; ``done`` copies start a new episode next."""
        self.starting = np.asarray(done, bool)

    def finished(self, done: np.ndarray, trajectories: list[Trajectory]) -> list[float]:
        """The target returns of the episodes that just ended in the ``done`` copies."""
        return [float("nan")] * len(trajectories)

    def state_arrays(self) -> dict[str, np.ndarray]:
        """What the agent remembers of the episodes under way, for a checkpoint."""
        return {}

    def load_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore :meth:`state_arrays` after ``reset(num_envs)``."""

    def step_policies(
        self, inputs: dict[str, torch.Tensor], with_prior: bool
    ) -> tuple[Policy, Policy | None]:
        """The action distributions of the policy and (``with_prior``, else None) the prior
        at the step ``inputs`` was just built for."""
        pi = self.distribution(self.policy, inputs)
        if not with_prior:
            return pi, None
        # best-of-n acts with pi_0 itself: no second forward pass
        return pi, pi if self.prior is self.policy else self.distribution(self.prior, inputs)

    def refresh(self) -> None:
        """The policy's weights changed (a PPO update): forget what was computed with the
        old ones."""

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool) -> np.ndarray:
        """Actions of the policy (for evaluation); adds the step's KL(pi || pi_0) at the
        same inputs to ``kl_to_init``."""
        self.kl_to_init[self.starting] = 0.0
        dist, prior = self.step_policies(self.inputs(obs), with_prior=True)
        self.kl_to_init += kl_divergence(dist, prior).double().cpu().numpy()
        return (dist.mode() if deterministic else dist.sample()).cpu().numpy()


class MLPAgent(PolicyAgent):
    """The MLP policy: the input is the current observation."""

    def inputs(self, obs: np.ndarray) -> dict[str, torch.Tensor]:
        return {"obs": torch.as_tensor(obs, device=self.device)}

    def distribution(self, module: nn.Module, inputs: dict[str, torch.Tensor]) -> Policy:
        return module.distribution(inputs["obs"])


# The context tensors of a DTActor (ogm.agents.actor)
ACTOR_BUFFERS = ("observations", "actions", "returns_to_go", "timesteps", "mask")


class DTAgent(PolicyAgent):
    """The Decision Transformer: the input is the last K steps of context of each copy.

    Contexts live in a :class:`DTActor` that keeps the tokens of the policy and of the
    frozen prior (its reference) for the steps in the window, so that acting encodes one new
    step per model instead of the window twice; the prior's return head supplies
    ``P(R | s_0)`` for the strategy that picks each episode's target return. The
    return-to-go fed to the policy and the prior (the target minus the rewards so far) is
    clamped into the prior's return-bin center range, the returns-to-go it was trained on:
    once the policy beats its target the remaining return goes below zero, and the prior,
    which never saw such a value, would answer with arbitrary actions and turn the KL
    penalty into noise. Within the range the conditioning is unchanged.
    """

    def __init__(
        self,
        policy: DecisionTransformer,
        prior: DecisionTransformer,
        device: torch.device,
        target: str,
        rng: np.random.Generator,
    ) -> None:
        super().__init__(policy, prior, device)
        self.strategy = make_strategy(target)
        self.rng = rng
        self.actor: DTActor | None = None
        self.targets = np.zeros(0)

    def reset(self, num_envs: int) -> None:
        super().reset(num_envs)
        distinct = self.prior is not self.policy  # best-of-n acts with the prior itself
        self.actor = DTActor(
            self.policy,
            num_envs,
            device=self.device,
            clamp_returns_to_go=True,
            reference=self.prior if distinct else None,
            targets_from_reference=distinct,
        )
        self.targets = np.zeros(num_envs)

    @torch.no_grad()
    def inputs(self, obs: np.ndarray) -> dict[str, torch.Tensor]:
        actor, starting = self.actor, self.starting
        self.targets[starting] = actor.observe_step(obs, starting, self.strategy, self.rng)
        window = slice(actor.pos - actor.K + 1, actor.pos + 1)
        return {
            "returns_to_go": actor.returns_to_go[:, window].clone(),
            "observations": actor.observations[:, window].clone(),
            "actions": actor.actions[:, window].clone(),
            "timesteps": actor.timesteps[:, window].clone(),
            "mask": actor.mask[:, window].clone(),
        }

    def distribution(self, module: nn.Module, inputs: dict[str, torch.Tensor]) -> Policy:
        return module(**inputs, last_step_only=True).policy[:, -1]

    def step_policies(
        self, inputs: dict[str, torch.Tensor], with_prior: bool
    ) -> tuple[Policy, Policy | None]:
        pi = self.actor.forward(0).policy[:, -1]
        if not with_prior:
            return pi, None
        reference = self.actor.reference is not None
        return pi, self.actor.forward(1).policy[:, -1] if reference else pi

    def refresh(self) -> None:
        self.actor.refresh()

    def finished(self, done: np.ndarray, trajectories: list[Trajectory]) -> list[float]:
        self.strategy.observe([t.ret for t in trajectories])
        return [float(self.targets[i]) for i in np.flatnonzero(done)]

    def state_arrays(self) -> dict[str, np.ndarray]:
        actor = self.actor
        arrays = {f"actor/{name}": getattr(actor, name).cpu().numpy() for name in ACTOR_BUFFERS}
        return {
            **arrays,
            "actor/pos": np.asarray(actor.pos),
            "actor/steps": actor.steps.copy(),
            "actor/target": actor.target.copy(),
            "starting": self.starting.copy(),
            "targets": self.targets.copy(),
        }

    def load_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        actor = self.actor
        for name in ACTOR_BUFFERS:
            getattr(actor, name).copy_(torch.as_tensor(arrays[f"actor/{name}"]))
        actor.pos = int(arrays["actor/pos"])
        for target, name in ((actor.steps, "actor/steps"), (actor.target, "actor/target")):
            target[...] = arrays[name]
        self.starting[...] = arrays["starting"]
        self.targets[...] = arrays["targets"]
        actor.refresh()  # the tokens are not saved: encoded again from the raw steps

    def observe(self, actions: np.ndarray, rewards: np.ndarray, done: np.ndarray) -> None:
        actor = self.actor
        actor.actions[:, actor.pos] = torch.as_tensor(actions, device=self.device)
        actor.record_rewards(np.asarray(rewards, np.float64))
        super().observe(actions, rewards, done)


# ----------------------------------------------------------------------------- priors


def check_prior(config: PretrainedPolicyConfig) -> None:
    """Check what the prior comes from before anything is written: the policy in ``init``,
    else the demonstrations it would be pretrained on."""
    if config.init is not None:
        load_mlp_policy(config.init) if config.policy == "mlp" else load_model(config.init)
    else:
        load_demonstrations(config)


def load_prior(config: PretrainedPolicyConfig, run: RunDir) -> nn.Module:
    """The pretrained policy pi_0: from ``config.init``, or pretrained in ``<run>/prior``."""
    path = Path(config.init) if config.init is not None else run.path / "prior"
    pretrained = (path / "run.json").exists() and RunDir.open(path).status == "done"
    if config.init is None and not pretrained:
        pretrain = config.pretrain_config()
        (run_bc if config.policy == "mlp" else run_offline)(pretrain, path)
    return load_mlp_policy(path) if config.policy == "mlp" else load_model(path)


def make_agent(
    config: PretrainedPolicyConfig,
    policy: nn.Module,
    prior: nn.Module,
    device: torch.device,
    rng: np.random.Generator,
) -> PolicyAgent:
    """The agent that acts with ``policy`` (and scores ``prior``) for this policy type."""
    if config.policy == "mlp":
        return MLPAgent(policy, prior, device)
    return DTAgent(policy, prior, device, config.target, rng)


def checkpoint_tensors(config: KLPPOConfig, policy: nn.Module) -> tuple[dict, dict]:
    """The policy in the layout its own loader reads (so a finetuned policy can be an init)."""
    if config.policy == "mlp":
        return policy_tensors(policy), {"policy_spec": policy.spec()}
    return model_checkpoint(policy)


# ----------------------------------------------------------------------------- trainer


class KLPPO:
    """The PPO loop: rollouts with the KL-shaped reward, GAE, clipped updates."""

    def __init__(self, config: KLPPOConfig, prior: nn.Module, env: gym.vector.VectorEnv) -> None:
        self.config = config
        self.device = device = config.torch_device()
        self.env = env
        if isinstance(prior, DecisionTransformer):
            prior.set_precision(config.torch_precision())
        self.prior = prior.to(device).eval().requires_grad_(False)
        self.policy = copy.deepcopy(self.prior).requires_grad_(True).eval()  # eval: no dropout
        obs_shape = env.single_observation_space.shape
        self.critic = MLP(obs_shape, 1, config.critic_arch).to(device)
        normaliser = self.prior.net if config.policy == "mlp" else self.prior
        self.critic.set_obs_normalizer(normaliser.obs_mean.cpu(), normaliser.obs_std.cpu())
        self.optimizer = torch.optim.Adam(
            [
                {"params": self.policy.parameters(), "lr": config.learning_rate},
                {"params": self.critic.parameters(), "lr": config.critic_learning_rate},
            ],
            eps=1e-5,
        )
        self.generator = torch.Generator(device=device).manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.agent = self.make_agent()
        self.env_steps = 0
        self.updates = 0
        self.final_eval: dict[str, float] = {}  # means of the latest evaluation point

    def make_agent(self) -> PolicyAgent:
        return make_agent(self.config, self.policy, self.prior, self.device, self.rng)

    def values(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        return self.critic(torch.as_tensor(obs, device=self.device)).squeeze(-1)

    @torch.no_grad()
    def collect(
        self, obs: np.ndarray, collector: EpisodeCollector
    ) -> tuple[dict[str, Any], np.ndarray, list[Trajectory], list[float]]:
        """``n_steps`` steps in every copy; the rollout, the next observation, the episodes
        finished on the way and their target returns."""
        cfg, agent = self.config, self.agent
        store: dict[str, list] = {k: [] for k in ("obs", "actions", "logp", "logp_prior", "kl")}
        store.update(inputs=[], rewards=[], bootstrap=[], dones=[], values=[])
        finished: list[Trajectory] = []
        targets: list[float] = []
        for _ in range(cfg.n_steps):
            inputs = agent.inputs(obs)
            pi, pi0 = agent.step_policies(inputs, with_prior=cfg.beta > 0)
            actions = pi.sample(self.generator)
            logp = pi.log_prob(actions)
            if pi0 is not None:
                logp_prior = pi0.log_prob(actions)
                kl = (
                    kl_divergence(pi, pi0)
                    if isinstance(pi, CategoricalPolicy)
                    else logp - logp_prior
                )
            else:  # plain PPO: the prior is never consulted
                logp_prior, kl = logp, torch.full_like(logp, float("nan"))
            actions_np = actions.cpu().numpy()
            next_obs, rewards, terminated, truncated, infos = self.env.step(actions_np)
            done = np.logical_or(terminated, truncated)
            bootstrap = torch.zeros(len(done), device=self.device)
            cut = np.flatnonzero(truncated & ~terminated)
            if len(cut):  # time limit: bootstrap with the value of the final observation
                final = np.stack([infos["final_obs"][i] for i in cut])
                bootstrap[cut] = cfg.gamma * self.values(final)
            ended = collector.step(actions_np, next_obs, rewards, terminated, truncated, infos)
            finished += ended
            targets += agent.finished(done, ended)
            agent.observe(actions_np, rewards, done)
            for key, value in (
                ("obs", torch.as_tensor(obs, device=self.device)),
                ("inputs", inputs),
                ("actions", actions),
                ("logp", logp),
                ("logp_prior", logp_prior),
                ("kl", kl),
                ("rewards", torch.as_tensor(rewards, dtype=torch.float32, device=self.device)),
                ("bootstrap", bootstrap),
                ("dones", torch.as_tensor(done, dtype=torch.float32, device=self.device)),
                ("values", self.values(obs)),
            ):
                store[key].append(value)
            obs = next_obs
            self.env_steps += self.env.num_envs
        rollout = {k: torch.stack(v) for k, v in store.items() if k != "inputs"}
        rollout["inputs"] = {
            k: torch.stack([s[k] for s in store["inputs"]]) for k in store["inputs"][0]
        }
        rollout["last_value"] = self.values(obs)
        return rollout, obs, finished, targets

    def update(self, rollout: dict[str, Any]) -> dict[str, float]:
        """PPO epochs over the rollout with the KL-shaped reward; returns statistics."""
        cfg = self.config
        shaped = kl_shaped_rewards(
            rollout["rewards"], rollout["logp"], rollout["logp_prior"], cfg.beta
        )
        advantages, returns = gae(
            shaped + rollout["bootstrap"],
            rollout["values"],
            rollout["dones"],
            rollout["last_value"],
            cfg.gamma,
            cfg.gae_lambda,
        )
        flat = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731  (T, N, ...) -> (T*N, ...)
        inputs = {k: flat(v) for k, v in rollout["inputs"].items()}
        obs, actions, logp_old = (
            flat(rollout["obs"]),
            flat(rollout["actions"]),
            flat(rollout["logp"]),
        )
        advantages, returns = flat(advantages), flat(returns)
        n = len(logp_old)
        stats: dict[str, list[float]] = {
            k: [] for k in ("pg_loss", "v_loss", "entropy", "approx_kl", "clip_frac")
        }
        for _ in range(cfg.n_epochs):
            order = torch.randperm(n, generator=self.generator, device=self.device)
            for start in range(0, n, cfg.batch_size):
                idx = order[start : start + cfg.batch_size]
                pi = self.agent.distribution(self.policy, {k: v[idx] for k, v in inputs.items()})
                logp = pi.log_prob(actions[idx])
                adv = advantages[idx]
                if len(idx) > 1:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                pg_loss = ppo_policy_loss(logp, logp_old[idx], adv, cfg.clip_coef)
                entropy = pi.entropy().mean()
                v_loss = 0.5 * (self.values(obs[idx]) - returns[idx]).pow(2).mean()
                loss = pg_loss - cfg.ent_coef * entropy + cfg.vf_coef * v_loss
                require_finite(cfg.learning_rate, loss=loss)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                params = [p for group in self.optimizer.param_groups for p in group["params"]]
                grad_norm = nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                require_finite(cfg.learning_rate, grad_norm=grad_norm)
                self.optimizer.step()
                with torch.no_grad():
                    log_ratio = logp - logp_old[idx]
                    stats["approx_kl"].append(float(((log_ratio.exp() - 1) - log_ratio).mean()))
                    stats["clip_frac"].append(
                        float(((log_ratio.exp() - 1).abs() > cfg.clip_coef).float().mean())
                    )
                stats["pg_loss"].append(pg_loss.item())
                stats["v_loss"].append(v_loss.item())
                stats["entropy"].append(entropy.item())
        self.updates += 1
        self.agent.refresh()
        out = {k: float(np.mean(v)) for k, v in stats.items()}
        out["kl_prior"] = float(rollout["kl"].mean())
        out["kl_penalty_mean"] = float((rollout["rewards"] - shaped).mean())
        out["reward_mean"] = float(rollout["rewards"].mean())
        return out

    # -- checkpoints
    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        for module in (self.policy, self.critic):
            require_finite_parameters(module)
        tensors, state = checkpoint_tensors(self.config, self.policy)
        tensors.update(policy_tensors(self.critic, "critic"))
        opt_tensors, opt_state = pack_state(self.optimizer.state_dict(), "optim")
        tensors.update(opt_tensors)
        tensors["generator"] = self.generator.get_state()
        state.update(
            optimizer=opt_state,
            numpy_rng=self.rng.bit_generator.state,
            env_steps=self.env_steps,
            updates=self.updates,
            final_eval=self.final_eval,
        )
        if isinstance(self.agent, DTAgent):
            state["strategy"] = self.agent.strategy.state_dict()
        return tensors, state

    def load(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        if self.config.policy == "mlp":
            load_policy_tensors(self.policy, tensors)
        else:
            load_model_tensors(self.policy, tensors, "kl_ppo checkpoint")
        load_policy_tensors(self.critic, tensors, "critic")
        opt = {k: v for k, v in tensors.items() if k.startswith("optim")}
        self.optimizer.load_state_dict(unpack_state(state["optimizer"], opt))
        self.generator.set_state(tensors["generator"])
        self.rng.bit_generator.state = state["numpy_rng"]
        self.env_steps, self.updates = int(state["env_steps"]), int(state["updates"])
        self.final_eval = {k: float(v) for k, v in state["final_eval"].items()}
        if isinstance(self.agent, DTAgent):
            self.agent.strategy.load_state_dict(state["strategy"])

    def evaluate(self) -> dict[str, list[EpisodeResult]]:
        """An evaluation point of the shared protocol. A DT policy is conditioned as in
        training (the prior's return head and the strategy's state so far), with its own
        target draws."""
        agent = self.make_agent()
        if isinstance(agent, DTAgent):
            agent.rng = np.random.default_rng(evaluation.EVAL_SEED_BASE)
            agent.strategy.load_state_dict(self.agent.strategy.state_dict())
        return evaluation.evaluate(agent, self.config)


def run(config: KLPPOConfig, run_dir: Path) -> None:
    """Finetune (or resume finetuning) a pretrained policy with KL-regularised PPO.

    The prior (or its data) is checked before the run directory is made, so bad input
    leaves nothing behind. Checkpoints hold the episodes under way too (env, partial
    episodes, the agent's contexts): a resumed run continues them exactly.
    """
    check_prior(config)
    run = RunDir.open_or_create(run_dir, kind="kl_ppo", config=config, seed=config.seed)
    env = None
    try:
        prior = load_prior(config, run)
        torch.manual_seed(config.seed)
        env = make_env(config, config.num_envs, seed=config.seed)
        trainer = KLPPO(config, prior, env)
        collector = EpisodeCollector(env.num_envs, event_names_of(env))
        trainer.agent.reset(env.num_envs)
        checkpoint = run.resume()
        log = EpisodeLog(run, event_names_of(env), primary_event_of(env))  # counts what is kept
        obs = None
        if checkpoint is not None:
            with checkpoint.restoring():
                trainer.load(checkpoint.tensors, checkpoint.state)
                obs = restore_episode_state(env, collector, checkpoint.arrays)
                if obs is not None:
                    agent = {k[6:]: v for k, v in checkpoint.arrays.items() if k[:6] == "agent/"}
                    trainer.agent.load_state_arrays(agent)
        if obs is None:  # a new run, or an env whose episodes cannot be saved
            obs, _ = env.reset(seed=config.seed + trainer.updates)
            collector.start(obs)
        tb = run.tensorboard()
        per_rollout = config.n_steps * env.num_envs
        progress = Progress(
            config.total_timesteps, desc="KL-PPO", unit="env steps", initial=trainer.env_steps
        )
        while trainer.env_steps < config.total_timesteps:
            tick = time.perf_counter()
            rollout, obs, finished, targets = trainer.collect(obs, collector)
            stats = trainer.update(rollout)
            round, steps = trainer.updates - 1, trainer.env_steps
            progress.update(per_rollout)
            log.write(finished, phase="train", round=round, env_steps=steps, target_returns=targets)
            row = {
                "round": round,
                "env_steps": steps,
                "episodes": len(finished),
                "return_mean": mean_or_nan([t.ret for t in finished]),
                "performance_mean": mean_or_nan([t.performance for t in finished]),
                **stats,
                "seconds": time.perf_counter() - tick,
            }
            run.rounds.append(row)
            for key, value in row.items():
                if key not in ("round", "env_steps") and math.isfinite(value):
                    tb.add_scalar(f"kl_ppo/{key}", value, steps)
            crossed = steps // config.eval_every > (steps - per_rollout) // config.eval_every
            if crossed or steps >= config.total_timesteps:
                if config.eval_episodes:
                    trainer.final_eval = evaluation.log_evaluation(
                        log, trainer.evaluate(), round=round, env_steps=steps
                    )
                log.flush()
                tensors, state = trainer.state()
                arrays = {
                    **episode_state(env, collector, obs),
                    **{f"agent/{k}": v for k, v in trainer.agent.state_arrays().items()},
                }
                run.save_checkpoint(steps, tensors=tensors, state=state, arrays=arrays)
        progress.close()
        run.set_status(
            "done",
            env_steps=trainer.env_steps,
            final_eval=evaluation.final_summary(trainer.final_eval),
        )
    except BaseException as err:
        run.record_failure(err)
        raise
    finally:
        if env is not None:
            env.close()
        run.close()
