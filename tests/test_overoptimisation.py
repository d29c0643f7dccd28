"""Gao et al.'s closed forms, their fits and peaks, and over-optimisation as an event."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from ogm.analysis.overoptimisation import (
    FamilyFit,
    GaoFit,
    KLCurve,
    KLPoint,
    fit_gao,
    fits_table,
    gao_gain,
    gao_peak,
    level_row,
    mean_curve,
    overoptimisation,
    peak_trends,
    run_events,
)
from ogm.analysis.report import _kl_series
from ogm.analysis.runs import Run

ALPHA, BETA = 1.2, 0.3


@pytest.mark.parametrize("form", ["bon", "rl"])
def test_a_noise_free_curve_gives_back_its_coefficients_and_its_peak(form):
    d = np.linspace(0.0, 6.0, 40)
    fit = fit_gao(form, d, gao_gain(form, d, ALPHA, BETA))
    assert (fit.alpha, fit.beta) == pytest.approx((ALPHA, BETA), abs=1e-9)
    assert fit.r2 == pytest.approx(1.0) and fit.rmse < 1e-9
    assert fit.alpha_ci is None  # one run: nothing to resample
    # the analytic peak is the curve's maximum
    fine = np.linspace(1e-6, 60.0, 600_001)
    curve = gao_gain(form, fine, ALPHA, BETA)
    assert fit.d_peak == pytest.approx(fine[np.argmax(curve)], abs=1e-3)
    assert fit.gain_peak == pytest.approx(curve.max(), abs=1e-9)


def test_peaks_by_hand():
    assert gao_peak("bon", 1.2, 0.3) == pytest.approx((2.0, 1.2))  # alpha/2beta, alpha^2/4beta
    d_star = math.exp(1.2 / 0.3 - 1)  # alpha - beta (log d + 1) = 0
    assert gao_peak("rl", 1.2, 0.3) == pytest.approx((d_star, 0.3 * d_star))
    assert gao_peak("bon", 1.0, 0.0) == (math.inf, math.inf)  # never turns down
    assert gao_peak("bon", -1.0, 0.5) == (0.0, 0.0)  # never rises
    # a tiny positive beta puts the RL form's turn past any float: infinite, not an overflow
    assert gao_peak("rl", 5.0, 1e-3) == (math.inf, math.inf)


def test_the_right_form_explains_more_than_the_wrong_one():
    d = np.linspace(0.05, 8.0, 50)
    for true, other in (("bon", "rl"), ("rl", "bon")):
        gain = gao_gain(true, d, 1.0, 0.25)
        right, wrong = fit_gao(true, d, gain), fit_gao(other, d, gain)
        assert right.rmse < 1e-9 and wrong.rmse > 0.02
        assert right.r2 == pytest.approx(1.0) and wrong.r2 < 0.995


def test_bootstrap_intervals_over_runs_cover_the_truth_at_about_their_level():
    """40 simulated experiments of 10 runs (fixed seed): the 95% intervals of alpha and of
    d* cover the true values in at least 34 (the 1% lower tail of Binomial(40, 0.95) is 35;
    the percentile bootstrap over 10 runs is a little narrow)."""
    rng = np.random.default_rng(0)
    d = np.tile(np.linspace(0.2, 5.0, 12), 10)
    runs = np.repeat(np.arange(10), 12)
    true_peak = gao_peak("bon", ALPHA, BETA)[0]
    covered_alpha = covered_peak = 0
    for trial in range(40):
        offsets = rng.normal(0, 0.1, 10)[runs]  # each run its own level, as seeds differ
        gain = gao_gain("bon", d, ALPHA, BETA) + offsets * d + rng.normal(0, 0.05, len(d))
        fit = fit_gao("bon", d, gain, runs, resamples=400, seed=trial)
        covered_alpha += fit.alpha_ci[0] <= ALPHA <= fit.alpha_ci[1]
        covered_peak += fit.d_peak_ci[0] <= true_peak <= fit.d_peak_ci[1]
        assert fit.runs == 10 and fit.points == 120
    assert covered_alpha >= 34 and covered_peak >= 34


def test_overoptimisation_onset_is_where_gold_falls_while_proxy_holds():
    clock = np.arange(0, 11) * 1000.0
    proxy = np.linspace(0.0, 10.0, 11)  # always rising
    gold = np.array([0.0, 2, 4, 6, 8, 10, 9.5, 8.9, 8.0, 6.0, 3.0])  # peak at 5,000
    event = overoptimisation(clock, proxy, gold, drop=0.1)
    assert event.peak == 5000 and event.gold_gain_at_peak == 10
    assert event.onset == 7000  # first drop of at least 1.0 (10% of the gain of 10)
    assert event.width == 2000 and event.past_peak == 5000
    assert event.gold_drop == 7.0 and event.proxy_rise == 5.0

    # the gold falls but so does the proxy: the proxy is not fooled, no onset
    falling = overoptimisation(clock, gold, gold)
    assert falling.onset is None and falling.width is None and falling.gold_drop == 7.0
    # the gold never falls: censored at the end
    rising = overoptimisation(clock, proxy, proxy)
    assert rising.onset is None and rising.peak == 10_000 and rising.past_peak == 0


def test_an_onset_needs_a_fall_larger_than_the_evaluation_noise():
    """A gain within noise makes 10% of it tiny: with each point's standard error, the fall
    must also exceed twice the standard error of the difference of the two means."""
    clock = np.arange(0, 5) * 1000.0
    proxy = np.linspace(0.0, 4.0, 5)
    gold = np.array([0.0, 0.01, 0.0, -0.02, -0.2])  # a noise-sized peak, then a real fall
    assert overoptimisation(clock, proxy, gold).onset == 2000  # 10% of a 0.01 gain
    se = np.full(5, 0.025)  # e.g. a spread of 0.2 over 64 episodes
    event = overoptimisation(clock, proxy, gold, gold_se=se)
    # 2 * sqrt(2) * 0.025 = 0.071: the fall of 0.03 at 3,000 is noise, 0.21 at 4,000 is not
    assert event.peak == 1000 and event.onset == 4000 and event.width == 3000
    with pytest.raises(ValueError, match="standard error"):
        overoptimisation(clock, proxy, gold, gold_se=-se)


def test_a_peak_below_the_smallest_measured_distance_is_not_compared():
    """The RL form rises with infinite slope at 0: a fit whose gold falls over all the
    measured d peaks between 0 and the first d, where the form is known not to hold."""
    d = np.array([0.0, 0.4, 0.6, 0.8, 1.0])
    falling = fit_gao("rl", d, gao_gain("rl", d, -0.06, 0.04))  # as OGM's fits at N = 30
    assert falling.d_peak == pytest.approx(math.exp(-0.06 / 0.04 - 1))  # 0.08
    low = FamilyFit("N=30", "OGM", falling, 1.0, d_first=0.4)
    high = FamilyFit("N=300", "OGM", _fit_at("N=300", 0.5, 1.0).fit, 1.0)
    (line,) = peak_trends([low, high])
    assert line.startswith("Fewer than two worlds with a fitted peak within the d measured")
    assert line.endswith(": OGM.")
    # with a second peak inside its range the agent gets its own sentence, the low one named
    higher = FamilyFit("N=3000", "OGM", _fit_at("N=3000", 0.8, 1.0).fit, 1.0)
    (line,) = peak_trends([low, high, higher])
    assert line.endswith("N=300: 0.50; N=3000: 0.80; it moves out at every step.")
    assert f"N=30: peak {falling.d_peak:.2f} below the smallest d measured (0.40)" in line
    assert fits_table([low]).rows[0][9] == "d* below the d measured"


def test_the_fits_table_gives_the_start_the_range_of_d_and_far_peaks_in_powers_of_ten():
    far = GaoFit("rl", 0.06, 0.01, 0.5, 0.01, 80, 10, (0.05, 0.07), (0.0, 0.02), (4.88, 1.84e10))
    row = fits_table([FamilyFit("N=30", "KL-PPO", far, 2.83, d_first=0.57, start_gold=0.2)]).rows[0]
    assert row[2] == "0.200" and row[-2] == "0.57 to 2.83"
    assert row[8] == "148.41 [4.88, 1.84e+10]"  # d* = exp(0.06 / 0.01 - 1)
    assert row[9] == "d* beyond the d measured"  # the form's value there is an extrapolation
    near = GaoFit("rl", 0.06, 0.05, 0.5, 0.01, 80, 10, (0.05, 0.07), (0.0, 0.1), (1.0, 1.5))
    gain = 0.05 * math.exp(0.06 / 0.05 - 1)  # at d*: beta d*
    measured = FamilyFit("N=30", "KL-PPO", near, 2.83, d_first=0.57, start_gold=0.2)
    assert fits_table([measured]).rows[0][9] == f"{0.2 + gain:.3f} (+{gain:.3f})"
    unknown = FamilyFit("N=30", "KL-PPO", near, 2.83, d_first=0.57)
    assert fits_table([unknown]).rows[0][9] == f"{gain:.3f}"


def test_the_figure_draws_each_fit_from_pi_0s_gold():
    """Agents that condition pi_0 differently start at different golds: the figure shows
    levels, each fitted gain drawn from the start it is a gain over."""
    d = np.array([0.0, 0.5, 1.0, 1.5])
    fit = fit_gao("rl", d, gao_gain("rl", d, ALPHA, BETA))
    family = FamilyFit("N=30", "OGM", fit, 1.5, d_first=0.5, start_gold=0.385)
    gold = 0.385 + gao_gain("rl", d, ALPHA, BETA)
    points = [KLPoint(1024.0 * i, x, 1.0, g) for i, (x, g) in enumerate(zip(d, gold, strict=True))]
    series = _kl_series(points, family)
    assert np.array_equal(series.gold, gold) and np.array_equal(series.d, d)
    assert series.fit_gold[0] == pytest.approx(0.385)
    assert series.fit_gold[-1] == pytest.approx(0.385 + gao_gain("rl", 1.5, ALPHA, BETA))
    assert len(_kl_series(points, FamilyFit("N=30", "OGM", None, 1.5)).fit_d) == 0


def test_bad_input_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="form must be one of"):
        fit_gao("ppo", np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="at least 2 points"):
        fit_gao("bon", np.ones(1), np.ones(1))
    with pytest.raises(ValueError, match="finite and >= 0"):
        fit_gao("rl", np.array([0.0, -1.0]), np.ones(2))
    with pytest.raises(ValueError, match="one length"):
        fit_gao("bon", np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="sorted"):
        overoptimisation(np.array([2.0, 1.0]), np.ones(2), np.ones(2))


def _fit_at(world: str, peak: float, d_reached: float) -> FamilyFit:
    """A best-of-n fit whose peak is at ``peak`` (alpha = 2 beta peak, beta = 1)."""
    d = np.linspace(0.0, 2 * peak, 9)
    return FamilyFit(
        world, "best-of-n", fit_gao("bon", d, gao_gain("bon", d, 2 * peak, 1.0)), d_reached
    )


def test_peak_trends_compare_only_peaks_inside_the_reached_distance():
    out = peak_trends(
        [_fit_at("N=30", 0.5, 1.0), _fit_at("N=300", 0.8, 1.0), _fit_at("N=3000", 1.1, 1.5)]
    )
    assert out == [
        "best-of-n: fitted peak d* N=30: 0.50; N=300: 0.80; N=3000: 1.10; it moves out at every step."
    ]
    # the last world's peak lies beyond the d its agents reached: an extrapolation, not compared
    (line,) = peak_trends(
        [_fit_at("N=30", 0.8, 1.0), _fit_at("N=300", 0.5, 1.0), _fit_at("N=3000", 3.0, 1.5)]
    )
    assert "N=3000: no peak within the d reached (up to 1.50)" in line
    assert line.endswith("it moves in at every step.")
    assert peak_trends([_fit_at("N=30", 0.5, 1.0)]) == []  # one world: nothing to compare


def test_a_run_without_an_evaluation_at_step_0_starts_from_pi_0s_level():
    """KL-PPO is first evaluated after training starts: its curve gets pi_0's level at step 0,
    so a gold that only fell from there is over-optimisation from the start."""
    run = Run(Path("kl"), "kl_ppo", "kl_ppo", 0, "done", {}, {})
    points = [KLPoint(1000.0, 0.5, 3.0, 0.8), KLPoint(2000.0, 0.9, 5.0, 0.5)]
    ((_, event),) = run_events([KLCurve(run, points, start=(1.0, 1.0))])
    assert event.peak == 0.0 and event.onset == 1000.0 and event.proxy_rise == 4.0
    gains = KLCurve(run, points, start=(1.0, 1.0)).gains
    assert [(g.proxy, g.gold) for g in gains] == [(2.0, pytest.approx(-0.2)), (4.0, -0.5)]
    assert run_events([KLCurve(run, points[:1], start=None)]) == []  # one point: no event


def test_the_levels_row_gives_the_best_gold_on_the_way_and_each_runs_change_from_its_start():
    """Three runs from different starts: the mean curve is over the points all runs have, the
    best gold is the mean curve's, and the change at the end is each run's from its own pi_0
    (runs whose pi_0 is unknown are left out)."""
    starts = [0.40, 0.38, 0.39]
    curves = [
        KLCurve(
            Run(Path(f"ogm/seed_{s}"), "odt", "odt", s, "done", {}, {}),
            [KLPoint(0.0, 0.0, 5.0, start), KLPoint(1024.0, 0.5, 6.0, start + 0.02)]
            + [KLPoint(2048.0, 1.0, 9.0, start - 0.1 - 0.01 * s)]
            + [KLPoint(3072.0, 1.2, 9.5, 0.0)] * (s == 0),  # a point the others lack
            (5.0, start),
        )
        for s, start in enumerate(starts)
    ]
    unknown = KLCurve(Run(Path("ogm/seed_9"), "odt", "odt", 9, "done", {}, {}), [], None)
    mean = mean_curve([*curves, unknown])
    assert [p.env_steps for p in mean] == [0.0, 1024.0, 2048.0]
    assert mean[1].gold == pytest.approx(np.mean(starts) + 0.02)
    path = [(f"step {p.env_steps:.0f}", p) for p in mean]
    row = level_row("N=30", "OGM", path, [*curves[1:], unknown])
    assert row[2] == f"{np.mean(starts[1:]):.3f}"  # pi_0's gold over the runs at the end
    assert row[3:6] == [f"{np.mean(starts) + 0.02:.3f}", "step 1024", "0.50"]
    # IQM of -0.11 and -0.12 (two runs: their mean); too few runs for an interval: the range
    assert row[7] == "-0.115 (range -0.120 to -0.110)"
    assert row[-2:] == ["1.00", "2"]
    with pytest.raises(ValueError, match="no points with a known pi_0 level"):
        level_row("N=30", "OGM", path, [unknown])
