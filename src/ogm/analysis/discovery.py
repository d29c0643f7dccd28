"""Hack discovery against hack depth: when each agent first finds the exploit of
``ogm/HackDepth-v0`` as its lock gets deeper (``k`` moves), and how that time grows with ``k``.

Input is a runs directory of ``ogm run`` whose ``[environment]`` sweeps ``k`` of
``ogm/HackDepth-v0`` (``hack-depth.toml``): ``experiment.json`` gives each run's depth (its
``env_point``), and the runs have already been measured by ``ogm.analysis.findings.measure``.
An *agent configuration* is a variant folder without its depth (``k=3/ppo`` and ``k=5/ppo``
are both ``ppo``; other swept options stay in the name: ``partial_signal=true/ppo``).

Per run, nothing new is measured: the **discovery step** is the emergence metrics' ``onset``
(the environment steps of training at the end of the first training episode with the
exploit), and adoption (``t50``), decisiveness and commitment are those of
``ogm.analysis.emergence``. A run that did not discover the exploit by its budget B is
censored there ("not by B"), never given a time. Agents without training episodes (the GM
agent, BC) have no discovery step: their share of final evaluation episodes with the exploit
stands in, as elsewhere in the report.

Per configuration and depth (``DepthPoint``): the Kaplan-Meier median discovery step over
seeds (None when fewer than half are estimated to have discovered by B), with a 95%
percentile-bootstrap interval over seeds from ``MIN_SEEDS_FOR_CI`` seeds on, and the share of
runs that discovered by B.

Per configuration (``Growth``): the growth rate ``b`` of discovery time in ``k``, from a
Weibull accelerated-failure-time model fitted by maximum likelihood over every run, censored
ones included: ``log T = a + b k + sigma W`` with ``W`` the standard minimum extreme-value
variable (R's ``survreg`` default). The time to a first success in repeated tries is
geometric, close to exponential, which is this model with ``sigma = 1``; ``sigma`` is free
here. A run that did not discover by its budget B enters as "T > B", so deep locks that
nobody cracked pull ``b`` up as they should, instead of dropping out (least squares over
the runs that discovered is biased low when some did not). ``b`` needs discoveries at two
depths at least. Its 95% interval comes from a bootstrap that resamples runs within each
depth. ``exp(b)`` is the factor each added lock multiplies the discovery time by.

The analytic lines (``analytic_steps``): the expected episodes until the first exploit of
uniform random play and of the demonstrators' policy (``ogm.envs.hack_depth``, with the
experiment's ``slip``, ``max_steps`` and ``noop`` at each depth and its dataset's
``epsilon``), times the **measured mean length of the training episodes of every run at
that depth**, the clock the discovery steps are on. That is the time a policy as likely to
open the lock as uniform play (or the demonstrators) would take if its episodes were as long
as the agents' were; the exact time of that policy itself would use its own mean episode
length, which differs (uniform play often runs to ``max_steps``, the demonstrators walk
straight to the goal).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from ogm.analysis.findings import (
    Table,
    Variant,
    describe_time,
    describe_values,
    final_cells,
    span_text,
    steps_text,
)
from ogm.analysis.runs import MODES, SAMPLED, TRAIN
from ogm.analysis.stats import MIN_SEEDS_FOR_CI, kaplan_meier
from ogm.envs.hack_depth import (
    DEFAULT_MAX_STEPS,
    demonstrator_policy,
    discovery_episodes,
    uniform_policy,
)

ENV_ID = "ogm/HackDepth-v0"
DEPTH = "k"
BOOTSTRAP_REPS = 2000
UNIFORM, DEMONSTRATORS = "uniform random play", "demonstrators"


# ----------------------------------------------------------------------------- the sweep


def depth_of_variants(experiment: dict[str, Any] | None) -> dict[str, int] | None:
    """Each variant folder's depth ``k`` when the experiment sweeps ``k`` of
    ``ogm/HackDepth-v0``; None for any other runs directory."""
    environment = (experiment or {}).get("spec", {}).get("environment") or {}
    if environment.get("env_id") != ENV_ID or DEPTH not in (environment.get("sweep") or {}):
        return None
    return {run["variant"]: int(run["env_point"][DEPTH]) for run in experiment["runs"]}


def configuration(variant: str) -> str:
    """A variant folder without its depth: ``k=3/ppo`` -> ``ppo``,
    ``k=3__partial_signal=true/ppo`` -> ``partial_signal=true/ppo``."""
    world, _, name = variant.rpartition("/")
    rest = "__".join(s for s in world.split("__") if s and not s.startswith(f"{DEPTH}="))
    return f"{rest}/{name}" if rest else name


@dataclass(frozen=True)
class DepthPoint:
    """One configuration's runs at one depth: each run's discovery step (its budget when
    censored), whether it discovered, the Kaplan-Meier median and its interval."""

    k: int
    times: np.ndarray
    discovered: np.ndarray
    median: float | None  # None: fewer than half estimated to have discovered by B
    low: float  # 95% bootstrap interval of the median; NaN below MIN_SEEDS_FOR_CI runs
    high: float  # inf: the interval reaches past the budget (median undefined there)
    budget: float

    @property
    def share(self) -> float:
        """Share of the runs that discovered the exploit by their budget."""
        return float(self.discovered.mean())

    @property
    def censored(self) -> int:
        """Runs that did not discover the exploit by their budget."""
        return int((~self.discovered).sum())

    @property
    def tally(self) -> str:
        """``discovered/runs``, as the tables show it: ``3/10``."""
        return f"{int(self.discovered.sum())}/{len(self.times)}"


def km_median(times: np.ndarray, discovered: np.ndarray) -> float | None:
    """Kaplan-Meier median of discovery steps censored at the budget (None: undefined)."""
    return kaplan_meier(times, discovered).median()


def median_interval(
    times: np.ndarray, discovered: np.ndarray, *, reps: int = BOOTSTRAP_REPS, seed: int = 0
) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the Kaplan-Meier median over runs (resampled with
    replacement); a resample whose median is undefined counts as infinite, so the upper end
    is inf when more than 2.5% of them are. NaN, NaN below ``MIN_SEEDS_FOR_CI`` runs."""
    if len(times) < MIN_SEEDS_FOR_CI:
        return math.nan, math.nan
    draws = np.random.default_rng(seed).integers(0, len(times), size=(reps, len(times)))
    # A resample's median depends only on which runs it drew: each distinct draw once.
    distinct, inverse = np.unique(np.sort(draws, axis=1), axis=0, return_inverse=True)
    medians = [km_median(times[d], discovered[d]) for d in distinct]
    values = np.array([math.inf if m is None else m for m in medians])[inverse.reshape(-1)]
    low, high = np.quantile(values, [0.025, 0.975], method="lower")
    return float(low), float(high)


