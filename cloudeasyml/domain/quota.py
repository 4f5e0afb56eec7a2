"""Tenant quotas: a spend cap and a request cap per calendar month (UTC), checked before a request runs.

Each process keeps, per tenant, the caps and the month's spend and request count: read from the database on
the tenant's first request of the month, then counted locally as requests are billed, and read again every
``refresh_seconds`` in the background (so caps changed by ``cloudeasyml tenants set-caps`` and the usage of
other processes are seen within that time). Caps are therefore soft across processes: several pods may together
overshoot by the requests of the last few seconds. Within one process a cap holds: the request that reaches it
runs (it was under the cap when it started), the ones after it are refused until the month ends.

A tenant without caps costs one small read per refresh and a dictionary lookup per request. Requests billed
while a refresh reads the database are missed until the next refresh, which counts them.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import msgspec
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cloudeasyml.db.models import Tenant, UsageRecord
from cloudeasyml.db.types import utc_now
from cloudeasyml.errors import NotFoundError, RequestCapReachedError, SpendCapReachedError
from cloudeasyml.metering.meter import Meter
from cloudeasyml.single_flight import SingleFlight

__all__ = ("QuotaGuard", "QuotaReport", "TenantQuota", "month_bounds", "quota_report", "tenant_caps", "usage_since")

log = logging.getLogger(__name__)


def month_bounds(now: datetime) -> tuple[datetime, datetime]:
    """The calendar month (UTC) that ``now`` falls in: its first instant and the next month's."""
    start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end


@dataclass(slots=True)
class TenantQuota:
    """One tenant's caps and this month's usage, as this process knows them."""

    month_start: datetime
    month_end: datetime
    spend_cap: Decimal | None
    request_cap: int | None
    spent: Decimal
    requests: int
    fetched_at: float
    """``time.monotonic()`` of the database read."""

    @property
    def capped(self) -> bool:
        """Whether any cap is set."""
        return self.spend_cap is not None or self.request_cap is not None


class QuotaGuard:
    """Refuses requests of tenants past a cap; counts billed requests."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], meter: Meter, *, refresh_seconds: float = 5.0
    ) -> None:
        self._sessions = sessions
        self._meter = meter
        self._refresh = refresh_seconds
        self._quotas: dict[uuid.UUID, TenantQuota] = {}
        self._loads: SingleFlight[TenantQuota] = SingleFlight()

    async def check(self, tenant_id: uuid.UUID) -> None:
        """Raise ``RequestCapReachedError`` (429) or ``SpendCapReachedError`` (402) if the tenant is past a cap
        this month; both carry ``Retry-After`` until the month ends.
        """
        quota = self._quotas.get(tenant_id)
        now = utc_now()
        if quota is None or now >= quota.month_end:
            quota = await self._loads.run(tenant_id, lambda: self._load(tenant_id))
        elif time.monotonic() - quota.fetched_at > self._refresh and tenant_id not in self._loads:
            self._refresh_in_background(tenant_id)  # meanwhile, what this process counted
        if not quota.capped:
            return
        retry_after = max(1, int((quota.month_end - now).total_seconds()))
        if quota.request_cap is not None and quota.requests >= quota.request_cap:
            raise RequestCapReachedError(
                f"this tenant's request cap ({quota.request_cap} per month) is reached; it resets at "
                f"{quota.month_end.isoformat()}",
                retry_after=retry_after,
            )
        if quota.spend_cap is not None and quota.spent >= quota.spend_cap:
            raise SpendCapReachedError(
                f"this tenant's spend cap ({quota.spend_cap.normalize():f} per month) is reached; it resets at "
                f"{quota.month_end.isoformat()}",
                retry_after=retry_after,
            )

    def add(self, tenant_id: uuid.UUID, cost: Decimal) -> None:
        """Count one billed request."""
        quota = self._quotas.get(tenant_id)
        if quota is not None:
            quota.requests += 1
            quota.spent += cost

    def _refresh_in_background(self, tenant_id: uuid.UUID) -> None:
        def done(finished: asyncio.Future[TenantQuota]) -> None:
            if not finished.cancelled() and (error := finished.exception()) is not None:
                # A background refresh that failed keeps the counts this process has; the next one retries.
                log.warning("reading the quota of tenant %s failed: %s", tenant_id, error)

        self._loads.start(tenant_id, lambda: self._load(tenant_id)).add_done_callback(done)

    async def _load(self, tenant_id: uuid.UUID) -> TenantQuota:
        start, end = month_bounds(utc_now())
        async with self._sessions() as session:
            spend_cap, request_cap = await tenant_caps(session, tenant_id)
        spent, requests = Decimal(0), 0
        if spend_cap is not None or request_cap is not None:
            await self._meter.flush()  # this process's buffered records count too (before reading: SQLite locks)
            async with self._sessions() as session:
                spent, requests = await usage_since(session, tenant_id, start)
        quota = TenantQuota(start, end, spend_cap, request_cap, spent, requests, time.monotonic())
        self._quotas[tenant_id] = quota
        return quota


async def tenant_caps(session: AsyncSession, tenant_id: uuid.UUID) -> tuple[Decimal | None, int | None]:
    """The tenant's monthly spend and request caps (None: no cap)."""
    caps = (await session.execute(select(Tenant.spend_cap, Tenant.request_cap).where(Tenant.id == tenant_id))).first()
    if caps is None:
        raise NotFoundError("tenant not found")
    return caps[0], caps[1]


async def usage_since(session: AsyncSession, tenant_id: uuid.UUID, start: datetime) -> tuple[Decimal, int]:
    """The tenant's billed spend and request count since ``start``, summed in the database."""
    requests, total = (
        await session.execute(
            select(func.count(), func.sum(UsageRecord.cost)).where(
                UsageRecord.tenant_id == tenant_id, UsageRecord.created_at >= start
            )
        )
    ).one()
    return total or Decimal(0), requests


class QuotaReport(msgspec.Struct, rename="camel"):
    """A tenant's caps for the current month and what it has used of them (``GET /usage/quota``)."""

    month_start: datetime
    resets_at: datetime
    """When the caps start over: the first instant of next month, UTC."""
    spend_cap: Decimal | None
    request_cap: int | None
    spent: Decimal
    requests: int
    remaining_spend: Decimal | None
    """``spend_cap - spent``, at least 0; None without a spend cap."""
    remaining_requests: int | None
    """``request_cap - requests``, at least 0; None without a request cap."""


async def quota_report(session: AsyncSession, tenant_id: uuid.UUID) -> QuotaReport:
    """The tenant's caps and this month's usage, from the database (flush the meter first)."""
    start, end = month_bounds(utc_now())
    spend_cap, request_cap = await tenant_caps(session, tenant_id)
    spent, requests = await usage_since(session, tenant_id, start)
    return QuotaReport(
        month_start=start,
        resets_at=end,
        spend_cap=spend_cap,
        request_cap=request_cap,
        spent=spent,
        requests=requests,
        remaining_spend=None if spend_cap is None else max(Decimal(0), spend_cap - spent),
        remaining_requests=None if request_cap is None else max(0, request_cap - requests),
    )
