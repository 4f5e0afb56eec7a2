"""A tenant's deployments."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, delete, get, post
from litestar.params import Body, FromPath
from sqlalchemy.ext.asyncio import AsyncSession

from cloudeasyml.api.auth import requires_scope
from cloudeasyml.api.deps import MANAGEMENT, WRITES, Injected
from cloudeasyml.api.schemas import DeploymentCreate, DeploymentRead
from cloudeasyml.db.models import Deployment
from cloudeasyml.domain.deployment_status import status_of
from cloudeasyml.domain.deployments import DeploymentRequest, DeploymentService, to_spec
from cloudeasyml.domain.principal import Principal
from cloudeasyml.services import Services

__all__ = ("DeploymentController",)


def _read(services: Services, row: Deployment) -> DeploymentRead:
    loaded = services.registry.get_loaded(row.id)
    report = loaded.variant_report if loaded is not None else None
    status, reason = status_of(row, services.registry)
    return DeploymentRead.of(row, loaded=loaded is not None, status=status, status_reason=reason, variant_report=report)


class DeploymentController(Controller):
    """Create, list, read and delete the caller's tenant's deployments (``deployments`` is scoped to it: see
    ``api.deps``).
    """

    path = "/deployments"
    tags = ["Deployments"]
    dependencies = MANAGEMENT

    @post("/", summary="Create a deployment", guards=[requires_scope("deployments:write")], dependencies=WRITES)
    async def create_deployment(
        self,
        deployments: Injected[DeploymentService],
        caller: Injected[Principal],
        db_session: Injected[AsyncSession],
        services: Injected[Services],
        data: Annotated[DeploymentCreate, Body()],
    ) -> DeploymentRead:
        """Deploy an installed model; ``config`` overrides its serving defaults. With ``eagerLoad`` the model
        is loaded before this answers.
        """
        row = await deployments.create(
            DeploymentRequest(
                model_name=data.model_name,
                name=data.name,
                model_version=data.model_version,
                config=data.config,
                traffic=data.traffic,
            )
        )
        await db_session.commit()  # the deployment exists before its model loads, and stays if the load fails
        spec = to_spec(row)
        if spec.config.eager_load:
            await services.inference.load(spec, services.catalog.get(spec.model_name), plan=caller.plan)
        return _read(services, row)

    @get("/", summary="List deployments", guards=[requires_scope("deployments:read")])
    async def list_deployments(
        self, deployments: Injected[DeploymentService], services: Injected[Services]
    ) -> list[DeploymentRead]:
        """The caller's tenant's deployments, newest first."""
        return [_read(services, row) for row in await deployments.list()]

    @get("/{deployment_id:uuid}", summary="Read a deployment", guards=[requires_scope("deployments:read")])
    async def get_deployment(
        self, deployments: Injected[DeploymentService], services: Injected[Services], deployment_id: FromPath[uuid.UUID]
    ) -> DeploymentRead:
        """One deployment; another tenant's is a 404."""
        return _read(services, await deployments.get(deployment_id))

    @delete(
        "/{deployment_id:uuid}",
        summary="Delete a deployment",
        guards=[requires_scope("deployments:write")],
        dependencies=WRITES,
    )
    async def delete_deployment(
        self,
        deployments: Injected[DeploymentService],
        db_session: Injected[AsyncSession],
        services: Injected[Services],
        deployment_id: FromPath[uuid.UUID],
    ) -> None:
        """Delete a deployment: in-flight requests finish first, then the model is unloaded. Usage stays."""
        row = await deployments.delete(deployment_id)
        await db_session.commit()  # gone from the database before the caches forget it and the model unloads
        await services.deployment_deleted(to_spec(row))
