"""A frozen learned proxy of a gold reward, and the wrappers that make agents optimise it.

The frozen-reward-model experiment of "Safety considerations for online generative
modeling" (after Gao, Schulman & Hilton 2022): a reward model (RM) learned from pairwise
comparisons labelled by a gold reward is frozen, agents optimise it, and the gold shows
what the optimisation does to the true objective. See ``docs/reward_model.md``.

- The RM (:class:`RewardModel`) is an MLP scoring a *finished episode* from its features:
  ``"final"``, the last observation (for ``ogm/Summarize-v0`` that is the document and the
  whole summary); ``"sum"``, the sum of the observations after every step (for a
  gridworld: how long each object was seen on each cell, so the RM can learn from what the
  trajectory showed, including what a tampered observation showed). Inputs are
  standardised with the training features' mean and std, stored with the model.
- :func:`train_reward_model` plays pairs of episodes from one start with the task's
  scripted demonstrators (a population of skills; ``ogm.data.demonstrators``), labels
  each pair by the gold (the episode's hidden performance), optionally noisily (flip
  probability, or Boltzmann-rational labels ``P(a > b) = sigmoid(beta (G_a - G_b))``),
  fits the RM with the Bradley-Terry loss and reports its accuracy on held-out pairs.
- :func:`save_reward_model` / :func:`load_reward_model`: safetensors + JSON, no pickle.
- :class:`ProxyReward` (one env) and :class:`ProxyRewardVector` (a vector env) replace the
  observed reward by the frozen RM's score at the end of each episode (0 on other steps),
  keep the gold as ``info["hidden_reward"]`` (so every ogm metric of hidden performance
  reads the gold) and the env's own reward as ``info["env_reward"]``.
  ``gym.make("ogm/ProxyReward-v0", reward_model=DIR)`` is the RM's env wrapped, for configs.
- :func:`best_of_n_kl`: KL(best-of-n || pi_0), analytic for a tie-free reward, exact for one
  with ties.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from scipy.stats import spearmanr
from torch import nn
from torch.nn import functional as F

from ogm.cache import cache_dir, recall, remember
from ogm.envs.env import game_info
from ogm.limits import MAX_BATCH, MAX_EPISODES, MAX_LAYERS, MAX_UPDATES, MAX_WIDTH

FEATURES = ("final", "sum")
SKILLS = (0.0, 0.25, 0.5, 0.75, 1.0)  # the demonstrator population of the comparisons
FORMAT_VERSION = 1
WEIGHTS_FILE = "reward_model.safetensors"
META_FILE = "reward_model.json"
_HELD_OUT_STREAM = 1  # the held-out pairs' random stream, the same whatever n_pairs is


class RewardModelError(ValueError):
    """A reward model that cannot be used: a missing or corrupt file, or a mismatch."""


def default_features(env_id: str) -> str:
    """``"sum"`` for ogm gridworlds (a trajectory), ``"final"`` for other envs (the end state)."""
    try:
        game_info(env_id)
    except ValueError:
        return "final"
    return "sum"


def _check_features(features: str) -> str:
    if features not in FEATURES:
        raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
    return features


class EpisodeFeatures:
    """The features of the episodes under way in ``num`` copies (``"final"`` or ``"sum"``)."""

    def __init__(self, features: str, num: int, dim: int) -> None:
        self.features = _check_features(features)
        self.values = np.zeros((num, dim), dtype=np.float32)

    def clear(self, mask: np.ndarray | slice = slice(None)) -> None:
        """Start new episodes in the copies of ``mask``."""
        self.values[mask] = 0.0

    def add(self, obs: np.ndarray, mask: np.ndarray | slice = slice(None)) -> None:
        """The observations ``(num, ...)`` after a step, for the copies of ``mask``."""
        flat = np.asarray(obs, dtype=np.float32).reshape(len(self.values), -1)
        if self.features == "final":
            self.values[mask] = flat[mask]
        else:
            self.values[mask] += flat[mask]


class RewardModel(nn.Module):
    """An MLP scoring finished episodes of ``env_id`` from their features.

    ``hidden`` are the widths of the ReLU layers. ``feature_mean`` / ``feature_std`` are
    frozen buffers (set by training) that standardise the inputs.
    """

    def __init__(
        self,
        input_dim: int,
        hidden: Sequence[int] = (64, 64),
        *,
        env_id: str,
        env_kwargs: Mapping[str, Any] | None = None,
        features: str = "final",
    ) -> None:
        super().__init__()
        if input_dim < 1:
            raise ValueError(f"input_dim must be positive, got {input_dim}")
        hidden = [int(h) for h in hidden]
        if len(hidden) > MAX_LAYERS or any(not 1 <= h <= MAX_WIDTH for h in hidden):
            raise ValueError(
                f"hidden must be at most {MAX_LAYERS} widths in 1..{MAX_WIDTH}, got {hidden}"
            )
        self.input_dim, self.hidden = int(input_dim), tuple(hidden)
        self.env_id, self.env_kwargs = env_id, dict(env_kwargs or {})
        self.features = _check_features(features)
        self.metrics: dict[str, Any] = {}
        layers: list[nn.Module] = []
        width = self.input_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        self.register_buffer("feature_mean", torch.zeros(self.input_dim))
        self.register_buffer("feature_std", torch.ones(self.input_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Scores ``(B,)`` of features ``(B, input_dim)``."""
        return self.net((features - self.feature_mean) / self.feature_std).squeeze(-1)

    @torch.no_grad()
    def score(self, features: np.ndarray) -> np.ndarray:
        """Scores (float64) of a batch of episode features ``(B, input_dim)``."""
        x = torch.as_tensor(np.asarray(features, dtype=np.float32))
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(
                f"features must have shape (B, {self.input_dim}), got {tuple(x.shape)}"
            )
        return self(x).double().numpy()

    def describe(self) -> dict[str, Any]:
        """What rebuilds the model (stored in the JSON next to the weights)."""
        return {
            "format_version": FORMAT_VERSION,
            "env_id": self.env_id,
            "env_kwargs": self.env_kwargs,
            "features": self.features,
            "input_dim": self.input_dim,
            "hidden": list(self.hidden),
            "metrics": self.metrics,
        }