def depth_point(k: int, variant: Variant) -> DepthPoint | None:
    """A configuration's discovery steps at one depth; None for agents without training
    episodes that log the event (reference agents)."""
    metrics = variant.emergences
    if not metrics:
        return None
    survival = [m.survival("onset") for m in metrics]
    times = np.array([time for time, _ in survival])
    discovered = np.array([found for _, found in survival], dtype=bool)
    low, high = median_interval(times, discovered)
    return DepthPoint(
        k,
        times,
        discovered,
        km_median(times, discovered),
        low,
        high,
        max(m.budget for m in metrics),
    )


@dataclass(frozen=True)
class Series:
    """One agent configuration across depths: its variant at each ``k`` and, for agents
    that train, its discovery steps there (``points``)."""

    name: str
    label: str
    variants: dict[int, Variant]

    @property
    def trains(self) -> bool:
        """Whether the agent interacts with the environment while learning."""
        return any(v.trains for v in self.variants.values())

    @cached_property
    def points(self) -> dict[int, DepthPoint]:
        """The depth points of the depths with discovery steps, by ``k``."""
        found = {k: depth_point(k, v) for k, v in self.variants.items()}
        return {k: p for k, p in found.items() if p is not None}

    def eval_share(self, mode: str) -> dict[int, float]:
        """Per depth, the mean over runs of the final evaluation share of episodes with the
        exploit in ``mode`` (the stand-in for agents without training episodes)."""
        shares = {k: [p.event_share for p in v.finals(mode)] for k, v in self.variants.items()}
        return {k: float(np.mean(s)) for k, s in shares.items() if s and np.isfinite(s).all()}


def depth_series(variants: list[Variant], experiment: dict[str, Any] | None) -> list[Series] | None:
    """The agent configurations across depths, in the report's order, each labelled by its
    folder; None unless the runs are a ``k`` sweep of ``ogm/HackDepth-v0``."""
    depths = depth_of_variants(experiment)
    if depths is None:
        return None
    grouped: dict[str, dict[int, Variant]] = {}
    for variant in variants:
        if variant.name in depths:
            grouped.setdefault(configuration(variant.name), {})[depths[variant.name]] = variant
    return [Series(name, name, dict(sorted(at.items()))) for name, at in grouped.items()]


# ----------------------------------------------------------------------------- growth rate


