"""Training segments for the Decision Transformer and its loss (shared offline and online).

A :class:`TrajectoryPool` packs a list of trajectories into flat arrays once; sampling a
:class:`SegmentBatch` of ``B`` segments of ``K`` steps is then a few numpy fancy-indexing
operations. A trajectory is chosen with probability proportional to its length (as in
kzl/decision-transformer and online-dt), the segment's *last* step is uniform over the
trajectory, and a segment that would reach before the episode's first step is left-padded
up to ``K`` with ``mask = False``.

The references draw the *first* step uniformly instead and pad segments that run past the
episode's end, so their short contexts always sit at episode ends, while an agent acting
in the environment has short contexts only at episode starts (its first ``K - 1`` steps).
Drawing the last step puts the short contexts where acting has them; every step is still
the last (predicted-from-the-most-context) step of a segment equally often. It matters for
return conditioning: the DT of ``tests/test_fidelity.py`` (K = 5) looped until the time
limit with the references' sampling, and follows its targets with this one for three of
five training seeds (the other two still loop in some episodes).

Returns-to-go in a batch are *unscaled*: the model multiplies them by its own
``config.reward_scale``, so a checkpoint cannot be fed the wrong scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from ogm.data.trajectory import Trajectory
from ogm.models.decision_transformer import DecisionTransformer


def observation_stats(trajectories: Sequence[Trajectory]) -> tuple[np.ndarray, np.ndarray]:
    """Per-element mean and std of the observations, for the model's frozen normaliser.

    Integer observations (uint8 / bool grid planes) are left as they are: mean 0, std 1.
    Elements that never vary get std 1 so that they are only centred.
    """
    states = np.concatenate([t.states for t in trajectories])
    shape = states.shape[1:]
    if not np.issubdtype(states.dtype, np.floating):
        return np.zeros(shape, np.float32), np.ones(shape, np.float32)
    mean = states.mean(0, dtype=np.float64)
    std = states.std(0, dtype=np.float64)
    std = np.where(std > 1e-6, std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


@dataclass
class SegmentBatch:
    """``B`` segments of ``K`` steps, left-padded; what the model and :func:`dt_loss` take."""

    observations: torch.Tensor  # (B, K, *obs_shape), dtype of the data
    actions: torch.Tensor  # (B, K) long or (B, K, A) float
    returns_to_go: torch.Tensor  # (B, K, 1) float, unscaled
    timesteps: torch.Tensor  # (B, K) long
    mask: torch.Tensor  # (B, K) bool, False at padding

    def __len__(self) -> int:
        return self.mask.shape[0]

    def to(self, device: torch.device | str) -> SegmentBatch:
        return SegmentBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @staticmethod
    def cat(a: SegmentBatch, b: SegmentBatch) -> SegmentBatch:
        """One batch holding the segments of ``a`` then those of ``b`` (same K)."""
        if a.mask.shape[1] != b.mask.shape[1]:
            raise ValueError(f"cannot cat batches of K={a.mask.shape[1]} and K={b.mask.shape[1]}")
        return SegmentBatch(
            **{f.name: torch.cat((getattr(a, f.name), getattr(b, f.name))) for f in fields(a)}
        )


class TrajectoryPool:
    """Trajectories packed into flat per-step arrays, for fast segment sampling."""

    def __init__(self, trajectories: Sequence[Trajectory]) -> None:
        if not trajectories:
            raise ValueError("a TrajectoryPool needs at least one trajectory")
        self.lengths = np.array([t.length for t in trajectories], dtype=np.int64)
        self.offsets = np.concatenate(([0], np.cumsum(self.lengths)[:-1]))
        self.observations = np.concatenate([t.states for t in trajectories])
        self.actions = np.concatenate([t.actions for t in trajectories])
        if not np.issubdtype(self.actions.dtype, np.integer):
            self.actions = self.actions.astype(np.float32)
        self.returns_to_go = np.concatenate([t.returns_to_go() for t in trajectories])
        self.timesteps = np.concatenate([np.arange(n) for n in self.lengths])
        self.returns = np.array([t.ret for t in trajectories])
        self._probs = self.lengths / self.lengths.sum()

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def num_steps(self) -> int:
        return int(self.lengths.sum())

    def sample(self, batch_size: int, context_len: int, rng: np.random.Generator) -> SegmentBatch:
        """``batch_size`` segments of ``context_len`` steps (see the module docstring)."""
        K = context_len
        traj = rng.choice(len(self.lengths), size=batch_size, p=self._probs)
        length = self.lengths[traj]
        last = (rng.random(batch_size) * length).astype(np.int64)  # uniform in [0, length)
        # position j of a segment holds step last - (K - 1) + j; steps before 0 are padding
        step = last[:, None] - (K - 1) + np.arange(K)[None, :]  # (B, K)
        mask = step >= 0
        flat = self.offsets[traj][:, None] + np.clip(step, 0, None)

        def take(values: np.ndarray) -> torch.Tensor:
            out = values[flat]
            out[~mask] = 0
            return torch.from_numpy(out)

        return SegmentBatch(
            observations=take(self.observations),
            actions=take(self.actions),
            returns_to_go=take(self.returns_to_go)[..., None],
            timesteps=take(self.timesteps),
            mask=torch.from_numpy(mask),
        )


def dt_loss(
    model: DecisionTransformer,
    batch: SegmentBatch,
    alpha: float | torch.Tensor = 0.0,
    return_coef: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """ODT's loss plus the return model's, every term averaged over unpadded steps only.

    ``loss = -mean log pi(a | ...) - alpha * mean entropy + return_coef * mean CE(R bins)``.
    The stats hold the detached terms as floats (``entropy`` is what ODT's temperature
    update needs).
    """
    out = model(batch.returns_to_go, batch.observations, batch.actions, batch.timesteps, batch.mask)
    m = batch.mask.float()
    n = m.sum().clamp_min(1.0)
    nll = -(out.policy.log_prob(batch.actions) * m).sum() / n
    entropy = (out.policy.entropy() * m).sum() / n
    bins = model.return_bin_index(batch.returns_to_go[..., 0])
    ce = torch.nn.functional.cross_entropy(
        out.return_logits.reshape(-1, model.config.n_bins), bins.reshape(-1), reduction="none"
    )
    return_ce = (ce * m.reshape(-1)).sum() / n
    loss = nll - alpha * entropy + return_coef * return_ce
    stats = {
        "loss": loss.item(),
        "nll": nll.item(),
        "entropy": entropy.item(),
        "return_ce": return_ce.item(),
    }
    return loss, stats
