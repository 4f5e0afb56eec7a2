"""Usage reports."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from litestar import Controller, get
from litestar.params import FromQuery, QueryParameter

from cloudeasyml.api.auth import requires_scope
from cloudeasyml.api.deps import MANAGEMENT, Injected
from cloudeasyml.core.clock import utc_now
from cloudeasyml.domain.quota import QuotaReport
from cloudeasyml.domain.usage import GroupBy, UsageReport, UsageService
from cloudeasyml.errors import InvalidInputError

__all__ = ("UsageController", "aware")


def aware(value: datetime, name: str) -> datetime:
    """``value`` in UTC (naive: already UTC). A time at the edge of the calendar whose offset would move it past
    year 1 or 9999 is the client's error, not an ``OverflowError``.
    """
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise InvalidInputError(f"{name} is out of range once converted to UTC") from None


class UsageController(Controller):
    """``GET /usage`` and ``GET /usage/quota`` (``usage`` is scoped to the caller's tenant: see ``api.deps``)."""

    path = "/usage"
    tags = ["Usage"]
    dependencies = MANAGEMENT

    @get("/", summary="Usage and cost over a period", guards=[requires_scope("usage:read")])
    async def get_usage(
        self,
        usage: Injected[UsageService],
        start: FromQuery[datetime | None] = None,
        end: FromQuery[datetime | None] = None,
        group_by: Annotated[GroupBy, QueryParameter(name="groupBy")] = "model",
    ) -> UsageReport:
        """The caller's tenant's requests and cost in ``[start, end)`` (ISO 8601; naive times are UTC),
        by model, with shadow copies apart (``shadow``); ``groupBy=version`` adds ``byVersion``: each model
        version's online and shadow usage. Defaults: the start of the current month until now.
        """
        now = utc_now()
        start = aware(start, "start") if start else now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = aware(end, "end") if end else now
        if start >= end:
            raise InvalidInputError("start must be before end")
        return await usage.report(start, end, group_by)

    @get("/quota", summary="This month's caps and what is left of them", guards=[requires_scope("usage:read")])
    async def get_quota(self, usage: Injected[UsageService]) -> QuotaReport:
        """The caller's tenant's monthly spend and request caps (set by the operator with ``cloudeasyml tenants
        set-caps``; null: no cap), what it has used of them this month (UTC) and what remains. Past a cap,
        predictions answer 402 (spend) or 429 (requests) until ``resetsAt``.
        """
        return await usage.quota()
