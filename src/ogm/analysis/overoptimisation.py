"""Reward-model over-optimisation: gold reward against the distance from the initial policy.

Gao, Schulman & Hilton (2022), "Scaling Laws for Reward Model Overoptimization", measure
the distance of a policy pi from its initial policy pi_0 as ``d = sqrt(KL(pi || pi_0))``
and fit the *gain* in gold reward over pi_0 (``R(0) = 0``) with two closed forms:

- best-of-n: ``R_bon(d) = d (alpha - beta d)``, peak at ``d* = alpha / (2 beta)`` with
  gain ``alpha^2 / (4 beta)``;
- RL: ``R_rl(d) = d (alpha - beta log d)``, peak where ``alpha - beta (log d + 1) = 0``:
  ``d* = exp(alpha / beta - 1)`` with gain ``beta d*``. (Their footnote: the form has an
  infinite slope at 0 and likely does not hold near the origin.)

Both are linear in ``(alpha, beta)``, so :func:`fit_gao` fits them by least squares
through the origin, with percentile-bootstrap intervals that resample whole runs (seeds),
and the share of variance explained.

:func:`overoptimisation` reads one run's evaluation curve as an emergence event, on
whatever clock it is given (environment steps, or ``d``): the point where the gold reward
peaks, the *onset* (the first later point where the gold has fallen from its peak by a
set share of its gain over the start while the proxy is still at or above its value at the
gold peak: the proxy says "better" while the gold says "worse"), the *width* (onset minus
peak) and how far past the peak the run went.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

Form = Literal["bon", "rl"]
FORMS: tuple[Form, ...] = ("bon", "rl")


def _columns(form: Form, d: np.ndarray) -> np.ndarray:
    """The two regressors whose weights are ``alpha`` and ``beta``: ``gain = X @ (a, b)``."""
    if form == "bon":
        return np.stack([d, -(d**2)], axis=-1)
    if form == "rl":
        with np.errstate(divide="ignore", invalid="ignore"):
            d_log_d = np.where(d > 0, d * np.log(np.where(d > 0, d, 1.0)), 0.0)  # -> 0 at 0
        return np.stack([d, -d_log_d], axis=-1)
    raise ValueError(f"form must be one of {FORMS}, got {form!r}")


def gao_gain(form: Form, d: np.ndarray | float, alpha: float, beta: float) -> np.ndarray:
    """The gold-reward gain the closed form ``form`` predicts at distance ``d``."""
    return _columns(form, np.asarray(d, float)) @ np.array([alpha, beta])


def gao_peak(form: Form, alpha: float, beta: float) -> tuple[float, float]:
    """``(d*, gain at d*)`` of a fitted form; ``(inf, inf)`` when it never turns down
    (``beta <= 0``), ``(0, 0)`` when it never rises (``alpha <= 0`` for best-of-n)."""
    if beta <= 0:
        return math.inf, math.inf
    if form == "bon":
        if alpha <= 0:
            return 0.0, 0.0
        return alpha / (2 * beta), alpha**2 / (4 * beta)
    d_star = math.exp(alpha / beta - 1)
    return d_star, beta * d_star


@dataclass(frozen=True)
class GaoFit:
    """A closed form fitted to (d, gain) points, with percentile-bootstrap intervals
    (``None`` without resampling: fewer than two runs)."""

    form: Form
    alpha: float
    beta: float
    r2: float  # share of the gains' variance that the form explains (1 - SS_res / SS_tot)
    rmse: float
    points: int
    runs: int
    alpha_ci: tuple[float, float] | None
    beta_ci: tuple[float, float] | None
    d_peak_ci: tuple[float, float] | None

    @property
    def d_peak(self) -> float:
        return gao_peak(self.form, self.alpha, self.beta)[0]

    @property
    def gain_peak(self) -> float:
        return gao_peak(self.form, self.alpha, self.beta)[1]

    def predict(self, d: np.ndarray | float) -> np.ndarray:
        return gao_gain(self.form, d, self.alpha, self.beta)


def _least_squares(form: Form, d: np.ndarray, gain: np.ndarray) -> np.ndarray:
    X = _columns(form, d)
    coef, *_ = np.linalg.lstsq(X, gain, rcond=None)
    return coef


def fit_gao(
    form: Form,
    d: np.ndarray,
    gain: np.ndarray,
    runs: np.ndarray | None = None,
    *,
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> GaoFit:
    """Fit ``form`` to gains over the initial policy at distances ``d`` (one point per
    evaluation, all runs together); ``runs`` labels each point's run, and the bootstrap
    resamples runs with replacement (points of one run move together)."""
    d, gain = np.asarray(d, float), np.asarray(gain, float)
    if d.shape != gain.shape or d.ndim != 1:
        raise ValueError(
            f"d and gain must be 1-D and of one length, got {d.shape} and {gain.shape}"
        )
    if len(d) < 2:
        raise ValueError(f"a fit needs at least 2 points, got {len(d)}")
    if np.any(d < 0) or not np.all(np.isfinite(d)) or not np.all(np.isfinite(gain)):
        raise ValueError("d must be finite and >= 0 and gains finite")
    runs = np.zeros(len(d), int) if runs is None else np.asarray(runs)
    alpha, beta = _least_squares(form, d, gain)
    residual = gain - gao_gain(form, d, alpha, beta)
    total = float(np.sum((gain - gain.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual**2)) / total if total > 0 else math.nan
    labels = np.unique(runs)
    intervals: list[tuple[float, float] | None] = [None, None, None]
    if len(labels) >= 2 and resamples > 0:
        rng = np.random.default_rng(seed)
        members = [np.flatnonzero(runs == label) for label in labels]
        draws = []
        for _ in range(resamples):
            chosen = np.concatenate(
                [members[i] for i in rng.integers(len(labels), size=len(labels))]
            )
            a, b = _least_squares(form, d[chosen], gain[chosen])
            draws.append((a, b, gao_peak(form, a, b)[0]))
        tail = 100 * (1 - confidence) / 2
        low, high = np.percentile(np.array(draws), [tail, 100 - tail], axis=0)
        intervals = [(float(lo), float(hi)) for lo, hi in zip(low, high, strict=True)]
    return GaoFit(
        form=form,
        alpha=float(alpha),
        beta=float(beta),
        r2=r2,
        rmse=float(np.sqrt(np.mean(residual**2))),
        points=len(d),
        runs=len(labels),
        alpha_ci=intervals[0],
        beta_ci=intervals[1],
        d_peak_ci=intervals[2],
    )


@dataclass(frozen=True)
class Overoptimisation:
    """One run's over-optimisation, on the clock its curve was given in.

    ``onset`` and ``width`` are None when the gold never fell that far while the proxy held
    (censored at ``end``: "not by end").
    """

    peak: float  # clock at the gold reward's maximum
    gold_gain_at_peak: float  # gold at the peak minus gold at the start
    onset: float | None
    width: float | None  # onset - peak
    end: float  # the last point's clock
    past_peak: float  # end - peak: how far the run went beyond its best gold
    gold_drop: float  # gold at the peak minus gold at the end
    proxy_rise: float  # proxy at the end minus proxy at the peak


def overoptimisation(
    clock: np.ndarray, proxy: np.ndarray, gold: np.ndarray, *, drop: float = 0.1
) -> Overoptimisation:
    """Over-optimisation along one run's evaluation points (sorted by ``clock``).

    The onset is the first point after the gold's peak at which the gold has fallen by at
    least ``drop`` times the peak's gain over the first point (or by ``drop`` in absolute
    terms when there was no gain), while the proxy is at or above its value at the peak.
    """
    clock, proxy, gold = (np.asarray(x, float) for x in (clock, proxy, gold))
    if not (clock.shape == proxy.shape == gold.shape) or clock.ndim != 1 or len(clock) == 0:
        raise ValueError("clock, proxy and gold must be 1-D arrays of one non-zero length")
    if np.any(np.diff(clock) < 0):
        raise ValueError("clock must be sorted")
    top = int(np.argmax(gold))
    gain = float(gold[top] - gold[0])
    threshold = drop * gain if gain > 0 else drop
    onset = None
    for i in range(top + 1, len(clock)):
        if gold[top] - gold[i] >= threshold and proxy[i] >= proxy[top]:
            onset = float(clock[i])
            break
    return Overoptimisation(
        peak=float(clock[top]),
        gold_gain_at_peak=gain,
        onset=onset,
        width=None if onset is None else onset - float(clock[top]),
        end=float(clock[-1]),
        past_peak=float(clock[-1] - clock[top]),
        gold_drop=float(gold[top] - gold[-1]),
        proxy_rise=float(proxy[-1] - proxy[top]),
    )


__all__ = [
    "FORMS",
    "GaoFit",
    "Overoptimisation",
    "fit_gao",
    "gao_gain",
    "gao_peak",
    "overoptimisation",
]
