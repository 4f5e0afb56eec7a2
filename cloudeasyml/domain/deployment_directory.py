"""Deployment lookups for the request path, cached briefly so a prediction does not read the database."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cloudeasyml.domain.deployments import DeploymentService, to_spec
from cloudeasyml.domain.principal import Principal
from cloudeasyml.plugins.catalog import ModelCatalog
from cloudeasyml.runtime.registry import DeploymentSpec
from cloudeasyml.runtime.resolver import ArtifactResolver
from cloudeasyml.single_flight import SingleFlight
from cloudeasyml.ttl_cache import TTLCache

__all__ = ("DeploymentDirectory",)

_SEEN_SECONDS = 86_400.0
"""How long the directory remembers the newest revision it saw of a deployment (to notice a change on its next read
after the lookup expired)."""


class DeploymentDirectory:
    """A caller's deployment by id or by name. The caller's tenant is part of every key and every query, so one
    tenant can never reach another's deployment through the cache. Entries live ``cache_seconds``, at most
    ``max_entries`` by id and as many by name (least recently used forgotten first); a deletion drops them at once
    (through another process: when Redis tells, see ``cloudeasyml.domain.broadcast``). A deployment's new revision
    replaces its entry at once where it was made (``remember``); elsewhere when Redis tells, or when the entry expires
    and the next read finds the newer revision (``watch``).
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        catalog: ModelCatalog,
        resolver: ArtifactResolver,
        *,
        cache_seconds: float = 5.0,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._catalog = catalog
        self._resolver = resolver
        self._by_id: TTLCache[tuple[uuid.UUID, uuid.UUID], DeploymentSpec] = TTLCache(
            ttl_seconds=cache_seconds, max_entries=max_entries, clock=clock
        )
        self._by_name: TTLCache[tuple[uuid.UUID, str], DeploymentSpec] = TTLCache(
            ttl_seconds=cache_seconds, max_entries=max_entries, clock=clock
        )
        self._loads: SingleFlight[DeploymentSpec] = SingleFlight()
        self._seen: TTLCache[tuple[uuid.UUID, uuid.UUID], int] = TTLCache(
            ttl_seconds=_SEEN_SECONDS, max_entries=max_entries, clock=clock
        )
        """The newest revision seen of each deployment, kept well past its lookup's expiry."""
        self._on_new_revision: Callable[[DeploymentSpec], None] | None = None

    async def by_id(self, caller: Principal, deployment_id: uuid.UUID) -> DeploymentSpec:
        """The caller's tenant's deployment, or ``NotFoundError``."""
        tenant_id = caller.tenant_id
        hit = self._by_id.get((tenant_id, deployment_id))
        if hit is not None:
            return hit
        return await self._loads.run(
            ("id", tenant_id, deployment_id), lambda: self._load_by_id(tenant_id, deployment_id)
        )

    async def by_name(self, caller: Principal, name: str) -> DeploymentSpec:
        """The caller's tenant's deployment called ``name``, or ``NotFoundError``."""
        tenant_id = caller.tenant_id
        hit = self._by_name.get((tenant_id, name))
        if hit is not None:
            return hit
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
        """Drop a deployment (after it was deleted, or changed in another process)."""
        self._by_id.discard((tenant_id, deployment_id))
        self._by_name.discard((tenant_id, name))

    def remember(self, spec: DeploymentSpec) -> None:
        """Serve ``spec`` from the cache from now on (a deployment's new revision, just stored)."""
        self._remember(spec, read=False)

    def watch(self, on_new_revision: Callable[[DeploymentSpec], None]) -> None:
        """Call ``on_new_revision(spec)`` when a lookup reads a newer revision of a deployment than this directory
        has seen: a change made by another process that was not told (no Redis), found when the old lookup expired.
        """
        self._on_new_revision = on_new_revision

    async def read(self, tenant_id: uuid.UUID, deployment_id: uuid.UUID) -> DeploymentSpec:
        """A deployment as the database has it now, not cached (``NotFoundError`` if it is gone): for a change told
        by another process, warmed before ``remember`` serves it.
        """
        async with self._sessions() as session:
            row = await self._service(session, tenant_id).get(deployment_id)
        return to_spec(row)

    def _service(self, session: AsyncSession, tenant_id: uuid.UUID) -> DeploymentService:
        return DeploymentService(session, tenant_id, self._catalog, self._resolver)

    def _remember(self, spec: DeploymentSpec, *, read: bool = True) -> DeploymentSpec:
        key = (spec.tenant_id, spec.id)
        seen = self._seen.get(key)
        if seen is not None and seen > spec.revision:
            # A read that began before a change was stored and ended after it: it must not put the old revision back
            # (it would serve, and load the old units again, until the entry expires).
            cached = self._by_id.get(key)
            return cached if cached is not None else spec
        self._by_id.put(key, spec)
        self._by_name.put((spec.tenant_id, spec.name), spec)
        self._seen.put(key, spec.revision)
        if read and seen is not None and spec.revision > seen and self._on_new_revision is not None:
            self._on_new_revision(spec)
        return spec
