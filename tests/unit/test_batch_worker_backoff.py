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
