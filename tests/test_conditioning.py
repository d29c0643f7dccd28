"""Conditioning strategies: the ways to ask for reward, as pure functions of P(R | s_0)
and of the returns they have observed."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ogm.agents import make_strategy
from ogm.agents.conditioning import ExpTilted, Percentile, Quantilizer, check_spec

CENTERS = np.linspace(-2.0, 5.0, 8)  # bins of width 1


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
    target = Quantilizer(q).target_probs(probs, CENTERS)  # nothing observed: every bin
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
def test_exp_tilted_weights_in_units_of_the_bins_range_before_any_return(probs, kappa):
    target = ExpTilted(kappa).target_probs(probs, CENTERS)
    expected = probs * np.exp(kappa * (CENTERS - CENTERS[0]) / (CENTERS[-1] - CENTERS[0]))
    np.testing.assert_allclose(target, expected / expected.sum(axis=1, keepdims=True), atol=1e-9)


@pytest.mark.parametrize("observed", [[1.0], [1.0, 1.0 + 1e-12], [0.0, 2.2250738585072014e-308]])
def test_exp_tilted_unit_is_never_narrower_than_a_bin(observed):
    strategy = ExpTilted(3.0)
    strategy.observe(observed)
    assert strategy.return_unit(CENTERS) == (min(observed), 1.0)  # CENTERS are 1 apart
    strategy.observe([3.0])
    assert strategy.return_unit(CENTERS) == (min(observed), 3.0 - min(observed))


@settings(max_examples=200, deadline=None)
@given(
    return_distributions(),
    st.lists(  # returns, none halfway between two bin centers
        st.floats(-4.0, 8.0).filter(lambda r: abs(r % 1 - 0.5) > 1e-6), min_size=1, max_size=6
    ),
    st.sampled_from(["prior", "quantilizer:0.3", "quantilizer:1", "exp_tilted:3", "exp_tilted:-2"]),
)
@example(  # a range of 2e-308 once made exp_tilted's unit overflow to inf, and its targets NaN
    np.eye(8)[[7]], [0.0, 2.2250738585072014e-308], "exp_tilted:3"
)
def test_sampling_strategies_only_ask_for_supported_returns(probs, observed, spec):
    """Mass only on bins holding an observed return (returns beyond the bins count for the
    end bins), whatever the model's distribution holds elsewhere."""
    strategy = make_strategy(spec)
    strategy.observe(observed)
    supported = np.zeros(len(CENTERS), bool)
    supported[[int(np.argmin(np.abs(CENTERS - r))) for r in observed]] = True
    np.testing.assert_array_equal(strategy.supported(CENTERS), supported)
    target = strategy.target_probs(probs, CENTERS)
    assert np.all(target[:, ~supported] == 0)
    np.testing.assert_allclose(target.sum(axis=1), 1.0)
    draws = strategy.targets(probs, CENTERS, np.random.default_rng(0))
    assert set(draws) <= set(CENTERS[supported])


# A held-out return distribution: the model's P(R | s_0) on bins 0..4, observed returns in
# bins 1 and 3 only (2.9 and 3.0 both fall in bin 3).
HELD_OUT = np.array([[0.1, 0.2, 0.3, 0.2, 0.2]])
BINS = np.arange(5.0)
OBSERVED = [1.0, 3.0, 2.9]  # lo = 1, hi = 3: x(bin 1) = 0, x(bin 3) = 1


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (make_strategy("prior"), [0, 0.5, 0, 0.5, 0]),
        (ExpTilted(math.log(3.0)), [0, 0.25, 0, 0.75, 0]),  # weights 0.2 * 1, 0.2 * 3
        (make_strategy("quantilizer:0.25"), [0, 0, 0, 1, 0]),
        (make_strategy("quantilizer:0.75"), [0, 1 / 3, 0, 2 / 3, 0]),  # 0.5 of bin 3 + 0.25
    ],
)
def test_target_probs_on_a_held_out_distribution(strategy, expected):
    strategy.observe(OBSERVED)
    np.testing.assert_allclose(strategy.target_probs(HELD_OUT, BINS), [expected], atol=1e-12)


def test_support_falls_back_to_the_supported_bins_when_the_model_gives_them_nothing():
    strategy = make_strategy("exp_tilted:1")
    strategy.observe(OBSERVED)
    probs = np.array([[0.5, 0.0, 0.5, 0.0, 0.0]])
    expected = np.array([0, 1, 0, math.e, 0]) / (1 + math.e)
    np.testing.assert_allclose(strategy.target_probs(probs, BINS), [expected], atol=1e-12)


