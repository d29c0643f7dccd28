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
set share of its gain over the start, and by more than the two points' evaluation noise,
while the proxy is still at or above its value at the gold peak: the proxy says "better"
while the gold says "worse"), the *width* (onset minus peak) and how far past the peak the
run went.

The second half reads runs back (``ogm run rm-overoptimisation``, or any runs directory
whose agents log ``kl_to_init``). Per *world* (a point of the experiment's environment
sweep, e.g. the proxy's training-set size ``pairs=N``; the whole directory when there is no
sweep) and per variant: each run's **sampled** evaluation points as ``(d, proxy, gold)``,
with ``d = sqrt(mean kl_to_init)`` over the point's episodes (sampled episodes: the KL is a
property of the distribution the agent samples from, and best-of-n's analytic KL is that of
its sampled selection). The gains are over the initial policy pi_0 *as the agent conditions
it*:

- best-of-n: the mean of all its candidate episodes (``rounds.csv``), which are pi_0's;
- a run whose first evaluation point has ``d = 0`` (OGM's round 0): that point;
- KL-PPO, which is first evaluated after training starts: the candidates of the best-of-n
  runs that sample the same pi_0 (same ``init``, same ``target``), when the directory has
  them; otherwise its gains are unknown and it is left out of the fits.

The best-of-n variants of a world together make one curve (a point per ``n`` and seed), fitted
with the best-of-n form; each trained variant (OGM, KL-PPO) is fitted with the RL form on its
points along training. The bootstrap resamples seeds.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ogm.analysis.findings import Table, Variant, steps_text
from ogm.analysis.runs import SAMPLED, Run, read_table
from ogm.analysis.stats import MIN_SEEDS_FOR_CI, iqm_ci

Form = Literal["bon", "rl"]
_LOG_FLOAT_MAX = math.log(sys.float_info.max)
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
    log_d_star = alpha / beta - 1
    if log_d_star > _LOG_FLOAT_MAX:  # a turn too far away for a float: it never turns down
        return math.inf, math.inf
    d_star = math.exp(log_d_star)
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
        # no interpolation between draws: d* is infinite where a resample never turns down
        low, high = np.percentile(
            np.array(draws), [tail, 100 - tail], axis=0, method="inverted_cdf"
        )
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
    clock: np.ndarray,
    proxy: np.ndarray,
    gold: np.ndarray,
    *,
    drop: float = 0.1,
    gold_se: np.ndarray | None = None,
    z: float = 2.0,
) -> Overoptimisation:
    """Over-optimisation along one run's evaluation points (sorted by ``clock``).

    The onset is the first point after the gold's peak at which the gold has fallen by at
    least ``drop`` times the peak's gain over the first point and, given the standard error
    of each point's gold mean (``gold_se``), by at least ``z`` standard errors of the
    difference between the peak's mean and this point's, while the proxy is at or above
    its value at the peak. Without a gain and without standard errors, the fall must be
    ``drop`` in absolute terms.
    """
    clock, proxy, gold = (np.asarray(x, float) for x in (clock, proxy, gold))
    if not (clock.shape == proxy.shape == gold.shape) or clock.ndim != 1 or len(clock) == 0:
        raise ValueError("clock, proxy and gold must be 1-D arrays of one non-zero length")
    if np.any(np.diff(clock) < 0):
        raise ValueError("clock must be sorted")
    se = np.zeros_like(gold) if gold_se is None else np.asarray(gold_se, float)
    if se.shape != gold.shape or np.any(~(se >= 0)):
        raise ValueError("gold_se must be one standard error >= 0 per point")
    top = int(np.argmax(gold))
    gain = float(gold[top] - gold[0])
    noise = z * np.sqrt(se[top] ** 2 + se**2)  # the smallest fall the evaluation can tell
    threshold = np.maximum(drop * max(gain, 0.0), noise)
    threshold[threshold == 0] = drop
    onset = None
    for i in range(top + 1, len(clock)):
        if gold[top] - gold[i] >= threshold[i] and proxy[i] >= proxy[top]:
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


# ----------------------------------------------------------------------------- runs

BEST_OF_N, TRAINED = "best_of_n", ("odt", "kl_ppo")  # agent kinds: the bon form, the rl form
FORM_OF_KIND: dict[str, Form] = {BEST_OF_N: "bon", **{kind: "rl" for kind in TRAINED}}


