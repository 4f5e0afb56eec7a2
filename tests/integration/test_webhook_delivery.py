"""Webhook delivery, driven round by round with a clock the test moves: retries with exponential backoff, the retry
window, disabling an endpoint that fails for five days (its tenant told on the others), the URL guard at delivery;
and the events themselves: written in the transaction of their change (a change rolled back writes none), once per
fact where several processes may observe it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest
from litestar.testing import AsyncTestClient
from standardwebhooks.webhooks import Webhook

from cloudeasyml.app import create_app
from cloudeasyml.core.clock import utc_now
from cloudeasyml.db.engine import create_engine, session_factory
from cloudeasyml.db.models import ApiKey, Deployment
from cloudeasyml.domain.api_keys import ApiKeyService, KeyRequest
from cloudeasyml.domain.deployments import to_spec
from cloudeasyml.domain.tenants import NewTenant, set_caps
from cloudeasyml.domain.webhooks.dispatcher import retry_delay
from cloudeasyml.domain.webhooks.endpoints import WebhookEndpointService
from cloudeasyml.domain.webhooks.notices import Notices
from cloudeasyml.domain.webhooks.url_guard import UrlGuard
from cloudeasyml.errors import NotFoundError
from cloudeasyml.settings import DatabaseSettings, RedisSettings, RuntimeSettings, Settings, WebhookSettings
from tests.conftest import bearer, db_session
from tests.integration.test_predict import deploy
from tests.support.webhook_receiver import receiver
from tests.support.webhooks import LOOPBACK, Clock, deliveries, events, own_dispatcher

QUIET = msgspec.structs.replace(LOOPBACK, enabled=False)
"""The app records events but does not deliver: the test's own dispatcher does, when the test says."""

SCHEDULE = msgspec.structs.replace(
    LOOPBACK, retry_base_seconds=10.0, retry_max_delay_seconds=3600.0, retry_jitter=0.2, retry_window_seconds=86400.0
)


@pytest.fixture(name="settings")
def fx_settings(migrated_url: str, artifact_dir: Path, tmp_path: Path) -> Settings:
    return Settings(
        database=DatabaseSettings(url=migrated_url),
        runtime=RuntimeSettings(artifact_dir=str(artifact_dir)),
        home=str(tmp_path / "home"),
        webhooks=QUIET,
    )


async def _endpoint(url: str, tenant: NewTenant, hook_url: str, events_: list[str]) -> tuple[uuid.UUID, str]:
    async with db_session(url) as session:
        row = await WebhookEndpointService(session, tenant.tenant.id, UrlGuard(LOOPBACK), LOOPBACK).create(
            hook_url, events_
        )
        return row.id, row.secret


async def _test_event(url: str, tenant: NewTenant, endpoint_id: uuid.UUID) -> str:
    async with db_session(url) as session:
        return await WebhookEndpointService(session, tenant.tenant.id, UrlGuard(LOOPBACK), LOOPBACK).send_test(
            endpoint_id
        )


def test_the_wait_doubles_up_to_its_most_and_the_jitter_only_shortens_it() -> None:
    waits = [retry_delay(attempt, SCHEDULE, 0.0) for attempt in range(1, 12)]
    assert waits[:4] == [10.0, 20.0, 40.0, 80.0] and waits[-1] == 3600.0
    assert retry_delay(3, SCHEDULE, 0.999) == pytest.approx(40 * (1 - 0.2 * 0.999))


