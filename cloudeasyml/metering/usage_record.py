"""One billed request's usage, as the meter journals it and writes it to ``usage_record``."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

import msgspec

__all__ = ("Usage",)


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """One successful request's usage, priced."""

    request_id: str
    tenant_id: uuid.UUID
    api_key_id: str | None
    deployment_id: uuid.UUID
    deployment_name: str
    model_name: str
    model_version: str
    items: int
    processing_ms: float
    gpu_ms: float
    cost: Decimal
    created_at: datetime
    kind: str = "online"
    """``online`` (answered to its client), ``shadow`` (a shadow route's copy) or ``batch`` (a batch job's chunk, at
    the batch price); journals written before this field read as ``online``."""
