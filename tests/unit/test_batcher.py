"""The batcher: no waiting when idle, gathering while busy, bounded queue, deadlines, error isolation."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from cloudeasyml.errors import DeadlineExceededError, ModelNotReadyError, OverloadedError
from cloudeasyml.runtime import batcher as batcher_module
from cloudeasyml.runtime.batcher import INLINE_BELOW_MS, Batcher
from cloudeasyml.runtime.run_cost import RunCost


def make(run, **overrides):  # type: ignore[no-untyped-def]
    options = dict(max_batch_size=8, max_batch_delay_ms=5, instances=1, max_queue_items=100, timeout_ms=5000)
    options.update(overrides)
    return Batcher(run, **options)


async def test_an_idle_deployment_runs_a_request_at_once() -> None:
    batcher = make(lambda items: [i * 2 for i in items], max_batch_delay_ms=1000)
    started = time.perf_counter()
    result = await batcher.submit([1, 2, 3])
    assert result.outputs == [2, 4, 6] and result.batch_items == 3
    assert time.perf_counter() - started < 0.5  # far below the 1 s batch window


async def test_requests_arriving_during_a_run_are_batched_together() -> None:
    gate = threading.Event()
    sizes: list[int] = []

    def run(items):  # type: ignore[no-untyped-def]
        sizes.append(len(items))
        if len(sizes) == 1:
            gate.wait(5)
        return [i + 1 for i in items]

    batcher = make(run)
    first = asyncio.ensure_future(batcher.submit([0]))
    await asyncio.sleep(0.05)
    rest = [asyncio.ensure_future(batcher.submit([i])) for i in range(1, 6)]
    await asyncio.sleep(0.05)
    gate.set()
    results = await asyncio.gather(first, *rest)
    assert [r.outputs for r in results] == [[1], [2], [3], [4], [5], [6]]
    assert sizes == [1, 5]
    assert all(r.batch_items == 5 for r in results[1:])


async def test_batches_never_exceed_max_batch_size_and_time_is_shared_by_items() -> None:
    sizes: list[int] = []

    def run(items):  # type: ignore[no-untyped-def]
        sizes.append(len(items))
        time.sleep(0.01)
        return items

    batcher = make(run, max_batch_size=4)
    results = await asyncio.gather(*(batcher.submit([i, i]) for i in range(10)))
    assert max(sizes) <= 4 and sum(sizes) == 20
    by_batch: dict[int, list[float]] = {}
    for r in results:
        by_batch.setdefault(r.batch_items, []).append(r.processing_ms)
    assert all(ms > 0 for ms in sum(by_batch.values(), []))


async def test_a_full_queue_is_refused_at_once() -> None:
    gate = threading.Event()
    batcher = make(lambda items: (gate.wait(5), items)[1], max_queue_items=3)
    running = asyncio.ensure_future(batcher.submit([1]))
    await asyncio.sleep(0.05)
    queued = asyncio.ensure_future(batcher.submit([1, 2, 3]))
    await asyncio.sleep(0.01)
    with pytest.raises(OverloadedError):
        await batcher.submit([4])
    gate.set()
    await asyncio.gather(running, queued)


async def test_a_request_past_its_deadline_while_queued_gets_a_timeout() -> None:
    gate = threading.Event()
    batcher = make(lambda items: (gate.wait(5), items)[1], timeout_ms=100)
    running = asyncio.ensure_future(batcher.submit([1]))
    await asyncio.sleep(0.01)
    with pytest.raises(DeadlineExceededError):
        await batcher.submit([2])
    gate.set()
    assert (await running).outputs == [1]


async def test_one_bad_request_does_not_fail_its_batch_neighbours() -> None:
    gate = threading.Event()

    def run(items):  # type: ignore[no-untyped-def]
        gate.wait(5)
        if "bad" in items:
            raise ValueError("bad item")
        return [f"ok {i}" for i in items]

    batcher = make(run)
    blocker = asyncio.ensure_future(batcher.submit(["first"]))
    await asyncio.sleep(0.05)
    good = asyncio.ensure_future(batcher.submit(["a"]))
    bad = asyncio.ensure_future(batcher.submit(["bad"]))
    await asyncio.sleep(0.01)
    gate.set()
    assert (await blocker).outputs == ["ok first"]
    assert (await good).outputs == ["ok a"]
    with pytest.raises(ValueError):
        await bad


async def test_drain_waits_for_in_flight_requests() -> None:
    def run(items):  # type: ignore[no-untyped-def]
        time.sleep(0.1)
        return items

    batcher = make(run)
    pending = asyncio.ensure_future(batcher.submit([1]))
    await asyncio.sleep(0.01)
    await batcher.drain()
    # The run has finished: its caller gets the result without waiting for another run.
    assert (await asyncio.wait_for(pending, timeout=0.05)).outputs == [1]
    with pytest.raises(ModelNotReadyError):
        await batcher.submit([2])


async def test_cheap_batches_run_on_the_event_loop_after_the_first() -> None:
    threads: list[str] = []

    def run(items):  # type: ignore[no-untyped-def]
        threads.append(threading.current_thread().name)
        return items

    batcher = make(run)
    for i in range(3):
        assert (await batcher.submit([i])).outputs == [i]
    assert threads[0].startswith("cloudeasyml-batch") and threads[1:] == ["MainThread", "MainThread"]
    assert batcher.runs_inline(1)


async def _under_load(batcher: Batcher, release: list[threading.Event], sizes: list[int]) -> list[asyncio.Future]:
    """Run a lone request, then a batch of two (which puts the batcher under load); leave the third run blocked."""
    first = asyncio.ensure_future(batcher.submit([0]))
    await asyncio.sleep(0.05)
    second = [asyncio.ensure_future(batcher.submit([i])) for i in (1, 2)]
    await asyncio.sleep(0.05)
    release[0].set()  # the lone first request is done; the two queued ones run at once, together
    await asyncio.sleep(0.05)
    assert sizes == [1, 2]
    return [first, *second]


def _gated(release: list[threading.Event], sizes: list[int]):  # type: ignore[no-untyped-def]
    def run(items):  # type: ignore[no-untyped-def]
        sizes.append(len(items))
        release[min(len(sizes) - 1, len(release) - 1)].wait(5)
        time.sleep(0.002)  # slow enough to stay in the thread pool
        return items

    return run


async def test_under_load_a_batch_gathers_a_burst_until_it_is_full() -> None:
    release = [threading.Event() for _ in range(3)]
    sizes: list[int] = []
    batcher = make(_gated(release, sizes), max_batch_size=4, max_batch_delay_ms=2000, quiet_ms=300)
    done = await _under_load(batcher, release, sizes)
    release[1].set()  # that batch held two requests: under load, so the next one gathers
    release[2].set()
    started = time.perf_counter()
    burst = []
    for i in range(3, 7):  # a burst, each arrival well inside the quiet window
        burst.append(asyncio.ensure_future(batcher.submit([i])))
        await asyncio.sleep(0.05)
    await asyncio.gather(*done, *burst)
    assert sizes == [1, 2, 4]
    assert time.perf_counter() - started < 1.0  # ran when full, not after the 2 s window


async def test_under_load_a_batch_stops_gathering_when_arrivals_stop() -> None:
    release = [threading.Event() for _ in range(3)]
    sizes: list[int] = []
    batcher = make(_gated(release, sizes), max_batch_size=8, max_batch_delay_ms=2000, quiet_ms=100)
    done = await _under_load(batcher, release, sizes)
    late = [asyncio.ensure_future(batcher.submit([i])) for i in (3, 4)]
    started = time.perf_counter()
    release[1].set()
    release[2].set()
    await asyncio.gather(*done, *late)
    assert sizes == [1, 2, 2]
    assert time.perf_counter() - started < 1.0  # a quiet window, not the 2 s one


async def test_a_full_batch_waiting_when_a_run_ends_starts_without_the_event_loop() -> None:
    """The worker thread chains straight into a full waiting batch: it does not wait for a busy loop."""
    gate = threading.Event()
    started: list[float] = []

    def run(items):  # type: ignore[no-untyped-def]
        started.append(time.perf_counter())
        if len(started) == 1:
            gate.wait(5)
        return items

    batcher = make(run, max_batch_size=4)
    first = asyncio.ensure_future(batcher.submit([0]))
    await asyncio.sleep(0.05)
    full = [asyncio.ensure_future(batcher.submit([i])) for i in range(1, 5)]  # a full batch queues meanwhile
    await asyncio.sleep(0.05)
    gate.set()
    time.sleep(0.3)  # the event loop is busy (blocked) while the first run ends
    unblocked = time.perf_counter()
    results = await asyncio.gather(first, *full)
    assert [r.outputs for r in results] == [[0], [1], [2], [3], [4]]
    assert len(started) == 2 and started[1] < unblocked  # the second batch ran while the loop was blocked
    assert [r.batch_items for r in results] == [1, 4, 4, 4, 4]


async def test_instances_take_turns_with_a_fair_share_of_the_batch_each() -> None:
    """Two instances split max_batch_size: neither takes every waiting request while the other idles."""
    sizes: list[int] = []
    running = 0
    overlapped = False
    lock = threading.Lock()

    def run(items):  # type: ignore[no-untyped-def]
        nonlocal running, overlapped
        with lock:
            sizes.append(len(items))
            running += 1
            overlapped = overlapped or running > 1
        time.sleep(0.05)
        with lock:
            running -= 1
        return items

    batcher = make(run, max_batch_size=8, instances=2)
    results = await asyncio.gather(*(batcher.submit([i]) for i in range(24)))
    assert [r.outputs for r in results] == [[i] for i in range(24)]
    assert max(sizes) == 4 and sum(sizes) == 24  # 8 split between 2 instances
    assert overlapped  # both instances ran side by side


async def test_work_submitted_alone_runs_by_itself_through_the_same_queue_and_drain() -> None:
    """V2 tensors: never merged with neighbours, but queued, bounded, deadlined and drained like them."""
    gate = threading.Event()
    runs: list[object] = []

    def run(items):  # type: ignore[no-untyped-def]
        runs.append(list(items))
        if len(runs) == 1:
            gate.wait(5)
        return items

    def tensors() -> dict[str, int]:
        runs.append("alone")
        return {"y": 42}

    batcher = make(run, max_batch_size=8, max_queue_items=6)
    first = asyncio.ensure_future(batcher.submit([0]))
    await asyncio.sleep(0.05)
    before = asyncio.ensure_future(batcher.submit([1]))
    alone = asyncio.ensure_future(batcher.submit_alone(tensors, 3))
    after = asyncio.ensure_future(batcher.submit([2]))
    await asyncio.sleep(0.01)
    with pytest.raises(OverloadedError):  # 1 + 3 + 1 queued: 3 more exceed max_queue_items
        await batcher.submit_alone(tensors, 3)
    draining = asyncio.ensure_future(batcher.drain())
    await asyncio.sleep(0.05)
    assert not draining.done() and not alone.done()
    gate.set()
    result = await alone
    await asyncio.wait_for(draining, 5)
    assert result.outputs == [{"y": 42}] and result.batch_items == 3
    assert runs == [[0], [1], "alone", [2]]
    assert (await before).outputs == [1] and (await after).outputs == [2] and (await first).outputs == [0]


async def test_work_submitted_alone_gets_the_deadline_and_never_runs_after_it() -> None:
    gate = threading.Event()
    ran: list[list[object]] = []
    batcher = make(_recording(ran, gate), timeout_ms=50)
    first = asyncio.ensure_future(batcher.submit(["first"]))
    await asyncio.sleep(0.01)
    with pytest.raises(DeadlineExceededError):
        await batcher.submit_alone(lambda: ran.append(["alone"]), 1)
    gate.set()
    await first
    await asyncio.wait_for(batcher.drain(), 2)
    assert ran == [["first"]]


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _recording(ran: list[list[object]], gate: threading.Event):  # type: ignore[no-untyped-def]
    def run(items):  # type: ignore[no-untyped-def]
        ran.append(list(items))
        if len(ran) == 1:
            gate.wait(5)
        return items

    return run


@pytest.mark.parametrize("max_batch_size", [8, 1], ids=["taken-by-the-loop", "chained-in-the-worker-thread"])
async def test_a_request_whose_deadline_passes_while_queued_never_runs(max_batch_size: int) -> None:
    """Issue 10 row 8: a request answered 504 must not run afterwards (its CPU would be spent and never billed)."""
    clock = FakeClock()
    gate = threading.Event()
    ran: list[list[object]] = []
    batcher = make(_recording(ran, gate), max_batch_size=max_batch_size, timeout_ms=5000, clock=clock)
    first = asyncio.ensure_future(batcher.submit(["first"]))
    await asyncio.sleep(0.05)
    late = asyncio.ensure_future(batcher.submit(["late"]))
    await asyncio.sleep(0.01)
    clock.now += 6  # past the late request's deadline while it waits (its 5 s timer has not fired yet)
    gate.set()
    assert (await first).outputs == ["first"]
    with pytest.raises(DeadlineExceededError):
        await asyncio.wait_for(late, 2)
    await asyncio.wait_for(batcher.drain(), 2)
    assert ran == [["first"]]


async def test_a_tiny_deadline_fails_the_request_without_running_it() -> None:
    """``timeoutMs`` 0.001: the request is past its deadline before its batch is taken, so nothing runs."""
    ran: list[list[object]] = []
    batcher = make(_recording(ran, threading.Event()), timeout_ms=0.001)
    with pytest.raises(DeadlineExceededError):
        await batcher.submit(["x"])
    await asyncio.wait_for(batcher.drain(), 2)
    assert ran == []


async def test_a_request_already_running_at_its_deadline_finishes_and_gets_its_result() -> None:
    def run(items):  # type: ignore[no-untyped-def]
        time.sleep(0.2)
        return items

    batcher = make(run, timeout_ms=50)
    result = await batcher.submit([1, 2])
    assert result.outputs == [1, 2] and result.processing_ms >= 150


async def test_a_queued_request_whose_caller_has_gone_never_runs() -> None:
    gate = threading.Event()
    ran: list[list[object]] = []
    batcher = make(_recording(ran, gate))
    first = asyncio.ensure_future(batcher.submit(["first"]))
    await asyncio.sleep(0.05)
    gone = asyncio.ensure_future(batcher.submit(["gone"]))
    await asyncio.sleep(0.01)
    gone.cancel()  # what a cancelled handler task does to its await
    await asyncio.sleep(0.01)
    gate.set()
    await first
    await asyncio.wait_for(batcher.drain(), 2)
    assert ran == [["first"]]


@pytest.mark.parametrize("instances", [1, 2])
async def test_a_request_larger_than_a_batch_runs_as_several_batches_joined_in_order(instances: int) -> None:
    """Issue 10 row 1: a request of many inputs must not become one huge onnxruntime batch."""
    sizes: list[int] = []
    lock = threading.Lock()

    def run(items):  # type: ignore[no-untyped-def]
        with lock:
            sizes.append(len(items))
        time.sleep(0.01)
        return [i * 10 for i in items]

    batcher = make(run, max_batch_size=8, instances=instances)
    result = await batcher.submit(list(range(21)))
    share = 8 // instances
    assert result.outputs == [i * 10 for i in range(21)]
    assert max(sizes) == share and sum(sizes) == 21
    assert result.processing_ms >= 10 * len(sizes) * 0.9  # the sum of its batches' time: billed as one request
    assert result.batch_items == share


async def test_a_chunked_request_fails_as_a_whole_when_one_chunk_fails() -> None:
    def run(items):  # type: ignore[no-untyped-def]
        time.sleep(0.002)
        if "bad" in items:
            raise ValueError("bad item")
        return items

    batcher = make(run, max_batch_size=2)
    with pytest.raises(ValueError):
        await batcher.submit(["a", "b", "c", "bad", "e", "f"])
    assert (await batcher.submit(["ok"])).outputs == ["ok"]


def _sized_run(threads: list[str], ms_per_unit: float):  # type: ignore[no-untyped-def]
    """A model whose run time grows with the characters of its inputs, as a text model's does."""

    def run(items):  # type: ignore[no-untyped-def]
        threads.append(threading.current_thread().name)
        seconds = sum(len(i) for i in items) * ms_per_unit / 1000
        if seconds < 0.001:  # a sleep this short lasts far longer than asked on a busy machine: spin instead
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                pass
        else:
            time.sleep(seconds)
        return items

    return run


