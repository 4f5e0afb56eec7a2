"""Loaded deployments: one batcher each, over onnxruntime sessions shared by deployments of one artifact."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import msgspec
import numpy as np

from cloudeasyml.core.serving import Device, ServingConfig
from cloudeasyml.core.traffic import TrafficRoute
from cloudeasyml.errors import NotFoundError
from cloudeasyml.plugins.model import ModelPlugin
from cloudeasyml.runtime.batcher import Batcher, BatchObserver, BatchResult
from cloudeasyml.runtime.config import available_cpus, served_instances, session_threads
from cloudeasyml.runtime.resolver import ArtifactResolver
from cloudeasyml.runtime.session import OnnxSession, providers_for
from cloudeasyml.runtime.variants import ensure_variant, open_for_serving
from cloudeasyml.single_flight import SingleFlight

__all__ = ("DeploymentSpec", "LoadedDeployment", "ServingRegistry", "SessionKey")

log = logging.getLogger(__name__)


class DeploymentSpec(msgspec.Struct, frozen=True):
    """What the runtime needs to know of a deployment (the runtime never reads the database)."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    model_name: str
    model_version: str
    config: ServingConfig
    traffic: tuple[TrafficRoute, ...] = ()
    """The versions that serve the deployment and their shares; empty (or one live route of ``model_version``): a
    single-version deployment."""


SessionKey = tuple[Path, str, Device, int]
"""(artifact path, variant, device, intra-op threads): deployments with equal keys share one session. The device is
the one the session asks for (``cpu`` or ``cuda``, so ``auto`` and ``cpu`` on a machine without CUDA are one) and the
threads are clamped to the CPUs (see ``session_threads``), so that a tenant cannot open more sessions of one graph
by varying a number."""

_TOMBSTONES = 10_000
"""Deleted deployment ids remembered, so that a request that looked a deployment up before its deletion cannot load
it again afterwards (ids are never reused; the oldest are forgotten first)."""


class LoadedDeployment:
    """A deployment ready to serve: its model, session and batcher."""

    def __init__(
        self,
        spec: DeploymentSpec,
        model: ModelPlugin,
        session: OnnxSession,
        session_key: SessionKey,
        variant_report: dict[str, Any] | None = None,
        observer: BatchObserver | None = None,
    ) -> None:
        self.spec = spec
        self.model = model
        self.session = session
        self.session_key = session_key
        self.variant_report = variant_report
        """What the deployment's variant changes against the float graph (``VariantReport``); None for float."""
        self.last_used = time.monotonic()
        config = spec.config
        self.batcher = Batcher(
            self._run_batch,
            # The model's own bound on a run's items holds whatever the deployment asks (memory per run).
            max_batch_size=min(config.max_batch_size, model.max_batch_items),
            max_batch_delay_ms=config.max_batch_delay_ms,
            instances=config.instances,
            max_queue_items=config.max_queue_items,
            timeout_ms=config.timeout_ms,
            # The batcher hands cost_of the request's own list (or slices of it), as cost_units expects.
            cost_of=cast(Callable[[Sequence[Any]], int], model.cost_units),
            observer=observer,
        )

    @property
    def on_gpu(self) -> bool:
        """Whether the session runs on CUDA."""
        return self.session.on_gpu

    def _run_batch(self, items: list[Any]) -> list[Any]:
        arrays = self.model.to_arrays(items)
        outputs = self.session.run(arrays)
        return list(self.model.from_outputs(outputs))

    async def run_tensors(self, arrays: Mapping[str, np.ndarray], items: int) -> BatchResult:
        """Run raw named tensors (the V2 protocol path), bypassing the plugin's pre/post-processing, by themselves
        but through the deployment's batcher (its instances, queue bound, deadline and drain). ``outputs`` is
        ``[{name: array}]``; ``items`` is the tensors' batch size.
        """
        self.last_used = time.monotonic()
        elements = sum(int(array.size) for array in arrays.values())
        return await self.batcher.submit_alone(lambda: self.session.run(arrays), items, elements)

    async def predict(self, items: list[Any], *, background: bool = False) -> BatchResult:
        """Queue one request's items into the deployment's batcher (``background``: a batch job's chunk, which
        runs in what online requests leave).
        """
        self.last_used = time.monotonic()
        return await self.batcher.submit(items, background=background)


