"""Reading a request body and sending an answer straight over ASGI, for handlers on the hot path.

``read_body`` keeps the guarantees of Litestar's ``Request.body()``: the app's body-size limit (413, checked on
the announced length first, then on the bytes received), and a client that hangs up mid-body is reported the
way Litestar reports it, so the problem-details handlers treat both alike. ``spool_body`` does the same for a body
that may be larger than memory should hold (an upload), in memory up to a threshold and in a temporary file past it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, cast

from litestar.exceptions import ClientException, InternalServerException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.types import HTTPRequestEvent, HTTPScope, Receive, Send

__all__ = ("CLIENT_GONE", "read_body", "send_json", "spool_body")

CLIENT_GONE = "client disconnected prematurely"
"""The detail Litestar's ``Request.stream`` gives when the client leaves before its body has arrived."""


def _announced_length(scope: HTTPScope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                raise ClientException(f"Invalid content-length: {value.decode('latin-1')!r}") from None
    return None


async def read_body(scope: HTTPScope, receive: Receive, max_bytes: int) -> bytes:
    """The whole request body; ``RequestEntityTooLarge`` (413) past ``max_bytes``."""
    announced = _announced_length(scope)
    if announced is not None and announced > max_bytes:
        raise RequestEntityTooLarge
    chunks: list[bytes] = []
    received = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InternalServerException(CLIENT_GONE)
        message = cast(HTTPRequestEvent, message)  # an HTTP request's receive yields only these and disconnects
        chunk = message.get("body", b"")
        if chunk:
            received += len(chunk)
            if received > max_bytes:
                raise RequestEntityTooLarge
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def spool_body(
    scope: HTTPScope,
    receive: Receive,
    max_bytes: int,
    *,
    in_memory: int,
    directory: Path,
    on_chunk: Callable[[bytes], None],
    too_large: Callable[[], Exception],
) -> IO[bytes]:
    """The whole request body, in memory up to ``in_memory`` bytes and in a temporary file in ``directory`` past
    it (deleted when closed), positioned at its start; each chunk is given to ``on_chunk`` as it
    arrives. ``too_large()`` is raised past ``max_bytes`` (checked on the announced length first). The caller
    closes the file.
    """
    announced = _announced_length(scope)
    if announced is not None and announced > max_bytes:
        raise too_large()
    spool = tempfile.SpooledTemporaryFile(max_size=in_memory, mode="w+b", dir=str(directory))  # noqa: SIM115
    received = 0
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise InternalServerException(CLIENT_GONE)
            message = cast(HTTPRequestEvent, message)
            chunk = message.get("body", b"")
            if chunk:
                received += len(chunk)
                if received > max_bytes:
                    raise too_large()
                on_chunk(chunk)
                spool.write(chunk)
            if not message.get("more_body", False):
                spool.seek(0)
                return cast(IO[bytes], spool)
    except BaseException:
        spool.close()
        raise


async def send_json(
    send: Send,
    content: bytes,
    status: int = 200,
    *,
    content_type: bytes = b"application/json",
    extra: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Send ``content`` as the whole answer: encoded JSON unless ``content_type`` says otherwise, with ``extra``
    headers.
    """
    headers = [(b"content-type", content_type), (b"content-length", str(len(content)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content, "more_body": False})
