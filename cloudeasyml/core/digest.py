"""Content digests of files (artifact keys, shipped weights)."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ("file_digest",)


def file_digest(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
