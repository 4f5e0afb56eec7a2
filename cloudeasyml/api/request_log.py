"""Every HTTP request gets an id, returned in ``X-Request-ID``, and one access-log line when its answer has left.

``PlatformApp`` runs every HTTP request through ``serve_logged`` before anything else (the ``POST /predict`` fast
path included), so no answer leaves without its id and no request goes unlogged. The id is generated here, not
taken from the client: it is the primary key of the request's usage record, and a client that could choose it
could replay one id to have answers go unbilled (a usage record is written once per id) or collide with another
tenant's. A valid ``X-Request-ID`` from the client (``RequestContext.client_request_id``) is logged and returned in
``X-Client-Request-ID``, so a client or a proxy can still correlate its own ids. A billed answer (every protocol's:
the data plane records the cost in the ``RequestContext``) also carries what it cost (``usage_headers``).

The same pass over the headers takes the client's ``X-Routing-Key`` (``RequestContext.routing_key``: sticky routing
of a deployment with a traffic split, for every protocol alike), and the answer of a request the data plane served
names the version that served it in ``X-Model-Version`` (and a variant other than float in ``X-Model-Variant``).

The log line goes to the ``cloudeasyml.access`` logger at INFO: JSON (one object a line) when standard error is not
a terminal, readable text when it is (``CLOUDEASYML_SERVER__LOG_FORMAT``: ``auto``, ``json`` or ``text``;
``CLOUDEASYML_SERVER__ACCESS_LOG=false`` turns it off). It never holds a key, a hash or a body. Lines are written
by a thread of their own, never on the event loop (see ``_AccessWriter``).
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from litestar.types import HTTPScope, Message, Receive, Send

from cloudeasyml.domain.request_context import RequestContext, client_request_id
from cloudeasyml.settings import ServerSettings

__all__ = (
    "ACCESS_LOGGER",
    "configure_access_log",
    "drain_access_log",
    "request_context",
    "serve_logged",
    "usage_headers",
)

ACCESS_LOGGER = "cloudeasyml.access"
_CONTEXT = "cloudeasyml_request"
"""The key of the request's ``RequestContext`` in the ASGI scope's ``state``."""

log = logging.getLogger(ACCESS_LOGGER)
_encoder = msgspec.json.Encoder()
_MESSAGE = "%s %s %s %.1f ms"
"""The access line's message (``method path status latency``), formatted by the writer thread."""


def request_context(scope: Any) -> RequestContext:
    """The ``RequestContext`` of a request (a new one for a scope that did not come through ``serve_logged``)."""
    state = scope.setdefault("state", {})
    context = state.get(_CONTEXT)
    if context is None:
        context = state[_CONTEXT] = RequestContext()
    return context


RequestObserver = Callable[[str, "str | None", int, float], None]
"""Told of each answered request: ``(method, route template or None, status, seconds)`` (the request metrics)."""


