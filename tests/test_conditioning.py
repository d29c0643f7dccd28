"""Conditioning strategies: the ways to ask for reward, as pure functions of P(R | s_0)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ogm.agents import make_strategy
from ogm.agents.conditioning import ExpTilted, Percentile, Quantilizer

CENTERS = np.linspace(-2.0, 5.0, 8)


@st.composite
def return_distributions(draw):
    """A batch of distributions over 8 bins, some with empty bins."""
    rows = draw(st.integers(1, 4))
    weights = draw(
        st.lists(
            st.lists(st.sampled_from([0.0, 0.01, 0.1, 0.5, 1.0, 3.0]), min_size=8, max_size=8),
            min_size=rows,
            max_size=rows,
        ).filter(lambda w: all(sum(row) > 0 for row in w))
    )
    probs = np.array(weights)
    return probs / probs.sum(axis=1, keepdims=True)


def quantile_bin(probs: np.ndarray, level: float) -> np.ndarray:
    """Index of the first bin whose cumulative probability reaches ``level``."""
    return (np.cumsum(probs, axis=1) < level - 1e-9).sum(axis=1)


@settings(max_examples=200, deadline=None)
@given(return_distributions(), st.sampled_from([0.01, 0.1, 0.25, 0.5, 0.9, 1.0]))
def test_quantilizer_is_the_renormalised_top_q(probs, q):
    target = Quantilizer(q).target_probs(probs, CENTERS)
    lowest = quantile_bin(probs, 1 - q)
    for row, b in enumerate(lowest):
        assert target[row, :b].sum() == 0  # never below the (1 - q) quantile
        # bins wholly above the quantile keep their probability, scaled by 1 / q
        np.testing.assert_allclose(target[row, b + 1 :], probs[row, b + 1 :] / q, atol=1e-9)
    np.testing.assert_allclose(target.sum(axis=1), 1.0)
    draws = Quantilizer(q).targets(probs, CENTERS, np.random.default_rng(0))
    assert np.all(draws >= CENTERS[lowest])


@settings(max_examples=100, deadline=None)
@given(return_distributions(), st.floats(-3.0, 3.0))
def test_exp_tilted_weights(probs, kappa):
    target = ExpTilted(kappa).target_probs(probs, CENTERS)
    expected = probs * np.exp(kappa * CENTERS)
    np.testing.assert_allclose(target, expected / expected.sum(axis=1, keepdims=True), atol=1e-9)


def test_exp_tilted_zero_is_the_prior_and_sampling_follows_the_weights():
    probs = np.array([[0.1, 0.0, 0.2, 0.3, 0.0, 0.1, 0.2, 0.1]])
    np.testing.assert_allclose(make_strategy("exp_tilted:0").target_probs(probs, CENTERS), probs)
    np.testing.assert_allclose(make_strategy("prior").target_probs(probs, CENTERS), probs)
    rng = np.random.default_rng(0)
    draws = make_strategy("prior").targets(np.repeat(probs, 20000, axis=0), CENTERS, rng)
    freq = (draws[:, None] == CENTERS[None]).mean(axis=0)
    assert np.abs(freq - probs[0]).max() < 0.01  # 4 sigma at n = 20000
    assert set(np.unique(draws)) <= set(CENTERS[probs[0] > 0])  # empty bins never drawn


def test_percentile_tracks_the_observed_returns_exactly():
    strategy = make_strategy("percentile:95")
    rng = np.random.default_rng(0)
    seen: list[float] = []
    for _ in range(20):
        batch = rng.normal(size=rng.integers(1, 6))
        strategy.observe(batch)
        seen.extend(batch)
        targets = strategy.targets(np.ones((3, 8)) / 8, CENTERS, rng)
        assert np.all(targets == np.percentile(seen, 95))
    restored = make_strategy(json.loads(json.dumps(strategy.state_dict())))
    assert isinstance(restored, Percentile) and restored.returns == strategy.returns


def test_percentile_without_returns_is_a_clear_error():
    with pytest.raises(RuntimeError, match="observed no returns"):
        make_strategy("percentile:50").targets(np.ones((1, 8)) / 8, CENTERS, None)


def test_fixed_and_specs_round_trip():
    assert np.all(make_strategy("fixed:1.5").targets(np.ones((4, 8)), CENTERS, None) == 1.5)
    for spec in ("fixed:1.5", "percentile:95.0", "quantilizer:0.1", "exp_tilted:3.0", "prior"):
        strategy = make_strategy(spec)
        assert make_strategy(strategy.spec()).spec() == strategy.spec()
        assert (
            make_strategy(json.loads(json.dumps(strategy.state_dict()))).spec() == strategy.spec()
        )
    assert make_strategy({"name": "quantilizer", "param": 0.2}).q == 0.2


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("boltzmann:1", "unknown strategy 'boltzmann'"),
        ("fixed", "needs a number"),
        ("quantilizer:0", r"q must be in \(0, 1\]"),
        ("percentile:101", r"must be in \[0, 100\]"),
        ("prior:3", "takes no parameter"),
    ],
)
def test_bad_specs_name_the_problem(spec, message):
    with pytest.raises(ValueError, match=message):
        make_strategy(spec)
