"""A tenant's webhook endpoints and their delivery logs (docs/webhooks.md)."""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.params import Body, FromPath, FromQuery
from sqlalchemy.ext.asyncio import AsyncSession

from cloudeasyml.api.auth import requires_scope
from cloudeasyml.api.deps import MANAGEMENT, WRITES, Injected
from cloudeasyml.api.webhook_schemas import (
    DeliveryList,
    DeliveryRead,
    SecretRotated,
    TestSent,
    WebhookCreate,
    WebhookCreated,
    WebhookRead,
    WebhookUpdate,
)
from cloudeasyml.db.models import WebhookEndpoint
from cloudeasyml.domain.audit import AuditTrail, created, deleted, diff
from cloudeasyml.domain.principal import Principal
from cloudeasyml.domain.webhooks.endpoints import EndpointChange, WebhookEndpointService
from cloudeasyml.services import Services

__all__ = ("WebhookController",)

_READ = [requires_scope("webhooks:read")]
_WRITE = [requires_scope("webhooks:write")]


def _unset(value: object) -> object:
    return None if value is msgspec.UNSET else value


def _audited(row: WebhookEndpoint) -> dict[str, object]:
    """What the audit log keeps of an endpoint: never its secrets."""
    return {"url": row.url, "events": list(row.events), "description": row.description, "enabled": row.enabled}


