"""Usage records inserted in the driver's own SQL, with each value already in the form the column stores.

The meter writes every billed request's record from the event loop, so what a record costs there is paid by every
request the server answers. Through SQLAlchemy's compiled ``INSERT`` a record cost about 50 µs of the loop's CPU:
``usage_record`` has four typed columns (two UUIDs, a UTC datetime, scaled money), each through its type's bind
processors per row (``python -m bench.usage_write``); at 3,000 predictions a second, a sixth of the loop.

Here a row is one tuple made by ``_sqlite_row`` or ``_postgres_row`` (the values SQLAlchemy's types would bind: on
SQLite, UUIDs as 32 hex digits and datetimes as ``YYYY-MM-DD HH:MM:SS.ffffff`` text in UTC; on PostgreSQL, both
native; money as the scaled integer of ``Money``), and each slice of rows is one ``INSERT ... ON CONFLICT DO
NOTHING RETURNING`` through ``exec_driver_sql``, so nothing is compiled or processed per row.
``tests/integration/test_usage_insert.py`` checks that the rows stored are the ones SQLAlchemy's own insert stores,
column by column, on both databases.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cloudeasyml.db.types import as_utc, to_scaled
from cloudeasyml.metering.usage_record import Usage

__all__ = ("COLUMNS", "insert_usage")

COLUMNS = (
    "request_id",
    "tenant_id",
    "api_key_id",
    "deployment_id",
    "deployment_name",
    "model_name",
    "model_version",
    "items",
    "processing_ms",
    "gpu_ms",
    "cost",
    "created_at",
    "kind",
)
"""``usage_record``'s columns, in the order of a row's values."""


def _row(
    usage: Usage, stored_uuid: Callable[[uuid.UUID], Any], stored_time: Callable[[datetime], Any]
) -> tuple[Any, ...]:
    """A record's values in ``COLUMNS`` order, its UUIDs and its time as the database stores them."""
    return (
        usage.request_id,
        stored_uuid(usage.tenant_id),
        usage.api_key_id,
        stored_uuid(usage.deployment_id),
        usage.deployment_name,
        usage.model_name,
        usage.model_version,
        usage.items,
        usage.processing_ms,
        usage.gpu_ms,
        to_scaled(usage.cost),
        stored_time(as_utc(usage.created_at)),
        usage.kind,
    )


def _sqlite_uuid(value: uuid.UUID) -> str:
    return f"{value.int:032x}"  # UUID.hex, without its property call


def _sqlite_time(value: datetime) -> str:
    return value.isoformat(" ", "microseconds")[:26]  # naive text: the "+00:00" of UTC cut off


def _native(value: Any) -> Any:
    return value


def _sqlite_row(usage: Usage) -> tuple[Any, ...]:
    return _row(usage, _sqlite_uuid, _sqlite_time)


def _postgres_row(usage: Usage) -> tuple[Any, ...]:
    return _row(usage, _native, _native)


_ROWS: dict[str, Callable[[Usage], tuple[Any, ...]]] = {"sqlite": _sqlite_row, "postgresql": _postgres_row}


@cache
def _statement(dialect: str, rows: int) -> str:
    """The insert of ``rows`` rows in the driver's parameter style (``?`` for sqlite3, ``$n`` for asyncpg)."""
    width = len(COLUMNS)
    if dialect == "postgresql":
        groups = (
            "(" + ", ".join(f"${row * width + column + 1}" for column in range(width)) + ")" for row in range(rows)
        )
    else:
        groups = ("(" + ", ".join("?" * width) + ")" for _ in range(rows))
    return (
        f"INSERT INTO usage_record ({', '.join(COLUMNS)}) VALUES {', '.join(groups)} "
        "ON CONFLICT (request_id) DO NOTHING RETURNING request_id"
    )


async def insert_usage(session: AsyncSession, batch: list[Usage]) -> set[str]:
    """Insert ``batch`` in ``session``'s transaction, skipping records already there; the request ids inserted."""
    if not batch:
        return set()
    dialect = session.get_bind().dialect.name
    try:
        row = _ROWS[dialect]
    except KeyError:
        raise NotImplementedError(f"usage records on {dialect!r}") from None
    values = [value for usage in batch for value in row(usage)]
    connection = await session.connection()
    result = await connection.exec_driver_sql(_statement(dialect, len(batch)), tuple(values))
    return {request_id for (request_id,) in result.fetchall()}
