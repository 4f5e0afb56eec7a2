"""Month close: once the previous month has closed, the dispatcher's periodic scan freezes every tenant's invoice for
it and emits ``invoice.ready`` once per tenant and month, however many processes close it at once. "Now" is injected,
nothing sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
from sqlalchemy import func, select

from cloudeasyml.db.engine import create_engine, session_factory
from cloudeasyml.db.models import Invoice, Tenant, WebhookEvent
from cloudeasyml.domain.invoices import plan_prices
from cloudeasyml.domain.month_close import MonthCloser, previous_month
from cloudeasyml.domain.tenants import NewTenant
from cloudeasyml.domain.webhooks.dispatcher import WebhookDispatcher
from cloudeasyml.metering.meter import Meter
from cloudeasyml.metering.pricing_book import PricingBook
from cloudeasyml.plugins.catalog import build_catalog
from cloudeasyml.plugins.manager import PluginManager
from cloudeasyml.settings import Settings
from tests.conftest import bearer, db_session
from tests.integration.test_usage_detail import _seed
from tests.support.webhooks import LOOPBACK, events

NOVEMBER_ENDS = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture(name="settings")
def fx_settings(settings: Settings) -> Settings:
    """The ``client`` app runs no dispatcher: its month close runs on the real clock, and from December 2026 on the
    real previous month is the test's November, which it froze first (with its own ``issuedAt``) in one CI run.
    """
    return msgspec.structs.replace(settings, webhooks=msgspec.structs.replace(settings.webhooks, enabled=False))


class Now:
    """The closer's clock: whatever the test sets."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@asynccontextmanager
async def closer(url: str, pm: PluginManager, now: Callable[[], datetime], tmp: Path) -> AsyncIterator[MonthCloser]:
    """A month closer as one server process has it: its own engine and meter."""
    engine = create_engine(url)
    sessions = session_factory(engine)
    meter = Meter(sessions, tmp)
    try:
        yield MonthCloser(sessions, meter, plan_prices(build_catalog(pm), PricingBook(pm)), clock=now)
    finally:
        await meter.stop()
        await engine.dispose()


async def _frozen(url: str) -> dict[str, int]:
    async with db_session(url) as session:
        rows = await session.execute(select(Invoice.month, func.count()).group_by(Invoice.month))
        return {month: int(count) for month, count in rows.all()}


async def _tenants(url: str) -> int:
    async with db_session(url) as session:
        return int(await session.scalar(select(func.count()).select_from(Tenant)) or 0)


def test_previous_month() -> None:
    assert previous_month(datetime(2027, 1, 1, 0, 30, tzinfo=UTC)) == "2026-12"
    assert previous_month(datetime(2026, 12, 31, tzinfo=UTC)) == "2026-11"
    assert previous_month(datetime(2026, 10, 15, tzinfo=UTC)) == "2026-09"


async def test_two_processes_close_a_month_once(
    migrated_url: str, plugin_manager: PluginManager, tenant: NewTenant, other_tenant: NewTenant, tmp_path: Path
) -> None:
    seeded = {t.tenant.id: await _seed(migrated_url, t) for t in (tenant, other_tenant)}
    now = Now(NOVEMBER_ENDS.replace(minute=59))  # 00:59: the month has ended, but has not closed yet
    async with (
        closer(migrated_url, plugin_manager, now, tmp_path / "a") as first,
        closer(migrated_url, plugin_manager, now, tmp_path / "b") as second,
    ):
        assert await first() == 0 and await _frozen(migrated_url) == {}

        now.now = NOVEMBER_ENDS.replace(hour=1)  # closed: both processes close it at once
        done = await asyncio.gather(first(), second())
        tenants = await _tenants(migrated_url)
        assert await _frozen(migrated_url) == {"2026-11": tenants}
        assert tenants <= sum(done) <= 2 * tenants  # each saw every tenant frozen, by itself or by the other
        ready = await events(migrated_url, "invoice.ready")
        assert len(ready) == tenants  # once per tenant and month
        assert all(event["data"]["month"] == "2026-11" for event in ready)

        async with db_session(migrated_url) as session:
            for tenant_id, records in seeded.items():
                row = await session.get(Invoice, (tenant_id, "2026-11"))
                assert row is not None and row.total == sum(r.cost for r in records)
                assert '"status":"final"' in row.body and '"issuedAt":"2026-12-01T01:00:00Z"' in row.body

        assert await first() == 0  # this process remembers the month closed: nothing more is read
    async with closer(migrated_url, plugin_manager, now, tmp_path / "c") as restarted:
        assert await restarted() == 0  # a new process finds every invoice frozen
    assert len(await events(migrated_url, "invoice.ready")) == tenants


async def test_the_dispatchers_scan_closes_the_month_and_the_api_serves_that_invoice(
    client, migrated_url: str, plugin_manager: PluginManager, tenant: NewTenant, tmp_path: Path
) -> None:
    records = await _seed(migrated_url, tenant)
    now = Now(datetime(2026, 12, 1, 1, 0, 0, 500_000, tzinfo=UTC))
    async with closer(migrated_url, plugin_manager, now, tmp_path / "a") as close:
        engine = create_engine(migrated_url)
        dispatcher = WebhookDispatcher(session_factory(engine), LOOPBACK, clock=now, chores=(close,))
        try:
            await dispatcher.scan()  # what the dispatcher's loop runs every scan_interval_seconds
        finally:
            await dispatcher.stop()
            await engine.dispose()
    async with db_session(migrated_url) as session:
        stored = await session.scalar(
            select(func.count()).select_from(WebhookEvent).where(WebhookEvent.tenant_id == tenant.tenant.id)
        )
    assert stored == 1
    invoice = (await client.get("/invoices/2026-11", headers=bearer(tenant.key))).json()
    assert invoice["status"] == "final" and invoice["issuedAt"] == "2026-12-01T01:00:00.500000Z"  # the closer's
    assert Decimal(invoice["total"]) == sum(r.cost for r in records)
    assert len(await events(migrated_url, "invoice.ready")) == await _tenants(migrated_url)


async def test_months_that_closed_while_no_process_ran_are_closed_late_for_the_tenants_with_usage(
    migrated_url: str, plugin_manager: PluginManager, tenant: NewTenant, other_tenant: NewTenant, tmp_path: Path
) -> None:
    """No process ran from November's end to February: November (usage) and December (none) closed unseen."""
    await _seed(migrated_url, tenant)  # November usage of one tenant only
    now = Now(datetime(2027, 2, 1, 1, 0, tzinfo=UTC))
    async with closer(migrated_url, plugin_manager, now, tmp_path / "a") as close:
        frozen_now = await close()
        tenants = await _tenants(migrated_url)
        # January (the previous month) for every tenant; November for the tenant that used it; December for none.
        assert await _frozen(migrated_url) == {"2027-01": tenants, "2026-11": 1}
        assert frozen_now == tenants + 1
        ready = await events(migrated_url, "invoice.ready")
        assert sorted(event["data"]["month"] for event in ready) == ["2026-11"] + ["2027-01"] * tenants
        assert await close() == 0  # every month of the window is closed here now
    async with db_session(migrated_url) as session:
        late = await session.get(Invoice, (tenant.tenant.id, "2026-11"))
        assert late is not None and '"status":"final"' in late.body
        assert await session.get(Invoice, (other_tenant.tenant.id, "2026-11")) is None