async def test_a_batch_runs_on_the_loop_only_when_its_own_size_is_measured_cheap() -> None:
    """Issue 10 row 4: cheap small batches once made every batch of the deployment run on the event loop, however
    large. The decision is now by the batch's own size in cost units (here characters)."""
    threads: list[str] = []
    batcher = make(_sized_run(threads, 0.01), max_batch_size=64, cost_of=lambda items: sum(len(i) for i in items))

    async def runs_on_the_loop_soon() -> bool:
        # 0.01 ms each: cheap. A busy machine may stretch a measured run (a preempted thread), and the fit then
        # keeps them in threads for a few runs: the point is that small ones come back to the loop.
        for _ in range(50):
            await batcher.submit(["a"])
            if threads[-1] == "MainThread":
                return True
        return False

    assert await runs_on_the_loop_soon()
    await batcher.submit(["x" * 5000])  # 50 ms: must not block the loop
    assert threads[-1].startswith("cloudeasyml-batch")
    await batcher.submit(["x" * 20 for _ in range(64)])  # many items, each small, but 1280 characters in all
    assert threads[-1].startswith("cloudeasyml-batch")
    assert await runs_on_the_loop_soon()  # the small request still runs on the loop
    assert not batcher.runs_inline(5000)


@pytest.mark.serial  # measured run times decide: another test on the CPU preempts the measurement
async def test_work_submitted_alone_runs_on_the_loop_only_when_its_elements_are_measured_cheap() -> None:
    """A ``[1, 600000]`` tensor after cheap ``[1, 11]`` ones ran on the loop for 200 ms each."""
    threads: list[str] = []

    def work(elements: int):  # type: ignore[no-untyped-def]
        def run() -> int:
            threads.append(threading.current_thread().name)
            time.sleep(elements * 1e-7)
            return elements

        return run

    batcher = make(lambda items: items)
    for _ in range(3):
        await batcher.submit_alone(work(11), 1, 11)
    assert threads[-1] == "MainThread"
    await batcher.submit_alone(work(600_000), 1, 600_000)
    assert threads[-1].startswith("cloudeasyml-batch")