async def test_a_failing_receiver_gets_the_event_again_after_each_backoff_until_it_answers(
    migrated_url: str, tenant: NewTenant
) -> None:
    clock = Clock()
    with receiver(fail_first=3) as hook:
        endpoint_id, secret = await _endpoint(migrated_url, tenant, hook.url, ["key.revoked"])
        event_id = await _test_event(migrated_url, tenant, endpoint_id)
        async with own_dispatcher(migrated_url, SCHEDULE, clock) as dispatcher:
            assert await dispatcher.run_once() == 1
            (delivery,) = await deliveries(migrated_url)
            assert delivery.attempts == 1 and delivery.status == "pending" and delivery.response_status == 500
            # Jitter fixed at 0.5: the first wait is 10 s less 10 %.
            assert delivery.next_attempt_at - clock.now == timedelta(seconds=9)
            clock.advance(seconds=8)
            assert await dispatcher.run_once() == 0  # not due yet
            clock.advance(seconds=1)
            assert await dispatcher.run_once() == 1
            (delivery,) = await deliveries(migrated_url)
            assert delivery.attempts == 2 and delivery.next_attempt_at - clock.now == timedelta(seconds=18)
            clock.advance(seconds=18)
            assert await dispatcher.run_once() == 1
            clock.advance(seconds=36)
            assert await dispatcher.run_once() == 1
            assert await dispatcher.run_once() == 0
        received = hook.wait_for(4)
    (delivery,) = await deliveries(migrated_url)
    assert delivery.status == "succeeded" and delivery.attempts == 4 and delivery.response_status == 200
    # Every attempt is the same message (one id, one body), signed afresh.
    assert {got.headers["webhook-id"] for got in received} == {event_id}
    assert {got.body for got in received} == {received[0].body}
    for got in received:
        Webhook(secret).verify(got.body, got.headers)


async def test_a_delivery_still_failing_after_its_window_is_marked_failed(migrated_url: str, tenant: NewTenant) -> None:
    clock = Clock()
    with receiver(fail_first=1000) as hook:
        endpoint_id, _ = await _endpoint(migrated_url, tenant, hook.url, ["key.revoked"])
        await _test_event(migrated_url, tenant, endpoint_id)
        async with own_dispatcher(migrated_url, SCHEDULE, clock) as dispatcher:
            attempts = 0
            while (await deliveries(migrated_url))[0].status == "pending":
                (delivery,) = await deliveries(migrated_url)
                clock.now = max(clock.now, delivery.next_attempt_at)
                attempts += await dispatcher.run_once()
                assert attempts < 100
    (delivery,) = await deliveries(migrated_url)
    assert delivery.status == "failed" and delivery.attempts == attempts
    assert clock.now - delivery.created_at <= timedelta(days=1, hours=1)
    # 10 s doubling to an hour (less 10 %), then hourly: about 30 attempts in 24 h.
    assert 25 <= attempts <= 35


async def test_an_endpoint_failing_for_five_days_is_disabled_and_the_others_are_told(
    migrated_url: str, tenant: NewTenant, other_tenant: NewTenant
) -> None:
    clock = Clock()
    with receiver(fail_first=10_000) as broken, receiver() as healthy, receiver() as elsewhere:
        broken_id, _ = await _endpoint(migrated_url, tenant, broken.url, ["key.revoked"])
        healthy_id, healthy_secret = await _endpoint(migrated_url, tenant, healthy.url, ["key.revoked"])
        await _endpoint(migrated_url, other_tenant, elsewhere.url, ["key.revoked"])
        async with own_dispatcher(migrated_url, SCHEDULE, clock) as dispatcher:
            await _test_event(migrated_url, tenant, broken_id)
            await dispatcher.run_once()
            for day in range(1, 6):  # a new event each day, failing each time
                clock.advance(days=1)
                await _test_event(migrated_url, tenant, broken_id)
                await dispatcher.run_once()
                async with db_session(migrated_url) as session:
                    endpoint = await WebhookEndpointService(
                        session, tenant.tenant.id, UrlGuard(LOOPBACK), LOOPBACK
                    ).get(broken_id)
                assert endpoint.enabled is (day < 5), day
            assert endpoint.disabled_reason and "failed since" in endpoint.disabled_reason
            await dispatcher.run_once()
        (told,) = healthy.wait_for(1)
    payload = Webhook(healthy_secret).verify(told.body, told.headers)
    assert payload["type"] == "endpoint.disabled" and payload["data"]["endpointId"] == str(broken_id)
    assert elsewhere.received == [] and healthy_id != broken_id
    # Disabled, it gets nothing more.
    attempts = len(broken.received)
    async with own_dispatcher(migrated_url, SCHEDULE, clock) as dispatcher:
        clock.advance(days=1)
        assert await dispatcher.run_once() == 0
    assert len(broken.received) == attempts


