"""Deployment lookups for the request path, cached briefly so a prediction does not read the database."""

from __future__ import annotations

import time
import uuid

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cloudeasyml.domain.deployments import DeploymentService, to_spec
from cloudeasyml.plugins.catalog import ModelCatalog
from cloudeasyml.runtime.registry import DeploymentSpec
from cloudeasyml.runtime.resolver import ArtifactResolver
from cloudeasyml.single_flight import SingleFlight

__all__ = ("DeploymentDirectory",)


class DeploymentDirectory:
    """``(tenant, id)`` and ``(tenant, name)`` → ``DeploymentSpec``. The tenant is part of every key and every
    query, so one tenant can never reach another's deployment through the cache. Entries live
    ``cache_seconds``; a deletion drops them at once (through another process: when Redis tells, see
    ``cloudeasyml.domain.broadcast``).
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        catalog: ModelCatalog,
        resolver: ArtifactResolver,
        *,
        cache_seconds: float = 5.0,
    ) -> None:
        self._sessions = sessions
        self._catalog = catalog
        self._resolver = resolver
        self._cache_seconds = cache_seconds
        self._by_id: dict[tuple[uuid.UUID, uuid.UUID], tuple[DeploymentSpec, float]] = {}
        self._by_name: dict[tuple[uuid.UUID, str], tuple[DeploymentSpec, float]] = {}
        self._loads: SingleFlight[DeploymentSpec] = SingleFlight()

    async def by_id(self, tenant_id: uuid.UUID, deployment_id: uuid.UUID) -> DeploymentSpec:
        """The tenant's deployment, or ``NotFoundError``."""
        hit = self._by_id.get((tenant_id, deployment_id))
        if hit is not None and time.monotonic() - hit[1] <= self._cache_seconds:
            return hit[0]
        return await self._loads.run(
            ("id", tenant_id, deployment_id), lambda: self._load_by_id(tenant_id, deployment_id)
        )

    async def by_name(self, tenant_id: uuid.UUID, name: str) -> DeploymentSpec:
        """The tenant's deployment called ``name``, or ``NotFoundError``."""
        hit = self._by_name.get((tenant_id, name))
        if hit is not None and time.monotonic() - hit[1] <= self._cache_seconds:
            return hit[0]
        return await self._loads.run(("name", tenant_id, name), lambda: self._load_by_name(tenant_id, name))

    async def _load_by_id(self, tenant_id: uuid.UUID, deployment_id: uuid.UUID) -> DeploymentSpec:
        async with self._sessions() as session:
            row = await self._service(session, tenant_id).get(deployment_id)
        return self._remember(to_spec(row))

    async def _load_by_name(self, tenant_id: uuid.UUID, name: str) -> DeploymentSpec:
        async with self._sessions() as session:
            row = await self._service(session, tenant_id).get_by_name(name)
        return self._remember(to_spec(row))

    def forget(self, tenant_id: uuid.UUID, deployment_id: uuid.UUID, name: str) -> None:
        """Drop a deployment (after it was deleted)."""
        self._by_id.pop((tenant_id, deployment_id), None)
        self._by_name.pop((tenant_id, name), None)

    def _service(self, session: AsyncSession, tenant_id: uuid.UUID) -> DeploymentService:
        return DeploymentService(session, tenant_id, self._catalog, self._resolver)

    def _remember(self, spec: DeploymentSpec) -> DeploymentSpec:
        now = time.monotonic()
        self._by_id[(spec.tenant_id, spec.id)] = (spec, now)
        self._by_name[(spec.tenant_id, spec.name)] = (spec, now)
        return spec
