"""A tenant's webhook endpoints and their delivery log. Every query filters on ``tenant_id``."""

from __future__ import annotations

import base64
import builtins
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

import msgspec
from sqlalchemy import func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from cloudeasyml.core.clock import utc_now
from cloudeasyml.db.models import WebhookDelivery, WebhookEndpoint
from cloudeasyml.domain.webhooks.events import SUBSCRIBABLE, emit
from cloudeasyml.domain.webhooks.signing import new_secret
from cloudeasyml.domain.webhooks.url_guard import UrlGuard
from cloudeasyml.errors import ConflictError, InvalidInputError, NotFoundError, TenantLimitReachedError
from cloudeasyml.settings import WebhookSettings

__all__ = ("ROTATION_OVERLAP", "DeliveryPage", "EndpointChange", "WebhookEndpointService")

ROTATION_OVERLAP = timedelta(hours=24)
"""How long the secret before a rotation still signs (next to the new one)."""

MAX_PAGE = 100


class EndpointChange(msgspec.Struct, frozen=True, kw_only=True):
    """A PATCH: fields left None stay as they are."""

    url: str | None = None
    events: Sequence[str] | None = None
    enabled: bool | None = None
    description: str | None = None


class DeliveryPage(msgspec.Struct, frozen=True):
    """Deliveries, newest first, and the cursor of the next (older) page (None: this is the last)."""

    items: list[WebhookDelivery]
    next_cursor: str | None


def _events(events: Sequence[str]) -> list[str]:
    chosen = sorted(set(events))
    if not chosen:
        raise InvalidInputError("events must name at least one event type - at `$.events`")
    unknown = [event for event in chosen if event not in SUBSCRIBABLE]
    if unknown:
        raise InvalidInputError(
            f"unknown event type(s) {', '.join(unknown)}; known: {', '.join(SUBSCRIBABLE)} - at `$.events`"
        )
    return chosen


def _cursor(row: WebhookDelivery) -> str:
    return base64.urlsafe_b64encode(f"{row.created_at.isoformat()}|{row.id}".encode()).decode()


def _parse_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        created_at, delivery_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(created_at), uuid.UUID(delivery_id)
    except ValueError:
        raise InvalidInputError("cursor is not one this API gave - at `cursor`") from None


