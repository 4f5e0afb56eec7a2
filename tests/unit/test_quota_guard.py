"""The quota guard on its own, on a real database (and a real Redis where named), with an injected clock: what a
reservation counts, what releases it, when caps are read again."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from redis.asyncio import Redis

from cloudeasyml.db.engine import create_engine, session_factory
from cloudeasyml.domain.quota import QuotaGuard
from cloudeasyml.domain.tenants import NewTenant, set_caps
from cloudeasyml.errors import RequestCapReachedError, SpendCapReachedError
from cloudeasyml.metering.meter import Meter
from tests.conftest import db_session, new_tenant


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(name="clock")
def fx_clock() -> Clock:
    return Clock()


class Guards:
    """Builds guards on the test's database (and Redis, when given); ``close`` closes what it built."""

    def __init__(self, url: str, clock: Clock, journal_dir: Path) -> None:
        self._journal_dir = journal_dir
        self._engine = create_engine(url)
        self._sessions = session_factory(self._engine)
        self._clock = clock
        self._made: list[QuotaGuard] = []
        self._redis: list[Redis] = []

    def build(self, redis_url: str | None = None, **options: object) -> QuotaGuard:
        redis = None
        if redis_url is not None:
            redis = Redis.from_url(redis_url)
            self._redis.append(redis)
        meter = Meter(self._sessions, self._journal_dir / f"meter-{len(self._made)}")
        guard = QuotaGuard(self._sessions, meter, redis=redis, clock=self._clock, **options)  # type: ignore[arg-type]
        self._made.append(guard)
        return guard

    async def close(self) -> None:
        for guard in self._made:
            await guard.close()
        for redis in self._redis:
            await redis.aclose()
        await self._engine.dispose()


@pytest.fixture(name="guards")
async def fx_guards(migrated_url: str, clock: Clock, tmp_path: Path) -> AsyncIterator[Guards]:
    guards = Guards(migrated_url, clock, tmp_path)
    yield guards
    await guards.close()


async def _caps(url: str, tenant: NewTenant, **caps: object) -> None:
    async with db_session(url) as session:
        await set_caps(session, tenant.tenant.name, **caps)


@pytest.fixture(name="tenant")
async def fx_tenant(migrated_url: str) -> NewTenant:
    return await new_tenant(migrated_url)


async def test_requests_in_flight_count_against_the_request_cap_until_released(
    migrated_url: str, guards: Guards, tenant: NewTenant
) -> None:
    await _caps(migrated_url, tenant, request_cap=2)
    guard = guards.build()
    first, second = await guard.reserve(tenant.tenant.id), await guard.reserve(tenant.tenant.id)
    assert first is not None and second is not None
    with pytest.raises(RequestCapReachedError, match=r"request cap \(2 per month\)"):
        await guard.reserve(tenant.tenant.id)  # nothing billed yet: the two in flight fill the cap
    await first.release()
    await first.commit(Decimal(1))  # settled already: no effect
    third = await guard.reserve(tenant.tenant.id)
    assert third is not None
    await second.commit(Decimal("0.1"))
    await third.commit(Decimal("0.1"))
    with pytest.raises(RequestCapReachedError):
        await guard.reserve(tenant.tenant.id)


async def test_an_uncapped_tenant_gets_no_reservation(migrated_url: str, guards: Guards, tenant: NewTenant) -> None:
    guard = guards.build()
    assert [await guard.reserve(tenant.tenant.id, Decimal(5)) for _ in range(3)] == [None, None, None]


