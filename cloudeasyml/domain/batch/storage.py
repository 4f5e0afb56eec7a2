"""Where batch files live: ``<artifact store>/files/<tenant id>/``, a directory every pod shares (as the ONNX
artifacts are). A job's output parts (one per chunk, written whole by the worker that ran it) wait under
``parts/<job id>/`` until the job's end joins them, in order, into its output and error files.

Every file is written to a temporary name and renamed into place: a reader (or a worker resuming after a crash)
never sees half a file, and writing a part twice leaves one copy.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path

__all__ = ("FileStorage",)


class FileStorage:
    """The ``files/`` directory of the artifact store."""

    def __init__(self, root: Path) -> None:
        self.root = root / "files"

    def path(self, tenant_id: uuid.UUID, file_id: str) -> Path:
        """Where a file's content lives."""
        return self.root / str(tenant_id) / f"{file_id}.jsonl"

    def part(self, tenant_id: uuid.UUID, job_id: str, index: int, kind: str) -> Path:
        """Where a chunk's output (``kind`` ``out``) or errors (``err``) wait for the job's end."""
        return self.root / str(tenant_id) / "parts" / job_id / f"{index:08d}.{kind}"

    def write(self, path: Path, data: bytes) -> None:
        """Write ``data`` to ``path`` whole, or not at all."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-", delete=False) as handle:
            handle.write(data)
        os.replace(handle.name, path)

    def adopt(self, path: Path, source: Path) -> None:
        """Move an uploaded temporary file into place."""
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, path)

    def scratch(self, tenant_id: uuid.UUID) -> Path:
        """A directory for uploads in progress, on the same file system as their destination."""
        directory = self.root / str(tenant_id)
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def join(self, target: Path, parts: Iterable[Path]) -> tuple[int, int]:
        """Concatenate the parts that exist, in the given order, into ``target`` (replaced whole); returns its
        size in bytes and lines.
        """
        target.parent.mkdir(parents=True, exist_ok=True)
        size = lines = 0
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".tmp-", delete=False) as out:
            for part in parts:
                try:
                    data = part.read_bytes()
                except FileNotFoundError:
                    continue
                out.write(data)
                size += len(data)
                lines += data.count(b"\n")
        os.replace(out.name, target)
        return size, lines

    def remove(self, path: Path) -> None:
        """Delete a file if it exists."""
        path.unlink(missing_ok=True)

    def remove_tenant(self, tenant_id: uuid.UUID) -> None:
        """Delete every file of a deleted tenant."""
        shutil.rmtree(self.root / str(tenant_id), ignore_errors=True)

    def remove_parts(self, tenant_id: uuid.UUID, job_id: str) -> None:
        """Delete a finished job's parts."""
        shutil.rmtree(self.root / str(tenant_id) / "parts" / job_id, ignore_errors=True)


def chunk_offsets(path: Path, chunk_lines: int) -> tuple[list[tuple[int, int, int]], int]:
    """Cut a JSON Lines file into chunks of ``chunk_lines`` lines: ``(first line number, byte start, byte end)``
    each, and the number of non-blank lines (the job's total).
    """
    chunks: list[tuple[int, int, int]] = []
    total = 0
    with path.open("rb") as handle:
        start = position = 0
        first = number = 1
        in_chunk = 0
        for line in handle:
            position += len(line)
            if line.strip():
                total += 1
            in_chunk += 1
            number += 1
            if in_chunk == chunk_lines:
                chunks.append((first, start, position))
                start, first, in_chunk = position, number, 0
        if in_chunk:
            chunks.append((first, start, position))
    return chunks, total
