"""OGM with feedback: the proxy reward model keeps learning from gold labels of the agent's
own samples while the agent trains on it (``online.feedback``).

The frozen-reward-model experiment of "Safety considerations for online generative
modeling" lets an agent optimise a proxy that never changes; the essay's next step is to
keep asking the labeller about what the agent now does. Here, after each online round:

1. ``labels_per_round`` pairs of the round's own training episodes (two different episodes
   each, drawn at random; they need not share a start, as Bradley-Terry scores are absolute)
   are labelled by the gold (the episodes' hidden performance) with the labeller of the
   world's reward model (its ``flip_prob`` and ``label_beta``), until ``label_budget``
   labels have been given in all;
2. before training, the share of those pairs (with different gold) that the current proxy
   orders as the gold does is logged (``rm_agreement_new``): how well the proxy still judges
   what the agent does now, the signal that over-optimisation erodes;
3. the reward model takes ``rm_steps`` Adam steps (a fresh optimiser each round) of the
   Bradley-Terry loss on all its labels: the comparisons it was first trained on (generated
   again from its recipe; a model given as a directory has none) and every feedback label so
   far. Its feature standardisation stays that of its first training;
4. every trajectory the agent learns from (the replay buffer and the demonstrations) is
   scored again by the new proxy, so that returns-to-go stay in one currency.

Training and evaluation episodes log the proxy of the moment as their ``return`` (the
environment's own reward model is the frozen first one; each finished episode is scored
again before it is logged), so a run's curves show the proxy the agent was optimising. The
gold is untouched. The reward model's weights and the feedback labels are part of every
checkpoint; the pairs and minibatches of round ``r`` come from streams derived from
``(seed, r)``, so a resumed run gives the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, Field

from ogm.data.trajectory import Trajectory
from ogm.envs.reward_model import (
    RewardModelRecipe,
    fit_comparisons,
    label_pairs,
    proxy_reward_model,
    trajectory_features,
)
from ogm.envs.sequence import PROXY_ENV_ID
from ogm.limits import MAX_BATCH, MAX_EPISODES, MAX_UPDATES, STRICT

FEEDBACK_STREAM = 3  # after the online loop's ROLLOUT, PROBE, TRAIN streams
ROUND_COLUMNS = ("feedback_labels", "rm_agreement_new", "rm_loss")


class FeedbackSection(BaseModel):
    """How the proxy reward model learns during online training (module doc)."""

    model_config = STRICT

    # gold labels in all; a run spends at most labels_per_round x its rounds, so a larger
    # budget is the same run as that one
    label_budget: int = Field(gt=0, le=MAX_EPISODES)
    labels_per_round: int = Field(gt=0, le=MAX_EPISODES)
    rm_steps: int = Field(100, gt=0, le=MAX_UPDATES)  # Adam steps after each round's labels
    rm_batch_size: int = Field(64, gt=0, le=MAX_BATCH)
    rm_learning_rate: float = Field(1e-3, gt=0.0)


class Feedback:
    """The proxy reward model of an ``ogm/ProxyReward-v0`` run and its growing label set."""

    def __init__(
        self, section: FeedbackSection, env_id: str, env_kwargs: Mapping[str, Any], seed: int
    ) -> None:
        if env_id != PROXY_ENV_ID:
            raise ValueError(
                f"online.feedback retrains a proxy reward model: it needs env_id "
                f"{PROXY_ENV_ID!r}, got {env_id!r}"
            )
        self.section, self.seed = section, seed
        self.model = proxy_reward_model(env_kwargs)
        settings = self.model.metrics.get("settings", {})
        self.flip_prob = float(settings.get("flip_prob") or 0.0)
        self.label_beta = settings.get("beta")
        recipe = self.model.metrics.get("recipe")
        dim = self.model.input_dim
        if recipe is not None:
            self.first = RewardModelRecipe(**recipe).comparisons()
        else:
            self.first = (np.zeros((0, dim), np.float32),) * 2 + (np.zeros(0),)
        self.new = (np.zeros((0, dim), np.float32),) * 2 + (np.zeros(0),)

    @property
    def labels_given(self) -> int:
        """Feedback labels given so far."""
        return len(self.new[2])

    def score(self, trajectories: Sequence[Trajectory]) -> np.ndarray:
        """The current proxy's score of each finished episode."""
        return self.model.score(trajectory_features(trajectories, self.model.features))

    def rescore(self, trajectories: Sequence[Trajectory]) -> None:
        """Replace each episode's rewards by the current proxy's (its score at the last
        step, 0 before), in place."""
        if not trajectories:
            return
        for trajectory, value in zip(trajectories, self.score(trajectories), strict=True):
            trajectory.rewards[:] = 0.0
            trajectory.rewards[-1] = value

    def learn(self, trajectories: Sequence[Trajectory], round_: int) -> dict[str, float]:
        """Label pairs of this round's episodes and train the proxy on all labels (module
        doc); returns the round's ``ROUND_COLUMNS`` (NaN where nothing was labelled)."""
        cfg = self.section
        n = len(trajectories)
        count = min(cfg.labels_per_round, cfg.label_budget - self.labels_given)
        out = {"feedback_labels": float(self.labels_given), "rm_agreement_new": np.nan}
        out["rm_loss"] = np.nan
        if count <= 0 or n < 2:
            return out
        rng = np.random.default_rng([self.seed, FEEDBACK_STREAM, round_])
        first = rng.integers(n, size=count)
        second = (first + rng.integers(1, n, size=count)) % n  # another episode of the round
        features = trajectory_features(trajectories, self.model.features)
        gold = np.array([t.performance for t in trajectories])
        a, b = features[first], features[second]
        labels = label_pairs(
            gold[first], gold[second], rng, flip_prob=self.flip_prob, beta=self.label_beta
        )
        differ = gold[first] != gold[second]
        if differ.any():
            margin = self.model.score(a[differ]) - self.model.score(b[differ])
            agree = np.sign(margin) == np.sign(gold[first] - gold[second])[differ]
            out["rm_agreement_new"] = float(agree.mean())
        self.new = tuple(
            np.concatenate(pair) for pair in zip(self.new, (a, b, labels), strict=True)
        )
        every = tuple(np.concatenate(pair) for pair in zip(self.first, self.new, strict=True))
        self.model.train().requires_grad_(True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng.integers(2**62)))
            out["rm_loss"] = fit_comparisons(
                self.model,
                *every,
                steps=cfg.rm_steps,
                batch_size=cfg.rm_batch_size,
                learning_rate=cfg.rm_learning_rate,
            )
        self.model.eval().requires_grad_(False)
        out["feedback_labels"] = float(self.labels_given)
        return out

    # -- checkpoints
    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"reward_model.{k}": v.detach().clone() for k, v in self.model.state_dict().items()}

    def arrays(self) -> dict[str, np.ndarray]:
        return {f"feedback.{k}": v for k, v in zip("aby", self.new, strict=True)}

    def load(self, tensors: Mapping[str, torch.Tensor], arrays: Mapping[str, np.ndarray]) -> None:
        """Restore :meth:`tensors` and :meth:`arrays` of a checkpoint."""
        prefix = "reward_model."
        state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        self.model.load_state_dict(state, strict=True)
        self.new = tuple(np.asarray(arrays[f"feedback.{k}"]) for k in "aby")
