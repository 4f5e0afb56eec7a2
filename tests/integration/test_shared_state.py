"""Processes that share Redis (``CLOUDEASYML_REDIS__URL``) share per-key rate limits and see a revocation or a
deleted deployment at once; without Redis each process limits on its own. Two real apps on one database and one
real Redis server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import msgspec
from httpx import Response
from litestar import Litestar
from litestar.testing import AsyncTestClient

from cloudeasyml.app import create_app
from cloudeasyml.domain.tenants import NewTenant
from cloudeasyml.settings import RedisSettings, ServerSettings, Settings
from tests.conftest import bearer


@asynccontextmanager
async def two_processes(settings: Settings, plugin_manager) -> AsyncIterator[tuple[AsyncTestClient[Litestar], ...]]:  # type: ignore[no-untyped-def]
    async with (
        AsyncTestClient(app=create_app(settings, plugin_manager)) as first,
        AsyncTestClient(app=create_app(settings, plugin_manager)) as second,
    ):
        yield first, second


def _sharing_redis_with_long_caches(settings: Settings, redis_url: str) -> Settings:
    """Settings on one Redis whose caches would keep a key or a deployment for 300 s without being told."""
    return msgspec.structs.replace(
        settings, redis=RedisSettings(url=redis_url), server=ServerSettings(key_cache_seconds=300)
    )


async def _status_becomes(expected: int, request: Callable[[], Awaitable[Response]]) -> int:
    """The status of ``request()``, repeated until it is ``expected`` (a message through Redis: milliseconds) or
    for about two seconds; the last status seen."""
    for _ in range(100):
        status = (await request()).status_code
        if status == expected:
            break
        await asyncio.sleep(0.02)
    return status


async def _issue(client: AsyncTestClient[Litestar], tenant: NewTenant, **extra: object) -> dict:
    body = {"name": "reader", "scopes": ["usage:read"], **extra}
    response = await client.post("/api-keys", json=body, headers=bearer(tenant.key))
    assert response.status_code == 201, response.text
    return response.json()


async def test_processes_sharing_redis_share_a_keys_rate_limit(
    settings: Settings, plugin_manager, tenant: NewTenant, redis_url: str
) -> None:
    shared = msgspec.structs.replace(settings, redis=RedisSettings(url=redis_url))
    async with two_processes(shared, plugin_manager) as (a, b):
        key = (await _issue(a, tenant, rateLimitPerMinute=4))["key"]
        assert [(await c.get("/usage", headers=bearer(key))).status_code for c in (a, b, a, b)] == [200] * 4
        refused = await b.get("/usage", headers=bearer(key))
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert (await a.get("/usage", headers=bearer(key))).status_code == 429


async def test_without_redis_each_process_limits_on_its_own(
    settings: Settings, plugin_manager, tenant: NewTenant
) -> None:
    async with two_processes(settings, plugin_manager) as (a, b):
        key = (await _issue(a, tenant, rateLimitPerMinute=2))["key"]
        assert [(await c.get("/usage", headers=bearer(key))).status_code for c in (a, a, b, b)] == [200] * 4
        assert (await a.get("/usage", headers=bearer(key))).status_code == 429


async def test_a_key_revoked_through_one_process_stops_at_once_on_the_others(
    settings: Settings, plugin_manager, tenant: NewTenant, redis_url: str
) -> None:
    async with two_processes(_sharing_redis_with_long_caches(settings, redis_url), plugin_manager) as (a, b):
        issued = await _issue(a, tenant)
        assert (await b.get("/usage", headers=bearer(issued["key"]))).status_code == 200  # cached in b for 300 s
        assert (await a.delete(f"/api-keys/{issued['keyId']}", headers=bearer(tenant.key))).status_code == 204
        assert await _status_becomes(401, lambda: b.get("/usage", headers=bearer(issued["key"]))) == 401


async def test_a_deployment_deleted_through_one_process_stops_serving_at_once_on_the_others(
    settings: Settings, plugin_manager, tenant: NewTenant, redis_url: str
) -> None:
    async with two_processes(_sharing_redis_with_long_caches(settings, redis_url), plugin_manager) as (a, b):
        created = await a.post("/deployments", json={"modelName": "tiny"}, headers=bearer(tenant.key))
        body = {"deploymentId": created.json()["id"], "inputs": [{"x": 1.0, "y": 2.0}]}
        assert (await b.post("/predict", json=body, headers=bearer(tenant.key))).status_code == 200  # loaded in b
        assert (await a.delete(f"/deployments/{body['deploymentId']}", headers=bearer(tenant.key))).status_code == 204
        assert await _status_becomes(404, lambda: b.post("/predict", json=body, headers=bearer(tenant.key))) == 404
        usage = (await b.get("/usage", headers=bearer(tenant.key))).json()
    assert usage["totalRequests"] <= 2  # b's one prediction, and at most one that raced the message


async def test_an_unreachable_redis_does_not_take_the_api_down(
    settings: Settings, plugin_manager, tenant: NewTenant
) -> None:
    down = msgspec.structs.replace(settings, redis=RedisSettings(url="redis://127.0.0.1:1/0"))
    async with AsyncTestClient(app=create_app(down, plugin_manager)) as client:
        key = (await _issue(client, tenant, rateLimitPerMinute=1))["key"]
        # Rate limits cannot be enforced without their store: requests pass (and the log says so).
        assert [(await client.get("/usage", headers=bearer(key))).status_code for _ in range(2)] == [200, 200]
