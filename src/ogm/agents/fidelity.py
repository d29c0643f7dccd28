"""Conditioning fidelity: does the agent get the return it is asked for?

A return-conditioned agent is only a *generative model of behaviour* if asking for a
return changes what it does: asked for little it should achieve little, asked for much,
much, within what the demonstrations showed. This module measures that, as data a
report can plot: achieved return against target return over the demonstrations' range.

- :func:`fidelity_targets` picks the targets: evenly spaced over ``[min, max]`` of the
  demonstrations' episode returns (beyond them the data says nothing about the answer);
- :func:`measure_fidelity` asks the model for each target (``fixed:<target>``) under the
  evaluation protocol of :mod:`ogm.train.evaluation` (both modes, ``greedy`` and
  ``sampled``; episode ``k`` starts from the same held-out seed for every target, so the
  targets are compared on common starts);
- :func:`fidelity_stats` summarises each mode: ``slope`` and ``intercept`` of the least
  squares line of achieved on target (slope 1: every extra unit asked for is delivered),
  ``spearman`` (rank correlation: a higher target never gives less), ``mae`` (mean
  absolute error between achieved and target return);
- :func:`write_fidelity` writes ``<run_dir>/fidelity.csv`` (one row per episode:
  ``target, mode, episode, return, performance``) and returns the summary for run.json.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from ogm.agents.actor import ConditionedDT
from ogm.agents.conditioning import Fixed
from ogm.models.decision_transformer import DecisionTransformer
from ogm.train.config import CommonConfig
from ogm.train.evaluation import MODES, evaluate

COLUMNS = ("target", "mode", "episode", "return", "performance")
Row = dict[str, float | int | str]
Stats = dict[str, float | None]


@dataclass
class Fidelity:
    """Per-episode rows (keys :data:`COLUMNS`) and per-mode summary statistics."""

    rows: list[Row]
    summary: dict[str, Stats]


def fidelity_targets(returns: Sequence[float], n: int = 9) -> np.ndarray:
    """``n`` targets evenly spaced over ``[min, max]`` of ``returns`` (one if all equal)."""
    values = np.asarray(returns, dtype=np.float64)
    if values.size == 0 or not np.isfinite(values).all():
        raise ValueError("fidelity targets need at least one return, all finite")
    if n < 1:
        raise ValueError(f"need at least one target, got n={n}")
    return np.unique(np.linspace(values.min(), values.max(), n))


def fidelity_stats(targets: Sequence[float], achieved: Sequence[float]) -> Stats:
    """Slope, intercept, Spearman correlation, mean absolute error of achieved on target.

    A statistic that is undefined (one distinct target; constant achieved returns for
    Spearman) is None, so that the summary stays valid JSON.
    """
    t, a = np.asarray(targets, dtype=np.float64), np.asarray(achieved, dtype=np.float64)
    stats: Stats = {"slope": None, "intercept": None, "spearman": None}
    if np.ptp(t) > 0:
        slope, intercept = np.polyfit(t, a, 1)
        stats.update(slope=float(slope), intercept=float(intercept))
        if np.ptp(a) > 0:
            stats["spearman"] = float(spearmanr(t, a).statistic)
    stats["mae"] = float(np.abs(a - t).mean())
    return stats


def measure_fidelity(
    model: DecisionTransformer,
    config: CommonConfig,
    targets: Sequence[float],
    *,
    episodes_per_target: int,
    context_len: int | None = None,
) -> Fidelity:
    """Ask ``model`` for every target in ``config``'s environment, ``episodes_per_target``
    episodes in each mode (played in waves of ``config.num_envs`` copies)."""
    rows: list[Row] = []
    for target in targets:
        agent = ConditionedDT(model, Fixed(float(target)), context_len=context_len)
        for mode, results in evaluate(agent, config, episodes=episodes_per_target).items():
            rows += [
                {
                    "target": float(target),
                    "mode": mode,
                    "episode": k,
                    "return": float(r.trajectory.ret),
                    "performance": float(r.trajectory.performance),
                }
                for k, r in enumerate(results)
            ]
    summary = {}
    for mode in MODES:
        mine = [row for row in rows if row["mode"] == mode]
        summary[mode] = fidelity_stats([r["target"] for r in mine], [r["return"] for r in mine])
    return Fidelity(rows, summary)


def write_fidelity(run_dir: Path | str, result: Fidelity) -> dict[str, Stats]:
    """Write ``<run_dir>/fidelity.csv``; returns the summary (for run.json)."""
    with (Path(run_dir) / "fidelity.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(result.rows)
    return result.summary
