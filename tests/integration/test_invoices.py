"""Invoices: lines per model, version and kind whose total equals ``GET /usage`` for the month to the last decimal;
a closed month's invoice is frozen when first read (with an ``invoice.ready`` event) and later price changes leave it
as it was."""

from __future__ import annotations

from decimal import Decimal

from litestar.testing import AsyncTestClient
from sqlalchemy import select

from cloudeasyml.app import create_app
from cloudeasyml.core.clock import utc_now
from cloudeasyml.db.models import Invoice, WebhookEvent
from cloudeasyml.domain.tenants import NewTenant, create_tenant
from tests.conftest import bearer, db_session
from tests.integration.test_predict import deploy
from tests.integration.test_usage_detail import PERIOD, _seed
from tests.support.example_plugins import TierPricing


async def test_a_closed_months_invoice_matches_usage_and_is_frozen(
    client, settings, plugin_manager, migrated_url: str
) -> None:
    async with db_session(migrated_url) as session:
        tenant: NewTenant = await create_tenant(session, "enterprise-co", "o@example.com", plan="enterprise")
    records = await _seed(migrated_url, tenant)
    auth = bearer(tenant.key)
    deployment = await deploy(client, tenant.key)
    body = {"deploymentId": deployment["id"], "inputs": [{"x": 1.0, "y": 2.0}]}
    assert (await client.post("/predict", json=body, headers=auth)).status_code == 200  # this month: open

    months = (await client.get("/invoices", headers=auth)).json()
    this_month = utc_now().strftime("%Y-%m")
    assert [m["month"] for m in months] == [this_month, "2026-11"]
    assert Decimal(months[1]["total"]) == sum(r.cost for r in records)

    response = await client.get("/invoices/2026-11", headers=auth)
    assert response.status_code == 200, response.text
    invoice = response.json()
    usage = (await client.get("/usage", params=PERIOD, headers=auth)).json()
    assert invoice["status"] == "final" and invoice["plan"] == "enterprise" and invoice["issuedAt"]
    assert invoice["total"] == invoice["subtotal"] and Decimal(invoice["total"]) == Decimal(usage["totalCost"])
    assert sum(Decimal(line["amount"]) for line in invoice["lines"]) == Decimal(invoice["total"])
    assert {line["kind"] for line in invoice["lines"]} == {"online"}
    assert sum(line["requests"] for line in invoice["lines"]) == len(records) == usage["totalRequests"]
    tiny = next(line for line in invoice["lines"] if line["model"] == "tiny")
    assert tiny["unitPrices"] == {"perRequest": "0.001", "perSecond": "0.5", "perGpuHour": "0"}
    async with db_session(migrated_url) as session:
        assert await session.get(Invoice, (tenant.tenant.id, "2026-11")) is not None
        events = list(await session.scalars(select(WebhookEvent.payload).where(WebhookEvent.type == "invoice.ready")))
    assert len(events) == 1 and '"month":"2026-11"' in events[0]

    # The plan's prices change (a pricing plugin halves the enterprise plan's): the frozen invoice does not.
    plugin_manager.register(TierPricing(), name="tier-pricing")
    async with AsyncTestClient(app=create_app(settings, plugin_manager)) as repriced:
        again = (await repriced.get("/invoices/2026-11", headers=auth)).json()
        current = (await repriced.get(f"/invoices/{this_month}", headers=auth)).json()
    assert again == invoice
    assert current["status"] == "open" and current.get("issuedAt") is None
    [line] = current["lines"]
    assert line["unitPrices"]["perRequest"] == "0.0005"  # an open month shows today's prices
    async with db_session(migrated_url) as session:
        events = list(await session.scalars(select(WebhookEvent.payload).where(WebhookEvent.type == "invoice.ready")))
    assert len(events) == 1 and '"month":"2026-11"' in events[0]  # once per month


async def test_invoice_months_are_checked(client, tenant: NewTenant) -> None:
    auth = bearer(tenant.key)
    for month, status in (("2026-13", 422), ("2026-1", 422), ("nonsense", 422), ("2999-01", 404), ("9999-12", 404)):
        response = await client.get(f"/invoices/{month}", headers=auth)
        assert response.status_code == status, (month, response.text)
    empty = (await client.get("/invoices/2026-10", headers=auth)).json()
    assert empty["lines"] == [] and empty["total"] == "0"


async def test_an_invoice_renders_as_pdf(client, tenant: NewTenant, migrated_url: str) -> None:
    await _seed(migrated_url, tenant)
    headers = {**bearer(tenant.key), "Accept": "application/pdf"}
    response = await client.get("/invoices/2026-11", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    assert response.content.startswith(b"%PDF-") and b"%%EOF" in response.content[-32:]
    assert len(response.content) > 1500