async def test_the_guard_refuses_at_delivery_an_address_it_no_longer_allows(
    migrated_url: str, tenant: NewTenant
) -> None:
    with receiver() as hook:
        endpoint_id, _ = await _endpoint(migrated_url, tenant, hook.url, ["key.revoked"])
        await _test_event(migrated_url, tenant, endpoint_id)
        stricter = msgspec.structs.replace(LOOPBACK, allowed_networks=())  # the allowlist changed since
        async with own_dispatcher(migrated_url, stricter) as dispatcher:
            assert await dispatcher.run_once() == 1
    assert hook.received == []
    (delivery,) = await deliveries(migrated_url)
    assert delivery.response_status is None and "loopback" in (delivery.error or "")


async def test_revoking_a_key_writes_one_key_revoked_event_per_key_of_the_cascade_with_its_deliveries(
    migrated_url: str, client, tenant: NewTenant
) -> None:
    with receiver() as hook:
        endpoint_id, _ = await _endpoint(migrated_url, tenant, hook.url, ["key.revoked"])
        scopes = {"name": "parent", "scopes": ["keys:write", "predict"]}
        parent = await client.post("/api-keys", json=scopes, headers=bearer(tenant.key))
        child = await client.post(
            "/api-keys", json={"name": "child", "scopes": ["predict"]}, headers=bearer(parent.json()["key"])
        )
        assert child.status_code == 201, child.text
        revoked = await client.delete(f"/api-keys/{parent.json()['keyId']}", headers=bearer(tenant.key))
        assert revoked.status_code == 204
    written = await events(migrated_url, "key.revoked")
    assert {event["data"]["keyId"] for event in written} == {parent.json()["keyId"], child.json()["keyId"]}
    assert {event["data"]["revokedWith"] for event in written} == {parent.json()["keyId"]}
    assert {event["data"]["revokedBy"] for event in written} == {tenant.key_id}
    assert {row.event_id for row in await deliveries(migrated_url)} == {event["id"] for event in written}
    assert {row.endpoint_id for row in await deliveries(migrated_url)} == {endpoint_id}


async def test_a_change_rolled_back_writes_no_event(migrated_url: str, tenant: NewTenant) -> None:
    async with db_session(migrated_url) as session:
        issued = await ApiKeyService(session, tenant.tenant.id).issue(
            KeyRequest(name="doomed", scopes=("predict",)), issuer=None, user_id=None
        )
    await _endpoint(migrated_url, tenant, "http://127.0.0.1:9/hook", ["key.revoked"])
    with pytest.raises(RuntimeError):
        async with db_session(migrated_url) as session:
            assert await ApiKeyService(session, tenant.tenant.id).revoke(issued.row.id, actor=None)
            raise RuntimeError("the change fails after the event was written")
    assert await events(migrated_url) == [] and await deliveries(migrated_url) == []
    async with db_session(migrated_url) as session:
        assert (await session.get(ApiKey, issued.row.id)).revoked_at is None  # type: ignore[union-attr]
        await ApiKeyService(session, tenant.tenant.id).revoke(issued.row.id, actor=None)
    assert [event["type"] for event in await events(migrated_url)] == ["key.revoked"]


