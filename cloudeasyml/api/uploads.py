"""Uploads of batch files: a raw JSON Lines body or ``multipart/form-data`` (as the ``openai`` client sends it),
streamed to a temporary file beside its destination, never past the size limit (413 once the body passes it).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

from litestar import Request
from litestar._multipart import parse_multipart_form
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType

from cloudeasyml.errors import InvalidInputError, PayloadTooLargeError

__all__ = ("Upload", "receive_upload")

MULTIPART_SLACK = 64 * 1024
"""What a multipart body may hold besides the file (boundaries, headers, the other fields)."""
_BLOCK = 1 << 20


class Upload:
    """An uploaded file in a temporary path, its name, and the form's other fields (multipart only)."""

    def __init__(self, path: Path, filename: str, fields: dict[str, str]) -> None:
        self.path = path
        self.filename = filename
        self.fields = fields


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"the file is larger than the limit of {limit} bytes")


async def _bounded(stream: AsyncIterator[bytes], limit: int) -> AsyncGenerator[bytes, None]:
    seen = 0
    async for chunk in stream:
        seen += len(chunk)
        if seen > limit:
            raise _too_large(limit)
        yield chunk


async def receive_upload(request: Request[Any, Any, Any], scratch: Path, limit: int) -> Upload:
    """Write the request's file to a temporary file in ``scratch`` (the caller moves or deletes it).

    Raises:
        PayloadTooLargeError: The file (or the body, by its ``Content-Length``) is over ``limit`` bytes.
        InvalidInputError: A multipart body without a ``file`` field.
    """
    content_type, options = request.content_type
    multipart = content_type == RequestEncodingType.MULTI_PART
    most = limit + (MULTIPART_SLACK if multipart else 0)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > most:
        raise _too_large(limit)
    handle = tempfile.NamedTemporaryFile(dir=scratch, prefix=".upload-", delete=False)  # noqa: SIM115
    path = Path(handle.name)
    try:
        with handle:
            if not multipart:
                async for chunk in _bounded(request.stream(), limit):
                    handle.write(chunk)
                return Upload(path, request.query_params.get("filename") or "upload.jsonl", {})
            boundary = options.get("boundary")
            if not boundary:
                raise InvalidInputError("multipart boundary missing in Content-Type")
            form = await parse_multipart_form(_bounded(request.stream(), most), boundary.encode(), 20)
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise InvalidInputError("the multipart body has no `file` part")
            size = 0
            try:
                while block := await upload.read(_BLOCK):
                    size += len(block)
                    if size > limit:
                        raise _too_large(limit)
                    handle.write(block)
            finally:
                await upload.close()
            fields = {key: value for key, value in form.items() if isinstance(value, str)}
            return Upload(path, os.path.basename(upload.filename or "upload.jsonl"), fields)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
