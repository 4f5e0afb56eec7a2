"""Dynamic batching for one deployment.

Requests queue per deployment. An idle deployment runs a request at once: no batch window is waited out when
nothing else is queued. Under load (the last batch held several requests, or another instance is busy) the
next batch waits while requests keep arriving, up to ``max_batch_delay_ms`` or until it holds its share of
``max_batch_size`` items, and what arrives meanwhile runs together. With several instances ``max_batch_size``
is split between them (all of it with one instance, half each with two, ...), so that instances take turns
rather than one taking every waiting request while the others idle. A request with more items than that share
is cut into chunks of the share, which queue one after the other; its results are joined in order.

Runs happen in worker threads (onnxruntime releases the GIL), so the event loop keeps accepting and
authenticating requests. A worker thread that finishes a batch while a full one is already waiting starts it
at once, without the round trip through a busy event loop (measured at several milliseconds under load); only
the results go back to the loop. A batch whose run time, estimated from its size in cost units (characters,
elements: see ``run_cost.RunCost``), is below ``INLINE_BELOW_MS`` runs on the loop itself, where it blocks the loop for
less time than the thread hop would cost (e.g. a small MLP at a small batch). A batch larger than any measured
lately is never estimated cheap, so it runs in a thread.

Deadlines bound the wait in the queue: a request whose deadline passes before its first batch starts never runs
(the check is made when a batch is taken, on the loop and in a worker thread's chained take) and gets
``DeadlineExceededError``; once its first batch has started, the request runs to its end and gets its result.

Background work (batch jobs: ``submit(items, background=True)``) waits in a queue of its own, with no deadline and
outside the online queue's bound: a batch takes online chunks first and fills what is left of its share with
background ones, and a worker takes background work only while no online request is queued. So batch jobs use the
capacity online traffic leaves; an online request waits at most for one batch already running.

A ``BatchObserver`` (optional) is told each request's wait in the queue and each batch's size and run time; the
runtime defines the protocol and knows nothing of what implements it (``cloudeasyml.metering.metrics``).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import msgspec
import numpy as np

from cloudeasyml.errors import DeadlineExceededError, DeploymentUnloadedError, InvalidInputError, OverloadedError
from cloudeasyml.runtime.run_cost import RunCost

__all__ = ("INLINE_BELOW_MS", "BatchObserver", "BatchResult", "Batcher")

RunBatch = Callable[[list[Any]], list[Any]]
CostOf = Callable[[Sequence[Any]], int]
"""Cost units of some items (e.g. their characters); ``len`` counts items."""

INLINE_BELOW_MS = 0.3
"""Batches whose estimated run time is below this run on the event loop: handing a batch to a thread and back
costs the loop ~0.05-0.1 ms of CPU plus a wake-up, more than such a batch blocks it."""
BACKGROUND_SHARE = 0.25
"""While online requests keep coming, background (batch-job) batches may take at most this share of a deployment's
run time: after one that ran ``t``, the next waits ``t * (1 / BACKGROUND_SHARE - 1)``, and online batches are not
topped up with background items. (Ordering alone is not enough: on a small machine the job's own pre- and
post-processing takes the CPU that online requests need.)"""
ONLINE_ACTIVE_S = 0.25
"""Online traffic counts as active for this long after its last request."""
QUIET_MS = 1.0
"""Under load, a gathering batch stops waiting once no request has arrived for this long."""
TENSOR_JOIN_ELEMENTS = 1 << 20
"""Most elements of raw tensors (V2) that requests' tensors are concatenated into for one run (4 MiB of FP32): a
shared run may not allocate much more than the requests' own arrays, each bounded by ``docs/security.md``; a
larger request still runs, alone."""


class BatchObserver(Protocol):
    """What a batcher reports as it runs (e.g. to metrics). Called on the event loop and from worker threads, so it
    must be thread-safe and cheap: once per request and once per batch.
    """

    def waited(self, seconds: float) -> None:
        """A request's first batch started ``seconds`` after the request was queued (0: it ran at once)."""

    def ran(self, items: int, seconds: float) -> None:
        """A batch of ``items`` items (a request run alone: its size) ran successfully in ``seconds``."""


class _NoObserver:
    __slots__ = ()

    def waited(self, seconds: float) -> None:
        pass

    def ran(self, items: int, seconds: float) -> None:
        pass


