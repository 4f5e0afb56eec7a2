"""API keys: create, use, list, revoke, expire, scopes, tenancy."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from cloudeasyml.domain.tenants import NewTenant
from tests.conftest import bearer


async def issue(client, key: str, **body: object) -> dict:
    response = await client.post("/api-keys", json={"name": "k", **body}, headers=bearer(key))
    assert response.status_code == 201, response.text
    return response.json()


async def test_every_endpoint_but_health_requires_a_key(client) -> None:
    for path in ("/models", "/deployments", "/api-keys", "/usage"):
        response = await client.get(path)
        assert response.status_code == 401, path
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert (await client.post("/predict", json={})).status_code == 401
    assert (await client.get("/health")).status_code == 200


async def test_malformed_unknown_and_wrong_secret_keys_are_401(client, tenant: NewTenant) -> None:
    wrong_secret = tenant.key_id + "." + "x" * 43
    for token in ("nonsense", "sk_short.secret", "sk_AAAAAAAAAAAAAAAA." + "y" * 43, wrong_secret):
        response = await client.get("/models", headers=bearer(token))
        assert response.status_code == 401, token
        assert response.json()["detail"] == "invalid API key"
    assert (await client.get("/models", headers={"X-API-Key": tenant.key})).status_code == 200


async def test_created_key_is_shown_once_and_works(client, tenant: NewTenant) -> None:
    created = await issue(client, tenant.key, name="ci", scopes=["predict", "deployments:read"])
    assert created["key"].startswith(created["keyId"] + ".")
    assert created["keyId"].startswith("sk_") and len(created["keyId"]) == 19
    assert len(created["key"].split(".", 1)[1]) >= 32
    assert created["scopes"] == ["deployments:read", "predict"]
    assert (await client.get("/deployments", headers=bearer(created["key"]))).status_code == 200
    listed = (await client.get("/api-keys", headers=bearer(tenant.key))).json()
    assert {k["keyId"] for k in listed} == {created["keyId"], tenant.key_id}
    for item in listed:
        assert "key" not in item and "secretHash" not in item
        assert created["key"].split(".", 1)[1] not in str(item)


async def test_scope_is_enforced_with_403(client, tenant: NewTenant) -> None:
    predict_only = await issue(client, tenant.key)
    assert predict_only["scopes"] == ["predict"]
    headers = bearer(predict_only["key"])
    assert (await client.get("/deployments", headers=headers)).status_code == 403
    assert (await client.post("/deployments", json={"modelName": "tiny"}, headers=headers)).status_code == 403
    assert (await client.get("/api-keys", headers=headers)).status_code == 403
    assert (await client.get("/usage", headers=headers)).status_code == 403
    refused = await client.post("/api-keys", json={"name": "x"}, headers=headers)
    assert refused.status_code == 403 and "keys:write" in refused.json()["detail"]


async def test_a_key_cannot_grant_scopes_it_does_not_hold(client, tenant: NewTenant) -> None:
    writer = await issue(client, tenant.key, scopes=["keys:write", "predict"])
    escalation = await client.post(
        "/api-keys", json={"name": "root", "scopes": ["admin"]}, headers=bearer(writer["key"])
    )
    assert escalation.status_code == 403
    allowed = await client.post("/api-keys", json={"name": "p", "scopes": ["predict"]}, headers=bearer(writer["key"]))
    assert allowed.status_code == 201


async def test_invalid_key_requests_are_rejected(client, tenant: NewTenant) -> None:
    cases = [
        {"name": "x", "scopes": ["fly"]},
        {"name": "x", "expiresAt": "2001-01-01T00:00:00Z"},
        {"name": ""},
        {"scopes": ["predict"]},
        {"name": "x", "rateLimitPerMinute": 0},
        {"name": "x", "surprise": 1},
    ]
    for body in cases:
        response = await client.post("/api-keys", json=body, headers=bearer(tenant.key))
        assert response.status_code in (400, 422), (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    assert len((await client.get("/api-keys", headers=bearer(tenant.key))).json()) == 1


async def test_revocation_takes_effect_at_once(client, tenant: NewTenant) -> None:
    created = await issue(client, tenant.key)
    headers = bearer(created["key"])
    assert (await client.get("/models", headers=headers)).status_code == 200  # now cached
    revoked = await client.delete(f"/api-keys/{created['keyId']}", headers=bearer(tenant.key))
    assert revoked.status_code == 204
    response = await client.get("/models", headers=headers)
    assert response.status_code == 401 and "revoked" in response.json()["detail"]
    listed = {k["keyId"]: k for k in (await client.get("/api-keys", headers=bearer(tenant.key))).json()}
    assert listed[created["keyId"]]["revokedAt"] is not None


async def test_expired_key_is_refused(client, tenant: NewTenant) -> None:
    created = await issue(client, tenant.key, expiresAt=(datetime.now(UTC) + timedelta(seconds=1.5)).isoformat())
    assert (await client.get("/models", headers=bearer(created["key"]))).status_code == 200
    await asyncio.sleep(1.7)
    # The key is in the authenticator's cache: expiry is checked against the clock on every use.
    expired = await client.get("/models", headers=bearer(created["key"]))
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]


async def test_other_tenants_keys_are_invisible_and_cannot_be_revoked(
    client, tenant: NewTenant, other_tenant: NewTenant
) -> None:
    listed = (await client.get("/api-keys", headers=bearer(other_tenant.key))).json()
    assert [k["keyId"] for k in listed] == [other_tenant.key_id]
    response = await client.delete(f"/api-keys/{tenant.key_id}", headers=bearer(other_tenant.key))
    assert response.status_code == 404
    assert (await client.get("/models", headers=bearer(tenant.key))).status_code == 200


async def test_rate_limited_key_gets_429_with_retry_after(client, tenant: NewTenant) -> None:
    limited = await issue(client, tenant.key, rateLimitPerMinute=3)
    headers = bearer(limited["key"])
    statuses = [(await client.get("/models", headers=headers)).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    refused = await client.get("/models", headers=headers)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert "3 requests per minute" in refused.json()["detail"]
    # Other keys are unaffected.
    assert (await client.get("/models", headers=bearer(tenant.key))).status_code == 200


async def test_expires_at_without_a_time_zone_or_out_of_range_is_422(client, tenant: NewTenant) -> None:
    for value in (
        "2100-01-01T00:00:00",  # no time zone
        "9999-12-31T23:59:59-05:00",  # past the largest date once in UTC
        "0001-01-01T00:00:00+05:00",  # before the smallest date once in UTC
    ):
        response = await client.post("/api-keys", json={"name": "x", "expiresAt": value}, headers=bearer(tenant.key))
        assert response.status_code == 422, (value, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "expiresAt" in response.json()["detail"], value
    assert len((await client.get("/api-keys", headers=bearer(tenant.key))).json()) == 1
    # The largest date with a UTC offset of zero is fine.
    far = await client.post(
        "/api-keys", json={"name": "x", "expiresAt": "9999-12-31T23:59:59+00:00"}, headers=bearer(tenant.key)
    )
    assert far.status_code == 201, far.text
