"""Monthly invoices: a tenant's usage records of a calendar month (UTC), one line per model, version and kind.

A line's amount is the sum of what its requests were billed (each usage record's cost, priced when it ran), so an
invoice's total equals ``GET /usage`` for the month to the last decimal. Unit prices show the plan's prices for the
line's model version. An open month's invoice is computed on each read. A closed month's (``FREEZE_AFTER`` past its
end, so that every process has written its last records) is frozen the first time it is read: stored as it is,
with an ``invoice.ready`` webhook event in the same transaction; later price changes do not alter it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Final, Literal

import msgspec
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from cloudeasyml.core.clock import utc_now
from cloudeasyml.core.pricing import Pricing
from cloudeasyml.db.models import Invoice as InvoiceRow
from cloudeasyml.db.models import Tenant, UsageDaily
from cloudeasyml.domain.usage_sums import month_of_day, summed
from cloudeasyml.domain.webhooks.events import derived_event_id, emit
from cloudeasyml.errors import InvalidInputError, NotFoundError
from cloudeasyml.metering.meter import Meter
from cloudeasyml.metering.pricing_book import PricingBook
from cloudeasyml.plugins.catalog import ModelCatalog

__all__ = (
    "FREEZE_AFTER",
    "KINDS",
    "Invoice",
    "InvoiceLine",
    "InvoiceService",
    "InvoiceSummary",
    "PriceOf",
    "month_bounds",
    "plan_prices",
)

KINDS: Final = ("online", "batch", "shadow")
"""Kinds of usage, in the order of an invoice's lines. Records without a ``kind`` column are ``online``."""

FREEZE_AFTER: Final = timedelta(hours=1)
"""How long after a month ends its invoice is frozen: longer than any process takes to write its journaled usage."""

PriceOf = Callable[[str, str, str], Pricing | None]
"""``(plan, model name, model version)`` → the plan's prices, or None for a model no longer installed."""


class InvoiceLine(msgspec.Struct, rename="camel"):
    """One model version's usage of one kind in the month."""

    model: str
    model_version: str
    kind: str
    requests: int
    items: int
    processing_seconds: Decimal
    """Billed processing time, to the microsecond the prices were applied to."""
    gpu_seconds: Decimal
    unit_prices: Pricing | None
    """The plan's prices for the model version (per request, per second, per GPU hour); None if uninstalled."""
    amount: Decimal
    """What the line's requests were billed, summed exactly."""


class Invoice(msgspec.Struct, rename="camel"):
    """A tenant's invoice for one month. Amounts are exact decimals, encoded as strings."""

    tenant_id: uuid.UUID
    month: str
    period_start: datetime
    period_end: datetime
    status: Literal["open", "final"]
    """``open``: the month is not closed yet and the invoice may still grow; ``final``: frozen."""
    plan: str
    lines: list[InvoiceLine]
    subtotal: Decimal
    total: Decimal
    issued_at: datetime | None = None
    """When it was frozen (``final``)."""


class InvoiceSummary(msgspec.Struct, rename="camel"):
    """A month with usage."""

    month: str
    total: Decimal
    requests: int


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """``[start, end)`` of ``YYYY-MM`` in UTC; ``InvalidInputError`` for anything else."""
    try:
        start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        raise InvalidInputError(f"month must be YYYY-MM, got {month!r}") from None
    if len(month) != 7:
        raise InvalidInputError(f"month must be YYYY-MM, got {month!r}")
    try:
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    except ValueError:  # December 9999: past the calendar, so never begun either
        raise NotFoundError(f"no invoice for {month}: the month has not begun") from None
    return start, end


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Invoice).decode


