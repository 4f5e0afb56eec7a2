"""Which database errors mean "the database is unavailable right now": the one place that knows SQLAlchemy's and
the drivers' exceptions for a database that is down, locked or too slow.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from types import TracebackType

import asyncpg
from sqlalchemy import exc as sa_exc

from cloudeasyml.errors import DatabaseUnavailableError

__all__ = ("RETRY_AFTER_SECONDS", "as_unavailable")

RETRY_AFTER_SECONDS = 5
"""``Retry-After`` of a 503 caused by the database: long enough for a lock or a failover to pass."""

_DRIVER_MODULES = ("sqlalchemy.", "asyncpg", "aiosqlite")
_UNAVAILABLE = (
    sa_exc.OperationalError,  # SQLite "database is locked", "disk I/O error"; PostgreSQL connection lost
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,  # no pooled connection free in time
    sqlite3.OperationalError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,  # the server is starting up or shutting down
    asyncpg.InterfaceError,
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _raised_by_driver(tb: TracebackType | None) -> bool:
    while tb is not None:
        if tb.tb_frame.f_globals.get("__name__", "").startswith(_DRIVER_MODULES):
            return True
        tb = tb.tb_next
    return False


def as_unavailable(exc: BaseException) -> DatabaseUnavailableError | None:
    """``exc`` as a ``DatabaseUnavailableError`` if it (or an error it was raised from) says the database is down,
    locked or timing out; None for any other error (a constraint violated, a bug).

    Connection failures that drivers raise unwrapped (asyncpg's ``ConnectionRefusedError`` or ``TimeoutError``
    while connecting) count only when raised from the driver's or SQLAlchemy's code, not from anywhere.
    """
    for error in _chain(exc):
        if isinstance(error, DatabaseUnavailableError):
            return error
        if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
            return _unavailable(error)
        if isinstance(error, _UNAVAILABLE):
            return _unavailable(error)
        if isinstance(error, OSError | TimeoutError) and _raised_by_driver(error.__traceback__):
            return _unavailable(error)
    return None


def _unavailable(error: BaseException) -> DatabaseUnavailableError:
    # The driver's message may name hosts or SQL: the client gets the kind of failure only.
    unavailable = DatabaseUnavailableError(
        f"the database is unavailable ({type(error).__name__}); retry later", retry_after=RETRY_AFTER_SECONDS
    )
    unavailable.__cause__ = error  # for the log line, which may say more than the client is told
    return unavailable