async def serve_logged(
    scope: HTTPScope,
    receive: Receive,
    send: Send,
    app: Callable[[HTTPScope, Receive, Send], Awaitable[None]],
    observe: RequestObserver | None = None,
) -> None:
    """Run ``app`` on an HTTP request with a ``RequestContext`` in its scope, its id in ``X-Request-ID`` of the
    answer, and one access-log line when it ends; ``observe`` (if given) is told its method, route, status and time.
    """
    client_id = routing_key = None
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            client_id = client_request_id(value.decode("latin-1"))
        elif name == b"x-routing-key":
            routing_key = value.decode("latin-1")
    context = RequestContext(client_request_id=client_id)
    context.routing_key = routing_key
    scope.setdefault("state", {})[_CONTEXT] = context
    extra = [(b"x-request-id", context.request_id.encode("ascii"))]
    if client_id is not None:
        extra.append((b"x-client-request-id", client_id.encode("ascii")))
    status = 0
    started = time.perf_counter()

    async def send_with_id(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            message["headers"] = [
                *message.get("headers", ()),
                *extra,
                *_served_by(context, status),
                *usage_headers(context),
            ]
        await send(message)

    try:
        await app(scope, receive, send_with_id)
    finally:
        elapsed = time.perf_counter() - started
        if observe is not None:
            # The route's template, never the raw path: a path no route matched is the client's to choose.
            observe(scope["method"], scope.get("path_template"), status, elapsed)
        if _writer is not None and log.isEnabledFor(logging.INFO):
            _log(_writer, scope, context, status, elapsed * 1000)


def _served_by(context: RequestContext, status: int) -> list[tuple[bytes, bytes]]:
    """``X-Model-Version`` (and ``X-Model-Variant`` when not float) of an answer the data plane served."""
    version = context.model_version
    if version is None or status >= 400:
        return []
    headers = [(b"x-model-version", version.encode("latin-1", "replace"))]
    if context.variant not in (None, "float"):
        headers.append((b"x-model-variant", str(context.variant).encode("ascii")))
    return headers


def usage_headers(context: RequestContext) -> list[tuple[bytes, bytes]]:
    """What a billed request cost, for its answer: ``X-Usage-Items``, ``X-Usage-Processing-Ms`` (milliseconds, to
    the microsecond the price was computed from) and ``X-Usage-Cost`` (the exact decimal of its usage record, never
    in exponent form). None for a request that was not billed (an error, a management call, an idempotent replay).
    """
    cost = context.cost
    if cost is None:
        return []
    return [
        (b"x-usage-items", str(context.items).encode()),
        (b"x-usage-processing-ms", repr(round(context.processing_ms, 3)).encode()),
        (b"x-usage-cost", format(cost, "f").encode()),
    ]


def _log(writer: _AccessWriter, scope: HTTPScope, context: RequestContext, status: int, elapsed_ms: float) -> None:
    """Queue the request's access line: its values as they are (the writer thread names and formats them)."""
    principal = scope.get("user")
    method = scope["method"]
    writer.put(
        (method, scope["path"], status, elapsed_ms),
        (
            context.request_id,
            method,
            scope.get("path_template") or scope["path"],
            status,
            elapsed_ms,
            context.tenant_id or getattr(principal, "tenant_id", None),
            context.deployment_id,
            context.model_name,
            context.model_version,
            context.variant,
            context.items,
            context.client_request_id,
        ),
    )


def _access_record(values: tuple[Any, ...]) -> dict[str, object]:
    """The access line's fields from ``_log``'s values (in the writer thread: the dict, the rounding and the ids'
    text cost the event loop about 20 of 1,365 profiled µs a request at housing c=64, ``bench.profile_server``).
    """
    request_id, method, route, status, elapsed_ms, tenant_id, deployment_id, *rest = values
    model, model_version, variant, items, client_request_id = rest
    return {
        "requestId": request_id,
        "method": method,
        "route": route,
        "status": status,
        "latencyMs": round(elapsed_ms, 3),
        "tenantId": str(tenant_id) if tenant_id is not None else None,
        "deploymentId": str(deployment_id) if deployment_id is not None else None,
        "model": model,
        "modelVersion": model_version,
        "variant": variant,
        "items": items,
        "clientRequestId": client_request_id,
    }


class _JsonFormatter(logging.Formatter):
    """One JSON object a line: the access record, with a timestamp and the level."""

    def format(self, record: logging.LogRecord) -> str:
        access = getattr(record, "access", None)
        line = {"time": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name}
        line.update(access if access is not None else {"message": record.getMessage()})
        return _encoder.encode(line).decode()


class _TextFormatter(logging.Formatter):
    """A readable line for a terminal: the request, its outcome, and who it was for."""

    def format(self, record: logging.LogRecord) -> str:
        access = getattr(record, "access", None) or {}
        who = " ".join(f"{key}={access[key]}" for key in ("tenantId", "deploymentId", "items") if access.get(key))
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        return f"{stamp} {record.getMessage()} [{access.get('requestId', '-')}] {who}".rstrip()


QUEUED_LINES = 2_000
"""Most access-log lines waiting for the writer thread; past it new lines are dropped (and counted)."""
WRITE_INTERVAL_S = 0.05
"""How often the writer thread wakes to write the lines that arrived meanwhile."""


class _AccessWriter:
    """Access-log lines, handed from the event loop to a writer thread that formats and writes them in batches.

    The loop only appends a tuple to a deque (no lock, no wake-up): a synchronous write there stalled every request
    of a server whose parent did not read its pipe, and a queue that woke the writer on every line cost the loop a
    ``logging`` record (a stack walk for its caller), a copy, a format and a thread wake-up per request: 12 % of the
    event loop's CPU on the housing MLP at c=64 (cProfile of the loop thread's CPU: 234 of 1,873 profiled µs a
    request), and a thread switch per request. The writer wakes every ``WRITE_INTERVAL_S``
    and writes what is waiting with one ``write``. Past ``QUEUED_LINES`` waiting lines (a standard error that does
    not drain), new ones are dropped and counted in ``dropped``.
    """

    def __init__(self, formatter: logging.Formatter) -> None:
        self._formatter = formatter
        self._pending: deque[tuple[float, tuple[object, ...], tuple[Any, ...]]] = deque()
        self.queued = 0
        self.written = 0
        self.dropped = 0
        self._wake = threading.Event()  # set by ``write_soon`` (never by the event loop's ``put``)
        threading.Thread(target=self._run, name="cloudeasyml-access-log", daemon=True).start()

    def put(self, args: tuple[object, ...], access: tuple[Any, ...]) -> None:
        """Queue one line (on the event loop: a deque append, thread-safe without a lock)."""
        if len(self._pending) >= QUEUED_LINES:
            self.dropped += 1
            return
        self._pending.append((time.time(), args, access))
        self.queued += 1

    def write_soon(self) -> None:
        """Have the writer thread write what waits now rather than at its next interval."""
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(WRITE_INTERVAL_S)
            self._wake.clear()
            try:
                self.write_pending()
            except Exception:  # noqa: BLE001 - a broken standard error must not end the writer
                logging.getLogger(__name__).debug("access log write failed", exc_info=True)

    def write_pending(self) -> None:
        """Format and write every waiting line (in the writer thread)."""
        pending = self._pending
        lines = []
        while pending:
            created, args, access = pending.popleft()
            record = log.makeRecord(
                ACCESS_LOGGER, logging.INFO, __file__, 0, _MESSAGE, args, None, extra={"access": _access_record(access)}
            )
            record.created = created  # when the request ended, not when the line is written
            lines.append(self._formatter.format(record))
        if lines:
            stream = sys.stderr
            try:
                stream.write("\n".join(lines) + "\n")
                stream.flush()
            finally:
                self.written += len(lines)


_writer: _AccessWriter | None = None


def drain_access_log(timeout: float = 1.0) -> bool:
    """Wait (at most ``timeout`` seconds) until the writer thread has written every queued line; True if it has."""
    deadline = time.monotonic() + timeout
    if _writer is not None and _writer.written < _writer.queued:
        _writer.write_soon()
    while _writer is not None and _writer.written < _writer.queued:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True


def configure_access_log(settings: ServerSettings) -> None:
    """Send the access log to standard error in the configured format, through a writer thread, once per process
    (apps made later, as in tests, reuse it). Off when ``settings.access_log`` is false.
    """
    global _writer
    if not settings.access_log:
        log.setLevel(logging.WARNING)
        return
    log.setLevel(logging.INFO)
    log.propagate = False
    if _writer is not None:
        return
    fmt = settings.log_format
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    _writer = _AccessWriter(_JsonFormatter() if as_json else _TextFormatter())
    atexit.register(drain_access_log)  # write what is queued at exit, unless standard error is stuck
