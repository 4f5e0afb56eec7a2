"""``GET /usage?groupBy=...`` and ``GET /usage/records`` (cursor pages, filters), as JSON and as CSV, over usage
records written at known times."""

from __future__ import annotations

import base64
import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select

from cloudeasyml.db.models import UsageHourly
from cloudeasyml.domain.tenants import NewTenant
from cloudeasyml.metering.meter import Usage, write_usage
from tests.conftest import bearer, db_session

START = datetime(2026, 11, 1, tzinfo=UTC)
PERIOD = {"start": "2026-11-01T00:00:00Z", "end": "2026-12-01T00:00:00Z"}
DEPLOYMENTS = [uuid.UUID(int=1), uuid.UUID(int=2)]


def _record(tenant: NewTenant, i: int) -> Usage:
    return Usage(
        request_id=f"{tenant.tenant.name}-{i:04d}",
        tenant_id=tenant.tenant.id,
        api_key_id=None if i % 5 == 0 else f"sk_key{i % 2:012d}",
        deployment_id=DEPLOYMENTS[i % 2],
        deployment_name=f"d{i % 2}",
        model_name="tiny" if i % 3 else "housing",
        model_version="1.0.0" if i % 4 else "2.0.0",
        items=1 + i % 3,
        processing_ms=1.25 * (1 + i % 7),
        gpu_ms=0.0,
        cost=Decimal("0.0000000001") * (i + 1) + Decimal("0.001"),
        created_at=START + timedelta(hours=7 * i, minutes=i % 60),
    )


async def _seed(url: str, tenant: NewTenant, count: int = 90) -> list[Usage]:
    """Usage records written as the meter writes them (the daily rollup with them)."""
    records = [_record(tenant, i) for i in range(count)]
    async with db_session(url) as session:
        await write_usage(session, records)
    return [r for r in records if START <= r.created_at < datetime(2026, 12, 1, tzinfo=UTC)]


async def test_group_by_any_combination_sums_to_the_total(client, tenant: NewTenant, migrated_url: str) -> None:
    records = await _seed(migrated_url, tenant)
    auth = bearer(tenant.key)
    plain = (await client.get("/usage", params=PERIOD, headers=auth)).json()
    assert plain["groups"] is None  # asked for only
    assert Decimal(plain["totalCost"]) == sum(r.cost for r in records)
    for group_by in ("model", "deployment", "version", "apiKey", "day", "hour", "model,day", "apiKey,version,hour"):
        response = await client.get("/usage", params={**PERIOD, "groupBy": group_by}, headers=auth)
        assert response.status_code == 200, response.text
        report = response.json()
        names = group_by.split(",")
        expected: dict[tuple[str, ...], list[Usage]] = {}
        for r in records:
            values = {
                "model": r.model_name,
                "deployment": str(r.deployment_id),
                "version": r.model_version,
                "apiKey": r.api_key_id or "",
                "day": r.created_at.strftime("%Y-%m-%d"),
                "hour": r.created_at.strftime("%Y-%m-%dT%H:00"),
            }
            expected.setdefault(tuple(values[n] for n in names), []).append(r)
        got = {tuple(g["key"][n] for n in names): g for g in report["groups"]}
        assert set(got) == set(expected), group_by
        for key, group in got.items():
            assert Decimal(group["cost"]) == sum(r.cost for r in expected[key])
            assert group["requests"] == len(expected[key]) and group["items"] == sum(r.items for r in expected[key])
        assert sum(Decimal(g["cost"]) for g in report["groups"]) == Decimal(report["totalCost"])
    bad = await client.get("/usage", params={"groupBy": "model,colour"}, headers=auth)
    assert bad.status_code == 422 and "colour" in bad.json()["detail"]


async def test_usage_as_csv_has_exact_decimals(client, tenant: NewTenant, migrated_url: str) -> None:
    records = await _seed(migrated_url, tenant)
    auth = {**bearer(tenant.key), "Accept": "text/csv"}
    for params, first in (({}, "model"), ({"groupBy": "deployment,day"}, "deployment")):
        response = await client.get("/usage", params={**PERIOD, **params}, headers=auth)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert list(rows[0])[0] == first
        assert all("E" not in row["cost"] for row in rows)
        assert sum(Decimal(row["cost"]) for row in rows) == sum(r.cost for r in records)


async def test_records_page_through_every_match_once(
    client, tenant: NewTenant, other_tenant: NewTenant, migrated_url: str
) -> None:
    records = await _seed(migrated_url, tenant)
    await _seed(migrated_url, other_tenant, 5)  # another tenant's records never show
    auth = bearer(tenant.key)
    for filters, keep in (
        ({}, lambda r: True),
        ({"deploymentId": str(DEPLOYMENTS[1])}, lambda r: r.deployment_id == DEPLOYMENTS[1]),
        ({"apiKeyId": "sk_key000000000001"}, lambda r: r.api_key_id == "sk_key000000000001"),
        ({"model": "housing"}, lambda r: r.model_name == "housing"),
    ):
        seen: list[dict] = []
        cursor = None
        while True:
            params = {**PERIOD, **filters, "limit": 7, **({"cursor": cursor} if cursor else {})}
            response = await client.get("/usage/records", params=params, headers=auth)
            assert response.status_code == 200, response.text
            page = response.json()
            assert len(page["records"]) <= 7
            seen += page["records"]
            cursor = page["nextCursor"]
            if cursor is None:
                break
        wanted = sorted((r for r in records if keep(r)), key=lambda r: (r.created_at, r.request_id))
        assert [s["requestId"] for s in seen] == [r.request_id for r in wanted], filters
        assert [Decimal(s["cost"]) for s in seen] == [r.cost for r in wanted]


