"""Loaded deployments: one batcher each, over onnxruntime sessions shared by deployments of one artifact."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from cloudeasyml.plugins.model import ModelPlugin
from cloudeasyml.runtime.batcher import Batcher, BatchResult
from cloudeasyml.runtime.config import ServingConfig, session_threads
from cloudeasyml.runtime.resolver import ArtifactResolver
from cloudeasyml.runtime.session import OnnxSession
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


SessionKey = tuple[Path, str, str, int]
"""(artifact path, variant, device, intra-op threads): deployments with equal keys share one session."""


class LoadedDeployment:
    """A deployment ready to serve: its model, session and batcher."""

    def __init__(
        self,
        spec: DeploymentSpec,
        model: ModelPlugin,
        session: OnnxSession,
        session_key: SessionKey,
        variant_report: dict[str, Any] | None = None,
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
            cost_of=model.cost_units,
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

    async def predict(self, items: list[Any]) -> BatchResult:
        """Queue one request's items into the deployment's batcher."""
        self.last_used = time.monotonic()
        return await self.batcher.submit(items)


class ServingRegistry:
    """Loads deployments lazily and shares sessions by artifact. When the sessions' estimated memory (their
    artifacts' size) passes ``memory_budget_bytes``, the least recently used ones are unloaded, after their
    in-flight requests drain; their deployments load again on their next request.
    """

    def __init__(self, resolver: ArtifactResolver, *, memory_budget_bytes: int = 0) -> None:
        self.resolver = resolver
        self._budget = memory_budget_bytes
        self._loaded: dict[uuid.UUID, LoadedDeployment] = {}
        self._sessions: dict[SessionKey, tuple[OnnxSession, int]] = {}
        self._loading: SingleFlight[LoadedDeployment] = SingleFlight()

    def __len__(self) -> int:
        return len(self._loaded)

    @property
    def session_bytes(self) -> int:
        """Estimated memory of the open sessions (the size of their ONNX files)."""
        return sum(size for _session, size in self._sessions.values())

    def loaded(self) -> list[LoadedDeployment]:
        """Every loaded deployment."""
        return list(self._loaded.values())

    def get_loaded(self, deployment_id: uuid.UUID) -> LoadedDeployment | None:
        """The deployment if it is loaded already."""
        return self._loaded.get(deployment_id)

    async def load(self, spec: DeploymentSpec, model: ModelPlugin) -> LoadedDeployment:
        """The loaded deployment, loading it (once, however many callers ask at the same time) if needed."""
        loaded = self._loaded.get(spec.id)
        if loaded is not None:
            return loaded
        return await self._loading.run(spec.id, lambda: self._load(spec, model))

    async def _load(self, spec: DeploymentSpec, model: ModelPlugin) -> LoadedDeployment:
        config = spec.config
        path = await asyncio.to_thread(self.resolver.ensure, model, spec.model_version)
        report = None
        if config.variant != "float":  # variants run on the CPU only
            path, made = await asyncio.to_thread(ensure_variant, model, path, config.variant)
            report = msgspec.to_builtins(made)
        device = config.device if config.variant == "float" else "cpu"
        threads = session_threads(config)
        key: SessionKey = (path, config.variant, device, threads)
        if key not in self._sessions:
            session = await asyncio.to_thread(
                open_for_serving, path, config.variant, device=device, intra_op_threads=threads
            )
            # Warm up: the first run allocates and plans; a user should not pay for it.
            await asyncio.to_thread(session.run, model.to_arrays(model.example_inputs()))
            self._sessions[key] = (session, path.stat().st_size)
        loaded = LoadedDeployment(spec, model, self._sessions[key][0], key, report)
        self._loaded[spec.id] = loaded
        log.info(
            "loaded deployment %s (%s %s) on %s",
            spec.name,
            spec.model_name,
            spec.model_version,
            loaded.session.providers[0],
        )
        await self._evict_over_budget(keep=key)
        return loaded

    async def _evict_over_budget(self, keep: SessionKey) -> None:
        if not self._budget:
            return

        def last_used(key: SessionKey) -> float:
            return max((d.last_used for d in self._loaded.values() if d.session_key == key), default=0.0)

        for key in sorted((k for k in self._sessions if k != keep), key=last_used):
            if self.session_bytes <= self._budget:
                return
            log.info("memory budget exceeded: unloading %s", key[0])
            for deployment_id in [d.spec.id for d in self._loaded.values() if d.session_key == key]:
                await self.unload(deployment_id)

    async def unload(self, deployment_id: uuid.UUID) -> None:
        """Drain the deployment's in-flight requests, then drop it (and its session if nothing else uses it)."""
        loaded = self._loaded.pop(deployment_id, None)
        if loaded is None:
            return
        await loaded.batcher.drain()
        if all(other.session_key != loaded.session_key for other in self._loaded.values()):
            self._sessions.pop(loaded.session_key, None)

    async def close(self) -> None:
        """Drain and drop every deployment."""
        for deployment_id in list(self._loaded):
            await self.unload(deployment_id)
