"""Invoices: ``GET /invoices`` and ``GET /invoices/{YYYY-MM}`` (scope ``usage:read``)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get
from litestar.params import FromPath

from cloudeasyml.api.auth import requires_scope
from cloudeasyml.api.deps import MANAGEMENT, Injected
from cloudeasyml.api.invoice_pdf import PDF, invoice_pdf, wants_pdf
from cloudeasyml.domain.invoices import Invoice, InvoiceService, InvoiceSummary
from cloudeasyml.domain.principal import Principal

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
    async def get_invoice(
        self, request: Request[Principal, Any, Any], invoices: Injected[InvoiceService], month: FromPath[str]
    ) -> Response[Invoice]:
        """The invoice of ``month`` (``YYYY-MM``, UTC): one line per model, version and kind (online, batch,
        shadow) with its requests, items, processing seconds, the plan's unit prices and the amount billed; the
        subtotal and total equal ``GET /usage`` for the month. ``open`` until an hour after the month ends, then
        ``final``: frozen the first time it is read (with an ``invoice.ready`` event), never changed after.
        ``Accept: application/pdf`` renders it as a PDF.
        """
        invoice = await invoices.invoice(month)
        if wants_pdf(request.headers.get("accept")):
            headers = {"Content-Disposition": f'inline; filename="invoice-{invoice.month}.pdf"'}
            return Response(invoice_pdf(invoice), media_type=PDF, headers=headers)  # type: ignore[arg-type]
        return Response(invoice)
