"""Emergence metrics on hand-made training episodes, statistics across seeds, and how a
quantity across seeds is written into the report's cells."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ogm.analysis.emergence import Emergence, emergence, trailing_mean
from ogm.analysis.findings import describe_time, describe_values
from ogm.analysis.plots import curve_across_seeds
from ogm.analysis.stats import iqm, iqm_ci, kaplan_meier, stratified_bootstrap_iqm

L = 100  # steps per hand-made episode


def metrics(counts, *, lengths=None, budget=None, window=20) -> Emergence:
    """Emergence of training episodes with these event counts; env_steps at episode ends."""
    counts = np.asarray(counts, dtype=float)
    lengths = np.full(len(counts), L) if lengths is None else np.asarray(lengths)
    steps = np.cumsum(lengths)
    return emergence(
        steps, counts, lengths, budget=steps[-1] if budget is None else budget, window=window
    )


def test_one_early_event_is_an_onset_not_a_crossing():
    # The review's case: one event in episode 2 of 320. The old code's window held 2
    # episodes there, so it reported t10 = t50 = 2; only full windows may cross.
    counts = np.zeros(320)
    counts[1] = 5
    m = metrics(counts)
    assert m.onset == 200.0  # env steps at the end of episode 2
    assert (m.t10, m.t50, m.t90, m.decisiveness) == (None, None, None, None)
    assert m.showed and m.episodes_with_behaviour == 1


def test_times_are_env_steps_of_training_episodes():
    # 30 safe episodes of 50 steps, then 40 of 100 steps with the event on every step.
    lengths = [50] * 30 + [100] * 40
    m = metrics([0] * 30 + [100] * 40, lengths=lengths, window=10)
    steps = np.cumsum(lengths)  # episode i (1-based) ends at steps[i - 1]
    # onset: episode 31; t10: 1 of the last 10 (episode 31); t50: 5 (35); t90: 9 (39).
    assert (m.onset, m.t10, m.t50, m.t90) == (steps[30], steps[30], steps[34], steps[38])
    assert m.t10 == 1600.0 and m.t90 == 2400.0
    assert m.decisiveness == 800.0
    assert m.commitment == 1.0 and m.budget == steps[-1]


def test_not_reached_is_none_and_censored_at_the_budget():
    m = metrics(np.zeros(30), budget=5000.0)
    assert (m.onset, m.t10, m.t50, m.t90, m.decisiveness) == (None,) * 5
    assert not m.showed and math.isnan(m.commitment)
    assert m.survival("t50") == (5000.0, False)
    assert m.survival("decisiveness") is None  # never started: not at risk
    # t10 reached, t90 not: decisiveness is censored at budget - t10.
    half = metrics([0, 50] * 25, window=10)  # every other episode: the share plateaus at 50%
    assert half.t10 is not None and half.t90 is None
    assert half.survival("decisiveness") == (half.budget - half.t10, False)
    assert half.commitment == 0.5


def test_commitment_averages_within_showing_episodes_only():
    m = metrics([0, 20, 0, 0, 60, 0, 100, 0])
    assert m.commitment == pytest.approx((0.2 + 0.6 + 1.0) / 3)
    assert m.episodes_with_behaviour == 3


@pytest.mark.parametrize(
    ("steps", "counts", "lengths", "budget", "match"),
    [
        ([10], [11], [10], 10, r"event counts must lie in \[0, episode length\]"),
        ([10], [1, 2], [10, 10], 10, "env_steps has shape"),
        ([], [], [], 0, "at least one training episode"),
        ([10], [1], [0], 10, "positive length"),
        ([20, 10], [0, 0], [10, 10], 20, "must not decrease"),
        ([10, 20], [0, 0], [10, 10], 15, "below the last episode's env_steps"),
    ],
)
def test_bad_input_is_named(steps, counts, lengths, budget, match):
    with pytest.raises(ValueError, match=match):
        emergence(np.array(steps), np.array(counts), np.array(lengths), budget=budget)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 10), st.integers(10, 30)), min_size=1, max_size=80),
    st.integers(1, 15),
)
def test_times_are_ordered_logged_env_steps_reached_only_on_full_windows(episodes, window):
    counts, lengths = (np.array(c) for c in zip(*episodes, strict=True))
    m = metrics(counts, lengths=lengths, window=window)
    steps = np.cumsum(lengths)
    shows = counts > 0
    assert m.showed == bool(shows.any())
    times = [t for t in (m.onset, m.t10, m.t50, m.t90) if t is not None]
    assert times == sorted(times) and set(times) <= set(steps.tolist())
    for key, level in (("t10", 0.1), ("t50", 0.5), ("t90", 0.9)):
        full = [shows[i - window + 1 : i + 1].mean() for i in range(window - 1, len(shows))]
        hits = [i + window - 1 for i, s in enumerate(full) if s >= level - 1e-12]
        assert getattr(m, key) == (steps[hits[0]] if hits else None)
    if m.episodes_with_behaviour:
        assert 0 < m.commitment <= 1


def test_trailing_mean_is_nan_until_the_window_is_full():
    np.testing.assert_allclose(trailing_mean([1, 0, 1, 1], 2), [np.nan, 0.5, 0.5, 1.0])


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


def test_kaplan_meier_reference_values():
    # Runs reached it at 1, 3 and 4; two were censored (budgets 2 and 5).
    km = kaplan_meier([1, 2, 3, 4, 5], [True, False, True, True, False])
    np.testing.assert_allclose(km.times, [1, 3, 4])
    # S = 4/5, then x 2/3 (3 at risk at t=3), then x 1/2 (2 at risk at t=4).
    np.testing.assert_allclose(km.share, [1 / 5, 1 - 4 / 5 * 2 / 3, 1 - 4 / 5 * 2 / 3 / 2])
    np.testing.assert_allclose(km.censored, [2, 5])
    assert km.median() == 4.0
    np.testing.assert_allclose(km.at([0, 1, 2.5, 10]), [0, 0.2, 0.2, km.share[-1]])


def test_kaplan_meier_without_censoring_is_the_empirical_share():
    km = kaplan_meier([3, 1, 2, 2], [True] * 4)
    np.testing.assert_allclose(km.times, [1, 2, 3])
    np.testing.assert_allclose(km.share, [0.25, 0.75, 1.0])
    assert km.median() == 2.0
    assert kaplan_meier([9, 9], [False, False]).median() is None


def test_curve_across_seeds_on_common_span():
    x1, y1 = np.array([10, 20, 30, 40]), np.array([1.0, 2.0, 3.0, 4.0])
    x2, y2 = np.array([15, 25, 35]), np.array([1.0, 2.0, 3.0])
    curve = curve_across_seeds([(x1, y1), (x2, y2)])
    np.testing.assert_allclose(curve.x, [15, 20, 25, 30, 35])  # the runs' own steps in span
    np.testing.assert_allclose(curve.value, [1.0, 1.5, 2.0, 2.5, 3.0])
    # Two seeds: the band is the range over seeds, not a bootstrap "CI".
    assert not curve.ci
    np.testing.assert_allclose(curve.low, [1, 1, 2, 2, 3])
    np.testing.assert_allclose(curve.high, [1, 2, 2, 3, 3])
    assert curve_across_seeds([(np.array([1, 2]), y1[:2]), (np.array([5, 6]), y1[:2])]) is None
    many = curve_across_seeds([(np.arange(500.0), np.full(500, s)) for s in range(5)])
    assert many.ci and len(many.x) == 100
    assert (many.low <= many.value).all() and (many.value <= many.high).all()


# ----------------------------------------------------------------------------- cell texts


def at(onset: float | None, budget: float = 64_000.0) -> Emergence:
    """A run's emergence with every time at ``onset`` (None: not reached by the budget)."""
    return Emergence(
        episodes=640,
        budget=budget,
        window=20,
        onset=onset,
        t10=onset,
        t50=onset,
        t90=onset,
        commitment=1.0 if onset is not None else float("nan"),
        episodes_with_behaviour=int(onset is not None),
    )


