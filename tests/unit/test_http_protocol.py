"""``CoalescingTransport``: header blocks leave with the next write, or at the end of the loop's turn; never out of
order, never lost. (Over a real socket, through uvicorn, in ``tests/integration/test_http_protocol.py``.)"""

from __future__ import annotations

import asyncio
import resource

from cloudeasyml.api.http_protocol import CoalescingTransport, connection_cap
from cloudeasyml.settings import ServerSettings


class _Recording(asyncio.Transport):
    """A transport that records what is written, in place of a socket."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def write_eof(self) -> None:
        self.writes.append(b"<eof>")

    def is_closing(self) -> bool:
        return self.closed


HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


async def test_a_header_block_and_its_body_leave_in_one_write() -> None:
    inner = _Recording()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(HEAD)
    assert inner.writes == []
    transport.write(b"ok")
    assert inner.writes == [HEAD + b"ok"]
    await asyncio.sleep(0)
    assert inner.writes == [HEAD + b"ok"]  # the scheduled flush finds nothing left


async def test_a_header_block_without_a_body_leaves_when_the_turn_ends() -> None:
    inner = _Recording()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    no_body = b"HTTP/1.1 204 No Content\r\n\r\n"
    transport.write(no_body)
    await asyncio.sleep(0)
    assert inner.writes == [no_body]


async def test_order_is_kept_and_close_sends_what_is_held() -> None:
    inner = _Recording()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"chunk one")  # not a header block: straight through
    transport.write(HEAD)
    transport.close()
    assert inner.writes == [b"chunk one", HEAD] and inner.closed
    assert transport.is_closing()


async def test_write_eof_sends_what_is_held_first() -> None:
    inner = _Recording()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(HEAD)
    transport.write_eof()
    assert inner.writes == [HEAD, b"<eof>"]


def test_the_connection_cap_leaves_descriptors_for_everything_else() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert connection_cap(ServerSettings(max_connections=5)) == 5
    if soft != resource.RLIM_INFINITY:
        assert connection_cap(ServerSettings(max_connections=10**9)) == max(1, soft - 100)
