"""A real HTTP receiver of webhooks on 127.0.0.1 (``http.server`` in a thread): it records every request and answers
500 to the first ``fail_first`` of them, then ``status`` with ``answer`` as the body."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ("Received", "Receiver", "receiver")


@dataclass(frozen=True)
class Received:
    """One request as it arrived."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """What the server answers, and what it got."""

    url: str = ""
    fail_first: int = 0
    status: int = 200
    answer: bytes = b"ok"
    received: list[Received] = field(default_factory=list)

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        """The requests once there are at least ``count`` (fails after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"{len(self.received)} of {count} webhooks arrived"
            time.sleep(0.02)
        return list(self.received)


class _Server(ThreadingHTTPServer):
    request_queue_size = 128
    """The listen backlog (``socketserver``'s default is 5): two dispatchers send 14 deliveries at once in one test,
    and with 5 a connection past the backlog once hung until the sender's 5 s timeout, so one webhook of 30 was an
    attempt that failed and never came (CI, PostgreSQL, a loaded machine: a 1 s gap, then 29 of 30)."""


@contextmanager
def receiver(**options: object) -> Iterator[Receiver]:
    """Serve a ``Receiver`` until the block ends; its ``url`` is ``http://127.0.0.1:<port>/hook``."""
    state = Receiver(**options)  # type: ignore[arg-type]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            state.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            failing = len(state.received) <= state.fail_first
            answer = b"not yet" if failing else state.answer
            self.send_response(500 if failing else state.status)
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *_args: object) -> None:
            pass

    server = _Server(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
