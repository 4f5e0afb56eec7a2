"""Batch workers: every server process runs ``BatchSettings.workers`` of them (started with the app, like the
webhook dispatcher), and ``cloudeasyml worker`` runs them alone. Each claims a chunk (``queue.claim``), runs it
(``runner.ChunkRunner``) while renewing its lease, checkpoints it, and ends the job when its last chunk is done:
the parts are joined in chunk order into the output and error files, the job gets its final status and the
``batch.completed`` (or ``batch.failed``) event is written in the same transaction.

Nothing is kept in memory between chunks: a process that dies loses only its leases, which run out, and the job
resumes from its last checkpointed chunk in whichever process claims next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cloudeasyml.background import cancel_and_wait
from cloudeasyml.core.clock import utc_now
from cloudeasyml.db.models import BatchChunk, BatchFile, BatchJob
from cloudeasyml.domain.batch import queue
from cloudeasyml.domain.batch.files import new_file_id
from cloudeasyml.domain.batch.queue import Claim, Validation
from cloudeasyml.domain.batch.runner import ChunkRunner, JobFailed, QuotaPaused
from cloudeasyml.domain.batch.storage import FileStorage
from cloudeasyml.domain.webhooks.events import derived_event_id, emit, rfc3339
from cloudeasyml.settings import BatchSettings

__all__ = ("BatchWorker", "batch_event_data")

log = logging.getLogger(__name__)

SWEEP_EVERY_SECONDS = 30.0
"""How often a worker looks for expired files (jobs due to end are looked for whenever it finds no chunk)."""


def batch_event_data(job: BatchJob) -> dict[str, Any]:
    """The ``data`` of the ``batch.*`` events."""
    return {
        "batchId": job.id,
        "status": job.status,
        "deploymentId": str(job.deployment_id),
        "inputFileId": job.input_file_id,
        "outputFileId": job.output_file_id,
        "errorFileId": job.error_file_id,
        "counts": {"total": job.total, "completed": job.completed, "failed": job.failed},
        "message": job.message,
        "finishedAt": rfc3339(job.finished_at) if job.finished_at else None,
    }


class BatchWorker:
    """The batch workers of one process."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        runner: ChunkRunner,
        storage: FileStorage,
        settings: BatchSettings,
        *,
        retry_window_seconds: float = 86400.0,
    ) -> None:
        self._sessions = sessions
        self.runner = runner
        self._storage = storage
        self._settings = settings
        self._lease = timedelta(seconds=settings.lease_seconds)
        self._retry_window = timedelta(seconds=retry_window_seconds)
        self._tasks: list[asyncio.Task[None]] = []
        self._sweeping = asyncio.Lock()
        self._last_file_sweep = 0.0
        self._wake = asyncio.Event()

    def notify(self) -> None:
        """A job was submitted or cancelled in this process: idle workers look again now and then poll at the
        fastest rate again (on the event loop's thread; the job's transaction may commit just after this, which the
        next look, ``poll_interval_seconds`` later, sees).
        """
        self._wake.set()

    def start(self) -> None:
        """Start the workers (none with ``workers`` = 0)."""
        if self._tasks:
            return
        loop = asyncio.get_running_loop()
        # Made again on every start: asyncio's primitives bind to the first loop that waits on them, and an app
        # served a second time (a test harness, a restarted embedded server) runs on a new loop.
        self._wake = asyncio.Event()
        self._sweeping = asyncio.Lock()
        self._tasks = [loop.create_task(self._loop(), name=f"batch-worker-{n}") for n in range(self._settings.workers)]

    async def stop(self) -> None:
        """Stop the workers; a chunk being run goes back to pending at once (another process takes it)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            await cancel_and_wait(task)

    async def _loop(self) -> None:
        failures = 0
        idle = 0
        while True:
            try:
                busy = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a database outage or restart: keep the worker alive, retry
                if not failures:
                    log.warning("batch worker: %r; retrying with backoff", exc)
                failures += 1
                await asyncio.sleep(self.backoff(failures))
                continue
            if failures:
                log.warning("batch worker: working again after %d failed tries", failures)
            failures = 0
            if busy:
                idle = 0
                continue
            idle += 1
            if await self._idle_wait(self.idle_wait(idle)):
                idle = 0

    def idle_wait(self, idle_looks: int) -> float:
        """Seconds to wait after ``idle_looks`` looks in a row found nothing: the poll interval, doubled per look up
        to ``idle_poll_max_seconds``.
        """
        settings = self._settings
        most = max(settings.poll_interval_seconds, settings.idle_poll_max_seconds)
        return min(most, settings.poll_interval_seconds * 2 ** min(idle_looks - 1, 30))

    async def _idle_wait(self, seconds: float) -> bool:
        """Wait ``seconds`` or until ``notify``; whether it was ``notify``."""
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            return False
        self._wake.clear()
        return True

    def backoff(self, failures: int) -> float:
        """Seconds to wait after ``failures`` failed tries in a row: the poll interval, doubled per failure up to
        ``retry_backoff_max_seconds``, with jitter (the workers of every pod fail together when the database goes
        away; they should not all come back in the same instant).
        """
        most = self._settings.retry_backoff_max_seconds
        base = min(most, self._settings.poll_interval_seconds * 2 ** min(failures - 1, 30))
        return base * random.uniform(0.5, 1.0)

    async def run_once(self) -> bool:
        """Check one ``validating`` job's input, or claim and run one chunk; when there is neither, end the jobs
        that are due. Whether there was work.
        """
        async with self._sessions() as session:
            checking = await queue.claim_validation(session, self._lease)
        if checking is not None:
            await self._validate(checking)
            return True
        async with self._sessions() as session:
            held = await queue.claim(session, self._lease)
        if held is None:
            await self.sweep()
            return False
        await self._process(held)
        return True

    async def _process(self, held: Claim) -> None:
        heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(held))
        try:
            completed, failed = await self.runner.run(held)
        except QuotaPaused as exc:
            until = utc_now() + timedelta(seconds=self._settings.quota_pause_seconds)
            message = f"paused until {rfc3339(until)}: {exc}"
            async with self._sessions() as session:
                await queue.release(session, held, pause_until=until, message=message)
            return
        except JobFailed as exc:
            await self.finish(held.job_id, "failed", message=str(exc))
            return
        except BaseException:
            # Stopping (or an unexpected error): give the chunk back now rather than when its lease runs out.
            with contextlib.suppress(Exception):
                async with self._sessions() as session:
                    await asyncio.shield(queue.release(session, held))
            raise
        finally:
            await cancel_and_wait(heartbeat)
        if await self._checkpoint(held, completed, failed):
            await self.finish(held.job_id, "completed")

    async def _validate(self, job: Validation) -> None:
        """Check a job's input: queue it if any line is valid, else fail it with every line in its error file."""
        job_id = job.claim.job_id
        try:
            checked = await self.runner.validate(job)
        except JobFailed as exc:
            await self.finish(job_id, "failed", message=str(exc))
            return
        if checked.failed_by_chunk is None:
            async with self._sessions() as session:
                await queue.end_validation(session, job_id)
            return
        async with self._sessions() as session:
            if not await queue.fail_every_line(session, job_id, checked.failed_by_chunk):
                return
        lines = checked.malformed
        message = f"the input file has no valid line ({lines} malformed; the error file has each one)"
        if checked.first_problem:
            message += f"; the first: {checked.first_problem}"
        await self.finish(job_id, "failed", message=message[:500])

    async def _checkpoint(self, held: Claim, completed: int, failed: int) -> bool:
        """Checkpoint, retrying through a database outage while the lease lasts (after that another worker has
        run the chunk again, or will).
        """
        deadline = time.monotonic() + self._settings.lease_seconds
        while True:
            try:
                async with self._sessions() as session:
                    return await queue.checkpoint(session, held, completed, failed)
            except Exception as exc:  # noqa: BLE001 - a database outage: retry, the part stays on disk
                if time.monotonic() > deadline:
                    log.warning(
                        "batch %s chunk %d: checkpoint failed (%r); it will run again", held.job_id, held.index, exc
                    )
                    return False
                await asyncio.sleep(min(1.0, self._settings.poll_interval_seconds))

    async def _heartbeat(self, held: Claim) -> None:
        while True:
            await asyncio.sleep(self._settings.lease_seconds / 3)
            with contextlib.suppress(Exception):
                async with self._sessions() as session:
                    await queue.renew(session, held, self._lease)

    async def sweep(self) -> None:
        """End the jobs that are due (``queue.jobs_to_finish``) and, now and then, delete expired files."""
        if self._sweeping.locked():
            return
        async with self._sweeping:
            async with self._sessions() as session:
                due = await queue.jobs_to_finish(session)
            for job_id, status in due:
                await self.finish(job_id, status)
            now = time.monotonic()
            if now - self._last_file_sweep >= SWEEP_EVERY_SECONDS:
                self._last_file_sweep = now
                async with self._sessions() as session:
                    gone = await queue.expired_files(session)
                for tenant_id, file_id in gone:
                    self._storage.remove(self._storage.path(tenant_id, file_id))

    async def finish(self, job_id: str, status: str, *, message: str | None = None) -> bool:
        """End a job in ``status``: join the parts of its done chunks, in order, into its output and error files,
        and record the end (with its event) if no other process did first. Whether this call ended it.
        """
        async with self._sessions() as session:
            job = await session.get(BatchJob, job_id)
            if job is None:
                return False
            allowed = ("cancelling",) if status == "cancelled" else ("validating", *queue.RUNNABLE)
            if job.status not in allowed:
                return False
            indexes = list(
                await session.scalars(
                    select(BatchChunk.index)
                    .where(BatchChunk.job_id == job_id, BatchChunk.status == "done")
                    .order_by(BatchChunk.index)
                )
            )
            tenant_id, was = job.tenant_id, job.status
        # Files of this call's own (new ids): were two processes to end the job at once, the one whose update loses
        # must not have overwritten the winner's files (it may even join after the winner removed the parts).
        out_id, err_id = new_file_id(), new_file_id()
        storage = self._storage
        out_size, out_lines = await asyncio.to_thread(
            storage.join, storage.path(tenant_id, out_id), [storage.part(tenant_id, job_id, i, "out") for i in indexes]
        )
        err_size, err_lines = await asyncio.to_thread(
            storage.join, storage.path(tenant_id, err_id), [storage.part(tenant_id, job_id, i, "err") for i in indexes]
        )
        now = utc_now()
        expires = now + timedelta(seconds=self._settings.file_expiry_seconds)
        won = False
        try:
            async with self._sessions() as session, session.begin():
                ended = await session.execute(
                    update(BatchJob)
                    .where(BatchJob.id == job_id, BatchJob.status == was)
                    .values(
                        status=status,
                        finished_at=now,
                        output_file_id=out_id,
                        error_file_id=err_id if err_lines else None,
                        message=message,
                        paused_until=None,
                    )
                )
                if queue.rowcount(ended) != 1:
                    await session.rollback()
                    return False
                files = [(out_id, "output", out_size, out_lines)]
                if err_lines:
                    files.append((err_id, "error", err_size, err_lines))
                session.add_all(
                    BatchFile(
                        id=file_id,
                        tenant_id=tenant_id,
                        filename=f"{job_id}_{kind}.jsonl",
                        purpose=f"batch_{kind}",
                        bytes=size,
                        lines=lines,
                        created_at=now,
                        expires_at=expires,
                    )
                    for file_id, kind, size, lines in files
                )
                job = await session.get(BatchJob, job_id, populate_existing=True)
                assert job is not None
                event = "batch.failed" if status == "failed" else "batch.completed"
                await emit(
                    session,
                    tenant_id,
                    event,
                    batch_event_data(job),
                    event_id=derived_event_id(event, job_id),
                    retry_window=self._retry_window,
                )
            won = True
        finally:
            if not won:
                storage.remove(storage.path(tenant_id, out_id))
            if not (won and err_lines):
                storage.remove(storage.path(tenant_id, err_id))
        storage.remove_parts(tenant_id, job_id)
        return True
