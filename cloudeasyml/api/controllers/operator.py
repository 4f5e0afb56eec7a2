"""The platform operator's tenant management (``/operator/tenants``), for keys holding the ``operator`` scope.

The operator acts on any tenant by design: the tenant is the resource here, named by its id in the path, and
``TenantAdminService`` is not tenant-scoped. No tenant key can reach these routes (``operator`` is never a tenant
key's scope, and a tenant's ``admin`` does not grant it).
"""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec
from litestar import Controller, Response, delete, get, patch, post
from litestar.openapi import ResponseSpec
from litestar.params import Body, FromPath, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from cloudeasyml.api.auth import requires_scope
from cloudeasyml.api.deps import MANAGEMENT, WRITES, Injected
from cloudeasyml.api.operator_schemas import (
    TenantCreate,
    TenantCreated,
    TenantDeletion,
    TenantRead,
    TenantSuspend,
    TenantUpdate,
)
from cloudeasyml.db.models import Tenant
from cloudeasyml.domain.audit import AuditTrail, created, deleted, diff
from cloudeasyml.domain.principal import OPERATOR_SCOPE
from cloudeasyml.domain.tenant_admin import TenantAdminService
from cloudeasyml.domain.tenants import UNCHANGED
from cloudeasyml.services import Services

__all__ = ("OperatorTenantController",)

_OPERATOR = [requires_scope(OPERATOR_SCOPE)]
MAX_PAGE = 200


def _given(value: object) -> object:
    """A PATCH field: absent (``UNSET``) leaves it as it is."""
    return UNCHANGED if value is msgspec.UNSET else value


def _audited(row: Tenant) -> dict[str, object]:
    """What the audit log keeps of a tenant."""
    return {"name": row.name, "plan": row.plan, "spendCap": row.spend_cap, "requestCap": row.request_cap}


