"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from cloudeasyml.core.pricing import COST_SCALE

__all__ = ("Money", "UTCDateTime", "as_utc", "from_scaled", "to_scaled")


def as_utc(value: datetime) -> datetime:
    """An aware datetime in UTC; a naive one is an error (whose zone would it be in?)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return value if value.tzinfo is UTC else value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Aware in; naive UTC for SQLite, aware UTC for PostgreSQL."""
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Always aware UTC out."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def to_scaled(value: Decimal) -> int:
    """An exact Decimal as the scaled integer stored; more places than ``COST_SCALE`` is an error, never a rounding."""
    scaled = Decimal(value).scaleb(COST_SCALE)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{value} has more than {COST_SCALE} decimal places")
    return int(scaled)


def from_scaled(value: Any) -> Decimal:
    """A stored (or summed) scaled integer back to an exact Decimal."""
    return Decimal(int(value or 0)).scaleb(-COST_SCALE)


class Money(TypeDecorator[Decimal]):
    """An exact decimal with ``COST_SCALE`` places, stored as a scaled 64-bit integer.

    SQLite has no exact decimal type (its NUMERIC affinity is a float), so sums there would drift; an integer
    column sums exactly on both databases. Room: about 9.2e8 currency units per value or sum.
    """

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> int | None:
        """Decimal in, scaled integer stored; more places than ``COST_SCALE`` is an error, never a rounding."""
        return None if value is None else to_scaled(value)

    def process_result_value(self, value: int | None, dialect: Dialect) -> Decimal | None:
        """Scaled integer (or a database sum of them) back to an exact Decimal."""
        return None if value is None else from_scaled(value)
