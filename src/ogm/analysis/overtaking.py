"""When does an online agent overtake a baseline? The alignment tax on one clock.

The essay "Safety considerations for online generative modeling" asks whether OGM agents
start to decisively outperform the other agents, and how long that takes. Both agents are
read on the same clock (environment steps of training) and the same evaluation protocol
(held-out evaluation episodes, greedy or sampled). For an OGM variant A and a baseline B of
the same setting (environment point), with A's mean over seeds ``a(t)`` and B's ``b(t)`` at
every evaluation step t of A (each run's latest evaluation at or before t):

    overtaking step = the first t from which a(t) > b(t) at every later evaluation step,
                      up to the budget both reached (B's final value for a baseline that
                      does not train: a reference line)

and "not by T" when a is not above b at the last of them, T. Its 95% interval comes from a
bootstrap that resamples the seeds of A and of B independently; a resample that never
overtakes counts as beyond T, so an upper end past T reads "not by T". Like every interval
in ogm it needs ``MIN_SEEDS_FOR_CI`` runs on each side; with fewer there is none.

Normalised scores: a dataset recorded by ``ogm data collect-rl`` stores D4RL's reference
returns (``ref_min_score`` / ``ref_max_score``; D4RL's own for Hopper, HalfCheetah and
Walker2d), and scores are ``100 (R - min) / (max - min)``, comparable with published tables.
The overtaking step is the same in either unit.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ogm.analysis.findings import EvalPoint, Variant
from ogm.analysis.runs import dataset_of, locate_dataset
from ogm.analysis.stats import MIN_SEEDS_FOR_CI

BOOTSTRAP = 2000
ONLINE_KIND = "odt"


@dataclass(frozen=True)
class Overtaking:
    """When ``variant`` overtakes ``baseline`` in ``mode`` (module doc); steps are env steps."""

    setting: str
    variant: str
    baseline: str
    mode: str
    step: float | None  # None: not by ``budget``
    low: float | None  # 2.5th percentile of the bootstrap (None: beyond the budget)
    high: float | None  # 97.5th percentile (None: beyond the budget)
    budget: float
    seeds: tuple[int, int]  # runs of the variant and of the baseline
    interval: bool  # False: fewer than MIN_SEEDS_FOR_CI runs a side, low and high are None


def setting_of(variant: str) -> str:
    """The setting (environment point) of a variant folder: ``""`` without a sweep."""
    return variant.rpartition("/")[0]


def values_at(points: Sequence[EvalPoint], steps: np.ndarray) -> np.ndarray:
    """A run's evaluation performance at ``steps``: its latest evaluation at or before each
    (NaN before its first)."""
    at = np.array([p.env_steps for p in points])
    values = np.array([p.performance for p in points])
    index = np.searchsorted(at, steps, side="right") - 1
    return np.where(index >= 0, values[np.clip(index, 0, None)], np.nan)


def first_step_above(a: np.ndarray, b: np.ndarray, steps: np.ndarray) -> float | None:
    """The first of ``steps`` from which the seed mean of ``a`` (runs x steps) stays above
    that of ``b``; None when it is not above at the last step."""
    with warnings.catch_warnings():  # a step before all of a side's first evaluations
        warnings.simplefilter("ignore", RuntimeWarning)
        above = np.nanmean(a, axis=0) > np.nanmean(b, axis=0)  # NaN: not above
    if not above[-1]:
        return None
    below = np.flatnonzero(~above)
    return float(steps[below[-1] + 1 if below.size else 0])


def overtaking(
    variant: Variant, baseline: Variant, mode: str, rng: np.random.Generator
) -> Overtaking | None:
    """When ``variant`` overtakes ``baseline`` in ``mode``; None when either lacks evaluations."""
    runs_a = [m.evals[mode] for m in variant.runs if m.evals.get(mode)]
    runs_b = [m.evals[mode] for m in baseline.runs if m.evals.get(mode)]
    if not runs_a or not runs_b:
        return None
    budget = min(p[-1].env_steps for p in runs_a)
    if baseline.trains:
        budget = min(budget, min(p[-1].env_steps for p in runs_b))
    steps = np.unique([p.env_steps for points in runs_a for p in points])
    steps = steps[steps <= budget]
    a = np.stack([values_at(points, steps) for points in runs_a])
    if baseline.trains:
        b = np.stack([values_at(points, steps) for points in runs_b])
    else:  # a reference line: its final evaluation
        b = np.array([[points[-1].performance] * steps.size for points in runs_b])
    interval = min(len(a), len(b)) >= MIN_SEEDS_FOR_CI
    low = high = math.inf
    if interval:
        draws = []
        for _ in range(BOOTSTRAP):
            ia = rng.integers(len(a), size=len(a))
            ib = rng.integers(len(b), size=len(b))
            step = first_step_above(a[ia], b[ib], steps)
            draws.append(math.inf if step is None else step)
        low, high = (float(q) for q in np.percentile(draws, [2.5, 97.5], method="inverted_cdf"))
    return Overtaking(
        setting=setting_of(variant.name),
        variant=variant.name,
        baseline=baseline.name,
        mode=mode,
        step=first_step_above(a, b, steps),
        low=None if math.isinf(low) else low,
        high=None if math.isinf(high) else high,
        budget=float(budget),
        seeds=(len(a), len(b)),
        interval=interval,
    )


def is_online(variant: Variant) -> bool:
    """An OGM variant: a Decision Transformer finetuned online on its own episodes."""
    return variant.trains and all(m.run.kind == ONLINE_KIND for m in variant.runs)


def overtakings(variants: Sequence[Variant], modes: Sequence[str]) -> list[Overtaking]:
    """Every OGM variant against every other variant of its setting, in each mode."""
    rng = np.random.default_rng(0)
    found = []
    for variant in variants:
        if not is_online(variant):
            continue
        for baseline in variants:
            if baseline is variant or setting_of(baseline.name) != setting_of(variant.name):
                continue
            if is_online(baseline):
                continue
            for mode in modes:
                if (result := overtaking(variant, baseline, mode, rng)) is not None:
                    found.append(result)
    return found


def reference_scores(variant: Variant) -> tuple[float, float] | None:
    """The normalisation constants (min, max) of the dataset the variant learned from, when
    its runs name one dataset that records them (collect-rl datasets do)."""
    from ogm.data.collect_rl import reference_scores as dataset_scores
    from ogm.data.dataset import DatasetError

    found = set()
    for m in variant.runs:
        dataset = dataset_of(m.run)
        path = locate_dataset(dataset) if dataset is not None else None
        if path is None:
            return None
        try:
            found.add(dataset_scores(path))
        except (DatasetError, ValueError):
            return None
    return found.pop() if len(found) == 1 else None


__all__ = [
    "Overtaking",
    "first_step_above",
    "is_online",
    "overtaking",
    "overtakings",
    "reference_scores",
    "setting_of",
    "values_at",
]
