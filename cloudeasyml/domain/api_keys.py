"""Issuing, listing and revoking a tenant's API keys."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cloudeasyml.db.models import ApiKey
from cloudeasyml.db.types import utc_now
from cloudeasyml.domain.key_format import generate_key, hash_secret
from cloudeasyml.domain.principal import DEFAULT_KEY_SCOPES, Principal, validate_scopes
from cloudeasyml.errors import InvalidInputError, NotFoundError, PermissionDeniedError

__all__ = ("ApiKeyService", "IssuedKey", "KeyRequest")


class KeyRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What a new key should be."""

    name: str
    scopes: tuple[str, ...] = DEFAULT_KEY_SCOPES
    expires_at: datetime | None = None
    rate_limit_per_minute: int | None = None


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
        """Create a key. An issuing key may only grant scopes it holds itself (no escalation)."""
        try:
            scopes = validate_scopes(request.scopes)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from exc
        if issuer is not None:
            missing = [scope for scope in scopes if not issuer.has_scope(scope)]
            if missing:
                raise PermissionDeniedError(f"a key cannot grant scopes it does not hold: {', '.join(missing)}")
        if request.expires_at is not None and request.expires_at <= utc_now():
            raise InvalidInputError("expiresAt must be in the future")
        key_id, secret = generate_key()
        row = ApiKey(
            id=key_id,
            tenant_id=self._tenant_id,
            user_id=user_id,
            name=request.name,
            secret_hash=hash_secret(secret),
            scopes=list(scopes),
            expires_at=request.expires_at,
            rate_limit_per_minute=request.rate_limit_per_minute,
            created_at=utc_now(),
        )
        self._session.add(row)
        await self._session.flush()
        return IssuedKey(row=row, key=f"{key_id}.{secret}")

    async def list(self) -> list[ApiKey]:
        """Every key of the tenant, newest first."""
        result = await self._session.scalars(
            select(ApiKey).where(ApiKey.tenant_id == self._tenant_id).order_by(ApiKey.created_at.desc())
        )
        return list(result)

    async def revoke(self, key_id: str) -> ApiKey:
        """Revoke one of the tenant's keys (idempotent); another tenant's key is reported as not found."""
        row = await self._session.scalar(select(ApiKey).where(ApiKey.tenant_id == self._tenant_id, ApiKey.id == key_id))
        if row is None:
            raise NotFoundError(f"API key {key_id!r} not found")
        if row.revoked_at is None:
            row.revoked_at = utc_now()
            await self._session.flush()
        return row