def bradley_terry_loss(
    score_a: torch.Tensor, score_b: torch.Tensor, prefer_a: torch.Tensor
) -> torch.Tensor:
    """Mean Bradley-Terry loss: ``-log P(label)`` with ``P(a > b) = sigmoid(score_a - score_b)``;
    ``prefer_a`` in [0, 1] (0.5: a tie, no preference)."""
    return F.binary_cross_entropy_with_logits(score_a - score_b, prefer_a)


def label_pairs(
    gold_a: np.ndarray,
    gold_b: np.ndarray,
    rng: np.random.Generator,
    *,
    flip_prob: float = 0.0,
    beta: float | None = None,
) -> np.ndarray:
    """Labels ``P(a preferred)`` of pairs by their gold: 1, 0, or 0.5 for equal gold; with
    ``beta`` a Boltzmann-rational labeller (1 with probability ``sigmoid(beta (G_a - G_b))``,
    else 0); then each label flipped to ``1 - label`` with probability ``flip_prob``."""
    if not 0.0 <= flip_prob <= 0.5:
        raise ValueError(f"flip_prob must be in [0, 0.5], got {flip_prob}")
    if beta is not None and not 0.0 < beta < math.inf:
        raise ValueError(f"beta must be a positive number or None, got {beta}")
    diff = np.asarray(gold_a, np.float64) - np.asarray(gold_b, np.float64)
    if beta is None:
        labels = np.where(diff > 0, 1.0, np.where(diff < 0, 0.0, 0.5))
    else:
        labels = (rng.random(diff.shape) < 1.0 / (1.0 + np.exp(-beta * diff))).astype(np.float64)
    flip = rng.random(diff.shape) < flip_prob
    return np.where(flip, 1.0 - labels, labels)


def _horizon(env: gym.Env) -> int:
    """The step limit of an ogm env (what a demonstrator's ``steps_left`` counts down from)."""
    unwrapped = env.unwrapped
    engine = getattr(unwrapped, "engine", None)
    return int(engine.max_steps if engine is not None else unwrapped.max_steps)


