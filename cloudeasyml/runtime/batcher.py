"""Dynamic batching for one deployment.

Requests queue per deployment. An idle deployment runs a request at once: no batch window is waited out when
nothing else is queued. Under load (the last batch held several requests, or another instance is busy) the
next batch waits while requests keep arriving, up to ``max_batch_delay_ms`` or until it holds its share of
``max_batch_size`` items, and what arrives meanwhile runs together. With several instances ``max_batch_size``
is split between them (all of it with one instance, half each with two, ...), so that instances take turns
rather than one taking every waiting request while the others idle.

Runs happen in worker threads (onnxruntime releases the GIL), so the event loop keeps accepting and
authenticating requests. A worker thread that finishes a batch while a full one is already waiting starts it
at once, without the round trip through a busy event loop (measured at several milliseconds under load); only
the results go back to the loop. Batches measured faster than a thread hop (``INLINE_BELOW_MS``, e.g. a small
MLP) run on the loop itself, where they block it for less time than the hop would cost.
"""

from __future__ import annotations

import asyncio
import math
import threading
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
    """One queued request: items that may share a batch, or (``alone``) work that runs by itself."""

    __slots__ = ("alone", "cancelled", "future", "items", "size")

    def __init__(
        self,
        items: Sequence[Any],
        future: asyncio.Future[BatchResult],
        alone: Callable[[], Any] | None = None,
        size: int | None = None,
    ) -> None:
        self.items = items
        self.future = future
        self.alone = alone
        self.size = len(items) if size is None else size
        """Items this request counts for in the queue and in batches."""
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
        self._lock = threading.Lock()
        """Guards the queue: worker threads take chained batches from it."""
        self._share = math.ceil(max_batch_size / instances)
        """Most items in one batch (a single larger request still runs, alone), and what a gathering batch waits
        for: ``max_batch_size`` split between the instances. Were one instance to take every waiting request,
        the others would idle until its clients came back (measured with MiniLM, two instances, c=64: batches of
        15 to 64 items and 358 items/s, against 656-697 with the split)."""
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
        self._admit(len(items))
        if self._running == 0 and self.runs_inline and len(items) <= self._max_batch_size:
            # Idle and cheap: no queue, no task, no thread.
            outputs, elapsed_ms = self._timed(lambda: self._run_items(list(items)))
            return BatchResult(outputs=outputs, processing_ms=elapsed_ms, batch_items=len(items))
        return await self._enqueue(_Pending(items, asyncio.get_running_loop().create_future()))

    async def submit_alone(self, work: Callable[[], Any], size: int) -> BatchResult:
        """Run ``work()``, one request that cannot share a batch (raw tensors of the V2 protocol), by itself but
        through the same queue as every other request: the same instances, queue bound, deadline and drain.
        It counts as ``size`` items; ``outputs`` is ``[work()]`` and the whole run's time is its share.
        """
        self._admit(size)
        if self._running == 0 and self.runs_inline:
            outputs, elapsed_ms = self._timed(lambda: [work()])
            return BatchResult(outputs=outputs, processing_ms=elapsed_ms, batch_items=size)
        return await self._enqueue(_Pending((), asyncio.get_running_loop().create_future(), work, size))

    def _admit(self, size: int) -> None:
        if self._closing:
            raise DeploymentUnloadedError("the deployment is being unloaded")
        if size > self._max_queue_items:  # could never be queued: retrying would not help
            raise InvalidInputError(f"this deployment accepts at most {self._max_queue_items} inputs per request")

    async def _enqueue(self, pending: _Pending) -> BatchResult:
        if self._queued_items + pending.size > self._max_queue_items:
            raise OverloadedError("the deployment's queue is full; retry shortly", retry_after=1)
        loop = asyncio.get_running_loop()
        with self._lock:
            self._queue.append(pending)
            self._queued_items += pending.size
        if self._full is not None and self._queued_items >= self._share:
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
                    under_load = await self._run(loop, batch) > 1
        finally:
            self._running -= 1
            if self._running == 0:
                self._idle.set()

    async def _gather(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait while requests keep arriving: until the queue holds this instance's share of a full batch, no
        request has come for ``QUIET_MS``, or ``max_batch_delay_ms`` has passed. Under steady load the clients
        of the last batch send their next requests in a burst; this lets one batch take the whole burst (its
        share of it), and stops waiting as soon as the burst is over (so a lower concurrency does not wait out
        the whole window).
        """
        deadline = loop.time() + self._delay
        quiet = min(self._quiet, self._delay)
        while self._queued_items < self._share and self._full is None:
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
        with self._lock:
            return self._take_locked()

    def _take_full(self) -> list[_Pending]:
        """A batch if the queue holds at least a fair share (from a worker thread); else nothing."""
        with self._lock:
            return self._take_locked() if self._queued_items >= self._share and not self._closing else []

    def _take_locked(self) -> list[_Pending]:
        batch: list[_Pending] = []
        size = 0
        while self._queue:
            head = self._queue[0]
            if batch and (head.alone is not None or size + head.size > self._share):
                break
            self._queue.popleft()
            self._queued_items -= head.size
            if head.cancelled or head.future.done():
                continue
            batch.append(head)
            size += head.size
            if head.alone is not None:
                break
        return batch

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> int:
        """Run ``batch`` (and, in the worker thread, any full batch waiting when it ends); settle every request.
        Returns the number of requests in the last batch run.
        """
        if self.runs_inline:
            try:
                self._settle_batch(batch, *self._execute(batch))
            except Exception as exc:
                await self._isolate(loop, batch, exc)
            return len(batch)
        last, failure = await loop.run_in_executor(self._executor, self._run_chain, loop, batch)
        if failure is not None:
            await self._isolate(loop, last, failure)
        return len(last)

    def _run_chain(
        self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]
    ) -> tuple[list[_Pending], Exception | None]:
        """In a worker thread: run ``batch``, hand its results to the loop, and go on with the next batch while a
        full one is waiting. Returns the last batch, and its error if it failed (the loop isolates the culprit).
        """
        while True:
            try:
                outputs, elapsed_ms = self._execute(batch)
            except Exception as exc:
                return batch, exc
            loop.call_soon_threadsafe(self._settle_batch, batch, outputs, elapsed_ms)
            following = self._take_full()
            if not following:
                return batch, None
            batch = following

    async def _isolate(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending], exc: Exception) -> None:
        """A batch failed: one bad request must not fail its neighbours, so each runs alone to find the culprit."""
        if len(batch) == 1:
            _settle(batch[0], exc)
            return
        for pending in batch:
            await self._run(loop, [pending])

    def _settle_batch(self, batch: list[_Pending], outputs: list[Any], elapsed_ms: float) -> None:
        """Give each request its outputs and its share of the batch's time, by item count."""
        if batch[0].alone is not None:
            _settle(batch[0], BatchResult(outputs=outputs, processing_ms=elapsed_ms, batch_items=batch[0].size))
            return
        total = len(outputs)
        offset = 0
        for pending in batch:
            count = len(pending.items)
            share = elapsed_ms * count / total
            result = BatchResult(outputs=outputs[offset : offset + count], processing_ms=share, batch_items=total)
            _settle(pending, result)
            offset += count

    def _execute(self, batch: list[_Pending]) -> tuple[list[Any], float]:
        head = batch[0]
        if head.alone is not None:
            work = head.alone
            return self._timed(lambda: [work()])
        items = _items_of(batch)
        return self._timed(lambda: self._run_items(items))

    def _run_items(self, items: list[Any]) -> list[Any]:
        outputs = self._run_batch(items)
        if len(outputs) != len(items):
            raise RuntimeError(f"the model returned {len(outputs)} predictions for {len(items)} inputs")
        return outputs

    def _timed(self, run: Callable[[], list[Any]]) -> tuple[list[Any], float]:
        started = time.perf_counter()
        outputs = run()
        elapsed_ms = (time.perf_counter() - started) * 1000
        average = self._average_ms
        self._average_ms = elapsed_ms if average is None else average + _SMOOTHING * (elapsed_ms - average)
        return outputs, elapsed_ms


def _items_of(batch: list[_Pending]) -> list[Any]:
    return [item for pending in batch for item in pending.items]


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
