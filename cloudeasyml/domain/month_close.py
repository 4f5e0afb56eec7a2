"""Month close: once a month has closed (``FREEZE_AFTER`` past its end), freeze every tenant's invoice for it and
emit ``invoice.ready``, without waiting for someone to read the invoice.

It runs in the dispatcher's periodic scan (every server process where the dispatcher runs), so several processes may
close the same month at once; that is safe because freezing is claimed by the ``invoice`` table's key
``(tenant_id, month)`` (the first insert wins, the others read what it stored) and ``invoice.ready`` has an id derived
from the tenant and month (the outbox keeps one). Each tenant's invoice is frozen in its own transaction, so one
tenant's failure does not hold back the others (they are retried at the next scan).

The previous month is closed for every tenant that existed in it (an invoice of nothing is an invoice too). A month
before it may have closed while no process ran (a platform stopped over a month's end): the closer also looks back
``LOOKBACK_MONTHS`` months before the previous one and freezes the invoices, still unfrozen, of the tenants that have
usage in them, so that those tenants get their ``invoice.ready`` too, late.

Like the dispatcher, it reads across tenants: it is the platform's, and each invoice it writes is one tenant's, built
by that tenant's ``InvoiceService``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cloudeasyml.core.clock import utc_now
from cloudeasyml.db.models import Invoice, Tenant, UsageDaily
from cloudeasyml.domain.invoices import FREEZE_AFTER, InvoiceService, PriceOf, month_bounds
from cloudeasyml.metering.meter import Meter

__all__ = ("LOOKBACK_MONTHS", "MonthCloser", "previous_month")

log = logging.getLogger(__name__)

LOOKBACK_MONTHS = 2
"""Months before the previous one whose unfrozen invoices with usage are frozen too (a quarter in all)."""


def previous_month(now: datetime) -> str:
    """``YYYY-MM`` of the calendar month (UTC) before the one ``now`` is in."""
    return f"{now.year - 1}-12" if now.month == 1 else f"{now.year}-{now.month - 1:02d}"


class MonthCloser:
    """Freezes the previous month's invoices once it has closed (see the module's docstring)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        meter: Meter,
        price_of: PriceOf,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._sessions = sessions
        self._meter = meter
        self._price_of = price_of
        self._clock = clock
        self._closed: set[str] = set()
        """The months this process found wholly closed: not looked at again."""

    async def __call__(self) -> int:
        """Close the previous month (and the ``LOOKBACK_MONTHS`` before it) if it has closed and this process has not
        seen it closed; returns how many invoices this call froze or found frozen by another process meanwhile (0
        when there was nothing to do).
        """
        now = self._clock()
        latest = previous_month(now)
        if now < month_bounds(latest)[1] + FREEZE_AFTER:
            return 0
        months = [latest]
        for _ in range(LOOKBACK_MONTHS):
            months.insert(0, previous_month(month_bounds(months[0])[0]))
        done = 0
        for month in months:
            if month not in self._closed:  # oldest first: a late invoice.ready comes before the newer month's
                done += await self._close(month, now, every_tenant=month == latest)
        return done

    async def _close(self, month: str, now: datetime, *, every_tenant: bool) -> int:
        """Freeze ``month``'s unfrozen invoices: of every tenant that existed in it (``every_tenant``) or has usage
        in it, else of those with usage only; how many were frozen (by this call or another process).
        """
        start, end = month_bounds(month)
        async with self._sessions() as session:
            used = exists().where(UsageDaily.tenant_id == Tenant.id, UsageDaily.day >= start, UsageDaily.day < end)
            frozen = exists().where(and_(Invoice.tenant_id == Tenant.id, Invoice.month == month))
            due = or_(Tenant.created_at < end, used) if every_tenant else used
            tenants = list(await session.scalars(select(Tenant.id).where(due, ~frozen).order_by(Tenant.id)))
        failed = 0
        for tenant_id in tenants:
            try:
                async with self._sessions() as session:
                    service = InvoiceService(session, tenant_id, self._meter, self._price_of, clock=lambda: now)
                    invoice = await service.invoice(month)
                    assert invoice.status == "final"  # noqa: S101 - the month is closed, so invoice() froze it
            except Exception:  # noqa: BLE001 - one tenant's failure must not stop the others; the next scan retries
                failed += 1
                log.exception("freezing the %s invoice of tenant %s failed; retried at the next scan", month, tenant_id)
        if not failed:
            self._closed.add(month)
            if tenants:
                log.info("closed %s: froze %d invoice(s)", month, len(tenants))
        return len(tenants) - failed