def test_run_cost_fits_fixed_and_per_unit_time_and_extrapolates_at_most_twice_the_largest_size() -> None:
    cost = RunCost()
    assert cost.estimate(1) == float("inf")  # nothing measured
    cost.observe(10, 1.0)
    assert cost.estimate(5) == pytest.approx(0.5)  # one size only: all of it per unit
    assert cost.estimate(20) == pytest.approx(2.0)  # up to twice the largest measured: the fit, extrapolated
    assert cost.estimate(21) == float("inf")  # larger: unknown
    cost = RunCost()
    for units in (10, 100, 1000, 10, 1000):
        cost.observe(units, 0.1 + 0.002 * units)
    assert cost.estimate(500) == pytest.approx(0.1 + 0.002 * 500)
    assert cost.estimate(2000) == pytest.approx(0.1 + 0.002 * 2000)
    assert cost.estimate(2001) == float("inf")


def test_run_cost_records_one_stalled_run_as_a_bounded_outlier() -> None:
    """A run preempted on a busy machine (50 ms for a 0.05 ms batch) once kept a small MLP's runs off the event loop
    for a dozen runs; it now counts as at most OUTLIER times the estimate, and a model that did become slow still
    crosses the inline threshold within a few runs."""
    cost = RunCost()
    for _ in range(10):
        cost.observe(1, 0.05)
    cost.observe(1, 50.0)
    assert cost.estimate(1) < INLINE_BELOW_MS
    slow = RunCost()
    for _ in range(10):
        slow.observe(1, 0.05)
    runs = 0
    while slow.estimate(1) < INLINE_BELOW_MS:
        slow.observe(1, 5.0)
        runs += 1
    assert runs <= 3


