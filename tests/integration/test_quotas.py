"""Monthly spend and request caps per tenant: refused before running (402 / 429 with Retry-After), never billed,
counting what the database already holds, for /predict and the V2 protocol alike."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import msgspec
from litestar.testing import AsyncTestClient

from cloudeasyml.app import create_app
from cloudeasyml.domain.quota import month_bounds
from cloudeasyml.domain.tenants import NewTenant, set_caps
from cloudeasyml.settings import ServerSettings, Settings
from tests.conftest import bearer, db_session
from tests.integration.test_predict import deploy, usage

POINTS = [{"x": 1.0, "y": 2.0}]


async def _caps(url: str, tenant: NewTenant, **caps: object) -> None:
    async with db_session(url) as session:
        await set_caps(session, tenant.tenant.name, **caps)


async def _predict(client, tenant: NewTenant, deployment: dict):  # type: ignore[no-untyped-def]
    body = {"deploymentId": deployment["id"], "inputs": POINTS}
    return await client.post("/predict", json=body, headers=bearer(tenant.key))


def test_a_month_runs_from_its_first_instant_to_the_next_months() -> None:
    assert month_bounds(datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert month_bounds(datetime(2026, 2, 1, tzinfo=UTC))[1] == datetime(2026, 3, 1, tzinfo=UTC)


async def test_past_the_request_cap_predictions_are_429_and_not_billed(
    migrated_url: str, client, tenant: NewTenant, other_tenant: NewTenant
) -> None:
    await _caps(migrated_url, tenant, request_cap=2)
    deployment = await deploy(client, tenant.key)
    assert [(await _predict(client, tenant, deployment)).status_code for _ in range(2)] == [200, 200]
    refused = await _predict(client, tenant, deployment)
    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "request cap (2 per month)" in refused.json()["detail"]
    assert 0 < int(refused.headers["retry-after"]) <= 31 * 24 * 3600
    assert (await usage(client, tenant.key))["totalRequests"] == 2
    other = await deploy(client, other_tenant.key)  # another tenant is not affected
    assert (await _predict(client, other_tenant, other)).status_code == 200


async def test_past_the_spend_cap_predictions_are_402(migrated_url: str, client, tenant: NewTenant) -> None:
    await _caps(migrated_url, tenant, spend_cap=Decimal("0.0005"))  # the tiny model costs 0.001 and up per request
    deployment = await deploy(client, tenant.key)
    assert (await _predict(client, tenant, deployment)).status_code == 200  # under the cap when it started
    refused = await _predict(client, tenant, deployment)
    assert refused.status_code == 402 and "spend cap (0.0005 per month)" in refused.json()["detail"]
    assert int(refused.headers["retry-after"]) > 0
    report = await usage(client, tenant.key)
    assert report["totalRequests"] == 1 and Decimal(report["totalCost"]) > Decimal("0.0005")


async def test_the_v2_protocol_is_capped_too(migrated_url: str, client, tenant: NewTenant) -> None:
    await _caps(migrated_url, tenant, request_cap=0)
    await client.post("/deployments", json={"modelName": "tiny", "name": "scorer"}, headers=bearer(tenant.key))
    tensors = {"inputs": [{"name": "points", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}]}
    refused = await client.post("/v2/models/scorer/infer", json=tensors, headers=bearer(tenant.key))
    assert refused.status_code == 429, refused.text
    assert (await usage(client, tenant.key))["totalRequests"] == 0


async def test_usage_already_recorded_counts_and_cap_changes_apply_within_the_refresh(
    migrated_url: str, settings: Settings, plugin_manager, tenant: NewTenant
) -> None:
    quick = msgspec.structs.replace(settings, server=ServerSettings(key_cache_seconds=0.2))
    async with AsyncTestClient(app=create_app(quick, plugin_manager)) as first:
        deployment = await deploy(first, tenant.key)
        for _ in range(3):
            assert (await _predict(first, tenant, deployment)).status_code == 200
    await _caps(migrated_url, tenant, request_cap=3)
    async with AsyncTestClient(app=create_app(quick, plugin_manager)) as second:  # a fresh process's view
        assert (await _predict(second, tenant, deployment)).status_code == 429
        await _caps(migrated_url, tenant, request_cap=None)
        await asyncio.sleep(0.3)
        await _predict(second, tenant, deployment)  # past the refresh interval: starts a reload
        await asyncio.sleep(0.2)
        assert (await _predict(second, tenant, deployment)).status_code == 200


async def test_a_tenant_sees_its_caps_and_what_is_left_of_them(migrated_url: str, client, tenant: NewTenant) -> None:
    uncapped = (await client.get("/usage/quota", headers=bearer(tenant.key))).json()
    assert uncapped["spendCap"] is None and uncapped["requestCap"] is None
    assert uncapped["remainingSpend"] is None and uncapped["remainingRequests"] is None
    await _caps(migrated_url, tenant, spend_cap=Decimal(1), request_cap=5)
    deployment = await deploy(client, tenant.key)
    for _ in range(2):
        assert (await _predict(client, tenant, deployment)).status_code == 200
    quota = (await client.get("/usage/quota", headers=bearer(tenant.key))).json()
    assert quota["requestCap"] == 5 and quota["requests"] == 2 and quota["remainingRequests"] == 3
    spent = Decimal(quota["spent"])
    assert Decimal(quota["spendCap"]) == 1 and spent > 0 and Decimal(quota["remainingSpend"]) == 1 - spent
    start, end = month_bounds(datetime.now(UTC))
    assert quota["monthStart"] == start.isoformat().replace("+00:00", "Z")
    assert quota["resetsAt"] == end.isoformat().replace("+00:00", "Z")
    assert spent == Decimal((await usage(client, tenant.key))["totalCost"])
