"""Creating tenants with their first owner and owner key (an operator action, from the CLI)."""

from __future__ import annotations

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cloudeasyml.db.models import Tenant, User
from cloudeasyml.db.types import utc_now
from cloudeasyml.domain.api_keys import ApiKeyService, KeyRequest
from cloudeasyml.errors import ConflictError

__all__ = ("NewTenant", "create_tenant")


class NewTenant(msgspec.Struct, frozen=True):
    """A created tenant, its owner, and the owner's key (shown once)."""

    tenant: Tenant
    owner: User
    key_id: str
    key: str


async def create_tenant(session: AsyncSession, name: str, owner_email: str, *, plan: str = "default") -> NewTenant:
    """Create a tenant, its owner user and an ``admin`` key in the caller's transaction."""
    if await session.scalar(select(Tenant.id).where(Tenant.name == name)) is not None:
        raise ConflictError(f"a tenant named {name!r} already exists")
    tenant = Tenant(name=name, plan=plan, created_at=utc_now())
    session.add(tenant)
    await session.flush()
    owner = User(tenant_id=tenant.id, email=owner_email, role="owner", created_at=utc_now())
    session.add(owner)
    await session.flush()
    issued = await ApiKeyService(session, tenant.id).issue(
        KeyRequest(name=f"owner key for {owner_email}", scopes=("admin",)), issuer=None, user_id=owner.id
    )
    return NewTenant(tenant=tenant, owner=owner, key_id=issued.row.id, key=issued.key)
