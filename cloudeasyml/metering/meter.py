"""The meter: the sole writer of usage records.

``record`` appends a request's usage to this process's journal (``cloudeasyml.metering.journal``) before the
request's answer is sent; a background writer copies the journal into the database in batches and marks its
progress. A process that dies leaves its journal behind, and the next one to start replays it into the database
before serving. While the database is down the records wait in the journal, not in memory: the meter keeps at most
``batch_size`` recent records in memory (so that the writer need not read back what it has) and reads one batch
at a time back from the journal, and catches up from the journal when the database is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import msgspec
from sqlalchemy import Table, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cloudeasyml.background import cancel_and_wait
from cloudeasyml.core.clock import utc_now
from cloudeasyml.db.errors import RETRY_AFTER_SECONDS, as_unavailable
from cloudeasyml.db.models import ApiKey, UsageDaily, UsageHourly
from cloudeasyml.errors import DatabaseUnavailableError, UsageJournalError
from cloudeasyml.metering.journal import Journal, Position, orphan_tags
from cloudeasyml.metering.usage_export import write_exports
from cloudeasyml.metering.usage_insert import insert_usage
from cloudeasyml.metering.usage_record import Usage
from cloudeasyml.settings import UsageExportSettings

__all__ = ("Meter", "Usage", "write_usage")

log = logging.getLogger(__name__)

WRITE_SLICE = 50
"""Most usage rows per insert statement: the event loop makes a slice's values in one go (``usage_insert``)."""
REJECTED_FILE = "usage-rejected.jsonl"
"""Records the database refused for their content (not for being unavailable), kept in the journal directory."""


