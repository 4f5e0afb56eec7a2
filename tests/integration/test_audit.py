"""The audit log: every change to tenants, keys, deployments and webhooks recorded in the change's transaction,
with who (key id), when, from which address and what changed, never a secret; ``GET /audit`` for a tenant's admins
(their tenant only) and the operator (every tenant, or one), with filters and cursor pagination. Real apps on SQLite
and PostgreSQL, and a real HTTP server for the client's address."""

from __future__ import annotations

from datetime import timedelta

import httpx
import msgspec
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import select

from cloudeasyml.app import create_app
from cloudeasyml.core.clock import utc_now
from cloudeasyml.db.models import AuditEvent
from cloudeasyml.domain.audit import NOT_RECORDED, diff
from cloudeasyml.domain.tenants import NewTenant
from cloudeasyml.settings import DatabaseSettings, RuntimeSettings, Settings
from tests.conftest import bearer, db_session, new_tenant
from tests.integration.test_operator_api import operator_key
from tests.integration.test_predict import deploy
from tests.support import tiny_model
from tests.support.live_server import serve_in_thread
from tests.support.template_db import TEMPLATES
from tests.support.webhooks import LOOPBACK


@pytest.fixture(name="settings")
def fx_settings(settings: Settings) -> Settings:
    """The loopback receiver's URL is a valid webhook endpoint here."""
    return msgspec.structs.replace(settings, webhooks=LOOPBACK)


async def _audit(client: AsyncTestClient, key: str, **params: object) -> list[dict]:
    response = await client.get("/audit", params={k: str(v) for k, v in params.items()}, headers=bearer(key))
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def _stored(url: str) -> list[AuditEvent]:
    async with db_session(url) as session:
        return list(await session.scalars(select(AuditEvent).order_by(AuditEvent.id)))


async def test_every_change_is_recorded_with_who_what_and_never_a_secret(
    client, migrated_url: str, tenant: NewTenant
) -> None:
    admin = bearer(tenant.key)
    made = (await client.post("/api-keys", json={"name": "ci", "scopes": ["predict"]}, headers=admin)).json()
    deployment = await deploy(client, tenant.key)
    patched = await client.patch(
        f"/deployments/{deployment['id']}", json={"config": {"maxBatchSize": 8}}, headers=admin
    )
    assert patched.status_code == 200, patched.text
    hook = (
        await client.post("/webhooks", json={"url": "http://127.0.0.1:9/h", "events": ["key.revoked"]}, headers=admin)
    ).json()
    assert (await client.patch(f"/webhooks/{hook['id']}", json={"enabled": False}, headers=admin)).status_code == 200
    rotated = (await client.post(f"/webhooks/{hook['id']}/rotate-secret", headers=admin)).json()
    assert (await client.delete(f"/webhooks/{hook['id']}", headers=admin)).status_code == 204
    assert (await client.delete(f"/api-keys/{made['keyId']}", headers=admin)).status_code == 204
    assert (await client.delete(f"/deployments/{deployment['id']}", headers=admin)).status_code == 204

    events = await _audit(client, tenant.key)
    assert [e["action"] for e in reversed(events)] == [
        "key.created",
        "deployment.created",
        "deployment.updated",
        "webhook.created",
        "webhook.updated",
        "webhook.secret_rotated",
        "webhook.deleted",
        "key.revoked",
        "deployment.deleted",
    ]
    assert {e["actorKeyId"] for e in events} == {tenant.key_id}
    assert all(e["clientIp"] and e["tenant"] == str(tenant.tenant.id) for e in events)
    by_action = {e["action"]: e for e in events}
    assert by_action["key.created"]["resourceId"] == made["keyId"]
    assert by_action["key.created"]["changes"]["scopes"] == {"to": ["predict"]}
    assert by_action["deployment.updated"]["changes"]["config"]["maxBatchSize"]["to"] == 8
    assert by_action["webhook.updated"]["changes"] == {"enabled": {"from": True, "to": False}}
    assert by_action["key.revoked"]["changes"]["keysRevoked"] == {"to": [made["keyId"]]}

    served = (await client.get("/audit", headers=admin)).text
    stored = msgspec.json.encode([row.changes for row in await _stored(migrated_url)]).decode()
    for secret in (made["key"], made["key"].split(".")[1], hook["secret"], rotated["secret"], tenant.key):
        assert secret not in served and secret not in stored


