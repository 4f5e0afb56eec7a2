"""Invoices: ``GET /invoices`` and ``GET /invoices/{YYYY-MM}`` (scope ``usage:read``)."""

from __future__ import annotations

from litestar import Controller, get
from litestar.params import FromPath

from cloudeasyml.api.auth import requires_scope
from cloudeasyml.api.deps import MANAGEMENT, Injected
from cloudeasyml.domain.invoices import Invoice, InvoiceService, InvoiceSummary

__all__ = ("InvoiceController",)


class InvoiceController(Controller):
    """The caller's tenant's invoices (``invoices`` is scoped to the caller's tenant: see ``api.deps``)."""

    path = "/invoices"
    tags = ["Usage"]
    dependencies = MANAGEMENT

    @get("/", summary="Months with usage", guards=[requires_scope("usage:read")])
    async def list_invoices(self, invoices: Injected[InvoiceService]) -> list[InvoiceSummary]:
        """Every month (UTC) with usage, newest first, with its total and request count."""
        return await invoices.months()

    @get("/{month:str}", summary="A month's invoice", guards=[requires_scope("usage:read")])
    async def get_invoice(self, invoices: Injected[InvoiceService], month: FromPath[str]) -> Invoice:
        """The invoice of ``month`` (``YYYY-MM``, UTC): one line per model, version and kind (online, batch,
        shadow) with its requests, items, processing seconds, the plan's unit prices and the amount billed; the
        subtotal and total equal ``GET /usage`` for the month. ``open`` until an hour after the month ends, then
        ``final``: frozen the first time it is read (with an ``invoice.ready`` event), never changed after.
        """
        return await invoices.invoice(month)
