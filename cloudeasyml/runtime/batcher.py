"""Dynamic batching for one deployment.

Requests queue per deployment. An idle deployment runs a request at once: no batch window is waited out when
nothing else is queued. Under load (the last batch held several requests, or another instance is busy) the
next batch waits while requests keep arriving, up to ``max_batch_delay_ms`` or ``max_batch_size`` items,
and what arrives meanwhile runs together. Runs happen in worker threads (onnxruntime releases the GIL), so the
event loop keeps accepting and authenticating requests; only batches measured faster than a thread hop
(``INLINE_BELOW_MS``, e.g. a small MLP) run on the loop itself, where they block it for less time than the
hop would cost.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec

from cloudeasyml.errors import DeadlineExceededError, DeploymentUnloadedError, InvalidInputError, OverloadedError

__all__ = ("INLINE_BELOW_MS", "BatchResult", "Batcher")

RunBatch = Callable[[list[Any]], list[Any]]

INLINE_BELOW_MS = 0.3
"""Batches whose average run time is below this run on the event loop: handing a batch to a thread and back
costs the loop ~0.05-0.1 ms of CPU plus a wake-up, more than such a batch blocks it."""
_SMOOTHING = 0.2
QUIET_MS = 1.0
"""Under load, a gathering batch stops waiting once no request has arrived for this long."""


class BatchResult(msgspec.Struct, frozen=True):
    """One request's outputs and its share of the batch's processing time (by item count)."""

    outputs: list[Any]
    processing_ms: float
    batch_items: int


class _Pending:
    __slots__ = ("cancelled", "future", "items")

    def __init__(self, items: Sequence[Any], future: asyncio.Future[BatchResult]) -> None:
        self.items = items
        self.future = future
        self.cancelled = False


class Batcher:
    """Queues requests of one deployment and runs them in batches through ``run_batch``."""

    def __init__(
        self,
        run_batch: RunBatch,
        *,
        max_batch_size: int,
        max_batch_delay_ms: float,
        instances: int,
        max_queue_items: int,
        timeout_ms: float,
        quiet_ms: float = QUIET_MS,
    ) -> None:
        self._run_batch = run_batch
        self._quiet = quiet_ms / 1000
        self._max_batch_size = max_batch_size
        self._delay = max_batch_delay_ms / 1000
        self._instances = instances
        self._max_queue_items = max_queue_items
        self._timeout = timeout_ms / 1000
        self._queue: deque[_Pending] = deque()
        self._queued_items = 0
        self._running = 0
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._full: asyncio.Future[None] | None = None
        self._average_ms: float | None = None
        self._executor = ThreadPoolExecutor(max_workers=instances, thread_name_prefix="cloudeasyml-batch")

    @property
    def queued_items(self) -> int:
        """Items waiting for a batch."""
        return self._queued_items

    @property
    def runs_inline(self) -> bool:
        """Whether batches are cheap enough to run on the event loop."""
        return self._average_ms is not None and self._average_ms < INLINE_BELOW_MS

    async def submit(self, items: Sequence[Any]) -> BatchResult:
        """Run ``items`` (one request) in the next batch; ``OverloadedError`` at once when the queue is full,
        ``DeadlineExceededError`` past the deadline (the request is then dropped if still queued).
        """
        if self._closing:
            raise DeploymentUnloadedError("the deployment is being unloaded")
        if len(items) > self._max_queue_items:  # could never be queued: retrying would not help
            raise InvalidInputError(f"this deployment accepts at most {self._max_queue_items} inputs per request")
        if self._running == 0 and self.runs_inline and len(items) <= self._max_batch_size:
            outputs, elapsed_ms = self._timed(list(items))  # idle and cheap: no queue, no task, no thread
            return BatchResult(outputs=outputs, processing_ms=elapsed_ms, batch_items=len(items))
        if self._queued_items + len(items) > self._max_queue_items:
            raise OverloadedError("the deployment's queue is full; retry shortly", retry_after=1)
        loop = asyncio.get_running_loop()
        pending = _Pending(items, loop.create_future())
        self._queue.append(pending)
        self._queued_items += len(items)
        if self._full is not None and self._queued_items >= self._max_batch_size:
            _wake(self._full)
        if self._running < self._instances:
            self._running += 1
            self._idle.clear()
            loop.create_task(self._work())
        timer = loop.call_later(self._timeout, self._expire, pending)
        try:
            return await pending.future
        finally:
            timer.cancel()

    async def drain(self) -> None:
        """Refuse new requests and wait until queued and running ones have finished; then free the threads."""
        self._closing = True
        await self._idle.wait()
        self._executor.shutdown(wait=False)

    def _expire(self, pending: _Pending) -> None:
        if not pending.future.done():
            pending.cancelled = True
            pending.future.set_exception(DeadlineExceededError(f"no result within {self._timeout * 1000:.0f} ms"))

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        under_load = False
        try:
            while self._queue:
                # Gathering pays only where a run costs more than handling requests: a batch that runs on the
                # loop in microseconds should go now, not keep the loop's own work waiting.
                if (under_load or self._running > 1) and self._delay and not self.runs_inline:
                    await self._gather(loop)
                batch = self._take()
                if batch:
                    await self._run(loop, batch)
                    under_load = len(batch) > 1
        finally:
            self._running -= 1
            if self._running == 0:
                self._idle.set()

    async def _gather(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait while requests keep arriving: until the queue holds a full batch, no request has come for
        ``QUIET_MS``, or ``max_batch_delay_ms`` has passed. Under steady load the clients of the last batch
        send their next requests in a burst; this lets one batch take the whole burst, and stops waiting as
        soon as the burst is over (so a lower concurrency does not wait out the whole window).
        """
        deadline = loop.time() + self._delay
        quiet = min(self._quiet, self._delay)
        while self._queued_items < self._max_batch_size and self._full is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            before = self._queued_items
            self._full = loop.create_future()
            timer = loop.call_later(min(quiet, remaining), _wake, self._full)
            try:
                await self._full
            finally:
                timer.cancel()
                self._full = None
            if self._queued_items == before:
                return

    def _take(self) -> list[_Pending]:
        batch: list[_Pending] = []
        size = 0
        while self._queue:
            head = self._queue[0]
            if batch and size + len(head.items) > self._max_batch_size:
                break
            self._queue.popleft()
            self._queued_items -= len(head.items)
            if head.cancelled or head.future.done():
                continue
            batch.append(head)
            size += len(head.items)
        return batch

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        items = [item for pending in batch for item in pending.items]
        try:
            if self.runs_inline:
                outputs, elapsed_ms = self._timed(items)
            else:
                outputs, elapsed_ms = await loop.run_in_executor(self._executor, self._timed, items)
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0], exc)
            else:
                # One bad request must not fail its neighbours: run each alone to find the culprit.
                for pending in batch:
                    await self._run(loop, [pending])
            return
        offset = 0
        for pending in batch:
            count = len(pending.items)
            share = elapsed_ms * count / len(items)
            result = BatchResult(outputs=outputs[offset : offset + count], processing_ms=share, batch_items=len(items))
            _settle(pending, result)
            offset += count

    def _timed(self, items: list[Any]) -> tuple[list[Any], float]:
        started = time.perf_counter()
        outputs = self._run_batch(items)
        elapsed_ms = (time.perf_counter() - started) * 1000
        if len(outputs) != len(items):
            raise RuntimeError(f"the model returned {len(outputs)} predictions for {len(items)} inputs")
        average = self._average_ms
        self._average_ms = elapsed_ms if average is None else average + _SMOOTHING * (elapsed_ms - average)
        return outputs, elapsed_ms


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _settle(pending: _Pending, outcome: BatchResult | BaseException) -> None:
    future = pending.future
    if future.done() or pending.cancelled:  # a caller past its deadline has gone; nobody would read this
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