class OperatorTenantController(Controller):
    """Create, list, read, change, suspend, resume and delete tenants."""

    path = "/operator/tenants"
    tags = ["Operator"]
    dependencies = MANAGEMENT
    guards = _OPERATOR

    @post("/", summary="Create a tenant", dependencies=WRITES)
    async def create_tenant(
        self,
        tenant_admin: Injected[TenantAdminService],
        audit: Injected[AuditTrail],
        services: Injected[Services],
        data: Annotated[TenantCreate, Body()],
    ) -> TenantCreated:
        """A tenant, its owner user and the owner's ``admin`` key; the full ``key`` is in this response only. Caps
        not given are the plan's defaults (``/plans``), none if it has none.
        """
        plan = services.plans.get(data.plan)
        spend_cap = plan.spend_cap if plan is not None else None
        request_cap = plan.request_cap if plan is not None else None
        new = await tenant_admin.create(
            data.name,
            data.owner_email,
            plan=data.plan,
            spend_cap=spend_cap if data.spend_cap is msgspec.UNSET else data.spend_cap,
            request_cap=request_cap if data.request_cap is msgspec.UNSET else data.request_cap,
        )
        changes = created({**_audited(new.tenant), "ownerEmail": new.owner.email, "ownerKeyId": new.key_id})
        audit.record("tenant.created", "tenant", new.tenant.id, changes, tenant=new.tenant.id)
        return TenantCreated(
            tenant=TenantRead.of(new.tenant), owner_user_id=new.owner.id, key_id=new.key_id, key=new.key
        )

    @get("/", summary="List tenants")
    async def list_tenants(
        self,
        tenant_admin: Injected[TenantAdminService],
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE)] = 50,
        after: Annotated[str | None, QueryParameter(max_length=200)] = None,
    ) -> list[TenantRead]:
        """Tenants by name, ``limit`` at a time; the next page: ``after`` = the last name of this one."""
        return [TenantRead.of(row) for row in await tenant_admin.list(limit=limit, after=after)]

    @get("/{tenant_ref:uuid}", summary="Get a tenant")
    async def get_tenant(
        self, tenant_admin: Injected[TenantAdminService], tenant_ref: FromPath[uuid.UUID]
    ) -> TenantRead:
        """One tenant, with its plan, caps and status."""
        return TenantRead.of(await tenant_admin.get(tenant_ref))

    @patch("/{tenant_ref:uuid}", summary="Change a tenant's plan or caps", dependencies=WRITES)
    async def update_tenant(
        self,
        tenant_admin: Injected[TenantAdminService],
        db_session: Injected[AsyncSession],
        services: Injected[Services],
        audit: Injected[AuditTrail],
        tenant_ref: FromPath[uuid.UUID],
        data: Annotated[TenantUpdate, Body()],
    ) -> TenantRead:
        """Change the plan (its prices and limits apply to the next request on every process) and the monthly
        caps (a null cap removes it; servers apply caps within ``CLOUDEASYML_QUOTA__REFRESH_SECONDS``).
        """
        plan = None if data.plan is msgspec.UNSET else data.plan
        before = _audited(await tenant_admin.get(tenant_ref))
        row = await tenant_admin.update(
            tenant_ref, plan=plan, spend_cap=_given(data.spend_cap), request_cap=_given(data.request_cap)
        )
        read = TenantRead.of(row)
        changes = diff(before, _audited(row))
        if changes:
            audit.record("tenant.updated", "tenant", tenant_ref, changes, tenant=tenant_ref)
        keys = await tenant_admin.key_ids(tenant_ref) if plan is not None else []
        await db_session.commit()  # committed before the caches read the tenant again
        await services.tenant_changed(keys)
        return read

    @post("/{tenant_ref:uuid}/suspend", summary="Suspend a tenant", status_code=200, dependencies=WRITES)
    async def suspend_tenant(
        self,
        tenant_admin: Injected[TenantAdminService],
        db_session: Injected[AsyncSession],
        services: Injected[Services],
        audit: Injected[AuditTrail],
        tenant_ref: FromPath[uuid.UUID],
        data: Annotated[TenantSuspend | None, Body()] = None,
    ) -> TenantRead:
        """Every key of the tenant is refused with 403 from now on, on every process (at once where they share
        Redis, else within ``CLOUDEASYML_SERVER__KEY_CACHE_SECONDS``): predictions and management calls alike.
        """
        reason = data.reason if data is not None else None
        was = (await tenant_admin.get(tenant_ref)).suspended_at is not None
        row = await tenant_admin.suspend(tenant_ref, reason)
        read = TenantRead.of(row)
        changes = {"status": {"from": "suspended" if was else "active", "to": "suspended"}, "reason": {"to": reason}}
        audit.record("tenant.suspended", "tenant", tenant_ref, changes, tenant=tenant_ref)
        keys = await tenant_admin.key_ids(tenant_ref)
        await db_session.commit()
        await services.tenant_changed(keys)
        return read

    @post("/{tenant_ref:uuid}/resume", summary="Resume a suspended tenant", status_code=200, dependencies=WRITES)
    async def resume_tenant(
        self,
        tenant_admin: Injected[TenantAdminService],
        db_session: Injected[AsyncSession],
        services: Injected[Services],
        audit: Injected[AuditTrail],
        tenant_ref: FromPath[uuid.UUID],
    ) -> TenantRead:
        """The tenant's keys work again (those not revoked or expired)."""
        was = (await tenant_admin.get(tenant_ref)).suspended_at is not None
        row = await tenant_admin.resume(tenant_ref)
        read = TenantRead.of(row)
        changes = {"status": {"from": "suspended" if was else "active", "to": "active"}}
        audit.record("tenant.resumed", "tenant", tenant_ref, changes, tenant=tenant_ref)
        keys = await tenant_admin.key_ids(tenant_ref)
        await db_session.commit()
        await services.tenant_changed(keys)
        return read

    @delete(
        "/{tenant_ref:uuid}",
        summary="Delete a tenant with its data (two calls)",
        status_code=202,
        dependencies=WRITES,
        responses={204: ResponseSpec(data_container=None, description="Deleted, with all its data")},
    )
    async def delete_tenant(
        self,
        tenant_admin: Injected[TenantAdminService],
        db_session: Injected[AsyncSession],
        services: Injected[Services],
        audit: Injected[AuditTrail],
        tenant_ref: FromPath[uuid.UUID],
        confirm: Annotated[str | None, QueryParameter(min_length=1, max_length=200)] = None,
    ) -> Response[TenantDeletion | None]:
        """Without ``confirm``: nothing is deleted; 202 with a confirmation token (valid
        ``CLOUDEASYML_OPERATOR__DELETION_TOKEN_SECONDS``). With ``confirm=<that token>``: the tenant and all its
        data (keys, users, deployments, usage, invoices, webhooks, batch jobs and files) are deleted, 204; its keys
        stop working and its deployments unload on every process. A wrong token is a 422, an expired one a 409.
        """
        if confirm is None:
            tenant = TenantRead.of(await tenant_admin.get(tenant_ref))
            valid = services.settings.operator.deletion_token_seconds
            token = await tenant_admin.request_deletion(tenant_ref, valid)
            body = TenantDeletion(tenant=tenant, confirmation_token=token.token, expires_at=token.expires_at)
            # The token is a secret: only that one was given, and until when.
            audit.record(
                "tenant.deletion_requested",
                "tenant",
                tenant_ref,
                {"expiresAt": {"to": token.expires_at}},
                tenant=tenant_ref,
            )
            return Response(body, status_code=202)
        gone = await tenant_admin.delete(tenant_ref, confirm)
        audit.record("tenant.deleted", "tenant", tenant_ref, deleted({"name": gone.name}), tenant=tenant_ref)
        await db_session.commit()  # gone from the database before the caches forget it
        await services.tenant_deleted(gone)
        return Response(None, status_code=204)