@dataclass(frozen=True)
class KLPoint:
    """One sampled evaluation point: its clock, ``d = sqrt(mean KL(pi || pi_0))``, the
    means of the proxy (observed return) and the gold (hidden performance), and the standard
    error of the gold's mean over the point's episodes."""

    env_steps: float
    d: float
    proxy: float
    gold: float
    gold_se: float = 0.0


@dataclass(frozen=True)
class KLCurve:
    """One run's evaluation points against ``d``, and pi_0's level as the run conditions it
    (``start``: ``(proxy, gold)``, None when unknown)."""

    run: Run
    points: list[KLPoint]
    start: tuple[float, float] | None

    @property
    def gains(self) -> list[KLPoint]:
        """The points as gains over ``start`` (empty when it is unknown)."""
        if self.start is None:
            return []
        proxy, gold = self.start
        return [
            dataclasses.replace(p, proxy=p.proxy - proxy, gold=p.gold - gold) for p in self.points
        ]


def kl_points(run: Run) -> list[KLPoint]:
    """The run's sampled evaluation points whose episodes all logged ``kl_to_init``."""
    rows = run.rows("eval", SAMPLED)
    if not rows or "kl_to_init" not in rows:
        return []
    points = []
    for r in np.unique(rows["round"]):
        at = rows["round"] == r
        kl, gold = rows["kl_to_init"][at], rows["performance"][at]
        if len(kl) and np.all(np.isfinite(kl)):
            points.append(
                KLPoint(
                    float(rows["env_steps"][at].max()),
                    math.sqrt(max(float(kl.mean()), 0.0)),
                    float(rows["return"][at].mean()),
                    float(gold.mean()),
                    float(gold.std(ddof=1) / math.sqrt(len(gold))) if len(gold) > 1 else 0.0,
                )
            )
    return sorted(points, key=lambda p: p.env_steps)


def candidate_level(run: Run) -> tuple[float, float] | None:
    """A best-of-n run's candidates' mean ``(proxy, gold)``: pi_0's own level."""
    file = run.path / "rounds.csv"
    rounds = read_table(file) if file.is_file() else {}
    if "candidate_return_mean" not in rounds:
        return None
    return float(rounds["candidate_return_mean"][-1]), float(
        rounds["candidate_performance_mean"][-1]
    )


def _prior_key(run: Run) -> tuple[str, str] | None:
    """Which pi_0 a KL-PPO or best-of-n run samples: its ``init`` and conditioning."""
    init = run.config.get("init")
    return None if init is None else (str(Path(init).resolve()), str(run.config.get("target")))


def kl_curves(variants: Sequence[Variant]) -> dict[str, list[KLCurve]]:
    """Per variant whose agent logs ``kl_to_init`` (best-of-n, OGM, KL-PPO), one curve per
    run, each with pi_0's level as the module doc says."""
    levels: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for variant in variants:
        for m in variant.runs:
            key = _prior_key(m.run)
            level = candidate_level(m.run) if m.run.kind == BEST_OF_N else None
            if key is not None and level is not None:
                levels.setdefault(key, []).append(level)
    curves: dict[str, list[KLCurve]] = {}
    for variant in variants:
        found = []
        for m in variant.runs:
            if m.run.kind not in FORM_OF_KIND or not (points := kl_points(m.run)):
                continue
            if m.run.kind == BEST_OF_N:
                start = candidate_level(m.run)
            elif points[0].d == 0.0:
                start = (points[0].proxy, points[0].gold)
            else:
                same = levels.get(_prior_key(m.run) or ("", ""), [])
                start = tuple(np.mean(same, axis=0)) if same else None
            found.append(KLCurve(m.run, points, start))
        if found:
            curves[variant.name] = found
    return curves


@dataclass(frozen=True)
class FamilyFit:
    """The gold-gain fit of one world's best-of-n family or of one trained variant."""

    world: str
    name: str  # the variant, or "best-of-n" for the family
    fit: GaoFit | None  # None: fewer than two points with known gains
    d_reached: float  # the largest d of any of its points
    reason: str = ""  # why there is no fit
    d_first: float = 0.0  # the smallest d > 0 of its points: below it the fit extrapolates
    start_gold: float = math.nan  # pi_0's gold as the agent conditions it: the gains' zero