class WebhookEndpointService:
    """One tenant's endpoints (``guard`` checks their URLs; ``settings`` bound how many and how deliveries retry)."""

    def __init__(self, session: AsyncSession, tenant_id: uuid.UUID, guard: UrlGuard, settings: WebhookSettings) -> None:
        self._session = session
        self._tenant_id = tenant_id
        self._guard = guard
        self._settings = settings

    async def create(
        self, url: str, events: Sequence[str], *, description: str = "", created_by_key_id: str | None = None
    ) -> WebhookEndpoint:
        """A new enabled endpoint with a fresh secret; its URL must pass the guard (``InvalidInputError``) and the
        tenant must have room (``TenantLimitReachedError``, 409).
        """
        chosen = _events(events)
        await self._guard.check(url)
        most = self._settings.max_endpoints
        if most:
            count = await self._session.scalar(
                select(func.count()).select_from(WebhookEndpoint).where(WebhookEndpoint.tenant_id == self._tenant_id)
            )
            if (count or 0) >= most:
                raise TenantLimitReachedError(f"the tenant has {count} webhook endpoints, the most allowed; delete one")
        now = utc_now()
        row = WebhookEndpoint(
            tenant_id=self._tenant_id,
            url=url,
            description=description,
            events=chosen,
            enabled=True,
            secret=new_secret(),
            created_by_key_id=created_by_key_id,
            created_at=now,
            updated_at=now,
        )
        self._session.add(row)
        await self._session.flush()
        return row

    async def list(self) -> list[WebhookEndpoint]:
        """The tenant's endpoints, newest first."""
        result = await self._session.scalars(
            select(WebhookEndpoint)
            .where(WebhookEndpoint.tenant_id == self._tenant_id)
            .order_by(WebhookEndpoint.created_at.desc(), WebhookEndpoint.id)
        )
        return builtins.list(result)

    async def get(self, endpoint_id: uuid.UUID) -> WebhookEndpoint:
        """One of the tenant's endpoints; another tenant's is reported as not found."""
        row = await self._session.scalar(
            select(WebhookEndpoint).where(
                WebhookEndpoint.tenant_id == self._tenant_id, WebhookEndpoint.id == endpoint_id
            )
        )
        if row is None:
            raise NotFoundError(f"webhook endpoint {endpoint_id} not found")
        return row

    async def update(self, endpoint_id: uuid.UUID, change: EndpointChange) -> WebhookEndpoint:
        """Apply a PATCH. A new URL passes the guard again; enabling clears the platform's reason for disabling and
        the failure window (the endpoint gets five more days).
        """
        row = await self.get(endpoint_id)
        if change.url is not None and change.url != row.url:
            await self._guard.check(change.url)
            row.url = change.url
        if change.events is not None:
            row.events = _events(change.events)
        if change.description is not None:
            row.description = change.description
        if change.enabled is not None:
            if change.enabled and not row.enabled:
                row.disabled_reason = None
                row.failing_since = None
            row.enabled = change.enabled
        row.updated_at = utc_now()
        await self._session.flush()
        return row

    async def delete(self, endpoint_id: uuid.UUID) -> None:
        """Delete an endpoint with its delivery log."""
        row = await self.get(endpoint_id)
        await self._session.delete(row)
        await self._session.flush()

    async def rotate_secret(self, endpoint_id: uuid.UUID) -> WebhookEndpoint:
        """A new secret; the current one keeps signing (next to it) for ``ROTATION_OVERLAP``. Rotating again within
        the overlap retires the oldest at once: two secrets sign at most.
        """
        row = await self.get(endpoint_id)
        now = utc_now()
        row.previous_secret = row.secret
        row.previous_secret_expires_at = now + ROTATION_OVERLAP
        row.secret = new_secret()
        row.updated_at = now
        await self._session.flush()
        return row

    async def send_test(self, endpoint_id: uuid.UUID) -> str:
        """Write a ``webhook.test`` event to this endpoint only; returns the event id."""
        row = await self.get(endpoint_id)
        if not row.enabled:
            raise ConflictError(f"webhook endpoint {endpoint_id} is disabled; enable it first")
        event_id = await emit(
            self._session,
            self._tenant_id,
            "webhook.test",
            {"endpointId": str(row.id), "message": "a test event from POST /webhooks/{id}/test"},
            endpoint_id=row.id,
            retry_window=timedelta(seconds=self._settings.retry_window_seconds),
        )
        assert event_id is not None
        return event_id

    async def deliveries(self, endpoint_id: uuid.UUID, *, limit: int = 50, cursor: str | None = None) -> DeliveryPage:
        """The endpoint's deliveries, newest first, ``limit`` (1 to 100) a page; ``cursor`` continues a listing."""
        await self.get(endpoint_id)
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInputError(f"limit must be between 1 and {MAX_PAGE} - at `limit`")
        query = select(WebhookDelivery).where(
            WebhookDelivery.tenant_id == self._tenant_id, WebhookDelivery.endpoint_id == endpoint_id
        )
        if cursor is not None:
            created_at, delivery_id = _parse_cursor(cursor)
            query = query.where(tuple_(WebhookDelivery.created_at, WebhookDelivery.id) < (created_at, delivery_id))
        rows = builtins.list(
            await self._session.scalars(
                query.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc()).limit(limit + 1)
            )
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return DeliveryPage(items=rows, next_cursor=_cursor(rows[-1]) if more else None)

    async def delivery(self, endpoint_id: uuid.UUID, delivery_id: uuid.UUID) -> WebhookDelivery:
        """One delivery of one of the tenant's endpoints."""
        row = await self._session.scalar(
            select(WebhookDelivery).where(
                WebhookDelivery.tenant_id == self._tenant_id,
                WebhookDelivery.endpoint_id == endpoint_id,
                WebhookDelivery.id == delivery_id,
            )
        )
        if row is None:
            raise NotFoundError(f"delivery {delivery_id} not found")
        return row

    async def retry(self, endpoint_id: uuid.UUID, delivery_id: uuid.UUID) -> WebhookDelivery:
        """Send a delivery again now (whatever its status), retried for a new window if this attempt fails."""
        row = await self.delivery(endpoint_id, delivery_id)
        now = utc_now()
        row.status = "pending"
        row.next_attempt_at = now
        row.retry_until = now + timedelta(seconds=self._settings.retry_window_seconds)
        await self._session.flush()
        return row
