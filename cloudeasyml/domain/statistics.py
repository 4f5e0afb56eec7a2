"""The statistics of an experiment: intervals, significance tests and the sample size a comparison needs.

Two-sided tests at ``ALPHA`` (0.05), sample sizes for ``POWER`` (0.8) against the effect observed so far. scipy is
imported inside the functions that need it (only the experiment report does), so that serving never loads it.

Comparisons are between one candidate and the control; with several candidates each comparison keeps its own 5 %
false-positive rate (no correction for multiple comparisons: read a verdict among many candidates with that in mind).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Literal

import msgspec

__all__ = (
    "ALPHA",
    "MIN_SAMPLES",
    "POWER",
    "Comparison",
    "Interval",
    "Verdict",
    "compare_means",
    "compare_proportions",
    "mean_interval",
    "rms_interval",
    "sample_size_means",
    "sample_size_proportions",
    "two_proportion_z_test",
    "welch_t_test",
    "wilson_interval",
)

ALPHA = 0.05
"""Two-sided significance level of every test."""
POWER = 0.8
"""The power the needed sample sizes are computed for."""
MIN_SAMPLES = 30
"""Fewest scored items per arm before a comparison says anything (the tests' normal approximations need about this
many; below it the verdict is ``not enough data``)."""

Verdict = Literal["candidate better", "control better", "no significant difference", "not enough data"]

_NORMAL = NormalDist()


class Interval(msgspec.Struct, frozen=True, rename="camel"):
    """An estimate with its 95 % confidence interval."""

    value: float
    low: float
    high: float


class Comparison(msgspec.Struct, frozen=True, rename="camel", kw_only=True):
    """A candidate against the control on one metric."""

    metric: str
    test: Literal["two-proportion z-test", "Welch's t-test"]
    effect: float
    """The candidate's value minus the control's (accuracy, mean absolute error, mean score)."""
    p_value: float | None
    """Two-sided; None when the test cannot be computed (an arm without samples, or no variance at all)."""
    control_samples: int
    candidate_samples: int
    samples_needed: int | None
    """Scored items each arm needs for a test at ``ALPHA`` to detect the observed effect with ``POWER``; None when the
    observed effect is zero (no finite sample detects it)."""
    verdict: Verdict


def _z(confidence: float) -> float:
    return _NORMAL.inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """A proportion with its Wilson score interval (good near 0 and 1, unlike the Wald interval).

    Raises:
        ValueError: ``n`` is 0 or ``successes`` is outside ``[0, n]``.
    """
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"{successes} successes of {n}")
    z = _z(confidence)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # At 0 or n successes the bound is exactly 0 or 1 (floating point leaves a 1e-17 there otherwise).
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return Interval(value=p, low=low, high=high)


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """The mean with its Student t interval (a single value: an interval of zero width).

    Raises:
        ValueError: ``values`` is empty.
    """
    from scipy import stats

    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = math.fsum(values) / n
    if n == 1:
        return Interval(value=mean, low=mean, high=mean)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(value=mean, low=mean - half, high=mean + half)


def rms_interval(errors: Sequence[float], confidence: float = 0.95) -> Interval:
    """The root mean square of ``errors`` (RMSE) with an interval: the t interval of the mean squared error, square
    rooted (its low end clipped at 0).
    """
    squared = mean_interval([e * e for e in errors], confidence)
    return Interval(
        value=math.sqrt(squared.value), low=math.sqrt(max(0.0, squared.low)), high=math.sqrt(max(0.0, squared.high))
    )


def two_proportion_z_test(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float] | None:
    """The pooled two-proportion z-test of ``x2/n2`` against ``x1/n1``: ``(z, two-sided p)``; None when an arm is
    empty or every item of both arms is a success (or every one a failure).
    """
    if n1 <= 0 or n2 <= 0:
        return None
    pooled = (x1 + x2) / (n1 + n2)
    variance = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if variance <= 0:
        return None
    z = (x2 / n2 - x1 / n1) / math.sqrt(variance)
    return z, 2 * (1 - _NORMAL.cdf(abs(z)))


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float] | None:
    """Welch's unequal-variances t-test of the mean of ``b`` against that of ``a``: ``(t, degrees of freedom,
    two-sided p)``; None when an arm has fewer than 2 values or neither arm varies.
    """
    from scipy import stats

    n1, n2 = len(a), len(b)
    if n1 < 2 or n2 < 2:
        return None
    m1, m2 = math.fsum(a) / n1, math.fsum(b) / n2
    v1 = math.fsum((x - m1) ** 2 for x in a) / (n1 - 1) / n1
    v2 = math.fsum((x - m2) ** 2 for x in b) / (n2 - 1) / n2
    if v1 + v2 <= 0:
        return None
    t = (m2 - m1) / math.sqrt(v1 + v2)
    df = (v1 + v2) ** 2 / (v1 * v1 / (n1 - 1) + v2 * v2 / (n2 - 1))
    return t, df, float(2 * stats.t.sf(abs(t), df))


def sample_size_proportions(p1: float, p2: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Items per arm for a two-sided two-proportion z-test at ``alpha`` to detect ``p1`` against ``p2`` with
    ``power`` (the normal-approximation formula, pooled variance under the null); None when ``p1 == p2``.
    """
    if p1 == p2:
        return None
    z_alpha, z_beta = _z(1 - alpha), _NORMAL.inv_cdf(power)
    pooled = (p1 + p2) / 2
    numerator = z_alpha * math.sqrt(2 * pooled * (1 - pooled)) + z_beta * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return math.ceil(numerator**2 / (p1 - p2) ** 2)


