"""The wall clock, in one place (timestamps stored, compared and shown are all aware UTC)."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ("utc_now",)


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)
