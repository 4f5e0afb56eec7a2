"""Loaded deployments: one batcher each, over onnxruntime sessions shared by deployments of one artifact."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import msgspec
import numpy as np

from cloudeasyml.core.heap import freeze_new_modules
from cloudeasyml.core.serving import Device, ServingConfig
from cloudeasyml.core.traffic import TrafficRoute
from cloudeasyml.errors import DeploymentUnloadedError, ModelNotFoundError, ModelNotReadyError, NotFoundError
from cloudeasyml.plugins.model import ModelPlugin
from cloudeasyml.runtime.batcher import Batcher, BatchObserver, BatchResult
from cloudeasyml.runtime.config import available_cpus, served_instances, session_threads
from cloudeasyml.runtime.resolver import ArtifactResolver
from cloudeasyml.runtime.session import OnnxSession, providers_for
from cloudeasyml.runtime.variants import ensure_variant, open_for_serving
from cloudeasyml.single_flight import SingleFlight

__all__ = ("DeploymentSpec", "LoadOutcome", "LoadedDeployment", "ServingRegistry", "SessionKey", "UnitKey")

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
    revision: int = 0
    """The deployment's revision (``deployment.revision``): a cache keeps the newest it has seen of a deployment."""

    @property
    def unit(self) -> UnitKey:
        """The serving unit this spec loads: (deployment id, model version, serving config incl. variant)."""
        return (self.id, self.model_version, self.config)

    def for_route(self, route: TrafficRoute) -> DeploymentSpec:
        """The spec of one route of this deployment: its ``model_version`` the route's, its ``config.variant`` the
        route's variant when set, and ``traffic`` that route alone. A route equal to the deployment's own version
        and variant gives the same serving unit as the deployment (one loaded unit serves both).
        """
        config = self.config
        if route.variant is not None and route.variant != config.variant:
            config = msgspec.structs.replace(config, variant=route.variant)
        return msgspec.structs.replace(self, model_version=route.model_version, config=config, traffic=(route,))


UnitKey = tuple[uuid.UUID, str, ServingConfig]
"""(deployment id, model version, serving config incl. variant): what the registry loads and unloads. A deployment
with a traffic split holds one unit per route it has served; units of one artifact and variant still share one
session (``SessionKey``)."""


LoadOutcome = Callable[[DeploymentSpec, "Exception | None"], Awaitable[None]]
"""Told once per load (however many callers wait for it) how it ended: None when it loaded, else the error. A load
stopped because its deployment was deleted is not told."""

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
        """The unit's spec as served (``model_version`` and ``config.variant`` are the route's; ``config.instances``
        clamped to the CPUs)."""
        self.unit: UnitKey = spec.unit
        """The key the unit is loaded under (set by the registry: the spec asked for, before clamping)."""
        self.model = model
        self.session = session
        self.session_key = session_key
        self.variant_report = variant_report
        """What the deployment's variant changes against the float graph (``VariantReport``); None for float."""
        self.last_used = time.monotonic()
        self._counts_tokens = any(tensor.name == "attention_mask" for tensor in model.input_tensors)
        """Whether each prediction comes with its input's token count (the attention mask's ones)."""
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
        predictions = list(self.model.from_outputs(outputs))
        if self._counts_tokens:  # (prediction, tokens) pairs: the batcher splits them per request with the outputs
            return list(zip(predictions, np.asarray(arrays["attention_mask"]).sum(axis=1).tolist(), strict=True))
        return predictions

    async def run_tensors(self, arrays: Mapping[str, np.ndarray], items: int) -> BatchResult:
        """Run raw named tensors (the V2 protocol path), bypassing the plugin's pre/post-processing, by themselves
        but through the deployment's batcher (its instances, queue bound, deadline and drain). ``outputs`` is
        ``[{name: array}]``; ``items`` is the tensors' batch size.
        """
        self.last_used = time.monotonic()
        elements = sum(int(array.size) for array in arrays.values())
        return await self.batcher.submit_tensors(arrays, self.session.run, items, elements)

    async def predict(self, items: list[Any], *, background: bool = False) -> BatchResult:
        """Queue one request's items into the deployment's batcher (``background``: a batch job's chunk, which
        runs in what online requests leave); for a model with an ``attention_mask`` input the result holds the
        inputs' ``tokens`` too.
        """
        self.last_used = time.monotonic()
        result = await self.batcher.submit(items, background=background)
        if not self._counts_tokens:
            return result
        outputs = [prediction for prediction, _tokens in result.outputs]
        tokens = sum(tokens for _prediction, tokens in result.outputs)
        return msgspec.structs.replace(result, outputs=outputs, tokens=tokens)


