"""The platform operator's API keys (scope ``operator``), made and revoked from the CLI only.

An operator key belongs to no tenant: it manages tenants (``/operator/...``) and holds no tenant scope. No key can
make one over HTTP (``operator`` is not a scope a tenant key may be given), so a tenant's ``admin`` never reaches it.
"""

from __future__ import annotations

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cloudeasyml.core.clock import utc_now
from cloudeasyml.db.models import OperatorKey
from cloudeasyml.domain.key_format import OPERATOR_KEY_PREFIX, generate_key, hash_secret
from cloudeasyml.errors import NotFoundError

__all__ = ("IssuedOperatorKey", "issue_operator_key", "list_operator_keys", "revoke_operator_key")


class IssuedOperatorKey(msgspec.Struct, frozen=True):
    """A new operator key: the row, and the full key, shown this once."""

    row: OperatorKey
    key: str


async def issue_operator_key(session: AsyncSession, name: str) -> IssuedOperatorKey:
    """Create an operator key named ``name`` in the caller's transaction."""
    key_id, secret = generate_key(OPERATOR_KEY_PREFIX)
    row = OperatorKey(id=key_id, name=name, secret_hash=hash_secret(secret), created_at=utc_now())
    session.add(row)
    await session.flush()
    return IssuedOperatorKey(row=row, key=f"{key_id}.{secret}")


async def list_operator_keys(session: AsyncSession) -> list[OperatorKey]:
    """Every operator key, newest first."""
    return list(await session.scalars(select(OperatorKey).order_by(OperatorKey.created_at.desc())))


async def revoke_operator_key(session: AsyncSession, key_id: str) -> OperatorKey:
    """Revoke an operator key (idempotent). Servers refuse it within ``server.key_cache_seconds``."""
    row = await session.get(OperatorKey, key_id)
    if row is None:
        raise NotFoundError(f"no operator key {key_id!r}")
    if row.revoked_at is None:
        row.revoked_at = utc_now()
        await session.flush()
    return row
