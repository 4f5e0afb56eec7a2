"""A tenant's batch files: JSON Lines inputs it uploads, and the output and error files its jobs produce."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cloudeasyml.core.clock import utc_now
from cloudeasyml.db.models import BatchFile, BatchJob, Tenant
from cloudeasyml.domain.batch.storage import FileStorage
from cloudeasyml.errors import ConflictError, InvalidInputError, NotFoundError, StorageQuotaExceededError
from cloudeasyml.settings import BatchSettings

__all__ = ("ACTIVE_STATUSES", "FileService", "new_file_id")

ACTIVE_STATUSES = ("validating", "queued", "running", "cancelling")
"""Statuses of a job that still reads its input file."""

PURPOSES = ("batch", "batch_output", "batch_error")


def new_file_id() -> str:
    """``file-`` + 24 hex digits."""
    return f"file-{uuid.uuid4().hex[:24]}"


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


class FileService:
    """One tenant's files; every query filters on its ``tenant_id``."""

    def __init__(
        self, session: AsyncSession, tenant_id: uuid.UUID, storage: FileStorage, settings: BatchSettings
    ) -> None:
        self._session = session
        self._tenant_id = tenant_id
        self._storage = storage
        self._settings = settings

    def scratch(self) -> Path:
        """A directory where an upload in progress is written (then ``create`` moves it into place)."""
        return self._storage.scratch(self._tenant_id)

    async def create(self, upload: Path, filename: str, *, purpose: str = "batch", key_id: str | None) -> BatchFile:
        """Store an uploaded file (already written to ``upload``, within the size limit) under the tenant.

        Raises:
            InvalidInputError: An empty file or an unknown purpose.
            StorageQuotaExceededError: The tenant's files would pass ``tenant_storage_bytes`` (409).
        """
        try:
            if purpose != "batch":
                raise InvalidInputError(f"purpose must be 'batch', not {purpose!r}")
            size = upload.stat().st_size
            lines = await asyncio.to_thread(_count_lines, upload)  # before the lock below: it may take a while
            if lines == 0:
                raise InvalidInputError("the file holds no lines; one JSON object per line is expected")
            await self._lock_storage()
            used = await self.used_bytes()
            if used + size > self._settings.tenant_storage_bytes:
                raise StorageQuotaExceededError(
                    f"the tenant's files would take {used + size} bytes, over its quota of "
                    f"{self._settings.tenant_storage_bytes}; delete files to make room"
                )
        except BaseException:
            upload.unlink(missing_ok=True)
            raise
        now = utc_now()
        row = BatchFile(
            id=new_file_id(),
            tenant_id=self._tenant_id,
            filename=filename[:255] or "upload.jsonl",
            purpose=purpose,
            bytes=size,
            lines=lines,
            created_by_key_id=key_id,
            created_at=now,
            expires_at=now + timedelta(seconds=self._settings.file_expiry_seconds),
        )
        self._storage.adopt(self._storage.path(self._tenant_id, row.id), upload)
        self._session.add(row)
        await self._session.flush()
        return row

    async def _lock_storage(self) -> None:
        """Hold the tenant's storage until this transaction ends, so that two uploads cannot both read the bytes
        used, both fit, and together pass the quota: the second reads the bytes used only once the first has
        committed its file (or given up).

        PostgreSQL: the tenant's row ``FOR NO KEY UPDATE`` (new rows that reference the tenant are not blocked).
        SQLite takes no row locks: a write (the row's name set to itself) takes the database's write lock, and the
        reads after it see every commit before it.
        """
        if self._session.get_bind().dialect.name == "postgresql":
            query = select(Tenant.id).where(Tenant.id == self._tenant_id).with_for_update(key_share=True)
            await self._session.execute(query)
        else:
            await self._session.execute(update(Tenant).where(Tenant.id == self._tenant_id).values(name=Tenant.name))

    async def used_bytes(self) -> int:
        """Bytes of the tenant's files."""
        total = await self._session.scalar(
            select(func.coalesce(func.sum(BatchFile.bytes), 0)).where(BatchFile.tenant_id == self._tenant_id)
        )
        return int(total or 0)

    async def list(self, *, limit: int = 100, purpose: str | None = None) -> list[BatchFile]:
        """The tenant's files, newest first."""
        query = select(BatchFile).where(BatchFile.tenant_id == self._tenant_id)
        if purpose is not None:
            query = query.where(BatchFile.purpose == purpose)
        rows = await self._session.scalars(query.order_by(BatchFile.created_at.desc()).limit(limit))
        return list(rows)

    async def get(self, file_id: str) -> BatchFile:
        """One file; another tenant's, or an expired one, is a ``NotFoundError``."""
        row = await self._session.get(BatchFile, file_id)
        if row is None or row.tenant_id != self._tenant_id or row.expires_at <= utc_now():
            raise NotFoundError(f"no file {file_id!r}")
        return row

    async def content(self, file_id: str) -> tuple[BatchFile, Path]:
        """A file and where its content is."""
        row = await self.get(file_id)
        return row, self._storage.path(self._tenant_id, row.id)

    async def delete(self, file_id: str) -> None:
        """Delete a file; the input of a job still running is a ``ConflictError``."""
        row = await self.get(file_id)
        busy = await self._session.scalar(
            select(BatchJob.id).where(
                BatchJob.tenant_id == self._tenant_id,
                BatchJob.input_file_id == file_id,
                BatchJob.status.in_(ACTIVE_STATUSES),
            )
        )
        if busy is not None:
            raise ConflictError(f"file {file_id!r} is the input of batch {busy!r}, which is not finished")
        await self._session.delete(row)
        await self._session.flush()
        self._storage.remove(self._storage.path(self._tenant_id, file_id))