class InvoiceService:
    """One tenant's invoices. Every query filters on its ``tenant_id``."""

    def __init__(
        self,
        session: AsyncSession,
        tenant_id: uuid.UUID,
        meter: Meter,
        price_of: PriceOf,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._session = session
        self._tenant_id = tenant_id
        self._meter = meter
        self._price_of = price_of
        self._clock = clock
        """When "now" is: whether a month has begun or is closed (injectable, so a test closes a month at once)."""

    async def months(self) -> list[InvoiceSummary]:
        """The months with usage, newest first, with their totals."""
        await self._meter.flush()
        # Every record is in the daily rollup: a month's rows there, not its records, are read.
        month = month_of_day(self._session.get_bind().dialect.name).label("month")
        rows = await self._session.execute(
            select(month, func.sum(UsageDaily.cost), func.sum(UsageDaily.requests))
            .where(UsageDaily.tenant_id == self._tenant_id)
            .group_by(month)
            .order_by(month.desc())
        )
        return [InvoiceSummary(month=m, total=total, requests=int(count)) for m, total, count in rows]

    async def invoice(self, month: str) -> Invoice:
        """The invoice of ``month`` (``YYYY-MM``): frozen once the month is closed, computed while it is open."""
        start, end = month_bounds(month)
        now = self._clock()
        if start > now:
            raise NotFoundError(f"no invoice for {month}: the month has not begun")
        stored = await self._session.get(InvoiceRow, (self._tenant_id, month))
        if stored is not None:
            return _decode(stored.body)
        await self._meter.flush()
        invoice = await self._compute(month, start, end)
        if now < end + FREEZE_AFTER:
            return invoice
        invoice.status, invoice.issued_at = "final", now
        return await self._freeze(invoice)

    async def _compute(self, month: str, start: datetime, end: datetime) -> Invoice:
        tenant = await self._session.get(Tenant, self._tenant_id)
        if tenant is None:
            raise NotFoundError("no such tenant")
        sums = await summed(self._session, self._tenant_id, start, end, ("model_name", "model_version", "kind"))
        order = {k: i for i, k in enumerate(KINDS)}
        lines = sorted(
            (
                InvoiceLine(
                    model=model,
                    model_version=version,
                    kind=line_kind,
                    requests=count,
                    items=int(items),
                    processing_seconds=_seconds(ms),
                    gpu_seconds=_seconds(gpu),
                    unit_prices=self._price_of(tenant.plan, model, version),
                    amount=amount,
                )
                for (model, version, line_kind), (count, items, amount, ms, gpu) in sums.items()
            ),
            key=lambda line: (line.model, line.model_version, order.get(line.kind, len(order)), line.kind),
        )
        subtotal = sum((line.amount for line in lines), Decimal(0))
        return Invoice(
            tenant_id=self._tenant_id,
            month=month,
            period_start=start,
            period_end=end,
            status="open",
            plan=tenant.plan,
            lines=lines,
            subtotal=subtotal,
            total=subtotal,
        )

    async def _freeze(self, invoice: Invoice) -> Invoice:
        """Store ``invoice`` and emit ``invoice.ready`` in one transaction; a process that froze it first wins."""
        insert = postgresql.insert if self._session.get_bind().dialect.name == "postgresql" else sqlite.insert
        written = await self._session.scalar(
            insert(InvoiceRow)
            .values(
                tenant_id=self._tenant_id,
                month=invoice.month,
                plan=invoice.plan,
                total=invoice.total,
                body=_encode(invoice).decode(),
                created_at=invoice.issued_at,
            )
            .on_conflict_do_nothing(index_elements=["tenant_id", "month"])
            .returning(InvoiceRow.month)
        )
        if written is None:
            await self._session.rollback()
            stored = await self._session.get(InvoiceRow, (self._tenant_id, invoice.month))
            assert stored is not None  # noqa: S101 - the conflict was on this row
            return _decode(stored.body)
        await emit(
            self._session,
            self._tenant_id,
            "invoice.ready",
            {"month": invoice.month, "total": format(invoice.total, "f"), "plan": invoice.plan},
            event_id=derived_event_id("invoice.ready", self._tenant_id, invoice.month),
        )
        await self._session.commit()
        return invoice


def plan_prices(catalog: ModelCatalog, pricing: PricingBook) -> PriceOf:
    """The ``PriceOf`` of the installed models: a plan's prices of a model version, None for one uninstalled since
    (its usage is still invoiced, without unit prices).
    """

    def price_of(plan: str, model_name: str, version: str) -> Pricing | None:
        try:
            model = catalog.get(model_name).model
        except NotFoundError:
            return None
        return pricing.for_plan(plan, model, version)

    return price_of


def _seconds(ms: float | None) -> Decimal:
    return (Decimal(repr(round(float(ms or 0.0), 3))) / 1000).quantize(Decimal("0.000001"))