async def test_a_cheap_batch_grown_past_the_largest_size_measured_lately_still_runs_on_the_loop() -> None:
    """Housing at c=64: batches that grew under load were judged unknown and sent to a thread (and gathered for),
    which halved its throughput; up to twice the largest size measured, a cheap model's fit is trusted."""
    threads: list[str] = []
    batcher = make(_sized_run(threads, 0.001), max_batch_size=64)
    for _ in range(20):
        await batcher.submit(["a"] * 16)
    assert threads[-1] == "MainThread"
    assert batcher.runs_inline(32)
    await batcher.submit(["a"] * 32)
    assert threads[-1] == "MainThread"
    assert not batcher.runs_inline(65)  # more than twice the largest measured (32) lately: unknown


async def test_cheap_chunks_of_one_large_request_let_the_event_loop_in_between() -> None:
    """Each chunk may be cheap enough to run on the loop, but the loop's other work runs between them."""
    order: list[str] = []

    def run(items):  # type: ignore[no-untyped-def]
        order.append("chunk")
        return items

    batcher = make(run, max_batch_size=2)
    for _ in range(3):
        await batcher.submit([0, 0])  # a chunk's size, measured cheap: runs inline from now on
    order.clear()

    async def other_work() -> None:
        for _ in range(3):
            order.append("loop")
            await asyncio.sleep(0)

    await asyncio.gather(batcher.submit(list(range(8))), other_work())
    assert order.count("chunk") == 4
    first, last = order.index("chunk"), len(order) - 1 - order[::-1].index("chunk")
    assert "loop" in order[first:last]  # not four chunks back to back


