"""Usage summed over a period, fast however many records there are: whole UTC days come from the daily rollup
(``usage_daily``, kept current by the meter), the partial days at either end from the records themselves; sums by
hour come the same way from the hourly rollup (``usage_hourly``), whole hours from it, partial ones from records.

The default ``GET /usage`` (this month until now) and a month's invoice thus read at most a month of rollup rows
plus today's records, instead of every record of the month.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final, Literal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from cloudeasyml.db.models import UsageDaily, UsageHourly, UsageRecord

__all__ = ("KEYS", "Sums", "month_of_day", "summed")

KEYS: Final = ("model_name", "model_version", "deployment_id", "api_key_id", "kind", "day", "hour")
"""What sums may be keyed by: the rollups' columns, and the UTC day (``2026-12-01``) or hour (``2026-12-01T13:00``)
as text; ``hour`` only with ``unit="hour"``."""

_PATTERNS: Final = {
    "day": ("%Y-%m-%d", "YYYY-MM-DD"),
    "hour": ("%Y-%m-%dT%H:00", 'YYYY-MM-DD"T"HH24:00'),
}
"""The text of a day and an hour: SQLite's ``strftime`` format, PostgreSQL's ``to_char`` pattern."""

Sums = list[Any]
"""``[requests, items, cost, processing_ms, gpu_ms]``."""


def _as_text(name: str, moment: Any, dialect: str) -> Any:
    """``moment`` (a UTC timestamp column) as the text of its day or hour, in the database."""
    sqlite_format, postgres_pattern = _PATTERNS[name]
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", moment), postgres_pattern)
    return func.strftime(sqlite_format, moment)


def _record_column(name: str, dialect: str) -> Any:
    if name == "api_key_id":
        return func.coalesce(UsageRecord.api_key_id, "")
    if name in _PATTERNS:
        return _as_text(name, UsageRecord.created_at, dialect)
    return getattr(UsageRecord, name)


def _next_boundary(value: datetime, unit: str) -> datetime:
    start = _floor(value, unit)
    return start if start == value else start + (timedelta(days=1) if unit == "day" else timedelta(hours=1))


def _floor(value: datetime, unit: str) -> datetime:
    value = value.replace(minute=0, second=0, microsecond=0)
    return value.replace(hour=0) if unit == "day" else value


async def summed(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    start: datetime,
    end: datetime,
    keys: Sequence[str],
    *,
    unit: Literal["day", "hour"] = "day",
) -> dict[tuple[Any, ...], Sums]:
    """The tenant's usage in ``[start, end)`` (aware UTC bounds) summed per distinct value of ``keys`` (names from
    ``KEYS``): ``{key values: [requests, items, cost, processing_ms, gpu_ms]}``; costs exact. Whole ``unit``s of the
    period come from that unit's rollup, the partial ones at either end from the records.
    """
    dialect = session.get_bind().dialect.name
    rollup: Any = UsageDaily if unit == "day" else UsageHourly
    moment = UsageDaily.day if unit == "day" else UsageHourly.hour
    first = _next_boundary(start, unit)
    last = _floor(end, unit)
    out: dict[tuple[Any, ...], Sums] = {}
    raw_ranges = [(start, end)]
    if first < last:
        raw_ranges = [(start, first), (last, end)]
        # Grouped by the rollup's own time column, formatted here: text made per row in the database cost PostgreSQL
        # ~100 ms over a month of hourly rows (bench/usage_reports.py); rows of one day or hour merge in ``_add``.
        columns = [(moment if name in _PATTERNS else getattr(rollup, name)).label(name) for name in keys]
        rows = await session.execute(
            select(
                *columns,
                func.sum(rollup.requests),
                func.sum(rollup.items),
                func.sum(rollup.cost),
                func.sum(rollup.processing_ms),
                func.sum(rollup.gpu_ms),
            )
            .where(rollup.tenant_id == tenant_id, moment >= first, moment < last)
            .group_by(*columns)
        )
        texts = [_PATTERNS[name][0] if name in _PATTERNS else None for name in keys]
        _add(out, rows, len(keys), texts)
    record_columns = [_record_column(name, dialect).label(name) for name in keys]
    for low, high in raw_ranges:
        if low >= high:
            continue
        rows = await session.execute(
            select(
                *record_columns,
                func.count(),
                func.sum(UsageRecord.items),
                func.sum(UsageRecord.cost),
                func.sum(UsageRecord.processing_ms),
                func.sum(UsageRecord.gpu_ms),
            )
            .where(UsageRecord.tenant_id == tenant_id, UsageRecord.created_at >= low, UsageRecord.created_at < high)
            .group_by(*record_columns)
        )
        _add(out, rows, len(keys))
    return out


def _add(out: dict[tuple[Any, ...], Sums], rows: Any, width: int, texts: Sequence[str | None] = ()) -> None:
    """Add ``rows`` (keys, then the sums) to ``out``; ``texts``: per key, a ``strftime`` format that turns a time
    into the key's text (rows that then share a key are summed), or None to keep the value.
    """
    for row in rows:
        key = tuple(row[:width])
        if texts:
            key = tuple(value if text is None else value.strftime(text) for value, text in zip(key, texts, strict=True))
        requests, items, cost, ms, gpu = row[width:]
        total = out.setdefault(key, [0, 0, Decimal(0), 0.0, 0.0])
        total[0] += int(requests or 0)
        total[1] += int(items or 0)
        total[2] += cost if cost is not None else Decimal(0)
        total[3] += float(ms or 0.0)
        total[4] += float(gpu or 0.0)


def month_of_day(dialect: str) -> Any:
    """``YYYY-MM`` of ``usage_daily.day``, in the database."""
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", UsageDaily.day), "YYYY-MM")
    return func.strftime("%Y-%m", UsageDaily.day)