def test_fewer_than_five_seeds_show_per_seed_times_never_an_interval():
    text = describe_time([at(12_800), at(14_400), at(None)], "t50")
    assert text == "12,800 · 14,400 · not by 64,000"


def test_every_run_reached_gives_the_iqm_with_its_interval():
    text = describe_time([at(t) for t in (1000, 1200, 1400, 1600, 1800)], "t50")
    value, interval = text.split(" [")
    assert value == "1,400"  # the IQM of five: the mean of the middle three
    low, high = (float(v.replace(",", "")) for v in interval.rstrip("]").split(", "))
    assert 1000 <= low <= 1400 <= high <= 1800


def test_censored_times_are_counted_never_averaged():
    # 3 of 5 reached: an average with the budget as a value (the old code) would say ~38,000.
    runs = [at(1000), at(2000), at(3000), at(None), at(None)]
    assert describe_time(runs, "t50") == "3/5 by 64,000; KM median 3,000"
    # Fewer than half reached: no median.
    assert describe_time([at(1000), *[at(None)] * 4], "t90") == "1/5 by 64,000"
    # Different budgets: their span; a run censored early counts only while it is at risk,
    # so half of the runs are estimated to reach it by 2,000 though 2 of 5 were seen to.
    runs = [at(1000, 9e3), at(None, 1500.0), at(None, 1500.0), at(2000, 9e3), at(None, 9e3)]
    assert describe_time(runs, "onset") == "2/5 by 1,500–9,000; KM median 2,000"


def test_describe_values_per_seed_below_five_runs():
    assert describe_values([1.0, 2.0, float("nan")]) == "1.00 · 2.00 · –"
    text = describe_values([3.0] * 4 + [float("nan")] * 2)
    assert text == "3.00 [3.00, 3.00] (4/6 runs)"
    assert describe_values([]) == "n/a"
