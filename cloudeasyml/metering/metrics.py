"""The platform's Prometheus metrics (``GET /metrics``), through ``prometheus-client``.

Labels name models (installed plugins, the same for every tenant) and their versions, routes (templates, never a raw
path), methods, statuses and refusal causes: never a tenant, a tenant's deployment or a key, because ``/metrics``
answers without one. A version label is a model's version string (the platform's or one trained with ``cloudeasyml
train``), the same for every tenant.

One process: each ``Metrics`` holds its own ``CollectorRegistry`` (tests build many apps in one process). Several
worker processes (``cloudeasyml serve --workers N``): when ``PROMETHEUS_MULTIPROC_DIR`` is set, prometheus-client
keeps every value in memory-mapped files of that directory, one set per process, and a scrape answered by any
worker sums them (``MultiProcessCollector``), so the page tells one truth. Gauges there are ``live*`` modes: the
files of a process that has ended are dropped (``mark_process_dead``: by the process itself when it stops, and at
each scrape for processes that are gone without stopping cleanly).

Hot path: children of labelled series are looked up once and kept in dicts (``labels()`` costs more than an
observation), and a prediction makes four histogram observations (its request; its wait in the queue; its batch's
size and run time, shared by the batch's requests). The billing counters (predictions, items, processing seconds,
cost) are added up in plain floats on the event loop and moved into prometheus-client at each scrape (and every
``GAUGE_REFRESH_SECONDS`` with several processes): four lock-taking ``inc`` calls per request cost as much as two
observations (measured ~0.6 us each, a histogram observation ~1.4 us, on a busy 2-core machine). Histogram
observations are buffered the same way (``BufferedHistogram``): with several processes each prometheus-client
observation writes two memory-mapped values under a lock, and the metric updates of one prediction took 14.0 us of
CPU; buffered, they take a few (``python bench/metrics_cost.py --ops`` with and without ``PROMETHEUS_MULTIPROC_DIR``).
A scrape sees every observation of the process that answers it, and those of other processes at most
``GAUGE_REFRESH_SECONDS`` old.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

__all__ = (
    "MULTIPROC_ENV",
    "REFUSAL_CAUSES",
    "SHADOW_OUTCOMES",
    "BufferedHistogram",
    "Metrics",
    "ModelSeries",
    "multiprocess_dir",
    "prepare_multiprocess_dir",
)

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

SHADOW_OUTCOMES = ("run", "shed", "failed")
"""The ``outcome`` label of ``cloudeasyml_shadow_copies_total``: a copy ran, was shed (too many in flight, a queue
too full, the spend cap reached, no room to load its unit) or failed."""

REFUSAL_CAUSES = ("rate_limit", "request_cap", "spend_cap", "queue_full", "deadline", "deployment_limit")
"""The ``cause`` label of ``cloudeasyml_refusals_total`` (each series exists from the start, at 0)."""

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Seconds: a small MLP answers in well under a millisecond, a large text batch in seconds."""
_WAIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"
"""The route label of a request no route matched: its raw path is the client's to choose, so it is never a label."""
GAUGE_REFRESH_SECONDS = 1.0
"""With several processes, how often each writes its gauges (queue items, pending usage ...) to its files: a scrape
answered by another worker reads them from there, at most this old."""
_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w*?_(\d+)\.db\Z")

# No ``*_created`` series: they double the page and no dashboard reads them (a process-wide switch of the library).
disable_created_metrics()


def multiprocess_dir() -> str | None:
    """The multiprocess directory of this process (``PROMETHEUS_MULTIPROC_DIR``), or None: one process."""
    return os.environ.get(MULTIPROC_ENV) or None


def prepare_multiprocess_dir(path: Path) -> None:
    """Create ``path`` empty: prometheus-client's files of an earlier run would be summed into this one's."""
    path.mkdir(parents=True, exist_ok=True)
    for entry in path.glob("*.db"):
        entry.unlink(missing_ok=True)


