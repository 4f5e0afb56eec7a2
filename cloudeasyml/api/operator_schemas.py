"""Wire schemas of the platform operator's API (``/operator/...``, camelCase JSON)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec

from cloudeasyml.core.pricing import Pricing
from cloudeasyml.db.models import AuditEvent, Tenant
from cloudeasyml.domain.plans import PlanRecord

__all__ = (
    "PlanCreate",
    "PlanRead",
    "PlanUpdate",
    "AuditEventRead",
    "AuditList",
    "TenantCreate",
    "TenantCreated",
    "TenantDeletion",
    "TenantRead",
    "TenantSuspend",
    "TenantUpdate",
)

TenantName = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
PlanName = Annotated[str, msgspec.Meta(min_length=1, max_length=50, pattern=r"^[A-Za-z0-9_.-]+$")]
Email = Annotated[str, msgspec.Meta(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")]
SpendCap = Decimal
"""Validated by the domain (non-negative, at most 100,000,000, six decimal places at most)."""
RequestCap = Annotated[int, msgspec.Meta(ge=0, le=2**62)]


class _Wire(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    pass


def _amount(value: Decimal | None) -> Decimal | None:
    """An amount without the storage's trailing zeros (``100``, not ``100.0000000000`` nor ``1E+2``)."""
    return None if value is None else Decimal(format(value.normalize(), "f"))


class TenantRead(_Wire):
    """A tenant as the operator sees it."""

    id: uuid.UUID
    name: str
    plan: str
    spend_cap: Decimal | None
    """Most the tenant may spend per calendar month (UTC); null: no cap."""
    request_cap: int | None
    """Most requests per calendar month (UTC); null: no cap."""
    status: Literal["active", "suspended"]
    suspended_at: datetime | None
    suspended_reason: str | None
    created_at: datetime

    @classmethod
    def of(cls, row: Tenant) -> TenantRead:
        """The wire form of a row."""
        return cls(
            id=row.id,
            name=row.name,
            plan=row.plan,
            spend_cap=_amount(row.spend_cap),
            request_cap=row.request_cap,
            status="suspended" if row.suspended_at is not None else "active",
            suspended_at=row.suspended_at,
            suspended_reason=row.suspended_reason,
            created_at=row.created_at,
        )


class TenantCreate(_Wire):
    """Body of ``POST /operator/tenants``."""

    name: TenantName
    owner_email: Email
    """The tenant's first user (role owner), who holds the owner key."""
    plan: PlanName = "default"
    spend_cap: SpendCap | None | msgspec.UnsetType = msgspec.UNSET
    """Absent: the plan's default (``/plans``), else none; null: none."""
    request_cap: RequestCap | None | msgspec.UnsetType = msgspec.UNSET
    """Absent: the plan's default, else none; null: none."""


class TenantCreated(_Wire):
    """A new tenant and its owner key (``key``: in this response only)."""

    tenant: TenantRead
    owner_user_id: uuid.UUID
    key_id: str
    key: str


class TenantUpdate(_Wire):
    """Body of ``PATCH /operator/tenants/{id}``: absent fields stay; a null cap removes it."""

    plan: PlanName | msgspec.UnsetType = msgspec.UNSET
    spend_cap: SpendCap | None | msgspec.UnsetType = msgspec.UNSET
    request_cap: RequestCap | None | msgspec.UnsetType = msgspec.UNSET


class TenantSuspend(_Wire):
    """Body of ``POST /operator/tenants/{id}/suspend`` (optional)."""

    reason: Annotated[str, msgspec.Meta(max_length=500)] | None = None
    """Shown to the tenant's callers in the 403 their requests get."""


class TenantDeletion(_Wire):
    """The first ``DELETE /operator/tenants/{id}``'s answer: nothing is deleted yet; send ``confirm`` back."""

    tenant: TenantRead
    confirmation_token: str
    """``DELETE /operator/tenants/{id}?confirm=<token>`` deletes the tenant and all its data."""
    expires_at: datetime
    """The token is refused after this."""


