"""Emergence metrics on hand-made event sequences, and statistics across seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ogm.analysis.emergence import emergence, return_performance_path, trailing_mean
from ogm.analysis.plots import curve_across_seeds
from ogm.analysis.stats import iqm, iqm_ci, stratified_bootstrap_iqm

L = 10  # steps per hand-made episode


def metrics(counts, **kwargs):
    counts = np.asarray(counts, dtype=float)
    n = len(counts)
    returns = kwargs.pop("returns", np.arange(n, dtype=float))
    performances = kwargs.pop("performances", -np.arange(n, dtype=float))
    return emergence(counts, np.full(n, L), returns, performances, **kwargs)


def test_never_occurring_behaviour_is_censored_at_the_budget():
    m = metrics(np.zeros(30))
    assert (m.onset, m.t10, m.t50, m.t90, m.decisiveness) == (30, 30, 30, 30, 30)
    assert m.onset_censored and m.t10_censored and m.t50_censored and m.t90_censored
    assert m.decisiveness_censored
    assert math.isnan(m.commitment)
    assert m.episodes_with_behaviour == 0 and m.final_share == 0.0


def test_sudden_full_episode_switch():
    # 20 safe episodes, then the bucket on the head for every step of 20 episodes.
    m = metrics([0] * 20 + [L] * 20, window=10)
    assert (m.onset, m.t10, m.t50, m.t90) == (21, 21, 25, 29)
    assert not (m.onset_censored or m.t10_censored or m.t50_censored or m.t90_censored)
    assert m.decisiveness == 8 and not m.decisiveness_censored
    assert m.commitment == 1.0
    assert m.episodes_with_behaviour == 20
    assert m.final_share == 1.0  # last 10% = 4 episodes
    assert m.final_return == np.mean([36, 37, 38, 39])
    assert m.final_performance == -np.mean([36, 37, 38, 39])


def test_indecisive_partial_behaviour_never_reaches_90_percent():
    # Every other episode, half of its steps: the share plateaus at 50%.
    counts = [0, 5] * 25
    m = metrics(counts, window=10)
    assert m.onset == 2
    assert m.t10 == 2  # 1 of the first 2 episodes
    assert not m.t50_censored
    assert m.t90_censored and m.t90 == 50
    assert m.decisiveness_censored and m.decisiveness == 50 - m.t10
    assert m.commitment == 0.5
    assert m.final_share == 0.6  # the last 10% (5 episodes) hold counts 5, 0, 5, 0, 5


def test_commitment_averages_within_showing_episodes_only():
    m = metrics([0, 2, 0, 0, 6, 0, 10, 0])
    assert m.commitment == pytest.approx((0.2 + 0.6 + 1.0) / 3)
    assert m.episodes_with_behaviour == 3


def test_window_at_start_counts_only_episodes_so_far():
    m = metrics([L] + [0] * 19, window=10)
    assert (m.onset, m.t10, m.t50, m.t90, m.decisiveness) == (1, 1, 1, 1, 0)


def test_explicit_final_window():
    m = metrics([0] * 10, final_window=3, returns=np.arange(10.0))
    assert m.final_return == 8.0


@pytest.mark.parametrize(
    ("counts", "lengths", "match"),
    [
        ([11], [10], r"event counts must lie in \[0, episode length\]"),
        ([1, 2], [10], "lengths has shape"),
        ([], [], "at least one episode"),
        ([1], [0], "positive length"),
    ],
)
def test_bad_input_is_named(counts, lengths, match):
    n = len(counts)
    with pytest.raises(ValueError, match=match):
        emergence(np.array(counts), np.array(lengths), np.zeros(n), np.zeros(n))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, L), min_size=1, max_size=80), st.integers(1, 15))
def test_times_are_ordered_and_censoring_is_consistent(counts, window):
    m = metrics(counts, window=window)
    n = len(counts)
    assert 1 <= m.onset <= m.t10 <= m.t50 <= m.t90 <= n
    share = trailing_mean(np.array(counts) > 0, window)
    for key, level in (("t10", 0.1), ("t50", 0.5), ("t90", 0.9)):
        reached = bool((share >= level - 1e-12).any())
        assert getattr(m, f"{key}_censored") == (not reached)
    assert m.onset_censored == (max(counts) == 0)
    assert m.decisiveness >= 0
    if not m.t90_censored:
        assert m.decisiveness == m.t90 - m.t10
    if m.episodes_with_behaviour:
        assert 0 < m.commitment <= 1


def test_return_performance_path_is_chunk_means_in_order():
    path = return_performance_path(np.arange(10.0), np.arange(10.0) * -2, points=5)
    np.testing.assert_allclose(path, [[0.5, -1], [2.5, -5], [4.5, -9], [6.5, -13], [8.5, -17]])


# ----------------------------------------------------------------------------- statistics


def test_iqm_reference_values():
    assert iqm(np.arange(1, 9)) == 4.5  # mean of 3, 4, 5, 6
    assert iqm([1.0, 2.0, 30.0]) == 11.0  # fewer than 4 runs: nothing is cut


def test_constant_scores_have_a_zero_width_interval():
    est = iqm_ci(np.full(5, 3.0))
    assert (est.value, est.low, est.high, est.n) == (3.0, 3.0, 3.0, 5)


def test_bootstrap_resamples_within_tasks():
    # Each task is constant across runs: stratified resampling cannot change the pooled IQM.
    scores = np.array([[0.0, 100.0]] * 3)
    value, low, high = stratified_bootstrap_iqm(scores)
    assert value == low == high == 50.0


def test_bootstrap_is_seeded_and_rejects_nan():
    x = np.random.default_rng(1).normal(size=(7, 1))
    assert stratified_bootstrap_iqm(x, seed=3) == stratified_bootstrap_iqm(x, seed=3)
    with pytest.raises(ValueError, match="NaN"):
        stratified_bootstrap_iqm(np.array([[np.nan], [1.0]]))


def test_interval_covers_the_true_iqm_about_95_percent():
    rng = np.random.default_rng(0)
    trials = 300
    covered = 0
    for i in range(trials):
        est = iqm_ci(rng.normal(size=20), reps=1000, seed=i)
        covered += est.low <= 0.0 <= est.high  # the IQM of a standard normal is 0
    assert 0.85 <= covered / trials <= 0.99


def test_curve_across_seeds_on_common_span():
    x1, y1 = np.array([10, 20, 30, 40]), np.array([1.0, 2.0, 3.0, 4.0])
    x2, y2 = np.array([15, 25, 35]), np.array([1.0, 2.0, 3.0])
    curve = curve_across_seeds([(x1, y1), (x2, y2)], points=5)
    np.testing.assert_allclose(curve.x, np.linspace(15, 35, 5))
    # at x=15: run1 -> 1 (episode at 10), run2 -> 1; at x=35: run1 -> 3, run2 -> 3
    assert curve.value[0] == 1.0 and curve.value[-1] == 3.0
    assert (curve.low <= curve.value).all() and (curve.value <= curve.high).all()
    assert curve_across_seeds([(np.array([1, 2]), y1[:2]), (np.array([5, 6]), y1[:2])]) is None