def comparison_episodes(
    env_id: str,
    n_pairs: int,
    rng: np.random.Generator,
    *,
    env_kwargs: Mapping[str, Any] | None = None,
    features: str | None = None,
    skills: Sequence[float] = SKILLS,
    epsilon: float = 0.05,
) -> dict[str, np.ndarray]:
    """``n_pairs`` pairs of demonstrator episodes, both episodes of a pair from the same
    start (a seed drawn from ``rng``), each by a demonstrator of a skill drawn from
    ``skills``: ``{"a", "b"}`` features ``(n_pairs, dim)`` and ``{"gold_a", "gold_b"}``
    (each episode's sum of hidden rewards)."""
    from ogm.data.demonstrators import make_demonstrator  # ogm.data imports ogm.envs

    if not 1 <= n_pairs <= MAX_EPISODES:
        raise ValueError(f"n_pairs must be in 1..{MAX_EPISODES}, got {n_pairs}")
    if not skills or any(not 0.0 <= s <= 1.0 for s in skills):
        raise ValueError(f"skills must be a non-empty list of values in [0, 1], got {skills}")
    env_kwargs = dict(env_kwargs or {})
    features = _check_features(features or default_features(env_id))
    env = gym.make(env_id, **env_kwargs)
    demonstrators = [
        make_demonstrator(env_id, epsilon=epsilon, skill=s, rng=rng, env=env, **env_kwargs)
        for s in skills
    ]
    horizon = _horizon(env)
    dim = int(np.prod(env.observation_space.shape))
    out = {"a": np.zeros((n_pairs, dim), np.float32), "b": np.zeros((n_pairs, dim), np.float32)}
    gold = {"gold_a": np.zeros(n_pairs), "gold_b": np.zeros(n_pairs)}
    acc = EpisodeFeatures(features, 1, dim)
    for k in range(n_pairs):
        start = int(rng.integers(2**32))
        for side in "ab":
            demo = demonstrators[int(rng.integers(len(demonstrators)))]
            obs, _ = env.reset(seed=start)
            acc.clear()
            done, steps, total = False, 0, 0.0
            while not done:
                obs, reward, terminated, truncated, info = env.step(demo.act(obs, horizon - steps))
                acc.add(obs[None])
                total += float(info.get("hidden_reward", reward))
                steps += 1
                done = terminated or truncated
            out[side][k] = acc.values[0]
            gold[f"gold_{side}"][k] = total
    env.close()
    return {**out, **gold}


def _pair_accuracy(model: RewardModel, pairs: Mapping[str, np.ndarray]) -> tuple[float, int]:
    """Share of the pairs with different gold that the model orders as the gold does."""
    differ = pairs["gold_a"] != pairs["gold_b"]
    if not differ.any():
        return float("nan"), 0
    margin = model.score(pairs["a"][differ]) - model.score(pairs["b"][differ])
    gold_margin = pairs["gold_a"][differ] - pairs["gold_b"][differ]
    return float(np.mean(np.sign(margin) == np.sign(gold_margin))), int(differ.sum())


def _training_comparisons(
    env_id: str,
    n_pairs: int,
    sampling: Mapping[str, Any],
    flip_prob: float,
    beta: float | None,
    seed: int,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.random.Generator]:
    """The labelled comparisons :func:`train_reward_model` fits, and the random stream after
    them: the same for the same arguments."""
    rng = np.random.default_rng(seed)
    train = comparison_episodes(env_id, n_pairs, rng, **sampling)
    labels = label_pairs(train["gold_a"], train["gold_b"], rng, flip_prob=flip_prob, beta=beta)
    return train, labels, rng


def fit_comparisons(
    model: RewardModel,
    a: np.ndarray,
    b: np.ndarray,
    labels: np.ndarray,
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    weight_decay: float = 0.0,
) -> float:
    """``steps`` Adam steps of the Bradley-Terry loss on minibatches (drawn with torch's
    global generator) of the labelled pairs ``(a, b)`` (features ``(n, dim)``, ``labels``
    ``P(a preferred)``); returns the mean loss of the steps. The model's feature
    standardisation is left as it is."""
    xa, xb = torch.as_tensor(a), torch.as_tensor(b)
    y = torch.as_tensor(labels, dtype=torch.float32)
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    batch = min(batch_size, len(y))
    total = 0.0
    for _ in range(steps):
        idx = torch.randint(len(y), (batch,))
        loss = bradley_terry_loss(model(xa[idx]), model(xb[idx]), y[idx])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        total += loss.item()
    return total / steps


