"""uvicorn's httptools protocol with limits on what a client may hold, sending each answer's header block and first
body chunk in one write.

Limits (``ServerSettings``, ``CLOUDEASYML_SERVER__*``; ``docs/security.md`` lists them): a request's line and headers
are bounded in bytes (414 for the URL, 431) and in lines (431), must be complete within a deadline counted from the
connection's start or the request's first byte (408), and its body may not stall longer than an idle timeout (408);
an idle kept-alive connection is closed; past a number of open connections per process a new one is answered 503 at
once and closed. Of these uvicorn has only the keep-alive timeout (its ``--limit-concurrency`` refuses requests on
every connection once the count is reached, the ones already open included, which is what the cap here avoids). The
class reads the settings from ``load_settings()`` at its first connection in a process, so a uvicorn command of
one's own (``--http cloudeasyml.api.http_protocol:CoalescingHttpToolsProtocol``) gets them too; a subclass may set
``server_settings`` instead (the tests do). The graceful-shutdown timeout belongs to uvicorn's server, not to a
connection: ``cloudeasyml serve`` passes it; a command of one's own needs ``--timeout-graceful-shutdown``.

Cost on the hot path, per chunk read: a comparison and an addition while headers are read, one ``loop.time()`` per
body chunk; per header line: a length check and an addition. No buffer is scanned twice. The two timeouts share one
timer per connection, re-armed when it fires (about once per timeout), not per request.

A refusal (408, 414, 431, 503) is written with ``connection: close``, the sending side is shut, what the client still
sends is read and dropped for up to a second, and then the connection is closed: closing at once with unread data
would send a TCP reset, and the client could lose the answer.

uvicorn writes the header block when the app sends ``http.response.start`` and the body when it sends
``http.response.body``: two ``send`` system calls, two TCP segments and two wake-ups of the client for every
answer. ``cloudeasyml serve`` uses ``CoalescingHttpToolsProtocol`` instead, whose transport holds a header block
until the next write and sends both together. If no body follows within the same turn of the event loop (``HEAD``,
``204``, a ``100 Continue``), the held block is sent at the end of that turn, so nothing waits for a body that
never comes. Data only ever leaves later, never out of order.

Measured with an ASGI app answering an 8 KB JSON body at concurrency 64 (``wrk``, one uvicorn worker): about
80 µs of server CPU per request with uvicorn's protocol and about 64 µs with this one (medians of eight alternating
runs on the 2-core development VM).

This subclasses uvicorn's private ``HttpToolsProtocol`` and uses its attributes (``parser``, ``headers``, ``cycle``,
``flow``, ``connections``, ``timeout_keep_alive``): read against uvicorn 0.54, pinned in ``pyproject.toml``.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from cloudeasyml.settings import ServerSettings, load_settings

try:
    import resource
except ImportError:  # Windows: no open-file limit to read
    resource = None  # type: ignore[assignment]

__all__ = ("CoalescingHttpToolsProtocol", "CoalescingTransport", "connection_cap")

_END_OF_HEADERS = b"\r\n\r\n"


class CoalescingTransport:
    """Wraps a transport: a write ending a header block is held and joined to the next write, or sent when the
    current turn of the event loop ends. Everything else is the wrapped transport's.
    """

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        """Send ``data`` after anything held; hold it instead if it ends a header block."""
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif data[-4:] == _END_OF_HEADERS:
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        """Send what is held, if anything."""
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held)

    def write_eof(self) -> None:
        """Send what is held, then shut the sending side."""
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        """Send what is held, then close."""
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        """Whether the wrapped transport is closing."""
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


_LINGER_SECONDS = 1.0
"""How long a refused connection's further input is read and dropped before it is closed."""
_FD_RESERVE = 100
"""Open-file descriptors the connection cap leaves for the database, model files, logs and the listening socket."""
_EARLY = 0.001
"""A timer may fire this much before its time (the loop's clock resolution): treat it as due."""

# Where a connection is in its current request.
_HEADERS = 0  # from the connection's start or a request's first byte until its headers are complete
_BODY = 1  # headers complete, body not complete
_IDLE = 2  # the request is read; the next one has not begun


