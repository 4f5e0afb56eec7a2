"""Wire schemas of ``/webhooks`` (camelCase JSON)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from cloudeasyml.db.models import WebhookDelivery, WebhookEndpoint

__all__ = (
    "DeliveryList",
    "DeliveryRead",
    "SecretRotated",
    "TestSent",
    "WebhookCreate",
    "WebhookCreated",
    "WebhookRead",
    "WebhookUpdate",
)

Url = Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
Events = Annotated[list[Annotated[str, msgspec.Meta(max_length=64)]], msgspec.Meta(min_length=1, max_length=50)]
Description = Annotated[str, msgspec.Meta(max_length=500)]


class _Wire(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    pass


class WebhookCreate(_Wire):
    """Body of ``POST /webhooks``."""

    url: Url
    """https (http only if the operator allows it); its host must resolve to public addresses."""
    events: Events
    """The event types to receive (docs/webhooks.md lists them)."""
    description: Description = ""


class WebhookUpdate(_Wire):
    """Body of ``PATCH /webhooks/{id}``: fields left out stay as they are."""

    url: Url | msgspec.UnsetType = msgspec.UNSET
    events: Events | msgspec.UnsetType = msgspec.UNSET
    enabled: bool | msgspec.UnsetType = msgspec.UNSET
    """``true`` re-enables an endpoint the platform disabled, with five more days before it may be disabled again."""
    description: Description | msgspec.UnsetType = msgspec.UNSET


class WebhookRead(_Wire):
    """An endpoint as listed: never its secret."""

    id: uuid.UUID
    url: str
    description: str
    events: list[str]
    enabled: bool
    disabled_reason: str | None
    """Why the platform disabled it (null: enabled, or disabled through the API)."""
    failing_since: datetime | None
    """Its first failed attempt since the last successful one (null: the last attempt succeeded)."""
    previous_secret_expires_at: datetime | None
    """Until when the secret before the last rotation still signs (null: no rotation in the last 24 h)."""
    created_by_key_id: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: WebhookEndpoint) -> WebhookRead:
        """The wire view of a row."""
        return cls(
            id=row.id,
            url=row.url,
            description=row.description,
            events=list(row.events),
            enabled=row.enabled,
            disabled_reason=row.disabled_reason,
            failing_since=row.failing_since,
            previous_secret_expires_at=row.previous_secret_expires_at,
            created_by_key_id=row.created_by_key_id,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class WebhookCreated(WebhookRead):
    """A new endpoint, with its signing ``secret`` shown this once."""

    secret: str
    """``whsec_`` + base64: give it to a Standard Webhooks verifier."""


class SecretRotated(_Wire):
    """A rotated secret, shown this once; the previous one signs too until ``previousSecretExpiresAt``."""

    secret: str
    previous_secret_expires_at: datetime


class TestSent(_Wire):
    """A ``webhook.test`` event written for delivery to one endpoint."""

    event_id: str


class DeliveryRead(_Wire):
    """One event's delivery to one endpoint: its attempts so far and the last one's outcome."""

    id: uuid.UUID
    event_id: str
    status: str
    """``pending``, ``succeeded`` or ``failed`` (retries given up)."""
    attempts: int
    next_attempt_at: datetime | None
    """When the next attempt is due (pending only)."""
    last_attempt_at: datetime | None
    response_status: int | None
    latency_ms: float | None
    response_body: str | None
    """The first 1 KB of the last answer."""
    error: str | None
    """Why the last attempt got no answer (a refused address, a timeout, ...)."""
    created_at: datetime

    @classmethod
    def of(cls, row: WebhookDelivery) -> DeliveryRead:
        """The wire view of a row."""
        return cls(
            id=row.id,
            event_id=row.event_id,
            status=row.status,
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at if row.status == "pending" else None,
            last_attempt_at=row.last_attempt_at,
            response_status=row.response_status,
            latency_ms=row.latency_ms,
            response_body=row.response_body,
            error=row.error,
            created_at=row.created_at,
        )


class DeliveryList(_Wire):
    """A page of deliveries, newest first."""

    items: list[DeliveryRead]
    next_cursor: str | None
    """Pass as ``cursor`` for the next (older) page; null on the last."""
