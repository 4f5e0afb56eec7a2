"""Creating tenants with their first owner and owner key (an operator action, from the CLI)."""

from __future__ import annotations

from decimal import Decimal

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cloudeasyml.core.clock import utc_now
from cloudeasyml.core.pricing import COST_SCALE
from cloudeasyml.db.models import Tenant, User
from cloudeasyml.domain.api_keys import ApiKeyService, IssuedKey, KeyRequest
from cloudeasyml.errors import ConflictError, InvalidInputError, NotFoundError

__all__ = (
    "MAX_SPEND_CAP",
    "UNCHANGED",
    "NewTenant",
    "apply_caps",
    "create_tenant",
    "issue_admin_key",
    "set_caps",
)

MAX_SPEND_CAP = Decimal(100_000_000)
"""Largest spend cap: amounts are stored as scaled 64-bit integers (room for about 9.2e8)."""

UNCHANGED: object = object()
"""``set_caps``: leave this cap as it is."""


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


async def issue_admin_key(session: AsyncSession, name: str) -> IssuedKey:
    """A new ``admin`` key of tenant ``name``, made by the operator (no parent key), owned by its first owner.

    Every key a tenant makes descends from its owner key, so the tenant can never revoke the owner key (it would
    revoke its last admin key): a second root key made here is how an owner key is replaced, after which the
    tenant may revoke the old one through the API.
    """
    tenant = await session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        raise NotFoundError(f"no tenant named {name!r}")
    owner_id = await session.scalar(
        select(User.id).where(User.tenant_id == tenant.id, User.role == "owner").order_by(User.created_at).limit(1)
    )
    return await ApiKeyService(session, tenant.id).issue(
        KeyRequest(name="admin key issued by the operator", scopes=("admin",)), issuer=None, user_id=owner_id
    )


async def set_caps(
    session: AsyncSession, name: str, *, spend_cap: object = UNCHANGED, request_cap: object = UNCHANGED
) -> Tenant:
    """Set (``None``: remove) the monthly spend and request caps of tenant ``name`` in the caller's transaction.
    Servers apply them within their refresh interval (``CLOUDEASYML_QUOTA__REFRESH_SECONDS``).
    """
    tenant = await session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        raise NotFoundError(f"no tenant named {name!r}")
    apply_caps(tenant, spend_cap=spend_cap, request_cap=request_cap)
    await session.flush()
    return tenant


def apply_caps(tenant: Tenant, *, spend_cap: object = UNCHANGED, request_cap: object = UNCHANGED) -> None:
    """Validate and set (``None``: remove; ``UNCHANGED``: keep) a tenant's monthly caps on its row."""
    if spend_cap is not UNCHANGED:
        if spend_cap is not None:
            if not isinstance(spend_cap, Decimal) or not spend_cap.is_finite() or spend_cap < 0:
                raise InvalidInputError("the spend cap must be a non-negative amount")
            if spend_cap.as_tuple().exponent < -COST_SCALE:  # type: ignore[operator]
                raise InvalidInputError(f"the spend cap carries at most {COST_SCALE} decimal places")
            if spend_cap > MAX_SPEND_CAP:
                raise InvalidInputError(f"the spend cap is at most {MAX_SPEND_CAP} (usage sums are stored exactly)")
        tenant.spend_cap = spend_cap
    if request_cap is not UNCHANGED:
        if request_cap is not None and (not isinstance(request_cap, int) or request_cap < 0):
            raise InvalidInputError("the request cap must be a non-negative whole number")
        tenant.request_cap = request_cap
