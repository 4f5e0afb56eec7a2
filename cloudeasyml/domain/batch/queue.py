"""The database as the queue of batch chunks: claims under a lease, checkpoints, and a job's end.

A worker claims the next chunk of the job whose chunks were claimed longest ago (round-robin between jobs, so one
tenant's huge job does not starve another's small one): pending, or running under a lease that has run out (its
worker died). On PostgreSQL the candidate row is locked with ``FOR UPDATE SKIP LOCKED``, so workers of several
pods pass each other by instead of queueing on one row; on both databases the claim is a conditional update of
the row as it was read (its status and attempt count), so two workers never hold one chunk's lease.

A chunk is checkpointed (``done``) only by the worker holding its current attempt, after its output part is on
disk and its usage journaled; a worker that lost its lease finds its checkpoint refused and the chunk's new holder
writes the same part again (a whole-file replace: no line twice).
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import and_, delete, exists, func, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from cloudeasyml.core.clock import utc_now
from cloudeasyml.db.models import BatchChunk, BatchFile, BatchJob, Tenant

__all__ = (
    "RUNNABLE",
    "Claim",
    "Validation",
    "checkpoint",
    "claim",
    "claim_validation",
    "end_validation",
    "fail_every_line",
    "expired_files",
    "jobs_to_finish",
    "release",
    "renew",
    "rowcount",
)

RUNNABLE = ("queued", "running")


def worker_name() -> str:
    """This process, as chunks record who claimed them (read per claim: a forked process has its own pid)."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}"


class Claim(msgspec.Struct, frozen=True):
    """A chunk held by this worker until ``lease_until`` (renewed while it runs)."""

    job_id: str
    index: int
    attempt: int
    tenant_id: uuid.UUID
    plan: str
    key_id: str | None
    deployment_id: uuid.UUID
    deployment_name: str
    input_file_id: str
    endpoint: str | None
    first_line: int
    byte_start: int
    byte_end: int


class Validation(msgspec.Struct, frozen=True):
    """A ``validating`` job held by this worker while it checks the job's input file: the job's chunks, as
    ``(index, first line, byte start, byte end)``, and what running them would need.
    """

    claim: Claim
    chunks: list[tuple[int, int, int, int]]


def rowcount(result: Any) -> int:
    """Rows an UPDATE or DELETE matched."""
    return result.rowcount if isinstance(result, CursorResult) else 0


async def claim(session: AsyncSession, lease: timedelta) -> Claim | None:
    """Take the next chunk (see the module's docstring), in its own transaction; None when there is none now."""
    now = utc_now()
    claimable = or_(BatchChunk.status == "pending", and_(BatchChunk.status == "running", BatchChunk.lease_until < now))
    query = (
        select(BatchChunk.job_id, BatchChunk.index, BatchChunk.attempts, BatchChunk.status)
        .join(BatchJob, BatchJob.id == BatchChunk.job_id)
        # A suspended tenant's jobs wait (their chunks running now finish); they go on once it is resumed.
        .join(Tenant, Tenant.id == BatchJob.tenant_id)
        .where(
            Tenant.suspended_at.is_(None),
            BatchJob.status.in_(RUNNABLE),
            BatchJob.expires_at > now,
            or_(BatchJob.paused_until.is_(None), BatchJob.paused_until <= now),
            claimable,
        )
        .order_by(
            BatchJob.last_claimed_at.asc().nulls_first(), BatchJob.created_at, BatchChunk.job_id, BatchChunk.index
        )
        .limit(1)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=BatchChunk)
    async with session.begin():
        row = (await session.execute(query)).first()
        if row is None:
            return None
        job_id, index, attempts, status = row
        taken = await session.execute(
            update(BatchChunk)
            .where(
                BatchChunk.job_id == job_id,
                BatchChunk.index == index,
                BatchChunk.attempts == attempts,
                BatchChunk.status == status,
            )
            .values(status="running", attempts=attempts + 1, lease_until=now + lease, worker=worker_name())
        )
        if rowcount(taken) != 1:
            return None
        await session.execute(
            update(BatchJob)
            .where(BatchJob.id == job_id, BatchJob.status.in_(RUNNABLE))
            .values(last_claimed_at=now, status="running", started_at=func.coalesce(BatchJob.started_at, now))
        )
        found = (
            await session.execute(
                select(BatchJob, BatchChunk, Tenant.plan)
                .join(BatchChunk, BatchChunk.job_id == BatchJob.id)
                .join(Tenant, Tenant.id == BatchJob.tenant_id)
                .where(BatchJob.id == job_id, BatchChunk.index == index)
            )
        ).one()
        job, chunk, plan = found
        return Claim(
            job_id=job.id,
            index=chunk.index,
            attempt=attempts + 1,
            tenant_id=job.tenant_id,
            plan=plan,
            key_id=job.created_by_key_id,
            deployment_id=job.deployment_id,
            deployment_name=job.deployment_name,
            input_file_id=job.input_file_id,
            endpoint=job.endpoint,
            first_line=chunk.first_line,
            byte_start=chunk.byte_start,
            byte_end=chunk.byte_end,
        )


