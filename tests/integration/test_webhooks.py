"""The /webhooks API: create (the secret shown once), list, read, change, delete; scopes; tenant isolation; the
URL guard at create and patch; test events signed per Standard Webhooks and verified by the ``standardwebhooks``
package in a real receiver, with both secrets during a rotation's overlap; the delivery log and its retry."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from cloudeasyml.domain.tenants import NewTenant
from cloudeasyml.settings import DatabaseSettings, RuntimeSettings, Settings
from tests.conftest import bearer
from tests.support.webhook_receiver import receiver
from tests.support.webhooks import LOOPBACK, deliveries


@pytest.fixture(name="settings")
def fx_settings(migrated_url: str, artifact_dir: Path, tmp_path: Path) -> Settings:
    """The app's dispatcher runs and may deliver to the loopback receiver over http."""
    return Settings(
        database=DatabaseSettings(url=migrated_url),
        runtime=RuntimeSettings(artifact_dir=str(artifact_dir)),
        home=str(tmp_path / "home"),
        webhooks=LOOPBACK,
    )


async def _create(client: AsyncTestClient, key: str, url: str, events: list[str] | None = None) -> dict:
    body = {"url": url, "events": events or ["deployment.deleted"], "description": "ops"}
    response = await client.post("/webhooks", json=body, headers=bearer(key))
    assert response.status_code == 201, response.text
    return response.json()


async def _deliveries(client: AsyncTestClient, key: str, endpoint_id: str, **params: object) -> dict:
    response = await client.get(f"/webhooks/{endpoint_id}/deliveries", params=params, headers=bearer(key))
    assert response.status_code == 200, response.text
    return response.json()


async def _settled(client: AsyncTestClient, key: str, endpoint_id: str, count: int = 1) -> list[dict]:
    """The endpoint's deliveries once ``count`` of them are no longer pending."""
    for _ in range(600):
        items = (await _deliveries(client, key, endpoint_id))["items"]
        if len([item for item in items if item["status"] != "pending"]) >= count:
            return items
        await asyncio.sleep(0.05)
    raise AssertionError(f"deliveries still pending: {items}")