class BufferedHistogram:
    """One labelled histogram series whose observations are counted here and added to prometheus-client's child at
    ``flush``. Thread-safe: batches observe from worker threads (``counts[i] += 1`` is not atomic across threads).

    prometheus-client has no call that adds many observations at once, so ``flush`` adds to the child's bucket and
    sum values directly (``_buckets``, ``_sum``: non-cumulative per bucket, as ``Histogram.observe`` keeps them);
    tests/unit/test_metrics_buffer.py renders a buffered and a plain histogram side by side, in one process and in
    multiprocess mode, so that a change in the library fails there rather than here.
    """

    __slots__ = ("_bounds", "_child", "_counts", "_lock", "_sum")

    def __init__(self, child: Any) -> None:
        self._child = child
        self._bounds: tuple[float, ...] = tuple(child._upper_bounds)  # ends with +Inf
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, amount: float) -> None:
        """As ``Histogram.observe``: counted in the first bucket whose upper bound is ``>= amount``."""
        if amount != amount:  # NaN: no bucket holds it, and it would make the sum NaN for good
            return
        index = bisect.bisect_left(self._bounds, amount)
        with self._lock:
            self._counts[index] += 1
            self._sum += amount

    def flush(self) -> None:
        """Add the observations since the last flush to prometheus-client's series."""
        with self._lock:
            counts, total = self._counts, self._sum
            if not any(counts):
                return
            self._counts, self._sum = [0] * len(self._bounds), 0.0
        child = self._child
        child._sum.inc(total)
        for index, count in enumerate(counts):
            if count:
                child._buckets[index].inc(count)


class ModelSeries:
    """The series of one model version, looked up once: what a prediction and its batches update."""

    __slots__ = (
        "_batch_items",
        "_cost",
        "_inference",
        "_items",
        "_pending",
        "_predictions",
        "_processing",
        "_wait",
    )

    def __init__(self, metrics: Metrics, model: str, version: str) -> None:
        self._predictions = metrics.predictions.labels(model, version)
        self._items = metrics.items.labels(model, version)
        self._processing = metrics.processing.labels(model, version)
        self._cost = metrics.cost.labels(model, version)
        self._wait = BufferedHistogram(metrics.queue_wait.labels(model, version))
        self._batch_items = BufferedHistogram(metrics.batch_items.labels(model, version))
        self._inference = BufferedHistogram(metrics.inference.labels(model, version))
        self._pending = [0, 0, 0.0, 0.0]
        """Billed requests, items, processing seconds and cost not yet added to the counters (see ``flush``)."""

    def waited(self, seconds: float) -> None:
        """A request's first batch started ``seconds`` after it was queued (0: it ran at once)."""
        self._wait.observe(seconds)

    def ran(self, items: int, seconds: float) -> None:
        """A batch of ``items`` ran in ``seconds``."""
        self._batch_items.observe(items)
        self._inference.observe(seconds)

    def billed(self, items: int, processing_ms: float, cost: float) -> None:
        """One billed request. On the event loop only (``flush`` runs there too, so no lock is needed)."""
        pending = self._pending
        pending[0] += 1
        pending[1] += items
        pending[2] += processing_ms / 1000
        pending[3] += cost

    def flush(self) -> None:
        """Add the billed requests and the observations since the last flush to prometheus-client."""
        self._wait.flush()
        self._batch_items.flush()
        self._inference.flush()
        predictions, items, seconds, cost = self._pending
        if predictions:
            self._pending = [0, 0, 0.0, 0.0]
            self._predictions.inc(predictions)
            self._items.inc(items)
            self._processing.inc(seconds)
            if cost:
                self._cost.inc(cost)


