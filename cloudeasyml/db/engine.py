"""Engine and session factory for a database URL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.util.concurrency import await_only, in_greenlet

__all__ = ("create_engine", "one_transaction", "session_factory")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # busy_timeout first: it rides out short write locks (several server workers, and each process's meter, webhook
    # dispatcher and batch workers share one file).
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    _use_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _use_wal(cursor: Any) -> None:
    """WAL lets readers proceed while the meter writes. The mode is stored in the file, so only the first connection
    switches; later ones find it set. The switch needs an exclusive lock and SQLite does not call the busy handler
    for it: a connection opened while another wrote failed at once with "database is locked" (twice in CI, the
    second time with busy_timeout already set). So the switch is retried for up to the busy timeout.
    """
    deadline = time.monotonic() + 5.0
    while True:
        try:
            cursor.execute("PRAGMA journal_mode")
            if str(cursor.fetchone()[0]).lower() == "wal":
                return
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except Exception as error:  # the driver's OperationalError, wrapped by the async adapter
            if "locked" not in str(error) and "busy" not in str(error) or time.monotonic() > deadline:
                raise
            _pause(0.01)


def _pause(seconds: float) -> None:
    """Sleep without stalling the event loop: connections open inside SQLAlchemy's greenlet on the loop's thread."""
    if in_greenlet():
        await_only(asyncio.sleep(seconds))
    else:
        time.sleep(seconds)


def create_engine(url: str, *, echo: bool = False, pool_size: int = 10, connect_timeout: float = 5.0) -> AsyncEngine:
    """An async engine; SQLite gets foreign keys, WAL and a busy timeout on every connection. PostgreSQL connections
    give up after ``connect_timeout`` seconds (asyncpg's default, 60 s, would hold requests through an outage).
    """
    if url.startswith("sqlite"):
        engine = create_async_engine(url, echo=echo)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        url, echo=echo, pool_size=pool_size, pool_pre_ping=True, connect_args={"timeout": connect_timeout}
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def one_transaction(url: str) -> AsyncIterator[AsyncSession]:
    """A session in one transaction on a short-lived engine (a CLI action): committed when the block ends, rolled
    back if it raises, and the engine disposed either way.
    """
    engine = create_engine(url)
    try:
        async with session_factory(engine).begin() as session:
            yield session
    finally:
        await engine.dispose()
