"""LAMB (ogm.train.lamb): the paper's update rule, convergence, resumable state, bad settings."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from ogm.train.lamb import Lamb
from ogm.train.rundir import pack_state, unpack_state


def paper_step(
    x: list[float],
    grads: list[list[float]],
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
) -> list[float]:
    """Algorithm 2 of You et al. (2020), phi the identity, in plain Python floats: the
    parameter after one step per gradient in ``grads``."""
    beta1, beta2 = betas
    m, v = [0.0] * len(x), [0.0] * len(x)
    for t, g in enumerate(grads, start=1):
        m = [beta1 * mi + (1 - beta1) * gi for mi, gi in zip(m, g, strict=True)]
        v = [beta2 * vi + (1 - beta2) * gi * gi for vi, gi in zip(v, g, strict=True)]
        r = [
            (mi / (1 - beta1**t)) / (math.sqrt(vi / (1 - beta2**t)) + eps)
            for mi, vi in zip(m, v, strict=True)
        ]
        u = [ri + weight_decay * xi for ri, xi in zip(r, x, strict=True)]
        x_norm, u_norm = math.hypot(*x), math.hypot(*u)
        trust = x_norm / u_norm if x_norm > 0 and u_norm > 0 else 1.0
        x = [xi - lr * trust * ui for xi, ui in zip(x, u, strict=True)]
    return x


def test_steps_equal_the_papers_formula_per_layer() -> None:
    # by hand, step 1 of the weight: m_hat = g, v_hat = g^2, so r = g / (|g| + eps) ~ (1, -1);
    # u = r + 0.1 x = (1.3, -0.6); trust = ||x|| / ||u|| = 5 / sqrt(2.05); x -= 0.1 trust u
    weight = torch.nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
    bias = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))  # ||x|| = 0: trust 1
    settings = {"lr": 0.1, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.1}
    optimizer = Lamb([weight, bias], **settings)
    grads = {"weight": [[2.0, -1.0], [0.5, 3.0]], "bias": [[1.0, -4.0], [2.0, 2.0]]}
    for step in range(2):
        weight.grad = torch.tensor(grads["weight"][step], dtype=torch.float64)
        bias.grad = torch.tensor(grads["bias"][step], dtype=torch.float64)
        optimizer.step()
        if step == 0:
            r = [2 / (2 + 1e-8), -1 / (1 + 1e-8)]
            u = [r[0] + 0.1 * 3, r[1] + 0.1 * 4]
            trust = 5 / math.hypot(*u)
            by_hand = [3 - 0.1 * trust * u[0], 4 - 0.1 * trust * u[1]]
            assert weight.tolist() == pytest.approx(by_hand, rel=1e-12)
            # the layer's step has norm lr * ||x||, whatever the gradient's scale
            assert math.dist(weight.tolist(), [3, 4]) == pytest.approx(0.1 * 5, rel=1e-12)
            # a layer at zero moves by lr * u as under Adam: -0.1 * sign(g)
            assert bias.tolist() == pytest.approx([-0.1, 0.1], rel=1e-7)
    # the second step uses bias-corrected moments of both gradients (t = 2)
    assert weight.tolist() == pytest.approx(
        paper_step([3.0, 4.0], grads["weight"], **settings), rel=1e-12
    )
    assert bias.tolist() == pytest.approx(paper_step([0.0, 0.0], grads["bias"], **settings))
    assert optimizer.state[weight]["step"].item() == 2.0


def test_a_zero_update_leaves_the_parameter_unchanged() -> None:
    x = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    optimizer = Lamb([x], lr=0.1)
    x.grad = torch.zeros(2)
    optimizer.step()
    assert x.tolist() == [1.0, -2.0]


def test_it_minimises_a_quadratic() -> None:
    torch.manual_seed(0)
    curvature = torch.tensor([1.0, 10.0, 0.1, 3.0])
    optimum = torch.tensor([2.0, -1.0, 0.5, 3.0])
    x = torch.nn.Parameter(torch.randn(4))
    optimizer = Lamb([x], lr=0.05)
    # the step's norm is lr * ||x|| whatever the gradient, so the learning rate must decay
    # for the iterate to settle (as every LAMB schedule does)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: 0.99**k)

    def loss() -> torch.Tensor:
        return 0.5 * (curvature * (x - optimum) ** 2).sum()

    start = loss().item()
    for _ in range(1000):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
        scheduler.step()
    assert loss().item() < 1e-9 * start  # measured: 4e-13
    assert torch.allclose(x.detach(), optimum, atol=1e-4)


def test_state_dict_round_trip_resumes_identically() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    groups = [
        {"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": 0.01},
        {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0},
    ]
    optimizer = Lamb(groups, lr=1e-2)
    data = torch.randn(6, 16, 3), torch.randn(6, 16, 1)

    def train(net: torch.nn.Module, opt: torch.optim.Optimizer, steps: range) -> None:
        for k in steps:
            opt.zero_grad()
            torch.nn.functional.mse_loss(net(data[0][k]), data[1][k]).backward()
            opt.step()

    train(model, optimizer, range(3))
    # through the checkpoint format: tensors apart, the rest as JSON
    tensors, skeleton = pack_state(optimizer.state_dict(), "optim")
    stored = unpack_state(json.loads(json.dumps(skeleton)), tensors)
    resumed_model = copy.deepcopy(model)
    resumed = Lamb(
        [
            {"params": [p for p in resumed_model.parameters() if p.dim() >= 2]},
            {"params": [p for p in resumed_model.parameters() if p.dim() < 2]},
        ],
        lr=1.0,  # replaced by the stored settings
    )
    resumed.load_state_dict(stored)
    assert [g["weight_decay"] for g in resumed.param_groups] == [0.01, 0.0]
    train(model, optimizer, range(3, 6))
    train(resumed_model, resumed, range(3, 6))
    for a, b in zip(model.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert resumed.state[next(resumed_model.parameters())]["step"].item() == 6.0


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"lr": 0.0}, "lr"),
        ({"lr": -1e-3}, "lr"),
        ({"lr": math.nan}, "lr"),
        ({"betas": (1.0, 0.999)}, "betas"),
        ({"betas": (0.9, -0.1)}, "betas"),
        ({"betas": (0.9,)}, "betas"),
        ({"eps": 0.0}, "eps"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"weight_decay": math.inf}, "weight_decay"),
    ],
)
def test_bad_hyperparameters_are_named(settings: dict, named: str) -> None:
    x = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match=rf"Lamb: {named} must be .*, got"):
        Lamb([x], **settings)
    with pytest.raises(ValueError, match=rf"Lamb: {named} must be"):  # in a group's own
        Lamb([{"params": [x], **settings}])