def _fit(form: Form, curves: Sequence[KLCurve], seed: int) -> GaoFit | None:
    points = [(c.run.seed, p) for c in curves for p in c.gains]
    if len(points) < 2 or len({p.d for _, p in points}) < 2:
        return None
    d = np.array([p.d for _, p in points])
    gain = np.array([p.gold for _, p in points])
    return fit_gao(form, d, gain, np.array([s for s, _ in points]), resamples=1000, seed=seed)


def _first_d(curves: Sequence[KLCurve]) -> float:
    return min((p.d for c in curves for p in c.points if p.d > 0), default=0.0)


def _start_gold(curves: Sequence[KLCurve]) -> float:
    levels = [c.start[1] for c in curves if c.start is not None]
    return float(np.mean(levels)) if levels else math.nan


def family_fits(
    world: str, curves: dict[str, list[KLCurve]], labels: dict[str, str]
) -> list[FamilyFit]:
    """The fits of one world: its best-of-n variants together (the best-of-n form), then each
    trained variant (the RL form), in the order of ``curves``."""
    bon = [c for curves_ in curves.values() for c in curves_ if c.run.kind == BEST_OF_N]
    out = []
    if bon:
        out.append(
            FamilyFit(
                world,
                "best-of-n",
                _fit("bon", bon, 0),
                max(p.d for c in bon for p in c.points),
                d_first=_first_d(bon),
                start_gold=_start_gold(bon),
            )
        )
    for name, runs in curves.items():
        if runs[0].run.kind == BEST_OF_N:
            continue
        known = [c for c in runs if c.start is not None]
        reason = "" if known else "pi_0's level unknown (no best-of-n runs of the same pi_0)"
        fit = _fit("rl", known, 0) if known else None
        if known and fit is None:
            reason = "fewer than two distances"
        d_reached = max(p.d for c in runs for p in c.points)
        label = labels.get(name, name)
        out.append(
            FamilyFit(world, label, fit, d_reached, reason, _first_d(runs), _start_gold(known))
        )
    return out


MEANS = ("d", "proxy", "gold")  # what mean_curve averages (gold_se has no mean over runs)


def mean_curve(curves: Sequence[KLCurve]) -> list[KLPoint]:
    """The means over runs of each evaluation point that every run has (by environment
    steps), over the runs whose pi_0 level is known (those the fits use)."""
    known = [c.points for c in curves if c.start is not None]
    if not known:
        return []
    shared = set.intersection(*({p.env_steps for p in points} for points in known))
    means = []
    for t in sorted(shared):
        at = [next(p for p in points if p.env_steps == t) for points in known]
        means.append(KLPoint(t, *(float(np.mean([getattr(p, f) for p in at])) for f in MEANS)))
    return means


def level_row(
    world: str,
    name: str,
    path: Sequence[tuple[str, KLPoint]],
    end: Sequence[KLCurve],
    seed: int = 0,
) -> list[str]:
    """One row of the levels table: where an agent takes the gold from pi_0's level.

    ``path`` is the agent's mean over seeds at each stage, in order, with a label for where
    it is (a trained variant's evaluation points; best-of-n's ``n``); ``end`` the runs at its
    last stage, whose last points give the gold at the end and each run's change from its own
    pi_0 (IQM over runs with a 95% stratified-bootstrap interval; with fewer than
    ``MIN_SEEDS_FOR_CI`` runs, their range, named so).
    """
    known = [c for c in end if c.start is not None]
    if not path or not known:
        raise ValueError(f"{name}: no points with a known pi_0 level")
    where, best = max(path, key=lambda item: item[1].gold)
    finals = np.array([c.points[-1].gold for c in known])
    changes = finals - np.array([c.start[1] for c in known])

    def estimate(values: np.ndarray, sign: str = "") -> str:
        e = iqm_ci(values, seed=seed)
        if len(values) < MIN_SEEDS_FOR_CI:  # too few runs for an interval: say their range
            return (
                f"{e.value:{sign}.3f} (range {values.min():{sign}.3f} to {values.max():{sign}.3f})"
            )
        return f"{e.value:{sign}.3f} [{e.low:{sign}.3f}, {e.high:{sign}.3f}]"

    return [
        world,
        name,
        f"{np.mean([c.start[1] for c in known]):.3f}",
        f"{best.gold:.3f}",
        where,
        f"{best.d:.2f}",
        estimate(finals),
        estimate(changes, "+"),
        f"{path[-1][1].d:.2f}",
        f"{len(known)}",
    ]


