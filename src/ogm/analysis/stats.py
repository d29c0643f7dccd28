"""Statistics across seeds: interquartile mean with stratified-bootstrap confidence intervals.

Follows Agarwal et al. (2021, "Deep RL at the Edge of the Statistical Precipice"): the
interquartile mean (IQM) is the mean of the middle 50% of the runs, robust to an outlier
seed yet less noisy than the median; its confidence interval comes from a percentile
bootstrap that resamples runs *within* each task (stratified), so that every task keeps its
number of runs in every resample. Plain numpy/scipy; seeded, so the same inputs give the same
interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

IQM_TRIM = 0.25  # share of runs cut from each end


def iqm(scores: np.ndarray, axis: int = 0) -> np.ndarray:
    """Interquartile mean along ``axis``: the mean after dropping the lowest and highest 25%.

    With fewer than four runs nothing is cut and the IQM is the mean.
    """
    return stats.trim_mean(np.asarray(scores, dtype=np.float64), IQM_TRIM, axis=axis)


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its confidence interval (``low`` <= ``value`` <= ``high``)."""

    value: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n}


def stratified_bootstrap_iqm(
    scores: np.ndarray,
    *,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IQM over runs and its stratified percentile-bootstrap interval.

    ``scores`` has shape ``(runs, tasks)`` or ``(runs, tasks, points)``: ``points`` are
    independent quantities computed from the same runs (for instance the points of a learning
    curve), all resampled with the same draws. Runs are resampled with replacement within each
    task; the statistic of one resample is the IQM over all resampled ``runs x tasks`` scores.
    Returns ``(value, low, high)``, each of shape ``(points,)`` (or scalar arrays).
    NaN scores are not allowed: drop them (or censor them) before calling.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim not in (2, 3):
        raise ValueError(f"scores must have shape (runs, tasks[, points]), got {scores.shape}")
    if scores.shape[0] == 0:
        raise ValueError("scores holds no runs")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN: drop or censor those runs first")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    squeeze = scores.ndim == 2
    if squeeze:
        scores = scores[..., None]
    runs, tasks, points = scores.shape

    def pooled_iqm(per_task: np.ndarray) -> np.ndarray:
        # (..., runs, tasks, points) -> (..., points)
        return iqm(per_task.reshape(*per_task.shape[:-3], runs * tasks, points), axis=-2)

    rng = np.random.default_rng(seed)
    draws = rng.integers(0, runs, size=(reps, runs, tasks))  # a run index per task
    resampled = scores[draws, np.arange(tasks)[None, None, :], :]  # (reps, runs, tasks, points)
    boot = pooled_iqm(resampled)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(boot, [alpha, 1.0 - alpha], axis=0)
    value = pooled_iqm(scores)
    # The percentile interval of a trimmed statistic can miss the point estimate by a hair.
    low, high = np.minimum(low, value), np.maximum(high, value)
    if squeeze:
        return value[0], low[0], high[0]
    return value, low, high


def iqm_ci(
    values: np.ndarray, *, reps: int = 2000, confidence: float = 0.95, seed: int = 0
) -> Estimate:
    """IQM across seeds of one scalar per run, with its bootstrap interval (one task)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0:
        nan = float("nan")
        return Estimate(nan, nan, nan, 0)
    value, low, high = stratified_bootstrap_iqm(
        values[:, None], reps=reps, confidence=confidence, seed=seed
    )
    return Estimate(float(value), float(low), float(high), int(values.size))
