"""The outcome recorder: what each version of a deployment with several routes answered, written behind the answers.

``record`` only appends the outcome to a bounded list in memory (it runs in the data plane, on the event loop, for
every request of a split or a shadow); a background writer turns a batch of them into rows (predictions cut to
``max_items`` and ``max_output_bytes`` as JSON) and inserts it in one transaction every ``flush_interval``. It also
deletes outcomes and feedback past the retention period.

Unlike usage (``cloudeasyml.metering.meter``), outcomes are not journaled: a process that crashes loses the outcomes
it had not written yet. An experiment's statistics lose a few samples; nobody loses money.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, cast

import msgspec
import numpy as np
from sqlalchemy import Table, delete
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cloudeasyml.background import cancel_and_wait
from cloudeasyml.core.clock import utc_now
from cloudeasyml.db.models import Feedback, Outcome
from cloudeasyml.settings import OutcomeSettings

__all__ = ("OutcomeRecord", "OutcomeRecorder", "bounded_outputs")

log = logging.getLogger(__name__)


class OutcomeRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One run of one version on one request, as the data plane saw it."""

    request_id: str
    tenant_id: uuid.UUID
    deployment_id: uuid.UUID
    model_version: str
    variant: str | None
    mode: str
    shadow_of: str | None
    items: int
    outputs: list[Any] | None
    """The run's predictions (a prefix of at most ``max_items``; V2 runs: ``[{name: array}]``); None if it failed."""
    latency_ms: float
    error: str | None
    created_at: datetime


def _item_builtins(item: Any) -> Any:
    if isinstance(item, np.ndarray):
        return item.tolist()
    if isinstance(item, np.generic):
        return item.item()
    return msgspec.to_builtins(item)


def _is_tensors(outputs: list[Any]) -> bool:
    """Whether ``outputs`` are a raw-tensor run's (``[{name: array}]``, the V2 path), not per-item predictions."""
    return (
        len(outputs) == 1
        and isinstance(outputs[0], Mapping)
        and all(isinstance(value, np.ndarray) for value in outputs[0].values())
    )


def _prefix(outputs: list[Any], max_items: int) -> list[Any]:
    """The first ``max_items`` items of ``outputs``, copied out of a raw-tensor run's arrays (so that a queued outcome
    holds no more than that of the request's memory).
    """
    if _is_tensors(outputs):
        return [{name: np.array(array[:max_items]) for name, array in outputs[0].items()}]
    return outputs[:max_items]


def _items(outputs: list[Any], max_items: int) -> list[Any]:
    """Per-item plain JSON values: a plugin's predictions as is; raw tensors (``[{name: array}]``, the V2 path) split
    along their batch axis into one ``{name: row}`` per item.
    """
    if _is_tensors(outputs):
        tensors = cast(Mapping[str, np.ndarray], outputs[0])
        rows = min((len(array) for array in tensors.values() if array.ndim), default=0)
        rows = min(rows, max_items)
        return [{name: _item_builtins(array[i]) for name, array in tensors.items()} for i in range(rows)]
    return [_item_builtins(item) for item in outputs[:max_items]]


def bounded_outputs(outputs: list[Any] | None, max_items: int, max_bytes: int) -> list[Any] | None:
    """The first predictions of ``outputs`` as plain JSON values, as many as fit in ``max_items`` and ``max_bytes`` of
    JSON (an item is kept whole or not at all); None for a failed run.
    """
    if outputs is None:
        return None
    kept: list[Any] = []
    size = 2
    for item in _items(outputs, max_items):
        size += len(msgspec.json.encode(item)) + 1
        if size > max_bytes:
            break
        kept.append(item)
    return kept


