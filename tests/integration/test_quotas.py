"""Monthly spend and request caps per tenant: refused before running (402 / 429 with Retry-After), never billed,
counting what the database already holds, for /predict and the V2 protocol alike; exact under concurrency, on one
process and on two sharing Redis; a failed request gives its place back; a changed cap applies after the refresh
interval even to an idle tenant."""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import msgspec
from litestar.testing import AsyncTestClient

from cloudeasyml.app import create_app
from cloudeasyml.domain.quota import month_bounds
from cloudeasyml.domain.tenants import NewTenant, set_caps
from cloudeasyml.settings import QuotaSettings, RedisSettings, Settings
from tests.conftest import bearer, db_session
from tests.integration.test_predict import deploy, usage
from tests.support.live_server import serve_in_thread

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
    # The tiny model costs 0.001 per request plus 0.5 per second: one request's fixed price fits, two do not
    # (whatever the first one's time, which a busy machine stretches past a millisecond).
    await _caps(migrated_url, tenant, spend_cap=Decimal("0.0019"))
    deployment = await deploy(client, tenant.key)
    assert (await _predict(client, tenant, deployment)).status_code == 200
    refused = await _predict(client, tenant, deployment)
    assert refused.status_code == 402 and "spend cap (0.0019 per month)" in refused.json()["detail"]
    assert int(refused.headers["retry-after"]) > 0
    report = await usage(client, tenant.key)
    assert report["totalRequests"] == 1 and Decimal("0.001") < Decimal(report["totalCost"])


async def test_a_request_whose_fixed_price_would_pass_the_spend_cap_does_not_run(
    migrated_url: str, client, tenant: NewTenant
) -> None:
    await _caps(migrated_url, tenant, spend_cap=Decimal("0.0005"))  # below the model's 0.001 per request
    deployment = await deploy(client, tenant.key)
    assert (await _predict(client, tenant, deployment)).status_code == 402
    assert (await usage(client, tenant.key))["totalRequests"] == 0


async def test_concurrent_requests_hold_their_fixed_price_against_the_spend_cap(
    migrated_url: str, app, tenant: NewTenant
) -> None:
    # 0.0035 pays three fixed prices of 0.001, not four: whatever the interleaving, three run.
    await _caps(migrated_url, tenant, spend_cap=Decimal("0.0035"))
    with serve_in_thread(app) as address:
        statuses = await _burst([address], tenant, 12)
        report = await _usage_over_http([address], tenant)
    assert sorted(statuses) == [200] * 3 + [402] * 9
    # Three fixed prices fit under the cap; what passes it is the time-based part of the three that ran.
    assert report["totalRequests"] == 3 and Decimal(report["totalCost"]) > Decimal("0.003")


async def test_the_v2_protocol_is_capped_too(migrated_url: str, client, tenant: NewTenant) -> None:
    await _caps(migrated_url, tenant, request_cap=0)
    await client.post("/deployments", json={"modelName": "tiny", "name": "scorer"}, headers=bearer(tenant.key))
    tensors = {"inputs": [{"name": "points", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}]}
    refused = await client.post("/v2/models/scorer/infer", json=tensors, headers=bearer(tenant.key))
    assert refused.status_code == 429, refused.text
    assert (await usage(client, tenant.key))["totalRequests"] == 0


def _quick(settings: Settings, **extra: object) -> Settings:
    """The test's settings with caps read again after 0.2 s."""
    return msgspec.structs.replace(settings, quota=QuotaSettings(refresh_seconds=0.2), **extra)


async def test_usage_already_recorded_counts_and_cap_changes_apply_after_the_refresh(
    migrated_url: str, settings: Settings, plugin_manager, tenant: NewTenant
) -> None:
    async with AsyncTestClient(app=create_app(_quick(settings), plugin_manager)) as first:
        deployment = await deploy(first, tenant.key)
        for _ in range(3):
            assert (await _predict(first, tenant, deployment)).status_code == 200
    await _caps(migrated_url, tenant, request_cap=3)
    async with AsyncTestClient(app=create_app(_quick(settings), plugin_manager)) as second:  # a fresh process
        assert (await _predict(second, tenant, deployment)).status_code == 429
        await _caps(migrated_url, tenant, request_cap=None)
        await asyncio.sleep(0.3)  # no request in between: the next one reads the caps before it is judged
        assert (await _predict(second, tenant, deployment)).status_code == 200