class ServingRegistry:
    """Loads deployments lazily and shares sessions by ``SessionKey``. When the sessions' estimated memory (their
    artifacts' size) passes ``memory_budget_bytes``, the least recently used ones are unloaded, after their in-flight
    requests drain; their deployments load again on their next request. A tenant holds at most ``tenant_cap``
    deployments (given with each load) loaded or loading at once; loading one more unloads the tenant's least recently
    used one first, never another tenant's.
    """

    def __init__(
        self,
        resolver: ArtifactResolver,
        *,
        memory_budget_bytes: int = 0,
        cpus: int | None = None,
        observer_for: Callable[[str], BatchObserver] | None = None,
        on_load: Callable[[DeploymentSpec, BaseException | None], None] | None = None,
    ) -> None:
        self.resolver = resolver
        self._on_load = on_load
        """Told of every load's result: the spec and None when it loaded, or the error it failed with (the app wires
        it to webhook events; it must not block or raise)."""
        self._observer_for = observer_for
        """The batch observer of a model's deployments, by model name (None: nothing observes)."""
        self._budget = memory_budget_bytes
        self._cpus = cpus or available_cpus()
        self._loaded: dict[uuid.UUID, LoadedDeployment] = {}
        self._sessions: dict[SessionKey, tuple[OnnxSession, int]] = {}
        self._loading: SingleFlight[LoadedDeployment] = SingleFlight()
        self._opening: SingleFlight[tuple[SessionKey, tuple[OnnxSession, int]]] = SingleFlight()
        self._admitted: dict[uuid.UUID, uuid.UUID] = {}
        """Loads past their tenant's cap check and not finished: deployment id -> tenant id."""
        self._cancelled: set[uuid.UUID] = set()
        """Loads in flight whose deployment was unloaded (deleted) meanwhile: dropped when they finish."""
        self._deleted: dict[uuid.UUID, None] = {}
        """Ids of deleted deployments, oldest first (at most ``_TOMBSTONES``): a late ``load`` of one is refused."""

    def __len__(self) -> int:
        return len(self._loaded)

    @property
    def session_bytes(self) -> int:
        """Estimated memory of the open sessions (the size of their ONNX files)."""
        return sum(size for _session, size in self._sessions.values())

    @property
    def session_count(self) -> int:
        """Open sessions (deployments of one artifact share one)."""
        return len(self._sessions)

    def loaded(self) -> list[LoadedDeployment]:
        """Every loaded deployment."""
        return list(self._loaded.values())

    def get_loaded(self, deployment_id: uuid.UUID) -> LoadedDeployment | None:
        """The deployment if it is loaded already."""
        return self._loaded.get(deployment_id)

    async def load(self, spec: DeploymentSpec, model: ModelPlugin, *, tenant_cap: int = 0) -> LoadedDeployment:
        """The loaded deployment, loading it (once, however many callers ask at the same time) if needed.

        Args:
            spec: The deployment.
            model: Its model plugin.
            tenant_cap: Most deployments of ``spec.tenant_id`` loaded or loading at once (0: no cap).

        Raises:
            NotFoundError: The deployment was deleted (before or while it loaded).
        """
        if spec.id in self._deleted:
            raise NotFoundError(f"deployment {spec.id} not found")
        loaded = self._loaded.get(spec.id)
        if loaded is not None:
            return loaded
        return await self._loading.run(spec.id, lambda: self._load_and_tell(spec, model, tenant_cap))

    async def _load_and_tell(self, spec: DeploymentSpec, model: ModelPlugin, tenant_cap: int) -> LoadedDeployment:
        """``_load``, its result told to ``on_load`` (once per load, however many callers share it)."""
        try:
            loaded = await self._load(spec, model, tenant_cap)
        except Exception as exc:
            self._tell(spec, exc)
            raise
        self._tell(spec, None)
        return loaded

    def _tell(self, spec: DeploymentSpec, error: BaseException | None) -> None:
        if self._on_load is None:
            return
        try:
            self._on_load(spec, error)
        except Exception:  # noqa: BLE001 - an observer's failure is not the load's
            log.exception("the load observer failed for deployment %s", spec.id)

    async def _load(self, spec: DeploymentSpec, model: ModelPlugin, tenant_cap: int) -> LoadedDeployment:
        try:
            await self._admit(spec, tenant_cap)
            self._check_wanted(spec)
            key, report = await self._session_key(spec, model)
            self._check_wanted(spec)
            key, session = await self._session(key, model)
            if spec.id in self._cancelled or spec.id in self._deleted:
                self._drop_session_if_unused(key)  # opened for a deployment gone meanwhile: free it
                self._check_wanted(spec)
            config = spec.config
            if not session.on_gpu:
                config = msgspec.structs.replace(config, instances=served_instances(config, self._cpus))
            observer = self._observer_for(spec.model_name) if self._observer_for is not None else None
            loaded = LoadedDeployment(
                msgspec.structs.replace(spec, config=config), model, session, key, report, observer=observer
            )
            self._loaded[spec.id] = loaded
        finally:
            self._admitted.pop(spec.id, None)
            self._cancelled.discard(spec.id)
        log.info(
            "loaded deployment %s (%s %s) on %s",
            spec.name,
            spec.model_name,
            spec.model_version,
            loaded.session.providers[0],
        )
        await self._evict_over_budget(keep=key)
        return loaded

    def _check_wanted(self, spec: DeploymentSpec) -> None:
        """Stop a load whose deployment was deleted (or unloaded) since it started."""
        if spec.id in self._cancelled or spec.id in self._deleted:
            raise NotFoundError(f"deployment {spec.id} not found")

    async def _session_key(self, spec: DeploymentSpec, model: ModelPlugin) -> tuple[SessionKey, dict[str, Any] | None]:
        """The artifact (made if needed) and the canonical key of the session that serves ``spec``."""
        config = spec.config
        path = await asyncio.to_thread(self.resolver.ensure, model, spec.model_version)
        report = None
        if config.variant != "float":  # variants run on the CPU only
            path, made = await asyncio.to_thread(ensure_variant, model, path, config.variant)
            report = msgspec.to_builtins(made)
        device = config.device if config.variant == "float" else "cpu"
        device = "cuda" if "CUDAExecutionProvider" in providers_for(device) else "cpu"
        return (path, config.variant, device, session_threads(config, self._cpus)), report

    async def _session(self, key: SessionKey, model: ModelPlugin) -> tuple[SessionKey, OnnxSession]:
        """The open session of ``key``, opening it once however many loads ask for it at the same time; with the key
        it is kept under (a CUDA session that fell back to the CPU is the CPU's).
        """
        held = self._sessions.get(key)
        if held is not None:
            return key, held[0]
        key, opened = await self._opening.run(key, lambda: self._open(key, model))
        # An unload may have dropped it while this load waited for the flight (nothing used it yet): keep it.
        return key, self._sessions.setdefault(key, opened)[0]

    async def _open(self, key: SessionKey, model: ModelPlugin) -> tuple[SessionKey, tuple[OnnxSession, int]]:
        path, variant, device, threads = key
        session = await asyncio.to_thread(open_for_serving, path, variant, device=device, intra_op_threads=threads)
        if device == "cuda" and not session.on_gpu:
            key = (path, variant, "cpu", threads)
            if key in self._sessions:
                return key, self._sessions[key]
        # Warm up: the first run allocates and plans; a user should not pay for it.
        await asyncio.to_thread(session.run, model.to_arrays(model.example_inputs()))
        # A CUDA session that fell back to the CPU may meet a CPU session of the same key opened meanwhile (by a load
        # that asked once CUDA was known to fail): the first one kept serves both.
        return key, self._sessions.setdefault(key, (session, path.stat().st_size))

    async def _admit(self, spec: DeploymentSpec, tenant_cap: int) -> None:
        """Wait for room under the tenant's cap: unload the tenant's least recently used loaded deployment while its
        loaded and admitted ones would pass the cap; when only loads in flight fill it, wait for one to finish.
        Only loads already admitted are waited for, so two loads never wait for each other.
        """
        tenant_id = spec.tenant_id
        while tenant_cap:
            admitted = [i for i, t in self._admitted.items() if t == tenant_id]
            idle = [
                d for d in self._loaded.values() if d.spec.tenant_id == tenant_id and d.spec.id not in self._loading
            ]
            if len(admitted) + len(idle) < tenant_cap:
                break
            if idle:
                oldest = min(idle, key=lambda d: d.last_used)
                log.info("tenant %s has %d deployments loaded: unloading %s", tenant_id, tenant_cap, oldest.spec.name)
                await self.unload(oldest.spec.id)
                continue
            flights = [f for f in map(self._loading.in_flight, admitted) if f is not None]
            if flights:
                await asyncio.wait(flights, return_when=asyncio.FIRST_COMPLETED)
        self._admitted[spec.id] = tenant_id

    async def _evict_over_budget(self, keep: SessionKey) -> None:
        if not self._budget:
            return

        def last_used(key: SessionKey) -> float:
            return max((d.last_used for d in self._loaded.values() if d.session_key == key), default=0.0)

        for key in sorted((k for k in self._sessions if k != keep), key=last_used):
            if self.session_bytes <= self._budget:
                return
            users = [d.spec.id for d in self._loaded.values() if d.session_key == key]
            if any(deployment_id in self._loading for deployment_id in users):
                continue  # still finishing its load (its own eviction pass): unloading it here could wait on us
            log.info("memory budget exceeded: unloading %s", key[0])
            for deployment_id in users:
                await self.unload(deployment_id)

    def _drop_session_if_unused(self, key: SessionKey) -> None:
        if all(other.session_key != key for other in self._loaded.values()):
            self._sessions.pop(key, None)

    async def unload(self, deployment_id: uuid.UUID, *, deleted: bool = False) -> None:
        """Drain the deployment's in-flight requests, then drop it (and its session if nothing else uses it). A
        deployment still loading is dropped when its load finishes (its callers get ``NotFoundError``), and this
        waits for that. ``deleted``: the deployment is gone for good; a later ``load`` of it is refused.
        """
        if deleted:
            self._deleted[deployment_id] = None
            if len(self._deleted) > _TOMBSTONES:
                del self._deleted[next(iter(self._deleted))]
        flight = self._loading.in_flight(deployment_id)
        if flight is not None:
            self._cancelled.add(deployment_id)
            with contextlib.suppress(Exception):
                await asyncio.shield(flight)
            self._cancelled.discard(deployment_id)
        loaded = self._loaded.pop(deployment_id, None)
        if loaded is None:
            return
        await loaded.batcher.drain()
        self._drop_session_if_unused(loaded.session_key)

    async def close(self) -> None:
        """Drain and drop every deployment (and those still loading, once loaded)."""
        for deployment_id in [*self._loaded, *self._admitted]:
            await self.unload(deployment_id)
