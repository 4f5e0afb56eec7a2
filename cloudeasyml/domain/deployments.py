"""A tenant's deployments: create, list, get, delete. Every query filters on ``tenant_id``."""

from __future__ import annotations

import re
import secrets
import uuid
from typing import Any

import msgspec
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cloudeasyml.core.clock import utc_now
from cloudeasyml.core.serving import ServingConfig
from cloudeasyml.core.traffic import TrafficRoute, check_traffic, single_route
from cloudeasyml.db.models import Deployment, DeploymentRevision, Tenant
from cloudeasyml.domain.deployment_status import PENDING
from cloudeasyml.domain.webhooks.events import deployment_data, emit
from cloudeasyml.errors import ConflictError, InvalidInputError, NotFoundError, TenantLimitReachedError
from cloudeasyml.plugins.catalog import ModelCatalog
from cloudeasyml.plugins.model import ModelPlugin
from cloudeasyml.runtime.registry import DeploymentSpec
from cloudeasyml.runtime.resolver import ArtifactResolver
from cloudeasyml.settings import LimitsSettings

__all__ = (
    "DeploymentRequest",
    "DeploymentService",
    "first_revision",
    "merge_config",
    "stored_traffic",
    "to_spec",
    "traffic_of",
)

DEPLOYMENT_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
"""A whole name (``fullmatch``: ``$`` would let a final newline through)."""


class DeploymentRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What a new deployment should be; ``config`` overrides the model's serving defaults field by field."""

    model_name: str
    name: str | None = None
    model_version: str | None = None
    config: dict[str, Any] | None = None
    traffic: list[TrafficRoute] | None = None
    """Several versions at once (see ``TrafficRoute``); None: ``model_version`` (or the model's own) serves all."""


def traffic_of(row: Deployment | DeploymentRevision) -> tuple[TrafficRoute, ...]:
    """A deployment row's (or revision's) routes: its stored split, or its one version taking all the traffic."""
    if not row.traffic:
        return single_route(row.model_version)
    return tuple(msgspec.convert(row.traffic, list[TrafficRoute]))


def stored_traffic(routes: tuple[TrafficRoute, ...]) -> list[dict[str, Any]] | None:
    """The ``traffic`` column's value for a split: None when one version serves all of it live (whatever the
    variant, the deployment's ``config.variant``), else the routes as camelCase JSON.
    """
    if routes == single_route(routes[0].model_version):
        return None
    return msgspec.to_builtins(list(routes))


def first_revision(row: Deployment, created_by_key_id: str | None) -> DeploymentRevision:
    """Revision 1 of a deployment just created: equal to its row."""
    return DeploymentRevision(
        deployment_id=row.id,
        tenant_id=row.tenant_id,
        number=1,
        model_version=row.model_version,
        config=row.config,
        traffic=row.traffic,
        changes={},
        action="create",
        created_by_key_id=created_by_key_id,
        created_at=row.created_at,
    )


def to_spec(row: Deployment) -> DeploymentSpec:
    """The runtime's view of a deployment row."""
    return DeploymentSpec(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        model_name=row.model_name,
        model_version=row.model_version,
        config=msgspec.convert(row.config, ServingConfig),
        traffic=traffic_of(row),
        revision=row.revision,
    )


def merge_config(defaults: ServingConfig, overrides: dict[str, Any] | None) -> ServingConfig:
    """The model's defaults with the request's camelCase overrides applied and validated."""
    merged = msgspec.to_builtins(defaults)
    merged.update(overrides or {})
    try:
        config = msgspec.convert(merged, ServingConfig)
    except msgspec.ValidationError as exc:
        raise InvalidInputError(f"invalid config: {exc}") from exc
    _check_variant(config)
    return config


def _check_variant(config: ServingConfig) -> None:
    """Refuse a variant with device ``cuda``: variants run on the CPU.

    int8's integer kernels are CPU kernels, and the offline-optimised graph is optimised for the CPU execution
    provider (onnxruntime's offline mode expects the graph to be served by the provider it was made for).
    """
    if config.variant != "float" and config.device == "cuda":
        raise InvalidInputError(
            f'invalid config: variant "{config.variant}" runs on the CPU, not with device "cuda" - at `$.variant`; '
            f'use device "cpu" or "auto" with it, or variant "float" on CUDA'
        )