def trajectory_features(trajectories: Sequence[Any], features: str) -> np.ndarray:
    """The features ``(n, dim)`` a reward model scores finished episodes by (``"final"``:
    the last observation; ``"sum"``: the sum of the observations after every step), from
    :class:`ogm.data.trajectory.Trajectory` objects."""
    _check_features(features)
    rows = [
        (t.observations[-1] if features == "final" else t.observations[1:].sum(axis=0))
        .reshape(-1)
        .astype(np.float32)
        for t in trajectories
    ]
    return np.stack(rows)


def train_reward_model(
    env_id: str,
    n_pairs: int,
    *,
    env_kwargs: Mapping[str, Any] | None = None,
    features: str | None = None,
    hidden: Sequence[int] = (64, 64),
    flip_prob: float = 0.0,
    beta: float | None = None,
    skills: Sequence[float] = SKILLS,
    epsilon: float = 0.05,
    held_out_pairs: int = 500,
    steps: int = 1000,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> tuple[RewardModel, dict[str, Any]]:
    """Fit a frozen proxy of ``env_id``'s gold reward on ``n_pairs`` labelled comparisons.

    Returns the model (in eval mode, gradients off) and its metrics: ``held_out_accuracy``
    (share of ``held_out_pairs`` noise-free pairs with different gold ordered right, with
    its standard error), ``train_accuracy`` (the same on the training pairs),
    ``label_agreement`` (share of training labels that agree with the gold),
    ``held_out_spearman`` (rank correlation of proxy and gold over held-out episodes),
    ``held_out_loss`` (Bradley-Terry, noise-free labels). The held-out pairs depend on
    ``seed`` only, so models trained on different ``n_pairs`` are compared on the same
    pairs. The same arguments give the same model (on CPU).
    """
    if not 1 <= held_out_pairs <= MAX_EPISODES:
        raise ValueError(f"held_out_pairs must be in 1..{MAX_EPISODES}, got {held_out_pairs}")
    if not 1 <= steps <= MAX_UPDATES:
        raise ValueError(f"steps must be in 1..{MAX_UPDATES}, got {steps}")
    if not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"batch_size must be in 1..{MAX_BATCH}, got {batch_size}")
    if not 0.0 < learning_rate < math.inf or not 0.0 <= weight_decay < math.inf:
        raise ValueError(
            f"learning_rate must be positive and weight_decay >= 0, got {learning_rate}, "
            f"{weight_decay}"
        )
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in 0..2**32 - 1, got {seed}")
    features = _check_features(features or default_features(env_id))
    sampling = {
        "env_kwargs": env_kwargs,
        "features": features,
        "skills": skills,
        "epsilon": epsilon,
    }
    train, labels, rng = _training_comparisons(env_id, n_pairs, sampling, flip_prob, beta, seed)
    held_rng = np.random.default_rng([seed, _HELD_OUT_STREAM])
    held = comparison_episodes(env_id, held_out_pairs, held_rng, **sampling)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = RewardModel(
            train["a"].shape[1], hidden, env_id=env_id, env_kwargs=env_kwargs, features=features
        )
        both = np.concatenate((train["a"], train["b"]))
        model.feature_mean.copy_(torch.as_tensor(both.mean(axis=0)))
        std = both.std(axis=0)
        model.feature_std.copy_(torch.as_tensor(np.where(std > 1e-6, std, 1.0)))
        fit_comparisons(
            model,
            train["a"],
            train["b"],
            labels,
            steps=steps,
            batch_size=batch_size,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
        )
    model.eval().requires_grad_(False)

    held_labels = label_pairs(held["gold_a"], held["gold_b"], held_rng)
    held_loss = bradley_terry_loss(
        model(torch.as_tensor(held["a"])),
        model(torch.as_tensor(held["b"])),
        torch.as_tensor(held_labels, dtype=torch.float32),
    )
    accuracy, compared = _pair_accuracy(model, held)
    gold = np.concatenate((held["gold_a"], held["gold_b"]))
    proxy = model.score(np.concatenate((held["a"], held["b"])))
    true_labels = label_pairs(train["gold_a"], train["gold_b"], rng)
    metrics = {
        "n_pairs": n_pairs,
        "held_out_pairs": held_out_pairs,
        "held_out_compared": compared,
        "held_out_accuracy": accuracy,
        "held_out_accuracy_se": math.sqrt(accuracy * (1 - accuracy) / max(compared, 1)),
        "held_out_loss": float(held_loss),
        "held_out_spearman": float(spearmanr(gold, proxy).statistic),
        "train_accuracy": _pair_accuracy(model, train)[0],
        "label_agreement": float(np.mean(labels == true_labels)),
        "settings": {
            "features": features,
            "hidden": [int(h) for h in hidden],
            "flip_prob": flip_prob,
            "beta": beta,
            "skills": [float(s) for s in skills],
            "epsilon": epsilon,
            "steps": steps,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "weight_decay": weight_decay,
            "seed": seed,
        },
    }
    model.metrics = metrics
    return model, metrics


