"""The audit log: every change to tenants, plans, keys, deployments and webhooks, with who made it (key id), when,
from which address, and what changed, written in the transaction of the change.

``AuditTrail`` writes (``api.deps`` builds it for the caller: its key, its address, its tenant); ``AuditLog`` reads,
scoped to one tenant for a tenant's admins, or across tenants for the operator. What changed is a JSON diff,
``{field: {"from": old, "to": new}}``; a field whose name says it holds a secret (``secret``, ``hash``, ``token``,
``password``, or a name ending in ``key``) is never written, whatever the caller passes: its value becomes
``"(not recorded)"``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cloudeasyml.core.clock import utc_now
from cloudeasyml.db.models import AuditEvent
from cloudeasyml.domain.webhooks.events import rfc3339
from cloudeasyml.errors import MalformedRequestError

__all__ = ("NOT_RECORDED", "Actor", "AuditLog", "AuditPage", "AuditTrail", "created", "deleted", "diff")

NOT_RECORDED = "(not recorded)"
_SECRET_WORDS = ("secret", "hash", "token", "password")


class Actor(msgspec.Struct, frozen=True):
    """Who makes a change: the key (None: the CLI) and the client's address (None: unknown)."""

    key_id: str | None
    client_ip: str | None = None


class AuditPage(msgspec.Struct, frozen=True):
    """A page of events, newest first, and the cursor of the next (None: the last page)."""

    items: list[AuditEvent]
    next_cursor: str | None


def _is_secret(name: str) -> bool:
    lowered = name.lower()
    # ``key``, ``apiKey``, ``privateKey``: a key's material; ``keyId``, ``ownerKeyId``: its public id, kept.
    return lowered.endswith("key") or any(word in lowered for word in _SECRET_WORDS)


def _plain(value: Any) -> Any:
    """``value`` as JSON can hold it, secrets dropped at every depth."""
    if isinstance(value, Mapping):
        return {str(k): NOT_RECORDED if _is_secret(str(k)) else _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value) if isinstance(value, set | frozenset) else value
        return [_plain(item) for item in items]
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, msgspec.Struct):
        return _plain(msgspec.to_builtins(value))
    return value


def created(values: Mapping[str, Any]) -> dict[str, Any]:
    """The changes of a creation: every field, ``to`` only."""
    return {name: {"to": value} for name, value in values.items()}


def deleted(values: Mapping[str, Any]) -> dict[str, Any]:
    """The changes of a deletion: every field, ``from`` only."""
    return {name: {"from": value} for name, value in values.items()}


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The fields whose value differs, ``from`` and ``to``."""
    old, new = _plain(before), _plain(after)
    return {
        name: {"from": old.get(name), "to": new.get(name)}
        for name in [*old, *(name for name in new if name not in old)]
        if old.get(name) != new.get(name)
    }


class AuditTrail:
    """Records changes in the caller's session (so in the change's transaction), as ``actor``, about ``tenant_id``
    unless a change names another tenant (the operator's changes to tenants).
    """

    def __init__(self, session: AsyncSession, actor: Actor, tenant_id: uuid.UUID | None) -> None:
        self._session = session
        self._actor = actor
        self._tenant_id = tenant_id

    def record(
        self,
        action: str,
        resource_type: str,
        resource_id: object,
        changes: Mapping[str, Any],
        *,
        tenant: uuid.UUID | None = None,
    ) -> None:
        """Add one event (written when the session flushes, committed or rolled back with the change)."""
        self._session.add(
            AuditEvent(
                tenant_id=tenant if tenant is not None else self._tenant_id,
                actor_key_id=self._actor.key_id,
                client_ip=self._actor.client_ip,
                action=action,
                resource_type=resource_type,
                resource_id=str(resource_id)[:64],
                changes=_plain(dict(changes)),
                created_at=utc_now(),
            )
        )


class AuditLog:
    """Reads the audit log: one tenant's (``tenant_id``), or every tenant's (None: the operator)."""

    def __init__(self, session: AsyncSession, tenant_id: uuid.UUID | None) -> None:
        self._session = session
        self._tenant_id = tenant_id

    @property
    def all_tenants(self) -> bool:
        """Whether this log spans tenants (the operator's)."""
        return self._tenant_id is None

    async def page(
        self,
        *,
        limit: int,
        cursor: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        action: str | None = None,
        resource_type: str | None = None,
        resource_id: str | None = None,
        tenant: uuid.UUID | None = None,
    ) -> AuditPage:
        """Events newest first, ``limit`` at most, filtered; ``cursor`` (from ``next_cursor``) continues.
        ``tenant`` narrows the operator's log to one tenant (ignored when the log is one tenant's already).
        """
        query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit + 1)
        if self._tenant_id is not None:
            query = query.where(AuditEvent.tenant_id == self._tenant_id)
        elif tenant is not None:
            query = query.where(AuditEvent.tenant_id == tenant)
        if cursor is not None:
            query = query.where(AuditEvent.id < _cursor_id(cursor))
        if since is not None:
            query = query.where(AuditEvent.created_at >= since)
        if until is not None:
            query = query.where(AuditEvent.created_at < until)
        if action is not None:
            query = query.where(AuditEvent.action == action)
        if resource_type is not None:
            query = query.where(AuditEvent.resource_type == resource_type)
        if resource_id is not None:
            query = query.where(AuditEvent.resource_id == resource_id)
        rows = list(await self._session.scalars(query))
        more = len(rows) > limit
        rows = rows[:limit]
        return AuditPage(items=rows, next_cursor=f"ae_{rows[-1].id}" if more and rows else None)


def _cursor_id(cursor: str) -> int:
    """The event id a cursor continues before; a cursor the API did not give out is a 400."""
    if cursor.startswith("ae_") and cursor[3:].isdigit() and len(cursor) < 24:
        return int(cursor[3:])
    raise MalformedRequestError("cursor is not one this API gave out - query `cursor`")