class DeploymentService:
    """One tenant's deployments. ``limits`` (the settings' per-plan limits) bound how many it may create; None (a
    reader, or the operator's CLI) sets no bound.
    """

    def __init__(
        self,
        session: AsyncSession,
        tenant_id: uuid.UUID,
        catalog: ModelCatalog,
        resolver: ArtifactResolver,
        *,
        limits: LimitsSettings | None = None,
    ) -> None:
        self._session = session
        self._tenant_id = tenant_id
        self._catalog = catalog
        self._resolver = resolver
        self._limits = limits

    async def create(self, request: DeploymentRequest, *, created_by_key_id: str | None = None) -> Deployment:
        """Validate the model, version, name and config, then insert it with its revision 1 (made by
        ``created_by_key_id``); a duplicate name is a conflict, and so is one deployment more than the tenant's plan
        allows (``TenantLimitReachedError``).
        """
        model = self._catalog.get(request.model_name).model
        traffic = self.check_traffic(model, request.traffic) if request.traffic else None
        version = traffic[0].model_version if traffic else request.model_version or model.version
        if traffic and request.model_version and request.model_version != version:
            raise InvalidInputError(
                f"modelVersion {request.model_version!r} is not the first live route of `traffic` ({version!r}); "
                "leave it out or make it equal"
            )
        self._resolver.check_version(model, version)
        name = request.name or f"{model.name}-{secrets.token_hex(3)}"
        if not DEPLOYMENT_NAME.fullmatch(name):
            raise InvalidInputError(f"name {name!r} must match {DEPLOYMENT_NAME.pattern}")
        config = merge_config(model.serving, request.config)
        await self._check_room()
        row = Deployment(
            tenant_id=self._tenant_id,
            name=name,
            model_name=model.name,
            model_version=version,
            config=msgspec.to_builtins(config),
            traffic=stored_traffic(traffic) if traffic else None,
            status=PENDING,
            created_at=utc_now(),
            revision=1,
        )
        self._session.add(row)
        try:
            await self._session.flush()
        except IntegrityError as exc:
            raise ConflictError(f"a deployment named {name!r} already exists") from exc
        self._session.add(first_revision(row, created_by_key_id))
        await self._session.flush()
        return row

    def model_of(self, row: Deployment) -> ModelPlugin:
        """The deployment's installed model (``ModelNotFoundError`` if it was uninstalled since)."""
        return self._catalog.get(row.model_name).model

    def check_version(self, model: ModelPlugin, version: str) -> None:
        """``ModelNotFoundError`` unless ``version`` of ``model`` is installed (shipped or trained)."""
        self._resolver.check_version(model, version)

    def check_traffic(self, model: ModelPlugin, routes: list[TrafficRoute]) -> tuple[TrafficRoute, ...]:
        """Validate a split (``core.traffic.check_traffic``'s rules, and every version installed for the model);
        returns it with the live routes first (the first live route is the deployment's ``model_version``).
        """
        try:
            check_traffic(routes)
        except ValueError as exc:
            raise InvalidInputError(f"invalid traffic: {exc}") from exc
        for route in routes:
            self._resolver.check_version(model, route.model_version)
        return tuple(sorted(routes, key=lambda route: route.mode != "live"))

    async def _check_room(self) -> None:
        """Refuse a deployment past the tenant's ``max_deployments``. The no-op UPDATE comes first: it takes the
        tenant row's lock (PostgreSQL) or the database's write lock (SQLite) until the transaction ends, so that
        concurrent creations by one tenant count one after another instead of all seeing room for one more.
        """
        if self._limits is None:
            return
        plan = await self._session.scalar(
            update(Tenant).where(Tenant.id == self._tenant_id).values(plan=Tenant.plan).returning(Tenant.plan)
        )
        most = self._limits.for_plan(plan or "default").max_deployments
        if not most:
            return
        count = await self._session.scalar(
            select(func.count()).select_from(Deployment).where(Deployment.tenant_id == self._tenant_id)
        )
        if (count or 0) >= most:
            raise TenantLimitReachedError(
                f"the tenant has {count} deployments, the most its plan {plan!r} allows; delete one first"
            )

    async def list(self) -> list[Deployment]:
        """The tenant's deployments, newest first."""
        result = await self._session.scalars(
            select(Deployment).where(Deployment.tenant_id == self._tenant_id).order_by(Deployment.created_at.desc())
        )
        return list(result)

    async def get(self, deployment_id: uuid.UUID) -> Deployment:
        """One of the tenant's deployments; another tenant's is reported as not found."""
        row = await self._session.scalar(
            select(Deployment).where(Deployment.tenant_id == self._tenant_id, Deployment.id == deployment_id)
        )
        if row is None:
            raise NotFoundError(f"deployment {deployment_id} not found")
        return row

    async def get_by_name(self, name: str) -> Deployment:
        """One of the tenant's deployments by name."""
        row = await self._session.scalar(
            select(Deployment).where(Deployment.tenant_id == self._tenant_id, Deployment.name == name)
        )
        if row is None:
            raise NotFoundError(f"deployment {name!r} not found")
        return row

    async def delete(self, deployment_id: uuid.UUID) -> Deployment:
        """Delete one of the tenant's deployments (its usage records stay), with a ``deployment.deleted`` event in the
        same transaction.
        """
        row = await self.get(deployment_id)
        data = deployment_data(row.id, row.name, row.model_name, row.model_version)
        await emit(self._session, self._tenant_id, "deployment.deleted", data)
        await self._session.delete(row)
        await self._session.flush()
        return row
