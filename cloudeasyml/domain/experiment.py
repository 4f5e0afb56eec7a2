"""The experiment report of a deployment with several routes: which version (or variant) does better.

Each arm (a model version, variant and mode that served the deployment in the period) gets its traffic, errors,
latency percentiles and cost per 1,000 items, and, where feedback exists, the model's quality metric with a 95 %
interval. Every other arm is compared with the control (the first live route) on that metric: the effect, the test's
p-value, the items each arm needs before a test can call the observed effect, and a verdict. A shadow arm is also
compared with the live answers to the same requests (``agreement``).

The figures come from outcomes (``cloudeasyml.metering.outcomes``), feedback (``cloudeasyml.domain.feedback``) and
usage records (the cost of each outcome's request id). See ``cloudeasyml.domain.statistics`` for the tests.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
import numpy as np
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from cloudeasyml.core.clock import utc_now
from cloudeasyml.core.quality import QualityMetric
from cloudeasyml.core.serving import ServingConfig
from cloudeasyml.db.models import Deployment, Feedback, Outcome, UsageRecord
from cloudeasyml.domain.deployments import traffic_of
from cloudeasyml.domain.statistics import (
    Comparison,
    Interval,
    compare_means,
    compare_proportions,
    mean_interval,
    rms_interval,
    wilson_interval,
)
from cloudeasyml.errors import InvalidInputError, NotFoundError
from cloudeasyml.metering.meter import Meter
from cloudeasyml.metering.outcomes import OutcomeRecorder
from cloudeasyml.plugins.catalog import ModelCatalog
from cloudeasyml.plugins.model import ModelPlugin

__all__ = (
    "Agreement",
    "ArmReport",
    "ArmVersus",
    "ExperimentReport",
    "ExperimentService",
    "Latency",
    "Quality",
)

ArmKey = tuple[str, str | None, str]
"""(model version, variant, mode)."""


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


class ArmReport(msgspec.Struct, frozen=True, rename="camel", kw_only=True):
    """One version, variant and mode of the deployment over the period."""

    model_version: str
    variant: str | None
    mode: str
    weight: int | None
    """Its share in the deployment's traffic now (live: percent of requests; shadow: percent copied); null when it
    no longer serves."""
    control: bool
    requests: int
    errors: int
    error_rate: float | None
    items: int
    latency_ms: Latency | None
    cost_per_1000_items: Decimal | None
    """From the usage records of its requests; null when none were billed (shadows on a plan that bills none)."""
    quality: Quality | None
    agreement: Agreement | None


class ArmVersus(msgspec.Struct, frozen=True, rename="camel", kw_only=True):
    """A candidate arm's comparison with the control."""

    model_version: str
    variant: str | None
    mode: str
    comparison: Comparison


class ExperimentReport(msgspec.Struct, frozen=True, rename="camel", kw_only=True):
    """``GET /deployments/{id}/experiment``."""

    deployment_id: uuid.UUID
    model_name: str
    since: datetime
    until: datetime
    quality_metric: QualityMetric | None
    """The model's metric (``ModelPlugin.quality_metric``); null: no quality figures."""
    arms: list[ArmReport]
    comparisons: list[ArmVersus]
    """Each arm other than the control against it, on the quality metric (none without one)."""
    sampled: bool
    """True when the period held more outcomes than a report reads (``outcomes.report_max_rows``): latency, quality
    and agreement then come from the latest ones; requests, errors and cost are always exact."""


@dataclass
class _Arm:
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


def _answer(item: Any, metric: QualityMetric | None) -> Any:
    """The part of an answered item that the metric (or the comparison of a shadow) looks at."""
    if isinstance(item, dict):
        if metric is not None and metric.field is not None:
            item = item.get(metric.field, item.get(_camel(metric.field)))
        elif len(item) == 1:
            (item,) = item.values()
    return _unwrap(item)


def _truths(row_label: Any, row_value: Any) -> list[Any] | None:
    truth = row_label if row_label is not None else row_value
    if truth is None:
        return None
    return truth if isinstance(truth, list) else [truth]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _score_items(arm: _Arm, model: ModelPlugin, outputs: list[Any], truths: list[Any]) -> None:
    """Add an answered request's items, paired with their truths, to the arm's quality samples."""
    metric = model.quality_metric
    assert metric is not None
    for item, truth in zip(outputs, truths, strict=False):
        answer = _answer(item, metric)
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


