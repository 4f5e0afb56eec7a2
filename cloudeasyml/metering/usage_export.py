"""The usage export's format and its outbox rows: each usage record as a CloudEvents 1.0 event (JSON, structured
mode), written to the webhook outbox in the transaction that writes the record, for the dispatcher to POST in batches
(``application/cloudevents-batch+json``) to the operator's endpoint (docs/billing.md, "Usage export").

An export is an outbox event (``webhook_event``, type ``usage.export``, id ``use_`` + the record's request id) with
one delivery whose ``endpoint_id`` is null (the operator's exporter, not a tenant's endpoint). The CloudEvent's ``id``
is the usage record's request id, the same on every attempt, so a receiver deduplicates on it (OpenMeter does).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final, cast

import msgspec
from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncSession

from cloudeasyml.db.models import WebhookDelivery, WebhookEvent
from cloudeasyml.settings import UsageExportSettings

__all__ = ("CONTENT_TYPE", "EVENT_TYPE", "OUTBOX_TYPE", "cloud_event", "write_exports")

EVENT_TYPE: Final = "com.cloudeasyml.usage"
"""The CloudEvents ``type`` of a usage record."""
OUTBOX_TYPE: Final = "usage.export"
"""The outbox event type of a usage export (not a tenant's webhook event: no endpoint subscribes to it)."""
CONTENT_TYPE: Final = "application/cloudevents-batch+json"
"""The content type of a batch (a JSON array of structured-mode events)."""
_EVENT_PREFIX: Final = "use_"

_encode = msgspec.json.Encoder().encode


def _time(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def cloud_event(record: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The CloudEvent of one usage record (a ``Usage``'s fields, snake_case, as the meter inserts them)."""
    cost: Decimal = record["cost"]
    return {
        "specversion": "1.0",
        "type": EVENT_TYPE,
        "source": source,
        "id": record["request_id"],
        "time": _time(record["created_at"]),
        "subject": str(record["tenant_id"]),
        "datacontenttype": "application/json",
        "data": {
            "tenant": str(record["tenant_id"]),
            "deployment": str(record["deployment_id"]),
            "deploymentName": record["deployment_name"],
            "model": record["model_name"],
            "version": record["model_version"],
            "kind": record.get("kind", "online"),
            "apiKey": record["api_key_id"],
            "items": record["items"],
            "processingMs": record["processing_ms"],
            "gpuMs": record["gpu_ms"],
            "cost": format(cost, "f"),
        },
    }


async def write_exports(
    session: AsyncSession,
    records: Iterable[Mapping[str, Any]],
    settings: UsageExportSettings,
    now: datetime,
) -> None:
    """Write each record's CloudEvent and its pending delivery to the outbox, in ``session``'s transaction.

    Args:
        session: The transaction that inserted the records.
        records: The records just inserted (never ones already there: a record is exported once).
        settings: The exporter's settings (its ``source`` and retry window).
        now: When the deliveries are first due.
    """
    until = now + timedelta(seconds=settings.retry_window_seconds)
    events: list[dict[str, Any]] = []
    deliveries: list[dict[str, Any]] = []
    for record in records:
        event_id = _EVENT_PREFIX + record["request_id"]
        body = _encode(cloud_event(record, settings.source)).decode()
        tenant = record["tenant_id"]
        events.append(dict(id=event_id, tenant_id=tenant, type=OUTBOX_TYPE, payload=body, created_at=now))
        deliveries.append(
            dict(
                id=uuid.uuid4(),
                tenant_id=tenant,
                endpoint_id=None,
                event_id=event_id,
                status="pending",
                attempts=0,
                next_attempt_at=now,
                retry_until=until,
                created_at=now,
            )
        )
    if not events:
        return
    # Core inserts of the tables (executemany), as the meter's own: the ORM's unit of work costs more per row.
    await session.execute(insert(cast(Table, WebhookEvent.__table__)), events)
    await session.execute(insert(cast(Table, WebhookDelivery.__table__)), deliveries)
