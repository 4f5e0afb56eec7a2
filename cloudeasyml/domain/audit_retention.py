"""Audit events older than the retention (``CLOUDEASYML_OPERATOR__AUDIT_RETENTION_DAYS``) are deleted.

A chore of the webhook dispatcher's periodic scan (every ``CLOUDEASYML_WEBHOOKS__SCAN_INTERVAL_SECONDS``, in each
process whose dispatcher runs), as the month close is. Zero days, the default, keeps every event. Each pass deletes
at most ``BATCH`` events per transaction, oldest first, so a first pass over years of events never holds a long lock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cloudeasyml.core.clock import utc_now
from cloudeasyml.db.models import AuditEvent

__all__ = ("AuditRetention",)

log = logging.getLogger(__name__)

BATCH = 5_000
"""Most events deleted in one transaction."""


class AuditRetention:
    """Deletes audit events older than ``days`` (0: none) when called."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], days: float, *, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self._sessions = sessions
        self._days = days
        self._clock = clock

    async def __call__(self) -> int:
        """Delete the events past the retention; how many went."""
        if self._days <= 0:
            return 0
        cutoff = self._clock() - timedelta(days=self._days)
        removed = 0
        while True:
            async with self._sessions.begin() as session:
                past = select(AuditEvent.id).where(AuditEvent.created_at < cutoff)
                ids = list(await session.scalars(past.order_by(AuditEvent.id).limit(BATCH)))
                if ids:
                    await session.execute(delete(AuditEvent).where(AuditEvent.id.in_(ids)))
            removed += len(ids)
            if len(ids) < BATCH:
                break
        if removed:
            log.info("deleted %d audit events older than %g days", removed, self._days)
        return removed
