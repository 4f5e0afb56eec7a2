"""Usage in detail: sums grouped by any of model, deployment, version, API key, day and hour, and the usage records
themselves, a page at a time behind an opaque cursor. Every query filters on the caller's tenant.

Days and hours are UTC, as text (``2026-12-01``, ``2026-12-01T13:00``), computed in the database (SQLite stores
times as UTC text, PostgreSQL as ``timestamptz``). Costs are summed as the scaled integers they are stored as: exact.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Final, Literal

import msgspec
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from cloudeasyml.db.models import UsageRecord
from cloudeasyml.domain.usage_sums import summed
from cloudeasyml.errors import InvalidInputError, MalformedRequestError

__all__ = (
    "GROUPINGS",
    "MAX_PAGE",
    "RecordFilter",
    "RecordPage",
    "UsageGroup",
    "UsageRecordRead",
    "grouped_usage",
    "parse_group_by",
    "usage_records",
)

GROUPINGS: Final = ("model", "deployment", "version", "apiKey", "day", "hour")
"""What ``groupBy`` may name, comma-separated, in any combination."""

MAX_PAGE: Final = 1000
"""Most records in one page of ``GET /usage/records``."""


class UsageGroup(msgspec.Struct, rename="camel"):
    """One group's sums. ``key`` holds the value of each grouping asked for (``model``: the model's name,
    ``deployment``: the deployment's id, ``version``: the model version, ``apiKey``: the key id or ``""`` for usage
    billed without one, ``day``/``hour``: UTC).
    """

    key: dict[str, str]
    requests: int
    items: int
    cost: Decimal
    processing_time_ms: float


class UsageRecordRead(msgspec.Struct, rename="camel"):
    """One billed request, as metered."""

    request_id: str
    created_at: datetime
    deployment_id: uuid.UUID
    deployment_name: str
    model_name: str
    model_version: str
    api_key_id: str | None
    items: int
    processing_ms: float
    gpu_ms: float
    cost: Decimal


class RecordPage(msgspec.Struct, rename="camel"):
    """A page of usage records, oldest first; ``next_cursor`` fetches the next page (None: this is the last)."""

    records: list[UsageRecordRead]
    next_cursor: str | None


class RecordFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Which records to list: ``[start, end)`` and, optionally, one deployment, API key and model."""

    start: datetime
    end: datetime
    deployment_id: uuid.UUID | None = None
    api_key_id: str | None = None
    model: str | None = None


def parse_group_by(value: str) -> tuple[str, ...]:
    """The groupings of a ``groupBy`` parameter, in the order given; ``InvalidInputError`` names an unknown one."""
    names = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    unknown = [name for name in names if name not in GROUPINGS]
    if unknown or not names:
        raise InvalidInputError(f"groupBy takes a comma-separated list of {', '.join(GROUPINGS)}; got {value!r}")
    return names


_SUM_KEYS: Final = {
    "model": "model_name",
    "deployment": "deployment_id",
    "version": "model_version",
    "apiKey": "api_key_id",
    "day": "day",
    "hour": "hour",
}
"""Each grouping's key in ``cloudeasyml.domain.usage_sums``."""


async def grouped_usage(
    session: AsyncSession, tenant_id: uuid.UUID, start: datetime, end: datetime, group_by: tuple[str, ...]
) -> list[UsageGroup]:
    """The tenant's usage in ``[start, end)`` summed per distinct combination of ``group_by``, sorted by key.

    Whole days (whole hours when grouped by hour) are read from the rollups, only the partial ones at either end
    from the records, so a month's report reads about a month of rollup rows however many records it holds.
    """
    unit: Literal["day", "hour"] = "hour" if "hour" in group_by else "day"
    sums = await summed(session, tenant_id, start, end, [_SUM_KEYS[name] for name in group_by], unit=unit)
    groups = [
        UsageGroup(
            key={name: str(value) for name, value in zip(group_by, key, strict=True)},
            requests=requests,
            items=items,
            cost=cost,
            processing_time_ms=round(ms, 3),
        )
        for key, (requests, items, cost, ms, _gpu) in sums.items()
    ]
    return sorted(groups, key=lambda group: tuple(group.key.values()))


def _encode_cursor(record: UsageRecord) -> str:
    raw = msgspec.json.encode([record.created_at.isoformat(), record.request_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created_at, request_id = msgspec.json.decode(
            base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)), type=tuple[datetime, str]
        )
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise MalformedRequestError("cursor is not one this API gave out") from None
    if created_at.tzinfo is None:  # the API gives out aware times only
        raise MalformedRequestError("cursor is not one this API gave out")
    return created_at, request_id


async def usage_records(
    session: AsyncSession, tenant_id: uuid.UUID, where: RecordFilter, limit: int, cursor: str | None
) -> RecordPage:
    """A page of the tenant's usage records matching ``where``, ordered by time then request id (a stable order:
    records that land later with an earlier time than the cursor are not seen; the meter writes within seconds).
    """
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInputError(f"limit must be between 1 and {MAX_PAGE}")
    query = select(UsageRecord).where(
        UsageRecord.tenant_id == tenant_id, UsageRecord.created_at >= where.start, UsageRecord.created_at < where.end
    )
    if where.deployment_id is not None:
        query = query.where(UsageRecord.deployment_id == where.deployment_id)
    if where.api_key_id is not None:
        query = query.where(UsageRecord.api_key_id == where.api_key_id)
    if where.model is not None:
        query = query.where(UsageRecord.model_name == where.model)
    if cursor:
        after, request_id = _decode_cursor(cursor)
        query = query.where(
            or_(
                UsageRecord.created_at > after,
                and_(UsageRecord.created_at == after, UsageRecord.request_id > request_id),
            )
        )
    rows = list(await session.scalars(query.order_by(UsageRecord.created_at, UsageRecord.request_id).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return RecordPage(
        records=[
            UsageRecordRead(
                request_id=r.request_id,
                created_at=r.created_at,
                deployment_id=r.deployment_id,
                deployment_name=r.deployment_name,
                model_name=r.model_name,
                model_version=r.model_version,
                api_key_id=r.api_key_id,
                items=r.items,
                processing_ms=r.processing_ms,
                gpu_ms=r.gpu_ms,
                cost=r.cost,
            )
            for r in rows
        ],
        next_cursor=_encode_cursor(rows[-1]) if more else None,
    )
