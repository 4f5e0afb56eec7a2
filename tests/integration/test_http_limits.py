"""HTTP limits of ``CoalescingHttpToolsProtocol`` (``ServerSettings``), each tried with a raw socket against a real
server: header size and count (431), the header deadline and the body idle timeout (408), the keep-alive timeout,
the connection cap (503 for new connections while open ones are served), and the graceful-shutdown timeout of
``cloudeasyml serve`` (a subprocess, SIGTERM). Each test sets small limits so that it ends within seconds; the
margins are wide because the machine running them may be busy."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import psutil
import pytest

from cloudeasyml.domain.tenants import NewTenant
from cloudeasyml.settings import ServerSettings
from tests.support.live_server import serve_in_thread
from tests.support.server_process import wait_until_healthy

CLI = [sys.executable, "-m", "cloudeasyml.cli"]
HEALTH = b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n"


pytestmark = [
    # One SQLite file: these limits are the HTTP layer's, the same whatever the database.
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
    # Deadlines in seconds and the test process's own memory: measured while no other test runs.
    pytest.mark.serial,
]


@contextmanager
def _connect(address: str, timeout: float = 10.0) -> Iterator[socket.socket]:
    host, port = address.split(":")
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    try:
        yield sock
    finally:
        sock.close()


def _read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """What the server sends until it closes the connection (or resets it); and whether it closed within
    ``timeout`` seconds."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return data, True
        except TimeoutError:
            return data, False
        if not chunk:
            return data, True
        data += chunk
    return data, False


