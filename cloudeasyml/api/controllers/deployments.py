"""A tenant's deployments."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, delete, get, post
from litestar.params import Body, FromPath

from cloudeasyml.api.auth import requires_scope
from cloudeasyml.api.schemas import DeploymentCreate, DeploymentRead
from cloudeasyml.db.models import Deployment
from cloudeasyml.domain.deployments import DeploymentRequest, DeploymentService, to_spec
from cloudeasyml.domain.principal import Principal
from cloudeasyml.services import Services

__all__ = ("DeploymentController",)


def _service(services: Services, session: Any, principal: Principal) -> DeploymentService:
    return DeploymentService(
        session, principal.tenant_id, services.catalog, services.resolver, limits=services.settings.limits
    )


def _read(services: Services, row: Deployment) -> DeploymentRead:
    loaded = services.registry.get_loaded(row.id)
    report = loaded.variant_report if loaded is not None else None
    return DeploymentRead.of(row, loaded=loaded is not None, variant_report=report)


class DeploymentController(Controller):
    """Create, list, read and delete the caller's tenant's deployments."""

    path = "/deployments"
    tags = ["Deployments"]

    @post("/", summary="Create a deployment", guards=[requires_scope("deployments:write")])
    async def create_deployment(
        self, request: Request[Principal, Any, Any], data: Annotated[DeploymentCreate, Body()]
    ) -> DeploymentRead:
        """Deploy an installed model; ``config`` overrides its serving defaults. With ``eagerLoad`` the model
        is loaded before this answers.
        """
        services: Services = request.app.state.services
        async with services.sessions.begin() as session:
            row = await _service(services, session, request.user).create(
                DeploymentRequest(
                    model_name=data.model_name, name=data.name, model_version=data.model_version, config=data.config
                )
            )
        spec = to_spec(row)
        if spec.config.eager_load:
            await services.inference.load(spec, services.catalog.get(spec.model_name), plan=request.user.plan)
        return _read(services, row)

    @get("/", summary="List deployments", guards=[requires_scope("deployments:read")])
    async def list_deployments(self, request: Request[Principal, Any, Any]) -> list[DeploymentRead]:
        """The caller's tenant's deployments, newest first."""
        services: Services = request.app.state.services
        async with services.sessions() as session:
            rows = await _service(services, session, request.user).list()
        return [_read(services, row) for row in rows]

    @get("/{deployment_id:uuid}", summary="Read a deployment", guards=[requires_scope("deployments:read")])
    async def get_deployment(
        self, request: Request[Principal, Any, Any], deployment_id: FromPath[uuid.UUID]
    ) -> DeploymentRead:
        """One deployment; another tenant's is a 404."""
        services: Services = request.app.state.services
        async with services.sessions() as session:
            row = await _service(services, session, request.user).get(deployment_id)
        return _read(services, row)

    @delete("/{deployment_id:uuid}", summary="Delete a deployment", guards=[requires_scope("deployments:write")])
    async def delete_deployment(
        self, request: Request[Principal, Any, Any], deployment_id: FromPath[uuid.UUID]
    ) -> None:
        """Delete a deployment: in-flight requests finish first, then the model is unloaded. Usage stays."""
        services: Services = request.app.state.services
        async with services.sessions.begin() as session:
            row = await _service(services, session, request.user).delete(deployment_id)
        await services.deployment_deleted(to_spec(row))