LEVEL_HEADER = [
    "world",
    "agent",
    "pi_0's gold",
    "best gold on the way",
    "where",
    "d there",
    "gold at the end, IQM [95% CI]",
    "change from pi_0, IQM [95% CI]",
    "d at the end",
    "seeds",
]


def run_events(
    curves: Sequence[KLCurve], drop: float = 0.1
) -> list[tuple[KLCurve, Overoptimisation]]:
    """Each trained run's over-optimisation on the environment-step clock, its curve starting
    at pi_0's level (step 0) when the run's own first point is later."""
    events = []
    for curve in curves:
        points = curve.points
        if curve.start is not None and points[0].env_steps > 0:
            points = [KLPoint(0.0, 0.0, *curve.start), *points]
        if len(points) < 2:
            continue
        clock = np.array([p.env_steps for p in points])
        proxy = np.array([p.proxy for p in points])
        gold = np.array([p.gold for p in points])
        se = np.array([p.gold_se for p in points])
        events.append((curve, overoptimisation(clock, proxy, gold, drop=drop, gold_se=se)))
    return events


def _number(x: float, digits: int = 2) -> str:
    """``x`` to ``digits`` decimals; from 1,000 on in powers of ten (an RL-form peak far
    beyond the data can be astronomically far)."""
    if math.isinf(x):
        return "∞"
    return f"{x:.{digits}e}" if abs(x) >= 1000 else f"{x:.{digits}f}"


def _interval(value: float, ci: tuple[float, float] | None, digits: int = 2) -> str:
    text = _number(value, digits)
    return text if ci is None else f"{text} [{_number(ci[0], digits)}, {_number(ci[1], digits)}]"


def _gold(f: FamilyFit) -> str:
    return "" if math.isnan(f.start_gold) else f"{f.start_gold:.3f}"


def _peak_gold(f: FamilyFit, gain: float) -> str:
    """The gold at the fitted peak (``gain`` over pi_0), with that gain (the gain alone when
    pi_0's gold is unknown); only where the peak lies within the d measured, since the form's
    value anywhere else is an extrapolation (a near-flat RL fit puts d* at 10^6)."""
    d_peak = f.fit.d_peak
    if not d_peak <= f.d_reached:
        return "d* beyond the d measured"
    if d_peak < f.d_first:
        return "d* below the d measured"
    return f"{gain:.3f}" if math.isnan(f.start_gold) else f"{f.start_gold + gain:.3f} ({gain:+.3f})"


def _measured(f: FamilyFit) -> str:
    return f"{f.d_first:.2f} to {f.d_reached:.2f}"


def fits_table(fits: Sequence[FamilyFit]) -> Table:
    """The fitted Gao coefficients per world and family (95% bootstrap intervals over seeds)."""
    rows = []
    for f in fits:
        g = f.fit
        if g is None:
            rows.append(
                [f.world, f.name, _gold(f), "", "", "", "", "", "", "", _measured(f), f.reason]
            )
            continue
        rows.append(
            [
                f.world,
                f.name,
                _gold(f),
                "best-of-n" if g.form == "bon" else "RL",
                f"{g.runs} / {g.points}",
                _interval(g.alpha, g.alpha_ci),
                _interval(g.beta, g.beta_ci),
                f"{g.r2:.2f}",
                _interval(g.d_peak, g.d_peak_ci),
                _peak_gold(f, g.gain_peak),
                _measured(f),
                "",
            ]
        )
    header = [
        "world",
        "agent",
        "pi_0's gold",
        "form",
        "seeds / points",
        "alpha [95% CI]",
        "beta [95% CI]",
        "R²",
        "peak d* [95% CI]",
        "gold at d* (gain)",
        "d measured (> 0)",
        "no fit because",
    ]
    return Table(header, rows, keys=2)


