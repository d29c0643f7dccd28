"""Statistics across seeds: interquartile mean with stratified-bootstrap confidence intervals,
and the Kaplan-Meier estimate for times that some runs never reached.

Follows Agarwal et al. (2021, "Deep RL at the Edge of the Statistical Precipice"): the
interquartile mean (IQM) is the mean of the middle 50% of the runs, robust to an outlier
seed yet less noisy than the median; its confidence interval comes from a percentile
bootstrap that resamples runs *within* each task (stratified), so that every task keeps its
number of runs in every resample. Plain numpy/scipy; seeded, so the same inputs give the same
interval. With fewer than ``MIN_SEEDS_FOR_CI`` runs a percentile bootstrap interval is little
more than [min, max]; the report then shows the per-seed values instead.

A time that a run did not reach by its budget is *censored* there: it is only known to be
later. ``kaplan_meier`` estimates, from reached and censored runs together, the share of runs
that reach it by each time, without treating a censored run as if it had reached it at its
budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

IQM_TRIM = 0.25  # share of runs cut from each end
MIN_SEEDS_FOR_CI = 5  # fewer runs: show per-seed values, never a "95% CI"


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


@dataclass(frozen=True)
class Reached:
    """Kaplan-Meier estimate of the share of runs that reached a time, as a step function.

    ``share[j]`` is the estimated share that reached it by ``times[j]`` (and until the next
    time); before ``times[0]`` it is 0. ``censored`` holds the censoring times of the runs
    that did not reach it (their budgets), where the estimate stops being informed by them.
    """

    times: np.ndarray
    share: np.ndarray
    censored: np.ndarray

    def at(self, t: np.ndarray | float) -> np.ndarray:
        """The estimated share that reached it by each time in ``t``."""
        padded = np.concatenate([[0.0], self.share])
        return padded[np.searchsorted(self.times, np.asarray(t, dtype=np.float64), side="right")]

    def median(self) -> float | None:
        """The first time by which half of the runs are estimated to have reached it."""
        hits = np.flatnonzero(self.share >= 0.5 - 1e-12)
        return float(self.times[hits[0]]) if hits.size else None


def kaplan_meier(times: np.ndarray, reached: np.ndarray) -> Reached:
    """Kaplan-Meier estimate from one ``(time, reached)`` pair per run.

    ``times`` holds each run's time when ``reached`` is set, else the time it was censored at
    (a run not reached by its budget is still at risk up to and including that budget).
    """
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    reached = np.asarray(reached, dtype=bool).reshape(-1)
    if times.shape != reached.shape:
        raise ValueError(f"times has shape {times.shape}, reached {reached.shape}")
    event_times = np.unique(times[reached])
    at_risk = (times[None, :] >= event_times[:, None]).sum(axis=1)
    events = ((times[None, :] == event_times[:, None]) & reached[None, :]).sum(axis=1)
    share = 1.0 - np.cumprod(1.0 - events / at_risk)
    return Reached(event_times, share, np.sort(times[~reached]))
