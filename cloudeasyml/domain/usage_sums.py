"""Usage summed over a period, fast however many records there are: whole UTC days come from the daily rollup
(``usage_daily``, kept current by the meter), the partial days at either end from the records themselves.

The default ``GET /usage`` (this month until now) and a month's invoice thus read at most a month of rollup rows
plus today's records, instead of every record of the month.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from cloudeasyml.db.models import UsageDaily, UsageRecord

__all__ = ("KEYS", "Sums", "month_of_day", "summed")

KEYS: Final = ("model_name", "model_version", "deployment_id", "api_key_id", "kind")
"""What sums may be keyed by: the rollup's columns."""

Sums = list[Any]
"""``[requests, items, cost, processing_ms, gpu_ms]``."""


def _record_column(name: str) -> Any:
    if name == "api_key_id":
        return func.coalesce(UsageRecord.api_key_id, "")
    return getattr(UsageRecord, name)


def _next_midnight(value: datetime) -> datetime:
    midnight = value.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight if midnight == value else midnight + timedelta(days=1)


async def summed(
    session: AsyncSession, tenant_id: uuid.UUID, start: datetime, end: datetime, keys: Sequence[str]
) -> dict[tuple[Any, ...], Sums]:
    """The tenant's usage in ``[start, end)`` (aware UTC bounds) summed per distinct value of ``keys`` (names from
    ``KEYS``): ``{key values: [requests, items, cost, processing_ms, gpu_ms]}``; costs exact.
    """
    first_day = _next_midnight(start)
    last_day = end.replace(hour=0, minute=0, second=0, microsecond=0)
    out: dict[tuple[Any, ...], Sums] = {}
    raw_ranges = [(start, end)]
    if first_day < last_day:
        raw_ranges = [(start, first_day), (last_day, end)]
        columns = [getattr(UsageDaily, name) for name in keys]
        rows = await session.execute(
            select(
                *columns,
                func.sum(UsageDaily.requests),
                func.sum(UsageDaily.items),
                func.sum(UsageDaily.cost),
                func.sum(UsageDaily.processing_ms),
                func.sum(UsageDaily.gpu_ms),
            )
            .where(UsageDaily.tenant_id == tenant_id, UsageDaily.day >= first_day, UsageDaily.day < last_day)
            .group_by(*columns)
        )
        _add(out, rows, len(keys))
    record_columns = [_record_column(name).label(name) for name in keys]
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


def _add(out: dict[tuple[Any, ...], Sums], rows: Any, width: int) -> None:
    for row in rows:
        key = tuple(row[:width])
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
