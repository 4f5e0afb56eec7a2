"""A real uvicorn server on a free loopback port, in a background thread, for stock clients."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from litestar import Litestar

from cloudeasyml.api.http_protocol import CoalescingHttpToolsProtocol
from cloudeasyml.settings import ServerSettings


@contextmanager
def serve_in_thread(app: Litestar, limits: ServerSettings | None = None) -> Iterator[str]:
    """Serve ``app`` until the block ends, as ``cloudeasyml serve`` does (its HTTP protocol); yields ``host:port``.

    ``limits`` gives the protocol's HTTP limits (header size and count, timeouts, connection cap) and the
    graceful-shutdown timeout; the default is ``ServerSettings()``'s.
    """
    limits = limits or ServerSettings()
    protocol = type("LimitedProtocol", (CoalescingHttpToolsProtocol,), {"server_settings": limits})
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            http=protocol,
            timeout_graceful_shutdown=limits.graceful_shutdown_seconds,  # type: ignore[arg-type]
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
        yield f"127.0.0.1:{port}"
    except BaseException:
        _stop(server, thread, sock)
        raise
    _stop(server, thread, sock)
    # A clean shutdown is part of every test that serves: the app's lifespan must stop its background work without
    # an error (an app served twice once broke here, its workers bound to the first server's event loop).
    lifespan = getattr(server, "lifespan", None)
    assert not thread.is_alive(), "the server did not stop within 15 s"
    assert lifespan is None or not lifespan.shutdown_failed, "the app's shutdown failed (see the log above)"


def _stop(server: uvicorn.Server, thread: threading.Thread, sock: socket.socket) -> None:
    server.should_exit = True
    thread.join(timeout=15)
    sock.close()