async def test_an_endpoint_is_created_listed_read_changed_and_deleted_and_its_secret_shown_once(
    client, tenant: NewTenant
) -> None:
    created = await _create(client, tenant.key, "http://127.0.0.1:9/hook")
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 40
    assert created["events"] == ["deployment.deleted"] and created["enabled"] and created["description"] == "ops"
    assert created["createdByKeyId"] == tenant.key_id
    listed = (await client.get("/webhooks", headers=bearer(tenant.key))).json()
    assert [item["id"] for item in listed] == [created["id"]] and "secret" not in listed[0]
    one = (await client.get(f"/webhooks/{created['id']}", headers=bearer(tenant.key))).json()
    assert "secret" not in one and one["url"] == "http://127.0.0.1:9/hook"
    changed = await client.patch(
        f"/webhooks/{created['id']}",
        json={"events": ["key.revoked", "quota.warning"], "enabled": False, "description": "billing"},
        headers=bearer(tenant.key),
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["events"] == ["key.revoked", "quota.warning"] and changed.json()["enabled"] is False
    assert changed.json()["url"] == "http://127.0.0.1:9/hook" and changed.json()["description"] == "billing"
    unknown = await client.patch(f"/webhooks/{created['id']}", json={"events": ["nope"]}, headers=bearer(tenant.key))
    assert unknown.status_code == 422 and "nope" in unknown.json()["detail"]
    assert (await client.delete(f"/webhooks/{created['id']}", headers=bearer(tenant.key))).status_code == 204
    assert (await client.get(f"/webhooks/{created['id']}", headers=bearer(tenant.key))).status_code == 404


async def test_webhooks_need_their_scopes(client, tenant: NewTenant) -> None:
    async def key_with(scopes: list[str]) -> str:
        response = await client.post("/api-keys", json={"name": "k", "scopes": scopes}, headers=bearer(tenant.key))
        assert response.status_code == 201, response.text
        return response.json()["key"]

    predict, reader, writer = (
        await key_with(["predict"]),
        await key_with(["webhooks:read"]),
        await key_with(["webhooks:write"]),
    )
    assert (await client.get("/webhooks", headers=bearer(predict))).status_code == 403
    assert (await client.get("/webhooks", headers=bearer(reader))).status_code == 200
    body = {"url": "http://127.0.0.1:9/hook", "events": ["key.revoked"]}
    assert (await client.post("/webhooks", json=body, headers=bearer(reader))).status_code == 403
    created = await client.post("/webhooks", json=body, headers=bearer(writer))
    assert created.status_code == 201  # webhooks:write grants webhooks:read too
    assert (await client.get(f"/webhooks/{created.json()['id']}", headers=bearer(writer))).status_code == 200


async def test_another_tenants_endpoint_cannot_be_seen_changed_tested_or_deleted(
    client, tenant: NewTenant, other_tenant: NewTenant
) -> None:
    created = await _create(client, tenant.key, "http://127.0.0.1:9/hook")
    theirs = bearer(other_tenant.key)
    base = f"/webhooks/{created['id']}"
    assert (await client.get("/webhooks", headers=theirs)).json() == []
    assert (await client.get(base, headers=theirs)).status_code == 404
    assert (await client.patch(base, json={"enabled": False}, headers=theirs)).status_code == 404
    assert (await client.post(f"{base}/rotate-secret", headers=theirs)).status_code == 404
    assert (await client.post(f"{base}/test", headers=theirs)).status_code == 404
    assert (await client.get(f"{base}/deliveries", headers=theirs)).status_code == 404
    assert (await client.delete(base, headers=theirs)).status_code == 404
    assert (await client.get(base, headers=bearer(tenant.key))).json()["enabled"] is True


@pytest.mark.parametrize(
    "url",
    [
        "https://10.0.0.1/hook",  # private
        "https://169.254.169.254/latest/meta-data",  # metadata
        "http://127.0.0.2:9/hook",  # loopback outside the allowlist (127.0.0.1/32)
        "ftp://127.0.0.1/hook",  # scheme
        "https://user:pw@127.0.0.1/hook",  # credentials
        "https://localhost.invalid/hook",  # does not resolve
    ],
)
async def test_unsafe_urls_are_refused_at_create_and_at_patch(client, tenant: NewTenant, url: str) -> None:
    refused = await client.post("/webhooks", json={"url": url, "events": ["key.revoked"]}, headers=bearer(tenant.key))
    assert refused.status_code == 422, refused.text
    assert "`$.url`" in refused.json()["detail"]
    created = await _create(client, tenant.key, "http://127.0.0.1:9/hook")
    patched = await client.patch(f"/webhooks/{created['id']}", json={"url": url}, headers=bearer(tenant.key))
    assert patched.status_code == 422
    assert (
        (await client.get(f"/webhooks/{created['id']}", headers=bearer(tenant.key))).json()["url"].endswith(":9/hook")
    )


async def test_a_test_event_arrives_signed_and_standardwebhooks_verifies_it(client, tenant: NewTenant) -> None:
    with receiver(answer=b"thanks") as hook:
        created = await _create(client, tenant.key, hook.url)
        sent = await client.post(f"/webhooks/{created['id']}/test", headers=bearer(tenant.key))
        assert sent.status_code == 202, sent.text
        items = await _settled(client, tenant.key, created["id"])
        (got,) = hook.wait_for(1)
    payload = Webhook(created["secret"]).verify(got.body, got.headers)
    assert payload["type"] == "webhook.test" and payload["id"] == sent.json()["eventId"] == got.headers["webhook-id"]
    assert payload["data"]["endpointId"] == created["id"] and payload["timestamp"].endswith("Z")
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 43 + "=").verify(got.body, got.headers)
    (delivery,) = items
    assert delivery["status"] == "succeeded" and delivery["attempts"] == 1 and delivery["responseStatus"] == 200
    assert delivery["responseBody"] == "thanks" and delivery["latencyMs"] > 0 and delivery["nextAttemptAt"] is None