class _Refused(Exception):
    """Raised from a parser callback to stop reading a request that will be refused with ``status``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def connection_cap(settings: ServerSettings) -> int:
    """The open connections a process accepts: ``settings.max_connections``, lowered to keep ``_FD_RESERVE``
    descriptors of the process's open-file limit for everything else.
    """
    if resource is None:
        return settings.max_connections
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return settings.max_connections
    return max(1, min(settings.max_connections, soft - _FD_RESERVE))


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's ``HttpToolsProtocol`` on a ``CoalescingTransport``, with the limits of ``ServerSettings``."""

    server_settings: ClassVar[ServerSettings | None] = None
    """The limits; ``None`` reads ``load_settings().server`` at the first connection of the process."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings, cap = self._limits()
        self.timeout_keep_alive = settings.keep_alive_timeout_seconds  # type: ignore[assignment]
        self._max_header_bytes = settings.max_header_bytes
        self._max_headers = settings.max_headers
        self._header_timeout = settings.header_timeout_seconds
        self._body_timeout = settings.body_timeout_seconds
        self._max_connections = cap
        self._phase = _HEADERS
        self._header_bytes = 0  # bytes read while this request's headers are incomplete (the parser buffers them)
        self._header_size = 0  # bytes of this request's URL and complete header lines
        self._header_deadline = 0.0
        self._body_seen = 0.0  # loop time of the last body bytes
        self._watchdog: asyncio.TimerHandle | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._discarding = False

    @classmethod
    def _limits(cls) -> tuple[ServerSettings, int]:
        """The settings and the connection cap, resolved once per class and process."""
        resolved: tuple[ServerSettings, int] | None = cls.__dict__.get("_resolved")
        if resolved is None:
            settings = cls.server_settings or load_settings().server
            resolved = (settings, connection_cap(settings))
            cls._resolved = resolved  # type: ignore[attr-defined]
        return resolved

    # Connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Refuse the connection with 503 past the cap; otherwise wrap its transport and set up as uvicorn does."""
        if len(self.connections) >= self._max_connections:
            self.transport = transport
            self.logger.info("Refused a connection: %d open (server.max_connections)", len(self.connections))
            self._close_with(503, "Too many open connections.")
            return
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
        self._header_deadline = self.loop.time() + self._header_timeout
        self._watch(self._header_deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop this connection's timers, then clean up as uvicorn does."""
        self._stop_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """uvicorn's, plus: bytes buffered for incomplete headers are counted, and a refused request answered."""
        if self._discarding:
            return
        if self._phase != _BODY:
            self._header_bytes += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _Refused):
                self._refuse(exc.__context__.status, exc.__context__.reason)
            else:
                self._bad_request()
            return
        except httptools.HttpParserError:
            self._bad_request()
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._phase != _BODY and self._header_bytes > self._max_header_bytes:
            self._refuse(431, "Request header fields too large.")

    def handle_websocket_upgrade(self) -> None:
        """Hand over to uvicorn's WebSocket protocol, which has timeouts of its own."""
        self._stop_timers()
        super().handle_websocket_upgrade()

    # Parser callbacks

    def on_message_begin(self) -> None:
        """A new request: on a kept-alive connection its header deadline starts now."""
        if self._phase == _IDLE:
            self._phase = _HEADERS
            self._header_deadline = self.loop.time() + self._header_timeout
            self._watch(self._header_deadline)
        self._header_size = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        """Count the URL into the header size."""
        self._header_size += len(url)
        if self._header_size > self._max_header_bytes:
            raise _Refused(414, "Request URI too long.")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        """Count the line and its size."""
        self._header_size += len(name) + len(value) + 4
        if self._header_size > self._max_header_bytes:
            raise _Refused(431, "Request header fields too large.")
        if len(self.headers) >= self._max_headers:
            raise _Refused(431, "Too many request header fields.")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        """The body's idle timeout starts now."""
        self._phase = _BODY
        self._header_bytes = 0
        self._body_seen = self.loop.time()
        self._watch(self._body_seen + self._body_timeout)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        """Note when body bytes last came."""
        self._body_seen = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        """The request is read: no read timeout until the next one begins."""
        self._phase = _IDLE
        super().on_message_complete()

    # Timeouts and refusals

    def _watch(self, due: float) -> None:
        """Have the timer fire by ``due``. A timer already due earlier is kept (it re-arms itself when it fires):
        with the defaults, one timer serves many requests instead of a new one per request.
        """
        watchdog = self._watchdog
        if watchdog is None or watchdog.when() > due:
            if watchdog is not None:
                watchdog.cancel()
            self._watchdog = self.loop.call_at(due, self._on_watchdog)

    def _on_watchdog(self) -> None:
        """Refuse a request past its header deadline or body idle timeout; otherwise wait for the next due time."""
        self._watchdog = None
        if self._discarding or self.transport.is_closing():
            return
        now = self.loop.time() + _EARLY
        if self._phase == _HEADERS:
            due = self._header_deadline
            if now >= due:
                self._refuse(408, "Request headers not received in time.")
                return
        elif self._phase == _BODY:
            cycle = self.cycle
            if self.flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue):
                self._body_seen = now  # the application, not the client, holds the body back
            due = self._body_seen + self._body_timeout
            if now >= due:
                if cycle is not None and cycle.response_complete:
                    # Answered without reading its whole body (a 401, a 413): nothing more to say, only close.
                    self._close_with(None, "")
                else:
                    self._refuse(408, "Request body not received in time.")
                return
        else:
            return
        self._watchdog = self.loop.call_at(due, self._on_watchdog)

    def _refuse(self, status: int, reason: str) -> None:
        """Answer ``status`` and close, unless an answer is already on its way (then only close)."""
        self.logger.info("%s - %d %s", self.client, status, reason)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The request in flight gets a disconnect from receive() and its send() does nothing from now on.
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started:
                self._stop_timers()
                self.transport.close()
                return
        self._close_with(status, reason)

    def _bad_request(self) -> None:
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self.send_400_response(msg)

    def _close_with(self, status: int | None, reason: str) -> None:
        """Send a ``connection: close`` answer (none if ``status`` is ``None``), shut the sending side, drop what
        comes for a while, then close.
        """
        self._discarding = True
        self._phase = _IDLE
        self._stop_timers()
        self._unset_keepalive_if_required()
        transport = self.transport
        if status is not None:
            transport.write(self._answer(status, reason))
        if self.flow is not None:
            self.flow.resume_reading()  # keep draining, so that closing does not reset the connection
        if transport.can_write_eof():
            transport.write_eof()
        self._linger = self.loop.call_later(_LINGER_SECONDS, transport.close)

    def _answer(self, status: int, reason: str) -> bytes:
        """A plain-text answer closing the connection, like uvicorn's own 400."""
        body = reason.encode("ascii")
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: text/plain; charset=utf-8\r\ncontent-length: ",
                str(len(body)).encode("ascii"),
                b"\r\nconnection: close\r\n\r\n",
                body,
            ]
        )
        return b"".join(content)

    def _stop_timers(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