async def test_the_spend_cap_holds_each_request_in_flight_at_its_minimum_price(
    migrated_url: str, guards: Guards, tenant: NewTenant
) -> None:
    await _caps(migrated_url, tenant, spend_cap=Decimal(1))
    guard = guards.build()
    hold = Decimal("0.4")
    first, second = await guard.reserve(tenant.tenant.id, hold), await guard.reserve(tenant.tenant.id, hold)
    with pytest.raises(SpendCapReachedError, match=r"spend cap \(1 per month\)"):
        await guard.reserve(tenant.tenant.id, hold)  # 0.4 + 0.4 in flight + 0.4 would pass 1
    assert first is not None and second is not None
    await first.commit(Decimal("0.45"))  # spent 0.45, 0.4 held: a request of minimum 0.15 still fits
    third = await guard.reserve(tenant.tenant.id, Decimal("0.15"))
    assert third is not None
    await second.commit(Decimal("0.5"))
    await third.commit(Decimal("0.2"))  # the crossing: spent 1.15, over by less than the requests' time-based parts
    with pytest.raises(SpendCapReachedError):
        await guard.reserve(tenant.tenant.id, Decimal(0))  # past the cap even a free request is refused


async def test_a_model_without_a_fixed_price_runs_while_the_cap_is_not_reached(
    migrated_url: str, guards: Guards, tenant: NewTenant
) -> None:
    await _caps(migrated_url, tenant, spend_cap=Decimal(1))
    guard = guards.build()
    reservation = await guard.reserve(tenant.tenant.id, Decimal(0))
    assert reservation is not None
    await reservation.commit(Decimal("0.999"))
    last = await guard.reserve(tenant.tenant.id, Decimal(0))
    assert last is not None
    await last.commit(Decimal("0.002"))
    with pytest.raises(SpendCapReachedError):
        await guard.reserve(tenant.tenant.id, Decimal(0))


async def test_caps_are_read_again_before_the_first_request_past_the_refresh_interval(
    migrated_url: str, guards: Guards, tenant: NewTenant, clock: Clock
) -> None:
    await _caps(migrated_url, tenant, request_cap=1)
    guard = guards.build(refresh_seconds=5.0)
    reservation = await guard.reserve(tenant.tenant.id)
    assert reservation is not None
    await reservation.commit(Decimal(0))
    await _caps(migrated_url, tenant, request_cap=1000)
    clock.now += 2.0  # within the interval: the caps read 2 s ago stand
    with pytest.raises(RequestCapReachedError, match=r"\(1 per month\)"):
        await guard.reserve(tenant.tenant.id)
    clock.now += 3.5  # past it, and nothing ran in between: read again before this request
    assert await guard.reserve(tenant.tenant.id) is not None
    await _caps(migrated_url, tenant, request_cap=None, spend_cap=Decimal(0))  # lowered: applies the same way
    clock.now += 5.5
    with pytest.raises(SpendCapReachedError):
        await guard.reserve(tenant.tenant.id)


async def test_a_busy_tenants_caps_are_read_again_in_the_background(
    migrated_url: str, guards: Guards, tenant: NewTenant, clock: Clock
) -> None:
    guard = guards.build(refresh_seconds=5.0)
    assert await guard.reserve(tenant.tenant.id) is None
    await _caps(migrated_url, tenant, request_cap=0)
    clock.now += 3.0  # past half the interval: this request runs on what was read, and a read starts
    assert await guard.reserve(tenant.tenant.id) is None
    for _ in range(100):
        if (await guard.caps(tenant.tenant.id)).request_cap == 0:
            break
        await asyncio.sleep(0.01)
    with pytest.raises(RequestCapReachedError):
        await guard.reserve(tenant.tenant.id)


async def test_a_request_cancelled_while_it_reserves_in_redis_gives_its_place_back(
    migrated_url: str, guards: Guards, tenant: NewTenant, redis_url: str
) -> None:
    await _caps(migrated_url, tenant, request_cap=1)
    guard = guards.build(redis_url)
    await guard.caps(tenant.tenant.id)  # read: the reservation's first wait is Redis
    reserving = asyncio.ensure_future(guard.reserve(tenant.tenant.id))
    for _ in range(3):  # let it reach Redis (or not): either way the place must come back
        await asyncio.sleep(0)
    reserving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reserving
    await guard.close()
    for _ in range(50):
        try:
            assert await guard.reserve(tenant.tenant.id) is not None
            break
        except RequestCapReachedError:
            await asyncio.sleep(0.02)
    else:
        pytest.fail("the cancelled reservation was never released")


