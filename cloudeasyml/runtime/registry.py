"""Loaded deployments: one batcher each, over onnxruntime sessions shared by deployments of one artifact."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from cloudeasyml.plugins.model import ModelPlugin
from cloudeasyml.runtime.batcher import Batcher, BatchResult
from cloudeasyml.runtime.config import ServingConfig
from cloudeasyml.runtime.resolver import ArtifactResolver
from cloudeasyml.runtime.session import OnnxSession, open_session

__all__ = ("DeploymentSpec", "LoadedDeployment", "ServingRegistry")

log = logging.getLogger(__name__)


class DeploymentSpec(msgspec.Struct, frozen=True):
    """What the runtime needs to know of a deployment (the runtime never reads the database)."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    model_name: str
    model_version: str
    config: ServingConfig


class LoadedDeployment:
    """A deployment ready to serve: its model, session and batcher."""

    def __init__(self, spec: DeploymentSpec, model: ModelPlugin, session: OnnxSession) -> None:
        self.spec = spec
        self.model = model
        self.session = session
        config = spec.config
        self.batcher = Batcher(
            self._run_batch,
            max_batch_size=config.max_batch_size,
            max_batch_delay_ms=config.max_batch_delay_ms,
            instances=config.instances,
            max_queue_items=config.max_queue_items,
            timeout_ms=config.timeout_ms,
        )

    @property
    def on_gpu(self) -> bool:
        """Whether the session runs on CUDA."""
        return self.session.on_gpu

    def _run_batch(self, items: list[Any]) -> list[Any]:
        arrays = self.model.to_arrays(items)
        outputs = self.session.run(arrays)
        return list(self.model.from_outputs(outputs))

    def run_arrays(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run raw named tensors (the V2 protocol path), bypassing the plugin's pre/post-processing."""
        return self.session.run(arrays)

    async def predict(self, items: list[Any]) -> BatchResult:
        """Queue one request's items into the deployment's batcher."""
        return await self.batcher.submit(items)


class ServingRegistry:
    """Loads deployments lazily, shares sessions by artifact, and unloads deployments after draining them."""

    def __init__(self, resolver: ArtifactResolver) -> None:
        self.resolver = resolver
        self._loaded: dict[uuid.UUID, LoadedDeployment] = {}
        self._sessions: dict[tuple[Path, str, int], OnnxSession] = {}
        self._loading: dict[uuid.UUID, asyncio.Task[LoadedDeployment]] = {}

    def __len__(self) -> int:
        return len(self._loaded)

    def get_loaded(self, deployment_id: uuid.UUID) -> LoadedDeployment | None:
        """The deployment if it is loaded already."""
        return self._loaded.get(deployment_id)

    async def load(self, spec: DeploymentSpec, model: ModelPlugin) -> LoadedDeployment:
        """The loaded deployment, loading it (once, however many callers ask at the same time) if needed."""
        loaded = self._loaded.get(spec.id)
        if loaded is not None:
            return loaded
        task = self._loading.get(spec.id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load(spec, model))
            self._loading[spec.id] = task
            task.add_done_callback(lambda _t: self._loading.pop(spec.id, None))
        return await asyncio.shield(task)

    async def _load(self, spec: DeploymentSpec, model: ModelPlugin) -> LoadedDeployment:
        path = await asyncio.to_thread(self.resolver.ensure, model, spec.model_version)
        key = (path, spec.config.device, spec.config.intra_op_threads)
        session = self._sessions.get(key)
        if session is None:
            session = await asyncio.to_thread(
                open_session, path, device=spec.config.device, intra_op_threads=spec.config.intra_op_threads
            )
            # Warm up: the first run allocates and plans; a user should not pay for it.
            await asyncio.to_thread(session.run, model.to_arrays(model.example_inputs()))
            self._sessions[key] = session
        loaded = LoadedDeployment(spec, model, session)
        self._loaded[spec.id] = loaded
        log.info("loaded deployment %s (%s %s) on %s", spec.name, spec.model_name, spec.model_version, session.providers[0])
        return loaded

    async def unload(self, deployment_id: uuid.UUID) -> None:
        """Drain the deployment's in-flight requests, then drop it (and its session if nothing else uses it)."""
        loaded = self._loaded.pop(deployment_id, None)
        if loaded is None:
            return
        await loaded.batcher.drain()
        if all(other.session is not loaded.session for other in self._loaded.values()):
            self._sessions = {k: s for k, s in self._sessions.items() if s is not loaded.session}

    async def close(self) -> None:
        """Drain and drop every deployment."""
        for deployment_id in list(self._loaded):
            await self.unload(deployment_id)
