"""The platform operator's view of tenants: create, list, read, change plan and caps, suspend, resume, delete.

Not tenant-scoped (the operator acts on any tenant): only the ``/operator/...`` endpoints, guarded by the
``operator`` scope, build it. Changes that must reach the servers' caches (a suspension, a plan, a deletion) return
what to forget; the caller commits first, then tells every process (``Services.tenant_changed`` and
``Services.tenant_deleted``).
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import secrets
import uuid
from datetime import datetime, timedelta

import msgspec
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from cloudeasyml.core.clock import utc_now
from cloudeasyml.db.models import ApiKey, Deployment, Tenant
from cloudeasyml.domain.deployments import to_spec
from cloudeasyml.domain.tenants import UNCHANGED, NewTenant, apply_caps, create_tenant
from cloudeasyml.errors import ConflictError, InvalidInputError, NotFoundError
from cloudeasyml.runtime.registry import DeploymentSpec

__all__ = ("DeletedTenant", "DeletionToken", "TenantAdminService")


class DeletionToken(msgspec.Struct, frozen=True):
    """What the first ``DELETE`` answers: the token to send back, and until when it is valid."""

    token: str
    expires_at: datetime


class DeletedTenant(msgspec.Struct, frozen=True):
    """A deleted tenant, and what the servers must forget of it once the deletion is committed."""

    tenant_id: uuid.UUID
    name: str
    key_ids: list[str]
    deployments: list[DeploymentSpec]


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


class TenantAdminService:
    """Every tenant, for the platform operator."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def create(
        self,
        name: str,
        owner_email: str,
        *,
        plan: str = "default",
        spend_cap: object = UNCHANGED,
        request_cap: object = UNCHANGED,
    ) -> NewTenant:
        """A tenant with its owner and owner key (shown once), on ``plan``, with the caps given."""
        new = await create_tenant(self._session, name, owner_email, plan=plan)
        apply_caps(new.tenant, spend_cap=spend_cap, request_cap=request_cap)
        await self._session.flush()
        return new

    async def list(self, *, limit: int, after: str | None = None) -> list[Tenant]:
        """Up to ``limit`` tenants by name, those after ``after`` (the last name of the page before)."""
        query = select(Tenant).order_by(Tenant.name).limit(limit)
        if after is not None:
            query = query.where(Tenant.name > after)
        return list(await self._session.scalars(query))

    async def get(self, tenant_id: uuid.UUID) -> Tenant:
        """One tenant (``NotFoundError`` if there is none with that id)."""
        tenant = await self._session.get(Tenant, tenant_id)
        if tenant is None:
            raise NotFoundError(f"no tenant {tenant_id}")
        return tenant

    # builtins.list: in this class body, `list` names the method above.
    async def key_ids(self, tenant_id: uuid.UUID) -> builtins.list[str]:
        """The ids of every key of the tenant (what the servers' key caches must forget after a change)."""
        return list(await self._session.scalars(select(ApiKey.id).where(ApiKey.tenant_id == tenant_id)))

    async def update(
        self,
        tenant_id: uuid.UUID,
        *,
        plan: str | None = None,
        spend_cap: object = UNCHANGED,
        request_cap: object = UNCHANGED,
    ) -> Tenant:
        """Change the tenant's plan (None: keep it) and caps (``UNCHANGED``: keep; None: remove)."""
        tenant = await self.get(tenant_id)
        if plan is not None:
            tenant.plan = plan
        apply_caps(tenant, spend_cap=spend_cap, request_cap=request_cap)
        await self._session.flush()
        return tenant

    async def suspend(self, tenant_id: uuid.UUID, reason: str | None) -> Tenant:
        """Suspend the tenant: every key of it is refused (403) once the servers' caches forget them. Suspending a
        suspended tenant again changes only the reason.
        """
        tenant = await self.get(tenant_id)
        if tenant.suspended_at is None:
            tenant.suspended_at = utc_now()
        tenant.suspended_reason = reason
        await self._session.flush()
        return tenant

    async def resume(self, tenant_id: uuid.UUID) -> Tenant:
        """Lift a suspension (idempotent)."""
        tenant = await self.get(tenant_id)
        tenant.suspended_at = None
        tenant.suspended_reason = None
        await self._session.flush()
        return tenant

    async def request_deletion(self, tenant_id: uuid.UUID, valid_seconds: float) -> DeletionToken:
        """A confirmation token for deleting the tenant, valid ``valid_seconds`` (a new one replaces the last)."""
        tenant = await self.get(tenant_id)
        token = "del_" + secrets.token_urlsafe(24)
        expires_at = utc_now() + timedelta(seconds=valid_seconds)
        tenant.deletion_token_hash = _token_hash(token)
        tenant.deletion_token_expires_at = expires_at
        await self._session.flush()
        return DeletionToken(token=token, expires_at=expires_at)

    async def delete(self, tenant_id: uuid.UUID, token: str) -> DeletedTenant:
        """Delete the tenant and all its data (keys, users, deployments, usage, invoices, webhooks, batches: every
        table's rows go with the tenant's by their foreign keys) if ``token`` is the one ``request_deletion`` gave
        and it has not expired (``ConflictError`` otherwise: ask for a new one).
        """
        # Locked: two confirmations of one token delete once; a token asked for meanwhile is not overtaken.
        tenant = await self._session.scalar(select(Tenant).where(Tenant.id == tenant_id).with_for_update())
        if tenant is None:
            raise NotFoundError(f"no tenant {tenant_id}")
        expected = tenant.deletion_token_hash
        if expected is None or tenant.deletion_token_expires_at is None:
            raise ConflictError("no deletion was asked for this tenant: DELETE without a token first")
        if not hmac.compare_digest(_token_hash(token), expected):
            raise InvalidInputError("the confirmation token is not the one given for this tenant - query `confirm`")
        if tenant.deletion_token_expires_at <= utc_now():
            raise ConflictError("the confirmation token has expired: DELETE without a token for a new one")
        key_ids = await self.key_ids(tenant_id)
        rows = await self._session.scalars(select(Deployment).where(Deployment.tenant_id == tenant_id))
        deployments = [to_spec(row) for row in rows]
        deleted = DeletedTenant(tenant_id=tenant.id, name=tenant.name, key_ids=key_ids, deployments=deployments)
        await self._session.execute(delete(Tenant).where(Tenant.id == tenant_id))
        return deleted