async def test_processes_sharing_redis_share_the_count(
    migrated_url: str, guards: Guards, tenant: NewTenant, redis_url: str
) -> None:
    await _caps(migrated_url, tenant, request_cap=3)
    first, second = guards.build(redis_url), guards.build(redis_url)
    held = [await first.reserve(tenant.tenant.id), await second.reserve(tenant.tenant.id)]
    committed = await first.reserve(tenant.tenant.id)
    assert committed is not None and all(held)
    await committed.commit(Decimal(1))
    for guard in (first, second):
        with pytest.raises(RequestCapReachedError):
            await guard.reserve(tenant.tenant.id)
    await held[0].release()  # type: ignore[union-attr]
    assert await second.reserve(tenant.tenant.id) is not None


async def test_a_reservation_of_a_process_that_died_expires_after_its_lease(
    migrated_url: str, guards: Guards, tenant: NewTenant, redis_url: str
) -> None:
    await _caps(migrated_url, tenant, request_cap=1)
    dead = guards.build(redis_url, reservation_seconds=0.1)
    assert await dead.reserve(tenant.tenant.id) is not None  # never settled: its process "died"
    survivor = guards.build(redis_url)
    with pytest.raises(RequestCapReachedError):
        await survivor.reserve(tenant.tenant.id)
    await asyncio.sleep(0.15)
    assert await survivor.reserve(tenant.tenant.id) is not None


async def test_redis_starts_a_month_from_the_usage_in_the_database(
    migrated_url: str, guards: Guards, tenant: NewTenant, redis_url: str, tmp_path: Path
) -> None:
    await _caps(migrated_url, tenant, request_cap=2)
    local = guards.build()  # no Redis: its commits reach only the database (through its meter, below)
    reservation = await local.reserve(tenant.tenant.id)
    assert reservation is not None
    await reservation.commit(Decimal(0))
    await _record_usage(migrated_url, tenant, tmp_path)
    shared = guards.build(redis_url)
    assert await shared.reserve(tenant.tenant.id) is not None  # 1 in the database + this one
    with pytest.raises(RequestCapReachedError):
        await shared.reserve(tenant.tenant.id)


async def _record_usage(url: str, tenant: NewTenant, journal_dir: Path) -> None:
    """One billed request of ``tenant``, written as the meter writes it."""
    from cloudeasyml.db.types import utc_now
    from cloudeasyml.metering.meter import Usage

    engine = create_engine(url)
    meter = Meter(session_factory(engine), journal_dir)
    meter.record(
        Usage(
            request_id=str(uuid.uuid4()),
            tenant_id=tenant.tenant.id,
            api_key_id=None,
            deployment_id=uuid.uuid4(),
            deployment_name="d",
            model_name="tiny",
            model_version="1",
            items=1,
            processing_ms=1.0,
            gpu_ms=0.0,
            cost=Decimal("0.001"),
            created_at=utc_now(),
        )
    )
    await meter.flush()
    await engine.dispose()


async def test_with_redis_unreachable_each_process_still_holds_the_caps_on_its_own(
    migrated_url: str, guards: Guards, tenant: NewTenant
) -> None:
    await _caps(migrated_url, tenant, request_cap=1)
    guard = guards.build("redis://127.0.0.1:1/0")  # nothing listens there
    reservation = await guard.reserve(tenant.tenant.id)
    assert reservation is not None
    with pytest.raises(RequestCapReachedError):
        await guard.reserve(tenant.tenant.id)
    await reservation.release()
    assert await guard.reserve(tenant.tenant.id) is not None