class Meter:
    """Journals usage, then writes it to the database in batches, idempotently (the request id is the key)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        journal_dir: Path,
        *,
        flush_interval: float = 0.5,
        batch_size: int = 1000,
        segment_bytes: int = 8 << 20,
        flush_timeout: float = 5.0,
        export: UsageExportSettings | None = None,
    ) -> None:
        self._sessions = sessions
        self._export = export if export is not None and export.enabled else None
        """The usage exporter's settings: each record written also goes to the outbox as a CloudEvent."""
        self._dir = journal_dir
        self._interval = flush_interval
        self._batch_size = batch_size
        self._wake_at = max(1, batch_size // 2)  # wakes the writer before the buffer is full
        self._segment_bytes = segment_bytes
        self._flush_timeout = flush_timeout
        self._journal: Journal | None = None
        self._adopted: list[Journal] = []
        self._appended = 0
        self._written = 0
        self._buffer: list[tuple[Usage, Position]] = []
        """This process's latest records, each with the journal position after it, so that the writer need not
        read back and decode what it has in memory; at most ``batch_size``."""
        self._buffer_start: Position | None = None
        """Where the first buffered record starts in the journal; None while the buffer was given up (the database
        fell behind) and the writer reads the journal back instead."""
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(list[Usage])
        self._one_decoder = msgspec.json.Decoder(Usage)
        self._lock = asyncio.Lock()
        self._queued: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    @property
    def pending(self) -> int:
        """Records this process journaled that are not in the database yet."""
        return self._appended - self._written

    def record(self, usage: Usage) -> None:
        """Append a record to the journal now (one ``write``; it survives the process from then on); it reaches the
        database within ``flush_interval`` seconds while the database is up. ``UsageJournalError`` if the journal
        cannot be written: the caller must not answer a request it cannot bill.
        """
        journal = self._journal or self._open()
        journal.append(self._encoder.encode(usage) + b"\n")
        self._appended += 1
        if self._buffer_start is not None:
            if len(self._buffer) < self._batch_size:
                self._buffer.append((usage, journal.end))
            else:  # the database is behind: memory stays flat, the writer reads the journal back when it can
                self._buffer.clear()
                self._buffer_start = None
        if self._appended - self._written >= self._wake_at:
            self._wake.set()

    async def start(self) -> None:
        """Open this process's journal, replay into the database what stopped processes left in the journal
        directory, and start the background writer. If the database cannot take the replay now, the writer
        retries it.
        """
        if self._task is None:  # fresh per start: asyncio's primitives bind to the first loop that waits on them
            self._lock = asyncio.Lock()
            self._wake = asyncio.Event()
        own = self._journal or self._open()
        for tag in orphan_tags(self._dir, exclude=own.tag):
            if (journal := Journal.adopt(self._dir, tag)) is not None:
                self._adopted.append(journal)
        if self._adopted:
            log.info("replaying the usage journals of %d stopped process(es)", len(self._adopted))
            try:
                await self._drain_soon()
            except Exception as exc:  # noqa: BLE001 - serve anyway; the journals stay and the writer retries
                log.warning("replaying usage journals failed (%r); the writer retries", exc)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the writer and write whatever is left; what the database cannot take stays in the journal for the
        next start.
        """
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        try:
            await self._drain_soon()
        except Exception as exc:  # noqa: BLE001 - shutting down: the journal keeps the records
            log.warning("%d usage records stay in the journal at %s (%r)", self.pending, self._dir, exc)
        for journal in [*self._adopted, *([self._journal] if self._journal else [])]:
            journal.close()
        self._adopted.clear()
        self._journal = None

    async def flush(self) -> None:
        """Write every record journaled until now. ``DatabaseUnavailableError`` if the database is down, locked or
        does not take them within ``flush_timeout`` (the write goes on in the background).
        """
        drain = self._drain_soon()
        try:
            async with asyncio.timeout(self._flush_timeout):
                await asyncio.shield(drain)
        except TimeoutError as exc:
            raise DatabaseUnavailableError(
                f"usage could not be written within {self._flush_timeout:g} s; retry later",
                retry_after=RETRY_AFTER_SECONDS,
            ) from exc
        except Exception as exc:
            if (unavailable := as_unavailable(exc)) is not None:
                raise unavailable from exc
            raise

    def _open(self) -> Journal:
        try:
            self._journal = Journal.create(self._dir, segment_bytes=self._segment_bytes)
        except OSError as exc:
            raise UsageJournalError(f"the usage journal cannot be opened in {self._dir}: {exc}") from exc
        self._buffer.clear()
        self._buffer_start = self._journal.end
        return self._journal

    def _drain_soon(self) -> asyncio.Future[None]:
        """A pass of the writer that starts after this call: the one already waiting for its turn, or a new one.
        So at most two passes exist at a time, however many readers flush while the database is slow.
        """
        if self._queued is None:
            self._queued = asyncio.get_running_loop().create_task(self._drain())
            self._queued.add_done_callback(_retrieve)
        return self._queued

    async def _drain(self) -> None:
        async with self._lock:
            self._queued = None  # from now on, a caller needs the next pass: this one may have read its end already
            for journal in list(self._adopted):
                await self._copy(journal)
                journal.close()
                self._adopted.remove(journal)
            if self._journal is not None:
                await self._copy_own(self._journal)

    async def _copy_own(self, journal: Journal) -> None:
        """Write this process's journal into the database up to its current end: from memory where the buffer
        holds the records, else read back from the journal.
        """
        until = journal.end
        while journal.checkpoint < until:
            if self._buffer and self._buffer_start == journal.checkpoint:
                batch = self._buffer[: self._batch_size]
                await self._write_or_reject([usage for usage, _ in batch])
                position = batch[-1][1]
                if self._buffer_start is not None:  # (unless given up meanwhile: then it is empty)
                    del self._buffer[: len(batch)]
                    self._buffer_start = position
                journal.commit(position)
                self._written += len(batch)
            elif (copied := await self._copy_batch(journal, self._read_limit(journal, until))) is None:
                break
            else:
                self._written += copied
        if self._buffer_start is None:  # caught up: buffer again from here, the journal covers what came before
            self._buffer_start = journal.end

    def _read_limit(self, journal: Journal, until: Position) -> Position:
        """How far to read the journal back: up to where the buffer starts, which is then written from memory."""
        start = self._buffer_start
        if start is not None and start < journal.checkpoint:  # not expected; a buffer behind the checkpoint is stale
            self._buffer.clear()
            self._buffer_start = start = None
        return until if start is None else min(until, start)

    async def _copy(self, journal: Journal) -> None:
        """Write ``journal`` into the database up to its current end, a batch at a time, checkpointing each."""
        until = journal.end
        while await self._copy_batch(journal, until) is not None:
            pass

    async def _copy_batch(self, journal: Journal, until: Position) -> int | None:
        """Read one batch back from the journal, write it and checkpoint it; how many records, None at ``until``."""
        lines, position = journal.read(self._batch_size, until)
        if lines:
            await self._write_or_reject(self._decode(journal, lines))
        if position == journal.checkpoint:
            return None
        journal.commit(position)
        return len(lines)

    def _decode(self, journal: Journal, lines: list[bytes]) -> list[Usage]:
        try:
            return self._decoder.decode(b"[" + b",".join(lines) + b"]")
        except msgspec.DecodeError:
            records = []
            for line in lines:
                try:
                    records.append(self._one_decoder.decode(line))
                except msgspec.DecodeError:
                    log.error("usage journal %s: skipping an unreadable line: %r", journal.tag, line[:200])
            return records

    async def _run(self) -> None:
        failing = False
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 a cancel that lands as wait_for times out can be lost,
            # and the writer then ignored the server's shutdown (seen: 3 hung shutdowns in about 30).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await asyncio.shield(self._drain_soon())
            except Exception as exc:  # noqa: BLE001 - keep metering alive through an outage; the journal keeps all
                if not failing:
                    log.warning("writing usage to the database failed (%r); records wait in the journal", exc)
                failing = True
            else:
                if failing:
                    log.warning("usage writer caught up with the journal after a database failure")
                failing = False

    async def _write_or_reject(self, batch: list[Usage]) -> None:
        """Write a batch; if the database refuses it for its content (a record of a deleted tenant, say), write
        the records one by one and set aside those it refuses, so one bad record never stops billing.
        """
        try:
            await self._write(batch)
        except (sa_exc.IntegrityError, sa_exc.DataError):
            for usage in batch:
                try:
                    await self._write([usage])
                except (sa_exc.IntegrityError, sa_exc.DataError) as exc:
                    log.error(
                        "usage record %s refused by the database (%r); kept in %s", usage.request_id, exc, REJECTED_FILE
                    )
                    with (self._dir / REJECTED_FILE).open("ab") as rejected:
                        rejected.write(self._encoder.encode(usage) + b"\n")

    async def _write(self, batch: list[Usage]) -> None:
        if not batch:
            return
        async with self._sessions() as session, session.begin():
            await write_usage(session, batch, self._export)


async def write_usage(session: AsyncSession, batch: list[Usage], export: UsageExportSettings | None = None) -> None:
    """Insert ``batch`` (records already there are skipped: the request id is the key), add the records inserted to
    the daily and hourly rollups (``UsageDaily``, ``UsageHourly``), write their CloudEvents to the outbox when
    ``export`` is given (the usage exporter's settings), and note when each key was last used, in ``session``'s
    transaction.
    """
    last_used: dict[str, datetime] = {}
    for usage in batch:
        if usage.api_key_id is not None:
            last_used[usage.api_key_id] = max(usage.created_at, last_used.get(usage.api_key_id, usage.created_at))
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    inserted: set[str] = set()
    exported: list[dict[str, Any]] = []
    # In slices of WRITE_SLICE rows, one transaction still, each slice's values made on the event loop: bounded, so
    # that a flush never holds the loop long (1,000 rows at once through SQLAlchemy held it ~5 ms, every flush: the
    # c=1 p99 of 8.6 ms against a p50 of 0.35 ms).
    for start in range(0, len(batch), WRITE_SLICE):
        rows = batch[start : start + WRITE_SLICE]
        new = await insert_usage(session, rows)
        inserted.update(new)
        if export is not None and new:  # only records inserted now: one written twice is exported once
            exported.extend(msgspec.structs.asdict(usage) for usage in rows if usage.request_id in new)
    if inserted:
        await _roll_up(session, insert, [usage for usage in batch if usage.request_id in inserted])
    if exported:
        assert export is not None  # noqa: S101 - exported only with it
        await write_exports(session, exported, export, utc_now())
    for key_id, when in last_used.items():
        await session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=when))


_ROLLUP_KEY = ("tenant_id", "deployment_id", "model_name", "model_version", "api_key_id", "kind")
_ROLLUP_SUMS = ("requests", "items", "processing_ms", "gpu_ms", "cost")
_ROLLUP_SLICE = 500
"""Most rollup rows per upsert statement (12 parameters each: well under SQLite's limit of parameters)."""


_ROLLUP_YIELD_EVERY = 256
"""Records summed between two yields to the event loop: a flush of 1,000 records summed in one go held the loop for
up to 5.8 ms (``python -m bench.loop_stalls --concurrency 1``), which requests arriving meanwhile waited for."""


def _hour(moment: datetime) -> datetime:
    if moment.tzinfo is not UTC:  # records are made in UTC; one decoded with another offset is moved to it
        moment = moment.astimezone(UTC)
    return moment.replace(minute=0, second=0, microsecond=0)


_UPSERTS: dict[tuple[str, str], Any] = {}


def _rollup_upsert(insert: Any, model: type[UsageDaily] | type[UsageHourly], column: str) -> Any:
    """The upsert of one rollup table, adding to the sums of rows already there; made once per dialect and table, so
    SQLAlchemy compiles it once (an upsert built with the rows in it was compiled afresh at every flush).
    """
    cache_key = (insert.__module__, column)
    statement = _UPSERTS.get(cache_key)
    if statement is None:
        table = cast(Table, model.__table__)
        names = ("tenant_id", column, *_ROLLUP_KEY[1:])
        inserting = insert(table)
        statement = _UPSERTS[cache_key] = inserting.on_conflict_do_update(
            index_elements=list(names),
            set_={name: table.c[name] + inserting.excluded[name] for name in _ROLLUP_SUMS},
        )
    return statement


async def _roll_up(session: AsyncSession, insert: Any, batch: list[Usage]) -> None:
    """Add newly inserted records to their days' rows of ``usage_daily`` and their hours' rows of ``usage_hourly``
    (only new ones: a record written twice counts once). Rows are upserted in key order, so two processes never lock
    the same rows in opposite orders.

    The records are summed by hour in one pass (yielding to the event loop every ``_ROLLUP_YIELD_EVERY`` records),
    and the hours' sums by day; each table then takes its rows in one executemany of a statement compiled once.
    """
    hours: dict[tuple[Any, ...], list[Any]] = {}
    for n, usage in enumerate(batch, 1):
        key = (
            usage.tenant_id,
            _hour(usage.created_at),
            usage.deployment_id,
            usage.model_name,
            usage.model_version,
            usage.api_key_id or "",
            usage.kind,
        )
        total = hours.get(key)
        if total is None:
            total = hours[key] = [0, 0, 0.0, 0.0, Decimal(0)]
        total[0] += 1
        total[1] += usage.items
        total[2] += usage.processing_ms
        total[3] += usage.gpu_ms
        total[4] += usage.cost
        if n % _ROLLUP_YIELD_EVERY == 0:
            await asyncio.sleep(0)
    days: dict[tuple[Any, ...], list[Any]] = {}
    for (tenant_id, hour, *rest), total in hours.items():
        key = (tenant_id, hour.replace(hour=0), *rest)
        day = days.get(key)
        if day is None:
            days[key] = list(total)
        else:
            for i, value in enumerate(total):
                day[i] += value
    for model, column, sums in ((UsageDaily, "day", days), (UsageHourly, "hour", hours)):
        names = ("tenant_id", column, *_ROLLUP_KEY[1:])
        values = [
            dict(zip(names, key, strict=True)) | dict(zip(_ROLLUP_SUMS, total, strict=True))
            for key, total in sorted(sums.items(), key=lambda item: tuple(str(part) for part in item[0]))
        ]
        for start in range(0, len(values), _ROLLUP_SLICE):
            await session.execute(_rollup_upsert(insert, model, column), values[start : start + _ROLLUP_SLICE])


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark a writer pass's failure as seen: its awaiters (if any) report it; nobody needs a second log line."""
    if not task.cancelled():
        task.exception()
