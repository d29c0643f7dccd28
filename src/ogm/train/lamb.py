"""LAMB: layer-wise adaptive moments for large-batch training (You, Li, Reddi et al. 2020).

The optimiser of the Online Decision Transformer. Written from Algorithm 2 of the paper
("Large Batch Optimization for Deep Learning: Training BERT in 76 minutes", ICLR 2020),
with the scaling function phi the identity. For every parameter tensor (a "layer") x at
step t, with gradient g:

    m = beta1 m + (1 - beta1) g            v = beta2 v + (1 - beta2) g^2
    m_hat = m / (1 - beta1^t)              v_hat = v / (1 - beta2^t)
    u = m_hat / (sqrt(v_hat) + eps) + weight_decay * x
    x = x - lr * (||x|| / ||u||) * u

Weight decay is decoupled from the gradient's moments (it enters the update, not g), as
in the paper. The trust ratio ``||x|| / ||u||`` is taken as 1 where either norm is 0 (a
layer initialised at zero, such as a bias, or a zero update), so such a layer moves by
``lr * u`` as under Adam.

The state holds the same entries as torch's Adam and AdamW (``step``, ``exp_avg``,
``exp_avg_sq``: the moments of the gradient), so a run may continue one optimiser's
moments with the other.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch


class Lamb(torch.optim.Optimizer):
    """LAMB (module doc) over ``params``: tensors, or groups of them with their own settings."""

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        check_hyperparameters(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        super().__init__(
            params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group, checking the settings it overrides (the constructor's groups too)."""
        check_hyperparameters(
            **{
                k: param_group[k]
                for k in ("lr", "betas", "eps", "weight_decay")
                if k in param_group
            }
        )
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One LAMB update of every parameter that has a gradient; returns ``closure()``'s
        loss when a closure (which recomputes the loss and its gradients) is given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise ValueError("Lamb does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = float(state["step"])
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(p.grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                denominator = (exp_avg_sq / (1 - beta2**t)).sqrt_().add_(group["eps"])
                update = (exp_avg / (1 - beta1**t)).div_(denominator)
                if group["weight_decay"]:
                    update.add_(p, alpha=group["weight_decay"])
                weight_norm = torch.linalg.vector_norm(p)
                update_norm = torch.linalg.vector_norm(update)
                # a tensor, not a Python float: no device synchronisation per layer
                trust = torch.where(
                    (weight_norm > 0) & (update_norm > 0),
                    weight_norm / update_norm,
                    torch.ones_like(weight_norm),
                )
                p.add_(update.mul_(trust), alpha=-group["lr"])
        return loss


def _is_number(value: Any) -> bool:
    return isinstance(value, float | int) and not isinstance(value, bool) and math.isfinite(value)


# each setting's condition, and how an error message states it
_RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "lr": (lambda x: _is_number(x) and x > 0, "a positive finite number"),
    "eps": (lambda x: _is_number(x) and x > 0, "a positive finite number"),
    "weight_decay": (lambda x: _is_number(x) and x >= 0, "a non-negative finite number"),
    "betas": (
        lambda x: (
            isinstance(x, tuple | list)
            and len(x) == 2
            and all(_is_number(b) and 0 <= b < 1 for b in x)
        ),
        "two numbers in [0, 1)",
    ),
}


def check_hyperparameters(**values: Any) -> None:
    """``ValueError`` naming the first of ``values`` (``lr``, ``betas``, ``eps``,
    ``weight_decay``) outside its range."""
    for name, value in values.items():
        valid, expected = _RANGES[name]
        if not valid(value):
            raise ValueError(f"Lamb: {name} must be {expected}, got {value!r}")
