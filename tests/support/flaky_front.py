"""Real servers that fail on purpose, in front of the real app: for clients' retry tests.

- ``RefusingFront``: an ASGI app that answers the first N matching requests itself (a status, a problem-details
  body, a ``Retry-After``), or holds them before serving them, then passes every request to the app behind it; it
  records what it saw.
- ``DroppingProxy``: a TCP proxy that reads the first N requests it is sent and closes their connections without an
  answer (the client sees a broken connection after sending), then forwards connections to the server.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Seen:
    """One request that reached the front."""

    method: str
    path: str
    headers: dict[str, str]
    client_port: int


@dataclass
class RefusingFront:
    """Answer ``times`` requests matching ``matches(method, path)`` with ``status`` (and ``Retry-After``), then
    serve."""

    app: Any
    status: int = 503
    times: int = 2
    retry_after: str | None = "1"
    matches: Callable[[str, str], bool] = lambda method, path: path != "/health"
    stall_seconds: float = 0.0
    """When set, the ``times`` matching requests are not refused: each is received whole, held this long, then served
    (a slow server: a client whose timeout is shorter gives up while its request still runs)."""
    seen: list[Seen] = field(default_factory=list)

    def matching(self) -> list[Seen]:
        """The requests that matched, refused or served."""
        return [s for s in self.seen if self.matches(s.method, s.path)]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self.seen.append(Seen(scope["method"], scope["path"], headers, scope["client"][1]))
        if not self.matches(scope["method"], scope["path"]) or self.times <= 0:
            await self.app(scope, receive, send)
            return
        self.times -= 1
        if self.stall_seconds:
            # The whole body is received first, as a busy server would have it before it gets to the request.
            messages = [await receive()]
            while messages[-1].get("more_body"):
                messages.append(await receive())
            await asyncio.sleep(self.stall_seconds)

            async def replay() -> dict[str, Any]:
                return messages.pop(0) if messages else await receive()

            await self.app(scope, replay, send)
            return
        while (await receive()).get("more_body"):
            pass
        body = json.dumps(
            {"type": "about:blank", "title": "Refused", "status": self.status, "detail": "refused on purpose"}
        ).encode()
        answer = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode())]
        if self.retry_after is not None:
            answer.append((b"retry-after", self.retry_after.encode()))
        await send({"type": "http.response.start", "status": self.status, "headers": answer})
        await send({"type": "http.response.body", "body": body})


class DroppingProxy:
    """A TCP proxy to ``upstream`` (``host:port``) that drops the first ``drops`` requests after reading them."""

    def __init__(self, upstream: str, drops: int) -> None:
        host, port = upstream.rsplit(":", 1)
        self._upstream = (host, int(port))
        self.drops = drops
        self.dropped: list[bytes] = []
        """The first bytes of each dropped request (its request line and headers)."""
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with self._lock:
            self.connections += 1
            drop = self.drops > 0
            self.drops -= drop
        if drop:
            self.dropped.append(conn.recv(65536))
            conn.close()
            return
        upstream = socket.create_connection(self._upstream)
        for source, target in ((conn, upstream), (upstream, conn)):
            threading.Thread(target=_pipe, args=(source, target), daemon=True).start()

    @contextmanager
    def running(self) -> Iterator[str]:
        """Accept connections until the block ends; yields ``host:port``."""
        thread = threading.Thread(target=self._serve, daemon=True)
        thread.start()
        try:
            yield self.address
        finally:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            except OSError:
                pass
            self._listener.close()


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