class AuditEventRead(_Wire):
    """One change in the audit log."""

    id: int
    tenant: uuid.UUID | None
    """The tenant the change is about (null: none, e.g. a plan)."""
    action: str
    """``<resource>.<verb>``: ``tenant.created``, ``key.revoked``, ``deployment.updated``, ``webhook.deleted``, ..."""
    resource_type: str
    resource_id: str
    actor_key_id: str | None
    """The key that made the change (``sk_...`` a tenant's, ``op_...`` the operator's; null: the CLI)."""
    client_ip: str | None
    changes: dict[str, Any]
    """``{field: {"from": old, "to": new}}``; never a secret."""
    created_at: datetime

    @classmethod
    def of(cls, row: AuditEvent) -> AuditEventRead:
        """The wire form of a row."""
        return cls(
            id=row.id,
            tenant=row.tenant_id,
            action=row.action,
            resource_type=row.resource_type,
            resource_id=row.resource_id,
            actor_key_id=row.actor_key_id,
            client_ip=row.client_ip,
            changes=row.changes,
            created_at=row.created_at,
        )


class AuditList(_Wire):
    """A page of the audit log, newest first."""

    items: list[AuditEventRead]
    next_cursor: str | None
    """Pass as ``cursor`` for the next page; null: this is the last."""


Limit = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
ModelName = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Prices = Annotated[dict[ModelName, Pricing], msgspec.Meta(max_length=1000)]


class PlanRead(_Wire):
    """A price plan: stored (``source`` ``database``) or the code's (``code``: the settings' limits and the models'
    own prices).
    """

    name: str
    source: Literal["code", "database"]
    description: str
    prices: dict[str, Pricing]
    """Per model; a model not named here is priced by its plugin."""
    rate_limit_per_minute: int | None
    """Most requests per minute any one key of a tenant on the plan may make (null: the key's own limit)."""
    spend_cap: Decimal | None
    """The monthly spend cap of a tenant created on the plan without one."""
    request_cap: int | None
    """The monthly request cap of a tenant created on the plan without one."""
    max_deployments: int | None
    """Null: the settings' default (``CLOUDEASYML_LIMITS__MAX_DEPLOYMENTS``)."""
    max_loaded_deployments: int | None
    bill_shadow: bool | None
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def of(cls, plan: PlanRecord) -> PlanRead:
        """The wire form of a plan."""
        return cls(
            name=plan.name,
            source="database" if plan.stored else "code",
            description=plan.description,
            prices=plan.prices,
            rate_limit_per_minute=plan.rate_limit_per_minute,
            spend_cap=_amount(plan.spend_cap),
            request_cap=plan.request_cap,
            max_deployments=plan.limits.max_deployments,
            max_loaded_deployments=plan.limits.max_loaded_deployments,
            bill_shadow=plan.limits.bill_shadow,
            created_at=plan.created_at,
            updated_at=plan.updated_at,
        )


class PlanUpdate(_Wire):
    """Body of ``PATCH /plans/{name}`` (absent fields stay; null removes an optional one). ``prices`` replaces the
    whole price list.
    """

    description: Annotated[str, msgspec.Meta(max_length=500)] | msgspec.UnsetType = msgspec.UNSET
    prices: Prices | msgspec.UnsetType = msgspec.UNSET
    rate_limit_per_minute: Limit | None | msgspec.UnsetType = msgspec.UNSET
    spend_cap: SpendCap | None | msgspec.UnsetType = msgspec.UNSET
    request_cap: RequestCap | None | msgspec.UnsetType = msgspec.UNSET
    max_deployments: Limit | None | msgspec.UnsetType = msgspec.UNSET
    max_loaded_deployments: Limit | None | msgspec.UnsetType = msgspec.UNSET
    bill_shadow: bool | None | msgspec.UnsetType = msgspec.UNSET


class PlanCreate(PlanUpdate, kw_only=True):
    """Body of ``POST /plans``."""

    name: PlanName
