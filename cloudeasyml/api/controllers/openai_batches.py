"""OpenAI-compatible Files and Batches (``/v1/files`` with purpose ``batch``, ``/v1/batches`` with endpoint
``/v1/embeddings``), so the stock ``openai`` client's ``files.create``, ``batches.create``, ``batches.retrieve``,
``batches.cancel`` and ``files.content`` work with ``base_url`` set to this server. The ``model`` of each input
line's body names the deployment (all lines one deployment). Same files, jobs, workers and prices as ``/files``
and ``/batches``; only the shapes differ.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.params import Body, FromPath
from litestar.response import File

from cloudeasyml.api.auth import requires_scope
from cloudeasyml.api.batch_audit import batch_created, cancel_audited
from cloudeasyml.api.controllers.embeddings import OPENAI_EXCEPTION_HANDLERS
from cloudeasyml.api.deps import MANAGEMENT, WRITES, Injected
from cloudeasyml.api.uploads import receive_upload
from cloudeasyml.db.models import BatchFile, BatchJob
from cloudeasyml.domain.audit import AuditTrail
from cloudeasyml.domain.batch.files import FileService
from cloudeasyml.domain.batch.jobs import BatchService
from cloudeasyml.domain.batch.lines import EMBEDDINGS
from cloudeasyml.domain.principal import Principal
from cloudeasyml.errors import InvalidInputError
from cloudeasyml.services import Services

__all__ = ("OpenAIBatchController", "OpenAIFileController")

_STATUS = {"queued": "in_progress", "running": "in_progress"}
"""Our statuses OpenAI has no word for; the others are the same words."""


def _epoch(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())


def file_object(row: BatchFile) -> dict[str, Any]:
    """OpenAI's ``FileObject``."""
    return {
        "id": row.id,
        "object": "file",
        "bytes": row.bytes,
        "created_at": _epoch(row.created_at),
        "expires_at": _epoch(row.expires_at),
        "filename": row.filename,
        "purpose": "batch" if row.purpose == "batch" else "batch_output",
        "status": "processed",
        "status_details": None,
    }


def batch_object(job: BatchJob) -> dict[str, Any]:
    """OpenAI's ``Batch``."""
    ended = _epoch(job.finished_at)
    errors = None
    if job.message:
        code = "batch_failed" if job.status == "failed" else "quota_exceeded"
        errors = {"object": "list", "data": [{"code": code, "message": job.message, "param": None, "line": None}]}
    return {
        "id": job.id,
        "object": "batch",
        "endpoint": job.endpoint or EMBEDDINGS,
        "model": job.deployment_name,
        "errors": errors,
        "input_file_id": job.input_file_id,
        "completion_window": f"{max(1, round((job.expires_at - job.created_at).total_seconds() / 3600))}h",
        "status": _STATUS.get(job.status, job.status),
        "output_file_id": job.output_file_id,
        "error_file_id": job.error_file_id,
        "created_at": _epoch(job.created_at),
        "in_progress_at": _epoch(job.started_at),
        "expires_at": _epoch(job.expires_at),
        "finalizing_at": ended if job.status == "completed" else None,
        "completed_at": ended if job.status == "completed" else None,
        "failed_at": ended if job.status == "failed" else None,
        "expired_at": ended if job.status == "expired" else None,
        "cancelling_at": _epoch(job.cancelled_at),
        "cancelled_at": ended if job.status == "cancelled" else None,
        "request_counts": {"total": job.total, "completed": job.completed, "failed": job.failed},
        "metadata": job.meta,
    }


class OpenAIBatchCreate(msgspec.Struct, forbid_unknown_fields=True):
    """OpenAI's ``batches.create`` body (snake_case, as OpenAI's API is)."""

    input_file_id: Annotated[str, msgspec.Meta(max_length=40)]
    endpoint: str
    completion_window: str = "24h"
    metadata: Annotated[dict[str, Annotated[str, msgspec.Meta(max_length=512)]], msgspec.Meta(max_length=16)] | None = (
        None
    )
    output_expires_after: dict[str, Any] | None = None


class _FirstLine(msgspec.Struct):
    body: dict[str, Any] = {}


