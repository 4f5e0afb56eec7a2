"""Usage reports: a tenant's billed requests summed over a period, by model, and what is left of its caps."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

import msgspec
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from cloudeasyml.db.models import UsageRecord
from cloudeasyml.domain.quota import QuotaReport, quota_report
from cloudeasyml.metering.meter import Meter

__all__ = ("ModelUsage", "UsageReport", "UsageService", "usage_report")


class ModelUsage(msgspec.Struct, rename="camel"):
    """One model's share of a period."""

    requests: int
    items: int
    cost: Decimal
    processing_time_ms: float


class UsageReport(msgspec.Struct, rename="camel"):
    """A tenant's usage over ``[start, end)``. Costs are exact decimals, encoded as strings."""

    tenant_id: uuid.UUID
    start: datetime
    end: datetime
    total_cost: Decimal
    total_requests: int
    total_items: int
    by_model: dict[str, ModelUsage]
    by_kind: dict[str, ModelUsage] = {}
    """The same period by kind: ``online`` requests and ``batch`` chunks (billed at the batch price)."""


async def usage_report(session: AsyncSession, tenant_id: uuid.UUID, start: datetime, end: datetime) -> UsageReport:
    """Sum the tenant's usage records in ``[start, end)`` by model, in the database."""
    # Money sums its scaled integers in the database: exact on SQLite and PostgreSQL alike.
    rows = await session.execute(
        select(
            UsageRecord.model_name,
            func.count(),
            func.sum(UsageRecord.items),
            func.sum(UsageRecord.cost),
            func.sum(UsageRecord.processing_ms),
        )
        .where(UsageRecord.tenant_id == tenant_id, UsageRecord.created_at >= start, UsageRecord.created_at < end)
        .group_by(UsageRecord.model_name)
    )
    by_model = {
        name: ModelUsage(requests=count, items=int(items), cost=cost, processing_time_ms=round(float(ms), 3))
        for name, count, items, cost, ms in rows
    }
    kinds = await session.execute(
        select(
            UsageRecord.kind,
            func.count(),
            func.sum(UsageRecord.items),
            func.sum(UsageRecord.cost),
            func.sum(UsageRecord.processing_ms),
        )
        .where(UsageRecord.tenant_id == tenant_id, UsageRecord.created_at >= start, UsageRecord.created_at < end)
        .group_by(UsageRecord.kind)
    )
    by_kind = {
        kind: ModelUsage(requests=count, items=int(items), cost=cost, processing_time_ms=round(float(ms), 3))
        for kind, count, items, cost, ms in kinds
    }
    return UsageReport(
        tenant_id=tenant_id,
        start=start,
        end=end,
        total_cost=sum((m.cost for m in by_model.values()), Decimal(0)),
        total_requests=sum(m.requests for m in by_model.values()),
        total_items=sum(m.items for m in by_model.values()),
        by_model=by_model,
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

    async def report(self, start: datetime, end: datetime) -> UsageReport:
        """The tenant's usage in ``[start, end)`` (see ``usage_report``)."""
        await self._meter.flush()
        return await usage_report(self._session, self._tenant_id, start, end)

    async def quota(self) -> QuotaReport:
        """The tenant's caps for the current month and what it has used of them."""
        await self._meter.flush()
        return await quota_report(self._session, self._tenant_id)