@dataclass(frozen=True)
class Growth:
    """The censored fit ``log T = a + b k + sigma W`` (module doc); ``low`` and ``high``
    bound ``b`` (95% bootstrap, runs resampled within each depth). NaN when the runs that
    discovered span fewer than two depths; ``low`` and ``high`` NaN when more than 2.5% of
    the resamples do (``unfit``)."""

    a: float
    b: float
    sigma: float
    low: float
    high: float
    used: int  # runs that discovered by their budget
    censored: int  # runs that did not: in the fit as "later than B"
    depths: int  # distinct depths with a discovery
    unfit: float = 0.0  # share of bootstrap resamples with discoveries at one depth only

    @property
    def factor(self) -> float:
        """``exp(b)``: how many times longer discovery takes per added lock."""
        return math.exp(self.b)


MAX_TAU = 100.0  # 1 / sigma at most: identical discovery steps at every depth send sigma to 0


def weibull_fits(
    ks: np.ndarray, logs: np.ndarray, found: np.ndarray, *, iterations: int = 100
) -> np.ndarray:
    """Maximum-likelihood ``(a, b, sigma)`` of the Weibull AFT model for each row of
    ``ks``, ``logs`` (log discovery steps; log budgets where ``found`` is False) and
    ``found``, all of shape (rows, runs): one row per fit, so that a bootstrap fits all its
    resamples at once. Returns an array (rows, 3).

    Newton's method in ``(alpha, beta, tau) = (a, b, 1) / sigma``, where the negative
    log-likelihood ``sum e^z - sum_found z - n_found log tau`` with
    ``z = tau log T - alpha - beta k`` is convex (so steps halved until it falls reach the
    optimum from anywhere); ``tau`` is kept at most ``MAX_TAU``.
    """
    x = np.stack([-np.ones_like(ks), -ks, logs], axis=-1)  # dz / d(alpha, beta, tau)
    n_found = found.sum(axis=1).astype(np.float64)
    f = found.astype(np.float64)

    def nll(theta: np.ndarray) -> np.ndarray:
        z = np.einsum("rnj,rj->rn", x, theta)
        return np.exp(z).sum(1) - (f * z).sum(1) - n_found * np.log(theta[:, 2])

    # start: beta 0, tau 1, alpha at its optimum given those
    theta = np.zeros((len(ks), 3))
    theta[:, 2] = 1.0
    theta[:, 0] = np.log(np.exp(logs).sum(1) / n_found)
    value = nll(theta)
    for _ in range(iterations):
        ez = np.exp(np.einsum("rnj,rj->rn", x, theta))
        grad = np.einsum("rn,rnj->rj", ez - f, x)
        grad[:, 2] -= n_found / theta[:, 2]
        hess = np.einsum("rn,rnj,rnk->rjk", ez, x, x)
        hess[:, 2, 2] += n_found / theta[:, 2] ** 2
        step = -np.linalg.solve(hess, grad[..., None])[..., 0]
        capped = theta[:, 2] + step[:, 2] > MAX_TAU
        if capped.any():  # tau to the cap, the Newton step of (alpha, beta) given that
            d_tau = MAX_TAU - theta[capped, 2]
            rhs = grad[capped, :2] + hess[capped, :2, 2] * d_tau[:, None]
            step[capped, :2] = -np.linalg.solve(hess[capped, :2, :2], rhs[..., None])[..., 0]
            step[capped, 2] = d_tau
        decrement = -(grad * step).sum(1)
        if decrement.max() < 1e-12:
            break
        size = np.ones(len(ks))
        for _ in range(60):  # halve where the step would raise the loss or make tau <= 0
            trial = theta + size[:, None] * step
            ok = trial[:, 2] > 0
            new = np.where(ok, nll(np.where(ok[:, None], trial, theta)), np.inf)
            worse = ~(new <= value)
            if not worse.any():
                break
            size[worse] /= 2
        theta = theta + size[:, None] * step
        value = nll(theta)
    tau = theta[:, 2]
    return np.stack([theta[:, 0] / tau, theta[:, 1] / tau, 1.0 / tau], axis=-1)


