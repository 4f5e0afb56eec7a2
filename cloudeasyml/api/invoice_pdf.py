"""``Accept: application/pdf`` for an invoice: rendered with ReportLab (BSD licence), amounts as exact decimals."""

from __future__ import annotations

import io
from decimal import Decimal

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from cloudeasyml.domain.invoices import Invoice

__all__ = ("PDF", "invoice_pdf", "wants_pdf")

PDF = "application/pdf"


def wants_pdf(accept: str | None) -> bool:
    """Whether the client asked for a PDF (``Accept: application/pdf``)."""
    return accept is not None and PDF in accept.lower()


def _money(value: Decimal) -> str:
    return format(value, "f")


def invoice_pdf(invoice: Invoice) -> bytes:
    """The invoice as a one-table PDF: its lines, the subtotal and the total, every figure as in the JSON."""
    styles = getSampleStyleSheet()
    out = io.BytesIO()
    document = SimpleDocTemplate(out, pagesize=A4, title=f"Invoice {invoice.month}", author="CloudEasyML")
    header = ["Model", "Version", "Kind", "Requests", "Items", "Seconds", "Per request", "Per second", "Amount"]
    rows: list[list[str]] = [header]
    for line in invoice.lines:
        prices = line.unit_prices
        rows.append(
            [
                line.model,
                line.model_version,
                line.kind,
                str(line.requests),
                str(line.items),
                _money(line.processing_seconds),
                _money(prices.per_request) if prices else "-",
                _money(prices.per_second) if prices else "-",
                _money(line.amount),
            ]
        )
    rows.append(["Subtotal", "", "", "", "", "", "", "", _money(invoice.subtotal)])
    rows.append(["Total", "", "", "", "", "", "", "", _money(invoice.total)])
    table = Table(rows, repeatRows=1)
    table.setStyle(
        TableStyle(
            [
                ("FONTSIZE", (0, 0), (-1, -1), 7),
                ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
                ("FONTNAME", (0, -1), (-1, -1), "Helvetica-Bold"),
                ("ALIGN", (3, 0), (-1, -1), "RIGHT"),
                ("LINEBELOW", (0, 0), (-1, 0), 0.5, colors.black),
                ("LINEABOVE", (0, -2), (-1, -2), 0.5, colors.black),
            ]
        )
    )
    issued = invoice.issued_at.isoformat() if invoice.issued_at else "not yet (the month is open)"
    document.build(
        [
            Paragraph(f"Invoice {invoice.month}", styles["Title"]),
            Paragraph(
                f"Tenant {invoice.tenant_id} · plan {invoice.plan} · {invoice.status} · issued {issued}",
                styles["Normal"],
            ),
            Paragraph(
                f"Period {invoice.period_start.isoformat()} to {invoice.period_end.isoformat()} (UTC)",
                styles["Normal"],
            ),
            Spacer(1, 12),
            table,
        ]
    )
    return out.getvalue()