async def test_during_a_rotation_both_the_old_and_the_new_secret_verify(client, tenant: NewTenant) -> None:
    with receiver() as hook:
        created = await _create(client, tenant.key, hook.url)
        rotated = await client.post(f"/webhooks/{created['id']}/rotate-secret", headers=bearer(tenant.key))
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()["secret"]
        assert new.startswith("whsec_") and new != created["secret"]
        read = (await client.get(f"/webhooks/{created['id']}", headers=bearer(tenant.key))).json()
        assert read["previousSecretExpiresAt"] == rotated.json()["previousSecretExpiresAt"]
        await client.post(f"/webhooks/{created['id']}/test", headers=bearer(tenant.key))
        (got,) = hook.wait_for(1)
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    for secret in (created["secret"], new):
        assert Webhook(secret).verify(got.body, got.headers)["type"] == "webhook.test"


async def test_a_failed_delivery_shows_in_the_log_and_is_sent_again_on_retry(
    migrated_url: str, client, tenant: NewTenant
) -> None:
    with receiver(status=503, answer=b"x" * 3000) as hook:
        created = await _create(client, tenant.key, hook.url)
        await client.post(f"/webhooks/{created['id']}/test", headers=bearer(tenant.key))
        for _ in range(600):
            first = (await _deliveries(client, tenant.key, created["id"]))["items"][0]
            if first["attempts"]:
                break
            await asyncio.sleep(0.05)
        assert first["responseStatus"] == 503 and len(first["responseBody"]) == 1024  # the first 1 KB only
        assert first["status"] == "pending" and first["attempts"] >= 1
        hook.status = 200
        hook.answer = b"ok now"
        retried = await client.post(
            f"/webhooks/{created['id']}/deliveries/{first['id']}/retry", headers=bearer(tenant.key)
        )
        assert retried.status_code == 202 and retried.json()["status"] == "pending"
        unknown = f"/webhooks/{created['id']}/deliveries/{created['id']}/retry"
        assert (await client.post(unknown, headers=bearer(tenant.key))).status_code == 404
        items = await _settled(client, tenant.key, created["id"])
    assert items[0]["status"] == "succeeded" and items[0]["responseBody"] == "ok now"
    assert [row.status for row in await deliveries(migrated_url)] == ["succeeded"]


async def test_the_delivery_log_pages_with_a_cursor(client, tenant: NewTenant) -> None:
    created = await _create(client, tenant.key, "http://127.0.0.1:9/hook")
    await client.patch(f"/webhooks/{created['id']}", json={"enabled": False}, headers=bearer(tenant.key))
    assert (await client.post(f"/webhooks/{created['id']}/test", headers=bearer(tenant.key))).status_code == 409
    await client.patch(f"/webhooks/{created['id']}", json={"enabled": True}, headers=bearer(tenant.key))
    for _ in range(5):
        await client.post(f"/webhooks/{created['id']}/test", headers=bearer(tenant.key))
    first = await _deliveries(client, tenant.key, created["id"], limit=2)
    second = await _deliveries(client, tenant.key, created["id"], limit=2, cursor=first["nextCursor"])
    third = await _deliveries(client, tenant.key, created["id"], limit=2, cursor=second["nextCursor"])
    ids = [item["id"] for page in (first, second, third) for item in page["items"]]
    assert len(ids) == len(set(ids)) == 5 and third["nextCursor"] is None
    bad = await client.get(f"/webhooks/{created['id']}/deliveries?cursor=zzz", headers=bearer(tenant.key))
    assert bad.status_code == 422
