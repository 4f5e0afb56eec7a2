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
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from cloudeasyml.core.clock import utc_now
from cloudeasyml.core.quality import QualityMetric
from cloudeasyml.core.serving import ServingConfig
from cloudeasyml.db.models import Deployment, Feedback, Outcome, UsageRecord
from cloudeasyml.domain.deployments import traffic_of
from cloudeasyml.domain.experiment_figures import (
    Agreement,
    Arm,
    Latency,
    Quality,
    agreement_of,
    compare_arms,
    latency_of,
    quality_of,
    score_items,
    truths_of,
)
from cloudeasyml.domain.statistics import Comparison
from cloudeasyml.errors import InvalidInputError, NotFoundError
from cloudeasyml.metering.meter import Meter
from cloudeasyml.metering.outcomes import OutcomeRecorder
from cloudeasyml.plugins.catalog import ModelCatalog
from cloudeasyml.plugins.model import ModelPlugin

__all__ = ("Agreement", "ArmReport", "ArmVersus", "ExperimentReport", "ExperimentService", "Latency", "Quality")

ArmKey = tuple[str, str | None, str]
"""(model version, variant, mode)."""


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

    async def _counts(self, where: tuple[Any, ...]) -> dict[ArmKey, Arm]:
        """Exact requests, errors, items and cost per arm over the whole period."""
        key = (Outcome.model_version, Outcome.variant, Outcome.mode)
        arms: dict[ArmKey, Arm] = {}
        counts = await self._session.execute(
            select(*key, func.count(), func.count(Outcome.error), func.sum(Outcome.items)).where(*where).group_by(*key)
        )
        for version, variant, mode, requests, errors, items in counts:
            arms[(version, variant, mode)] = Arm(requests=requests, errors=errors, items=int(items or 0))
        costs = await self._session.execute(
            select(*key, func.sum(UsageRecord.cost), func.sum(UsageRecord.items))
            .join(UsageRecord, UsageRecord.request_id == Outcome.request_id)
            .where(*where, UsageRecord.tenant_id == self._tenant_id)
            .group_by(*key)
        )
        for version, variant, mode, cost, items in costs:
            arm = arms.setdefault((version, variant, mode), Arm())
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
        arms: dict[ArmKey, Arm],
        rows: Sequence[Any],
        since: datetime,
        until: datetime,
    ) -> ExperimentReport:
        metric = model.quality_metric if model is not None else None
        live_outputs = {r.request_id: r.outputs for r in rows if r.mode == "live" and r.outputs is not None}
        for r in rows:
            arm = arms.setdefault((r.model_version, r.variant, r.mode), Arm())
            arm.latencies.append(r.latency_ms)
            if r.outputs is None:
                continue
            truths = truths_of(r.label, r.value)
            if model is not None and metric is not None and truths is not None:
                score_items(arm, model, r.outputs, truths)
            if r.mode == "shadow" and (live := live_outputs.get(r.shadow_of)) is not None:
                arm.pairs.extend(zip(r.outputs, live, strict=False))
        default_variant = msgspec.convert(row.config, ServingConfig).variant
        routes = traffic_of(row)
        weights: dict[ArmKey, int] = {(r.model_version, r.variant or default_variant, r.mode): r.weight for r in routes}
        control: ArmKey = (routes[0].model_version, routes[0].variant or default_variant, routes[0].mode)
        order = [*weights, *sorted(set(arms) - set(weights), key=str)]
        reports = [
            self._arm_report(key, arms.get(key, Arm()), weights.get(key), key == control, metric) for key in order
        ]
        comparisons = []
        if metric is not None:
            control_arm = arms.get(control, Arm())
            for key in order:
                if key != control and key in arms:
                    comparison = compare_arms(control_arm, arms[key], metric)
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
        key: ArmKey, arm: Arm, weight: int | None, control: bool, metric: QualityMetric | None
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
            latency_ms=latency_of(arm.latencies),
            cost_per_1000_items=cost,
            quality=quality_of(arm, metric) if metric is not None else None,
            agreement=agreement_of(arm.pairs, metric) if key[2] == "shadow" else None,
        )