async def test_a_raised_cap_is_honoured_on_the_next_request_of_an_idle_tenant(
    migrated_url: str, settings: Settings, plugin_manager, tenant: NewTenant
) -> None:
    await _caps(migrated_url, tenant, request_cap=1)
    async with AsyncTestClient(app=create_app(_quick(settings), plugin_manager)) as client:
        deployment = await deploy(client, tenant.key)
        assert [(await _predict(client, tenant, deployment)).status_code for _ in range(2)] == [200, 429]
        await _caps(migrated_url, tenant, request_cap=1000)
        await asyncio.sleep(0.3)
        assert (await _predict(client, tenant, deployment)).status_code == 200
        await _caps(migrated_url, tenant, request_cap=2)  # lowered: the same
        await asyncio.sleep(0.3)
        assert (await _predict(client, tenant, deployment)).status_code == 429


async def _burst(addresses: list[str], tenant: NewTenant, count: int) -> list[int]:
    """Statuses of ``count`` predictions sent at once over real HTTP, spread over the servers at ``addresses``, on
    a deployment made for them (not loaded yet: every request is in flight while it loads)."""
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=count)) as http:
        created = await http.post(
            f"http://{addresses[0]}/deployments", json={"modelName": "tiny"}, headers=bearer(tenant.key)
        )
        body = {"deploymentId": created.json()["id"], "inputs": POINTS}
        responses = await asyncio.gather(
            *(
                http.post(f"http://{addresses[i % len(addresses)]}/predict", json=body, headers=bearer(tenant.key))
                for i in range(count)
            )
        )
    return [response.status_code for response in responses]


async def _usage_over_http(addresses: list[str], tenant: NewTenant) -> dict:
    """The tenant's usage, read through each server in turn (each writes its own buffered records first)."""
    async with httpx.AsyncClient(timeout=60) as http:
        for address in addresses:
            report = (await http.get(f"http://{address}/usage", headers=bearer(tenant.key))).json()
    return report


async def test_forty_concurrent_requests_against_a_cap_of_five_give_five_answers(
    migrated_url: str, app, tenant: NewTenant
) -> None:
    await _caps(migrated_url, tenant, request_cap=5)
    with serve_in_thread(app) as address:
        statuses = await _burst([address], tenant, 40)
        report = await _usage_over_http([address], tenant)
    assert sorted(statuses) == [200] * 5 + [429] * 35
    assert report["totalRequests"] == 5


async def test_forty_concurrent_requests_through_two_processes_sharing_redis_give_five_answers(
    migrated_url: str, settings: Settings, plugin_manager, tenant: NewTenant, redis_url: str
) -> None:
    await _caps(migrated_url, tenant, request_cap=5)
    shared = msgspec.structs.replace(settings, redis=RedisSettings(url=redis_url))
    with (
        serve_in_thread(create_app(shared, plugin_manager)) as first,
        serve_in_thread(create_app(shared, plugin_manager)) as second,
    ):
        statuses = await _burst([first, second], tenant, 40)
        report = await _usage_over_http([first, second], tenant)
    assert sorted(statuses) == [200] * 5 + [429] * 35
    assert report["totalRequests"] == 5


async def test_failed_and_cancelled_requests_give_their_place_back(
    migrated_url: str, settings: Settings, plugin_manager, tenant: NewTenant
) -> None:
    await _caps(migrated_url, tenant, request_cap=1)
    app = create_app(settings, plugin_manager)
    async with AsyncTestClient(app=app) as client:
        narrow = await deploy(client, tenant.key, config={"maxQueueItems": 1})
        body = {"deploymentId": narrow["id"], "inputs": POINTS * 2}
        for _ in range(3):  # refused by the deployment's batcher after admission: 422, and the place is free again
            assert (await client.post("/predict", json=body, headers=bearer(tenant.key))).status_code == 422
        services = app.state.services
        deployment = await deploy(client, tenant.key)
        running = threading.Event()

        async def run_until_cancelled(_loaded: object) -> None:  # a run the client gives up on
            running.set()
            await asyncio.Event().wait()

        async def predict_and_give_up() -> None:
            principal = await services.authenticator.authenticate(tenant.key)
            spec = await services.directory.by_id(principal, uuid.UUID(deployment["id"]))
            entry = services.inference.entry_for(spec)
            await services.inference.execute(principal, spec, entry, 1, run_until_cancelled)

        # On the app's own event loop, through the path every protocol takes: reserve, load, run; then cancelled.
        task = client.blocking_portal.start_task_soon(predict_and_give_up)
        while not running.is_set() and not task.done():
            await asyncio.sleep(0.01)
        assert running.is_set(), task.exception()
        task.cancel()
        await asyncio.gather(asyncio.wrap_future(task), return_exceptions=True)
        assert [(await _predict(client, tenant, deployment)).status_code for _ in range(2)] == [200, 429]
        assert (await usage(client, tenant.key))["totalRequests"] == 1


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