class OpenAIFileController(Controller):
    """``/v1/files``."""

    path = "/v1/files"
    tags = ["OpenAI-compatible"]
    dependencies = MANAGEMENT
    guards = [requires_scope("predict")]  # noqa: RUF012
    exception_handlers = OPENAI_EXCEPTION_HANDLERS  # type: ignore[assignment]

    @post(
        "/",
        summary="Upload a batch file (OpenAI-compatible)",
        dependencies=WRITES,
        request_max_body_size=None,
        status_code=200,
    )
    async def create_file(
        self,
        request: Request[Principal, Any, Any],
        files: Injected[FileService],
        services: Injected[Services],
        caller: Injected[Principal],
    ) -> dict[str, Any]:
        """Multipart ``file`` and ``purpose`` (``batch``), as ``files.create`` sends them."""
        upload = await receive_upload(request, files.scratch(), services.settings.batch.max_file_bytes)
        purpose = upload.fields.get("purpose", "batch")
        return file_object(await files.create(upload.path, upload.filename, purpose=purpose, key_id=caller.key_id))

    @get("/", summary="List files (OpenAI-compatible)")
    async def list_files(self, files: Injected[FileService]) -> dict[str, Any]:
        """OpenAI's list of ``FileObject``."""
        data = [file_object(row) for row in await files.list()]
        return {"object": "list", "data": data, "has_more": False}

    @get("/{file_id:str}", summary="Read a file (OpenAI-compatible)")
    async def get_file(self, files: Injected[FileService], file_id: FromPath[str]) -> dict[str, Any]:
        """One ``FileObject``."""
        return file_object(await files.get(file_id))

    @get("/{file_id:str}/content", summary="Download a file (OpenAI-compatible)", media_type="application/jsonl")
    async def get_file_content(self, files: Injected[FileService], file_id: FromPath[str]) -> File:
        """The file's lines (``files.content``)."""
        row, path = await files.content(file_id)
        return File(path, filename=row.filename, media_type="application/jsonl")

    @delete("/{file_id:str}", summary="Delete a file (OpenAI-compatible)", dependencies=WRITES, status_code=200)
    async def delete_file(self, files: Injected[FileService], file_id: FromPath[str]) -> dict[str, Any]:
        """OpenAI's deletion answer."""
        await files.delete(file_id)
        return {"id": file_id, "object": "file", "deleted": True}


class OpenAIBatchController(Controller):
    """``/v1/batches``."""

    path = "/v1/batches"
    tags = ["OpenAI-compatible"]
    dependencies = MANAGEMENT
    guards = [requires_scope("predict")]  # noqa: RUF012
    exception_handlers = OPENAI_EXCEPTION_HANDLERS  # type: ignore[assignment]

    @post("/", summary="Create a batch (OpenAI-compatible)", dependencies=WRITES, status_code=200)
    async def create_batch(
        self,
        batches: Injected[BatchService],
        services: Injected[Services],
        caller: Injected[Principal],
        audit: Injected[AuditTrail],
        data: Annotated[OpenAIBatchCreate, Body()],
    ) -> dict[str, Any]:
        """``batches.create``: the deployment is the ``model`` of the file's lines."""
        if data.endpoint != EMBEDDINGS:
            raise InvalidInputError(f"endpoint must be {EMBEDDINGS}: the only one this server batches")
        first = await batches.first_line(data.input_file_id)
        try:
            model = msgspec.json.decode(first, type=_FirstLine).body.get("model")
        except msgspec.DecodeError:
            model = None
        if not isinstance(model, str) or not model:
            raise InvalidInputError("the file's first line names no `body.model` (the deployment)")
        spec = await services.directory.by_name(caller, model)
        entry = services.inference.entry_for(spec)
        if entry.model.task != "embedding":
            raise InvalidInputError(f"deployment {spec.name!r} serves a {entry.model.task} model, not embeddings")
        job = await batches.create(
            data.input_file_id,
            spec,
            key_id=caller.key_id,
            completion_window=data.completion_window,
            metadata=data.metadata,
            endpoint=EMBEDDINGS,
        )
        audit.record("batch.created", "batch", job.id, batch_created(job, spec))
        return batch_object(job)

    @get("/", summary="List batches (OpenAI-compatible)")
    async def list_batches(self, batches: Injected[BatchService]) -> dict[str, Any]:
        """OpenAI's list of ``Batch``."""
        data = [batch_object(job) for job in await batches.list()]
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        return {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": False}

    @get("/{batch_id:str}", summary="Read a batch (OpenAI-compatible)")
    async def get_batch(self, batches: Injected[BatchService], batch_id: FromPath[str]) -> dict[str, Any]:
        """``batches.retrieve``."""
        return batch_object(await batches.get(batch_id))

    @post("/{batch_id:str}/cancel", summary="Cancel a batch (OpenAI-compatible)", dependencies=WRITES, status_code=200)
    async def cancel_batch(
        self, batches: Injected[BatchService], audit: Injected[AuditTrail], batch_id: FromPath[str]
    ) -> dict[str, Any]:
        """``batches.cancel``."""
        return batch_object(await cancel_audited(batches, audit, batch_id))