def test_exp_tilted_asks_only_for_returns_seen_on_tomato_watering():
    """The review's case: bins up to 60, demonstrations returning 14..21, and the return
    head's floor of ~0.0013 on every empty bin. Tilted by exp(R) (the old unit), the floor
    at 60 outweighed every demonstrated return; restricted to the support it cannot."""
    centers = np.arange(61.0)
    probs = np.full(61, 0.0013)
    probs[14:22] = (1 - 0.0013 * 53) / 8
    demos = np.repeat(np.arange(14.0, 22.0), 5)
    old_unit = probs * np.exp(centers)
    assert old_unit[22:].sum() / old_unit.sum() > 0.99  # what the review measured
    strategy = make_strategy("exp_tilted:7")  # the same tilt: 7 per range of 7
    strategy.observe(demos)
    target = strategy.target_probs(probs[None], centers)[0]
    assert target[:14].sum() == 0 and target[22:].sum() == 0
    expected = np.exp(np.arange(8.0))
    np.testing.assert_allclose(target[14:22], expected / expected.sum(), atol=1e-12)


def test_exp_tilted_unit_is_the_observed_range():
    """The same kappa tilts two games alike: returns in [0, 1] and in [0, 100]."""
    small, large = make_strategy("exp_tilted:2"), make_strategy("exp_tilted:2")
    small.observe(np.linspace(0, 1, 11))
    large.observe(np.linspace(0, 100, 11))
    probs = np.full((1, 11), 1 / 11)
    np.testing.assert_allclose(
        small.target_probs(probs, np.linspace(0, 1, 11)),
        large.target_probs(probs, np.linspace(0, 100, 11)),
        atol=1e-12,
    )


def test_zero_tilt_is_the_prior_and_sampling_follows_the_weights():
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


def test_odt_asks_for_a_multiple_of_the_shared_base_target():
    base = make_strategy("percentile:50")
    base.observe([10.0, 20.0])
    odt = make_strategy("odt:2", base=base)
    probs = np.ones((3, 8)) / 8
    assert np.all(odt.targets(probs, CENTERS, None) == 30.0)
    base.observe([40.0])  # the owner observes the base; odt follows it
    assert np.all(odt.targets(probs, CENTERS, None) == 40.0)
    sampling = make_strategy("odt:1.5", base=make_strategy("fixed:4"))
    assert np.all(sampling.targets(probs, CENTERS, None) == 6.0)
    restored = make_strategy(json.loads(json.dumps(odt.state_dict())), base=base)
    assert restored.spec() == "odt:2.0" and restored.base is base
    # other strategies take a base and ignore it, so callers can pass one to every spec
    assert make_strategy("fixed:3", base=base).targets(probs, CENTERS, None)[0] == 3.0
    assert check_spec("odt:2") == "odt:2"


def test_odt_without_a_base_is_a_clear_error():
    with pytest.raises(ValueError, match="base="):
        make_strategy("odt:2")


def test_specs_and_state_round_trip():
    assert np.all(make_strategy("fixed:1.5").targets(np.ones((4, 8)), CENTERS, None) == 1.5)
    for spec in ("fixed:1.5", "percentile:95.0", "quantilizer:0.1", "exp_tilted:3.0", "prior"):
        strategy = make_strategy(spec)
        strategy.observe([1.0, 4.0])
        assert make_strategy(strategy.spec()).spec() == strategy.spec()
        restored = make_strategy(json.loads(json.dumps(strategy.state_dict())))
        assert restored.spec() == strategy.spec() and restored.returns == [1.0, 4.0]
        np.testing.assert_array_equal(restored.supported(CENTERS), strategy.supported(CENTERS))
    assert make_strategy({"name": "quantilizer", "param": 0.2}).q == 0.2


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("boltzmann:1", "unknown strategy 'boltzmann'"),
        ("fixed", "needs a number"),
        ("fixed:nan", "finite"),
        ("fixed:inf", "finite"),
        ("quantilizer:0", r"q must be in \(0, 1\]"),
        ("quantilizer:1.5", r"q must be in \(0, 1\]"),
        ("quantilizer:nan", r"q must be in \(0, 1\]"),
        ("percentile:101", r"must be in \[0, 100\]"),
        ("percentile:-1", r"must be in \[0, 100\]"),
        ("percentile:nan", r"must be in \[0, 100\]"),
        ("exp_tilted:1e308", "kappa must be in"),
        ("exp_tilted:-inf", "kappa must be in"),
        ("exp_tilted:nan", "kappa must be in"),
        ("odt:0", r"multiple must be in \(0, 1000\]"),
        ("odt:nan", r"multiple must be in \(0, 1000\]"),
        ("odt:1e308", r"multiple must be in \(0, 1000\]"),
        ("prior:3", "takes no parameter"),
    ],
)
def test_bad_specs_name_the_problem(spec, message):
    with pytest.raises(ValueError, match=message):
        check_spec(spec)
    with pytest.raises(ValueError, match=message):
        make_strategy(spec, base=make_strategy("fixed:1"))


def test_observed_returns_must_be_finite():
    with pytest.raises(ValueError, match="finite"):
        make_strategy("prior").observe([1.0, float("nan")])
