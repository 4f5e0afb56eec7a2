"""In-process cost of one ``POST /predict`` (tiny MLP) through the app's ASGI callable, no HTTP: CPU per request of
the whole path (auth, decode, batch, run, bill, metrics, access log off). Run it against two checkouts taking turns
to compare them (``PYTHONPATH=<checkout> python bench/metrics_cost.py``); with ``--ab`` it alternates, in one
process, blocks of requests with the metrics on and with their hooks replaced by no-ops (the difference is their
cost, without the noise of comparing two processes on a busy machine); with ``--ops`` it times the metric updates
one prediction makes, alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

REQUESTS = 3000
ROUNDS = 100
"""Blocks of ``--ab``, half with the metrics on (the even ones), half off."""
BLOCK = 300


class _Off:
    """Stands for the metrics' hooks when they are switched off."""

    def waited(self, seconds: float) -> None:
        pass

    def ran(self, items: int, seconds: float) -> None:
        pass

    def __call__(self, *args: object) -> None:
        pass


async def _call(app: Any, method: str, path: str, key: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request through the app's ASGI callable, on this event loop."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"authorization", f"Bearer {key}".encode()), (b"content-type", b"application/json")],
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 40000),
        "state": {},
    }
    status = 0
    chunks: list[bytes] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


@contextlib.asynccontextmanager
async def _lifespan(app: Any) -> AsyncIterator[None]:
    """The app's startup and shutdown on this event loop (a test client would run them on a loop of its own)."""
    inbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    started, stopped = asyncio.Event(), asyncio.Event()

    async def send(message: dict[str, str]) -> None:
        (started if message["type"].startswith("lifespan.startup") else stopped).set()

    task = asyncio.get_running_loop().create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, send)
    )
    await inbox.put({"type": "lifespan.startup"})
    await started.wait()
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await stopped.wait()
        await task


async def _predict_cost(ab: bool = False) -> float:
    from cloudeasyml.app import create_app
    from cloudeasyml.cli.db import upgrade_database
    from cloudeasyml.db.engine import one_transaction
    from cloudeasyml.domain.tenants import create_tenant
    from cloudeasyml.plugins.manager import get_plugin_manager
    from cloudeasyml.settings import DatabaseSettings, RuntimeSettings, ServerSettings, Settings
    from tests.support import tiny_model

    home = Path(tempfile.mkdtemp())
    url = f"sqlite+aiosqlite:///{home / 'bench.db'}"
    await asyncio.to_thread(upgrade_database, url)
    async with one_transaction(url) as session:
        key = (await create_tenant(session, "bench", "owner@example.com")).key
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(tiny_model, name="tiny")
    settings = Settings(
        database=DatabaseSettings(url=url),
        runtime=RuntimeSettings(artifact_dir=str(home / "artifacts")),
        server=ServerSettings(access_log=False),
        home=str(home),
    )
    app = create_app(settings, pm)
    async with _lifespan(app):
        status, answer = await _call(app, "POST", "/deployments", key, b'{"modelName": "tiny"}')
        assert status == 201, answer
        body = f'{{"deploymentId":"{json.loads(answer)["id"]}","inputs":[{{"x":1.0,"y":2.0}}]}}'.encode()
        statuses: set[int] = set()

        async def one() -> None:
            statuses.add((await _call(app, "POST", "/predict", key, body))[0])

        for _ in range(300):  # warm up: load, export, measure the batch cost
            await one()
        if ab:
            return await _alternate(app, one)
        started = time.process_time()
        for _ in range(REQUESTS):
            await one()
        elapsed = time.process_time() - started
        assert statuses == {200}, statuses
    return elapsed / REQUESTS * 1e6


async def _alternate(app: Any, one: Callable[[], Awaitable[None]]) -> float:
    services = app.state.services
    (loaded,) = services.registry.loaded()
    hooks = (loaded.batcher._observer, app._observe(), services.metrics.record_success)
    off = _Off()
    costs: dict[bool, list[float]] = {True: [], False: []}
    for round_ in range(ROUNDS):
        on = round_ % 2 == 0
        loaded.batcher._observer, app.__dict__["_request_observer"], services.metrics.record_success = (
            hooks if on else (off, off, off)
        )
        started = time.process_time()
        for _ in range(BLOCK):
            await one()
        costs[on].append((time.process_time() - started) / BLOCK * 1e6)
    for name, pick in (("median", statistics.median), ("least", min)):
        on_us, off_us = pick(costs[True]), pick(costs[False])
        print(f"{name} of {ROUNDS // 2} blocks of {BLOCK}: on {on_us:.1f} us, off {off_us:.1f} us CPU per request")
    return statistics.median(costs[True]) - statistics.median(costs[False])


def _ops_cost() -> float:
    from cloudeasyml.metering.metrics import Metrics

    metrics = Metrics()
    series = metrics.model("tiny", "1.0.0")
    count = 100_000
    started = time.process_time()
    for _ in range(count):
        metrics.observe_request("POST", "/predict", 200, 0.0004)
        series.waited(0.0)
        series.ran(1, 0.00005)
        series.billed(1, 0.05, 0.0010000)
    return (time.process_time() - started) / count * 1e6


if __name__ == "__main__":
    if "--ops" in sys.argv:
        print(f"metric updates of one prediction: {_ops_cost():.2f} us CPU")
    elif "--ab" in sys.argv:
        print(f"the metrics' cost: {asyncio.run(_predict_cost(ab=True)):.1f} us CPU per request")
    else:
        print(f"POST /predict in process: {asyncio.run(_predict_cost()):.1f} us CPU per request")
