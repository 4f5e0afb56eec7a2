"""A tenant's deployments, and their revisions (change, roll back, promote, abort)."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, delete, get, patch, post
from litestar.params import Body, FromPath
from sqlalchemy.ext.asyncio import AsyncSession

from cloudeasyml.api.auth import requires_scope
from cloudeasyml.api.deps import MANAGEMENT, WRITES, Injected
from cloudeasyml.api.schemas import (
    DeploymentCreate,
    DeploymentRead,
    DeploymentUpdate,
    RevisionRead,
    RollbackRequest,
    RouteChoice,
)
from cloudeasyml.db.models import Deployment
from cloudeasyml.domain.audit import AuditTrail, created, deleted
from cloudeasyml.domain.deployment_status import status_of
from cloudeasyml.domain.deployments import DeploymentRequest, DeploymentService, to_spec
from cloudeasyml.domain.principal import Principal
from cloudeasyml.domain.revisions import DeploymentChange, RevisionPlan, RevisionService
from cloudeasyml.services import Services

__all__ = ("DeploymentController",)

_WRITE = requires_scope("deployments:write")
_AUDIT_ACTIONS = {
    "update": "deployment.updated",
    "rollback": "deployment.rolled_back",
    "promote": "deployment.promoted",
    "abort": "deployment.aborted",
}
_READ = requires_scope("deployments:read")


def _read(services: Services, row: Deployment) -> DeploymentRead:
    loaded = services.registry.get_loaded(row.id)
    report = loaded.variant_report if loaded is not None else None
    status, reason = status_of(row, services.registry)
    return DeploymentRead.of(row, loaded=loaded is not None, status=status, status_reason=reason, variant_report=report)


async def _roll_out(
    services: Services,
    deployments: DeploymentService,
    revisions: RevisionService,
    db_session: AsyncSession,
    caller: Principal,
    audit: AuditTrail,
    deployment_id: uuid.UUID,
    plan: RevisionPlan | None,
) -> DeploymentRead:
    """Make ``plan`` the deployment's new revision: warm its units, store it, switch, drain the old units. No plan
    (nothing would change): the deployment as it is, and no revision.
    """
    row = await deployments.get(deployment_id)
    if plan is None:
        return _read(services, row)
    new = plan.spec_after(to_spec(row))
    # No transaction stays open while models load (SQLite would hold its read snapshot, PostgreSQL a connection).
    await db_session.commit()
    warmed = await services.rollout.prepare(new, plan=caller.plan)
    try:
        row = await revisions.apply(plan, caller.key_id)
        changes = {**plan.changes, "revision": {"from": plan.base, "to": row.revision}}
        audit.record(_AUDIT_ACTIONS.get(plan.action, f"deployment.{plan.action}"), "deployment", row.id, changes)
        await db_session.commit()
    except BaseException:
        await services.rollout.discard(warmed)
        raise
    await services.deployment_changed(to_spec(row), plan=caller.plan)
    return _read(services, row)


def _audited(row: Deployment) -> dict[str, object]:
    """What the audit log keeps of a deployment created or deleted."""
    return {
        "name": row.name,
        "modelName": row.model_name,
        "modelVersion": row.model_version,
        "config": row.config,
        "traffic": row.traffic,
    }


class DeploymentController(Controller):
    """Create, list, read, change and delete the caller's tenant's deployments (``deployments`` and ``revisions``
    are scoped to it: see ``api.deps``).
    """

    path = "/deployments"
    tags = ["Deployments"]
    dependencies = MANAGEMENT

    @post("/", summary="Create a deployment", guards=[_WRITE], dependencies=WRITES)
    async def create_deployment(
        self,
        deployments: Injected[DeploymentService],
        caller: Injected[Principal],
        db_session: Injected[AsyncSession],
        services: Injected[Services],
        audit: Injected[AuditTrail],
        data: Annotated[DeploymentCreate, Body()],
    ) -> DeploymentRead:
        """Deploy an installed model; ``config`` overrides its serving defaults. With ``eagerLoad`` the model
        is loaded before this answers. The deployment starts at revision 1.
        """
        row = await deployments.create(
            DeploymentRequest(
                model_name=data.model_name,
                name=data.name,
                model_version=data.model_version,
                config=data.config,
                traffic=data.traffic,
            ),
            created_by_key_id=caller.key_id,
        )
        audit.record("deployment.created", "deployment", row.id, created(_audited(row)))
        await db_session.commit()  # the deployment exists before its model loads, and stays if the load fails
        spec = to_spec(row)
        if spec.config.eager_load:
            await services.inference.load(spec, services.catalog.get(spec.model_name), plan=caller.plan)
        return _read(services, row)

    @get("/", summary="List deployments", guards=[_READ])
    async def list_deployments(
        self, deployments: Injected[DeploymentService], services: Injected[Services]
    ) -> list[DeploymentRead]:
        """The caller's tenant's deployments, newest first."""
        return [_read(services, row) for row in await deployments.list()]

    @get("/{deployment_id:uuid}", summary="Read a deployment", guards=[_READ])
    async def get_deployment(
        self, deployments: Injected[DeploymentService], services: Injected[Services], deployment_id: FromPath[uuid.UUID]
    ) -> DeploymentRead:
        """One deployment; another tenant's is a 404."""
        return _read(services, await deployments.get(deployment_id))

    @patch(
        "/{deployment_id:uuid}",
        summary="Change a deployment's version, variant, config or traffic (a new revision)",
        guards=[_WRITE],
        dependencies=WRITES,
    )
    async def update_deployment(
        self,
        deployments: Injected[DeploymentService],
        revisions: Injected[RevisionService],
        caller: Injected[Principal],
        db_session: Injected[AsyncSession],
        services: Injected[Services],
        audit: Injected[AuditTrail],
        deployment_id: FromPath[uuid.UUID],
        data: Annotated[DeploymentUpdate, Body()],
    ) -> DeploymentRead:
        """Change what serves the deployment, behind the same URL: a new revision. Where the deployment is loaded
        (or ``eagerLoad``), the new revision's units load and run the model's example inputs before it takes
        traffic; then the old units finish their in-flight requests and unload. A new revision that fails to load
        is not made (503) and the old one goes on serving. A body that changes nothing makes no revision.
        """
        change = DeploymentChange(
            model_version=data.model_version, variant=data.variant, config=data.config, traffic=data.traffic
        )
        plan = await revisions.plan_update(deployment_id, change)
        return await _roll_out(services, deployments, revisions, db_session, caller, audit, deployment_id, plan)

    @get("/{deployment_id:uuid}/revisions", summary="List a deployment's revisions", guards=[_READ])
    async def list_revisions(
        self,
        deployments: Injected[DeploymentService],
        revisions: Injected[RevisionService],
        deployment_id: FromPath[uuid.UUID],
    ) -> list[RevisionRead]:
        """Every revision, oldest first: who made it (key id), when, what changed, the action, and the requests it
        served.
        """
        current = (await deployments.get(deployment_id)).revision
        return [RevisionRead.of(summary, current=current) for summary in await revisions.list(deployment_id)]

    @post(
        "/{deployment_id:uuid}/rollback",
        summary="Roll a deployment back to an earlier revision",
        guards=[_WRITE],
        dependencies=WRITES,
        status_code=200,
    )
    async def rollback_deployment(
        self,
        deployments: Injected[DeploymentService],
        revisions: Injected[RevisionService],
        caller: Injected[Principal],
        db_session: Injected[AsyncSession],
        services: Injected[Services],
        audit: Injected[AuditTrail],
        deployment_id: FromPath[uuid.UUID],
        data: Annotated[RollbackRequest | None, Body()] = None,
    ) -> DeploymentRead:
        """A new revision equal to revision ``revision`` (default: the one before the current): same version,
        config and traffic, warmed and switched to as a ``PATCH`` is.
        """
        number = data.revision if data is not None else None
        plan = await revisions.plan_rollback(deployment_id, number)
        return await _roll_out(services, deployments, revisions, db_session, caller, audit, deployment_id, plan)

    @post(
        "/{deployment_id:uuid}/promote",
        summary="Promote one version of a deployment's traffic to all of it",
        guards=[_WRITE],
        dependencies=WRITES,
        status_code=200,
    )
    async def promote_version(
        self,
        deployments: Injected[DeploymentService],
        revisions: Injected[RevisionService],
        caller: Injected[Principal],
        db_session: Injected[AsyncSession],
        services: Injected[Services],
        audit: Injected[AuditTrail],
        deployment_id: FromPath[uuid.UUID],
        data: Annotated[RouteChoice, Body()],
    ) -> DeploymentRead:
        """The route of ``modelVersion`` (and ``variant``) takes weight 100; every other route, live or shadow, is
        removed. A new revision.
        """
        plan = await revisions.plan_promote(deployment_id, data.model_version, data.variant)
        return await _roll_out(services, deployments, revisions, db_session, caller, audit, deployment_id, plan)

    @post(
        "/{deployment_id:uuid}/abort",
        summary="Remove a candidate version from a deployment's traffic",
        guards=[_WRITE],
        dependencies=WRITES,
        status_code=200,
    )
    async def abort_version(
        self,
        deployments: Injected[DeploymentService],
        revisions: Injected[RevisionService],
        caller: Injected[Principal],
        db_session: Injected[AsyncSession],
        services: Injected[Services],
        audit: Injected[AuditTrail],
        deployment_id: FromPath[uuid.UUID],
        data: Annotated[RouteChoice, Body()],
    ) -> DeploymentRead:
        """Remove the route of ``modelVersion`` (and ``variant``); a live route's weight goes to the first live route
        that remains. The last live route cannot be aborted. A new revision.
        """
        plan = await revisions.plan_abort(deployment_id, data.model_version, data.variant)
        return await _roll_out(services, deployments, revisions, db_session, caller, audit, deployment_id, plan)

    @delete("/{deployment_id:uuid}", summary="Delete a deployment", guards=[_WRITE], dependencies=WRITES)
    async def delete_deployment(
        self,
        deployments: Injected[DeploymentService],
        db_session: Injected[AsyncSession],
        services: Injected[Services],
        audit: Injected[AuditTrail],
        deployment_id: FromPath[uuid.UUID],
    ) -> None:
        """Delete a deployment: in-flight requests finish first, then the model is unloaded. Usage stays."""
        row = await deployments.delete(deployment_id)
        audit.record("deployment.deleted", "deployment", row.id, deleted(_audited(row)))
        await db_session.commit()  # gone from the database before the caches forget it and the model unloads
        await services.deployment_deleted(to_spec(row))
