"""The usage exporter: the dispatcher's part that POSTs the outbox's usage CloudEvents to the operator's endpoint.

The meter writes each usage record's CloudEvent to the outbox with a delivery that has no endpoint, in the
transaction that writes the record (``cloudeasyml.metering.usage_export``). Each round of the dispatcher, this claims
up to ``batch_size`` of those deliveries that are due (``FOR UPDATE SKIP LOCKED`` on PostgreSQL and a conditional
update on both, as the webhook claims), POSTs them as one ``application/cloudevents-batch+json`` array with the
configured auth header, and records the outcome on each: a 2xx completes them; anything else is retried with the
webhooks' backoff and jitter until the export's retry window has passed. Connections go through the dispatcher's
guarded client (the webhook URL guard checks every address), redirects are not followed, only the answer's first
1 KB is read.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cloudeasyml.db.models import WebhookDelivery, WebhookEvent
from cloudeasyml.domain.webhooks.url_guard import UnsafeAddressError, UrlGuard
from cloudeasyml.metering.usage_export import CONTENT_TYPE
from cloudeasyml.settings import UsageExportSettings, WebhookSettings

__all__ = ("UsageExporter",)

log = logging.getLogger(__name__)

_USER_AGENT = "CloudEasyML-UsageExport/1"


class UsageExporter:
    """Delivers the outbox's usage exports in batches (see the module's docstring)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        webhooks: WebhookSettings,
        export: UsageExportSettings,
        *,
        client: httpx.AsyncClient,
        guard: UrlGuard,
        clock: Callable[[], datetime],
        rand: Callable[[], float],
        retry_delay: Callable[[int, WebhookSettings, float], float],
        read_answer: Callable[[httpx.Response], Awaitable[str]],
    ) -> None:
        """``client``, ``guard``, ``clock``, ``rand``, ``retry_delay`` and ``read_answer`` are the dispatcher's, so that
        exports and webhooks connect, wait and retry alike.
        """
        guard.check_form(export.url)  # a URL the guard refuses stops the server at start, not every attempt
        self._sessions = sessions
        self._webhooks = webhooks
        self._export = export
        self._client = client
        self._guard = guard
        self._clock = clock
        self._rand = rand
        self._retry_delay = retry_delay
        self._read_answer = read_answer
        self._headers = {"content-type": CONTENT_TYPE, "user-agent": _USER_AGENT}
        if export.auth_value:
            self._headers[export.auth_header.lower()] = export.auth_value
        self._warned_at = -math.inf

    async def run_once(self) -> int:
        """Claim one batch of due exports, POST it and record the outcome; returns how many records it held."""
        claimed = await self._claim()
        if claimed:
            await self._send(claimed)
        return len(claimed)

    async def _claim(self) -> list[tuple[uuid.UUID, str]]:
        now = self._clock()
        lease = now + timedelta(seconds=self._webhooks.timeout_seconds + 60)
        due = (
            WebhookDelivery.endpoint_id.is_(None),
            WebhookDelivery.status == "pending",
            WebhookDelivery.next_attempt_at <= now,
        )
        async with self._sessions.begin() as session:
            query = (
                select(WebhookDelivery.id)
                .where(*due)
                .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.created_at)
                .limit(self._export.batch_size)
            )
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            candidates = list(await session.scalars(query))
            if not candidates:
                return []
            # Conditional: on SQLite (no row locks) another process may have claimed some since the SELECT.
            claimed = list(
                await session.scalars(
                    update(WebhookDelivery)
                    .where(WebhookDelivery.id.in_(candidates), *due)
                    .values(next_attempt_at=lease)
                    .returning(WebhookDelivery.id)
                    .execution_options(synchronize_session=False)
                )
            )
            if not claimed:
                return []
            rows = await session.execute(
                select(WebhookDelivery.id, WebhookEvent.payload)
                .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
                .where(WebhookDelivery.id.in_(claimed))
                .order_by(WebhookEvent.created_at, WebhookEvent.id)
            )
            return [(delivery_id, payload) for delivery_id, payload in rows.all()]

    async def _send(self, claimed: list[tuple[uuid.UUID, str]]) -> None:
        body = ("[" + ",".join(payload for _, payload in claimed) + "]").encode()
        started = time.perf_counter()
        status: int | None = None
        answer: str | None = None
        error: str | None = None
        try:
            self._guard.check_form(self._export.url)
            url, headers = self._export.url, self._headers
            async with asyncio.timeout(self._webhooks.timeout_seconds):
                async with self._client.stream("POST", url, content=body, headers=headers) as response:
                    status = response.status_code
                    answer = await self._read_answer(response)
        except TimeoutError:
            error = f"no answer within {self._webhooks.timeout_seconds:g} s"
        except UnsafeAddressError as exc:
            error = str(exc).removesuffix(" - at `$.url`")
        except Exception as exc:  # noqa: BLE001 - whatever went wrong is the attempt's outcome, not the loop's
            error = f"{type(exc).__name__}: {exc}".rstrip(": ")
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        succeeded = status is not None and 200 <= status < 300
        if not succeeded and time.monotonic() - self._warned_at >= 60:
            self._warned_at = time.monotonic()
            log.warning("exporting %d usage records failed (%s); retried", len(claimed), error or f"HTTP {status}")
        try:
            await self._record([delivery_id for delivery_id, _ in claimed], status, answer, error, latency_ms)
        except Exception:  # noqa: BLE001 - the claims lapse and the batch is sent again
            log.exception("recording a usage export attempt failed")

    async def _record(
        self, ids: list[uuid.UUID], status: int | None, answer: str | None, error: str | None, latency_ms: float
    ) -> None:
        now = self._clock()
        succeeded = status is not None and 200 <= status < 300
        async with self._sessions.begin() as session:
            for delivery in await session.scalars(select(WebhookDelivery).where(WebhookDelivery.id.in_(ids))):
                delivery.attempts += 1
                delivery.last_attempt_at = now
                delivery.response_status = status
                delivery.response_body = answer
                delivery.error = error[:500] if error else None
                delivery.latency_ms = latency_ms
                if succeeded:
                    delivery.status = "succeeded"
                    continue
                wait = self._retry_delay(delivery.attempts, self._webhooks, self._rand())
                next_at = now + timedelta(seconds=wait)
                if next_at > delivery.retry_until:
                    delivery.status = "failed"
                else:
                    delivery.next_attempt_at = next_at
