"""Batch inference: ``/files`` (JSON Lines inputs and results) and ``/batches`` (jobs over them). ``files`` and
``batches`` are scoped to the caller's tenant (see ``api.deps``).
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, delete, get, post
from litestar.params import Body, FromPath, FromQuery
from litestar.response import File

from cloudeasyml.api.auth import requires_scope
from cloudeasyml.api.batch_audit import batch_created, cancel_audited
from cloudeasyml.api.batch_schemas import BatchCreate, BatchRead, FileRead
from cloudeasyml.api.deps import MANAGEMENT, WRITES, Injected
from cloudeasyml.api.uploads import receive_upload
from cloudeasyml.domain.audit import AuditTrail
from cloudeasyml.domain.batch.files import FileService
from cloudeasyml.domain.batch.jobs import BatchService
from cloudeasyml.domain.principal import Principal
from cloudeasyml.services import Services

__all__ = ("BatchController", "FileController")

_GUARDS = [requires_scope("predict")]
JSONL = "application/jsonl"


class FileController(Controller):
    """Upload, list, read, download and delete batch files."""

    path = "/files"
    tags = ["Batch inference"]
    dependencies = MANAGEMENT
    guards = _GUARDS

    @post(
        "/",
        summary="Upload a JSON Lines file",
        dependencies=WRITES,
        request_max_body_size=None,  # bounded by CLOUDEASYML_BATCH__MAX_FILE_BYTES while it streams to disk
    )
    async def create_file(
        self,
        request: Request[Principal, Any, Any],
        files: Injected[FileService],
        services: Injected[Services],
        caller: Injected[Principal],
        filename: FromQuery[str | None] = None,
    ) -> FileRead:
        """The body is the file (``application/jsonl``; name it with ``?filename=``) or ``multipart/form-data``
        with a ``file`` part. One input per line: ``{"input": <one input of the model>, "customId"?: "..."}``.
        """
        upload = await receive_upload(request, files.scratch(), services.settings.batch.max_file_bytes)
        name = filename or upload.filename
        return FileRead.of(await files.create(upload.path, name, key_id=caller.key_id))

    @get("/", summary="List files")
    async def list_files(self, files: Injected[FileService], purpose: FromQuery[str | None] = None) -> list[FileRead]:
        """The tenant's files, newest first (at most 100)."""
        return [FileRead.of(row) for row in await files.list(purpose=purpose)]

    @get("/{file_id:str}", summary="Read a file's metadata")
    async def get_file(self, files: Injected[FileService], file_id: FromPath[str]) -> FileRead:
        """One file; another tenant's is a 404."""
        return FileRead.of(await files.get(file_id))

    @get("/{file_id:str}/content", summary="Download a file", media_type=JSONL)
    async def get_file_content(self, files: Injected[FileService], file_id: FromPath[str]) -> File:
        """The file's lines as stored (an output file: one line per input line that completed, in input order)."""
        row, path = await files.content(file_id)
        return File(path, filename=row.filename, media_type=JSONL, content_disposition_type="attachment")

    @delete("/{file_id:str}", summary="Delete a file", dependencies=WRITES)
    async def delete_file(self, files: Injected[FileService], file_id: FromPath[str]) -> None:
        """Delete a file; the input of an unfinished job is a 409."""
        await files.delete(file_id)


class BatchController(Controller):
    """Create, list, read and cancel batch jobs."""

    path = "/batches"
    tags = ["Batch inference"]
    dependencies = MANAGEMENT
    guards = _GUARDS

    @post("/", summary="Create a batch job", dependencies=WRITES, status_code=201)
    async def create_batch(
        self,
        batches: Injected[BatchService],
        services: Injected[Services],
        caller: Injected[Principal],
        audit: Injected[AuditTrail],
        data: Annotated[BatchCreate, Body()],
    ) -> BatchRead:
        """Run every line of ``inputFileId`` on ``deploymentId``, in the background, at the batch price. Lines
        that fail go to the error file with their line number, ``customId`` and problem details.
        """
        spec = await services.directory.by_id(caller, data.deployment_id)
        services.inference.entry_for(spec)  # the model is installed
        job = await batches.create(
            data.input_file_id,
            spec,
            key_id=caller.key_id,
            completion_window=data.completion_window,
            metadata=data.metadata,
        )
        audit.record("batch.created", "batch", job.id, batch_created(job, spec))
        return BatchRead.of(job)

    @get("/", summary="List batch jobs")
    async def list_batches(self, batches: Injected[BatchService]) -> list[BatchRead]:
        """The tenant's jobs, newest first (at most 100)."""
        return [BatchRead.of(row) for row in await batches.list()]

    @get("/{batch_id:str}", summary="Read a batch job")
    async def get_batch(self, batches: Injected[BatchService], batch_id: FromPath[str]) -> BatchRead:
        """Its status, counts and, once it has ended, its output and error files."""
        return BatchRead.of(await batches.get(batch_id))

    @post("/{batch_id:str}/cancel", summary="Cancel a batch job", dependencies=WRITES, status_code=200)
    async def cancel_batch(
        self, batches: Injected[BatchService], audit: Injected[AuditTrail], batch_id: FromPath[str]
    ) -> BatchRead:
        """Stop starting chunks; the job is ``cancelling`` until the running ones finish, then ``cancelled`` with
        what finished in its output (and billed).
        """
        return BatchRead.of(await cancel_audited(batches, audit, batch_id))