async def claim_validation(session: AsyncSession, lease: timedelta) -> Validation | None:
    """Take a ``validating`` job to check its input, in its own transaction; None when there is none now.

    A validating job's ``last_claimed_at`` is its validator's lease (round-robin between running jobs reads it only
    once they are queued): a job claimed for validation longer than ``lease`` ago (its worker died) is taken again.
    Checking is idempotent, and only one checker's ``end_validation`` wins.
    """
    now = utc_now()
    claimable = and_(
        BatchJob.status == "validating",
        or_(BatchJob.last_claimed_at.is_(None), BatchJob.last_claimed_at < now - lease),
    )
    query = (
        select(BatchJob.id)
        .join(Tenant, Tenant.id == BatchJob.tenant_id)
        .where(claimable, Tenant.suspended_at.is_(None))  # a suspended tenant's jobs wait, checks included
        .order_by(BatchJob.created_at)
        .limit(1)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=BatchJob)
    async with session.begin():
        job_id = await session.scalar(query)
        if job_id is None:
            return None
        taken = await session.execute(
            update(BatchJob).where(BatchJob.id == job_id, claimable).values(last_claimed_at=now)
        )
        if rowcount(taken) != 1:
            return None
        job, plan = (
            await session.execute(
                select(BatchJob, Tenant.plan).join(Tenant, Tenant.id == BatchJob.tenant_id).where(BatchJob.id == job_id)
            )
        ).one()
        chunks = (
            await session.execute(
                select(BatchChunk.index, BatchChunk.first_line, BatchChunk.byte_start, BatchChunk.byte_end)
                .where(BatchChunk.job_id == job_id)
                .order_by(BatchChunk.index)
            )
        ).all()
        claim = Claim(
            job_id=job.id,
            index=-1,
            attempt=0,
            tenant_id=job.tenant_id,
            plan=plan,
            key_id=job.created_by_key_id,
            deployment_id=job.deployment_id,
            deployment_name=job.deployment_name,
            input_file_id=job.input_file_id,
            endpoint=job.endpoint,
            first_line=0,
            byte_start=0,
            byte_end=0,
        )
        return Validation(claim, [(i, first, start, end) for i, first, start, end in chunks])


async def end_validation(session: AsyncSession, job_id: str) -> bool:
    """A checked job with valid lines is ``queued`` for the workers (first in the round-robin: never claimed).
    False if it is no longer validating (cancelled, expired, or queued by another checker).
    """
    async with session.begin():
        result = await session.execute(
            update(BatchJob)
            .where(BatchJob.id == job_id, BatchJob.status == "validating")
            .values(status="queued", last_claimed_at=None)
        )
        return rowcount(result) == 1