async def test_records_as_csv_and_bad_parameters(client, tenant: NewTenant, migrated_url: str) -> None:
    records = await _seed(migrated_url, tenant)
    auth = bearer(tenant.key)
    response = await client.get(
        "/usage/records", params={**PERIOD, "limit": 10}, headers={**auth, "Accept": "text/csv"}
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [row["requestId"] for row in rows] == [r.request_id for r in records[:10]]
    assert [Decimal(row["cost"]) for row in rows] == [r.cost for r in records[:10]]
    following = await client.get(
        "/usage/records", params={**PERIOD, "limit": 10, "cursor": response.headers["x-next-cursor"]}, headers=auth
    )
    assert following.json()["records"][0]["requestId"] == records[10].request_id
    assert (await client.get("/usage/records", params={"limit": 1001}, headers=auth)).status_code == 422
    naive = base64.urlsafe_b64encode(b'["2026-11-02T00:00:00","x"]').decode()
    for cursor in ("nonsense", naive):
        assert (await client.get("/usage/records", params={"cursor": cursor}, headers=auth)).status_code == 400


async def test_usage_from_the_daily_rollup_equals_the_records_at_any_bounds(
    client, tenant: NewTenant, migrated_url: str
) -> None:
    records = await _seed(migrated_url, tenant)
    extra = [_record(tenant, i) for i in range(90, 95)]  # late in November
    async with db_session(migrated_url) as session:
        await write_usage(session, records[:20] + extra)  # 20 written again (a journal replayed): counted once
    records += extra
    auth = bearer(tenant.key)
    for start, end in (
        ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z"),  # whole days: the rollup alone
        ("2026-11-03T05:30:00Z", "2026-11-20T13:07:00Z"),  # partial days at both ends
        ("2026-11-03T05:30:00Z", "2026-11-03T23:00:00Z"),  # within one day: the records alone
    ):
        low, high = (datetime.fromisoformat(start), datetime.fromisoformat(end))
        inside = [r for r in records if low <= r.created_at < high]
        report = (await client.get("/usage", params={"start": start, "end": end}, headers=auth)).json()
        assert Decimal(report["totalCost"]) == sum((r.cost for r in inside), Decimal(0)), (start, end)
        assert report["totalRequests"] == len(inside) and report["totalItems"] == sum(r.items for r in inside)


async def test_groups_from_the_rollups_equal_the_records_at_any_bounds(
    client, tenant: NewTenant, migrated_url: str
) -> None:
    """Whole days (whole hours when grouped by hour) come from the rollups, partial ones from the records: at bounds
    that cut days and hours, every grouping sums exactly what the records in the period hold."""
    records = await _seed(migrated_url, tenant)
    async with db_session(migrated_url) as session:
        await write_usage(session, records[:10])  # written again (a journal replayed): counted once
    async with db_session(migrated_url) as session:  # the meter keeps an hourly rollup, as the daily one
        hourly = await session.scalar(
            select(func.sum(UsageHourly.requests)).where(UsageHourly.tenant_id == tenant.tenant.id)
        )
    assert hourly == len(records)
    auth = bearer(tenant.key)
    for start, end in (
        ("2026-11-03T05:30:00Z", "2026-11-20T13:07:00Z"),  # partial days and hours at both ends
        ("2026-11-04T00:00:00Z", "2026-11-09T00:00:00Z"),  # whole days only
        ("2026-11-03T05:30:00Z", "2026-11-03T09:10:00Z"),  # within one day, partial hours
    ):
        low, high = (datetime.fromisoformat(start), datetime.fromisoformat(end))
        inside = [r for r in records if low <= r.created_at < high]
        for group_by in ("apiKey", "hour", "apiKey,hour", "model,day", "deployment,version,day,hour"):
            params = {"start": start, "end": end, "groupBy": group_by}
            response = await client.get("/usage", params=params, headers=auth)
            assert response.status_code == 200, response.text
            names = group_by.split(",")
            expected: dict[tuple[str, ...], list[Usage]] = {}
            for r in inside:
                values = {
                    "model": r.model_name,
                    "deployment": str(r.deployment_id),
                    "version": r.model_version,
                    "apiKey": r.api_key_id or "",
                    "day": r.created_at.strftime("%Y-%m-%d"),
                    "hour": r.created_at.strftime("%Y-%m-%dT%H:00"),
                }
                expected.setdefault(tuple(values[n] for n in names), []).append(r)
            groups = response.json()["groups"]
            got = {tuple(g["key"][n] for n in names): g for g in groups}
            assert list(got) == sorted(got), (start, group_by)  # sorted by key
            assert set(got) == set(expected), (start, end, group_by)
            for key, group in got.items():
                assert Decimal(group["cost"]) == sum(r.cost for r in expected[key]), (start, group_by, key)
                assert group["requests"] == len(expected[key]) and group["items"] == sum(r.items for r in expected[key])
                assert group["processingTimeMs"] == round(sum(r.processing_ms for r in expected[key]), 3)