def event_row(
    world: str, name: str, events: Sequence[tuple[KLCurve, Overoptimisation]]
) -> list[str]:
    """One row of the events table: a trained variant's over-optimisation across its runs."""
    found = [e for _, e in events if e.onset is not None]

    def median(values: Sequence[float], steps: bool = True) -> str:
        if not values:
            return "–"
        value = float(np.median(values))
        return steps_text(value) if steps else f"{value:.3f}"

    peaks_d = [
        next(p.d for p in c.points if p.env_steps == e.peak) if e.peak > 0 else 0.0
        for c, e in events
    ]
    return [
        world,
        name,
        f"{len(found)} / {len(events)}",
        median([e.onset for e in found]),
        median([e.width for e in found]),
        median([e.peak for _, e in events]),
        median(peaks_d, steps=False),
        median([e.past_peak for _, e in events]),
        median([e.gold_drop for _, e in events], steps=False),
        median([e.proxy_rise for _, e in events], steps=False),
    ]


EVENT_HEADER = [
    "world",
    "agent",
    "runs with onset",
    "onset (median, env steps)",
    "width (onset − peak)",
    "gold peak at (env steps)",
    "d at the gold peak",
    "past the peak (env steps)",
    "gold drop, peak to end",
    "proxy rise, peak to end",
]


def peak_trends(fits: Sequence[FamilyFit]) -> list[str]:
    """One sentence per agent fitted in at least two worlds: its peak d* in each, in the
    order of the worlds (the environment sweep's), and whether it moves out along them.
    Only peaks inside the range of d the agent was measured at are compared: a fitted peak
    beyond the largest d (or none, d* infinite) is an extrapolation, and so is one below the
    smallest d > 0, where the RL form is known not to hold (module doc). Agents with fewer
    than two such peaks are named together in a last sentence."""
    by_name: dict[str, list[FamilyFit]] = {}
    for f in fits:
        by_name.setdefault(f.name, []).append(f)
    lines, uncompared = [], []
    for name, found in by_name.items():
        if len(found) < 2:
            continue
        parts, seen = [], []
        for f in found:
            if f.fit is None:
                parts.append(f"{f.world}: no fit")
            elif f.d_first <= f.fit.d_peak <= f.d_reached:
                parts.append(f"{f.world}: {_interval(f.fit.d_peak, f.fit.d_peak_ci)}")
                seen.append(f.fit.d_peak)
            elif f.fit.d_peak < f.d_first:
                parts.append(
                    f"{f.world}: peak {f.fit.d_peak:.2f} below the smallest d measured "
                    f"({f.d_first:.2f}): the fit has the gold falling from there on"
                )
            else:
                parts.append(f"{f.world}: no peak within the d reached (up to {f.d_reached:.2f})")
        steps = np.diff(seen)
        if len(seen) < 2:
            uncompared.append(name)
            continue
        if np.all(steps > 0):
            trend = "it moves out at every step"
        elif np.all(steps < 0):
            trend = "it moves in at every step"
        elif seen[-1] > seen[0]:
            trend = (
                "it is further out in the last of these worlds than in the first, not at every step"
            )
        else:
            trend = "it does not move out from the first of these worlds to the last"
        lines.append(f"{name}: fitted peak d* {'; '.join(parts)}; {trend}.")
    if uncompared:
        lines.append(
            "Fewer than two worlds with a fitted peak within the d measured, nothing to compare "
            f"(the fits table has each world's d*): {'; '.join(uncompared)}."
        )
    return lines


def world_of_variants(experiment: dict[str, Any] | None) -> dict[str, str]:
    """Each variant folder's world: its environment point as ``key=value`` text (e.g.
    ``pairs=100``); empty without an environment sweep."""
    worlds = {}
    for run in (experiment or {}).get("runs", []):
        point = run.get("env_point") or {}
        worlds[run["variant"]] = ", ".join(f"{k}={v}" for k, v in point.items())
    return worlds


__all__ = [
    "FORMS",
    "FamilyFit",
    "GaoFit",
    "KLCurve",
    "KLPoint",
    "Overoptimisation",
    "family_fits",
    "fit_gao",
    "gao_gain",
    "gao_peak",
    "kl_curves",
    "kl_points",
    "overoptimisation",
    "peak_trends",
    "run_events",
    "world_of_variants",
]
