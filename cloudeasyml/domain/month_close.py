"""Month close: once a month has closed (``FREEZE_AFTER`` past its end), freeze every tenant's invoice for it and
emit ``invoice.ready``, without waiting for someone to read the invoice.

It runs in the dispatcher's periodic scan (every server process where the dispatcher runs), so several processes may
close the same month at once; that is safe because freezing is claimed by the ``invoice`` table's key
``(tenant_id, month)`` (the first insert wins, the others read what it stored) and ``invoice.ready`` has an id derived
from the tenant and month (the outbox keeps one). Each tenant's invoice is frozen in its own transaction, so one
tenant's failure does not hold back the others (they are retried at the next scan).

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

__all__ = ("MonthCloser", "previous_month")

log = logging.getLogger(__name__)


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
        self._closed: str | None = None
        """The last month this process found wholly closed: not looked at again."""

    async def __call__(self) -> int:
        """Close the previous month if it has closed and this process has not seen it closed; returns how many
        invoices this call froze or found frozen by another process meanwhile (0 when there was nothing to do).
        """
        now = self._clock()
        month = previous_month(now)
        start, end = month_bounds(month)
        if month == self._closed or now < end + FREEZE_AFTER:
            return 0
        async with self._sessions() as session:
            # The tenants that existed in the month or have usage in it, whose invoice is not frozen yet.
            used = exists().where(UsageDaily.tenant_id == Tenant.id, UsageDaily.day >= start, UsageDaily.day < end)
            frozen = exists().where(and_(Invoice.tenant_id == Tenant.id, Invoice.month == month))
            tenants = list(
                await session.scalars(
                    select(Tenant.id).where(or_(Tenant.created_at < end, used), ~frozen).order_by(Tenant.id)
                )
            )
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
            self._closed = month
            if tenants:
                log.info("closed %s: froze %d invoice(s)", month, len(tenants))
        return len(tenants) - failed
