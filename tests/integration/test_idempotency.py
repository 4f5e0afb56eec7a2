"""``Idempotency-Key`` (Stripe's rules) through the real app: a retry replays the first answer and is not billed
again, another request with the key is a 409, 5xx answers are not kept, keys are per tenant and expire, concurrent
retries run once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select

from cloudeasyml.app import create_app
from cloudeasyml.db.engine import create_engine, session_factory
from cloudeasyml.db.models import ApiKey, Deployment, IdempotencyRecord, UsageRecord
from cloudeasyml.domain.idempotency import IdempotencyStore, request_hash
from cloudeasyml.domain.tenants import NewTenant
from cloudeasyml.errors import IdempotencyKeyInUseError
from cloudeasyml.plugins.manager import get_plugin_manager
from cloudeasyml.settings import DatabaseSettings, IdempotencySettings, RuntimeSettings, Settings
from tests.conftest import bearer, db_session
from tests.integration.test_predict import deploy
from tests.integration.test_usage_headers import USAGE_HEADERS
from tests.support.live_server import serve_in_thread
from tests.support.webhooks import LOOPBACK

IDEMPOTENCY = IdempotencySettings(ttl_seconds=3.0, lock_seconds=2.0, purge_interval_seconds=0.1)


@pytest.fixture(name="settings")
def fx_settings(migrated_url: str, artifact_dir: Path, tmp_path: Path) -> Settings:
    """Keys expire in seconds here (a day by default), so that expiry is seen; webhooks may point at loopback."""
    return Settings(
        database=DatabaseSettings(url=migrated_url),
        runtime=RuntimeSettings(artifact_dir=str(artifact_dir)),
        home=str(tmp_path / "home"),
        webhooks=LOOPBACK,
        idempotency=IDEMPOTENCY,
    )


def keyed(tenant: NewTenant, key: str) -> dict[str, str]:
    return {**bearer(tenant.key), "Idempotency-Key": key}


async def count(url: str, table: type, **where: object) -> int:
    async with db_session(url) as session:
        query = select(func.count()).select_from(table)
        for name, value in where.items():
            query = query.where(getattr(table, name) == value)
        return int(await session.scalar(query) or 0)


async def billed(client, tenant: NewTenant) -> int:
    response = await client.get("/usage", headers=bearer(tenant.key))  # flushes the meter
    assert response.status_code == 200, response.text
    return response.json()["totalRequests"]


async def test_a_retried_prediction_replays_the_first_answer_and_is_billed_once(
    client, tenant: NewTenant, migrated_url: str
) -> None:
    deployment = await deploy(client, tenant.key)
    body = {"deploymentId": deployment["id"], "inputs": [{"x": 1.0, "y": 2.0}]}
    for path, payload in (("/predict", body), (f"/deployments/{deployment['id']}/predict", body)):
        first = await client.post(path, json=payload, headers=keyed(tenant, f"k-{path}"))
        again = await client.post(path, json=payload, headers=keyed(tenant, f"k-{path}"))
        assert first.status_code == again.status_code == 200, first.text
        assert again.content == first.content  # the same requestId and predictions
        assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
        assert again.headers["content-type"] == first.headers["content-type"]
        assert set(USAGE_HEADERS) <= set(first.headers) and not set(USAGE_HEADERS) & set(again.headers)
    assert await billed(client, tenant) == 2
    assert await count(migrated_url, UsageRecord) == 2


async def test_v2_inference_is_replayed_too(client, tenant: NewTenant) -> None:
    await deploy(client, tenant.key, name="scorer")
    body = {"inputs": [{"name": "points", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}]}
    answers = [await client.post("/v2/models/scorer/infer", json=body, headers=keyed(tenant, "v2")) for _ in "ab"]
    assert [a.status_code for a in answers] == [200, 200] and answers[0].content == answers[1].content
    assert await billed(client, tenant) == 1


async def test_creating_posts_create_once(client, tenant: NewTenant, migrated_url: str) -> None:
    deployments = [
        await client.post("/deployments", json={"modelName": "tiny", "name": "once"}, headers=keyed(tenant, "d"))
        for _ in range(2)
    ]
    assert [r.status_code for r in deployments] == [201, 201] and deployments[0].json() == deployments[1].json()
    assert await count(migrated_url, Deployment, tenant_id=tenant.tenant.id) == 1

    keys = [await client.post("/api-keys", json={"name": "ci"}, headers=keyed(tenant, "key")) for _ in range(2)]
    assert [r.status_code for r in keys] == [201, 201] and keys[0].json()["key"] == keys[1].json()["key"]
    assert await count(migrated_url, ApiKey, name="ci") == 1
    # The answer holds the new key's secret, shown once: the table keeps it encrypted, never in the clear.
    async with db_session(migrated_url) as session:
        stored = await session.get(IdempotencyRecord, (tenant.tenant.id, "key"))
    assert stored is not None and stored.body and keys[0].json()["key"].encode() not in stored.body

    hook = {"url": "http://127.0.0.1:9/hook", "events": ["deployment.deleted"]}
    hooks = [await client.post("/webhooks", json=hook, headers=keyed(tenant, "hook")) for _ in range(2)]
    assert [r.status_code for r in hooks] == [201, 201] and hooks[0].json() == hooks[1].json()


async def test_the_same_key_with_another_request_is_a_409(client, tenant: NewTenant) -> None:
    deployment = await deploy(client, tenant.key)
    body = {"deploymentId": deployment["id"], "inputs": [{"x": 1.0, "y": 2.0}]}
    assert (await client.post("/predict", json=body, headers=keyed(tenant, "same"))).status_code == 200
    other_body = {**body, "inputs": [{"x": 3.0, "y": 2.0}]}
    other_path = f"/deployments/{deployment['id']}/predict"
    for path, payload in (("/predict", other_body), (other_path, body)):
        refused = await client.post(path, json=payload, headers=keyed(tenant, "same"))
        assert refused.status_code == 409, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert "different request" in refused.json()["detail"]
        assert "retry-after" not in refused.headers  # final: the Python client does not retry it
    assert await billed(client, tenant) == 1


async def test_keys_are_per_tenant_and_bounded(client, tenant: NewTenant, other_tenant: NewTenant) -> None:
    for who in (tenant, other_tenant):
        created = await client.post("/deployments", json={"modelName": "tiny", "name": "x"}, headers=keyed(who, "k"))
        assert created.status_code == 201 and "idempotent-replayed" not in created.headers
    for bad in ("x" * 256, "has space", ""):
        refused = await client.post("/deployments", json={"modelName": "tiny"}, headers=keyed(tenant, bad))
        assert refused.status_code == 400, (bad, refused.text)
    longest = await client.post("/deployments", json={"modelName": "tiny"}, headers=keyed(tenant, "y" * 255))
    assert longest.status_code == 201
    anonymous = await client.post("/deployments", json={"modelName": "tiny"}, headers={"Idempotency-Key": "z"})
    assert anonymous.status_code == 401


async def test_4xx_answers_are_replayed_and_a_key_expires(client, tenant: NewTenant, migrated_url: str) -> None:
    deployment = await deploy(client, tenant.key)
    empty = {"deploymentId": deployment["id"], "inputs": []}
    answers = [await client.post("/predict", json=empty, headers=keyed(tenant, "bad")) for _ in range(2)]
    assert [a.status_code for a in answers] == [422, 422] and answers[1].headers["idempotent-replayed"] == "true"
    good = {"deploymentId": deployment["id"], "inputs": [{"x": 1.0, "y": 2.0}]}
    assert (await client.post("/predict", json=good, headers=keyed(tenant, "late"))).status_code == 200
    await asyncio.sleep(IDEMPOTENCY.ttl_seconds + 0.5)
    # Past the window the key is free: the request runs (and is billed) again, and expired keys are purged.
    rerun = await client.post("/predict", json=good, headers=keyed(tenant, "late"))
    assert rerun.status_code == 200 and "idempotent-replayed" not in rerun.headers
    assert await billed(client, tenant) == 2
    assert await count(migrated_url, IdempotencyRecord, key="bad") == 0


async def test_a_5xx_answer_is_not_kept_so_a_retry_runs(
    client, tenant: NewTenant, settings: Settings, migrated_url: str
) -> None:
    deployment = await deploy(client, tenant.key)
    body = {"inputs": [{"x": 1.0, "y": 2.0}]}
    path = f"/deployments/{deployment['id']}/predict"
    # A server process without the model installed answers 503 (the model is not ready there).
    async with AsyncTestClient(app=create_app(settings, get_plugin_manager(load_entrypoints=False))) as bare:
        failed = await bare.post(path, json=body, headers=keyed(tenant, "retry-me"))
    assert failed.status_code == 503, failed.text
    assert await count(migrated_url, IdempotencyRecord, key="retry-me") == 0
    retried = await client.post(path, json=body, headers=keyed(tenant, "retry-me"))
    assert retried.status_code == 200 and "idempotent-replayed" not in retried.headers
    assert await billed(client, tenant) == 1


async def test_concurrent_retries_with_one_key_run_once(app, tenant: NewTenant) -> None:
    with serve_in_thread(app) as address:
        async with httpx.AsyncClient(base_url=f"http://{address}", timeout=60) as http:
            created = await http.post("/deployments", json={"modelName": "tiny"}, headers=bearer(tenant.key))
            assert created.status_code == 201, created.text
            body = {"deploymentId": created.json()["id"], "inputs": [{"x": 1.0, "y": 2.0}]}
            answers = await asyncio.gather(
                *(http.post("/predict", json=body, headers=keyed(tenant, "racy")) for _ in range(8))
            )
            statuses = sorted(a.status_code for a in answers)
            assert set(statuses) <= {200, 409} and 200 in statuses, statuses
            assert len({a.content for a in answers if a.status_code == 200}) == 1
            assert all("still being processed" in a.json()["detail"] for a in answers if a.status_code == 409)
            # It passes: Retry-After says when to come back for the replay (the Python client retries on it).
            assert all(a.headers.get("retry-after") == "1" for a in answers if a.status_code == 409)
            assert (await http.get("/usage", headers=bearer(tenant.key))).json()["totalRequests"] == 1


async def test_a_key_held_by_a_lost_request_is_taken_over_after_the_lock(tenant: NewTenant, migrated_url: str) -> None:
    engine = create_engine(migrated_url)
    try:
        store = IdempotencyStore(session_factory(engine), IDEMPOTENCY)
        first = await store.claim(tenant.tenant.id, "lost", "h" * 64, b"s")
        with pytest.raises(IdempotencyKeyInUseError):
            await store.claim(tenant.tenant.id, "lost", "h" * 64, b"s")
        await asyncio.sleep(IDEMPOTENCY.lock_seconds + 0.2)
        second = await store.claim(tenant.tenant.id, "lost", "h" * 64, b"s")
        assert second != first
        await store.complete(first, 200, [], b"late")  # the lost request's answer no longer counts
        await store.complete(second, 201, [(b"content-type", b"text/plain")], b"won")
        replay = await store.claim(tenant.tenant.id, "lost", "h" * 64, b"s")
        assert (replay.status, replay.body, replay.headers) == (201, b"won", [(b"content-type", b"text/plain")])
    finally:
        await engine.dispose()


def test_request_hash_separates_its_parts() -> None:
    assert request_hash("k", "POST", "/a", b"", b"b") != request_hash("k", "POST", "/ab", b"", b"")
    assert request_hash("k", "POST", "/a", b"", b"b") != request_hash("k2", "POST", "/a", b"", b"b")
