"""The meter: the sole writer of usage records. Records are buffered behind the response and written in
batches; ``flush`` is awaited before usage is read and when the server shuts down.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime
from decimal import Decimal

import msgspec
from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cloudeasyml.background import cancel_and_wait
from cloudeasyml.db.models import ApiKey, UsageRecord

__all__ = ("Meter", "Usage")

log = logging.getLogger(__name__)


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """One successful request's usage, priced."""

    request_id: str
    tenant_id: uuid.UUID
    api_key_id: str | None
    deployment_id: uuid.UUID
    deployment_name: str
    model_name: str
    model_version: str
    items: int
    processing_ms: float
    gpu_ms: float
    cost: Decimal
    created_at: datetime


class Meter:
    """Buffers usage and writes it in batches, idempotently (the request id is the primary key)."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], *, flush_interval: float = 0.5, batch_size: int = 1000
    ) -> None:
        self._sessions = sessions
        self._interval = flush_interval
        self._batch_size = batch_size
        self._buffer: list[Usage] = []
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    @property
    def pending(self) -> int:
        """Records not yet written."""
        return len(self._buffer)

    def record(self, usage: Usage) -> None:
        """Queue a record; it is written within ``flush_interval`` seconds."""
        self._buffer.append(usage)
        if len(self._buffer) >= self._batch_size:
            self._wake.set()

    async def start(self) -> None:
        """Start the background writer."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the writer and write whatever is left."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        await self.flush()

    async def flush(self) -> None:
        """Write every buffered record now, including those recorded while writing. On a database error the
        records stay buffered for the next try.
        """
        while self._buffer:
            await self._write_buffered()

    async def _write_buffered(self) -> None:
        """Write the records buffered at this moment (in chunks of ``batch_size``), not those that arrive
        meanwhile: under steady load the writer then wakes every ``flush_interval`` instead of writing
        continuously, a transaction per handful of rows.
        """
        async with self._lock:
            pending = len(self._buffer)
            while pending > 0:
                batch = self._buffer[: min(self._batch_size, pending)]
                await self._write(batch)
                del self._buffer[: len(batch)]
                pending -= len(batch)

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self._write_buffered()
            except Exception:  # keep metering alive through a database hiccup; records stay buffered
                log.exception("writing %d usage records failed; will retry", len(self._buffer))

    async def _write(self, batch: list[Usage]) -> None:
        rows = [msgspec.structs.asdict(usage) for usage in batch]
        last_used: dict[str, datetime] = {}
        for usage in batch:
            if usage.api_key_id is not None:
                last_used[usage.api_key_id] = max(usage.created_at, last_used.get(usage.api_key_id, usage.created_at))
        async with self._sessions() as session, session.begin():
            dialect = session.bind.dialect.name
            insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            # A Core insert of the table: the ORM's bulk path costs more per row on the event loop.
            statement = insert(UsageRecord.__table__).on_conflict_do_nothing(index_elements=["request_id"])
            await session.execute(statement, rows)
            for key_id, when in last_used.items():
                await session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=when))
