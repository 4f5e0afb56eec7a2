"""Running one claimed chunk: read its lines, run the valid ones through the one data plane
(``InferenceService.execute``, at the batcher's background priority, billed as ``batch`` under an id derived from the
job and chunk), and write its output and error parts.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import msgspec

from cloudeasyml.domain.batch.lines import Describe, Line, LineFormat, line_format
from cloudeasyml.domain.batch.queue import Claim, Validation
from cloudeasyml.domain.batch.storage import FileStorage
from cloudeasyml.domain.deployment_directory import DeploymentDirectory
from cloudeasyml.domain.inference import InferenceService
from cloudeasyml.domain.principal import Principal
from cloudeasyml.domain.request_context import RequestContext
from cloudeasyml.errors import (
    CloudEasyMLError,
    InvalidInputError,
    ModelNotReadyError,
    NotFoundError,
    RequestCapReachedError,
    SpendCapReachedError,
)
from cloudeasyml.plugins.catalog import CatalogEntry
from cloudeasyml.runtime.batcher import BatchResult
from cloudeasyml.runtime.registry import DeploymentSpec, LoadedDeployment

__all__ = ("ChunkRunner", "Checked", "JobFailed", "QuotaPaused", "chunk_request_id")

_USAGE = uuid.UUID("6e1f0a3b-2d4c-4e5f-8a9b-0c1d2e3f4a5b")


def chunk_request_id(job_id: str, index: int, line: int | None = None) -> str:
    """The usage record's request id of a chunk (or of one of its lines, run alone): the same on every run, so a
    retried chunk is billed once.
    """
    return str(uuid.uuid5(_USAGE, f"{job_id}/{index}" if line is None else f"{job_id}/{index}/{line}"))


class QuotaPaused(Exception):
    """The tenant reached a monthly cap: the chunk goes back and the job waits."""


class JobFailed(Exception):
    """The job cannot run at all (its deployment or its input is gone): it fails with this message."""


class Checked(msgspec.Struct, frozen=True):
    """What checking a job's input found: its valid and malformed lines, the first problem, and, when no line is
    valid, each chunk's count of failed lines (their error parts written).
    """

    valid: int
    malformed: int
    first_problem: str | None
    failed_by_chunk: dict[int, int] | None = None


class _Job(msgspec.Struct, frozen=True):
    """What running a job's lines takes: the job's principal, deployment, model, line format and input file."""

    principal: Principal
    spec: DeploymentSpec
    entry: CatalogEntry
    fmt: LineFormat
    source: Path


class ChunkRunner:
    """Runs chunks; holds no per-chunk state."""

    def __init__(
        self,
        inference: InferenceService,
        directory: DeploymentDirectory,
        storage: FileStorage,
        describe: Describe,
    ) -> None:
        self._inference = inference
        self._directory = directory
        self._storage = storage
        self.describe = describe

    async def run(self, held: Claim) -> tuple[int, int]:
        """Run the chunk and write its parts; returns its counts (lines completed, lines failed).

        Raises:
            QuotaPaused: A monthly cap stops the tenant (nothing of the chunk is written).
            JobFailed: The deployment, its model or the input file is gone.
        """
        job = await self._prepare(held)
        principal, spec, entry, fmt = job.principal, job.spec, job.entry, job.fmt
        try:
            data = await asyncio.to_thread(_read, job.source, held.byte_start, held.byte_end)
        except FileNotFoundError as exc:
            raise JobFailed(f"the input file {held.input_file_id} is gone") from exc
        lines = await asyncio.to_thread(fmt.parse, data, held.first_line)
        await self._infer(principal, spec, entry, held, [line for line in lines if line.error is None])
        encoded = await asyncio.to_thread(lambda: [fmt.encode(line) for line in lines])
        out = b"".join(o for o, _ in encoded if o is not None)
        err = b"".join(e for _, e in encoded if e is not None)
        await asyncio.to_thread(self._write_parts, held, out, err)
        failed = sum(1 for line in lines if line.error is not None)
        return len(lines) - failed, failed

    async def validate(self, job: Validation) -> Checked:
        """Check the job's input file: every line parsed against the deployment's input schema (the job's line
        format), nothing run. When no line is valid, every chunk's error part is written (the job fails with them in
        its error file); otherwise the chunks report their malformed lines in the error file when they run.

        Raises:
            JobFailed: The deployment, its model or the input file is gone.
        """
        held = job.claim
        prepared = await self._prepare(held)
        fmt, source = prepared.fmt, prepared.source
        valid = malformed = 0
        first_problem: str | None = None
        for _, first_line, start, end in job.chunks:
            lines = await asyncio.to_thread(_parse_range, fmt, source, first_line, start, end)
            for line in lines:
                if line.error is None:
                    valid += 1
                else:
                    malformed += 1
                    if first_problem is None:
                        first_problem = str(self.describe(line.error).get("detail", line.error))
        if valid:
            return Checked(valid, malformed, first_problem)
        failed: dict[int, int] = {}
        for index, first_line, start, end in job.chunks:
            lines = await asyncio.to_thread(_parse_range, fmt, source, first_line, start, end)
            err = b"".join(e for _, e in (fmt.encode(line) for line in lines) if e is not None)
            chunk = msgspec.structs.replace(held, index=index)
            await asyncio.to_thread(self._write_parts, chunk, b"", err)
            failed[index] = len(lines)
        return Checked(valid, malformed, first_problem, failed)

    async def _prepare(self, held: Claim) -> _Job:
        principal = Principal(
            tenant_id=held.tenant_id, key_id=held.key_id or "", scopes=frozenset({"predict"}), plan=held.plan
        )
        try:
            spec = await self._directory.by_id(principal, held.deployment_id)
            entry = self._inference.entry_for(spec)
        except (NotFoundError, ModelNotReadyError) as exc:
            raise JobFailed(exc.detail) from exc
        fmt = line_format(
            held.endpoint, held.job_id, entry.model, entry.inputs_type, self.describe, deployment=spec.name
        )
        return _Job(principal, spec, entry, fmt, self._storage.path(held.tenant_id, held.input_file_id))

    def _write_parts(self, held: Claim, out: bytes, err: bytes) -> None:
        self._storage.write(self._storage.part(held.tenant_id, held.job_id, held.index, "out"), out)
        self._storage.write(self._storage.part(held.tenant_id, held.job_id, held.index, "err"), err)

    async def _infer(
        self, principal: Principal, spec: DeploymentSpec, entry: CatalogEntry, held: Claim, lines: list[Line]
    ) -> None:
        """Fill in each line's outputs (or error): the whole chunk in one call; if the model rejects an input, each
        line alone, so that only the bad ones fail.
        """
        if not lines:
            return
        request_id = chunk_request_id(held.job_id, held.index)
        try:
            result = await self._execute(principal, spec, entry, [i for line in lines for i in line.items], request_id)
        except InvalidInputError as exc:
            if len(lines) == 1:
                lines[0].error = exc
                return
            for line in lines:
                await self._infer_one(principal, spec, entry, held, line)
            return
        offset = 0
        for line in lines:
            line.outputs = result.outputs[offset : offset + len(line.items)]
            line.request_id = request_id
            offset += len(line.items)

    async def _infer_one(
        self, principal: Principal, spec: DeploymentSpec, entry: CatalogEntry, held: Claim, line: Line
    ) -> None:
        request_id = chunk_request_id(held.job_id, held.index, line.number)
        try:
            result = await self._execute(principal, spec, entry, line.items, request_id)
        except CloudEasyMLError as exc:  # (a cap reached is QuotaPaused, no CloudEasyMLError: it stops the chunk)
            line.error = exc
            return
        line.outputs = result.outputs
        line.request_id = request_id

    async def _execute(
        self, principal: Principal, spec: DeploymentSpec, entry: CatalogEntry, items: list[Any], request_id: str
    ) -> BatchResult:
        async def run(loaded: LoadedDeployment) -> BatchResult:
            try:
                return await loaded.predict(items, background=True)
            except ValueError as exc:  # as InferenceService.run: the plugin refused an input's content
                raise InvalidInputError(f"the model rejected the inputs: {exc}") from exc

        try:
            result, _ = await self._inference.execute(
                principal, spec, entry, len(items), run, RequestContext(request_id), kind="batch"
            )
        except RequestCapReachedError as exc:
            raise QuotaPaused(exc.detail) from exc
        except SpendCapReachedError as exc:  # the chunk's whole expected cost was held: it would have passed the cap
            raise QuotaPaused(f"the next chunk's {len(items)} items would pass the spend cap: {exc.detail}") from exc
        return result


def _parse_range(fmt: LineFormat, path: Path, first_line: int, start: int, end: int) -> list[Line]:
    try:
        return fmt.parse(_read(path, start, end), first_line)
    except FileNotFoundError as exc:
        raise JobFailed(f"the input file {path.stem} is gone") from exc


def _read(path: Path, start: int, end: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(start)
        return handle.read(end - start)