def _quality(arm: _Arm, metric: QualityMetric) -> Quality | None:
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


def _compare(control: _Arm, candidate: _Arm, metric: QualityMetric) -> Comparison:
    if metric.kind == "accuracy":
        return compare_proportions(
            "accuracy", sum(control.correct), len(control.correct), sum(candidate.correct), len(candidate.correct)
        )
    if metric.kind == "regression":
        return compare_means("mae", control.errors_abs, candidate.errors_abs, higher_is_better=False)
    return compare_means(metric.name, control.scores, candidate.scores, higher_is_better=metric.higher_is_better)


def _agreement(pairs: Sequence[tuple[Any, Any]], metric: QualityMetric | None) -> Agreement | None:
    if not pairs:
        return None
    same: list[bool] = []
    differences: list[float] = []
    cosines: list[float] = []
    for shadow_item, live_item in pairs:
        shadow, live = _answer(shadow_item, metric), _answer(live_item, metric)
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


def _latency(values: list[float]) -> Latency | None:
    if not values:
        return None
    p50, p95, p99 = np.percentile(np.asarray(values), [50, 95, 99])
    return Latency(p50=round(float(p50), 3), p95=round(float(p95), 3), p99=round(float(p99), 3))


class ExperimentService:
    """Experiment reports of one tenant's deployments. Every query filters on its ``tenant_id``."""

    def __init__(
        self,
        session: AsyncSession,
        tenant_id: uuid.UUID,
        catalog: ModelCatalog,
        *,
        meter: Meter,
        outcomes: OutcomeRecorder,
    ) -> None:
        self._session = session
        self._tenant_id = tenant_id
        self._catalog = catalog
        self._meter = meter
        self._outcomes = outcomes

    async def report(
        self, deployment_id: uuid.UUID, since: datetime | None = None, until: datetime | None = None
    ) -> ExperimentReport:
        """The deployment's experiment over ``[since, until)`` (defaults: the retention period until now).

        Raises:
            NotFoundError: No such deployment of the tenant (404).
            InvalidInputError: ``since`` is not before ``until`` (422).
        """
        # What this process holds is written first, before any read of this session (so that every read sees it).
        await self._outcomes.flush()
        await self._meter.flush()
        row = await self._session.scalar(
            select(Deployment).where(Deployment.tenant_id == self._tenant_id, Deployment.id == deployment_id)
        )
        if row is None:
            raise NotFoundError(f"deployment {deployment_id} not found")
        until = until or utc_now()
        since = since or until - timedelta(days=self._outcomes.settings.retention_days)
        if since >= until:
            raise InvalidInputError("since must be before until")
        where = (
            Outcome.tenant_id == self._tenant_id,
            Outcome.deployment_id == deployment_id,
            Outcome.created_at >= since,
            Outcome.created_at < until,
        )
        arms = await self._counts(where)
        rows = await self._rows(where)
        try:
            model: ModelPlugin | None = self._catalog.get(row.model_name).model
        except NotFoundError:  # uninstalled since: the report still shows traffic, errors, latency and cost
            model = None
        # The statistics (and scipy's first import) run in a worker thread, off the event loop that serves.
        return await asyncio.to_thread(self._build, row, model, arms, rows, since, until)

    async def _counts(self, where: tuple[Any, ...]) -> dict[ArmKey, _Arm]:
        """Exact requests, errors, items and cost per arm over the whole period."""
        key = (Outcome.model_version, Outcome.variant, Outcome.mode)
        arms: dict[ArmKey, _Arm] = {}
        counts = await self._session.execute(
            select(*key, func.count(), func.count(Outcome.error), func.sum(Outcome.items)).where(*where).group_by(*key)
        )
        for version, variant, mode, requests, errors, items in counts:
            arms[(version, variant, mode)] = _Arm(requests=requests, errors=errors, items=int(items or 0))
        costs = await self._session.execute(
            select(*key, func.sum(UsageRecord.cost), func.sum(UsageRecord.items))
            .join(UsageRecord, UsageRecord.request_id == Outcome.request_id)
            .where(*where, UsageRecord.tenant_id == self._tenant_id)
            .group_by(*key)
        )
        for version, variant, mode, cost, items in costs:
            arm = arms.setdefault((version, variant, mode), _Arm())
            arm.cost, arm.billed_items = cost, int(items or 0)
        return arms

    async def _rows(self, where: tuple[Any, ...]) -> Sequence[Any]:
        """The latest outcomes of the period (at most ``report_max_rows``), each with its request's feedback (a
        shadow's: that of the live request it copies).
        """
        live_id = func.coalesce(Outcome.shadow_of, Outcome.request_id)
        result = await self._session.execute(
            select(
                Outcome.request_id,
                Outcome.model_version,
                Outcome.variant,
                Outcome.mode,
                Outcome.shadow_of,
                Outcome.latency_ms,
                Outcome.error,
                Outcome.outputs,
                Feedback.label,
                Feedback.value,
            )
            .outerjoin(Feedback, (Feedback.request_id == live_id) & (Feedback.tenant_id == self._tenant_id))
            .where(*where)
            .order_by(Outcome.created_at.desc())
            .limit(self._outcomes.settings.report_max_rows)
        )
        return result.all()

    def _build(
        self,
        row: Deployment,
        model: ModelPlugin | None,
        arms: dict[ArmKey, _Arm],
        rows: Sequence[Any],
        since: datetime,
        until: datetime,
    ) -> ExperimentReport:
        metric = model.quality_metric if model is not None else None
        live_outputs = {r.request_id: r.outputs for r in rows if r.mode == "live" and r.outputs is not None}
        for r in rows:
            arm = arms.setdefault((r.model_version, r.variant, r.mode), _Arm())
            arm.latencies.append(r.latency_ms)
            if r.outputs is None:
                continue
            truths = _truths(r.label, r.value)
            if model is not None and metric is not None and truths is not None:
                _score_items(arm, model, r.outputs, truths)
            if r.mode == "shadow" and (live := live_outputs.get(r.shadow_of)) is not None:
                arm.pairs.extend(zip(r.outputs, live, strict=False))
        default_variant = msgspec.convert(row.config, ServingConfig).variant
        routes = traffic_of(row)
        weights: dict[ArmKey, int] = {(r.model_version, r.variant or default_variant, r.mode): r.weight for r in routes}
        control: ArmKey = (routes[0].model_version, routes[0].variant or default_variant, routes[0].mode)
        order = [*weights, *sorted(set(arms) - set(weights), key=str)]
        reports = [
            self._arm_report(key, arms.get(key, _Arm()), weights.get(key), key == control, metric) for key in order
        ]
        comparisons = []
        if metric is not None:
            control_arm = arms.get(control, _Arm())
            for key in order:
                if key != control and key in arms:
                    comparison = _compare(control_arm, arms[key], metric)
                    comparisons.append(
                        ArmVersus(model_version=key[0], variant=key[1], mode=key[2], comparison=comparison)
                    )
        return ExperimentReport(
            deployment_id=row.id,
            model_name=row.model_name,
            since=since,
            until=until,
            quality_metric=metric,
            arms=reports,
            comparisons=comparisons,
            sampled=len(rows) >= self._outcomes.settings.report_max_rows,
        )

    @staticmethod
    def _arm_report(
        key: ArmKey, arm: _Arm, weight: int | None, control: bool, metric: QualityMetric | None
    ) -> ArmReport:
        cost = None
        if arm.cost is not None and arm.billed_items:
            cost = (arm.cost * 1000 / arm.billed_items).quantize(Decimal("0.000001"))
        return ArmReport(
            model_version=key[0],
            variant=key[1],
            mode=key[2],
            weight=weight,
            control=control,
            requests=arm.requests,
            errors=arm.errors,
            error_rate=round(arm.errors / arm.requests, 6) if arm.requests else None,
            items=arm.items,
            latency_ms=_latency(arm.latencies),
            cost_per_1000_items=cost,
            quality=_quality(arm, metric) if metric is not None else None,
            agreement=_agreement(arm.pairs, metric) if key[2] == "shadow" else None,
        )