class BatchResult(msgspec.Struct, frozen=True):
    """One request's outputs and its share of its batches' processing time (by item count)."""

    outputs: list[Any]
    processing_ms: float
    batch_items: int
    """Items of the (largest) batch the request ran in."""
    tokens: int | None = None
    """Tokens of the request's inputs as the model's own tokenizer made them (set by the deployment for models that
    take an ``attention_mask``: its ones), so that nothing tokenizes the inputs a second time to count them."""


class _Request:
    """One caller's request: its future, its deadline, and the parts of its result while its chunks run."""

    __slots__ = (
        "background",
        "batch_items",
        "chunks_left",
        "deadline",
        "future",
        "parts",
        "processing_ms",
        "started",
    )

    def __init__(
        self, future: asyncio.Future[BatchResult], deadline: float, chunks: int, *, background: bool = False
    ) -> None:
        self.future = future
        self.background = background
        self.deadline = deadline
        self.started = False
        """Set (under the batcher's lock) when its first chunk is taken into a batch: from then on it runs."""
        self.chunks_left = chunks
        self.parts: list[list[Any]] = [[] for _ in range(chunks)]
        self.processing_ms = 0.0
        self.batch_items = 0

    @property
    def finished(self) -> bool:
        """Answered already (result, error, deadline) or abandoned by its caller (a cancelled future)."""
        return self.future.done()


TensorRun = Callable[[Mapping[str, Any]], Mapping[str, Any]]
"""Runs named arrays (axis 0: the batch) and returns named arrays (axis 0: the batch): a session's ``run``."""


class _Tensors:
    """One request's raw named tensors, and what may share a run with them: other requests' tensors of the same
    names, datatypes and shapes past axis 0 (the batch), for the same ``run``.
    """

    __slots__ = ("arrays", "key", "run")

    def __init__(self, arrays: Mapping[str, Any], run: TensorRun) -> None:
        self.arrays = arrays
        self.run = run
        self.key = (run, tuple(sorted((name, a.dtype.str, a.shape[1:]) for name, a in arrays.items())))


