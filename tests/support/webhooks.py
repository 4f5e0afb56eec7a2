"""Helpers of the webhook tests: settings that allow the loopback receiver, a dispatcher on the test's own event loop
and engine with a clock the test moves, and reads of the outbox."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from cloudeasyml.core.clock import utc_now
from cloudeasyml.db.engine import create_engine, session_factory
from cloudeasyml.db.models import WebhookDelivery, WebhookEvent
from cloudeasyml.domain.webhooks.dispatcher import WebhookDispatcher
from cloudeasyml.settings import WebhookSettings
from tests.conftest import db_session

__all__ = ("LOOPBACK", "Clock", "deliveries", "events", "own_dispatcher")

LOOPBACK = WebhookSettings(
    allow_http=True,
    allowed_networks=("127.0.0.1/32",),
    poll_interval_seconds=0.05,
    retry_base_seconds=0.2,
    retry_max_delay_seconds=1.0,
    timeout_seconds=5.0,
)
"""Deliveries to the test's receiver on 127.0.0.1 over http, polled often and retried soon."""


class Clock:
    """A scheduling clock that moves only when the test says (a minute ahead of real time at first, so that
    deliveries written in the test's first minute are due: with a second, a test that made its clock before its
    endpoints and events, on a busy machine, once found its first event not due yet)."""

    def __init__(self) -> None:
        self.now = utc_now() + timedelta(minutes=1)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@asynccontextmanager
async def own_dispatcher(
    url: str, settings: WebhookSettings = LOOPBACK, clock: Clock | None = None
) -> AsyncIterator[WebhookDispatcher]:
    """A dispatcher that the test drives (``run_once``, ``scan``), on its own engine; jitter fixed at half."""
    engine = create_engine(url)
    dispatcher = WebhookDispatcher(session_factory(engine), settings, clock=clock or Clock(), rand=lambda: 0.5)
    try:
        yield dispatcher
    finally:
        await dispatcher.stop()
        await engine.dispose()


async def events(url: str, event_type: str | None = None) -> list[dict[str, Any]]:
    """The outbox's events (decoded bodies), oldest first."""
    async with db_session(url) as session:
        query = select(WebhookEvent).order_by(WebhookEvent.created_at)
        if event_type is not None:
            query = query.where(WebhookEvent.type == event_type)
        return [json.loads(row.payload) for row in await session.scalars(query)]


async def deliveries(url: str) -> list[WebhookDelivery]:
    """Every delivery, oldest first."""
    async with db_session(url) as session:
        return list(await session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.created_at)))