def _read_one_answer(sock: socket.socket) -> bytes:
    """One answer with a ``content-length`` body, leaving the connection open."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length"))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_an_endless_header_block_gets_431_quickly_and_memory_stays_flat(app) -> None:
    limits = ServerSettings(max_header_bytes=16 * 1024)
    process = psutil.Process()
    with serve_in_thread(app, limits) as address, _connect(address) as sock:
        rss_before = process.memory_info().rss
        sent = 0

        def pour() -> None:
            # Endless `X-aaaa: b` lines (8 MiB at most, so that the test ends without the limit too).
            nonlocal sent
            lines = b"X-aaaa: b\r\n" * 1000
            try:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n")
                while sent < 8 * 1024 * 1024:
                    sock.sendall(lines)
                    sent += len(lines)
            except OSError:
                pass  # the server closed the connection

        sender = threading.Thread(target=pour, daemon=True)
        started = time.monotonic()
        sender.start()
        answer, closed = _read_until_closed(sock, timeout=8)
        elapsed = time.monotonic() - started
        sender.join(timeout=10)
        grown = process.memory_info().rss - rss_before
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"connection: close" in answer.lower() and closed
    assert elapsed < 5, elapsed
    # 8 MiB of header lines kept by the parser would take over 100 MiB; dropped, they take next to nothing.
    assert grown < 32 * 1024 * 1024, f"RSS grew {grown / 2**20:.1f} MiB while {sent / 2**20:.1f} MiB were sent"


def test_one_header_line_too_long_for_the_limit_gets_431(app) -> None:
    limits = ServerSettings(max_header_bytes=4096)
    with serve_in_thread(app, limits) as address, _connect(address) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n")
        answer, closed = _read_until_closed(sock, timeout=5)
    assert answer.startswith(b"HTTP/1.1 431 ") and closed, answer[:200]


def test_a_url_too_long_for_the_header_limit_gets_414(app) -> None:
    limits = ServerSettings(max_header_bytes=4096)
    with serve_in_thread(app, limits) as address, _connect(address) as sock:
        sock.sendall(b"GET /health?" + b"a" * 5000 + b" HTTP/1.1\r\nHost: test\r\n\r\n")
        answer, closed = _read_until_closed(sock, timeout=5)
    assert answer.startswith(b"HTTP/1.1 414 ") and closed, answer[:200]


def test_too_many_header_lines_get_431(app) -> None:
    limits = ServerSettings(max_headers=20)
    with serve_in_thread(app, limits) as address:
        with _connect(address) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n" + b"X-a: b\r\n" * 18 + b"\r\n")
            assert _read_one_answer(sock).startswith(b"HTTP/1.1 200 ")  # 19 lines: within the limit
        with _connect(address) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n" + b"X-a: b\r\n" * 30 + b"\r\n")
            answer, closed = _read_until_closed(sock, timeout=5)
    assert answer.startswith(b"HTTP/1.1 431 ") and closed, answer[:200]


def test_headers_trickled_past_the_deadline_get_408_and_the_connection_is_closed(app) -> None:
    limits = ServerSettings(header_timeout_seconds=1.5)
    with serve_in_thread(app, limits) as address, _connect(address) as sock, _connect(address) as silent:
        started = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        closed_at = None
        # One header line every 0.3 s: each line is progress, but the deadline counts from the start.
        while time.monotonic() - started < 8:
            try:
                sock.sendall(b"X-a: b\r\n")
            except OSError:
                closed_at = time.monotonic() - started
                break
            sock.settimeout(0.3)
            try:
                answer = sock.recv(65536)
            except TimeoutError:
                continue
            closed_at = time.monotonic() - started
            break
        assert closed_at is not None, "still open after 8 s of trickled headers"
        assert 1.0 < closed_at < 5, closed_at
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        # A connection that sends nothing at all is closed at the same deadline.
        silent_answer, closed = _read_until_closed(silent, timeout=5)
        assert closed and silent_answer.startswith(b"HTTP/1.1 408 ")


def test_an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout(app) -> None:
    limits = ServerSettings(keep_alive_timeout_seconds=0.5)
    with serve_in_thread(app, limits) as address, _connect(address) as sock:
        for _ in range(2):  # kept alive between requests that follow each other
            sock.sendall(HEALTH)
            assert _read_one_answer(sock).startswith(b"HTTP/1.1 200 ")
        started = time.monotonic()
        rest, closed = _read_until_closed(sock, timeout=4)
    assert closed and rest == b"", rest
    assert time.monotonic() - started < 3


def test_a_stalled_body_gets_408_after_the_body_timeout(app, tenant: NewTenant) -> None:
    limits = ServerSettings(body_timeout_seconds=1.0)
    with serve_in_thread(app, limits) as address, _connect(address) as sock:
        sock.sendall(
            b"POST /deployments HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {tenant.key}\r\nContent-Length: 1000\r\n\r\n{{".encode()
        )
        started = time.monotonic()
        answer, closed = _read_until_closed(sock, timeout=8)
        elapsed = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408 ") and closed, answer[:200]
        assert 0.8 < elapsed < 6, elapsed
        # The server is fine afterwards.
        assert httpx.get(f"http://{address}/health").status_code == 200


def test_connections_past_the_cap_get_503_while_open_ones_are_served(app) -> None:
    limits = ServerSettings(max_connections=6, keep_alive_timeout_seconds=60, header_timeout_seconds=60)
    with serve_in_thread(app, limits) as address, _connect(address) as kept, ExitStack() as flood:
        kept.sendall(HEALTH)
        assert _read_one_answer(kept).startswith(b"HTTP/1.1 200 ")
        held = [flood.enter_context(_connect(address)) for _ in range(5)]  # with `kept`, the cap is reached
        for sock in held:  # each answered once, so the server has surely counted it
            sock.sendall(HEALTH)
            assert _read_one_answer(sock).startswith(b"HTTP/1.1 200 ")
        for _ in range(5):
            with _connect(address) as extra:
                try:
                    extra.sendall(HEALTH)
                except OSError:
                    pass  # refused before the request went out: also a refusal
                answer, closed = _read_until_closed(extra, timeout=5)
                assert closed and (answer == b"" or answer.startswith(b"HTTP/1.1 503 ")), answer[:200]
                assert b"200 OK" not in answer
        # The connection opened before the flood is still served, more than once.
        for _ in range(3):
            kept.sendall(HEALTH)
            assert _read_one_answer(kept).startswith(b"HTTP/1.1 200 ")
        for sock in held:
            sock.close()
        # Once the flood is gone, new connections are served again.
        deadline = time.monotonic() + 5
        while True:
            with _connect(address) as fresh:
                fresh.sendall(HEALTH)
                answer, _ = _read_until_closed(fresh, timeout=2)
            if answer.startswith(b"HTTP/1.1 200 ") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sigterm_exits_within_the_shutdown_timeout_despite_a_stalled_body(
    migrated_url: str, tenant: NewTenant, tmp_path: Path
) -> None:
    # The database and the key come from the fixtures (the CLI's db and tenants commands: test_cli_and_server).
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDEASYML_")}
    env.update(
        CLOUDEASYML_HOME=str(tmp_path / "home"),
        CLOUDEASYML_DATABASE_URL=migrated_url,
        CLOUDEASYML_SERVER__GRACEFUL_SHUTDOWN_SECONDS="2",
        CLOUDEASYML_SERVER__BODY_TIMEOUT_SECONDS="120",  # so that only the shutdown timeout can end the request
    )
    key = tenant.key
    port = _free_port()
    server = subprocess.Popen(
        [*CLI, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_until_healthy(server, f"http://127.0.0.1:{port}")
        with _connect(f"127.0.0.1:{port}") as sock:
            # One byte of a 1000-byte body, then nothing (issue 10, row 11).
            sock.sendall(
                b"POST /deployments HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                + f"Authorization: Bearer {key}\r\nContent-Length: 1000\r\n\r\n{{".encode()
            )
            time.sleep(0.5)
            started = time.monotonic()
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pytest.fail("still running 15 s after SIGTERM")
            elapsed = time.monotonic() - started
    finally:
        if server.poll() is None:
            server.kill()
        output = server.communicate(timeout=30)[0]
    assert elapsed < 2 + 6, (elapsed, output)  # the shutdown timeout, then the app's shutdown and the exit