class _Chunk:
    """Queued work of one request: items that may share a batch, raw ``tensors`` that may share a run with others
    of the same shapes, or (``alone``) work that runs by itself.
    """

    __slots__ = ("alone", "index", "items", "request", "size", "tensors", "units")

    def __init__(
        self,
        request: _Request,
        index: int,
        items: Sequence[Any],
        units: int,
        alone: Callable[[], Any] | None = None,
        size: int | None = None,
        tensors: _Tensors | None = None,
    ) -> None:
        self.request = request
        self.index = index
        self.items = items
        self.units = units
        self.alone = alone
        self.tensors = tensors
        self.size = len(items) if size is None else size
        """Items this chunk counts for in the queue and in batches."""


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
        cost_of: CostOf = len,
        clock: Callable[[], float] = time.monotonic,
        observer: BatchObserver | None = None,
    ) -> None:
        self._run_batch = run_batch
        self._observer: BatchObserver = observer if observer is not None else _NoObserver()
        self._cost_of = cost_of
        self._clock = clock
        self._quiet = quiet_ms / 1000
        self._max_batch_size = max_batch_size
        self._delay = max_batch_delay_ms / 1000
        self._instances = instances
        self._max_queue_items = max_queue_items
        self._timeout = timeout_ms / 1000
        self._queue: deque[_Chunk] = deque()
        self._background: deque[_Chunk] = deque()
        """Background chunks (batch jobs): taken only to fill a batch's share that online chunks leave."""
        self._background_items = 0
        self._last_online = -math.inf
        """When the last online request was submitted (``clock``)."""
        self._background_ready_at = 0.0
        """While online traffic is active, no background batch starts before this (``BACKGROUND_SHARE``)."""
        self._kick: asyncio.TimerHandle | None = None
        self._queued_items = 0
        self._queued_units = 0
        self._lock = threading.Lock()
        """Guards the queue and requests' ``started``: worker threads take chained batches from the queue."""
        self._share = math.ceil(max_batch_size / instances)
        """Most items in one batch, and what a gathering batch waits for: ``max_batch_size`` split between the
        instances. Were one instance to take every waiting request, the others would idle until its clients came
        back (measured with MiniLM, two instances, c=64: batches of 15 to 64 items and 358 items/s, against
        656-697 with the split). A request larger than this runs as several batches."""
        self._running = 0
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._full: asyncio.Future[None] | None = None
        self.item_cost = RunCost()
        """Run time of item batches by their cost units."""
        self.alone_cost = RunCost()
        """Run time of work submitted alone (raw tensors) by its elements."""
        self._executor = ThreadPoolExecutor(max_workers=instances, thread_name_prefix="cloudeasyml-batch")

    @property
    def queued_items(self) -> int:
        """Items waiting for a batch."""
        return self._queued_items

    @property
    def batch_share(self) -> int:
        """Most items in one batch; a larger request runs as several."""
        return self._share

    def runs_inline(self, units: int, *, alone: bool = False) -> bool:
        """Whether a batch of ``units`` cost units is estimated cheap enough to run on the event loop."""
        cost = self.alone_cost if alone else self.item_cost
        return cost.estimate(units) < INLINE_BELOW_MS

    async def submit(self, items: Sequence[Any], *, background: bool = False) -> BatchResult:
        """Run ``items`` (one request), in several batches if it holds more than a batch's share; ``OverloadedError``
        at once when the queue is full, ``DeadlineExceededError`` if its deadline passes before it starts running
        (it then never runs).

        ``background`` work (a batch job's chunk) runs at a lower priority: only in what online requests leave of
        a batch, with no deadline and outside the queue bound (its callers bound how much they submit at once).
        """
        if background:
            return await self._submit_background(items)
        self._last_online = self._clock()
        self._admit(len(items))
        share = self._share
        if len(items) <= share:
            units = self._cost_of(items)
            if self._running == 0 and self.runs_inline(units):
                # Idle and cheap: no queue, no task, no thread.
                self._observer.waited(0.0)
                outputs, elapsed_ms = self._timed(
                    lambda: self._run_items(list(items)), units, self.item_cost, len(items)
                )
                return BatchResult(outputs=outputs, processing_ms=elapsed_ms, batch_items=len(items))
            parts = [items]
        else:
            parts = [items[start : start + share] for start in range(0, len(items), share)]
        request = self._new_request(len(parts))
        chunks = [_Chunk(request, index, part, self._cost_of(part)) for index, part in enumerate(parts)]
        return await self._enqueue(request, chunks)

    async def _submit_background(self, items: Sequence[Any]) -> BatchResult:
        if self._closing:
            raise DeploymentUnloadedError("the deployment is being unloaded")
        share = self._share
        parts = [items[start : start + share] for start in range(0, len(items), share)] or [items]
        request = _Request(asyncio.get_running_loop().create_future(), math.inf, len(parts), background=True)
        chunks = [_Chunk(request, index, part, self._cost_of(part)) for index, part in enumerate(parts)]
        with self._lock:
            self._background.extend(chunks)
            self._background_items += len(items)
        self._start_worker()
        return await request.future

    def _online_active(self, now: float) -> bool:
        return now - self._last_online <= ONLINE_ACTIVE_S

    def _background_open(self, now: float) -> bool:
        """Whether a background batch may start now."""
        return bool(self._background) and (not self._online_active(now) or now >= self._background_ready_at)

    def _note_background_run(self, elapsed_ms: float) -> None:
        """A background batch ran ``elapsed_ms``: while online traffic is active, the next one waits its turn."""
        now = self._clock()
        if self._online_active(now):
            self._background_ready_at = now + elapsed_ms / 1000 * (1 / BACKGROUND_SHARE - 1)

    def _wake_background(self) -> None:
        self._kick = None
        if self._background:
            self._start_worker()

    def _start_worker(self) -> None:
        if self._running < self._instances:
            self._running += 1
            self._idle.clear()
            asyncio.get_running_loop().create_task(self._work())

    async def submit_alone(self, work: Callable[[], Any], size: int, units: int | None = None) -> BatchResult:
        """Run ``work()``, one request that cannot share a batch (raw tensors of the V2 protocol), by itself but
        through the same queue as every other request: the same instances, queue bound, deadline and drain.
        It counts as ``size`` items; ``units`` (its elements; ``size`` if not given) decide whether it is cheap
        enough to run on the loop. ``outputs`` is ``[work()]`` and the whole run's time is its share.
        """
        self._last_online = self._clock()
        self._admit(size)
        units = size if units is None else units
        if self._running == 0 and self.runs_inline(units, alone=True):
            self._observer.waited(0.0)
            outputs, elapsed_ms = self._timed(lambda: [work()], units, self.alone_cost, size)
            return BatchResult(outputs=outputs, processing_ms=elapsed_ms, batch_items=size)
        request = self._new_request(1)
        return await self._enqueue(request, [_Chunk(request, 0, (), units, work, size)])

    async def submit_tensors(self, arrays: Mapping[str, Any], run: TensorRun, size: int, units: int) -> BatchResult:
        """Run raw named tensors of ``size`` rows (axis 0) and ``units`` elements with ``run``, queued like items:
        requests whose tensors have the same names, datatypes and shapes past axis 0 run as one (their arrays
        concatenated along axis 0, the outputs split back by rows), up to a batch's share of rows. ``outputs`` is
        ``[{name: array}]``. A V2 request used to run alone: at c=64 on the housing MLP that was one onnxruntime run
        per request (0.70 runs a request in ``bench.profile_server``, against 0.02 for ``/predict``).
        """
        self._admit(size)
        if self._running == 0 and self.runs_inline(units, alone=True):
            self._observer.waited(0.0)
            outputs, elapsed_ms = self._timed(lambda: [run(arrays)], units, self.alone_cost, size)
            return BatchResult(outputs=outputs, processing_ms=elapsed_ms, batch_items=size)
        request = self._new_request(1)
        return await self._enqueue(request, [_Chunk(request, 0, (), units, None, size, _Tensors(arrays, run))])

    def _admit(self, size: int) -> None:
        if self._closing:
            raise DeploymentUnloadedError("the deployment is being unloaded")
        if size > self._max_queue_items:  # could never be queued: retrying would not help
            raise InvalidInputError(f"this deployment accepts at most {self._max_queue_items} inputs per request")

    def _new_request(self, chunks: int) -> _Request:
        future = asyncio.get_running_loop().create_future()
        return _Request(future, self._clock() + self._timeout, chunks)

    async def _enqueue(self, request: _Request, chunks: list[_Chunk]) -> BatchResult:
        size = sum(chunk.size for chunk in chunks)
        if self._queued_items + size > self._max_queue_items:
            raise OverloadedError("the deployment's queue is full; retry shortly", retry_after=1)
        loop = asyncio.get_running_loop()
        with self._lock:
            self._queue.extend(chunks)
            self._queued_items += size
            self._queued_units += sum(chunk.units for chunk in chunks)
        if self._full is not None and self._queued_items >= self._share:
            _wake(self._full)
        self._start_worker()
        timer = loop.call_later(self._timeout, self._expire, request)
        try:
            return await request.future
        finally:
            timer.cancel()

    async def drain(self) -> None:
        """Refuse new requests and wait until queued and running ones have finished; then free the threads."""
        self._closing = True
        await self._idle.wait()
        self._executor.shutdown(wait=False)

    def _expire(self, request: _Request) -> None:
        """The request's deadline passed: unless its first batch has started (it then runs to its end), it gets
        ``DeadlineExceededError`` and its chunks are skipped when taken.
        """
        with self._lock:
            if request.started or request.finished:
                return
        request.future.set_exception(DeadlineExceededError(f"no result within {self._timeout * 1000:.0f} ms"))

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        under_load = False
        try:
            while self._queue or self._background_open(self._clock()):
                # Gathering pays only where a run costs more than handling requests: a batch that runs on the
                # loop in microseconds should go now, not keep the loop's own work waiting.
                if (
                    self._queue
                    and (under_load or self._running > 1)
                    and self._delay
                    and not self.runs_inline(self._queued_units)
                ):
                    await self._gather(loop)
                batch = self._take()
                if batch:
                    under_load = await self._run(loop, batch) > 1
        finally:
            self._running -= 1
            if self._background and self._kick is None:
                # Background work waits its turn (online traffic is active): a worker comes back for it then.
                delay = max(0.0, self._background_ready_at - self._clock())
                self._kick = loop.call_later(delay, self._wake_background)
            elif self._running == 0 and not self._background:
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

    def _take(self) -> list[_Chunk]:
        with self._lock:
            batch, expired = self._take_locked()
        for request in expired:
            self._expire(request)
        return batch

    def _take_full(self, loop: asyncio.AbstractEventLoop) -> list[_Chunk]:
        """A batch if the queue holds at least a fair share (from a worker thread); else nothing."""
        with self._lock:
            if self._closing or (
                self._queued_items < self._share and (self._queue or not self._background_open(self._clock()))
            ):
                # Online work that is not a full batch goes back through the loop (it may gather more); background
                # work chains only while no online request waits, and takes its turn (BACKGROUND_SHARE).
                return []
            batch, expired = self._take_locked()
        for request in expired:
            loop.call_soon_threadsafe(self._expire, request)
        return batch

    def _take_locked(self) -> tuple[list[_Chunk], list[_Request]]:
        """The next batch, skipping chunks of requests that are answered, abandoned or past their deadline before
        starting (returned second: the caller fails them on the loop).
        """
        batch: list[_Chunk] = []
        expired: list[_Request] = []
        size = units = 0
        now = self._clock()
        while self._queue:
            head = self._queue[0]
            if batch and (
                head.alone is not None
                or size + head.size > self._share
                or not _joins(batch[0], head)
                or (head.tensors is not None and units + head.units > TENSOR_JOIN_ELEMENTS)
            ):
                break
            self._queue.popleft()
            self._queued_items -= head.size
            self._queued_units -= head.units
            request = head.request
            if request.finished:
                continue
            if not request.started:
                if now >= request.deadline:
                    if request not in expired:
                        expired.append(request)
                    continue
                request.started = True
                # Queued at its deadline less the timeout: no clock read kept per request for this.
                self._observer.waited(max(0.0, now - (request.deadline - self._timeout)))
            batch.append(head)
            size += head.size
            units += head.units
            if head.alone is not None:
                break
        # What online chunks left of the share, background chunks fill (whole chunks), unless online traffic is
        # active: then background batches run by themselves, in their turn.
        online_active = self._online_active(now)
        open_ = self._background_open(now) and not (batch and (online_active or batch[0].alone is not None))
        while open_ and self._background:
            head = self._background[0]
            if batch and size + head.size > self._share:
                break
            self._background.popleft()
            self._background_items -= head.size
            if head.request.finished:
                continue
            head.request.started = True
            batch.append(head)
            size += head.size
        return batch, expired

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Chunk]) -> int:
        """Run ``batch`` (and, in the worker thread, any full batch waiting when it ends); settle every request.
        Returns the number of chunks in the last batch run.
        """
        head = batch[0]
        alone = head.alone is not None or head.tensors is not None
        if self.runs_inline(sum(chunk.units for chunk in batch), alone=alone):
            try:
                self._settle_batch(batch, *self._execute(batch))
            except Exception as exc:
                await self._isolate(loop, batch, exc)
            # Let the loop's other work in before the next batch: the chunks of one large request, each cheap,
            # must not run back to back on the loop. (Only then: with nothing queued the worker ends at once, so
            # the caller's next request finds the deployment idle and takes the fast path.)
            if self._queue or self._background:
                await asyncio.sleep(0)
            return len(batch)
        last, failure = await loop.run_in_executor(self._executor, self._run_chain, loop, batch)
        if failure is not None:
            await self._isolate(loop, last, failure)
        return len(last)

    def _run_chain(self, loop: asyncio.AbstractEventLoop, batch: list[_Chunk]) -> tuple[list[_Chunk], Exception | None]:
        """In a worker thread: run ``batch``, hand its results to the loop, and go on with the next batch while a
        full one is waiting. Returns the last batch, and its error if it failed (the loop isolates the culprit).
        """
        while True:
            try:
                outputs, elapsed_ms = self._execute(batch)
            except Exception as exc:
                return batch, exc
            loop.call_soon_threadsafe(self._settle_batch, batch, outputs, elapsed_ms)
            following = self._take_full(loop)
            if not following:
                return batch, None
            batch = following

    async def _isolate(self, loop: asyncio.AbstractEventLoop, batch: list[_Chunk], exc: Exception) -> None:
        """A batch failed: one bad request must not fail its neighbours, so each runs alone to find the culprit."""
        if len(batch) == 1:
            _fail(batch[0].request, exc)
            return
        for chunk in batch:
            if not chunk.request.finished:
                await self._run(loop, [chunk])

    def _settle_batch(self, batch: list[_Chunk], outputs: list[Any], elapsed_ms: float) -> None:
        """Give each chunk its outputs and its share of the batch's time, by item count."""
        if batch[0].alone is not None:
            _deliver(batch[0], outputs, elapsed_ms, batch[0].size)
            return
        if batch[0].tensors is not None:  # one output mapping a chunk; time shared by rows
            rows = sum(chunk.size for chunk in batch)
            for chunk, output in zip(batch, outputs, strict=True):
                _deliver(chunk, [output], elapsed_ms * chunk.size / rows, rows)
            return
        total = len(outputs)
        offset = 0
        for chunk in batch:
            count = len(chunk.items)
            _deliver(chunk, outputs[offset : offset + count], elapsed_ms * count / total, total)
            offset += count

    def _execute(self, batch: list[_Chunk]) -> tuple[list[Any], float]:
        head = batch[0]
        if head.alone is not None:
            work = head.alone
            return self._timed(lambda: [work()], head.units, self.alone_cost, head.size)
        if head.tensors is not None:
            units = sum(chunk.units for chunk in batch)
            rows = sum(chunk.size for chunk in batch)
            return self._timed(lambda: _run_tensors(batch), units, self.alone_cost, rows)
        items = [item for chunk in batch for item in chunk.items]
        units = sum(chunk.units for chunk in batch)
        outputs, elapsed_ms = self._timed(lambda: self._run_items(items), units, self.item_cost, len(items))
        if head.request.background:  # (online chunks are taken first: a batch led by background is all background)
            with self._lock:
                self._note_background_run(elapsed_ms)
        return outputs, elapsed_ms

    def _run_items(self, items: list[Any]) -> list[Any]:
        outputs = self._run_batch(items)
        if len(outputs) != len(items):
            raise RuntimeError(f"the model returned {len(outputs)} predictions for {len(items)} inputs")
        return outputs

    def _timed(self, run: Callable[[], list[Any]], units: int, cost: RunCost, items: int) -> tuple[list[Any], float]:
        started = time.perf_counter()
        outputs = run()
        elapsed = time.perf_counter() - started
        elapsed_ms = elapsed * 1000
        with self._lock:  # worker threads observe too
            cost.observe(units, elapsed_ms)
        self._observer.ran(items, elapsed)
        return outputs, elapsed_ms


