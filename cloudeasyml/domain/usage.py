"""Usage reports: a tenant's billed requests summed over a period, by model, and what is left of its caps."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Literal

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from cloudeasyml.domain.quota import QuotaReport, quota_report
from cloudeasyml.domain.usage_detail import RecordFilter, RecordPage, UsageGroup, grouped_usage, usage_records
from cloudeasyml.domain.usage_sums import summed
from cloudeasyml.metering.meter import Meter

__all__ = ("GroupBy", "ModelUsage", "UsageReport", "UsageService", "VersionUsage", "usage_report")


class ModelUsage(msgspec.Struct, rename="camel"):
    """One model's share of a period."""

    requests: int
    items: int
    cost: Decimal
    processing_time_ms: float


class VersionUsage(msgspec.Struct, rename="camel"):
    """One model version's share of a period, online or shadow (``GET /usage?groupBy=version``)."""

    model_name: str
    model_version: str
    kind: str
    """``online`` (answered requests) or ``shadow`` (shadow copies, billed on plans with ``bill_shadow``)."""
    requests: int
    items: int
    cost: Decimal
    processing_time_ms: float


class UsageReport(msgspec.Struct, rename="camel"):
    """A tenant's usage over ``[start, end)``. Costs are exact decimals, encoded as strings.

    ``byModel``, ``totalRequests`` and ``totalItems`` count answered (online) requests; shadow copies are in
    ``shadow`` (null when there were none), and ``totalCost`` is what the tenant pays: both.
    """

    tenant_id: uuid.UUID
    start: datetime
    end: datetime
    total_cost: Decimal
    total_requests: int
    total_items: int
    by_model: dict[str, ModelUsage]
    shadow: ModelUsage | None = None
    """Shadow copies' usage: not requests of the tenant's, but billed compute."""
    by_version: list[VersionUsage] | None = None
    """With ``groupBy=version``: each model version's online and shadow usage, by model, version and kind."""
    groups: list[UsageGroup] | None = None
    """The same usage summed per ``groupBy`` combination (only when asked for)."""
    by_kind: dict[str, ModelUsage] = msgspec.field(default_factory=dict)
    """The same period by kind: ``online`` requests, ``shadow`` copies and ``batch`` job chunks (billed at the batch
    price)."""


GroupBy = Literal["model", "version"]


def _add(total: ModelUsage | None, part: VersionUsage) -> ModelUsage:
    """``part`` added to ``total`` (a new sum for None); processing time unrounded (rounded once, at the end)."""
    if total is None:
        return ModelUsage(
            requests=part.requests, items=part.items, cost=part.cost, processing_time_ms=part.processing_time_ms
        )
    total.requests += part.requests
    total.items += part.items
    total.cost += part.cost
    total.processing_time_ms += part.processing_time_ms
    return total


async def usage_report(
    session: AsyncSession, tenant_id: uuid.UUID, start: datetime, end: datetime, group_by: GroupBy = "model"
) -> UsageReport:
    """Sum the tenant's usage in ``[start, end)`` by model, version and kind (see ``usage_sums``)."""
    # Whole days from the daily rollup, the edges from the records: fast however many records the month holds.
    sums = await summed(session, tenant_id, start, end, ("model_name", "model_version", "kind"))
    versions = [
        VersionUsage(
            model_name=name,
            model_version=version,
            kind=kind,
            requests=requests,
            items=items,
            cost=cost,
            processing_time_ms=ms,
        )
        for (name, version, kind), (requests, items, cost, ms, _gpu) in sorted(sums.items())
    ]
    by_model: dict[str, ModelUsage] = {}
    by_kind: dict[str, ModelUsage] = {}
    shadow: ModelUsage | None = None
    for part in versions:
        if part.kind == "shadow":
            shadow = _add(shadow, part)
        else:
            by_model[part.model_name] = _add(by_model.get(part.model_name), part)
        by_kind[part.kind] = _add(by_kind.get(part.kind), part)
    totals: list[ModelUsage] = [*by_model.values(), *by_kind.values(), *([shadow] if shadow else [])]
    for usage in totals:
        usage.processing_time_ms = round(usage.processing_time_ms, 3)
    for part in versions:
        part.processing_time_ms = round(part.processing_time_ms, 3)
    return UsageReport(
        tenant_id=tenant_id,
        start=start,
        end=end,
        total_cost=sum((m.cost for m in by_model.values()), Decimal(0)) + (shadow.cost if shadow else Decimal(0)),
        total_requests=sum(m.requests for m in by_model.values()),
        total_items=sum(m.items for m in by_model.values()),
        by_model=by_model,
        shadow=shadow,
        by_version=versions if group_by == "version" else None,
        by_kind=by_kind,
    )


class UsageService:
    """One tenant's usage and quota reports. Every query filters on its ``tenant_id``; each report first writes
    what the meter holds, so usage billed behind earlier responses is in it.
    """

    def __init__(self, session: AsyncSession, tenant_id: uuid.UUID, meter: Meter) -> None:
        self._session = session
        self._tenant_id = tenant_id
        self._meter = meter

    async def report(self, start: datetime, end: datetime, group_by: GroupBy = "model") -> UsageReport:
        """The tenant's usage in ``[start, end)`` (see ``usage_report``)."""
        await self._meter.flush()
        return await usage_report(self._session, self._tenant_id, start, end, group_by)

    async def grouped(self, start: datetime, end: datetime, group_by: tuple[str, ...]) -> UsageReport:
        """The report, with ``groups`` summed per combination of ``group_by`` (see ``usage_detail``)."""
        report = await self.report(start, end, "version" if "version" in group_by else "model")
        report.groups = await grouped_usage(self._session, self._tenant_id, start, end, group_by)
        return report

    async def records(self, where: RecordFilter, limit: int, cursor: str | None) -> RecordPage:
        """A page of the tenant's usage records (see ``usage_detail.usage_records``)."""
        await self._meter.flush()
        return await usage_records(self._session, self._tenant_id, where, limit, cursor)

    async def quota(self) -> QuotaReport:
        """The tenant's caps for the current month and what it has used of them."""
        await self._meter.flush()
        return await quota_report(self._session, self._tenant_id)
