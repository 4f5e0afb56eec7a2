"""``Idempotency-Key`` on every authenticated POST, Stripe's rules, in one edge layer.

``PlatformApp`` sends every POST that carries the header through ``serve_idempotent`` before anything else
answers it (the ``POST /predict`` fast path and Litestar's router alike), so one implementation covers every route
that creates or bills: ``/predict``, ``/deployments/{id}/predict``, ``/v1/embeddings``, V2 ``infer``,
``/deployments``, ``/api-keys``, ``/webhooks`` and any POST added later. A POST without the header costs one scan of
the header list.

- The first request with a key runs; its answer (status, headers, body) is stored, unless it was a 5xx or never
  came (then the key is given up and a retry runs again). 4xx answers are stored: the same request would fail again.
- A retry with the same key and the same request (API key, method, path, query string and body) within the window
  (``CLOUDEASYML_IDEMPOTENCY__TTL_SECONDS``, 24 h) gets the stored answer with ``Idempotent-Replayed: true``; it
  does not run, so it is not billed again and carries no ``X-Usage-*`` headers.
- The same key with another request is a 409 problem; so is a retry while the first request still runs (Stripe's
  behaviour: the client retries later and then gets the replay).
- Keys are per tenant (from the authenticated principal), 1 to 255 printable ASCII characters (else 400).
- The body is read whole before the request runs (its hash is part of the request's identity): under the request
  limit (``CLOUDEASYML_SERVER__MAX_BODY_BYTES``) in memory; a file upload (``POST /files``, ``POST /v1/files``) up to
  its own limit (``CLOUDEASYML_BATCH__MAX_FILE_BYTES``), in memory up to the request limit and in a temporary file
  beside the tenant's files past it, hashed as it arrives and handed to the route from there.
- Its errors (a bad key, a conflict, a failed authentication) answer in the dialect of the route the request was for,
  as that route's own errors do: OpenAI's ``error`` object under ``/v1/``, the V2 protocol's ``error`` under ``/v2/``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import IO, Any

from litestar.types import HTTPRequestEvent, HTTPScope, Message, Receive, ReceiveMessage, Send

from cloudeasyml.api.auth import authenticate_scope, is_public, token_of
from cloudeasyml.api.controllers.embeddings import OPENAI_EXCEPTION_HANDLERS
from cloudeasyml.api.controllers.v2 import V2_EXCEPTION_HANDLERS
from cloudeasyml.api.problems import exception_handlers, send_problem
from cloudeasyml.api.raw_http import read_body, spool_body
from cloudeasyml.api.uploads import MULTIPART_SLACK
from cloudeasyml.domain.idempotency import Claim, IdempotencyStore, StoredAnswer, request_hasher
from cloudeasyml.domain.principal import Principal
from cloudeasyml.errors import MalformedRequestError, PayloadTooLargeError

__all__ = ("IDEMPOTENCY_KEY", "MAX_KEY_LENGTH", "idempotency_key", "serve_idempotent")

log = logging.getLogger(__name__)

IDEMPOTENCY_KEY = b"idempotency-key"
MAX_KEY_LENGTH = 255
"""Longest key accepted (Stripe's limit): a UUID or a client's own id fits many times over."""

_REPLAYED = (b"idempotent-replayed", b"true")
_UPLOAD_PATHS = frozenset({"/files", "/v1/files"})
"""The routes whose body may pass the request limit (file uploads, bounded by the batch file limit)."""
_CHUNK = 1 << 20
"""Bytes of a spooled body handed to the route at a time."""

ASGIApp = Callable[[HTTPScope, Receive, Send], Awaitable[None]]


def idempotency_key(scope: HTTPScope) -> bytes | None:
    """The ``Idempotency-Key`` of a POST to a path that needs a key, else None (the request is served as is)."""
    if scope["method"] != "POST":
        return None
    for name, value in scope["headers"]:
        if name == IDEMPOTENCY_KEY:
            return None if is_public(scope["path"]) else value
    return None


def _handlers_for(path: str) -> Mapping[Any, Any]:
    """The exception handlers of the routes under ``path``: the protocol's dialect under ``/v1/`` and ``/v2/``."""
    if path.startswith("/v1/"):
        return OPENAI_EXCEPTION_HANDLERS
    if path.startswith("/v2/"):
        return V2_EXCEPTION_HANDLERS
    return exception_handlers


def _checked(key: bytes) -> str:
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(0x21 <= byte <= 0x7E for byte in key):
        raise MalformedRequestError(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters")
    return key.decode("ascii")


async def serve_idempotent(scope: HTTPScope, receive: Receive, send: Send, app: ASGIApp, key: bytes) -> None:
    """Serve a POST that carries ``Idempotency-Key`` ``key`` with ``app``: run it once, replay its answer after."""
    body: bytes | IO[bytes] = b""
    try:
        try:
            text = _checked(key)
            principal = await authenticate_scope(scope)
            services = scope["litestar_app"].state.services
            hasher = request_hasher(principal.key_id, scope["method"], scope["path"], scope["query_string"])
            body = await _read_body(scope, receive, principal, hasher.update)
            secret = hashlib.sha256(b"idempotency\0" + (token_of(scope) or "").encode()).digest()
            outcome = await services.idempotency.claim(principal.tenant_id, text, hasher.hexdigest(), secret)
        except Exception as exc:  # noqa: BLE001 - answered as Litestar's exception middleware would, in the dialect
            await send_problem(scope, receive, send, exc, _handlers_for(scope["path"]))
            return
        if isinstance(outcome, StoredAnswer):
            replayed = [*outcome.headers, _REPLAYED]
            await send({"type": "http.response.start", "status": outcome.status, "headers": replayed})
            await send({"type": "http.response.body", "body": outcome.body, "more_body": False})
            return
        await _run_once(scope, receive, send, app, body, outcome)
    finally:
        if not isinstance(body, bytes):
            body.close()


async def _read_body(
    scope: HTTPScope, receive: Receive, principal: Principal, on_chunk: Callable[[bytes], None]
) -> bytes | IO[bytes]:
    """The request's body, each chunk given to ``on_chunk``: bytes under the request limit, or for a file upload a
    file (in memory up to the request limit, spooled to disk beside the tenant's files past it).
    """
    services = scope["litestar_app"].state.services
    in_memory = services.settings.server.max_body_bytes
    if scope["path"].rstrip("/") not in _UPLOAD_PATHS:
        body = await read_body(scope, receive, in_memory)
        on_chunk(body)
        return body
    file_limit = services.settings.batch.max_file_bytes
    return await spool_body(
        scope,
        receive,
        file_limit + MULTIPART_SLACK,  # the route applies the file's own limit to the file in a multipart body
        in_memory=in_memory,
        directory=services.files.scratch(principal.tenant_id),
        on_chunk=on_chunk,
        too_large=lambda: PayloadTooLargeError(f"the file is larger than the limit of {file_limit} bytes"),
    )


async def _run_once(
    scope: HTTPScope, receive: Receive, send: Send, app: ASGIApp, body: bytes | IO[bytes], claim: Claim
) -> None:
    """Run the request on ``app`` with its body already read (bytes, or a file handed on a chunk at a time); store
    its answer before the answer's last bytes leave (a client that retries on receiving it then gets the replay,
    never a 409), or give the key up.
    """
    store: IdempotencyStore = scope["litestar_app"].state.services.idempotency
    status = 0
    headers: list[tuple[bytes, bytes]] = []
    chunks: list[bytes] = []
    settled = False
    body_sent = False
    size = 0 if isinstance(body, bytes) else body.seek(0, 2)
    if not isinstance(body, bytes):
        body.seek(0)

    async def replay_receive() -> ReceiveMessage:
        nonlocal body_sent
        if not body_sent:
            if isinstance(body, bytes):
                body_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            chunk = body.read(_CHUNK)
            body_sent = body.tell() >= size
            event: HTTPRequestEvent = {"type": "http.request", "body": chunk, "more_body": not body_sent}
            return event
        return await receive()  # after the body: only a disconnect

    async def capture(message: Message) -> None:
        nonlocal status, headers, settled
        if message["type"] == "http.response.start":
            status, headers = message["status"], list(message.get("headers", ()))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False) and not settled:
                settled = True
                await _settle(store, claim, status, headers, b"".join(chunks))
        await send(message)

    try:
        await app(scope, replay_receive, capture)
    finally:
        if not settled:  # no whole answer (an exception, a cancelled task): a retry must be able to run again
            try:
                await asyncio.shield(store.release(claim))
            except BaseException:  # noqa: BLE001 - the lock lapses after lock_seconds anyway
                log.warning("could not give up an idempotency key", exc_info=True)


async def _settle(
    store: IdempotencyStore, claim: Claim, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    try:
        if 200 <= status < 500:
            await store.complete(claim, status, headers, body)
        else:
            await store.release(claim)
    except Exception:  # noqa: BLE001 - the answer still goes out; the key's lock lapses after lock_seconds
        log.warning("could not store the answer of an idempotent request", exc_info=True)
