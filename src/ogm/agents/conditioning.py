"""Ways to ask a Decision Transformer for reward (remark 1 of the essay "Safety
considerations for online generative modeling").

Every strategy turns the model's return distribution at the start of an episode,
``P(R | s_0)`` over return bins, into one target return per episode:

- ``fixed:R``: always ``R`` (the satisficer, remark 1a);
- ``percentile:p``: the p-th percentile of the returns observed so far (the dataset, then
  every episode passed to :meth:`ConditioningStrategy.observe`), moving as they move
  (remark 1b);
- ``quantilizer:q``: a return drawn from the top ``q`` of ``P(R | s_0)`` on the supported
  bins (below), renormalised: the quantilizer of Taylor (2016) over the model's own return
  distribution. The bin holding the (1-q) quantile keeps only its share of the top-q
  mass, so no target lies below it;
- ``exp_tilted:kappa``: a return drawn from the supported bins with probability
  proportional to ``P(R | s_0) exp(kappa x(R))``, where ``x(R) = (R - lo) / (hi - lo)``
  measures R in units of the observed return range ``[lo, hi]`` (remark 1c, appendix),
  never narrower than one bin.
  ``kappa`` is therefore comparable across games: the best return seen is ``e^kappa``
  times as favoured as the worst, whether returns span 7 or 200. See *The KL-regularised
  optimum* below for what this policy is, and when;
- ``prior``: a return drawn from ``P(R | s_0)`` on the supported bins: the unconditioned
  policy pi_0;
- ``odt:m``: ``m`` times the target of a base strategy, ODT's exploration rule (Zheng et
  al. 2022 explore online with ``online_rtg = 2 x eval_rtg``, e.g. 7200 against 3600 on
  Hopper). Built with ``make_strategy("odt:2", base=eval_strategy)``; the base is shared,
  not copied, so the exploration target follows the evaluation target as it moves. Its
  owner observes it and saves its state; ``odt:m`` does neither. Meant for games whose
  returns are positive, as ODT's are (``m`` times a negative target asks for less).

Support
-------
The return head gives every bin some probability, also bins that no episode ever reached
(about 0.001 each after training: nothing in the loss pulls them lower). Weighted by
``exp(kappa R)`` that floor is where ``exp_tilted`` put its mass: on tomato_watering it
asked for 60 when no demonstration had returned more than 21. So ``quantilizer``,
``exp_tilted`` and ``prior`` draw only from *supported* bins: a bin is supported when at
least one return passed to :meth:`ConditioningStrategy.observe` falls into it (returns
beyond the bins count for the end bins, as in the model's loss). Callers observe the
dataset's episode returns first, then, online, the returns of the training episodes, so
the support grows as the agent finds new returns. The model's probabilities on the
supported bins are renormalised; a row that gives all of them zero probability falls
back to the supported bins, uniformly. Before anything is observed every bin counts as
supported (the model's distribution as it is), and ``exp_tilted`` measures returns in
units of the bins' range instead.

The KL-regularised optimum
--------------------------
Conditioning on a return drawn as ``exp_tilted`` draws it yields, in expectation over the
draw, ``sum_R P(R) e^{kappa x(R)} P(tau | R) / Z = pi_0(tau) e^{kappa x(R(tau))} / Z``:
the maximiser of ``E[x(R)] - KL(pi || pi_0) / kappa``, the KL-regularised optimum,
*provided the return is a function of the trajectory the agent controls* (deterministic
dynamics given ``s_0``). Under stochastic dynamics the same computation gives, in a
one-step bandit, ``pi_0(a) E[e^{kappa x(R)} | a] / Z``, which by Jensen's inequality
favours lottery-like actions over ``pi_0(a) e^{kappa E[x(R) | a]} / Z``. Measured in
``tests/test_conditioning_bandit.py``: total variation 0.004-0.017 from the optimum with
deterministic rewards; with a lottery arm 0.17 from the optimum and 0.007 from
``pi_0(a) E[e^{kappa x(R)} | a] / Z``.

Strategies are chosen by name with :func:`make_strategy` and saved as JSON with
``state_dict`` (spec and observed returns). Strategies that draw from a distribution
over bins also expose it as :meth:`ConditioningStrategy.target_probs`, so tests and
analyses can use it exactly.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

MAX_KAPPA = 700.0  # e^kappa, the tilt across the observed range, must stay a float64
MAX_ODT_MULTIPLE = 1e3  # targets beyond a thousand times the evaluation target mean nothing


class ConditioningStrategy:
    """One way to choose the target return each episode is conditioned on."""

    name: ClassVar[str]

    def __init__(self) -> None:
        self.returns: list[float] = []  # every return passed to observe(), in order

    @staticmethod
    def validate(param: float) -> float:
        """The strategy's parameter, or a ``ValueError`` saying what is wrong with it."""
        return param

    def targets(
        self, return_probs: np.ndarray, bin_centers: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """One target return (unscaled) per row of ``return_probs`` (N, n_bins)."""
        probs = self.target_probs(np.asarray(return_probs, dtype=np.float64), bin_centers)
        cum = np.cumsum(probs, axis=1)
        draws = rng.random((len(probs), 1)) * cum[:, -1:]
        index = np.minimum((cum <= draws).sum(axis=1), probs.shape[1] - 1)
        return np.asarray(bin_centers, dtype=np.float64)[index]

    def target_probs(self, return_probs: np.ndarray, bin_centers: np.ndarray) -> np.ndarray:
        """The distribution over bins that ``targets`` samples from (N, n_bins)."""
        raise NotImplementedError(f"strategy {self.name!r} does not sample from the bins")

    def observe(self, returns: np.ndarray | list[float]) -> None:
        """Record the returns of finished episodes (the support; ``percentile``'s data)."""
        values = np.atleast_1d(np.asarray(returns, dtype=np.float64))
        if not np.isfinite(values).all():
            raise ValueError(f"observed returns must be finite, got {values[~np.isfinite(values)]}")
        self.returns.extend(values.tolist())

    def supported(self, bin_centers: np.ndarray) -> np.ndarray:
        """Which bins hold at least one observed return (all of them before any)."""
        centers = np.asarray(bin_centers, dtype=np.float64)
        if not self.returns:
            return np.ones(len(centers), bool)
        width = centers[1] - centers[0] if len(centers) > 1 else 1.0
        index = np.floor((np.asarray(self.returns) - centers[0]) / width + 0.5)
        mask = np.zeros(len(centers), bool)
        mask[np.clip(index, 0, len(centers) - 1).astype(np.int64)] = True
        return mask

    def supported_probs(self, return_probs: np.ndarray, bin_centers: np.ndarray) -> np.ndarray:
        """``return_probs`` (N, n_bins) restricted to the supported bins, renormalised."""
        mask = self.supported(bin_centers)
        probs = np.asarray(return_probs, dtype=np.float64) * mask
        probs = np.where(probs.sum(axis=1, keepdims=True) > 0, probs, mask)
        return probs / probs.sum(axis=1, keepdims=True)

    def spec(self) -> str:
        """The name that :func:`make_strategy` turns back into this strategy."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready state, enough for :func:`make_strategy` to rebuild the strategy."""
        return {"spec": self.spec(), "returns": list(self.returns)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("spec") != self.spec():
            raise ValueError(f"state is for strategy {state.get('spec')!r}, not {self.spec()!r}")
        self.returns = []
        self.observe(state["returns"])

    def __repr__(self) -> str:
        return f"<strategy {self.spec()}>"


class Fixed(ConditioningStrategy):
    name = "fixed"

    def __init__(self, target: float) -> None:
        super().__init__()
        self.target = self.validate(target)

    @staticmethod
    def validate(param: float) -> float:
        if not math.isfinite(param):
            raise ValueError(f"fixed target must be a finite number, got {param}")
        return float(param)

    def targets(self, return_probs, bin_centers, rng) -> np.ndarray:
        return np.full(len(return_probs), self.target)

    def spec(self) -> str:
        return f"fixed:{self.target!r}"


class Percentile(ConditioningStrategy):
    name = "percentile"

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = self.validate(p)

    @staticmethod
    def validate(param: float) -> float:
        if not 0 <= param <= 100:  # also false for NaN
            raise ValueError(f"percentile must be in [0, 100], got {param}")
        return float(param)

    def current(self) -> float:
        """The target now: the p-th percentile (linear interpolation) of observed returns."""
        if not self.returns:
            raise RuntimeError("percentile strategy has observed no returns yet (call observe)")
        return float(np.percentile(self.returns, self.p))

    def targets(self, return_probs, bin_centers, rng) -> np.ndarray:
        return np.full(len(return_probs), self.current())

    def spec(self) -> str:
        return f"percentile:{self.p!r}"


class Quantilizer(ConditioningStrategy):
    name = "quantilizer"

    def __init__(self, q: float) -> None:
        super().__init__()
        self.q = self.validate(q)

    @staticmethod
    def validate(param: float) -> float:
        if not 0 < param <= 1:  # also false for NaN
            raise ValueError(f"quantilizer q must be in (0, 1], got {param}")
        return float(param)

    def target_probs(self, return_probs, bin_centers) -> np.ndarray:
        probs = self.supported_probs(return_probs, bin_centers)
        cum = np.cumsum(probs, axis=1)
        # mass of each bin above the (1 - q) quantile: [cum - p, cum] intersected with
        # [1 - q, 1]; the tolerance keeps rounding from giving lower bins a sliver of mass
        above = np.clip(cum - (1 - self.q) - 1e-12, 0, None)
        top = np.minimum(probs, above)
        return top / top.sum(axis=1, keepdims=True)

    def spec(self) -> str:
        return f"quantilizer:{self.q!r}"


class ExpTilted(ConditioningStrategy):
    name = "exp_tilted"

    def __init__(self, kappa: float) -> None:
        super().__init__()
        self.kappa = self.validate(kappa)

    @staticmethod
    def validate(param: float) -> float:
        if not abs(param) <= MAX_KAPPA:  # also false for NaN
            raise ValueError(
                f"exp_tilted kappa must be in [-{MAX_KAPPA:g}, {MAX_KAPPA:g}] (e^kappa, the tilt "
                f"across the observed returns, must be a float64), got {param}"
            )
        return float(param)

    def return_unit(self, bin_centers: np.ndarray) -> tuple[float, float]:
        """``(lo, hi - lo)``: the observed return range, or the bins' before any return; no
        narrower than one bin, the resolution at which targets are drawn (a narrower range
        would tilt adjacent bins by more than e^kappa, and overflow as it nears 0)."""
        centers = np.asarray(bin_centers, dtype=np.float64)
        values = np.asarray(self.returns, dtype=np.float64) if self.returns else centers
        lo, span = float(values.min()), float(values.max() - values.min())
        gaps = np.diff(np.sort(centers))
        resolution = float(gaps[gaps > 0].min()) if np.any(gaps > 0) else 1.0
        return lo, max(span, resolution)

    def target_probs(self, return_probs, bin_centers) -> np.ndarray:
        lo, span = self.return_unit(bin_centers)
        x = (np.asarray(bin_centers, dtype=np.float64) - lo) / span
        probs = self.supported_probs(return_probs, bin_centers)
        with np.errstate(divide="ignore"):  # log 0 = -inf: unsupported bins stay empty
            logits = np.log(probs) + self.kappa * x
        logits -= logits.max(axis=1, keepdims=True)
        w = np.exp(logits)
        return w / w.sum(axis=1, keepdims=True)

    def spec(self) -> str:
        return f"exp_tilted:{self.kappa!r}"


class Prior(ConditioningStrategy):
    name = "prior"

    def target_probs(self, return_probs, bin_centers) -> np.ndarray:
        return self.supported_probs(return_probs, bin_centers)

    def spec(self) -> str:
        return "prior"


class ODT(ConditioningStrategy):
    name = "odt"

    def __init__(self, multiple: float, base: ConditioningStrategy) -> None:
        super().__init__()
        self.multiple = self.validate(multiple)
        self.base = base

    @staticmethod
    def validate(param: float) -> float:
        if not 0 < param <= MAX_ODT_MULTIPLE:  # also false for NaN
            raise ValueError(
                f"odt multiple must be in (0, {MAX_ODT_MULTIPLE:g}] (ODT uses 2), got {param}"
            )
        return float(param)

    def targets(self, return_probs, bin_centers, rng) -> np.ndarray:
        return self.multiple * self.base.targets(return_probs, bin_centers, rng)

    def spec(self) -> str:
        return f"odt:{self.multiple!r}"


STRATEGIES: dict[str, type[ConditioningStrategy]] = {
    cls.name: cls for cls in (Fixed, Percentile, Quantilizer, ExpTilted, Prior, ODT)
}


def _parse(
    spec: str | dict[str, Any],
) -> tuple[type[ConditioningStrategy], float | None, dict[str, Any] | None]:
    """``(class, checked parameter or None, state_dict or None)`` of a spec."""
    state = None
    if isinstance(spec, dict):
        if "spec" in spec:
            state, spec = spec, spec["spec"]
        elif "name" in spec:
            spec = spec["name"] + ("" if spec.get("param") is None else f":{spec['param']}")
        else:
            raise ValueError(f"strategy dict needs 'spec' or 'name', got keys {sorted(spec)}")
    name, _, param = str(spec).partition(":")
    name = name.strip()
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose from {sorted(STRATEGIES)}")
    cls = STRATEGIES[name]
    if cls is Prior:
        if param:
            raise ValueError(f"strategy 'prior' takes no parameter, got {param!r}")
        return cls, None, state
    try:
        value = float(param)
    except ValueError:
        raise ValueError(
            f"strategy {name!r} needs a number, as in '{name}:1.0'; got {spec!r}"
        ) from None
    return cls, cls.validate(value), state


def check_spec(spec: str | dict[str, Any]) -> str | dict[str, Any]:
    """``spec`` unchanged if :func:`make_strategy` can build it (``odt:m`` given a base);
    a ``ValueError`` naming the problem otherwise. For config validators."""
    _parse(spec)
    return spec


def make_strategy(
    spec: str | dict[str, Any] | ConditioningStrategy,
    *,
    base: ConditioningStrategy | None = None,
) -> ConditioningStrategy:
    """Build a strategy from ``"name:param"`` (e.g. ``"percentile:95"``), ``"prior"``, a
    ``state_dict`` (``{"spec": ..., ...}``), or ``{"name": ..., "param": ...}``.

    ``base`` is the strategy whose target ``odt:m`` multiplies (shared, not copied; the
    evaluation strategy in an online run); the other strategies ignore it.
    """
    if isinstance(spec, ConditioningStrategy):
        return spec
    cls, param, state = _parse(spec)
    if cls is ODT:
        if base is None:
            raise ValueError(
                f"strategy {spec!r} multiplies another strategy's target: build it with "
                "make_strategy(spec, base=<that strategy>), e.g. the evaluation strategy"
            )
        strategy: ConditioningStrategy = ODT(param, base)
    elif cls is Prior:
        strategy = Prior()
    else:
        strategy = cls(param)
    if state is not None:
        strategy.load_state_dict(state)
    return strategy
