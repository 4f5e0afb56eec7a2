"""A batch worker that keeps failing (its database down or restarting) backs off: the poll interval doubled per
failure in a row, jittered, up to ``retry_backoff_max_seconds``; it never stops retrying."""

from __future__ import annotations

from typing import Any

from cloudeasyml.domain.batch.worker import BatchWorker
from cloudeasyml.settings import BatchSettings


def test_the_backoff_doubles_per_failure_up_to_the_cap() -> None:
    settings = BatchSettings(poll_interval_seconds=0.5, retry_backoff_max_seconds=10.0)
    worker = BatchWorker(None, None, None, settings)  # type: ignore[arg-type]
    for failures, base in ((1, 0.5), (2, 1.0), (3, 2.0), (5, 8.0), (6, 10.0), (1000, 10.0)):
        waits: list[Any] = [worker.backoff(failures) for _ in range(50)]
        assert all(base / 2 <= wait <= base for wait in waits), (failures, min(waits), max(waits))
        assert len(set(waits)) > 1  # jittered: the workers of every pod do not come back at once


def test_an_idle_worker_looks_less_often_up_to_the_idle_cap() -> None:
    settings = BatchSettings(poll_interval_seconds=0.5, idle_poll_max_seconds=5.0)
    worker = BatchWorker(None, None, None, settings)  # type: ignore[arg-type]
    assert [worker.idle_wait(n) for n in (1, 2, 3, 4, 5, 6, 100)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    # A cap below the poll interval never makes a worker look more often than the interval.
    slow = BatchWorker(None, None, None, BatchSettings(poll_interval_seconds=2.0, idle_poll_max_seconds=1.0))  # type: ignore[arg-type]
    assert slow.idle_wait(1) == slow.idle_wait(9) == 2.0


async def test_notify_ends_an_idle_wait_at_once() -> None:
    import asyncio
    import time

    worker = BatchWorker(None, None, None, BatchSettings())  # type: ignore[arg-type]
    started = time.monotonic()
    waiting = asyncio.get_running_loop().create_task(worker._idle_wait(30.0))
    await asyncio.sleep(0)
    worker.notify()
    assert await waiting is True
    assert time.monotonic() - started < 5.0
    assert await worker._idle_wait(0.01) is False  # the wake was used up: the next wait runs its course