async def test_a_change_that_fails_leaves_no_event(client, tenant: NewTenant) -> None:
    admin = bearer(tenant.key)
    await deploy(client, tenant.key, name="one")
    assert (
        await client.post("/deployments", json={"modelName": "tiny", "name": "one"}, headers=admin)
    ).status_code == 409
    # The tenant's last admin key cannot be revoked: nothing is, nothing is recorded.
    assert (await client.delete(f"/api-keys/{tenant.key_id}", headers=admin)).status_code == 409
    assert [e["action"] for e in await _audit(client, tenant.key)] == ["deployment.created"]


async def test_filters_and_cursor_pages(client, tenant: NewTenant) -> None:
    admin = bearer(tenant.key)
    for n in range(5):
        await client.post("/api-keys", json={"name": f"k{n}"}, headers=admin)
    deployment = await deploy(client, tenant.key)
    everything = await _audit(client, tenant.key)
    assert len(everything) == 6
    pages, cursor = [], None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        body = (await client.get("/audit", params=params, headers=admin)).json()
        pages.append(body["items"])
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert [e["id"] for page in pages for e in page] == [e["id"] for e in everything] and len(pages) == 3
    assert len(await _audit(client, tenant.key, action="key.created")) == 5
    assert [e["resourceId"] for e in await _audit(client, tenant.key, resourceType="deployment")] == [deployment["id"]]
    later = (utc_now() + timedelta(minutes=1)).isoformat()
    assert await _audit(client, tenant.key, since=later) == []
    assert len(await _audit(client, tenant.key, until=later)) == 6
    bad = await client.get("/audit", params={"cursor": "nope"}, headers=admin)
    assert bad.status_code == 400


async def test_tenant_admins_read_their_tenant_only_and_operators_every_tenant(
    client, migrated_url: str, tenant: NewTenant, other_tenant: NewTenant
) -> None:
    await client.post("/api-keys", json={"name": "a"}, headers=bearer(tenant.key))
    reader = await client.post(
        "/api-keys", json={"name": "b", "scopes": ["keys:write"]}, headers=bearer(other_tenant.key)
    )
    assert [e["tenant"] for e in await _audit(client, other_tenant.key)] == [str(other_tenant.tenant.id)]
    assert (await client.get("/audit", headers=bearer(reader.json()["key"]))).status_code == 403  # not admin
    mine_only = await client.get("/audit", params={"tenant": str(tenant.tenant.id)}, headers=bearer(other_tenant.key))
    assert mine_only.status_code == 403

    ops_key = await operator_key(migrated_url)
    ops = bearer(ops_key)
    suspended = await client.post(f"/operator/tenants/{tenant.tenant.id}/suspend", json={"reason": "x"}, headers=ops)
    assert suspended.status_code == 200
    everything = await _audit(client, ops_key)
    assert {e["tenant"] for e in everything} >= {str(tenant.tenant.id), str(other_tenant.tenant.id)}
    only_a = await _audit(client, ops_key, tenant=tenant.tenant.id)
    assert [e["action"] for e in only_a] == ["tenant.suspended", "key.created"]
    assert only_a[0]["actorKeyId"] == ops_key.split(".")[0] and only_a[0]["actorKeyId"].startswith("op_")
    assert only_a[0]["changes"]["status"] == {"from": "active", "to": "suspended"}
    # The suspended tenant's admins cannot read it now; its log stays for the operator.
    assert (await client.get("/audit", headers=bearer(tenant.key))).status_code == 403


async def test_the_operators_tenant_changes_and_deletion_are_kept(client, migrated_url: str) -> None:
    ops_key = await operator_key(migrated_url)
    ops = bearer(ops_key)
    body = {"name": "audited", "ownerEmail": "o@a.test", "spendCap": "5"}
    made = (await client.post("/operator/tenants", json=body, headers=ops)).json()
    path = f"/operator/tenants/{made['tenant']['id']}"
    await client.patch(path, json={"plan": "pro", "spendCap": None}, headers=ops)
    token = (await client.delete(path, headers=ops)).json()["confirmationToken"]
    assert (await client.delete(path, params={"confirm": token}, headers=ops)).status_code == 204
    events = await _audit(client, ops_key, tenant=made["tenant"]["id"])
    assert [e["action"] for e in events] == [
        "tenant.deleted",
        "tenant.deletion_requested",
        "tenant.updated",
        "tenant.created",
    ]
    assert events[2]["changes"] == {"plan": {"from": "default", "to": "pro"}, "spendCap": {"from": "5", "to": None}}
    assert made["key"] not in str(events) and token not in str(events)