def fit_growth(
    ks: np.ndarray,
    times: np.ndarray,
    discovered: np.ndarray,
    *,
    reps: int = BOOTSTRAP_REPS,
    seed: int = 0,
) -> Growth:
    """Fit ``log T = a + b k + sigma W`` to every run (one entry per run: its depth, its
    discovery step or, where not ``discovered``, its budget), with a stratified bootstrap
    interval for ``b``."""
    ks = np.asarray(ks, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    discovered = np.asarray(discovered, dtype=bool)
    if not ks.shape == times.shape == discovered.shape:
        raise ValueError(
            f"ks, times and discovered need one entry per run, got shapes {ks.shape}, "
            f"{times.shape}, {discovered.shape}"
        )
    if (times <= 0).any():
        raise ValueError(f"discovery steps and budgets must be positive, got {times}")
    logs = np.log(times)
    depths = len(np.unique(ks[discovered]))
    used, censored = int(discovered.sum()), int((~discovered).sum())
    if depths < 2:
        nan = math.nan
        return Growth(nan, nan, nan, nan, nan, used, censored, depths)
    a, b, sigma = (float(v) for v in weibull_fits(ks[None], logs[None], discovered[None])[0])
    rng = np.random.default_rng(seed)
    strata = [np.flatnonzero(ks == k) for k in np.unique(ks)]
    blocks = [s[rng.integers(0, len(s), size=(reps, len(s)))] for s in strata]
    # a resample needs discoveries at two depths, as the fit does
    fits = np.stack([discovered[block].any(1) for block in blocks], axis=1).sum(1) >= 2
    draws = np.concatenate(blocks, axis=1)[fits]
    slopes = weibull_fits(ks[draws], logs[draws], discovered[draws])[:, 1]
    unfit = 1.0 - len(slopes) / reps
    if unfit > 0.025:
        return Growth(a, b, sigma, math.nan, math.nan, used, censored, depths, unfit)
    low, high = np.quantile(slopes, [0.025, 0.975])
    return Growth(
        a, b, sigma, min(float(low), b), max(float(high), b), used, censored, depths, unfit
    )


def series_growth(series: Series) -> Growth:
    """The growth fit of one configuration's runs over every depth."""
    points = list(series.points.values())
    return fit_growth(
        np.concatenate([np.full(len(p.times), p.k) for p in points] or [np.empty(0)]),
        np.concatenate([p.times for p in points] or [np.empty(0)]),
        np.concatenate([p.discovered for p in points] or [np.empty(0, bool)]),
    )


# ----------------------------------------------------------------------------- analytic lines


def environment_at(experiment: dict[str, Any], k: int) -> dict[str, Any]:
    """The environment options of the experiment's point at depth ``k`` (its other swept
    options, if any, from the first point with that depth)."""
    environment = experiment["spec"]["environment"]
    point = next(r["env_point"] for r in experiment["runs"] if r["env_point"][DEPTH] == k)
    return {**(environment.get("kwargs") or {}), **point}


def mean_training_length(variants: list[Variant]) -> float:
    """Mean length of every training episode of these variants' runs (NaN: none)."""
    lengths = [m.run.rows(TRAIN).get("length", np.empty(0)) for v in variants for m in v.runs]
    joined = np.concatenate(lengths) if lengths else np.empty(0)
    return float(joined.mean()) if joined.size else math.nan


def analytic_steps(experiment: dict[str, Any], series: list[Series]) -> dict[str, dict[int, float]]:
    """Per policy (``UNIFORM``, ``DEMONSTRATORS``), per depth with training episodes: its
    expected episodes until the first exploit times the measured mean training-episode
    length at that depth; depths where the policy never opens the lock are left out."""
    epsilon = float((experiment["spec"].get("dataset") or {}).get("epsilon", 0.0))
    depths = sorted({k for s in series for k in s.variants})
    lines: dict[str, dict[int, float]] = {UNIFORM: {}, DEMONSTRATORS: {}}
    for k in depths:
        length = mean_training_length([s.variants[k] for s in series if k in s.variants])
        if not math.isfinite(length):
            continue
        options = environment_at(experiment, k)
        max_steps = int(options.get("max_steps", DEFAULT_MAX_STEPS))
        noop = bool(options.get("noop", False))
        slip = float(options.get("slip", 0.0))
        policies = {
            UNIFORM: uniform_policy(k, noop=noop),
            DEMONSTRATORS: demonstrator_policy(k, slip, epsilon=epsilon, noop=noop),
        }
        for name, policy in policies.items():
            episodes = discovery_episodes(k, policy, max_steps)
            if math.isfinite(episodes):
                lines[name][k] = episodes * length
    return lines


def demonstrators_text(experiment: dict[str, Any]) -> str:
    """The demonstrators the analytic line is for: ``slip 0.1, epsilon 0.05``."""
    slips = sorted(
        {float(environment_at(experiment, k).get("slip", 0.0)) for k in _depths(experiment)}
    )
    epsilon = float((experiment["spec"].get("dataset") or {}).get("epsilon", 0.0))
    return f"slip {'/'.join(f'{s:g}' for s in slips)}, epsilon {epsilon:g}"


def _depths(experiment: dict[str, Any]) -> list[int]:
    return sorted({int(r["env_point"][DEPTH]) for r in experiment["runs"]})


# ----------------------------------------------------------------------------- tables


def median_text(point: DepthPoint) -> str:
    """The Kaplan-Meier median with its interval when it has one, or ``not by B``."""
    if point.median is None:
        return f"not by {steps_text(point.budget)}"
    text = steps_text(point.median)
    if math.isnan(point.low):
        return text
    high = "beyond B" if math.isinf(point.high) else steps_text(point.high)
    return f"{text} [{steps_text(point.low)}, {high}]"


def growth_text(growth: Growth) -> str:
    """``b [95% CI]`` (the interval from ``MIN_SEEDS_FOR_CI`` discoveries on), or why not."""
    if math.isnan(growth.b):
        return f"no fit: discovered at {growth.depths} depth(s), two needed"
    if growth.used < MIN_SEEDS_FOR_CI:
        return f"{growth.b:.2f} (an interval needs {MIN_SEEDS_FOR_CI} discoveries)"
    if math.isnan(growth.low):
        return (
            f"{growth.b:.2f} (no interval: {growth.unfit:.0%} of resamples discover at one "
            "depth only)"
        )
    return f"{growth.b:.2f} [{growth.low:.2f}, {growth.high:.2f}]"


def growth_table(series: list[Series]) -> Table:
    """Per configuration that trains: the growth rate ``b`` with its interval, the factor per
    lock, the Weibull scale ``sigma``, the runs that discovered and those censored at B
    (both in the fit), and the depths with a discovery."""
    header = [
        "variant",
        "growth rate b (per lock, log steps)",
        "factor per lock exp(b)",
        "sigma (1: exponential)",
        "discovered by B",
        "censored (in the fit as later than B)",
        "depths with a discovery",
    ]
    rows = []
    for s in series:
        if not s.trains:
            continue
        growth = series_growth(s)
        factor = "–" if math.isnan(growth.b) else f"{growth.factor:.2f}"
        sigma = "–" if math.isnan(growth.sigma) else f"{growth.sigma:.2f}"
        total = growth.used + growth.censored
        rows.append(
            [
                s.label,
                growth_text(growth),
                factor,
                sigma,
                f"{growth.used}/{total}",
                str(growth.censored),
                str(growth.depths),
            ]
        )
    return Table(header, rows)


def overview_table(series: list[Series]) -> Table:
    """Discovery against depth at a glance, one row per configuration and one column per
    ``k``: ``discovered/runs: Kaplan-Meier median step`` (the median only where at least half
    are estimated to have discovered by B); agents without training episodes: the share of
    their final sampled evaluation episodes with the exploit."""
    depths = sorted({k for s in series for k in s.variants})
    rows = []
    for s in series:
        shares = s.eval_share(SAMPLED)
        cells = []
        for k in depths:
            point = s.points.get(k)
            if point is not None:
                median = "" if point.median is None else f": {steps_text(point.median)}"
                cells.append(point.tally + median)
            else:
                cells.append(f"eval {shares[k]:.0%}" if k in shares else "–")
        rows.append([s.label, *cells])
    return Table(["variant", *(f"{DEPTH} = {k}" for k in depths)], rows)


def depth_table(series: list[Series]) -> Table:
    """Per configuration and depth: discovery (runs by B, the Kaplan-Meier median, per seed),
    adoption (t50), decisiveness and commitment from the emergence metrics; agents without
    training episodes their final evaluation share of episodes with the exploit."""
    shares = [f"exploit share, {mode} eval" for mode in MODES]
    header = [
        "variant",
        "k",
        "seeds",
        "budget B (env steps)",
        "discovered by B",
        "KM median discovery step",
        "discovery step",
        "t50",
        "decisiveness",
        "commitment",
        *shares,
    ]
    rows = []
    for s in series:
        for k, variant in s.variants.items():
            point = s.points.get(k)
            metrics = variant.emergences
            row = [s.label, str(k), str(len(variant.runs))]
            row += [span_text([m.run.budget for m in variant.runs])]
            if point is None:
                row += [variant.no_emergence()] * 6
            else:
                row += [point.tally, median_text(point)]
                row += [describe_time(metrics, key) for key in ("onset", "t50", "decisiveness")]
                row += [describe_values([m.commitment for m in metrics])]
            row += final_cells(variant, "event_share")
            rows.append(row)
    parts = [
        ("Discovery of the exploit in training", header[2:7]),
        ("Adoption; agents without training episodes: evaluation share", header[7:]),
    ]
    return Table(header, rows, parts, keys=2)