class OutcomeRecorder:
    """Buffers outcomes in memory and writes them in batches; purges old outcomes and feedback."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: OutcomeSettings | None = None) -> None:
        self._sessions = sessions
        self._settings = settings if settings is not None else OutcomeSettings()
        self._pending: list[OutcomeRecord] = []
        self._dropped = 0
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._last_purge = 0.0

    @property
    def settings(self) -> OutcomeSettings:
        """The recorder's settings (retention, bounds)."""
        return self._settings

    @property
    def pending(self) -> int:
        """Outcomes waiting in memory for the writer."""
        return len(self._pending)

    @property
    def dropped(self) -> int:
        """Outcomes dropped since start because ``max_pending`` were already waiting."""
        return self._dropped

    def record(self, outcome: OutcomeRecord) -> None:
        """Queue an outcome for the writer (cheap: an append); dropped, and counted, past ``max_pending``."""
        if len(self._pending) >= self._settings.max_pending:
            if self._dropped == 0:
                log.warning("outcomes are dropped: %d wait for the database already", len(self._pending))
            self._dropped += 1
            return
        if outcome.outputs is not None:
            outcome = msgspec.structs.replace(outcome, outputs=_prefix(outcome.outputs, self._settings.max_items))
        self._pending.append(outcome)
        if len(self._pending) >= self._settings.batch_size:
            self._wake.set()

    async def start(self) -> None:
        """Start the background writer."""
        if self._task is None:
            # Fresh per start: asyncio's primitives bind to the first loop that waits on them (an app served twice).
            self._wake = asyncio.Event()
            self._lock = asyncio.Lock()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the writer and write what is pending (what the database refuses now is lost)."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        try:
            await self.flush()
        except Exception as exc:  # noqa: BLE001 - shutting down; outcomes are not worth failing the shutdown for
            log.warning("%d outcomes were not written at shutdown (%r)", len(self._pending), exc)

    async def flush(self) -> None:
        """Write every outcome recorded until now (a report or a feedback lookup calls it to see them)."""
        async with self._lock:
            while self._pending:
                batch = self._pending[: self._settings.batch_size]
                await self._write(batch)
                del self._pending[: len(batch)]

    async def purge(self, now: datetime | None = None) -> int:
        """Delete outcomes and feedback older than ``retention_days``; returns how many outcomes went."""
        cutoff = (now or utc_now()) - timedelta(days=self._settings.retention_days)
        async with self._sessions() as session, session.begin():
            result = await session.execute(delete(Outcome).where(Outcome.created_at < cutoff))
            await session.execute(delete(Feedback).where(Feedback.created_at < cutoff))
        return int(getattr(result, "rowcount", 0) or 0)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        failing = False
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.flush_interval_seconds):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
                if loop.time() - self._last_purge >= self._settings.purge_interval_seconds:
                    self._last_purge = loop.time()
                    await self.purge()
            except Exception as exc:  # noqa: BLE001 - keep recording through an outage; past max_pending, drop
                if not failing:
                    log.warning("writing outcomes failed (%r); they wait in memory", exc)
                failing = True
            else:
                failing = False

    def _row(self, outcome: OutcomeRecord) -> dict[str, Any]:
        row = msgspec.structs.asdict(outcome)
        row["outputs"] = bounded_outputs(outcome.outputs, self._settings.max_items, self._settings.max_output_bytes)
        return row

    async def _write(self, batch: list[OutcomeRecord]) -> None:
        """Insert a batch; if the database refuses it for its content (the outcome of a tenant deleted meanwhile),
        insert the outcomes one by one and drop those it refuses, so that one never blocks the others.
        """
        rows = [self._row(outcome) for outcome in batch]
        try:
            await self._insert(rows)
        except (sa_exc.IntegrityError, sa_exc.DataError):
            for row in rows:
                try:
                    await self._insert([row])
                except (sa_exc.IntegrityError, sa_exc.DataError) as exc:
                    log.warning("outcome %s refused by the database (%r); dropped", row["request_id"], exc)

    async def _insert(self, rows: list[dict[str, Any]]) -> None:
        async with self._sessions() as session, session.begin():
            dialect = session.get_bind().dialect.name
            insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            table = cast(Table, Outcome.__table__)
            # A request's outcome is written once; a retried batch (after a failure mid-way) is harmless.
            await session.execute(insert(table).on_conflict_do_nothing(index_elements=["request_id"]), rows)
