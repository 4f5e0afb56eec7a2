"""Issuing, listing and revoking a tenant's API keys.

Keys form a tree per tenant: a key made through the API records the key that made it (``created_by_key_id``);
keys made by the operator (the owner key of ``cloudeasyml tenants create``) are roots. A key never outlives,
outranks or out-rates its parent: its scopes are a subset of the parent's, its expiry at most the parent's and its
rate limit at most the parent's; revoking a key revokes every key below it in the same transaction.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

import msgspec
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from cloudeasyml.core.clock import utc_now
from cloudeasyml.db.models import ApiKey, Tenant
from cloudeasyml.domain.key_format import generate_key, hash_secret
from cloudeasyml.domain.principal import DEFAULT_KEY_SCOPES, Principal, validate_scopes
from cloudeasyml.domain.webhooks.events import emit, rfc3339
from cloudeasyml.errors import (
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)

__all__ = ("ApiKeyService", "IssuedKey", "KeyRequest")

_ADMIN = "admin"


class KeyRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What a new key should be."""

    name: str
    scopes: tuple[str, ...] = DEFAULT_KEY_SCOPES
    expires_at: datetime | None = None
    """Must carry a time zone. None: the issuing key's expiry (never, for a key without one)."""
    rate_limit_per_minute: int | None = None
    """None: the issuing key's limit (unlimited, for a key without one)."""


class IssuedKey(msgspec.Struct, frozen=True):
    """A freshly created key: the row, and the full key that is shown this once."""

    row: ApiKey
    key: str


class ApiKeyService:
    """A tenant's keys. Every query filters on ``tenant_id``."""

    def __init__(self, session: AsyncSession, tenant_id: uuid.UUID) -> None:
        self._session = session
        self._tenant_id = tenant_id

    async def issue(self, request: KeyRequest, *, issuer: Principal | None, user_id: uuid.UUID | None) -> IssuedKey:
        """Create a key. An issuing key may only grant scopes it holds itself (no escalation), an expiry no later
        than its own and a rate limit no higher than its own; absent, the child gets the issuer's. ``issuer`` None
        is the operator: the key has no parent.
        """
        try:
            scopes = validate_scopes(request.scopes)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from exc
        if issuer is not None:
            missing = [scope for scope in scopes if not issuer.has_scope(scope)]
            if missing:
                raise PermissionDeniedError(f"a key cannot grant scopes it does not hold: {', '.join(missing)}")
        expires_at = _utc_expiry(request.expires_at)
        if expires_at is not None and expires_at <= utc_now():
            raise InvalidInputError("expiresAt must be in the future - at `$.expiresAt`")
        rate_limit = request.rate_limit_per_minute
        parent = await self._issuing_key(issuer) if issuer is not None else None
        if parent is not None:
            expires_at = _at_most(expires_at, parent.expires_at, _later_expiry)
            rate_limit = _at_most(rate_limit, parent.rate_limit_per_minute, _higher_rate_limit)
        elif issuer is not None:
            # A principal from a ``cloudeasyml_authenticate`` plugin: no row to point at, but still no more rate.
            rate_limit = _at_most(rate_limit, issuer.rate_limit_per_minute, _higher_rate_limit)
        key_id, secret = generate_key()
        row = ApiKey(
            id=key_id,
            tenant_id=self._tenant_id,
            user_id=user_id,
            name=request.name,
            secret_hash=hash_secret(secret),
            scopes=list(scopes),
            expires_at=expires_at,
            rate_limit_per_minute=rate_limit,
            created_at=utc_now(),
            created_by_key_id=parent.id if parent is not None else None,
        )
        self._session.add(row)
        await self._session.flush()
        if parent is not None:
            await self._check_still_unrevoked(parent.id)
        return IssuedKey(row=row, key=f"{key_id}.{secret}")

    async def list(self) -> list[ApiKey]:
        """Every key of the tenant, newest first."""
        result = await self._session.scalars(
            select(ApiKey).where(ApiKey.tenant_id == self._tenant_id).order_by(ApiKey.created_at.desc())
        )
        return list(result)

    # builtins.list: in this class body, `list` names the method above.
    async def revoke(self, key_id: str, *, actor: Principal | None) -> builtins.list[str]:
        """Revoke one of the tenant's keys and every key it created, transitively, in the caller's transaction
        (idempotent), with a ``key.revoked`` event per key revoked. Returns the ids to drop from caches: ``key_id``
        first, then every key revoked by this call.

        ``actor`` is the key asking (None: the operator, bound by neither rule below). Only a key holding
        ``admin`` may revoke a key holding ``admin`` (``PermissionDeniedError``), and the tenant cannot revoke
        its last usable (unrevoked, unexpired) admin key, nor a key whose descendants include it
        (``ConflictError``). Another tenant's key is reported as not found.
        """
        # One revocation at a time per tenant, so two concurrent ones cannot each leave the other's admin key as
        # "the last one". NO KEY UPDATE: inserts referencing the tenant (new keys, usage) are not blocked.
        await self._session.execute(
            select(Tenant.id).where(Tenant.id == self._tenant_id).with_for_update(key_share=True)
        )
        target = await self._session.scalar(
            select(ApiKey).where(ApiKey.tenant_id == self._tenant_id, ApiKey.id == key_id)
        )
        if target is None:
            raise NotFoundError(f"API key {key_id!r} not found")
        pending = [row for row in await self._subtree(key_id) if row.revoked_at is None]
        if actor is not None:
            self._check_may_revoke(actor, target, pending)
            await self._keep_an_admin_key(target, pending)
        now = utc_now()
        revoked: list[str] = []
        while pending:
            for row in pending:
                row.revoked_at = now
                revoked.append(row.id)
                await emit(self._session, self._tenant_id, "key.revoked", _revoked_data(row, key_id, actor))
            # On PostgreSQL this UPDATE waits for any transaction still issuing a child of these keys (it holds
            # their rows FOR SHARE); reading the tree again then finds that child. Later issuers see the revocation.
            await self._session.flush()
            pending = [row for row in await self._subtree(key_id) if row.revoked_at is None]
        return [key_id, *(revoked_id for revoked_id in revoked if revoked_id != key_id)]

    async def _issuing_key(self, issuer: Principal) -> ApiKey | None:
        """The issuer's row, locked against revocation until this transaction ends (None: not a stored key).

        The row is read from the database, not the authenticator's cache: a key revoked through another process
        may still be cached here, and a child made now would escape the revocation.
        """
        parent = await self._session.scalar(
            select(ApiKey)
            .where(ApiKey.tenant_id == self._tenant_id, ApiKey.id == issuer.key_id)
            .with_for_update(read=True)
        )
        if parent is None:
            return None
        if parent.revoked_at is not None:
            raise AuthenticationError("API key has been revoked")
        if parent.expires_at is not None and parent.expires_at <= utc_now():
            raise AuthenticationError("API key has expired")
        return parent

    async def _check_still_unrevoked(self, parent_id: str) -> None:
        """Read the parent again now that this transaction has written: SQLite takes no lock for ``FOR SHARE``, so
        a revocation may have committed since the first read; its writer lock now orders the two.
        """
        revoked_at = await self._session.scalar(select(ApiKey.revoked_at).where(ApiKey.id == parent_id))
        if revoked_at is not None:
            raise AuthenticationError("API key has been revoked")

    async def _subtree(self, key_id: str) -> Sequence[ApiKey]:
        """The key and every key below it."""
        tree = (
            select(ApiKey.id)
            .where(ApiKey.tenant_id == self._tenant_id, ApiKey.id == key_id)
            .cte("key_tree", recursive=True)
        )
        # UNION (not UNION ALL) stops even on a cycle, which the schema cannot rule out by itself.
        tree = tree.union(
            select(ApiKey.id).where(ApiKey.tenant_id == self._tenant_id, ApiKey.created_by_key_id == tree.c.id)
        )
        result = await self._session.scalars(select(ApiKey).where(ApiKey.id.in_(select(tree.c.id))))
        return result.all()

    @staticmethod
    def _check_may_revoke(actor: Principal, target: ApiKey, pending: Sequence[ApiKey]) -> None:
        if _ADMIN in actor.scopes:
            return
        if _ADMIN in target.scopes:
            raise PermissionDeniedError(f"only a key holding 'admin' may revoke the admin key {target.id!r}")
        if any(_ADMIN in row.scopes for row in pending):
            raise PermissionDeniedError(
                f"revoking {target.id!r} would revoke an admin key it created; only a key holding 'admin' may"
            )

    async def _keep_an_admin_key(self, target: ApiKey, pending: Sequence[ApiKey]) -> None:
        """Refuse a revocation that would leave the tenant without a usable admin key."""
        going = {row.id for row in pending if _ADMIN in row.scopes}
        if not going:
            return
        now = utc_now()
        usable = await self._session.execute(
            select(ApiKey.id, ApiKey.scopes).where(
                ApiKey.tenant_id == self._tenant_id,
                ApiKey.revoked_at.is_(None),
                or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
            )
        )
        if any(_ADMIN in scopes and key_id not in going for key_id, scopes in usable):
            return
        which = "is" if target.id in going else "would revoke (with the keys it created)"
        raise ConflictError(
            f"API key {target.id!r} {which} the tenant's last usable admin key; the last admin key cannot be "
            "revoked through the API"
        )