class WebhookController(Controller):
    """Create, list, read, change and delete the caller's tenant's endpoints; rotate their secrets, send test events,
    read and retry their deliveries (``webhooks`` is scoped to the caller's tenant: see ``api.deps``).
    """

    path = "/webhooks"
    tags = ["Webhooks"]
    dependencies = MANAGEMENT

    @post("/", summary="Create a webhook endpoint", guards=_WRITE, dependencies=WRITES)
    async def create_webhook(
        self,
        webhooks: Injected[WebhookEndpointService],
        caller: Injected[Principal],
        audit: Injected[AuditTrail],
        data: Annotated[WebhookCreate, Body()],
    ) -> WebhookCreated:
        """Receive the listed events at ``url``, signed per Standard Webhooks; the signing ``secret`` is in this
        response only.
        """
        row = await webhooks.create(
            data.url, data.events, description=data.description, created_by_key_id=caller.key_id
        )
        audit.record("webhook.created", "webhook", row.id, created(_audited(row)))
        return WebhookCreated(**msgspec.structs.asdict(WebhookRead.of(row)), secret=row.secret)

    @get("/", summary="List webhook endpoints", guards=_READ)
    async def list_webhooks(self, webhooks: Injected[WebhookEndpointService]) -> list[WebhookRead]:
        """The caller's tenant's endpoints, newest first; never their secrets."""
        return [WebhookRead.of(row) for row in await webhooks.list()]

    @get("/{endpoint_id:uuid}", summary="Read a webhook endpoint", guards=_READ)
    async def get_webhook(
        self, webhooks: Injected[WebhookEndpointService], endpoint_id: FromPath[uuid.UUID]
    ) -> WebhookRead:
        """One endpoint; another tenant's is a 404."""
        return WebhookRead.of(await webhooks.get(endpoint_id))

    @patch("/{endpoint_id:uuid}", summary="Change a webhook endpoint", guards=_WRITE, dependencies=WRITES)
    async def update_webhook(
        self,
        webhooks: Injected[WebhookEndpointService],
        audit: Injected[AuditTrail],
        endpoint_id: FromPath[uuid.UUID],
        data: Annotated[WebhookUpdate, Body()],
    ) -> WebhookRead:
        """Change ``url`` (checked again), ``events``, ``description`` or ``enabled``."""
        change = EndpointChange(
            url=_unset(data.url),  # type: ignore[arg-type]
            events=_unset(data.events),  # type: ignore[arg-type]
            enabled=_unset(data.enabled),  # type: ignore[arg-type]
            description=_unset(data.description),  # type: ignore[arg-type]
        )
        before = _audited(await webhooks.get(endpoint_id))
        row = await webhooks.update(endpoint_id, change)
        changes = diff(before, _audited(row))
        if changes:
            audit.record("webhook.updated", "webhook", row.id, changes)
        return WebhookRead.of(row)

    @delete("/{endpoint_id:uuid}", summary="Delete a webhook endpoint", guards=_WRITE, dependencies=WRITES)
    async def delete_webhook(
        self, webhooks: Injected[WebhookEndpointService], audit: Injected[AuditTrail], endpoint_id: FromPath[uuid.UUID]
    ) -> None:
        """Delete an endpoint and its delivery log; nothing more is sent to it."""
        before = _audited(await webhooks.get(endpoint_id))
        await webhooks.delete(endpoint_id)
        audit.record("webhook.deleted", "webhook", endpoint_id, deleted(before))

    @post(
        "/{endpoint_id:uuid}/rotate-secret",
        summary="Rotate a webhook endpoint's signing secret",
        guards=_WRITE,
        dependencies=WRITES,
        status_code=200,
    )
    async def rotate_secret(
        self, webhooks: Injected[WebhookEndpointService], audit: Injected[AuditTrail], endpoint_id: FromPath[uuid.UUID]
    ) -> SecretRotated:
        """A new secret, shown this once. For 24 h every delivery carries two signatures (the old secret's and the
        new one's), so receivers can switch without losing a message.
        """
        row = await webhooks.rotate_secret(endpoint_id)
        # That it was rotated, and until when the old one signs: never either secret.
        rotated = {"previousSecretExpiresAt": {"to": row.previous_secret_expires_at}}
        audit.record("webhook.secret_rotated", "webhook", row.id, rotated)
        assert row.previous_secret_expires_at is not None
        return SecretRotated(secret=row.secret, previous_secret_expires_at=row.previous_secret_expires_at)

    @post(
        "/{endpoint_id:uuid}/test",
        summary="Send a test event to a webhook endpoint",
        guards=_WRITE,
        dependencies=WRITES,
        status_code=202,
    )
    async def send_test(
        self,
        webhooks: Injected[WebhookEndpointService],
        db_session: Injected[AsyncSession],
        services: Injected[Services],
        audit: Injected[AuditTrail],
        endpoint_id: FromPath[uuid.UUID],
    ) -> TestSent:
        """Write a ``webhook.test`` event for this endpoint only; its delivery shows in the endpoint's deliveries."""
        event_id = await webhooks.send_test(endpoint_id)
        audit.record("webhook.test_sent", "webhook", endpoint_id, created({"eventId": event_id}))
        await db_session.commit()  # the event exists before the dispatcher is woken for it
        services.webhooks.wake()
        return TestSent(event_id=event_id)

    @get("/{endpoint_id:uuid}/deliveries", summary="List a webhook endpoint's deliveries", guards=_READ)
    async def list_deliveries(
        self,
        webhooks: Injected[WebhookEndpointService],
        endpoint_id: FromPath[uuid.UUID],
        limit: FromQuery[int] = 50,
        cursor: FromQuery[str | None] = None,
    ) -> DeliveryList:
        """The endpoint's deliveries, newest first: status, attempts, the last attempt's answer status, latency and
        first 1 KB. ``limit`` 1 to 100; ``cursor`` (from ``nextCursor``) continues.
        """
        page = await webhooks.deliveries(endpoint_id, limit=limit, cursor=cursor)
        return DeliveryList(items=[DeliveryRead.of(row) for row in page.items], next_cursor=page.next_cursor)

    @post(
        "/{endpoint_id:uuid}/deliveries/{delivery_id:uuid}/retry",
        summary="Send a delivery again",
        guards=_WRITE,
        dependencies=WRITES,
        status_code=202,
    )
    async def retry_delivery(
        self,
        webhooks: Injected[WebhookEndpointService],
        db_session: Injected[AsyncSession],
        services: Injected[Services],
        audit: Injected[AuditTrail],
        endpoint_id: FromPath[uuid.UUID],
        delivery_id: FromPath[uuid.UUID],
    ) -> DeliveryRead:
        """Attempt the delivery again now, whatever its status (failing, it is retried for another window)."""
        row = await webhooks.retry(endpoint_id, delivery_id)
        audit.record("webhook.delivery_retried", "webhook", endpoint_id, created({"deliveryId": delivery_id}))
        await db_session.commit()
        services.webhooks.wake()
        return DeliveryRead.of(row)
