"""The event catalog and the outbox: an event is written, with one pending delivery per endpoint that receives it,
in the transaction of the change that caused it (a change rolled back leaves no event).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Final

import msgspec
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from cloudeasyml.core.clock import utc_now
from cloudeasyml.db.models import WebhookDelivery, WebhookEndpoint, WebhookEvent

__all__ = (
    "BROADCAST",
    "EVENT_TYPES",
    "SUBSCRIBABLE",
    "deployment_data",
    "derived_event_id",
    "emit",
    "new_event_id",
    "rfc3339",
)

EVENT_TYPES: Final[Mapping[str, str]] = {
    "deployment.ready": "a deployment's model loaded for the first time (once per deployment)",
    "deployment.failed": "loading a deployment's model failed (once per deployment and error)",
    "deployment.deleted": "a deployment was deleted",
    "deployment.revision.created": "a deployment changed version, config or traffic (PATCH, rollback, promote, abort)",
    "key.revoked": "an API key was revoked (one event per key of a cascade)",
    "key.expiring": "an API key expires within 7 days (once per key and expiry)",
    "quota.warning": "the tenant used 80 % of a monthly cap (once per cap and month)",
    "quota.exceeded": "the tenant reached a monthly cap (once per cap and month)",
    "invoice.ready": "a closed month's invoice was frozen (once per tenant and month)",
    "endpoint.disabled": "one of the tenant's endpoints was disabled after failing for 5 days (sent to the others)",
    "webhook.test": "sent to one endpoint by POST /webhooks/{id}/test",
    "batch.completed": "a batch job ended (completed, cancelled or expired): its counts and output files",
    "batch.failed": "a batch job failed as a whole (its deployment or input file is gone)",
}
"""Every event type that exists, with what causes it. A new event is one line here plus the ``emit`` call in the
transaction that causes it."""

BROADCAST: Final = frozenset({"endpoint.disabled"})
"""Types that every enabled endpoint of the tenant receives, whatever its ``events``: the tenant must hear of them."""

SUBSCRIBABLE: Final = tuple(sorted(set(EVENT_TYPES) - {"webhook.test"}))
"""Types an endpoint may list in its ``events`` (``webhook.test`` goes only where a test sends it)."""

_DERIVED = uuid.UUID("5d0f3c52-7f8e-4c55-9d83-2a1b6c7e9f10")
"""Namespace of event ids derived from what the event is about."""

_encode = msgspec.json.Encoder().encode


def new_event_id() -> str:
    """A random event id (``msg_`` + 32 hex digits)."""
    return f"msg_{uuid.uuid4().hex}"


def derived_event_id(*parts: object) -> str:
    """The event id of a fact that several processes may observe (a quota crossed, a key near its expiry): the same
    parts give the same id, so the outbox keeps the first and drops the rest.
    """
    return f"msg_{uuid.uuid5(_DERIVED, '|'.join(str(part) for part in parts)).hex}"


def deployment_data(deployment_id: uuid.UUID, name: str, model_name: str, model_version: str) -> dict[str, Any]:
    """The ``data`` of the ``deployment.*`` events."""
    return {"deploymentId": str(deployment_id), "name": name, "modelName": model_name, "modelVersion": model_version}


def rfc3339(value: datetime) -> str:
    """``2026-12-02T10:15:00.123456Z``."""
    return value.isoformat().replace("+00:00", "Z")


async def emit(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    event_type: str,
    data: Mapping[str, Any],
    *,
    event_id: str | None = None,
    endpoint_id: uuid.UUID | None = None,
    exclude_endpoint: uuid.UUID | None = None,
    retry_window: timedelta = timedelta(days=1),
) -> str | None:
    """Write an event and its deliveries in ``session``'s transaction (committed or rolled back with it).

    Args:
        session: The transaction of the change that causes the event.
        tenant_id: Whose event it is; only the tenant's endpoints receive it.
        event_type: One of ``EVENT_TYPES``.
        data: The event's ``data`` (JSON-encodable, camelCase keys).
        event_id: A ``derived_event_id``: an event of that id written before (by any process) is not written
            again. None: a new random id.
        endpoint_id: Deliver to this endpoint only (``webhook.test``), whatever its ``events``.
        exclude_endpoint: Deliver to every endpoint but this one.
        retry_window: How long its deliveries are retried.

    Returns:
        The event's id; None when ``event_id`` was written already.
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    now = utc_now()
    derived = event_id is not None
    event_id = event_id or new_event_id()
    body = _encode({"id": event_id, "type": event_type, "timestamp": rfc3339(now), "data": data}).decode()
    if derived:
        insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
        written = await session.scalar(
            insert(WebhookEvent)
            .values(id=event_id, tenant_id=tenant_id, type=event_type, payload=body, created_at=now)
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(WebhookEvent.id)
        )
        if written is None:
            return None
    else:
        session.add(WebhookEvent(id=event_id, tenant_id=tenant_id, type=event_type, payload=body, created_at=now))
    query = select(WebhookEndpoint.id, WebhookEndpoint.events).where(
        WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.enabled.is_(True)
    )
    if endpoint_id is not None:
        query = query.where(WebhookEndpoint.id == endpoint_id)
    for target, events in (await session.execute(query)).all():
        wanted = endpoint_id is not None or event_type in BROADCAST or event_type in events
        if wanted and target != exclude_endpoint:
            session.add(
                WebhookDelivery(
                    tenant_id=tenant_id,
                    endpoint_id=target,
                    event_id=event_id,
                    status="pending",
                    attempts=0,
                    next_attempt_at=now,
                    retry_until=now + retry_window,
                    created_at=now,
                )
            )
    await session.flush()
    return event_id
