"""Usage reports."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from litestar import Controller, Request, get
from litestar.params import FromQuery

from cloudeasyml.api.auth import requires_scope
from cloudeasyml.core.clock import utc_now
from cloudeasyml.domain.principal import Principal
from cloudeasyml.domain.quota import QuotaReport, quota_report
from cloudeasyml.domain.usage import UsageReport, usage_report
from cloudeasyml.errors import InvalidInputError
from cloudeasyml.services import Services

__all__ = ("UsageController",)


def _aware(value: datetime, name: str) -> datetime:
    """``value`` in UTC (naive: already UTC). A time at the edge of the calendar whose offset would move it past
    year 1 or 9999 is the client's error, not an ``OverflowError``.
    """
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise InvalidInputError(f"{name} is out of range once converted to UTC") from None


class UsageController(Controller):
    """``GET /usage``."""

    path = "/usage"
    tags = ["Usage"]

    @get("/", summary="Usage and cost over a period", guards=[requires_scope("usage:read")])
    async def get_usage(
        self,
        request: Request[Principal, Any, Any],
        start: FromQuery[datetime | None] = None,
        end: FromQuery[datetime | None] = None,
    ) -> UsageReport:
        """The caller's tenant's requests and cost in ``[start, end)`` (ISO 8601; naive times are UTC),
        by model. Defaults: the start of the current month until now.
        """
        services: Services = request.app.state.services
        await services.meter.flush()  # usage written behind responses must be visible to its reader
        now = utc_now()
        start = _aware(start, "start") if start else now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = _aware(end, "end") if end else now
        if start >= end:
            raise InvalidInputError("start must be before end")
        async with services.sessions() as session:
            return await usage_report(session, request.user.tenant_id, start, end)

    @get("/quota", summary="This month's caps and what is left of them", guards=[requires_scope("usage:read")])
    async def get_quota(self, request: Request[Principal, Any, Any]) -> QuotaReport:
        """The caller's tenant's monthly spend and request caps (set by the operator with ``cloudeasyml tenants
        set-caps``; null: no cap), what it has used of them this month (UTC) and what remains. Past a cap,
        predictions answer 402 (spend) or 429 (requests) until ``resetsAt``.
        """
        services: Services = request.app.state.services
        await services.meter.flush()
        async with services.sessions() as session:
            return await quota_report(session, request.user.tenant_id)
