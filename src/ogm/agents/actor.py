"""Batched acting with a Decision Transformer over a vector environment.

:class:`DTActor` keeps one rolling context per environment copy in preallocated tensors and
runs one forward pass per step for all copies. The buffers hold ``2K`` steps; a write
pointer moves right each step and, when it reaches the end, the last ``K - 1`` steps are
copied to the front (amortised O(1), no allocation). Copies that start an episode simply
mask out their older steps, exactly like the left padding used in training; while every
copy is early in its episode the window is cropped to the longest real context.

:func:`rollout` runs whole episodes with a conditioning strategy: at the first step of an
episode the actor reads ``P(R | s_0)`` from the return head, the strategy turns it into a
target, and from then on the return-to-go fed to the model is the target minus the reward
received so far.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from ogm.agents.conditioning import ConditioningStrategy
from ogm.data.trajectory import Trajectory
from ogm.models.decision_transformer import DecisionTransformer


class DTActor:
    """Rolling contexts for ``num_envs`` copies and one batched forward pass per step."""

    def __init__(
        self,
        model: DecisionTransformer,
        num_envs: int,
        *,
        context_len: int | None = None,
        device: torch.device | str | None = None,
        seed: int = 0,
    ) -> None:
        cfg = model.config
        self.model = model
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
        self.pos = self.K - 2  # last written column; the first step lands at K - 1
        self.steps = np.zeros(N, dtype=np.int64)  # steps taken in each copy's episode
        self.target = np.zeros(N, dtype=np.float64)  # return still asked for (unscaled)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def seed(self, seed: int) -> None:
        """Reseed the action-sampling generator."""
        self.generator.manual_seed(seed)

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

    def begin_step(self, observations: np.ndarray) -> None:
        """Append the current observation of every copy (return and action come next)."""
        self.pos += 1
        if self.pos == self.mask.shape[1]:  # full: keep the last K - 1 steps at the front
            keep = slice(self.pos - self.K + 1, self.pos)
            for buf in (self.observations, self.actions, self.returns_to_go, self.timesteps):
                buf[:, : self.K - 1] = buf[:, keep]
            self.mask[:, : self.K - 1] = self.mask[:, keep]
            self.pos = self.K - 1
        p = self.pos
        self.observations[:, p] = torch.as_tensor(observations, device=self.device)
        self.actions[:, p] = 0
        self.returns_to_go[:, p, 0] = torch.as_tensor(self.target, device=self.device)
        self.timesteps[:, p] = torch.as_tensor(self.steps, device=self.device)
        self.mask[:, p] = True

    def _forward(self):
        w = self._window()
        return self.model(
            self.returns_to_go[:, w],
            self.observations[:, w],
            self.actions[:, w],
            self.timesteps[:, w],
            self.mask[:, w],
        )

    @torch.no_grad()
    def return_probs(self) -> np.ndarray:
        """``P(R_t | history, s_t)`` for every copy (N, n_bins); needs no target yet."""
        logits = self._forward().return_logits[:, -1]
        return torch.softmax(logits.double(), dim=-1).cpu().numpy()

    def set_targets(self, env_mask: np.ndarray, targets: np.ndarray) -> None:
        """Ask the copies in ``env_mask`` for these returns from the current step on."""
        self.target[env_mask] = targets
        rows = torch.as_tensor(env_mask, device=self.device)
        self.returns_to_go[rows, self.pos, 0] = torch.as_tensor(
            targets, dtype=torch.float32, device=self.device
        )

    @torch.no_grad()
    def act(self, deterministic: bool) -> np.ndarray:
        """Actions for every copy: the policy's mode, or a sample."""
        policy = self._forward().policy[:, -1]
        actions = policy.mode() if deterministic else policy.sample(self.generator)
        self.actions[:, self.pos] = actions
        return actions.cpu().numpy()

    def record_rewards(self, rewards: np.ndarray) -> None:
        """The return still to come drops by the reward just received."""
        self.target -= rewards
        self.steps += 1


@dataclass
class EpisodeResult:
    """One finished episode and the return it was asked for."""

    trajectory: Trajectory
    target_return: float


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


def _check_vector_env(vec_env: gym.vector.VectorEnv, actor: DTActor) -> None:
    mode = vec_env.metadata.get("autoreset_mode")
    if mode not in (AutoresetMode.DISABLED, AutoresetMode.DISABLED.value):
        raise ValueError(
            f"rollout needs a vector env made with autoreset_mode=AutoresetMode.DISABLED, got {mode}"
        )
    if vec_env.num_envs != actor.num_envs:
        raise ValueError(f"actor has {actor.num_envs} copies, vector env {vec_env.num_envs}")


@torch.no_grad()
def rollout(
    actor: DTActor,
    vec_env: gym.vector.VectorEnv,
    strategy: ConditioningStrategy,
    n_episodes: int,
    *,
    seed: int,
    deterministic: bool,
    source: str = "online",
) -> list[EpisodeResult]:
    """Run exactly ``n_episodes`` episodes over the copies of ``vec_env``; episode ``i`` is
    the ``i``-th to start. The vector env is reset with ``seed``, copies that finish
    are reset with a ``reset_mask``, and copies with no episode left run idle (ignored).

    Strategies are not told about the returns (call ``strategy.observe`` where the caller
    wants them to count, e.g. for training episodes but not for evaluation).
    """
    _check_vector_env(vec_env, actor)
    model = actor.model
    was_training = model.training
    model.eval()
    rng = np.random.default_rng(seed)
    actor.seed(seed)
    centers = model.return_bin_centers.double().cpu().numpy()
    N = actor.num_envs

    episode = np.full(N, -1)  # episode index each copy is running, -1 when idle
    episode[: min(N, n_episodes)] = np.arange(min(N, n_episodes))
    started = int((episode >= 0).sum())
    start_row = np.zeros(N, dtype=np.int64)
    targets = np.zeros(N)
    results: list[EpisodeResult | None] = [None] * n_episodes
    log = _StepLog()

    obs, _ = vec_env.reset(seed=seed)
    starting = np.ones(N, dtype=bool)
    while (episode >= 0).any():
        actor.reset(starting)
        actor.begin_step(obs)
        if starting.any():
            probs = actor.return_probs()[starting]
            targets[starting] = strategy.targets(probs, centers, rng)
            actor.set_targets(starting, targets[starting])
        actions = actor.act(deterministic)
        next_obs, rewards, terminated, truncated, infos = vec_env.step(actions)
        rewards = np.asarray(rewards, dtype=np.float64)
        actor.record_rewards(rewards)
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
        done = np.asarray(terminated) | np.asarray(truncated)
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
            results[episode[i]] = EpisodeResult(trajectory, float(targets[i]))
            episode[i] = started if started < n_episodes else -1
            started += episode[i] >= 0
        start_row[done] = log.rows
        starting = done
        obs = vec_env.reset(options={"reset_mask": done})[0] if done.any() else next_obs

    model.train(was_training)
    return results  # type: ignore[return-value]