class _Recorder:
    """A ``BatchObserver`` that keeps what it is told."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.runs: list[tuple[int, float]] = []

    def waited(self, seconds: float) -> None:
        self.waits.append(seconds)

    def ran(self, items: int, seconds: float) -> None:
        self.runs.append((items, seconds))


async def test_the_observer_is_told_each_requests_wait_and_each_batchs_size_and_time() -> None:
    gate = threading.Event()
    observer = _Recorder()

    def run(items):  # type: ignore[no-untyped-def]
        time.sleep(0.002)  # not cheap: runs in a worker thread, so the gate holds the batch, not the loop
        if items == [0]:
            gate.wait(5)
        return items

    batcher = make(run, observer=observer)
    assert (await batcher.submit([7])).outputs == [7]  # idle: runs at once
    assert observer.waits[0] < 0.05 and [items for items, _ in observer.runs] == [1]
    first = asyncio.ensure_future(batcher.submit([0]))
    await asyncio.sleep(0.05)
    rest = [asyncio.ensure_future(batcher.submit([i, i])) for i in range(1, 4)]
    await asyncio.sleep(0.1)
    gate.set()
    await asyncio.gather(first, *rest)
    assert len(observer.waits) == 5  # one per request
    assert min(observer.waits[2:]) >= 0.05  # the three queued behind the held batch waited for it
    assert [items for items, _ in observer.runs] == [1, 1, 6]  # one per batch, with its items
    assert all(seconds >= 0 for _, seconds in observer.runs) and observer.runs[1][1] >= 0.05


async def test_a_request_run_alone_is_observed_with_its_size() -> None:
    observer = _Recorder()
    batcher = make(lambda items: items, observer=observer)
    for _ in range(2):
        assert (await batcher.submit_alone(lambda: "out", size=3, units=12)).outputs == ["out"]
    assert len(observer.waits) == 2 and max(observer.waits) < 0.05
    assert [items for items, _ in observer.runs] == [3, 3]


async def test_online_requests_are_taken_before_queued_background_work() -> None:
    """A batch job's chunks wait behind online requests: a batch takes online items first and background items
    only fill what is left of its share.
    """
    gate = threading.Event()
    batches: list[list[str]] = []

    def run(items):  # type: ignore[no-untyped-def]
        batches.append(list(items))
        if len(batches) == 1:
            gate.wait(5)
        time.sleep(0.002)  # never inline: every batch goes through the queue
        return items

    batcher = make(run, max_batch_size=4, max_batch_delay_ms=0)
    first = asyncio.ensure_future(batcher.submit(["x"]))
    await asyncio.sleep(0.05)
    background = asyncio.ensure_future(batcher.submit([f"b{i}" for i in range(6)], background=True))
    await asyncio.sleep(0.02)
    online = [asyncio.ensure_future(batcher.submit([f"o{i}"])) for i in range(3)]
    await asyncio.sleep(0.02)
    gate.set()
    result = await background
    await asyncio.gather(first, *online)
    assert result.outputs == [f"b{i}" for i in range(6)]  # in order, though cut into chunks of the share
    assert batches[1][:3] == ["o0", "o1", "o2"]  # the online requests first, queued after the job's chunks
    assert all(len(batch) <= 4 for batch in batches)


async def test_background_work_has_no_deadline_and_ignores_the_queue_bound() -> None:
    batcher = make(lambda items: items, max_queue_items=4, timeout_ms=1)
    result = await batcher.submit(list(range(10)), background=True)
    assert result.outputs == list(range(10))


async def test_background_work_takes_at_most_its_share_of_run_time_while_online_requests_come() -> None:
    """A batch job's batches run by themselves and at most ``BACKGROUND_SHARE`` of the time while online traffic is
    active; once it stops, they run back to back."""
    busy = {"background": 0.0, "online": 0.0}

    def run(items):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        time.sleep(0.004 * len(items) / 4)
        kind = "background" if isinstance(items[0], str) else "online"
        assert all(isinstance(item, str) == (kind == "background") for item in items)  # never mixed under load
        busy[kind] += time.perf_counter() - started
        return items

    batcher = make(run, max_batch_size=4, max_batch_delay_ms=0, max_queue_items=10_000)
    job = asyncio.ensure_future(batcher.submit([f"b{i}" for i in range(400)], background=True))
    window = 1.0
    stop = time.perf_counter() + window
    while time.perf_counter() < stop:
        await batcher.submit([1])
        await asyncio.sleep(0.002)
    assert busy["background"] <= 0.45 * window  # its share (0.25), with room for a slow machine
    assert not job.done()
    result = await asyncio.wait_for(job, 30)  # alone, it finishes
    assert result.outputs == [f"b{i}" for i in range(400)]


async def test_tensors_of_one_shape_share_a_run_and_get_their_own_rows_back() -> None:
    """Raw tensors (V2) queued behind a run are concatenated along axis 0 with others of the same names, datatypes and
    trailing shape (up to a batch's share of rows), and each request gets exactly its rows of every output; another
    shape waits for a run of its own, and items never join tensors."""
    gate = threading.Event()
    runs: list[object] = []

    def items_run(items):  # type: ignore[no-untyped-def]
        runs.append(("items", len(items)))
        gate.wait(5)
        return items

    def tensor_run(arrays):  # type: ignore[no-untyped-def]
        x = arrays["x"]
        runs.append(("tensors", x.shape))
        return {"sum": x.sum(axis=1), "twice": x * 2}

    batcher = make(items_run, max_batch_size=8)
    blocker = asyncio.ensure_future(batcher.submit([0]))
    await asyncio.sleep(0.02)
    inputs = [np.full((rows, 3), float(i), dtype=np.float32) for i, rows in enumerate([1, 2, 3, 4])]
    wide = np.ones((2, 5), dtype=np.float32)
    pending = [asyncio.ensure_future(batcher.submit_tensors({"x": x}, tensor_run, len(x), x.size)) for x in inputs]
    other = asyncio.ensure_future(batcher.submit_tensors({"x": wide}, tensor_run, 2, wide.size))
    await asyncio.sleep(0.02)
    gate.set()
    results = await asyncio.gather(*pending, other)
    await blocker
    # 1 + 2 + 3 rows fill up to the share of 8; the 4-row request runs next, the wider tensor alone after it.
    assert runs == [("items", 1), ("tensors", (6, 3)), ("tensors", (4, 3)), ("tensors", (2, 5))]
    for x, result in zip([*inputs, wide], results, strict=True):
        (output,) = result.outputs
        np.testing.assert_array_equal(output["sum"], x.sum(axis=1))
        np.testing.assert_array_equal(output["twice"], x * 2)
    assert results[0].batch_items == 6 and results[3].batch_items == 4


async def test_tensors_whose_outputs_are_not_batched_by_rows_run_alone() -> None:
    """A graph whose output's axis 0 is not the rows cannot be split: the shared run fails and each request is run
    alone (as ``_isolate`` does for a bad item), so every request still gets its own answer."""
    gate = threading.Event()
    runs: list[int] = []

    def items_run(items):  # type: ignore[no-untyped-def]
        gate.wait(5)
        return items

    def total(arrays):  # type: ignore[no-untyped-def]
        runs.append(len(arrays["x"]))
        return {"total": np.array(arrays["x"].sum())}

    batcher = make(items_run)
    blocker = asyncio.ensure_future(batcher.submit([0]))
    await asyncio.sleep(0.02)
    inputs = [np.full((2, 2), float(i)) for i in (1, 2)]
    pending = [asyncio.ensure_future(batcher.submit_tensors({"x": x}, total, 2, 4)) for x in inputs]
    await asyncio.sleep(0.02)
    gate.set()
    results = await asyncio.gather(*pending)
    await blocker
    assert runs == [4, 2, 2]
    assert [float(r.outputs[0]["total"]) for r in results] == [4.0, 8.0]


async def test_tensors_join_a_run_only_up_to_a_bound_on_its_elements(monkeypatch: pytest.MonkeyPatch) -> None:
    """A shared run allocates its concatenated inputs: past ``TENSOR_JOIN_ELEMENTS`` requests run in separate runs."""
    monkeypatch.setattr(batcher_module, "TENSOR_JOIN_ELEMENTS", 10)
    gate = threading.Event()
    rows_run: list[int] = []

    def items_run(items):  # type: ignore[no-untyped-def]
        gate.wait(5)
        return items

    def run(arrays):  # type: ignore[no-untyped-def]
        rows_run.append(len(arrays["x"]))
        return {"y": arrays["x"]}

    batcher = make(items_run)
    blocker = asyncio.ensure_future(batcher.submit([0]))
    await asyncio.sleep(0.02)
    inputs = [np.zeros((1, 4)) for _ in range(3)]  # 4 elements each: two fit under 10, the third does not
    pending = [asyncio.ensure_future(batcher.submit_tensors({"x": x}, run, 1, x.size)) for x in inputs]
    await asyncio.sleep(0.02)
    gate.set()
    await asyncio.gather(*pending, blocker)
    assert rows_run == [2, 1]
