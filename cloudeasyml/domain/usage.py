"""Usage reports: a tenant's billed requests summed over a period, by model, and what is left of its caps."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from cloudeasyml.domain.quota import QuotaReport, quota_report
from cloudeasyml.domain.usage_detail import RecordFilter, RecordPage, UsageGroup, grouped_usage, usage_records
from cloudeasyml.domain.usage_sums import summed
from cloudeasyml.metering.meter import Meter

__all__ = ("ModelUsage", "UsageReport", "UsageService", "usage_report")


class ModelUsage(msgspec.Struct, rename="camel"):
    """One model's share of a period."""

    requests: int
    items: int
    cost: Decimal
    processing_time_ms: float


class UsageReport(msgspec.Struct, rename="camel", omit_defaults=True):
    """A tenant's usage over ``[start, end)``. Costs are exact decimals, encoded as strings."""

    tenant_id: uuid.UUID
    start: datetime
    end: datetime
    total_cost: Decimal
    total_requests: int
    total_items: int
    by_model: dict[str, ModelUsage]
    groups: list[UsageGroup] | None = None
    """The same usage summed per ``groupBy`` combination (only when asked for)."""


async def usage_report(session: AsyncSession, tenant_id: uuid.UUID, start: datetime, end: datetime) -> UsageReport:
    """Sum the tenant's usage in ``[start, end)`` by model (see ``usage_sums``)."""
    # Whole days from the daily rollup, the edges from the records: fast however many records the month holds.
    sums = await summed(session, tenant_id, start, end, ("model_name",))
    by_model = {
        name: ModelUsage(requests=requests, items=items, cost=cost, processing_time_ms=round(ms, 3))
        for (name,), (requests, items, cost, ms, _gpu) in sorted(sums.items())
    }
    return UsageReport(
        tenant_id=tenant_id,
        start=start,
        end=end,
        total_cost=sum((m.cost for m in by_model.values()), Decimal(0)),
        total_requests=sum(m.requests for m in by_model.values()),
        total_items=sum(m.items for m in by_model.values()),
        by_model=by_model,
    )


class UsageService:
    """One tenant's usage and quota reports. Every query filters on its ``tenant_id``; each report first writes
    what the meter holds, so usage billed behind earlier responses is in it.
    """

    def __init__(self, session: AsyncSession, tenant_id: uuid.UUID, meter: Meter) -> None:
        self._session = session
        self._tenant_id = tenant_id
        self._meter = meter

    async def report(self, start: datetime, end: datetime) -> UsageReport:
        """The tenant's usage in ``[start, end)`` (see ``usage_report``)."""
        await self._meter.flush()
        return await usage_report(self._session, self._tenant_id, start, end)

    async def grouped(self, start: datetime, end: datetime, group_by: tuple[str, ...]) -> UsageReport:
        """The report, with ``groups`` summed per combination of ``group_by`` (see ``usage_detail``)."""
        report = await self.report(start, end)
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