class Metrics:
    """Every series the server exports. Thread-safe (batches observe from worker threads)."""

    def __init__(self) -> None:
        self._dir = multiprocess_dir()
        # Multiprocess: metrics live in the directory's files, and a scrape reads those; registering them as well
        # would export them twice. One process: a registry of this app's own.
        self._registry = None if self._dir else CollectorRegistry(auto_describe=False)
        registry = self._registry
        self.requests = Histogram(
            "cloudeasyml_http_request_duration_seconds",
            "Time to answer an HTTP request, by method, route template and status.",
            ("method", "route", "status"),
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "cloudeasyml_queue_wait_seconds",
            "Time a request waited in its deployment's queue before its first batch started, by model and version.",
            ("model", "version"),
            buckets=_WAIT_BUCKETS,
            registry=registry,
        )
        self.batch_items = Histogram(
            "cloudeasyml_batch_size_items",
            "Items in each batch run, by model and version.",
            ("model", "version"),
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.inference = Histogram(
            "cloudeasyml_inference_seconds",
            "Run time of each batch, by model and version.",
            ("model", "version"),
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        by_version = ("model", "version")
        self.predictions = Counter("cloudeasyml_predictions", "Billed requests.", by_version, registry=registry)
        self.items = Counter("cloudeasyml_prediction_items", "Items in billed requests.", by_version, registry=registry)
        self.processing = Counter(
            "cloudeasyml_processing_seconds", "Billed model processing time.", by_version, registry=registry
        )
        self.cost = Counter(
            "cloudeasyml_cost",
            "Billed cost (in the prices' currency), by model and version.",
            by_version,
            registry=registry,
        )
        self.shadow_copies = Counter(
            "cloudeasyml_shadow_copies",
            "Shadow copies of live requests, by outcome (run, shed, failed).",
            ("outcome",),
            registry=registry,
        )
        self.refusals = Counter(
            "cloudeasyml_refusals",
            "Requests refused by a limit, by cause.",
            ("cause",),
            registry=registry,
        )
        self.errors = Counter(
            "cloudeasyml_http_errors", "Requests answered with an error status.", ("status",), registry=registry
        )

        def live(name: str, documentation: str, labels: tuple[str, ...] = ()) -> Gauge:
            """A gauge summed over the live processes."""
            return Gauge(name, documentation, labels, multiprocess_mode="livesum", registry=registry)

        self.deployments_loaded = live("cloudeasyml_deployments_loaded", "Deployments loaded.")
        self.sessions_loaded = live("cloudeasyml_sessions_loaded", "Open onnxruntime sessions.")
        self.session_bytes = live(
            "cloudeasyml_session_bytes", "Estimated memory of open onnxruntime sessions (their ONNX files)."
        )
        self.queue_items = live("cloudeasyml_queue_items", "Items waiting for a batch, by model.", ("model",))
        self.usage_pending = live("cloudeasyml_usage_records_pending", "Usage records not yet written.")
        self.models_installed = Gauge(
            "cloudeasyml_models_installed",
            "Installed, valid models.",
            multiprocess_mode="livemax",
            registry=registry,
        )
        self._models: dict[tuple[str, str], ModelSeries] = {}
        self._shadow = {outcome: self.shadow_copies.labels(outcome) for outcome in SHADOW_OUTCOMES}
        self._routes: dict[tuple[str, str, int], BufferedHistogram] = {}
        self._refusals = {cause: self.refusals.labels(cause) for cause in REFUSAL_CAUSES}
        self._queued_models: set[str] = set()
        self._refresher: asyncio.Task[None] | None = None

    @property
    def multiprocess(self) -> bool:
        """Whether values are shared with other processes through ``PROMETHEUS_MULTIPROC_DIR``."""
        return self._dir is not None

    def model(self, model: str, version: str) -> ModelSeries:
        """The series of ``model`` at ``version`` (a batcher's observer; billing)."""
        series = self._models.get((model, version))
        if series is None:
            series = self._models[(model, version)] = ModelSeries(self, model, version)
        return series

    def record_success(self, model: str, version: str, items: int, processing_ms: float, cost: float = 0.0) -> None:
        """One billed request, served by ``version`` of ``model``."""
        self.model(model, version).billed(items, processing_ms, cost)

    def record_shadow(self, outcome: str) -> None:
        """One shadow copy's outcome (one of ``SHADOW_OUTCOMES``)."""
        self._shadow[outcome].inc()

    def record_error(self, status: int) -> None:
        """One request answered with an error status."""
        self.errors.labels(str(status)).inc()

    def record_refusal(self, cause: str) -> None:
        """One request refused by a limit (a cause of ``REFUSAL_CAUSES``)."""
        self._refusals[cause].inc()

    def observe_request(self, method: str, route: str | None, status: int, seconds: float) -> None:
        """One HTTP request answered. ``route`` is the matched route's template (None: no route matched)."""
        if method not in _METHODS:
            method = "OTHER"  # a client may send any token as a method: neither a label nor a key of the cache
        key = (method, route or UNMATCHED_ROUTE, status)
        child = self._routes.get(key)
        if child is None:
            child = self._routes[key] = BufferedHistogram(self.requests.labels(method, key[1], str(status)))
        child.observe(seconds)

    def set_gauges(
        self,
        *,
        deployments_loaded: int,
        sessions_loaded: int,
        session_bytes: int,
        queued_by_model: Mapping[str, int],
        usage_pending: int,
        models_installed: int,
    ) -> None:
        """This process's current state (read at each scrape, and every second with several processes)."""
        self.deployments_loaded.set(deployments_loaded)
        self.sessions_loaded.set(sessions_loaded)
        self.session_bytes.set(session_bytes)
        self.usage_pending.set(usage_pending)
        self.models_installed.set(models_installed)
        for model in self._queued_models - queued_by_model.keys():
            self.queue_items.labels(model).set(0)  # its deployments have gone: it queues nothing any more
        for model, items in queued_by_model.items():
            self.queue_items.labels(model).set(items)
        self._queued_models = set(queued_by_model)

    def flush(self) -> None:
        """Move the billing counters and histogram observations since the last flush into prometheus-client."""
        for series in list(self._models.values()):
            series.flush()
        for route in list(self._routes.values()):
            route.flush()

    def render(self) -> bytes:
        """The exposition text (format 0.0.4, which every Prometheus reads): this process's values, or with several
        processes the sum of all of theirs.
        """
        self.flush()
        if self._registry is not None:
            return generate_latest(self._registry)
        _forget_dead_processes(Path(self._dir or "."))
        registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(registry, path=self._dir)
        return generate_latest(registry)

    def start(self, refresh: Callable[[], None]) -> None:
        """With several processes, call ``refresh`` (which calls ``set_gauges``) every ``GAUGE_REFRESH_SECONDS``, so
        that a scrape answered by another worker sees this one's gauges. One process: nothing (each scrape refreshes).
        """
        if self._dir is not None and self._refresher is None:
            self._refresher = asyncio.get_running_loop().create_task(_every(GAUGE_REFRESH_SECONDS, self, refresh))

    async def close(self) -> None:
        """This process stops: its gauges no longer count (its counters and histograms stay in the sum)."""
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        self.flush()  # counters outlive the process in its files
        if self._dir is not None:
            mark_process_dead(os.getpid(), self._dir)


async def _every(seconds: float, metrics: Metrics, refresh: Callable[[], None]) -> None:
    while True:
        try:
            metrics.flush()
            refresh()
        except Exception:  # a failed refresh must not end the refreshes; the next one may succeed
            log.exception("writing the metrics' gauges failed")
        await asyncio.sleep(seconds)


def _forget_dead_processes(path: Path) -> None:
    """Drop the live gauges of processes that ended without ``close`` (killed, crashed): a worker manager restarts
    them under new ids, and their last values would otherwise count forever.
    """
    for pid in _pids(entry.name for entry in path.glob("gauge_live*.db")):
        if not _alive(pid):
            mark_process_dead(pid, str(path))


def _pids(names: Iterable[str]) -> set[int]:
    return {int(match.group(1)) for name in names if (match := _LIVE_GAUGE_FILE.search(name))}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True
