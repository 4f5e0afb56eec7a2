"""The usage export: every usage record, as a CloudEvent written to the webhook outbox in the meter's transaction, is
POSTed in batches (``application/cloudevents-batch+json``, with the configured auth header) to a real local HTTP
receiver by the dispatcher, at least once: a batch the receiver refuses is retried with the same ids, also by another
dispatcher after a restart; a record written twice is exported once; the webhook URL guard applies."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from cloudeasyml.db.engine import create_engine, session_factory
from cloudeasyml.db.models import UsageRecord, WebhookDelivery, WebhookEvent
from cloudeasyml.domain.tenants import NewTenant
from cloudeasyml.domain.webhooks.dispatcher import WebhookDispatcher
from cloudeasyml.domain.webhooks.url_guard import UnsafeAddressError
from cloudeasyml.metering.meter import write_usage
from cloudeasyml.metering.usage_export import CONTENT_TYPE, EVENT_TYPE
from cloudeasyml.settings import (
    DatabaseSettings,
    RuntimeSettings,
    Settings,
    UsageExportSettings,
    WebhookSettings,
)
from tests.conftest import bearer, db_session
from tests.integration.test_predict import deploy
from tests.integration.test_usage_detail import _record
from tests.support.webhook_receiver import Receiver, receiver
from tests.support.webhooks import LOOPBACK, Clock

TOKEN = "Bearer om_test_token"


@pytest.fixture(name="hook")
def fx_hook() -> AsyncIterator[Receiver]:
    """The operator's ingest endpoint: a real HTTP server on 127.0.0.1 that refuses the first batch (500)."""
    with receiver(fail_first=1, status=204, answer=b"") as hook:
        yield hook


def _export(hook: Receiver, **overrides: object) -> UsageExportSettings:
    return UsageExportSettings(url=hook.url, auth_value=TOKEN, batch_size=2, source="//cloudeasyml.test", **overrides)  # type: ignore[arg-type]


@pytest.fixture(name="settings")
def fx_settings(migrated_url: str, artifact_dir: Path, tmp_path: Path, hook: Receiver) -> Settings:
    """The app meters with the export on; its own dispatcher is off, so the test drives one with a clock."""
    return Settings(
        database=DatabaseSettings(url=migrated_url),
        runtime=RuntimeSettings(artifact_dir=str(artifact_dir)),
        home=str(tmp_path / "home"),
        webhooks=WebhookSettings(**{**_fields(LOOPBACK), "enabled": False}),
        usage_export=_export(hook),
    )


def _fields(settings: WebhookSettings) -> dict[str, object]:
    return {name: getattr(settings, name) for name in settings.__struct_fields__}


@asynccontextmanager
async def dispatcher(
    url: str, export: UsageExportSettings, clock: Clock, webhooks: WebhookSettings = LOOPBACK
) -> AsyncIterator[WebhookDispatcher]:
    """A dispatcher as one server process runs it: its own engine (a restart is a new one)."""
    engine = create_engine(url)
    running = WebhookDispatcher(session_factory(engine), webhooks, clock=clock, rand=lambda: 0.5, export=export)
    try:
        yield running
    finally:
        await running.stop()
        await engine.dispose()


async def _exports(url: str) -> list[WebhookDelivery]:
    async with db_session(url) as session:
        query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id.is_(None)).order_by(WebhookDelivery.id)
        return list(await session.scalars(query))


async def test_every_usage_record_is_exported_at_least_once_across_a_failure_and_a_restart(
    client, migrated_url: str, tenant: NewTenant, hook: Receiver, settings: Settings
) -> None:
    deployment = await deploy(client, tenant.key)
    request_ids = []
    for i in range(3):
        body = {"deploymentId": deployment["id"], "inputs": [{"x": float(i), "y": 1.0}] * (i + 1)}
        response = await client.post("/predict", json=body, headers=bearer(tenant.key))
        assert response.status_code == 200, response.text
        request_ids.append(response.headers["x-request-id"])
    assert (await client.get("/usage", headers=bearer(tenant.key))).status_code == 200  # flushes the meter
    async with db_session(migrated_url) as session:
        records = {r.request_id: r for r in await session.scalars(select(UsageRecord))}
    assert sorted(records) == sorted(request_ids)
    assert len(await _exports(migrated_url)) == 3  # written with the records, in the meter's transaction

    clock = Clock()
    async with dispatcher(migrated_url, settings.usage_export, clock) as first:
        assert await first.run_once() == 2  # a batch of two: the receiver refuses it
    refused = hook.wait_for(1)[0]
    pending = await _exports(migrated_url)
    assert sorted(d.attempts for d in pending) == [0, 1, 1] and {d.status for d in pending} == {"pending"}
    assert {d.response_status for d in pending if d.attempts} == {500}

    # The process stops; another starts (a new engine, nothing in memory) once the retry is due.
    clock.advance(seconds=60)
    async with dispatcher(migrated_url, settings.usage_export, clock) as second:
        assert await second.run_once() == 2  # the refused batch again, first in line
        assert await second.run_once() == 1
        assert await second.run_once() == 0
    received = hook.wait_for(3)
    done = await _exports(migrated_url)
    assert {d.status for d in done} == {"succeeded"} and sorted(d.attempts for d in done) == [1, 2, 2]

    for got in received:
        assert got.headers["content-type"] == CONTENT_TYPE and got.headers["authorization"] == TOKEN
    batches = [json.loads(got.body) for got in received]
    delivered = {event["id"]: event for batch in batches[1:] for event in batch}
    assert sorted(delivered) == sorted(request_ids)  # every record, once among the successful batches
    assert sum(len(batch) for batch in batches[1:]) == 3
    assert [delivered[event["id"]] for event in json.loads(refused.body)] == batches[0]  # resent as they were
    for request_id, event in delivered.items():
        record = records[request_id]
        assert event["specversion"] == "1.0" and event["type"] == EVENT_TYPE
        assert event["source"] == "//cloudeasyml.test" and event["subject"] == str(tenant.tenant.id)
        assert event["datacontenttype"] == "application/json" and event["time"].endswith("Z")
        data = event["data"]
        assert data["tenant"] == str(tenant.tenant.id) and data["deployment"] == deployment["id"]
        assert (data["model"], data["version"], data["kind"]) == ("tiny", "1.0.0", "online")
        assert data["items"] == record.items and data["processingMs"] == pytest.approx(record.processing_ms)
        assert isinstance(data["cost"], str) and Decimal(data["cost"]) == record.cost
        assert data["apiKey"] == record.api_key_id


