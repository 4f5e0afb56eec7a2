"""Wire shapes of ``/files`` and ``/batches`` (camelCase, as the rest of the platform's API)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from cloudeasyml.db.models import BatchFile, BatchJob

__all__ = ("BatchCounts", "BatchCreate", "BatchRead", "FileRead")


class FileRead(msgspec.Struct, rename="camel", kw_only=True):
    """A stored file."""

    id: str
    object: str = "file"
    filename: str
    purpose: str
    """``batch`` (an input), ``batch_output`` or ``batch_error``."""
    bytes: int
    lines: int
    """Non-blank lines."""
    created_at: datetime
    expires_at: datetime

    @classmethod
    def of(cls, row: BatchFile) -> FileRead:
        """The wire shape of a row."""
        return cls(
            id=row.id,
            filename=row.filename,
            purpose=row.purpose,
            bytes=row.bytes,
            lines=row.lines,
            created_at=row.created_at,
            expires_at=row.expires_at,
        )


class BatchCreate(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """``POST /batches``."""

    deployment_id: uuid.UUID
    input_file_id: Annotated[str, msgspec.Meta(max_length=40)]
    completion_window: str | None = None
    """Hours, like ``"24h"`` (the default and the most: ``CLOUDEASYML_BATCH__COMPLETION_WINDOW_SECONDS``)."""
    metadata: Annotated[dict[str, Annotated[str, msgspec.Meta(max_length=512)]], msgspec.Meta(max_length=16)] | None = (
        None
    )


class BatchCounts(msgspec.Struct):
    """Lines of the input: all of them, those done and those that failed (in the error file)."""

    total: int
    completed: int
    failed: int


class BatchRead(msgspec.Struct, rename="camel", kw_only=True):
    """A batch job."""

    id: str
    object: str = "batch"
    status: str
    """``validating``, ``queued``, ``running``, ``completed``, ``failed``, ``cancelling``, ``cancelled`` or
    ``expired``."""
    deployment_id: uuid.UUID
    deployment_name: str
    input_file_id: str
    output_file_id: str | None
    error_file_id: str | None
    counts: BatchCounts
    message: str | None
    """Why the job failed, or why it is paused (a monthly cap reached: it resumes by itself)."""
    paused_until: datetime | None
    metadata: dict[str, str] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancelled_at: datetime | None
    expires_at: datetime

    @classmethod
    def of(cls, row: BatchJob) -> BatchRead:
        """The wire shape of a row."""
        return cls(
            id=row.id,
            status=row.status,
            deployment_id=row.deployment_id,
            deployment_name=row.deployment_name,
            input_file_id=row.input_file_id,
            output_file_id=row.output_file_id,
            error_file_id=row.error_file_id,
            counts=BatchCounts(total=row.total, completed=row.completed, failed=row.failed),
            message=row.message,
            paused_until=row.paused_until,
            metadata=row.meta,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            cancelled_at=row.cancelled_at,
            expires_at=row.expires_at,
        )