# ----------------------------------------------------------------------------- files


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities (which JSON lacks) as None."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def save_reward_model(model: RewardModel, path: str | os.PathLike) -> Path:
    """Write ``model`` to the directory ``path``: weights as safetensors, the rest as JSON."""
    from safetensors.torch import save_file

    from ogm.train.rundir import atomic_write_text

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, path / WEIGHTS_FILE)
    text = json.dumps(_finite(model.describe()), indent=1, allow_nan=False)
    atomic_write_text(path / META_FILE, text)
    return path


def load_reward_model(path: str | os.PathLike) -> RewardModel:
    """Read a reward model saved by :func:`save_reward_model`, frozen (eval mode, no
    gradients); every problem raises :class:`RewardModelError` naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    for name in (META_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise RewardModelError(f"no reward model at {path}: {name} is missing")
    loaded = recall(path, "reward model")
    if loaded is not None:
        return loaded
    meta_path = path / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("it must hold a JSON object")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"format_version must be {FORMAT_VERSION}, got {meta.get('format_version')!r}"
            )
        # its initial weights are overwritten below: drawing them must not move the torch
        # RNG of the caller (an env vector loads its model once per copy)
        with torch.random.fork_rng(devices=[]):
            model = RewardModel(
                int(meta["input_dim"]),
                [int(h) for h in meta["hidden"]],
                env_id=str(meta["env_id"]),
                env_kwargs=dict(meta["env_kwargs"]),
                features=str(meta["features"]),
            )
        model.metrics = dict(meta.get("metrics", {}))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise RewardModelError(f"{meta_path} is corrupt: {err}") from None
    weights_path = path / WEIGHTS_FILE
    try:
        model.load_state_dict(load_file(weights_path), strict=True)
    except (SafetensorError, OSError, RuntimeError) as err:
        raise RewardModelError(
            f"{weights_path} is corrupt or does not match {META_FILE}: {err}"
        ) from None
    model.eval().requires_grad_(False)
    remember(path, "reward model", model)
    return model


def _as_model(reward_model: RewardModel | str | os.PathLike) -> RewardModel:
    return (
        reward_model if isinstance(reward_model, RewardModel) else load_reward_model(reward_model)
    )


def _check_fits(model: RewardModel, space: gym.Space) -> None:
    dim = int(np.prod(space.shape))
    if dim != model.input_dim:
        raise RewardModelError(
            f"the reward model scores {model.input_dim} features, the env's observations have "
            f"{dim} ({space}); was it trained on {model.env_id} {model.env_kwargs}?"
        )


# ----------------------------------------------------------------------------- wrappers


class ProxyReward(gym.Wrapper):
    """The env with the frozen RM's score of the episode as its only reward (at the last
    step; 0 before). ``info["hidden_reward"]`` keeps the env's gold (its own reward where
    it has none) and ``info["env_reward"]`` the env's observed reward."""

    def __init__(self, env: gym.Env, reward_model: RewardModel | str | os.PathLike) -> None:
        super().__init__(env)
        self.reward_model = _as_model(reward_model)
        _check_fits(self.reward_model, env.observation_space)
        self._features = EpisodeFeatures(self.reward_model.features, 1, self.reward_model.input_dim)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self._features.clear()
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info = {**info, "env_reward": float(reward)}
        info.setdefault("hidden_reward", float(reward))
        self._features.add(np.asarray(obs)[None])
        proxy = 0.0
        if terminated or truncated:
            proxy = float(self.reward_model.score(self._features.values)[0])
        return obs, proxy, terminated, truncated, info


