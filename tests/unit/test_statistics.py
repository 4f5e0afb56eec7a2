"""The experiment's statistics give the published answers of textbook examples."""

from __future__ import annotations

import math

import pytest

from cloudeasyml.domain.statistics import (
    MIN_SAMPLES,
    compare_means,
    compare_proportions,
    mean_interval,
    rms_interval,
    sample_size_means,
    sample_size_proportions,
    two_proportion_z_test,
    welch_t_test,
    wilson_interval,
)

# Wikipedia, "Welch's t-test", example 1: t = -2.46, df = 24.99, p = 0.021.
WELCH_A1 = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
WELCH_A2 = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]


def test_wilson_interval_matches_newcombe() -> None:
    # Newcombe (1998), Statistics in Medicine 17:857, table I: 81/263 -> 0.2553 to 0.3662.
    interval = wilson_interval(81, 263)
    assert interval.value == pytest.approx(81 / 263)
    assert interval.low == pytest.approx(0.2553, abs=5e-5) and interval.high == pytest.approx(0.3662, abs=5e-5)
    # ... and 0/20 -> 0 to 0.1611 (the interval stays inside [0, 1]).
    empty = wilson_interval(0, 20)
    assert empty.low == 0 and empty.high == pytest.approx(0.1611, abs=5e-5)


def test_two_proportion_z_test_matches_a_hand_computation() -> None:
    # 45/100 against 30/100: pooled 0.375, se = sqrt(0.375 * 0.625 * 0.02) = 0.068465, z = 2.1909, p = 0.02846.
    z, p = two_proportion_z_test(30, 100, 45, 100) or (0, 0)
    assert z == pytest.approx(2.1909, abs=1e-4) and p == pytest.approx(0.02846, abs=1e-5)
    assert two_proportion_z_test(10, 10, 5, 5) is None  # no variance at all
    assert two_proportion_z_test(0, 0, 5, 5) is None


def test_welch_t_test_matches_wikipedia() -> None:
    t, df, p = welch_t_test(WELCH_A1, WELCH_A2) or (0, 0, 0)
    assert t == pytest.approx(2.46, abs=0.005)  # the candidate (A2) is the larger mean
    assert df == pytest.approx(24.99, abs=0.01) and p == pytest.approx(0.021, abs=0.0005)
    assert welch_t_test([1.0], [2.0, 3.0]) is None
    assert welch_t_test([1.0, 1.0], [1.0, 1.0]) is None


def test_mean_and_rms_intervals() -> None:
    # mean 3, sd 1.5811, t(0.975, 4) = 2.7764: half width 1.9632.
    interval = mean_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert interval.value == 3 and interval.low == pytest.approx(1.0368, abs=1e-4)
    assert interval.high == pytest.approx(4.9632, abs=1e-4)
    assert mean_interval([2.5]).low == mean_interval([2.5]).high == 2.5
    rms = rms_interval([3.0, -4.0, 3.0, -4.0])
    assert rms.value == pytest.approx(math.sqrt(12.5)) and rms.low <= rms.value <= rms.high
    with pytest.raises(ValueError):
        mean_interval([])


def test_sample_sizes_match_the_textbook_figures() -> None:
    # A standardised difference of 0.5 needs 63 per group (normal approximation, alpha 0.05 two-sided, power 0.8).
    assert sample_size_means(1.0, 1.0, 0.5) == 63
    # 50 % against 60 %: 388 per group.
    assert sample_size_proportions(0.5, 0.6) == 388
    assert sample_size_proportions(0.5, 0.5) is None and sample_size_means(1.0, 1.0, 0.0) is None


def test_a_clear_win_is_called_and_a_small_sample_is_not() -> None:
    better = compare_proportions("accuracy", 600, 1000, 700, 1000)
    assert better.verdict == "candidate better" and better.p_value is not None and better.p_value < 1e-5
    assert better.effect == pytest.approx(0.1) and better.samples_needed is not None and better.samples_needed < 1000
    worse = compare_proportions("accuracy", 700, 1000, 600, 1000)
    assert worse.verdict == "control better"
    few = compare_proportions("accuracy", 5, MIN_SAMPLES - 1, MIN_SAMPLES - 1, MIN_SAMPLES - 1)
    assert few.verdict == "not enough data"
    # Not significant yet, and fewer items than the observed effect needs: wait for more.
    early = compare_proportions("accuracy", 50, 100, 55, 100)
    assert early.verdict == "not enough data" and early.samples_needed is not None and early.samples_needed > 100
    # Not significant with more items than the observed effect needs: no difference worth calling.
    same = compare_proportions("accuracy", 500, 1000, 500, 1000)
    assert same.verdict == "no significant difference" and same.samples_needed is None


def test_errors_compare_lower_as_better() -> None:
    control = [abs(math.sin(i)) * 2 for i in range(200)]
    candidate = [value / 2 for value in control]
    comparison = compare_means("mae", control, candidate, higher_is_better=False)
    assert comparison.effect < 0 and comparison.verdict == "candidate better"
    assert comparison.test == "Welch's t-test" and comparison.control_samples == comparison.candidate_samples == 200
    assert compare_means("mae", candidate, control, higher_is_better=False).verdict == "control better"
    assert compare_means("score", candidate, control, higher_is_better=True).verdict == "candidate better"