async def test_deleting_a_deployment_writes_deployment_deleted_and_loading_one_deployment_ready_once(
    migrated_url: str, client, tenant: NewTenant
) -> None:
    await _endpoint(migrated_url, tenant, "http://127.0.0.1:9/hook", ["deployment.ready", "deployment.deleted"])
    deployment = await deploy(client, tenant.key, config={"eagerLoad": True})
    for _ in range(3):  # later loads (here: requests of a loaded deployment) write nothing more
        body = {"deploymentId": deployment["id"], "inputs": [{"x": 1.0, "y": 2.0}]}
        assert (await client.post("/predict", json=body, headers=bearer(tenant.key))).status_code == 200
    assert (await client.delete(f"/deployments/{deployment['id']}", headers=bearer(tenant.key))).status_code == 204
    written = await events(migrated_url)
    assert [event["type"] for event in written] == ["deployment.ready", "deployment.deleted"]
    assert all(event["data"]["deploymentId"] == deployment["id"] for event in written)
    assert written[0]["data"]["modelName"] == "tiny" and len(await deliveries(migrated_url)) == 2


async def test_each_revision_writes_deployment_revision_created_and_a_refused_change_none(
    migrated_url: str, client, tenant: NewTenant
) -> None:
    await _endpoint(migrated_url, tenant, "http://127.0.0.1:9/hook", ["deployment.revision.created"])
    deployment = await deploy(client, tenant.key)
    url, auth = f"/deployments/{deployment['id']}", bearer(tenant.key)
    assert (await client.patch(url, json={"variant": "int8"}, headers=auth)).status_code == 200
    assert (await client.patch(url, json={"modelVersion": "9.9.9"}, headers=auth)).status_code == 404  # none
    assert (await client.patch(url, json={"variant": "int8"}, headers=auth)).status_code == 200  # no change: none
    assert (await client.post(f"{url}/rollback", headers=auth)).status_code in (200, 201)
    written = await events(migrated_url)
    assert [event["type"] for event in written] == ["deployment.revision.created"] * 2
    first, second = (event["data"] for event in written)
    assert first["deploymentId"] == deployment["id"] and first["revision"] == 2 and first["action"] == "update"
    assert first["changes"]["config"]["variant"] == {"from": "float", "to": "int8"}
    assert first["createdByKeyId"] == tenant.key_id
    assert second["revision"] == 3 and second["action"] == "rollback"
    assert len(await deliveries(migrated_url)) == 2


async def test_quota_warning_at_80_percent_and_quota_exceeded_at_the_cap_are_written_once(
    migrated_url: str, client, tenant: NewTenant
) -> None:
    await _endpoint(migrated_url, tenant, "http://127.0.0.1:9/hook", ["quota.warning", "quota.exceeded"])
    async with db_session(migrated_url) as session:
        await set_caps(session, tenant.tenant.name, request_cap=5)
    deployment = await deploy(client, tenant.key)
    body = {"deploymentId": deployment["id"], "inputs": [{"x": 1.0, "y": 2.0}]}
    statuses = [(await client.post("/predict", json=body, headers=bearer(tenant.key))).status_code for _ in range(7)]
    assert statuses == [200] * 5 + [429] * 2
    for _ in range(200):  # written in the background
        written = [event for event in await events(migrated_url) if event["type"].startswith("quota.")]
        if len(written) >= 2:
            break
        await asyncio.sleep(0.05)
    assert [(event["type"], event["data"]["cap"], event["data"]["used"]) for event in written] == [
        ("quota.warning", "requests", "4"),
        ("quota.exceeded", "requests", "5"),
    ]
    assert written[1]["data"]["limit"] == "5" and written[1]["data"]["month"] == f"{utc_now():%Y-%m}"


async def test_key_expiring_is_written_once_per_key_and_expiry_within_seven_days(
    migrated_url: str, tenant: NewTenant
) -> None:
    async with db_session(migrated_url) as session:
        keys = ApiKeyService(session, tenant.tenant.id)
        soon = await keys.issue(
            KeyRequest(name="soon", expires_at=utc_now() + timedelta(days=3)), issuer=None, user_id=None
        )
        await keys.issue(KeyRequest(name="later", expires_at=utc_now() + timedelta(days=30)), issuer=None, user_id=None)
    await _endpoint(migrated_url, tenant, "http://127.0.0.1:9/hook", ["key.expiring"])
    async with own_dispatcher(migrated_url, SCHEDULE) as first, own_dispatcher(migrated_url, SCHEDULE) as second:
        await first.scan()
        await second.scan()  # another process: the same event id, nothing new
        await first.scan()
    (written,) = await events(migrated_url)
    assert written["type"] == "key.expiring" and written["data"]["keyId"] == soon.row.id
    assert written["data"]["expiresAt"].endswith("Z") and len(await deliveries(migrated_url)) == 1


