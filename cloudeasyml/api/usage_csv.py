"""``Accept: text/csv`` for usage: a report's groups and a page of records as CSV, costs as exact decimals."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from cloudeasyml.domain.usage import UsageReport
from cloudeasyml.domain.usage_detail import RecordPage

__all__ = ("CSV", "records_csv", "report_csv", "wants_csv")

CSV = "text/csv; charset=utf-8"

_RECORD_COLUMNS = (
    "requestId",
    "createdAt",
    "deploymentId",
    "deploymentName",
    "modelName",
    "modelVersion",
    "apiKeyId",
    "items",
    "processingMs",
    "gpuMs",
    "cost",
)


def wants_csv(accept: str | None) -> bool:
    """Whether the client asked for CSV (``Accept: text/csv``)."""
    return accept is not None and "text/csv" in accept.lower()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")  # never 1E-10
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows([_cell(value) for value in row] for row in rows)
    return out.getvalue()


def report_csv(report: UsageReport, group_by: tuple[str, ...]) -> str:
    """One row per group (per model when no ``groupBy`` was given): the grouping values, then the sums."""
    sums = ("requests", "items", "processingTimeMs", "cost")
    if report.groups is None:
        rows = [
            (name, m.requests, m.items, m.processing_time_ms, m.cost) for name, m in sorted(report.by_model.items())
        ]
        return _table(("model", *sums), rows)
    return _table(
        (*group_by, *sums),
        (
            [*(group.key[name] for name in group_by), group.requests, group.items, group.processing_time_ms, group.cost]
            for group in report.groups
        ),
    )


def records_csv(page: RecordPage) -> str:
    """One row per record, in the JSON's order and field names."""
    return _table(
        _RECORD_COLUMNS,
        (
            (
                r.request_id,
                r.created_at,
                r.deployment_id,
                r.deployment_name,
                r.model_name,
                r.model_version,
                r.api_key_id,
                r.items,
                r.processing_ms,
                r.gpu_ms,
                r.cost,
            )
            for r in page.records
        ),
    )