def _revoked_data(row: ApiKey, root_id: str, actor: Principal | None) -> dict[str, str | None]:
    """The ``data`` of a ``key.revoked`` event."""
    return {
        "keyId": row.id,
        "name": row.name,
        "revokedAt": rfc3339(row.revoked_at) if row.revoked_at is not None else None,
        "revokedWith": root_id,
        "revokedBy": actor.key_id if actor is not None else None,
    }


def _utc_expiry(value: datetime | None) -> datetime | None:
    """An expiry in UTC; a value without a time zone, or one outside the representable range once converted to
    UTC (``9999-12-31T23:59:59-05:00``), is an ``InvalidInputError`` naming the field.
    """
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInputError(
            "expiresAt must carry a time zone, e.g. 2030-01-01T00:00:00Z or +02:00 - at `$.expiresAt`"
        )
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidInputError("expiresAt is out of range once converted to UTC - at `$.expiresAt`") from None


_Limit = TypeVar("_Limit", datetime, int)


def _at_most(requested: _Limit | None, limit: _Limit | None, refusal: Callable[[_Limit], str]) -> _Limit | None:
    """What a child key gets of a bounded property: the issuing key's ``limit`` when it asks for none, what it asks
    for when that is within the limit; past it, an ``InvalidInputError`` worded by ``refusal(limit)``.
    """
    if limit is None:
        return requested
    if requested is None:
        return limit
    if requested > limit:
        raise InvalidInputError(refusal(limit))
    return requested


def _later_expiry(limit: datetime) -> str:
    return f"expiresAt must not be later than the issuing key's expiry, {limit.isoformat()} - at `$.expiresAt`"


def _higher_rate_limit(limit: int) -> str:
    return (
        f"rateLimitPerMinute must not exceed the issuing key's limit of {limit} per minute - at `$.rateLimitPerMinute`"
    )
