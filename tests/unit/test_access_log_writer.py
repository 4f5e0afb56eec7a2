"""The access log costs the event loop a deque append per request: lines are formatted and written by a writer thread
in batches, not handed over (and the writer woken) one at a time."""

from __future__ import annotations

import io
import json
import sys
import threading

import pytest

from cloudeasyml.api.request_log import configure_access_log, drain_access_log, serve_logged
from cloudeasyml.settings import ServerSettings


class _CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, str]] = []

    def write(self, text: str) -> int:
        self.writes.append((threading.current_thread().name, text))
        return super().write(text)

    def isatty(self) -> bool:
        return False


async def _answer(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def _ignore(message) -> None:  # type: ignore[no-untyped-def]
    pass


async def test_access_lines_are_written_in_batches_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each line used to be a ``logging`` record queued to a writer thread woken per line (a thread switch per
    request on the event loop's critical path, and one write each); now 300 lines leave in a few writes, all made
    by the writer thread."""
    configure_access_log(ServerSettings(access_log=True, log_format="json"))
    assert drain_access_log(5.0)
    stream = _CountingStream()
    monkeypatch.setattr(sys, "stderr", stream)
    for number in range(300):
        scope = {"type": "http", "method": "POST", "path": f"/predict/{number}", "headers": [], "state": {}}
        await serve_logged(scope, None, _ignore, _answer)  # type: ignore[arg-type]
    assert drain_access_log(5.0)
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    assert [line["route"] for line in lines] == [f"/predict/{n}" for n in range(300)]
    assert all(line["status"] == 200 and line["logger"] == "cloudeasyml.access" for line in lines)
    assert len(stream.writes) <= 30
    assert {name for name, _ in stream.writes} == {"cloudeasyml-access-log"}
