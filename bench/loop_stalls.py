"""What holds the event loop longest: ``python -m bench.loop_stalls [--requests N] [--concurrency C]``.

Runs the app in process (the tiny MLP of the tests, SQLite, metering on, access log on; no HTTP), sends ``N``
``POST /predict`` requests ``C`` at a time through its ASGI callable, and times every callback the event loop runs
in the **thread's CPU time** (``time.thread_time``), so that other processes preempting it on a busy machine do not
count. Prints the callbacks that took longest, grouped by what they ran, and the share of the run's requests that
a stall of each size could delay: at c=1 a request that arrives while a 5 ms callback runs waits for it, so a
callback of ``t`` ms every ``T`` seconds puts about ``rate * t / 1000`` of each ``T``'s requests behind it (the c=1
p99 is above ``t`` once that exceeds 1 %).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.metrics_cost import _call, _lifespan

__all__ = ("main",)


def _timed_handles(stalls: list[tuple[float, str]], threshold_s: float) -> Any:
    """Patch ``asyncio.events.Handle._run`` to time each callback in thread CPU time; returns the original."""
    original = asyncio.events.Handle._run

    def _run(self: asyncio.events.Handle) -> None:
        started = time.thread_time()
        original(self)
        spent = time.thread_time() - started
        if spent >= threshold_s:
            stalls.append((spent, _describe(self)))

    asyncio.events.Handle._run = _run  # type: ignore[method-assign]
    return original


def _describe(handle: asyncio.events.Handle) -> str:
    """What a callback ran: a task's coroutine and where it stopped (the innermost await it suspended at, which
    ends the slice that was timed), or the callback's name.
    """
    callback = handle._callback  # type: ignore[attr-defined]
    task = getattr(callback, "__self__", None)
    if not isinstance(task, asyncio.Task):
        return getattr(callback, "__qualname__", repr(callback))
    coro: Any = task.get_coro()
    name = getattr(coro, "__qualname__", repr(coro))
    where = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None and "site-packages" not in frame.f_code.co_filename:
            where.append(f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return f"task {name}" + (f" (suspended at {' > '.join(where[-3:])})" if where else " (done)")


async def _run(requests: int, concurrency: int, threshold_ms: float) -> None:
    from cloudeasyml.app import create_app
    from cloudeasyml.cli.db import upgrade_database
    from cloudeasyml.db.engine import one_transaction
    from cloudeasyml.domain.tenants import create_tenant
    from cloudeasyml.plugins.manager import get_plugin_manager
    from cloudeasyml.settings import DatabaseSettings, RuntimeSettings, ServerSettings, Settings
    from tests.support import tiny_model

    home = Path(tempfile.mkdtemp(prefix="cloudeasyml-stalls-"))
    url = f"sqlite+aiosqlite:///{home / 'bench.db'}"
    await asyncio.to_thread(upgrade_database, url)
    async with one_transaction(url) as session:
        key = (await create_tenant(session, "bench", "owner@example.com")).key
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(tiny_model, name="tiny")
    settings = Settings(
        database=DatabaseSettings(url=url),
        runtime=RuntimeSettings(artifact_dir=str(home / "artifacts")),
        server=ServerSettings(access_log=True, log_format="json"),
        home=str(home),
    )
    app = create_app(settings, pm)
    stalls: list[tuple[float, str]] = []
    async with _lifespan(app):
        status, answer = await _call(app, "POST", "/deployments", key, b'{"modelName": "tiny"}')
        assert status == 201, answer
        body = f'{{"deploymentId":"{json.loads(answer)["id"]}","inputs":[{{"x":1.0,"y":2.0}}]}}'.encode()

        async def client(count: int) -> None:
            for _ in range(count):
                status, answer = await _call(app, "POST", "/predict", key, body)
                assert status == 200, answer
                await asyncio.sleep(0)  # as a client's next request would: a turn of the loop in between

        await client(300)  # warm up: load, measure the batch cost
        original = _timed_handles(stalls, threshold_ms / 1000)
        gc_pauses: list[tuple[int, float]] = []
        gc_started = [0.0]

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                gc_started[0] = time.thread_time()
            else:
                gc_pauses.append((info["generation"], (time.thread_time() - gc_started[0]) * 1000))

        gc.callbacks.append(on_gc)
        started, cpu = time.perf_counter(), time.process_time()
        try:
            await asyncio.gather(*(client(requests // concurrency) for _ in range(concurrency)))
        finally:
            asyncio.events.Handle._run = original  # type: ignore[method-assign]
            gc.callbacks.remove(on_gc)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    done = requests // concurrency * concurrency
    print(f"{done} requests, c={concurrency}: {done / wall:,.0f} req/s in process, {cpu / done * 1e6:.0f} µs CPU each")
    for generation in (0, 1, 2):
        pauses = [ms for gen, ms in gc_pauses if gen == generation]
        if pauses:
            print(f"garbage collections of generation {generation}: {len(pauses)}, longest {max(pauses):.2f} ms CPU")
    by_kind: dict[str, list[float]] = defaultdict(list)
    for spent, what in stalls:
        by_kind[what].append(spent * 1000)
    print(f"\ncallbacks that held the loop >= {threshold_ms:g} ms of thread CPU, by what they ran:")
    print(f"{'count':>6} {'max ms':>7} {'total ms':>9}  callback")
    for what, spent in sorted(by_kind.items(), key=lambda kv: -max(kv[1]))[:15]:
        print(f"{len(spent):>6} {max(spent):>7.2f} {sum(spent):>9.1f}  {what}")


def main(argv: list[str] | None = None) -> int:
    """Run it and print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.loop_stalls", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--threshold-ms", type=float, default=0.5, help="Report callbacks at least this long.")
    args = parser.parse_args(argv)
    asyncio.run(_run(args.requests, args.concurrency, args.threshold_ms))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