def sample_size_means(
    sd1: float, sd2: float, difference: float, alpha: float = ALPHA, power: float = POWER
) -> int | None:
    """Items per arm for a two-sided test of two means at ``alpha`` to detect ``difference`` with ``power``, the arms'
    standard deviations ``sd1`` and ``sd2`` (normal approximation, as Welch's test becomes with many items); None
    when ``difference`` is 0.
    """
    if difference == 0:
        return None
    z_alpha, z_beta = _z(1 - alpha), _NORMAL.inv_cdf(power)
    return max(2, math.ceil((z_alpha + z_beta) ** 2 * (sd1 * sd1 + sd2 * sd2) / difference**2))


def _verdict(
    p_value: float | None, effect: float, n1: int, n2: int, needed: int | None, *, higher_is_better: bool
) -> Verdict:
    """``not enough data`` below ``MIN_SAMPLES`` an arm, or when the test is not significant yet and the arms hold
    fewer items than the observed effect needs; a significant test names the better arm; otherwise (not
    significant with as many items as the effect needs, or no effect at all) ``no significant difference``.
    """
    if min(n1, n2) < MIN_SAMPLES:
        return "not enough data"
    if p_value is not None and p_value < ALPHA and effect != 0:
        return "candidate better" if (effect > 0) == higher_is_better else "control better"
    if needed is not None and min(n1, n2) < needed:
        return "not enough data"
    return "no significant difference"


def compare_proportions(metric: str, x1: int, n1: int, x2: int, n2: int) -> Comparison:
    """The candidate's ``x2`` successes of ``n2`` against the control's ``x1`` of ``n1`` (higher is better)."""
    p1 = x1 / n1 if n1 else 0.0
    p2 = x2 / n2 if n2 else 0.0
    test = two_proportion_z_test(x1, n1, x2, n2)
    p_value = test[1] if test is not None else None
    needed = sample_size_proportions(p1, p2) if n1 and n2 else None
    return Comparison(
        metric=metric,
        test="two-proportion z-test",
        effect=p2 - p1,
        p_value=p_value,
        control_samples=n1,
        candidate_samples=n2,
        samples_needed=needed,
        verdict=_verdict(p_value, p2 - p1, n1, n2, needed, higher_is_better=True),
    )


def _sd(values: Sequence[float], mean: float) -> float:
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0


def compare_means(
    metric: str, control: Sequence[float], candidate: Sequence[float], *, higher_is_better: bool
) -> Comparison:
    """The candidate's mean of ``candidate`` against the control's (absolute errors: lower is better; scores: as the
    metric says), by Welch's t-test.
    """
    n1, n2 = len(control), len(candidate)
    m1 = math.fsum(control) / n1 if n1 else 0.0
    m2 = math.fsum(candidate) / n2 if n2 else 0.0
    test = welch_t_test(control, candidate)
    p_value = test[2] if test is not None else None
    needed = sample_size_means(_sd(control, m1), _sd(candidate, m2), m2 - m1) if n1 > 1 and n2 > 1 else None
    return Comparison(
        metric=metric,
        test="Welch's t-test",
        effect=m2 - m1,
        p_value=p_value,
        control_samples=n1,
        candidate_samples=n2,
        samples_needed=needed,
        verdict=_verdict(p_value, m2 - m1, n1, n2, needed, higher_is_better=higher_is_better),
    )
