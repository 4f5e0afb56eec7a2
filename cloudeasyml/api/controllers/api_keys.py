"""A tenant's API keys."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, delete, get, post
from litestar.params import Body, FromPath
from sqlalchemy.ext.asyncio import AsyncSession

from cloudeasyml.api.auth import requires_scope
from cloudeasyml.api.deps import MANAGEMENT, WRITES, Injected
from cloudeasyml.api.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from cloudeasyml.domain.api_keys import ApiKeyService, KeyRequest
from cloudeasyml.domain.audit import AuditTrail, created
from cloudeasyml.domain.principal import Principal
from cloudeasyml.services import Services

__all__ = ("ApiKeyController",)


class ApiKeyController(Controller):
    """Issue, list and revoke keys of the caller's tenant (``api_keys`` is scoped to it: see ``api.deps``)."""

    path = "/api-keys"
    tags = ["API keys"]
    dependencies = MANAGEMENT

    @post("/", summary="Create an API key", guards=[requires_scope("keys:write")], dependencies=WRITES)
    async def issue_key(
        self,
        api_keys: Injected[ApiKeyService],
        caller: Injected[Principal],
        audit: Injected[AuditTrail],
        data: Annotated[ApiKeyCreate, Body()],
    ) -> ApiKeyCreated:
        """Create a key with at most the caller's own scopes, an expiry no later than the caller's and a rate limit
        no higher (absent: the caller's). The full ``key`` is in this response only.
        """
        issued = await api_keys.issue(
            KeyRequest(
                name=data.name,
                scopes=tuple(data.scopes),
                expires_at=data.expires_at,
                rate_limit_per_minute=data.rate_limit_per_minute,
            ),
            issuer=caller,
            user_id=caller.user_id,
        )
        read = ApiKeyRead.of(issued.row)
        fields = {
            "name": read.name,
            "scopes": read.scopes,
            "expiresAt": read.expires_at,
            "rateLimitPerMinute": read.rate_limit_per_minute,
            "createdByKeyId": read.created_by_key_id,
        }
        audit.record("key.created", "key", read.key_id, created(fields))  # never the key itself
        return ApiKeyCreated(**msgspec.structs.asdict(read), key=issued.key)

    @get("/", summary="List API keys", guards=[requires_scope("keys:read")])
    async def list_keys(self, api_keys: Injected[ApiKeyService]) -> list[ApiKeyRead]:
        """The tenant's keys, newest first; never secrets or hashes."""
        return [ApiKeyRead.of(row) for row in await api_keys.list()]

    @delete("/{key_id:str}", summary="Revoke an API key", guards=[requires_scope("keys:write")], dependencies=WRITES)
    async def revoke_key(
        self,
        api_keys: Injected[ApiKeyService],
        caller: Injected[Principal],
        db_session: Injected[AsyncSession],
        services: Injected[Services],
        audit: Injected[AuditTrail],
        key_id: FromPath[str],
    ) -> None:
        """Revoke a key and every key it created, transitively; they stop working at once (on every process when
        they share Redis). Only an ``admin`` key may revoke an ``admin`` key (403), and the tenant's last usable
        admin key cannot be revoked (409). Another tenant's key is a 404.
        """
        revoked = await api_keys.revoke(key_id, actor=caller)
        changes = {"revoked": {"from": False, "to": True}, "keysRevoked": {"to": revoked}}
        audit.record("key.revoked", "key", key_id, changes)
        # Committed before the caches forget: a lookup in between would read, and keep, the unrevoked rows.
        await db_session.commit()
        await services.keys_revoked(revoked)