async def test_a_record_written_twice_is_exported_once(migrated_url: str, tenant: NewTenant, hook: Receiver) -> None:
    records = [_record(tenant, i) for i in range(5)]
    export = _export(hook)
    async with db_session(migrated_url) as session:
        await write_usage(session, records[:3], export)
    async with db_session(migrated_url) as session:
        await write_usage(session, records, export)  # a journal replayed: three of them again
    async with db_session(migrated_url) as session:
        await write_usage(session, [_record(tenant, 9)])  # the export off: no outbox row
        events = await session.scalar(select(func.count()).select_from(WebhookEvent))
    assert events == 5 and len(await _exports(migrated_url)) == 5


async def test_the_webhook_url_guard_applies_to_the_export(
    migrated_url: str, tenant: NewTenant, hook: Receiver
) -> None:
    with pytest.raises(UnsafeAddressError, match="https"):  # http only where the operator allows it
        WebhookDispatcher(session_factory(create_engine(migrated_url)), WebhookSettings(), export=_export(hook))
    async with db_session(migrated_url) as session:
        await write_usage(session, [_record(tenant, 0)], _export(hook))
    no_loopback = WebhookSettings(allow_http=True, timeout_seconds=5.0)  # 127.0.0.1 is not on the allowlist
    async with dispatcher(migrated_url, _export(hook), Clock(), webhooks=no_loopback) as refused:
        assert await refused.run_once() == 1
    [delivery] = await _exports(migrated_url)
    assert delivery.status == "pending" and delivery.response_status is None
    assert delivery.error is not None and "127.0.0.1" in delivery.error
    assert hook.received == []  # never connected


@pytest.mark.slow
def test_an_export_refused_before_a_real_server_restarts_is_sent_by_the_next_one(
    artifact_dir: Path, tmp_path: Path
) -> None:
    import httpx

    from tests.integration.test_batch_crash import _rows
    from tests.integration.test_webhook_restart import ENV, _until
    from tests.support.server_process import export_models, serve_process

    housing = pytest.importorskip("cloudeasyml_housing")
    export_models(artifact_dir, housing.HousingModel())  # the served process loads installed models only
    with receiver(fail_first=1) as hook:
        env = {
            **ENV,
            "CLOUDEASYML_USAGE_EXPORT__URL": hook.url,
            "CLOUDEASYML_USAGE_EXPORT__AUTH_VALUE": TOKEN,
            "CLOUDEASYML_METERING__FLUSH_INTERVAL_SECONDS": "0.05",
        }
        with serve_process(artifact_dir, tmp_path, env=env) as first:
            (key,) = first.keys
            made = httpx.post(f"{first.base_url}/deployments", json={"modelName": "housing"}, headers=bearer(key))
            assert made.status_code == 201, made.text
            house = json.loads(_rows().split(b"\n")[0])["input"]
            body = {"deploymentId": made.json()["id"], "inputs": [house]}
            answer = httpx.post(f"{first.base_url}/predict", json=body, headers=bearer(key), timeout=60)
            assert answer.status_code == 200, answer.text
            _until(lambda: hook.received)  # the first attempt, refused
        assert len(hook.received) == 1  # stopped before the retry was due (4 s)
        with serve_process(artifact_dir, tmp_path, database_url=first.database_url, env=env):
            received = hook.wait_for(2)
    assert received[0].body == received[1].body and received[1].headers["authorization"] == TOKEN
    [event] = json.loads(received[1].body)
    assert event["id"] == answer.headers["x-request-id"] and event["type"] == EVENT_TYPE