class ServingRegistry:
    """Loads serving units lazily and shares sessions by ``SessionKey``. A unit is one version (and serving config,
    variant included) of one deployment (``UnitKey``): a deployment with a traffic split holds one per route it
    serves. When the sessions' estimated memory (their artifacts' size) passes ``memory_budget_bytes``, the least
    recently used ones are unloaded, after their in-flight requests drain; their units load again on their next
    request. A tenant holds at most ``tenant_cap`` units (given with each load) loaded or loading at once; loading one
    more unloads the tenant's least recently used one first, never another tenant's.
    """

    def __init__(
        self,
        resolver: ArtifactResolver,
        *,
        memory_budget_bytes: int = 0,
        cpus: int | None = None,
        observer_for: Callable[[str, str], BatchObserver] | None = None,
        on_load: LoadOutcome | None = None,
    ) -> None:
        self.resolver = resolver
        self._on_load = on_load
        self._observer_for = observer_for
        """The batch observer of a model version's units, by model name and version (None: nothing observes)."""
        self._budget = memory_budget_bytes
        self._cpus = cpus or available_cpus()
        self._loaded: dict[UnitKey, LoadedDeployment] = {}
        self._sessions: dict[SessionKey, tuple[OnnxSession, int]] = {}
        self._loading: SingleFlight[LoadedDeployment] = SingleFlight()
        self._opening: SingleFlight[tuple[SessionKey, tuple[OnnxSession, int]]] = SingleFlight()
        self._admitted: dict[UnitKey, uuid.UUID] = {}
        """Loads past their tenant's cap check and not finished: unit -> tenant id."""
        self._cancelled: set[UnitKey] = set()
        """Loads in flight whose unit was unloaded (its deployment deleted) meanwhile: dropped when they finish."""
        self._deleted: dict[uuid.UUID, None] = {}
        """Ids of deleted deployments, oldest first (at most ``_TOMBSTONES``): a late ``load`` of one is refused."""
        self._retired: dict[UnitKey, None] = {}
        """Units a newer revision of their deployment no longer uses, oldest first (at most ``_TOMBSTONES``): a late
        ``load`` of one (by a request that looked the deployment up before the change) is turned back with
        ``DeploymentUnloadedError``, so that the request looks the deployment up again instead of loading it."""

    def __len__(self) -> int:
        """Loaded units."""
        return len(self._loaded)

    @property
    def session_bytes(self) -> int:
        """Estimated memory of the open sessions (the size of their ONNX files)."""
        return sum(size for _session, size in self._sessions.values())

    @property
    def session_count(self) -> int:
        """Open sessions (units of one artifact and variant share one)."""
        return len(self._sessions)

    def loaded(self) -> list[LoadedDeployment]:
        """Every loaded unit."""
        return list(self._loaded.values())

    def units_of(self, deployment_id: uuid.UUID) -> list[LoadedDeployment]:
        """The loaded units of one deployment, in the order they loaded."""
        return [loaded for key, loaded in self._loaded.items() if key[0] == deployment_id]

    def get_loaded(self, unit: DeploymentSpec | UnitKey | uuid.UUID) -> LoadedDeployment | None:
        """The unit if it is loaded already: by spec (its ``unit``) or unit key. A bare deployment id gives the
        deployment's first loaded unit (for status pages; the data plane always asks by spec).
        """
        if isinstance(unit, DeploymentSpec):  # the data plane's lookup, once per request: no property call
            return self._loaded.get((unit.id, unit.model_version, unit.config))
        if isinstance(unit, uuid.UUID):
            return next((loaded for key, loaded in self._loaded.items() if key[0] == unit), None)
        return self._loaded.get(unit)

    def is_loading(self, deployment_id: uuid.UUID) -> bool:
        """Whether a load of one of the deployment's units is under way in this process."""
        return any(cast(UnitKey, key)[0] == deployment_id for key in self._loading.keys())

    async def load(self, spec: DeploymentSpec, model: ModelPlugin, *, tenant_cap: int = 0) -> LoadedDeployment:
        """The loaded unit of ``spec`` (``spec.unit``), loading it (once, however many callers ask at the same time)
        if needed.

        Args:
            spec: The deployment, or one route of it (``DeploymentSpec.for_route``).
            model: Its model plugin.
            tenant_cap: Most units of ``spec.tenant_id`` loaded or loading at once (0: no cap).

        Raises:
            NotFoundError: The deployment was deleted (before or while it loaded).
        """
        if spec.id in self._deleted:
            raise NotFoundError(f"deployment {spec.id} not found")
        key = spec.unit
        if key in self._retired:
            raise DeploymentUnloadedError(f"{spec.name} {spec.model_version}: replaced by a newer revision")
        loaded = self._loaded.get(key)
        if loaded is not None:
            return loaded
        return await self._loading.run(key, lambda: self._load(spec, model, tenant_cap))

    async def _load(self, spec: DeploymentSpec, model: ModelPlugin, tenant_cap: int) -> LoadedDeployment:
        """Load once; a failure is told to ``on_load`` (not a deletion meanwhile), a success in ``_open_deployment``.

        A version whose files are gone from the artifact store (the resolver's ``ModelNotFoundError``) fails the load
        as ``ModelNotReadyError`` (503): the deployment exists, and a 404 would read as if it did not.
        """
        try:
            return await self._open_deployment(spec, model, tenant_cap)
        except ModelNotFoundError as exc:
            missing = ModelNotReadyError(
                f"{spec.model_name} {spec.model_version} of deployment {spec.name!r} is missing from the artifact "
                f"store ({exc}): restore its files there, or move the deployment to another version"
            )
            if self._on_load is not None:
                await self._on_load(spec, missing)
            raise missing from exc
        except NotFoundError:
            raise  # the deployment was deleted (before or while it loaded)
        except Exception as exc:
            if self._on_load is not None:
                await self._on_load(spec, exc)
            raise

    async def _open_deployment(self, spec: DeploymentSpec, model: ModelPlugin, tenant_cap: int) -> LoadedDeployment:
        unit = spec.unit
        try:
            await self._admit(spec, tenant_cap)
            self._check_wanted(spec)
            key, report = await self._session_key(spec, model)
            self._check_wanted(spec)
            key, session = await self._session(key, model)
            if self._on_load is not None:
                # Told while the load is still admitted, so the tenant's cap counts it until it is in ``_loaded``.
                await self._on_load(spec, None)
            if unit in self._cancelled or spec.id in self._deleted:
                self._drop_session_if_unused(key)  # opened for a unit gone meanwhile: free it
                self._check_wanted(spec)
            config = spec.config
            if not session.on_gpu:
                config = msgspec.structs.replace(config, instances=served_instances(config, self._cpus))
            observer = self._observer_for(spec.model_name, spec.model_version) if self._observer_for else None
            loaded = LoadedDeployment(
                msgspec.structs.replace(spec, config=config), model, session, key, report, observer=observer
            )
            loaded.unit = unit
            self._loaded[unit] = loaded
        finally:
            self._admitted.pop(unit, None)
            self._cancelled.discard(unit)
        log.info(
            "loaded deployment %s (%s %s, %s) on %s",
            spec.name,
            spec.model_name,
            spec.model_version,
            spec.config.variant,
            loaded.session.providers[0],
        )
        freeze_new_modules()  # a load that exported its graph imported torch: keep it out of the collector's way
        await self._evict_over_budget(keep=key)
        return loaded

    def _check_wanted(self, spec: DeploymentSpec) -> None:
        """Stop a load whose unit was unloaded (or deployment deleted) since it started."""
        if spec.unit in self._cancelled or spec.id in self._deleted:
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
        """Wait for room under the tenant's cap of units: unload the tenant's least recently used loaded unit while
        its loaded and admitted ones would pass the cap; when only loads in flight fill it, wait for one to finish.
        Only loads already admitted are waited for, so two loads never wait for each other.
        """
        tenant_id = spec.tenant_id
        while tenant_cap:
            admitted = [k for k, t in self._admitted.items() if t == tenant_id]
            # A load that has just finished is in ``_loaded`` while its flight is still in ``_loading`` (the flight
            # forgets it in a callback, a turn of the loop later): it counts, but cannot be unloaded yet (unloading
            # waits for its flight), so it is waited for like an admitted one.
            mine = [d.unit for d in self._loaded.values() if d.spec.tenant_id == tenant_id]
            mine = [k for k in mine if k not in self._admitted]
            if len(admitted) + len(mine) < tenant_cap:
                break
            idle = [self._loaded[k] for k in mine if k not in self._loading]
            if idle:
                oldest = min(idle, key=lambda d: d.last_used)
                log.info(
                    "tenant %s has %d units loaded: unloading %s (%s)",
                    tenant_id,
                    tenant_cap,
                    oldest.spec.name,
                    oldest.spec.model_version,
                )
                await self.unload_unit(oldest.unit)
                continue
            flights = [f for f in map(self._loading.in_flight, admitted + mine) if f is not None]
            if flights:
                await asyncio.wait(flights, return_when=asyncio.FIRST_COMPLETED)
            else:  # the flights counted have ended and are being forgotten: let their callbacks run
                await asyncio.sleep(0)
        self._admitted[spec.unit] = tenant_id

    async def _evict_over_budget(self, keep: SessionKey) -> None:
        if not self._budget:
            return

        def last_used(key: SessionKey) -> float:
            return max((d.last_used for d in self._loaded.values() if d.session_key == key), default=0.0)

        for key in sorted((k for k in self._sessions if k != keep), key=last_used):
            if self.session_bytes <= self._budget:
                return
            users = [d.unit for d in self._loaded.values() if d.session_key == key]
            if any(unit in self._loading for unit in users):
                continue  # still finishing its load (its own eviction pass): unloading it here could wait on us
            log.info("memory budget exceeded: unloading %s", key[0])
            for unit in users:
                await self.unload_unit(unit)

    def _drop_session_if_unused(self, key: SessionKey) -> None:
        if all(other.session_key != key for other in self._loaded.values()):
            self._sessions.pop(key, None)

    def retire(self, unit: UnitKey) -> None:
        """Refuse loads of ``unit`` from now on (its deployment's new revision does not use it): see ``_retired``."""
        self._retired[unit] = None
        if len(self._retired) > _TOMBSTONES:
            del self._retired[next(iter(self._retired))]

    def revive(self, unit: UnitKey) -> None:
        """Allow loads of a retired unit again (a later revision, e.g. a rollback, uses it once more)."""
        self._retired.pop(unit, None)

    async def unload(self, deployment_id: uuid.UUID, *, deleted: bool = False) -> None:
        """Unload every unit of a deployment (``unload_unit``), those still loading included. ``deleted``: the
        deployment is gone for good; a later ``load`` of it is refused.
        """
        if deleted:
            self._deleted[deployment_id] = None
            if len(self._deleted) > _TOMBSTONES:
                del self._deleted[next(iter(self._deleted))]
        # Loads in flight (a flight may not be admitted yet: it waits for the tenant's cap) and loaded units. After a
        # deletion no new load starts (``load`` checks the tombstone before starting a flight), so one pass is all.
        units = [cast(UnitKey, k) for k in self._loading.keys() if cast(UnitKey, k)[0] == deployment_id]
        units += [k for k in self._loaded if k[0] == deployment_id]
        for unit in dict.fromkeys(units):
            await self.unload_unit(unit)

    async def unload_unit(self, unit: UnitKey) -> None:
        """Drain the unit's in-flight requests, then drop it (and its session if nothing else uses it). A unit still
        loading is dropped when its load finishes (its callers get ``NotFoundError``), and this waits for that.
        """
        flight = self._loading.in_flight(unit)
        if flight is not None:
            self._cancelled.add(unit)
            with contextlib.suppress(Exception):
                await asyncio.shield(flight)
            self._cancelled.discard(unit)
        loaded = self._loaded.pop(unit, None)
        if loaded is None:
            return
        await loaded.batcher.drain()
        self._drop_session_if_unused(loaded.session_key)

    async def close(self) -> None:
        """Drain and drop every unit (and those still loading, once loaded)."""
        for unit in [*self._loaded, *self._admitted]:
            await self.unload_unit(unit)
