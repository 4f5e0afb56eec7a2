"""A tenant's batch jobs: made from an uploaded file and a deployment, read, listed and cancelled. Running them is
the workers' part (``cloudeasyml.domain.batch.worker``).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cloudeasyml.core.clock import utc_now
from cloudeasyml.db.models import BatchChunk, BatchJob
from cloudeasyml.domain.batch.files import FileService
from cloudeasyml.domain.batch.storage import FileStorage, chunk_offsets
from cloudeasyml.errors import ConflictError, InvalidInputError, NotFoundError
from cloudeasyml.runtime.registry import DeploymentSpec
from cloudeasyml.settings import BatchSettings

__all__ = ("FINAL_STATUSES", "STATUSES", "BatchService", "parse_window")

STATUSES = ("validating", "queued", "running", "completed", "failed", "cancelling", "cancelled", "expired")
FINAL_STATUSES = ("completed", "failed", "cancelled", "expired")

_WINDOW = re.compile(r"([1-9][0-9]{0,3})h")


def parse_window(window: str | None, most_seconds: float) -> float:
    """``"24h"`` as seconds; None: ``most_seconds``. A window longer than ``most_seconds`` is refused."""
    if window is None:
        return most_seconds
    match = _WINDOW.fullmatch(window)
    if match is None:
        raise InvalidInputError(f"completionWindow must be hours, like '24h', not {window!r}")
    seconds = int(match.group(1)) * 3600.0
    if seconds > most_seconds:
        raise InvalidInputError(f"completionWindow may be at most {most_seconds / 3600:g}h")
    return seconds


class BatchService:
    """The caller's tenant's jobs; every query filters on its ``tenant_id``."""

    def __init__(
        self,
        session: AsyncSession,
        tenant_id: uuid.UUID,
        storage: FileStorage,
        settings: BatchSettings,
        notify: Callable[[], None] = lambda: None,
    ) -> None:
        self._session = session
        self._tenant_id = tenant_id
        self._storage = storage
        self._settings = settings
        self._notify = notify
        """Wakes this process's idle batch workers (``BatchWorker.notify``) after a job is created or cancelled."""

    @property
    def files(self) -> FileService:
        """The same tenant's files."""
        return FileService(self._session, self._tenant_id, self._storage, self._settings)

    async def create(
        self,
        input_file_id: str,
        spec: DeploymentSpec,
        *,
        key_id: str | None,
        completion_window: str | None = None,
        metadata: dict[str, Any] | None = None,
        endpoint: str | None = None,
    ) -> BatchJob:
        """A job over ``input_file_id`` on the deployment ``spec`` (the caller's, looked up by the caller), in
        chunks of ``chunk_lines`` lines: ``validating`` until a worker has checked its lines, then ``queued``.
        """
        window = parse_window(completion_window, self._settings.completion_window_seconds)
        if spec.tenant_id != self._tenant_id:  # the caller looked it up under its own tenant: never true
            raise NotFoundError(f"no deployment {spec.id}")
        source = await self.files.get(input_file_id)
        if source.purpose != "batch":
            raise InvalidInputError(f"file {input_file_id!r} is a {source.purpose} file, not a batch input")
        path = self._storage.path(self._tenant_id, source.id)
        offsets, total = await asyncio.to_thread(chunk_offsets, path, self._settings.chunk_lines)
        now = utc_now()
        job = BatchJob(
            id=f"batch_{uuid.uuid4().hex[:24]}",
            tenant_id=self._tenant_id,
            deployment_id=spec.id,
            deployment_name=spec.name,
            input_file_id=source.id,
            endpoint=endpoint,
            status="validating",  # a worker checks the input's lines, then queues it (or fails it: none valid)
            total=total,
            completed=0,
            failed=0,
            meta=metadata,
            last_claimed_at=None,
            created_by_key_id=key_id,
            created_at=now,
            expires_at=now + timedelta(seconds=window),
        )
        self._session.add(job)
        await self._session.flush()
        self._session.add_all(
            BatchChunk(
                job_id=job.id,
                index=index,
                first_line=first,
                byte_start=start,
                byte_end=end,
                status="pending",
                attempts=0,
                completed=0,
                failed=0,
            )
            for index, (first, start, end) in enumerate(offsets)
        )
        await self._session.flush()
        self._notify()
        return job

    async def list(self, *, limit: int = 100) -> list[BatchJob]:
        """The tenant's jobs, newest first."""
        query = select(BatchJob).where(BatchJob.tenant_id == self._tenant_id)
        return list(await self._session.scalars(query.order_by(BatchJob.created_at.desc()).limit(limit)))

    async def first_line(self, input_file_id: str) -> bytes:
        """The first non-blank line of one of the tenant's input files (an OpenAI batch names its deployment in
        every line's ``model``).
        """
        source = await self.files.get(input_file_id)
        return await asyncio.to_thread(_first_line, self._storage.path(self._tenant_id, source.id))

    async def get(self, job_id: str) -> BatchJob:
        """One job; another tenant's is a ``NotFoundError``."""
        row = await self._session.get(BatchJob, job_id, populate_existing=True)
        if row is None or row.tenant_id != self._tenant_id:
            raise NotFoundError(f"no batch {job_id!r}")
        return row

    async def cancel(self, job_id: str) -> BatchJob:
        """Stop a job: no more chunks start; it is ``cancelling`` until the chunks running now finish, then
        ``cancelled`` with the lines done so far in its output (and billed). A finished job is a ``ConflictError``.
        """
        job = await self.get(job_id)
        if job.status in ("cancelling", "cancelled"):
            return job
        if job.status in FINAL_STATUSES:
            raise ConflictError(f"batch {job_id!r} is {job.status} already")
        job.status = "cancelling"
        job.cancelled_at = utc_now()
        await self._session.flush()
        self._notify()  # a worker's sweep ends it once its running chunks are done
        return job


def _first_line(path: Path) -> bytes:
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                return line
    return b""
