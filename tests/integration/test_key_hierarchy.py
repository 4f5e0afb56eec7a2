"""A key never outlives, outranks or out-rates the key that created it, and revoking a key revokes every key it
created; only an ``admin`` key changes an ``admin`` key, and a tenant keeps at least one usable admin key.
The real app over ASGI, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import msgspec
from litestar.testing import AsyncTestClient

from cloudeasyml.app import create_app
from cloudeasyml.domain.api_keys import ApiKeyService, KeyRequest
from cloudeasyml.domain.tenants import NewTenant, issue_admin_key
from cloudeasyml.settings import RedisSettings, ServerSettings, Settings
from tests.conftest import bearer, db_session


async def issue(client, key: str, **body: object) -> dict:
    response = await client.post("/api-keys", json={"name": "k", **body}, headers=bearer(key))
    assert response.status_code == 201, response.text
    return response.json()


async def listed(client, tenant: NewTenant) -> dict[str, dict]:
    return {k["keyId"]: k for k in (await client.get("/api-keys", headers=bearer(tenant.key))).json()}


def at(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


WRITER = ["keys:write", "predict"]


async def test_a_key_made_by_a_short_lived_key_does_not_outlive_it(client, tenant: NewTenant) -> None:
    parent = await issue(client, tenant.key, scopes=WRITER, expiresAt=at(1.5))
    child = await issue(client, parent["key"], scopes=["predict"])
    assert child["expiresAt"] == parent["expiresAt"]
    assert child["createdByKeyId"] == parent["keyId"]
    assert (await client.get("/models", headers=bearer(child["key"]))).status_code == 200
    await asyncio.sleep(1.7)
    expired = await client.get("/models", headers=bearer(child["key"]))
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]


async def test_a_child_expiry_after_its_parents_is_refused(client, tenant: NewTenant) -> None:
    parent = await issue(client, tenant.key, scopes=WRITER, expiresAt=at(3600))
    later = await client.post("/api-keys", json={"name": "c", "expiresAt": at(7200)}, headers=bearer(parent["key"]))
    assert later.status_code == 422, later.text
    assert later.headers["content-type"].startswith("application/problem+json")
    detail = later.json()["detail"]
    assert "expiresAt" in detail and parent["expiresAt"][:19] in detail
    sooner = await issue(client, parent["key"], expiresAt=at(60))
    assert sooner["expiresAt"] < parent["expiresAt"]
    # A key without expiry may make children of any expiry, or none.
    assert (await issue(client, tenant.key))["expiresAt"] is None


async def test_a_child_rate_limit_is_at_most_its_parents(client, tenant: NewTenant) -> None:
    parent = await issue(client, tenant.key, scopes=WRITER, rateLimitPerMinute=50)
    inherited = await issue(client, parent["key"])
    assert inherited["rateLimitPerMinute"] == 50
    assert (await issue(client, parent["key"], rateLimitPerMinute=10))["rateLimitPerMinute"] == 10
    higher = await client.post("/api-keys", json={"name": "c", "rateLimitPerMinute": 51}, headers=bearer(parent["key"]))
    assert higher.status_code == 422, higher.text
    assert "rateLimitPerMinute" in higher.json()["detail"] and "50" in higher.json()["detail"]
    # The owner key is unlimited, and so may be its children.
    assert (await issue(client, tenant.key))["rateLimitPerMinute"] is None


async def test_revoking_a_key_revokes_three_generations_at_once(client, tenant: NewTenant) -> None:
    first = await issue(client, tenant.key, scopes=WRITER)
    second = await issue(client, first["key"], scopes=WRITER)
    third = await issue(client, second["key"], scopes=["predict"])
    sibling = await issue(client, tenant.key, scopes=["predict"])
    generations = (first, second, third)
    for key in (*generations, sibling):  # every key is now in the authenticator's cache
        assert (await client.get("/models", headers=bearer(key["key"]))).status_code == 200
    assert (await client.delete(f"/api-keys/{first['keyId']}", headers=bearer(tenant.key))).status_code == 204
    for key in generations:
        refused = await client.get("/models", headers=bearer(key["key"]))
        assert refused.status_code == 401 and "revoked" in refused.json()["detail"], key["name"]
    assert (await client.get("/models", headers=bearer(sibling["key"]))).status_code == 200
    assert (await client.get("/models", headers=bearer(tenant.key))).status_code == 200
    keys = await listed(client, tenant)
    assert {keys[k["keyId"]]["revokedAt"] is not None for k in generations} == {True}
    assert keys[first["keyId"]]["revokedAt"] == keys[third["keyId"]]["revokedAt"]  # one transaction, one time
    assert keys[sibling["keyId"]]["revokedAt"] is None
    assert [keys[k["keyId"]]["createdByKeyId"] for k in generations] == [
        tenant.key_id,
        first["keyId"],
        second["keyId"],
    ]
    assert keys[tenant.key_id]["createdByKeyId"] is None  # made by `cloudeasyml tenants create`


async def test_revoking_a_middle_key_spares_its_parent(client, tenant: NewTenant) -> None:
    first = await issue(client, tenant.key, scopes=WRITER)
    second = await issue(client, first["key"], scopes=WRITER)
    third = await issue(client, second["key"])
    assert (await client.delete(f"/api-keys/{second['keyId']}", headers=bearer(first["key"]))).status_code == 204
    assert (await client.get("/models", headers=bearer(third["key"]))).status_code == 401
    assert (await client.get("/models", headers=bearer(first["key"]))).status_code == 200


async def test_a_revoked_key_makes_no_keys_even_where_it_is_still_cached(
    settings: Settings, plugin_manager, tenant: NewTenant
) -> None:
    """Two processes without Redis: the second trusts its cached copy of a key revoked through the first, but the
    key cannot make a child there (which the revocation would have missed)."""
    long_cache = msgspec.structs.replace(settings, server=ServerSettings(key_cache_seconds=300))
    async with (
        AsyncTestClient(app=create_app(long_cache, plugin_manager)) as a,
        AsyncTestClient(app=create_app(long_cache, plugin_manager)) as b,
    ):
        parent = await issue(a, tenant.key, scopes=WRITER)
        assert (await b.get("/models", headers=bearer(parent["key"]))).status_code == 200  # cached in b
        assert (await a.delete(f"/api-keys/{parent['keyId']}", headers=bearer(tenant.key))).status_code == 204
        refused = await b.post("/api-keys", json={"name": "escape"}, headers=bearer(parent["key"]))
        assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
        assert "escape" not in {k["name"] for k in (await listed(a, tenant)).values()}


async def test_a_cascade_reaches_every_process_sharing_redis_at_once(
    settings: Settings, plugin_manager, tenant: NewTenant, redis_url: str
) -> None:
    shared = msgspec.structs.replace(
        settings, redis=RedisSettings(url=redis_url), server=ServerSettings(key_cache_seconds=300)
    )
    async with (
        AsyncTestClient(app=create_app(shared, plugin_manager)) as a,
        AsyncTestClient(app=create_app(shared, plugin_manager)) as b,
    ):
        first = await issue(a, tenant.key, scopes=WRITER)
        second = await issue(a, first["key"], scopes=WRITER)
        third = await issue(a, second["key"])
        for key in (first, second, third):
            assert (await b.get("/models", headers=bearer(key["key"]))).status_code == 200  # cached in b for 300 s
        assert (await a.delete(f"/api-keys/{first['keyId']}", headers=bearer(tenant.key))).status_code == 204
        for _ in range(100):  # a message through Redis: milliseconds; give it two seconds
            statuses = {(await b.get("/models", headers=bearer(k["key"]))).status_code for k in (first, second, third)}
            if statuses == {401}:
                break
            await asyncio.sleep(0.02)
        assert statuses == {401}


async def test_only_an_admin_key_revokes_an_admin_key(client, tenant: NewTenant) -> None:
    writer = await issue(client, tenant.key, scopes=WRITER)
    deputy = await issue(client, tenant.key, name="deputy", scopes=["admin"])
    for target in (tenant.key_id, deputy["keyId"]):
        refused = await client.delete(f"/api-keys/{target}", headers=bearer(writer["key"]))
        assert refused.status_code == 403, refused.text
        assert "admin" in refused.json()["detail"]
    assert (await client.get("/models", headers=bearer(tenant.key))).status_code == 200
    assert (await client.get("/models", headers=bearer(deputy["key"]))).status_code == 200
    # A keys:write key still revokes keys that are not admin, its own included.
    assert (await client.delete(f"/api-keys/{writer['keyId']}", headers=bearer(writer["key"]))).status_code == 204
    # An admin key revokes another admin key.
    assert (await client.delete(f"/api-keys/{deputy['keyId']}", headers=bearer(tenant.key))).status_code == 204
    assert (await client.get("/models", headers=bearer(deputy["key"]))).status_code == 401


async def test_the_last_admin_key_cannot_be_revoked_by_the_tenant(client, tenant: NewTenant) -> None:
    refused = await client.delete(f"/api-keys/{tenant.key_id}", headers=bearer(tenant.key))
    assert refused.status_code == 409, refused.text
    assert "last" in refused.json()["detail"] and "admin" in refused.json()["detail"]
    # A second admin key made by the first would be revoked with it: still the last one.
    deputy = await issue(client, tenant.key, scopes=["admin"])
    refused = await client.delete(f"/api-keys/{tenant.key_id}", headers=bearer(deputy["key"]))
    assert refused.status_code == 409, refused.text
    assert (await client.get("/models", headers=bearer(tenant.key))).status_code == 200
    assert (await client.get("/models", headers=bearer(deputy["key"]))).status_code == 200
    # The deputy itself may go: the owner key remains.
    assert (await client.delete(f"/api-keys/{deputy['keyId']}", headers=bearer(deputy["key"]))).status_code == 204


async def test_an_expired_admin_key_does_not_count_as_the_one_left(
    client, migrated_url: str, tenant: NewTenant
) -> None:
    async with db_session(migrated_url) as session:
        stale = await ApiKeyService(session, tenant.tenant.id).issue(
            KeyRequest(name="old root", scopes=("admin",)), issuer=None, user_id=None
        )
        stale.row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    refused = await client.delete(f"/api-keys/{tenant.key_id}", headers=bearer(tenant.key))
    assert refused.status_code == 409, refused.text


async def test_an_operator_admin_key_lets_the_tenant_replace_its_owner_key(
    client, migrated_url: str, tenant: NewTenant
) -> None:
    async with db_session(migrated_url) as session:
        replacement = await issue_admin_key(session, tenant.tenant.name)
    assert replacement.row.created_by_key_id is None and replacement.row.scopes == ["admin"]
    assert (await client.get("/models", headers=bearer(tenant.key))).status_code == 200
    revoked = await client.delete(f"/api-keys/{tenant.key_id}", headers=bearer(replacement.key))
    assert revoked.status_code == 204, revoked.text
    assert (await client.get("/models", headers=bearer(tenant.key))).status_code == 401
    last = await client.delete(f"/api-keys/{replacement.row.id}", headers=bearer(replacement.key))
    assert last.status_code == 409
