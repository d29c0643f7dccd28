"""Ways to ask a Decision Transformer for reward (the seed essay's remark 1).

Every strategy turns the model's return distribution at the start of an episode,
``P(R | s_0)`` over return bins, into one target return per episode:

- ``fixed:R``: always ``R`` (the satisficer, remark 1a);
- ``percentile:p``: the p-th percentile of the returns observed so far (the dataset, then
  every episode passed to :meth:`ConditioningStrategy.observe`), moving as they move
  (remark 1b);
- ``quantilizer:q``: a return drawn from the top ``q`` of ``P(R | s_0)``, renormalised: the
  quantilizer of Taylor (2016) over the model's own return distribution. The bin holding
  the (1-q) quantile keeps only its share of the top-q mass, so no target lies below it;
- ``exp_tilted:kappa``: a return drawn with probability proportional to
  ``P(R | s_0) exp(kappa R)`` (R unscaled), remark 1c and the appendix: conditioning on it
  gives the policy ``pi_0(tau) exp(kappa R(tau)) / Z``, the KL-regularised optimum;
- ``prior``: a return drawn from ``P(R | s_0)``, i.e. the unconditioned policy pi_0.

Strategies are chosen by name with :func:`make_strategy` and saved as JSON with
``state_dict``. Strategies that draw from a distribution over bins also expose it as
:meth:`ConditioningStrategy.target_probs`, so tests and analyses can use it exactly.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np


class ConditioningStrategy:
    """One way to choose the target return each episode is conditioned on."""

    name: ClassVar[str]

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
        """Record returns of finished episodes (only ``percentile`` uses them)."""

    def spec(self) -> str:
        """The name that :func:`make_strategy` turns back into this strategy."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready state, enough for :func:`make_strategy` to rebuild the strategy."""
        return {"spec": self.spec()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("spec") != self.spec():
            raise ValueError(f"state is for strategy {state.get('spec')!r}, not {self.spec()!r}")

    def __repr__(self) -> str:
        return f"<strategy {self.spec()}>"


class Fixed(ConditioningStrategy):
    name = "fixed"

    def __init__(self, target: float) -> None:
        self.target = float(target)

    def targets(self, return_probs, bin_centers, rng) -> np.ndarray:
        return np.full(len(return_probs), self.target)

    def spec(self) -> str:
        return f"fixed:{self.target!r}"


class Percentile(ConditioningStrategy):
    name = "percentile"

    def __init__(self, p: float) -> None:
        if not 0 <= p <= 100:
            raise ValueError(f"percentile must be in [0, 100], got {p}")
        self.p = float(p)
        self.returns: list[float] = []

    def observe(self, returns) -> None:
        self.returns.extend(float(r) for r in np.atleast_1d(returns))

    def current(self) -> float:
        """The target now: the p-th percentile (linear interpolation) of observed returns."""
        if not self.returns:
            raise RuntimeError("percentile strategy has observed no returns yet (call observe)")
        return float(np.percentile(self.returns, self.p))

    def targets(self, return_probs, bin_centers, rng) -> np.ndarray:
        return np.full(len(return_probs), self.current())

    def spec(self) -> str:
        return f"percentile:{self.p!r}"

    def state_dict(self) -> dict[str, Any]:
        return {"spec": self.spec(), "returns": list(self.returns)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.returns = [float(r) for r in state["returns"]]


class Quantilizer(ConditioningStrategy):
    name = "quantilizer"

    def __init__(self, q: float) -> None:
        if not 0 < q <= 1:
            raise ValueError(f"quantilizer q must be in (0, 1], got {q}")
        self.q = float(q)

    def target_probs(self, return_probs, bin_centers) -> np.ndarray:
        probs = return_probs / return_probs.sum(axis=1, keepdims=True)
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
        self.kappa = float(kappa)

    def target_probs(self, return_probs, bin_centers) -> np.ndarray:
        logits = np.log(np.clip(return_probs, 1e-300, None)) + self.kappa * np.asarray(
            bin_centers, dtype=np.float64
        )
        logits -= logits.max(axis=1, keepdims=True)
        w = np.exp(logits) * (return_probs > 0)
        return w / w.sum(axis=1, keepdims=True)

    def spec(self) -> str:
        return f"exp_tilted:{self.kappa!r}"


class Prior(ConditioningStrategy):
    name = "prior"

    def target_probs(self, return_probs, bin_centers) -> np.ndarray:
        return return_probs / return_probs.sum(axis=1, keepdims=True)

    def spec(self) -> str:
        return "prior"


STRATEGIES: dict[str, type[ConditioningStrategy]] = {
    cls.name: cls for cls in (Fixed, Percentile, Quantilizer, ExpTilted, Prior)
}


def make_strategy(spec: str | dict[str, Any] | ConditioningStrategy) -> ConditioningStrategy:
    """Build a strategy from ``"name:param"`` (e.g. ``"percentile:95"``), ``"prior"``, a
    ``state_dict`` (``{"spec": ..., ...}``), or ``{"name": ..., "param": ...}``."""
    if isinstance(spec, ConditioningStrategy):
        return spec
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
        strategy: ConditioningStrategy = Prior()
    else:
        try:
            value = float(param)
        except ValueError:
            raise ValueError(
                f"strategy {name!r} needs a number, as in '{name}:1.0'; got {spec!r}"
            ) from None
        strategy = cls(value)
    if state is not None:
        strategy.load_state_dict(state)
    return strategy