def test_the_client_address_is_the_connections_over_real_http(tmp_path) -> None:
    url = TEMPLATES.sqlite(tmp_path / "audit.db")
    import asyncio

    tenant = asyncio.run(new_tenant(url, "addressed"))
    tiny_model.seed_graph(tmp_path / "art")
    settings = Settings(
        database=DatabaseSettings(url=url),
        runtime=RuntimeSettings(artifact_dir=str(tmp_path / "art")),
        home=str(tmp_path),
    )
    with serve_in_thread(create_app(settings)) as address:
        made = httpx.post(f"http://{address}/api-keys", json={"name": "x"}, headers=bearer(tenant.key))
        assert made.status_code == 201
        events = httpx.get(f"http://{address}/audit", headers=bearer(tenant.key)).json()["items"]
    assert [(e["action"], e["clientIp"]) for e in events] == [("key.created", "127.0.0.1")]


def test_no_secret_is_written_whatever_the_caller_passes() -> None:
    changed = diff({"name": "a", "secret": "s1", "nested": {"apiKey": "k"}}, {"name": "b", "secret": "s2"})
    assert changed["name"] == {"from": "a", "to": "b"}
    assert "s1" not in str(changed) and "s2" not in str(changed) and NOT_RECORDED in str(changed)


async def test_batch_jobs_and_webhook_test_sends_are_recorded(client, tenant: NewTenant) -> None:
    admin = bearer(tenant.key)
    deployment = await deploy(client, tenant.key)
    upload = await client.post(
        "/files", content=b'{"input": {"x": 1.0, "y": 2.0}}\n', headers={**admin, "Content-Type": "application/jsonl"}
    )
    assert upload.status_code == 201, upload.text
    job = await client.post(
        "/batches", json={"inputFileId": upload.json()["id"], "deploymentId": deployment["id"]}, headers=admin
    )
    assert job.status_code == 201, job.text
    cancelled = await client.post(f"/batches/{job.json()['id']}/cancel", headers=admin)
    assert cancelled.status_code == 200, cancelled.text
    hook = (
        await client.post("/webhooks", json={"url": "http://127.0.0.1:9/h", "events": ["key.revoked"]}, headers=admin)
    ).json()
    sent = await client.post(f"/webhooks/{hook['id']}/test", headers=admin)
    assert sent.status_code == 202, sent.text
    [delivery] = (await client.get(f"/webhooks/{hook['id']}/deliveries", headers=admin)).json()["items"]
    retried = await client.post(f"/webhooks/{hook['id']}/deliveries/{delivery['id']}/retry", headers=admin)
    assert retried.status_code == 202, retried.text

    by_action = {e["action"]: e for e in await _audit(client, tenant.key)}
    made = by_action["batch.created"]
    assert made["resourceId"] == job.json()["id"] and made["actorKeyId"] == tenant.key_id
    assert made["changes"]["deploymentId"] == {"to": deployment["id"]}
    assert made["changes"]["inputFileId"] == {"to": upload.json()["id"]}
    assert by_action["batch.cancelled"]["changes"] == {
        "status": {"from": "validating", "to": cancelled.json()["status"]}
    }
    assert by_action["webhook.test_sent"]["resourceId"] == hook["id"]
    assert by_action["webhook.test_sent"]["changes"] == {"eventId": {"to": sent.json()["eventId"]}}
    assert by_action["webhook.delivery_retried"]["changes"] == {"deliveryId": {"to": delivery["id"]}}


async def test_events_past_the_retention_are_deleted_by_the_periodic_scan(
    settings: Settings, plugin_manager, migrated_url: str, tenant: NewTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cloudeasyml.domain import audit_retention

    monkeypatch.setattr(audit_retention, "BATCH", 2)  # several passes of one deletion
    now = utc_now()
    async with db_session(migrated_url) as session:
        for age_days in (400, 200, 91, 89, 1):
            session.add(
                AuditEvent(
                    tenant_id=tenant.tenant.id,
                    action="key.created",
                    resource_type="key",
                    resource_id=f"aged-{age_days}",
                    changes={},
                    created_at=now - timedelta(days=age_days),
                )
            )
        await session.commit()

    async def kept() -> list[str]:
        return sorted(e.resource_id for e in await _stored(migrated_url) if e.resource_id.startswith("aged-"))

    keep_all = create_app(settings, plugin_manager)  # the default: 0 days, nothing is deleted
    operator = msgspec.structs.replace(settings.operator, audit_retention_days=90)
    ninety_days = create_app(msgspec.structs.replace(settings, operator=operator), plugin_manager)
    try:
        await keep_all.state.services.webhooks.scan()
        assert await kept() == ["aged-1", "aged-200", "aged-400", "aged-89", "aged-91"]
        await ninety_days.state.services.webhooks.scan()
        assert await kept() == ["aged-1", "aged-89"]
    finally:
        for app in (keep_all, ninety_days):
            await app.state.services.engine.dispose()