class ProxyRewardVector(gym.vector.VectorWrapper):
    """:class:`ProxyReward` for a vector env in any autoreset mode (one batched RM call per
    step for the copies whose episode ended)."""

    def __init__(self, env: VectorEnv, reward_model: RewardModel | str | os.PathLike) -> None:
        super().__init__(env)
        self.reward_model = _as_model(reward_model)
        _check_fits(self.reward_model, env.single_observation_space)
        self.autoreset_mode = AutoresetMode(
            env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        )
        n = env.num_envs
        self._features = EpisodeFeatures(self.reward_model.features, n, self.reward_model.input_dim)
        self._ended = np.zeros(n, dtype=bool)  # ended and not reset yet

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        mask = (options or {}).get("reset_mask")
        mask = slice(None) if mask is None else np.asarray(mask, dtype=bool)
        self._features.clear(mask)
        self._ended[mask] = False
        return self.env.reset(seed=seed, options=options)

    def step(self, actions):
        obs, reward, terminated, truncated, infos = self.env.step(actions)
        reward = np.asarray(reward, dtype=np.float64)
        infos = dict(infos)
        infos["env_reward"] = reward.copy()
        infos.setdefault("hidden_reward", reward.copy())
        done = np.logical_or(terminated, truncated)
        stepped = ~self._ended
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:  # ended copies restart this step
            self._features.clear(self._ended)
            self._ended[:] = False
        if self.autoreset_mode == AutoresetMode.SAME_STEP and done.any():
            seen = np.array(obs, copy=True)
            seen[done] = np.stack(list(infos["final_obs"][done]))
        else:
            seen = obs
        self._features.add(seen, stepped)
        proxy = np.zeros(len(reward))
        if done.any():
            proxy[done] = self.reward_model.score(self._features.values[done])
            if self.autoreset_mode == AutoresetMode.SAME_STEP:
                self._features.clear(done)
            else:
                self._ended |= done
        return obs, proxy, terminated, truncated, infos