async def test_a_failed_load_writes_deployment_failed_once_per_error_and_a_deleted_one_nothing(
    migrated_url: str, client, tenant: NewTenant
) -> None:
    await _endpoint(migrated_url, tenant, "http://127.0.0.1:9/hook", ["deployment.failed"])
    deployment = await deploy(client, tenant.key)
    async with db_session(migrated_url) as session:
        spec = to_spec(await session.get_one(Deployment, uuid.UUID(deployment["id"])))
    engine = create_engine(migrated_url)
    notices = Notices(session_factory(engine))  # as the app wires it to the registry's load results
    try:
        for _ in range(2):
            notices.deployment_loaded(spec, RuntimeError("the artifact is corrupt"))
            await notices.close()
        notices.deployment_loaded(spec, NotFoundError("deleted while it loaded"))
        await notices.close()
    finally:
        await engine.dispose()
    (written,) = await events(migrated_url)
    assert written["type"] == "deployment.failed" and written["data"]["error"] == "the artifact is corrupt"
    assert written["data"]["deploymentId"] == deployment["id"] and len(await deliveries(migrated_url)) == 1


def test_webhook_settings_read_lists_from_the_environment() -> None:
    from cloudeasyml.settings import load_settings

    settings = load_settings(
        {"CLOUDEASYML_WEBHOOKS__ALLOWED_NETWORKS": "10.0.0.0/8, 127.0.0.1/32", "CLOUDEASYML_WEBHOOKS__ALLOW_HTTP": "1"}
    )
    assert settings.webhooks.allowed_networks == ("10.0.0.0/8", "127.0.0.1/32") and settings.webhooks.allow_http
    assert WebhookSettings().allow_http is False and WebhookSettings().allowed_networks == ()


async def test_two_dispatchers_claiming_at_once_send_each_attempt_once(migrated_url: str, tenant: NewTenant) -> None:
    with receiver() as hook:
        endpoint_id, _ = await _endpoint(migrated_url, tenant, hook.url, ["key.revoked"])
        sent = {await _test_event(migrated_url, tenant, endpoint_id) for _ in range(30)}
        small = msgspec.structs.replace(SCHEDULE, batch_size=7)
        async with own_dispatcher(migrated_url, small) as first, own_dispatcher(migrated_url, small) as second:
            for _ in range(10):
                await asyncio.gather(first.run_once(), second.run_once())
        received = hook.wait_for(30)
    assert sorted(got.headers["webhook-id"] for got in received) == sorted(sent)
    assert {row.status for row in await deliveries(migrated_url)} == {"succeeded"}


async def test_with_redis_counting_the_caps_the_quota_events_are_written_too(
    migrated_url: str, settings: Settings, plugin_manager, redis_url: str, tenant: NewTenant
) -> None:
    shared = msgspec.structs.replace(settings, redis=RedisSettings(url=redis_url))
    async with db_session(migrated_url) as session:
        await set_caps(session, tenant.tenant.name, request_cap=5)
    async with AsyncTestClient(app=create_app(shared, plugin_manager)) as client:
        deployment = await deploy(client, tenant.key)
        body = {"deploymentId": deployment["id"], "inputs": [{"x": 1.0, "y": 2.0}]}
        for _ in range(6):
            await client.post("/predict", json=body, headers=bearer(tenant.key))
        for _ in range(200):
            written = {event["type"] for event in await events(migrated_url) if event["type"].startswith("quota.")}
            if len(written) == 2:
                break
            await asyncio.sleep(0.05)
    assert written == {"quota.warning", "quota.exceeded"}
