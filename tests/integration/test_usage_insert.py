"""The meter's insert in the driver's own SQL (``cloudeasyml.metering.usage_insert``) stores exactly what SQLAlchemy's
insert through the ORM's column types stores: each record is written both ways under two request ids, and the rows
read back raw (no type processing) are compared column by column, on SQLite and PostgreSQL. Records already there are
skipped, and values the types refuse are refused here too."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, cast

import msgspec
import pytest
from sqlalchemy import Table, insert, select

from cloudeasyml.db.models import UsageRecord
from cloudeasyml.domain.tenants import NewTenant
from cloudeasyml.metering.usage_insert import COLUMNS, insert_usage
from cloudeasyml.metering.usage_record import Usage
from tests.conftest import db_session

EAST = timezone(timedelta(hours=5, minutes=30))


def _records(tenant: NewTenant) -> list[Usage]:
    base = Usage(
        request_id="",
        tenant_id=tenant.tenant.id,
        api_key_id=tenant.key_id,
        deployment_id=uuid.uuid4(),
        deployment_name="housing-prod",
        model_name="housing",
        model_version="1.0.0",
        items=3,
        processing_ms=0.123456,
        gpu_ms=0.0,
        cost=Decimal("0.0000120000"),
        created_at=datetime(2026, 11, 30, 23, 59, 59, 999_999, tzinfo=UTC),
    )
    return [
        base,
        msgspec.structs.replace(base, created_at=datetime(2026, 12, 1, 4, 0, tzinfo=EAST), cost=Decimal("12.5")),
        msgspec.structs.replace(base, api_key_id=None, kind="batch", items=256, cost=Decimal("0.0000000001")),
        msgspec.structs.replace(base, deployment_name="café ünïcode", model_version="2.0.0-rc.1", gpu_ms=7.25),
        msgspec.structs.replace(base, created_at=datetime(2026, 12, 2, 6, 0, 0, 0, tzinfo=UTC), kind="shadow"),
    ]


async def _raw_rows(url: str) -> dict[str, tuple[Any, ...]]:
    async with db_session(url) as session:
        connection = await session.connection()
        result = await connection.exec_driver_sql(f"SELECT {', '.join(COLUMNS)} FROM usage_record")
        return {row[0]: tuple(row[1:]) for row in result}


async def test_rows_are_stored_as_sqlalchemys_insert_stores_them(migrated_url: str, tenant: NewTenant) -> None:
    records = _records(tenant)
    table = cast(Table, UsageRecord.__table__)
    async with db_session(migrated_url) as session:
        reference = [msgspec.structs.asdict(r) | {"request_id": f"ref-{n}"} for n, r in enumerate(records)]
        await session.execute(insert(table), reference)
        ours = [msgspec.structs.replace(r, request_id=f"raw-{n}") for n, r in enumerate(records)]
        assert await insert_usage(session, ours) == {f"raw-{n}" for n in range(len(records))}
    stored = await _raw_rows(migrated_url)
    assert len(stored) == 2 * len(records)
    for n in range(len(records)):
        assert stored[f"raw-{n}"] == stored[f"ref-{n}"], n
    # And read back through the ORM's types, each record is what was recorded (the instant, the exact cost).
    async with db_session(migrated_url) as session:
        rows = {r.request_id: r for r in await session.scalars(select(UsageRecord))}
    for n, record in enumerate(records):
        row = rows[f"raw-{n}"]
        assert row.created_at == record.created_at and row.created_at.tzinfo is not None
        assert row.cost == record.cost and row.tenant_id == record.tenant_id and row.kind == record.kind
        assert (row.api_key_id, row.items, row.gpu_ms) == (record.api_key_id, record.items, record.gpu_ms)


async def test_records_already_there_are_skipped(migrated_url: str, tenant: NewTenant) -> None:
    first, second, *_ = [msgspec.structs.replace(r, request_id=f"r-{n}") for n, r in enumerate(_records(tenant))]
    async with db_session(migrated_url) as session:
        assert await insert_usage(session, [first]) == {"r-0"}
    changed = msgspec.structs.replace(first, items=99)
    async with db_session(migrated_url) as session:
        assert await insert_usage(session, [changed, second]) == {"r-1"}  # the first is there: kept as it was
        assert await insert_usage(session, []) == set()
    stored = await _raw_rows(migrated_url)
    assert sorted(stored) == ["r-0", "r-1"] and stored["r-0"][COLUMNS.index("items") - 1] == 3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cost": Decimal("0.00000000001")}, "decimal places"),
        ({"created_at": datetime(2026, 12, 1, 12, 0)}, "naive datetime"),
    ],
)
async def test_values_the_column_types_refuse_are_refused(
    migrated_url: str, tenant: NewTenant, change: dict[str, Any], message: str
) -> None:
    bad = msgspec.structs.replace(_records(tenant)[0], request_id="bad", **change)
    async with db_session(migrated_url) as session:
        with pytest.raises(ValueError, match=message):
            await insert_usage(session, [bad])
    assert await _raw_rows(migrated_url) == {}
