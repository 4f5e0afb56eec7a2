"""Feedback: the ground truth of an answered request, for the experiment report's quality metrics.

Rules (those of an idempotency key, as Stripe applies them): a request id takes feedback once. The same feedback sent
again answers 200 with the stored row (a retry after a lost answer is harmless); different feedback for a request that
has some is a 409 and changes nothing. Feedback is accepted for a request of the caller's tenant that was answered
(billed) within ``outcomes.retention_days``; any other id, another tenant's included, is a 404.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any

import msgspec
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cloudeasyml.core.clock import utc_now
from cloudeasyml.db.models import Feedback, UsageRecord
from cloudeasyml.errors import ConflictError, InvalidInputError, NotFoundError
from cloudeasyml.metering.meter import Meter
from cloudeasyml.settings import OutcomeSettings

__all__ = ("MAX_FEEDBACK_BYTES", "FeedbackCreate", "FeedbackRead", "FeedbackService")

MAX_FEEDBACK_BYTES = 64 * 1024
"""Most bytes of JSON one request's feedback may hold (``label`` or ``value``)."""

Label = Annotated[str, msgspec.Meta(max_length=200)] | int | bool


class FeedbackCreate(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """``POST /feedback``: the truth of one answered request, as ``label`` (classifiers) or ``value`` (regressors and
    other models); one for a request of one item, else a list with one per item, in the order of its ``inputs``.
    """

    request_id: Annotated[str, msgspec.Meta(min_length=1, max_length=36)]
    """The ``requestId`` of the answer."""
    label: Label | Annotated[list[Label], msgspec.Meta(max_length=4096)] | None = None
    value: float | Annotated[list[Any], msgspec.Meta(max_length=4096)] | None = None
    """A number (a regressor's), or a list with one truth per item (a number, or what the model's metric takes:
    a reference embedding for ``minilm``)."""


class FeedbackRead(msgspec.Struct, rename="camel", kw_only=True):
    """Stored feedback."""

    request_id: str
    label: Any = None
    value: Any = None
    created_at: datetime

    @classmethod
    def of(cls, row: Feedback) -> FeedbackRead:
        """The wire form of a row."""
        return cls(request_id=row.request_id, label=row.label, value=row.value, created_at=row.created_at)


def _truth(data: FeedbackCreate) -> tuple[str, Any]:
    """Which of ``label`` and ``value`` was sent, and what; 422 unless exactly one was."""
    if (data.label is None) == (data.value is None):
        raise InvalidInputError("send the request's `label` (classifiers) or its `value` (other models), one of them")
    if len(msgspec.json.encode(data.label if data.value is None else data.value)) > MAX_FEEDBACK_BYTES:
        raise InvalidInputError(f"the feedback holds more than {MAX_FEEDBACK_BYTES} bytes of JSON")
    return ("label", data.label) if data.value is None else ("value", data.value)


def _check_items(kind: str, truth: Any, items: int) -> None:
    """A list holds one truth per item of the request; a single truth is for a request of one item."""
    if isinstance(truth, list):
        if len(truth) != items:
            raise InvalidInputError(f"`{kind}` holds {len(truth)} entries; the request answered {items} item(s)")
    elif items != 1:
        raise InvalidInputError(f"the request answered {items} items: send `{kind}` as a list of {items}, one per item")


class FeedbackService:
    """One tenant's feedback. Every query filters on its ``tenant_id``."""

    def __init__(
        self,
        session: AsyncSession,
        tenant_id: uuid.UUID,
        meter: Meter,
        settings: OutcomeSettings,
        *,
        key_id: str | None = None,
    ) -> None:
        self._session = session
        self._tenant_id = tenant_id
        self._meter = meter
        self._settings = settings
        self._key_id = key_id

    async def record(self, data: FeedbackCreate) -> tuple[FeedbackRead, bool]:
        """Store feedback for an answered request; returns it and whether it is new (see the module's rules).

        Raises:
            InvalidInputError: Neither or both of ``label`` and ``value``, or a list of the wrong length (422).
            NotFoundError: No request of the tenant with that id within the retention period (404).
            ConflictError: The request has other feedback already (409).
        """
        kind, truth = _truth(data)
        items = await self._answered_items(data.request_id)
        _check_items(kind, truth, items)
        stored = await self._stored(data.request_id)
        if stored is None:
            row = Feedback(
                request_id=data.request_id,
                tenant_id=self._tenant_id,
                label=truth if kind == "label" else None,
                value=truth if kind == "value" else None,
                api_key_id=self._key_id,
                created_at=utc_now(),
            )
            try:
                async with self._session.begin_nested():
                    self._session.add(row)
            except IntegrityError:  # a concurrent call stored feedback first: judge this one against it
                stored = await self._stored(data.request_id)
            else:
                return FeedbackRead.of(row), True
        if stored is None:  # not expected: the row that won the race is gone again
            raise ConflictError(f"feedback for request {data.request_id} is being written; retry")
        if (stored.label, stored.value) != (truth if kind == "label" else None, truth if kind == "value" else None):
            raise ConflictError(
                f"request {data.request_id} has other feedback already (recorded {stored.created_at.isoformat()}); "
                "feedback is written once"
            )
        return FeedbackRead.of(stored), False

    async def _answered_items(self, request_id: str) -> int:
        """The item count of the tenant's request ``request_id`` answered within the retention period (its usage
        record). The meter writes what this process holds first; a request answered by another process is found once
        that process has written its usage (within ``metering.flush_interval_seconds``).
        """
        since = utc_now() - timedelta(days=self._settings.retention_days)
        query = select(UsageRecord.items).where(
            UsageRecord.request_id == request_id,
            UsageRecord.tenant_id == self._tenant_id,
            UsageRecord.created_at >= since,
        )
        # Written first, before the query: on SQLite a read sees the database as it was when its transaction began,
        # so a record the writer commits after a first miss would stay invisible to a second query here.
        if self._meter.pending:
            await self._meter.flush()
        items = await self._session.scalar(query)
        if items is None:
            raise NotFoundError(
                f"no request {request_id} was answered for this tenant in the last {self._settings.retention_days} days"
            )
        return int(items)

    async def _stored(self, request_id: str) -> Feedback | None:
        return await self._session.scalar(
            select(Feedback).where(Feedback.request_id == request_id, Feedback.tenant_id == self._tenant_id)
        )
