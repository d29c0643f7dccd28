"""Batched acting with a Decision Transformer over a vector environment.

:class:`DTActor` keeps one rolling context per environment copy in preallocated tensors and
runs one forward pass per step for all copies. The buffers hold ``2K`` steps; a write
pointer moves right each step and, when it reaches the end, the last ``K - 1`` steps are
copied to the front (amortised O(1), no allocation). Copies that start an episode simply
mask out their older steps, exactly like the left padding used in training; while every
copy is early in its episode the window is cropped to the longest real context.

Next to the raw steps the actor keeps their input tokens (:meth:`DecisionTransformer.embed`):
a step's tokens depend on that step alone, so each step encodes one new observation per
copy (and the previous step's action token, now that the action is known) instead of the
whole window; the transformer then runs on the stored tokens. The outputs are those of the full
forward pass on the window.

Given a ``reference`` (the initial policy), the actor keeps that model's tokens of the same
steps too and, at every action, adds the exact KL of the acting policy from the reference's
on the same window to ``kl_to_init``, per copy and episode (:func:`kl_divergence`).

:func:`rollout` runs whole episodes with a conditioning strategy: at the first step of an
episode the actor reads ``P(R | s_0)`` from the return head, the strategy turns it into a
target, and from then on the return-to-go fed to the model is the target minus the reward
received so far.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from gymnasium.vector import AutoresetMode

from ogm.agents.conditioning import ConditioningStrategy
from ogm.data.trajectory import Trajectory
from ogm.models.decision_transformer import (
    CategoricalPolicy,
    DecisionTransformer,
    DTOutput,
    Policy,
)

# Acting batches of fewer than this many copies x embedding width compute in fp32 even in a
# bf16 run: there autocast's casts cost more than its matmuls save (the tomato-watering DT,
# width 64, one thread, sampled rollouts: fp32 1.21-1.25x faster at 16-32 copies, bf16
# faster from 64 copies;
# benchmarks/bench_rollout.py --precision).
FP32_ACTING_BELOW = 64 * 64


def acting_precision(model: DecisionTransformer, num_envs: int) -> str:
    """The precision a model acts in for ``num_envs`` copies (see ``FP32_ACTING_BELOW``)."""
    if num_envs * model.config.n_embd < FP32_ACTING_BELOW:
        return "fp32"
    return model.precision


def kl_divergence(p: Policy, q: Policy) -> torch.Tensor:
    """KL(p || q) in nats per state of the batch, exact for both policy kinds.

    Categorical: ``sum_a p log(p / q)``. Tanh-squashed Gaussian: the KL of the Gaussians
    before squashing, which is exact as long as both squash into the same action bounds: KL
    is unchanged by an invertible map applied to both distributions.
    """
    if isinstance(p, CategoricalPolicy):
        logp, logq = F.log_softmax(p.logits, -1), F.log_softmax(q.logits, -1)
        return (logp.exp() * (logp - logq)).sum(-1)
    log_ratio = q.log_std - p.log_std
    z = (p.mean - q.mean) / q.log_std.exp()
    return (log_ratio + 0.5 * ((-2 * log_ratio).exp() + z**2 - 1)).sum(-1)


@contextlib.contextmanager
def evaluating(*modules: torch.nn.Module) -> Iterator[None]:
    """``modules`` in eval mode (no dropout) inside the block, each back in its own mode
    after. Wrap a whole acting session, not a step: switching modes walks every submodule."""
    modes = [module.training for module in modules]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for module, mode in zip(modules, modes, strict=True):
            module.train(mode)


def _check_reference(model: DecisionTransformer, reference: DecisionTransformer) -> None:
    """Refuse a reference that reads other inputs or acts in another action space than the
    model (its KL would compare unrelated distributions)."""
    fields = ("obs_shape", "discrete", "act_dim", "action_low", "action_high")
    differ = [f for f in fields if getattr(model.config, f) != getattr(reference.config, f)]
    if differ:
        raise ValueError(f"the reference policy differs from the acting one in {differ}")


class DTActor:
    """Rolling contexts for ``num_envs`` copies and one batched forward pass per step.

    ``clamp_returns_to_go`` feeds the model the return still asked for clamped into the
    range of its return bins' centers, i.e. the returns-to-go it was trained on, while
    ``target`` keeps the true value. KL-PPO conditions its frozen prior this way: once a
    policy beats the target, the remaining return goes below zero, where the prior never
    saw data and its actions are arbitrary.

    The models compute in :func:`acting_precision` for ``num_envs`` copies (fp32 for small
    batches, the run's precision otherwise), and run in the mode they are in: callers act
    inside :func:`evaluating` (as
    :func:`rollout` and ``ogm.train.evaluation.first_episodes`` do through
    :meth:`ConditionedDT.networks`), so that an agent acts, and is judged, as the policy it
    is, never as one of its dropout samples.

    ``reference``: the initial policy. At every :meth:`act` it runs on the same window and
    ``kl_to_init`` collects, per copy, the summed KL(pi || reference) of its episode so far
    (:func:`kl_divergence`; NaN without a reference). It costs a second token cache and a
    second forward pass per step. ``targets_from_reference``: each episode's target is picked
    from the reference's return head instead of the acting model's (KL-PPO, whose policy is
    trained on actions alone, conditions on its frozen prior's ``P(R | s_0)``).

    A model whose weights change while the actor holds tokens of it (KL-PPO's policy after
    an update) needs :meth:`refresh` before the next step.
    """

    def __init__(
        self,
        model: DecisionTransformer,
        num_envs: int,
        *,
        context_len: int | None = None,
        device: torch.device | str | None = None,
        seed: int = 0,
        clamp_returns_to_go: bool = False,
        reference: DecisionTransformer | None = None,
        targets_from_reference: bool = False,
    ) -> None:
        cfg = model.config
        if reference is not None:
            _check_reference(model, reference)
        elif targets_from_reference:
            raise ValueError("targets_from_reference needs a reference")
        self.target_encoder = int(targets_from_reference)
        self.model = model
        self.reference = reference
        self.num_envs = num_envs
        self.K = context_len or cfg.context_len
        self.device = (
            torch.device(device) if device is not None else next(model.parameters()).device
        )
        N, L = num_envs, 2 * self.K
        actions = (N, L) if cfg.discrete else (N, L, cfg.act_dim)
        self.observations = torch.zeros(N, L, *cfg.obs_shape, device=self.device)
        self.actions = torch.zeros(
            actions, dtype=torch.long if cfg.discrete else torch.float32, device=self.device
        )
        self.returns_to_go = torch.zeros(N, L, 1, device=self.device)
        self.timesteps = torch.zeros(N, L, dtype=torch.long, device=self.device)
        self.mask = torch.zeros(N, L, dtype=torch.bool, device=self.device)
        self.tokens = torch.zeros(N, L, 3, cfg.n_embd, device=self.device)
        # (model, its tokens of the buffered steps): the acting model first, then the reference
        self.encoders = [(model, self.tokens)]
        if reference is not None:
            ref_tokens = torch.zeros(N, L, 3, reference.config.n_embd, device=self.device)
            self.encoders.append((reference, ref_tokens))
        self.kl_to_init = np.full(N, np.nan if reference is None else 0.0)
        self.precisions = [acting_precision(m, N) for m, _ in self.encoders]
        self.pos = self.K - 2  # last written column; the first step lands at K - 1
        self.steps = np.zeros(N, dtype=np.int64)  # steps taken in each copy's episode
        self.target = np.zeros(N, dtype=np.float64)  # return still asked for (unscaled)
        centers = model.return_bin_centers
        self.rtg_range = (float(centers.min()), float(centers.max()))
        self.clamp_returns_to_go = clamp_returns_to_go
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def seed(self, seed: int) -> None:
        """Reseed the action-sampling generator."""
        self.generator.manual_seed(seed)

    def _fed(self, targets: np.ndarray) -> torch.Tensor:
        """The returns-to-go the model is fed for these remaining returns."""
        fed = torch.as_tensor(targets, dtype=torch.float32, device=self.device)
        return fed.clamp(*self.rtg_range) if self.clamp_returns_to_go else fed

    def _window(self) -> slice:
        # the last K steps, cropped to the longest context any copy has: early in episodes
        # the rest would be padding on every row, which the model ignores anyway
        n = min(self.K, int(self.steps.max()) + 1)
        return slice(self.pos - n + 1, self.pos + 1)

    def reset(self, env_mask: np.ndarray) -> None:
        """Forget the context of the copies in ``env_mask``: they start a new episode."""
        rows = torch.as_tensor(env_mask, device=self.device)
        self.mask[rows] = False
        self.steps[env_mask] = 0
        if self.reference is not None:
            self.kl_to_init[env_mask] = 0.0

    def begin_step(self, observations: np.ndarray) -> None:
        """Append the current observation of every copy (return and action come next)."""
        self.pos += 1
        if self.pos == self.mask.shape[1]:  # full: keep the last K - 1 steps at the front
            keep = slice(self.pos - self.K + 1, self.pos)
            for buf in (
                self.observations,
                self.actions,
                self.returns_to_go,
                self.timesteps,
                *(tokens for _, tokens in self.encoders),
            ):
                buf[:, : self.K - 1] = buf[:, keep]
            self.mask[:, : self.K - 1] = self.mask[:, keep]
            self.pos = self.K - 1
        p = self.pos
        self.observations[:, p] = torch.as_tensor(observations, device=self.device)
        self.actions[:, p] = 0
        self.returns_to_go[:, p, 0] = self._fed(self.target)
        self.timesteps[:, p] = torch.as_tensor(self.steps, device=self.device)
        self.mask[:, p] = True
        if p > 0:  # the previous step's action is known now
            self._embed_action(p - 1)
        self._embed(slice(p, p + 1))

    @torch.no_grad()
    def _embed_action(self, column: int) -> None:
        """Refresh the stored action token of this buffer column from its action."""
        step = slice(column, column + 1)
        for (model, tokens), precision in zip(self.encoders, self.precisions, strict=True):
            with model.precision_as(precision):
                action = model.embed_actions(self.actions[:, step], self.timesteps[:, step])
            tokens[:, column, 2] = action[:, 0]

    @torch.no_grad()
    def _embed(self, steps: slice) -> None:
        """Refresh the stored tokens of these buffer columns from the raw steps."""
        for (model, tokens), precision in zip(self.encoders, self.precisions, strict=True):
            with model.precision_as(precision):
                tokens[:, steps] = model.embed(
                    self.returns_to_go[:, steps],
                    self.observations[:, steps],
                    self.actions[:, steps],
                    self.timesteps[:, steps],
                )

    @torch.no_grad()
    def refresh(self) -> None:
        """Re-encode the tokens of the steps in the window from the raw steps, with the
        models' current weights."""
        self._embed(slice(max(self.pos - self.K + 1, 0), self.pos + 1))

    def forward(self, encoder: int = 0) -> DTOutput:
        """The last step's outputs of the acting model (``encoder`` 0) or the reference (1)."""
        model, tokens = self.encoders[encoder]
        w = self._window()
        with model.precision_as(self.precisions[encoder]):
            return model.forward_tokens(tokens[:, w], self.mask[:, w], last_step_only=True)

    @torch.no_grad()
    def return_probs(self) -> np.ndarray:
        """``P(R_t | history, s_t)`` for every copy (N, n_bins), from the return head that
        picks targets (``targets_from_reference``); needs no target yet."""
        logits = self.forward(self.target_encoder).return_logits[:, -1]
        return torch.softmax(logits.double(), dim=-1).cpu().numpy()

    def set_targets(self, env_mask: np.ndarray, targets: np.ndarray) -> None:
        """Ask the copies in ``env_mask`` for these returns from the current step on."""
        self.target[env_mask] = targets
        rows = torch.as_tensor(env_mask, device=self.device)
        self.returns_to_go[rows, self.pos, 0] = self._fed(targets)
        self._embed(slice(self.pos, self.pos + 1))

    def observe_step(
        self,
        observations: np.ndarray,
        starting: np.ndarray,
        strategy: ConditioningStrategy,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Append this step's observations; the copies in ``starting`` begin an episode and
        are asked for the target ``strategy`` picks from ``P(R | s_0)``. Returns those
        targets (one per starting copy)."""
        self.reset(starting)
        self.begin_step(observations)
        if not starting.any():
            return np.zeros(0)
        centers = self.model.return_bin_centers.double().cpu().numpy()
        targets = strategy.targets(self.return_probs()[starting], centers, rng)
        self.set_targets(starting, targets)
        return targets

    @torch.no_grad()
    def act(self, deterministic: bool) -> np.ndarray:
        """Actions for every copy: the policy's mode, or a sample. With a reference, each
        copy's ``kl_to_init`` grows by this step's KL(pi || reference)."""
        policy = self.forward().policy[:, -1]
        actions = policy.mode() if deterministic else policy.sample(self.generator)
        self.actions[:, self.pos] = actions
        if self.reference is not None:
            reference = self.forward(1).policy[:, -1]
            self.kl_to_init += kl_divergence(policy, reference).double().cpu().numpy()
        return actions.cpu().numpy()

    def record_rewards(self, rewards: np.ndarray) -> None:
        """The return still to come drops by the reward just received."""
        self.target -= rewards
        self.steps += 1


@dataclass
class EpisodeResult:
    """One finished episode, the return it was asked for (NaN for agents that are not
    return-conditioned) and its summed KL(pi || pi_init) in nats along the contexts it
    visited (NaN where not measured: no initial policy, or training episodes)."""

    trajectory: Trajectory
    target_return: float
    kl_to_init: float = float("nan")


class ConditionedDT:
    """A Decision Transformer acting in ``num_envs`` copies, each episode asking for the
    return its conditioning strategy picks at the episode's first step.

    This is the agent interface every evaluation and rollout in ogm drives (the baselines'
    agents offer the same three calls): ``reset(num_envs)`` before the first step,
    ``act(obs, deterministic)`` at every step, ``observe(actions, rewards, done)`` after it;
    copies flagged ``done`` start a new episode at their next ``act``. ``targets`` holds the
    return each copy's current episode was asked for; with a ``reference`` (the initial
    policy), ``kl_to_init`` holds each copy's summed KL(pi || reference) over
    its current episode so far, on the same windows (see :class:`DTActor`).

    The strategy is not told about returns here: callers decide which episodes it learns
    from (training episodes, never evaluation ones).
    """

    def __init__(
        self,
        model: DecisionTransformer,
        strategy: ConditioningStrategy,
        *,
        context_len: int | None = None,
        reference: DecisionTransformer | None = None,
    ) -> None:
        self.model = model
        self.reference = reference
        self.strategy = strategy
        self.rng = np.random.default_rng(0)
        self.context_len = context_len
        self.actor: DTActor | None = None
        self.starting = np.zeros(0, bool)
        self.targets = np.zeros(0)

    def reset(self, num_envs: int, seed: int | None = None) -> None:
        """Start a fresh episode in every copy. ``seed`` seeds the action sampling and the
        strategy's target draws (default: a draw from torch's global generator, so that
        ``torch.manual_seed`` governs both)."""
        if seed is None:
            seed = int(torch.randint(2**62, ()).item())
        self.rng = np.random.default_rng(seed)
        self.actor = DTActor(
            self.model, num_envs, context_len=self.context_len, seed=seed, reference=self.reference
        )
        self.starting = np.ones(num_envs, bool)
        self.targets = np.zeros(num_envs)

    def networks(self) -> tuple[DecisionTransformer, ...]:
        """The models that act: the policy, and the reference when there is one."""
        return (self.model,) if self.reference is None else (self.model, self.reference)

    @property
    def kl_to_init(self) -> np.ndarray:
        """Per copy, the summed KL(pi || reference) of its episode so far (NaN: no reference)."""
        return self.actor.kl_to_init

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool) -> np.ndarray:
        starting = self.starting
        self.targets[starting] = self.actor.observe_step(obs, starting, self.strategy, self.rng)
        return self.actor.act(deterministic)

    def observe(self, actions: np.ndarray, rewards: np.ndarray, done: np.ndarray) -> None:
        self.actor.record_rewards(np.asarray(rewards, dtype=np.float64))
        self.starting = np.asarray(done, bool).copy()


class _StepLog:
    """Per-step batched arrays of a rollout, grown by doubling; episodes are column slices."""

    def __init__(self) -> None:
        self.columns: dict[str, np.ndarray] = {}
        self.rows = 0

    def append(self, **values: np.ndarray) -> None:
        for name, value in values.items():
            value = np.asarray(value)
            column = self.columns.get(name)
            if column is None:
                column = self.columns[name] = np.zeros((64, *value.shape), value.dtype)
            elif self.rows == len(column):
                column = self.columns[name] = np.concatenate((column, np.zeros_like(column)))
            column[self.rows] = value
        self.rows += 1

    def episode(self, name: str, env: int, start: int) -> np.ndarray:
        return self.columns[name][start : self.rows, env].copy()


def _check_vector_env(vec_env: gym.vector.VectorEnv) -> None:
    mode = vec_env.metadata.get("autoreset_mode")
    if mode not in (AutoresetMode.DISABLED, AutoresetMode.DISABLED.value):
        raise ValueError(
            f"rollout needs a vector env made with autoreset_mode=AutoresetMode.DISABLED, got {mode}"
        )


@torch.no_grad()
def rollout(
    agent: ConditionedDT,
    vec_env: gym.vector.VectorEnv,
    n_episodes: int,
    *,
    seed: int,
    deterministic: bool,
    source: str = "online",
) -> list[EpisodeResult]:
    """Run exactly ``n_episodes`` episodes over the copies of ``vec_env``; episode ``i`` is
    the ``i``-th to start. The vector env is reset with ``seed``, copies that finish
    are reset with a ``reset_mask``, and copies with no episode left run idle (ignored).
    This is the training rollout of the OGM agent; evaluation episodes, whose starts are
    seeded one by one, go through :mod:`ogm.train.evaluation`.

    The agent's strategy is not told about the returns (call ``strategy.observe`` where
    the caller wants them to count, e.g. for training episodes but not for evaluation).
    """
    _check_vector_env(vec_env)
    with evaluating(*agent.networks()):
        return _rollout(agent, vec_env, n_episodes, seed, deterministic, source)


def _rollout(
    agent: ConditionedDT,
    vec_env: gym.vector.VectorEnv,
    n_episodes: int,
    seed: int,
    deterministic: bool,
    source: str,
) -> list[EpisodeResult]:
    N = vec_env.num_envs
    agent.reset(N, seed=seed)

    episode = np.full(N, -1)  # episode index each copy is running, -1 when idle
    episode[: min(N, n_episodes)] = np.arange(min(N, n_episodes))
    started = int((episode >= 0).sum())
    start_row = np.zeros(N, dtype=np.int64)
    results: list[EpisodeResult | None] = [None] * n_episodes
    log = _StepLog()

    obs, _ = vec_env.reset(seed=seed)
    while (episode >= 0).any():
        actions = agent.act(obs, deterministic)
        next_obs, rewards, terminated, truncated, infos = vec_env.step(actions)
        rewards = np.asarray(rewards, dtype=np.float64)
        done = np.asarray(terminated) | np.asarray(truncated)
        # gymnasium's vector envs add "_name" presence masks next to each info key
        events = {k: v for k, v in infos.get("events", {}).items() if not k.startswith("_")}
        log.append(
            obs=obs,
            actions=actions,
            rewards=rewards,
            hidden=infos.get("hidden_reward", rewards),
            terminated=terminated,
            truncated=truncated,
            **{f"ev/{name}": flags for name, flags in events.items()},
        )
        for i in np.flatnonzero(done & (episode >= 0)):
            steps = {name: log.episode(name, i, start_row[i]) for name in log.columns}
            trajectory = Trajectory(
                observations=np.concatenate((steps["obs"], next_obs[i][None])),
                actions=steps["actions"],
                rewards=steps["rewards"],
                hidden_rewards=steps["hidden"],
                terminations=steps["terminated"],
                truncations=steps["truncated"],
                events={name: steps[f"ev/{name}"] for name in events},
                source=source,
            )
            results[episode[i]] = EpisodeResult(
                trajectory, float(agent.targets[i]), float(agent.kl_to_init[i])
            )
            episode[i] = started if started < n_episodes else -1
            started += episode[i] >= 0
        agent.observe(actions, rewards, done)
        start_row[done] = log.rows
        obs = vec_env.reset(options={"reset_mask": done})[0] if done.any() else next_obs

    return results  # type: ignore[return-value]