class RewardModelRecipe(BaseModel):
    """A proxy reward model described by how it is trained: the arguments of
    :func:`train_reward_model` under the names ``ogm/ProxyReward-v0`` takes as options.

    ``task`` is the env whose gold the model learns (``task_kwargs`` its options), from
    ``pairs`` comparisons; ``rm_seed`` seeds the comparisons, the labels and the weights;
    ``rm_hidden`` are the MLP's widths; ``flip_prob`` and ``label_beta`` make the labeller
    noisy (see :func:`label_pairs`); ``rm_steps`` minibatches of training.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: str
    task_kwargs: dict[str, Any] = Field(default_factory=dict)
    pairs: int = Field(gt=0, le=MAX_EPISODES)
    rm_seed: int = Field(0, ge=0, lt=2**32)
    rm_hidden: tuple[int, ...] = Field((64, 64), max_length=MAX_LAYERS)
    flip_prob: float = Field(0.0, ge=0.0, le=0.5)
    label_beta: float | None = Field(None, gt=0.0)
    rm_steps: int = Field(1000, gt=0, le=MAX_UPDATES)

    @field_validator("rm_hidden")
    @classmethod
    def _widths(cls, hidden: tuple[int, ...]) -> tuple[int, ...]:
        if not all(1 <= h <= MAX_WIDTH for h in hidden):
            raise ValueError(f"rm_hidden widths must be in 1..{MAX_WIDTH}, got {list(hidden)}")
        return hidden

    def digest(self) -> str:
        """A short stable hash of the recipe, which names its cached model."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def comparisons(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The labelled pairs the recipe's model was trained on: features ``a``, ``b`` and
        labels ``P(a preferred)`` (generated again, the same every time)."""
        features = default_features(self.task)
        sampling = {"env_kwargs": self.task_kwargs, "features": features}
        sampling |= {"skills": SKILLS, "epsilon": 0.05}
        train, labels, _ = _training_comparisons(
            self.task, self.pairs, sampling, self.flip_prob, self.label_beta, self.rm_seed
        )
        return train["a"], train["b"], labels

    def train(self) -> tuple[RewardModel, dict[str, Any]]:
        """The model and its metrics, trained now (:func:`train_reward_model`)."""
        return train_reward_model(
            self.task,
            self.pairs,
            env_kwargs=self.task_kwargs,
            hidden=self.rm_hidden,
            flip_prob=self.flip_prob,
            beta=self.label_beta,
            steps=self.rm_steps,
            seed=self.rm_seed,
        )


def reward_model_cache() -> Path:
    """Where reward models built from recipes are cached (``$OGM_CACHE_DIR/reward_models``)."""
    return cache_dir("reward_models")


def build_reward_model(recipe: RewardModelRecipe) -> Path:
    """The directory of the model ``recipe`` describes, trained once and cached.

    A cached copy is used when it loads and was made from the same recipe; otherwise the
    model is trained into a temporary directory that is then renamed into place, so runs
    that build the same model at once (deterministic on CPU) leave one whole copy.
    """
    name = recipe.task.split("/")[-1].removesuffix("-v0")
    path = reward_model_cache() / f"{name}-{recipe.pairs}-{recipe.digest()}"
    recipe_json = recipe.model_dump(mode="json")
    if path.exists():
        if recall(path, "recipe checked"):
            return path
        try:
            if load_reward_model(path).metrics.get("recipe") == recipe_json:
                remember(path, "recipe checked", True)
                return path
        except RewardModelError:
            pass
        shutil.rmtree(path, ignore_errors=True)  # corrupt, or another recipe: rebuild
    model, _ = recipe.train()
    model.metrics = {**model.metrics, "recipe": recipe_json}
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    save_reward_model(model, staging)
    try:
        staging.rename(path)
    except OSError:  # built meanwhile by another process
        shutil.rmtree(staging, ignore_errors=True)
    return path


def proxy_reward_model(options: Mapping[str, Any]) -> RewardModel:
    """The reward model ``ogm/ProxyReward-v0`` uses with these options (``reward_model=DIR``
    or a recipe, built and cached the first time)."""
    options = dict(options)
    reward_model = options.pop("reward_model", None)
    options.pop("render_mode", None)
    if (reward_model is None) == (not options):
        fields = ", ".join(RewardModelRecipe.model_fields)
        raise RewardModelError(
            "ogm/ProxyReward-v0 needs either reward_model=DIR or the options of a recipe "
            f"({fields}), not both"
        )
    if reward_model is None:
        try:
            reward_model = build_reward_model(RewardModelRecipe(**options))
        except ValidationError as err:
            from ogm.train.config import describe_errors  # ogm.train imports ogm.envs

            raise RewardModelError(f"ogm/ProxyReward-v0: {describe_errors(err)}") from None
    return _as_model(reward_model)


def make_proxy_env(
    reward_model: RewardModel | str | os.PathLike | None = None,
    render_mode: str | None = None,
    **recipe: Any,
) -> ProxyReward:
    """The reward model's own env (``env_id``, ``env_kwargs``) wrapped in :class:`ProxyReward`:
    the entry point of ``ogm/ProxyReward-v0``.

    The model is ``reward_model`` (a model or its directory), or else the one the other
    options describe (:class:`RewardModelRecipe`: ``task``, ``pairs``, ...), trained the
    first time and cached (:func:`build_reward_model`).
    """
    options = dict(recipe) if reward_model is None else {"reward_model": reward_model, **recipe}
    model = proxy_reward_model(options)
    extra = {} if render_mode is None else {"render_mode": render_mode}
    return ProxyReward(gym.make(model.env_id, **model.env_kwargs, **extra), model)


# ----------------------------------------------------------------------------- best-of-n


def best_of_n_kl(n: int, level_probs: Sequence[float] | np.ndarray | None = None) -> float:
    """KL(best-of-n || pi_0) in nats.

    Without ``level_probs``: ``log n - (n - 1) / n``, exact when the reward has no ties
    under pi_0 (a continuous distribution). With ``level_probs``, the probabilities under
    pi_0 of the distinct reward values from lowest to highest: the exact KL when ties exist,
    ``sum_l q_l log(q_l / p_l)`` with ``q_l = F_l**n - F_(l-1)**n`` (``F`` the CDF); ties
    broken by candidate order leave pi_0's distribution inside a level, so this is also the
    KL over outcomes. It is below the analytic value (Beirami et al. 2024).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if level_probs is None:
        return math.log(n) - (n - 1) / n
    p = np.asarray(level_probs, dtype=np.float64)
    if p.ndim != 1 or p.size == 0 or (p < 0).any() or abs(p.sum() - 1.0) > 1e-9:
        raise ValueError(f"level_probs must be probabilities summing to 1, got {level_probs!r}")
    cdf = np.minimum(np.cumsum(p), 1.0)
    q = cdf**n - np.concatenate(([0.0], cdf[:-1])) ** n
    kept = (p > 0) & (q > 0)
    return float(np.sum(q[kept] * np.log(q[kept] / p[kept])))
