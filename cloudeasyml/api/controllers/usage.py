"""Usage reports."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from litestar import Controller, Request, Response, get
from litestar.params import FromQuery, QueryParameter

from cloudeasyml.api.auth import requires_scope
from cloudeasyml.api.deps import MANAGEMENT, Injected
from cloudeasyml.api.usage_csv import CSV, records_csv, report_csv, wants_csv
from cloudeasyml.core.clock import utc_now
from cloudeasyml.domain.principal import Principal
from cloudeasyml.domain.quota import QuotaReport
from cloudeasyml.domain.usage import UsageReport, UsageService
from cloudeasyml.domain.usage_detail import MAX_PAGE, RecordFilter, RecordPage, parse_group_by
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


def _period(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    """``[start, end)`` in UTC; defaults: the start of the current month until now."""
    now = utc_now()
    start = aware(start, "start") if start else now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = aware(end, "end") if end else now
    if start >= end:
        raise InvalidInputError("start must be before end")
    return start, end


class UsageController(Controller):
    """``GET /usage``, ``GET /usage/records`` and ``GET /usage/quota`` (``usage`` is scoped to the caller's tenant:
    see ``api.deps``).
    """

    path = "/usage"
    tags = ["Usage"]
    dependencies = MANAGEMENT

    @get("/", summary="Usage and cost over a period", guards=[requires_scope("usage:read")])
    async def get_usage(
        self,
        request: Request[Principal, Any, Any],
        usage: Injected[UsageService],
        start: FromQuery[datetime | None] = None,
        end: FromQuery[datetime | None] = None,
        group_by: Annotated[str | None, QueryParameter(name="groupBy")] = None,
    ) -> Response[UsageReport]:
        """The caller's tenant's requests and cost in ``[start, end)`` (ISO 8601; naive times are UTC),
        by model, with shadow copies apart (``shadow``). Defaults: the start of the current month until now.
        ``groupBy`` (comma-separated: ``model``, ``deployment``, ``version``, ``apiKey``, ``day``, ``hour``) adds
        ``groups``, the sums per combination; with ``version`` also ``byVersion``, each model version's online and
        shadow usage.
        ``Accept: text/csv`` answers CSV: one row per group (per model without ``groupBy``).
        """
        start, end = _period(start, end)
        names = parse_group_by(group_by) if group_by is not None else ()
        report = await usage.grouped(start, end, names) if names else await usage.report(start, end)
        if wants_csv(request.headers.get("accept")):
            return Response(report_csv(report, names), media_type=CSV)  # type: ignore[arg-type]
        return Response(report)

    @get("/records", summary="Usage records, a page at a time", guards=[requires_scope("usage:read")])
    async def get_records(
        self,
        request: Request[Principal, Any, Any],
        usage: Injected[UsageService],
        start: FromQuery[datetime | None] = None,
        end: FromQuery[datetime | None] = None,
        deployment_id: Annotated[uuid.UUID | None, QueryParameter(name="deploymentId")] = None,
        api_key_id: Annotated[str | None, QueryParameter(name="apiKeyId")] = None,
        model: FromQuery[str | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE)] = 100,
        cursor: FromQuery[str | None] = None,
    ) -> Response[RecordPage]:
        """The caller's tenant's usage records in ``[start, end)`` (defaults as ``GET /usage``), oldest first,
        optionally of one deployment, API key or model; ``limit`` (at most 1000) per page, and ``nextCursor`` to
        pass as ``cursor`` for the next page (same filters). ``Accept: text/csv`` answers CSV, the next cursor in
        the ``X-Next-Cursor`` header.
        """
        start, end = _period(start, end)
        where = RecordFilter(start=start, end=end, deployment_id=deployment_id, api_key_id=api_key_id, model=model)
        page = await usage.records(where, limit, cursor)
        if wants_csv(request.headers.get("accept")):
            headers = {"X-Next-Cursor": page.next_cursor} if page.next_cursor else None
            return Response(records_csv(page), media_type=CSV, headers=headers)  # type: ignore[arg-type]
        return Response(page)

    @get("/quota", summary="This month's caps and what is left of them", guards=[requires_scope("usage:read")])
    async def get_quota(self, usage: Injected[UsageService]) -> QuotaReport:
        """The caller's tenant's monthly spend and request caps (set by the operator with ``cloudeasyml tenants
        set-caps``; null: no cap), what it has used of them this month (UTC) and what remains. Past a cap,
        predictions answer 402 (spend) or 429 (requests) until ``resetsAt``.
        """
        return await usage.quota()