async def fail_every_line(session: AsyncSession, job_id: str, failed: dict[int, int]) -> bool:
    """A checked job with no valid line: each chunk is done with its lines failed (``failed`` by chunk index; their
    error parts are on disk), so that ending the job joins them into its error file. False if the job is no longer
    validating.
    """
    async with session.begin():
        job = await session.get(BatchJob, job_id, with_for_update=True)
        if job is None or job.status != "validating":
            return False
        for index, count in failed.items():
            await session.execute(
                update(BatchChunk)
                .where(BatchChunk.job_id == job_id, BatchChunk.index == index)
                .values(status="done", completed=0, failed=count, lease_until=None)
            )
        job.failed = sum(failed.values())
        return True


def _held(held: Claim) -> Any:
    return and_(
        BatchChunk.job_id == held.job_id,
        BatchChunk.index == held.index,
        BatchChunk.attempts == held.attempt,
        BatchChunk.status == "running",
    )


async def renew(session: AsyncSession, held: Claim, lease: timedelta) -> bool:
    """Extend the lease of a chunk still held; False if another worker has taken it."""
    async with session.begin():
        result = await session.execute(update(BatchChunk).where(_held(held)).values(lease_until=utc_now() + lease))
        return rowcount(result) == 1


async def release(
    session: AsyncSession, held: Claim, *, pause_until: datetime | None = None, message: str = ""
) -> None:
    """Give a held chunk back (pending again, its attempt counted); with ``pause_until``, the job waits until then
    and says why in its ``message``.
    """
    async with session.begin():
        await session.execute(update(BatchChunk).where(_held(held)).values(status="pending", lease_until=None))
        if pause_until is not None:
            await session.execute(
                update(BatchJob).where(BatchJob.id == held.job_id).values(paused_until=pause_until, message=message)
            )


async def checkpoint(session: AsyncSession, held: Claim, completed: int, failed: int) -> bool:
    """Mark a held chunk done and add its counts to its job, in one transaction. False (nothing changed) if the
    chunk is no longer this worker's. Returns whether the job has no chunk left to run.
    """
    async with session.begin():
        result = await session.execute(
            update(BatchChunk)
            .where(_held(held))
            .values(status="done", lease_until=None, completed=completed, failed=failed)
        )
        if rowcount(result) != 1:
            return False
        await session.execute(
            update(BatchJob)
            .where(BatchJob.id == held.job_id)
            .values(
                completed=BatchJob.completed + completed,
                failed=BatchJob.failed + failed,
                paused_until=None,
                message=None,
            )
        )
        left = await session.scalar(
            select(func.count()).where(BatchChunk.job_id == held.job_id, BatchChunk.status != "done")
        )
        return left == 0


async def jobs_to_finish(session: AsyncSession, limit: int = 20) -> list[tuple[str, str]]:
    """Jobs whose end is due, with the status to end them in: runnable jobs with every chunk done (``completed``),
    cancelling jobs with no chunk under a live lease (``cancelled``), runnable jobs past their window (``expired``).
    """
    now = utc_now()
    unfinished = exists().where(BatchChunk.job_id == BatchJob.id, BatchChunk.status != "done")
    running = exists().where(
        BatchChunk.job_id == BatchJob.id, BatchChunk.status == "running", BatchChunk.lease_until > now
    )
    due: list[tuple[str, str]] = []
    async with session.begin():
        for condition, target in (
            (and_(BatchJob.status.in_(RUNNABLE), ~unfinished), "completed"),
            (and_(BatchJob.status == "cancelling", ~running), "cancelled"),
            (and_(BatchJob.status.in_(("validating", *RUNNABLE)), BatchJob.expires_at <= now), "expired"),
        ):
            ids = await session.scalars(select(BatchJob.id).where(condition).limit(limit))
            due.extend((job_id, target) for job_id in ids)
    return due


async def expired_files(session: AsyncSession, limit: int = 100) -> list[tuple[uuid.UUID, str]]:
    """Files past their expiry, deleted from the table here (the caller deletes their content)."""
    async with session.begin():
        rows = (
            await session.execute(
                select(BatchFile.tenant_id, BatchFile.id).where(BatchFile.expires_at <= utc_now()).limit(limit)
            )
        ).all()
        for _, file_id in rows:
            await session.execute(delete(BatchFile).where(BatchFile.id == file_id))
    return [(tenant_id, file_id) for tenant_id, file_id in rows]
