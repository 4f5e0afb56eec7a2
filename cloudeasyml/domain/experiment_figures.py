"""The figures of one arm of an experiment, from its outcomes: latency percentiles, the quality metric against
feedback, a shadow's agreement with the live answers, and the comparison of two arms (``domain.statistics``).

Pure functions over plain JSON values (the predictions as clients got them); ``domain.experiment`` reads the rows and
builds the report from them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec
import numpy as np

from cloudeasyml.core.quality import QualityMetric
from cloudeasyml.domain.statistics import (
    Comparison,
    Interval,
    compare_means,
    compare_proportions,
    mean_interval,
    rms_interval,
    wilson_interval,
)
from cloudeasyml.plugins.model import ModelPlugin

__all__ = (
    "Agreement",
    "Arm",
    "Latency",
    "Quality",
    "agreement_of",
    "answer_of",
    "compare_arms",
    "latency_of",
    "quality_of",
    "score_items",
    "truths_of",
)


class Latency(msgspec.Struct, frozen=True, rename="camel"):
    """Milliseconds from admission to the answer (loading, queueing, batching and running), by percentile."""

    p50: float
    p95: float
    p99: float


class Quality(msgspec.Struct, frozen=True, rename="camel", kw_only=True):
    """An arm's quality metric over the items that have feedback (95 % intervals)."""

    metric: str
    samples: int
    """Items scored: answered items whose request has feedback."""
    accuracy: Interval | None = None
    rmse: Interval | None = None
    mae: Interval | None = None
    score: Interval | None = None


class Agreement(msgspec.Struct, frozen=True, rename="camel", kw_only=True):
    """A shadow arm's answers against the live answers to the same requests, item by item."""

    pairs: int
    """Items answered by both."""
    same_label_rate: float | None = None
    """Labels (and any other non-numeric answers): the share that are equal."""
    mean_absolute_difference: float | None = None
    """Numbers: the mean of ``|shadow - live|``."""
    mean_cosine: float | None = None
    """Vectors (embeddings): the mean cosine similarity."""


@dataclass
class Arm:
    """What the rows say of one arm, gathered before any statistics."""

    requests: int = 0
    errors: int = 0
    items: int = 0
    cost: Decimal | None = None
    billed_items: int = 0
    latencies: list[float] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    errors_abs: list[float] = field(default_factory=list)
    errors_signed: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    pairs: list[tuple[Any, Any]] = field(default_factory=list)
    """(shadow item, live item) of a shadow arm."""


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _unwrap(value: Any) -> Any:
    """A one-element list (a raw tensor's row) is its element."""
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value


def answer_of(item: Any, metric: QualityMetric | None) -> Any:
    """The part of an answered item that the metric (or the comparison of a shadow) looks at."""
    if isinstance(item, dict):
        if metric is not None and metric.field is not None:
            item = item.get(metric.field, item.get(_camel(metric.field)))
        elif len(item) == 1:
            (item,) = item.values()
    return _unwrap(item)


def truths_of(row_label: Any, row_value: Any) -> list[Any] | None:
    """A request's feedback as one truth per item (a single truth is the one item's); None without feedback."""
    truth = row_label if row_label is not None else row_value
    if truth is None:
        return None
    return truth if isinstance(truth, list) else [truth]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def score_items(arm: Arm, model: ModelPlugin, outputs: list[Any], truths: list[Any]) -> None:
    """Add an answered request's items, paired with their truths, to the arm's quality samples."""
    metric = model.quality_metric
    assert metric is not None
    for item, truth in zip(outputs, truths, strict=False):
        answer = answer_of(item, metric)
        if metric.kind == "accuracy":
            arm.correct.append(answer == _unwrap(truth))
        elif metric.kind == "regression":
            predicted, actual = _number(answer), _number(_unwrap(truth))
            if predicted is not None and actual is not None:
                arm.errors_signed.append(predicted - actual)
                arm.errors_abs.append(abs(predicted - actual))
        else:
            try:
                arm.scores.append(float(model.quality_score(item, truth)))
            except (ValueError, TypeError):  # feedback the metric cannot use: not a sample
                continue


def quality_of(arm: Arm, metric: QualityMetric) -> Quality | None:
    """The arm's quality metric with its 95 % interval(s); None when no item of it has feedback."""
    if metric.kind == "accuracy":
        if not arm.correct:
            return None
        return Quality(
            metric="accuracy", samples=len(arm.correct), accuracy=wilson_interval(sum(arm.correct), len(arm.correct))
        )
    if metric.kind == "regression":
        if not arm.errors_abs:
            return None
        return Quality(
            metric="rmse",
            samples=len(arm.errors_abs),
            rmse=rms_interval(arm.errors_signed),
            mae=mean_interval(arm.errors_abs),
        )
    if not arm.scores:
        return None
    return Quality(metric=metric.name, samples=len(arm.scores), score=mean_interval(arm.scores))


def compare_arms(control: Arm, candidate: Arm, metric: QualityMetric) -> Comparison:
    """A candidate against the control: z-test on accuracy, Welch's t-test on absolute errors or scores."""
    if metric.kind == "accuracy":
        return compare_proportions(
            "accuracy", sum(control.correct), len(control.correct), sum(candidate.correct), len(candidate.correct)
        )
    if metric.kind == "regression":
        return compare_means("mae", control.errors_abs, candidate.errors_abs, higher_is_better=False)
    return compare_means(metric.name, control.scores, candidate.scores, higher_is_better=metric.higher_is_better)


def agreement_of(pairs: Sequence[tuple[Any, Any]], metric: QualityMetric | None) -> Agreement | None:
    """How a shadow's answers agree with the live ones, item by item; None without pairs."""
    if not pairs:
        return None
    same: list[bool] = []
    differences: list[float] = []
    cosines: list[float] = []
    for shadow_item, live_item in pairs:
        shadow, live = answer_of(shadow_item, metric), answer_of(live_item, metric)
        if _number(shadow) is not None and _number(live) is not None:
            differences.append(abs(float(shadow) - float(live)))
        elif isinstance(shadow, list) and isinstance(live, list) and len(shadow) == len(live) and shadow:
            a, b = np.asarray(shadow, dtype=np.float64), np.asarray(live, dtype=np.float64)
            norms = float(np.linalg.norm(a) * np.linalg.norm(b))
            cosines.append(float(a @ b) / norms if norms else 0.0)
        else:
            same.append(shadow == live)
    return Agreement(
        pairs=len(pairs),
        same_label_rate=sum(same) / len(same) if same else None,
        mean_absolute_difference=math.fsum(differences) / len(differences) if differences else None,
        mean_cosine=math.fsum(cosines) / len(cosines) if cosines else None,
    )


def latency_of(values: list[float]) -> Latency | None:
    """The p50, p95 and p99 of latencies in milliseconds; None without any."""
    if not values:
        return None
    p50, p95, p99 = np.percentile(np.asarray(values), [50, 95, 99])
    return Latency(p50=round(float(p50), 3), p95=round(float(p95), 3), p99=round(float(p99), 3))