def _joins(first: _Chunk, head: _Chunk) -> bool:
    """Whether ``head`` may join a batch that begins with ``first``: items with items, tensors with tensors alike."""
    if first.tensors is None or head.tensors is None:
        return first.tensors is head.tensors  # both None: items
    return first.tensors.key == head.tensors.key


def _run_tensors(batch: list[_Chunk]) -> list[Any]:
    """Run the chunks' tensors as one (concatenated along axis 0) and split each output back by the chunks' rows.
    An output whose axis 0 is not the batch's rows cannot be split: the batch fails, and ``_isolate`` runs each
    chunk alone.
    """
    first = batch[0].tensors
    assert first is not None  # only tensor chunks reach here
    if len(batch) == 1:
        return [first.run(first.arrays)]
    arrays = {name: np.concatenate([chunk.tensors.arrays[name] for chunk in batch]) for name in first.arrays}  # type: ignore[union-attr]
    outputs = first.run(arrays)
    rows = sum(chunk.size for chunk in batch)
    if any(array.ndim == 0 or array.shape[0] != rows for array in outputs.values()):
        raise RuntimeError("the model's outputs are not batched along axis 0; requests must run alone")
    split: list[Any] = []
    offset = 0
    for chunk in batch:
        split.append({name: array[offset : offset + chunk.size] for name, array in outputs.items()})
        offset += chunk.size
    return split


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _deliver(chunk: _Chunk, outputs: list[Any], processing_ms: float, batch_items: int) -> None:
    """Record a chunk's outputs; the request gets its result when its last chunk is in."""
    request = chunk.request
    if request.finished:  # failed, or its caller has gone; nobody would read this
        return
    request.parts[chunk.index] = outputs
    request.processing_ms += processing_ms
    request.batch_items = max(request.batch_items, batch_items)
    request.chunks_left -= 1
    if request.chunks_left == 0:
        joined = request.parts[0] if len(request.parts) == 1 else [out for part in request.parts for out in part]
        request.future.set_result(
            BatchResult(outputs=joined, processing_ms=request.processing_ms, batch_items=request.batch_items)
        )


def _fail(request: _Request, exc: BaseException) -> None:
    if not request.finished:
        request.future.set_exception(exc)
