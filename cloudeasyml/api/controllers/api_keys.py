"""A tenant's API keys."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.params import Body, FromPath

from cloudeasyml.api.auth import requires_scope
from cloudeasyml.api.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from cloudeasyml.domain.api_keys import ApiKeyService, KeyRequest
from cloudeasyml.domain.principal import Principal
from cloudeasyml.services import Services

__all__ = ("ApiKeyController",)


class ApiKeyController(Controller):
    """Issue, list and revoke keys of the caller's tenant."""

    path = "/api-keys"
    tags = ["API keys"]

    @post("/", summary="Create an API key", guards=[requires_scope("keys:write")])
    async def issue_key(
        self, request: Request[Principal, Any, Any], data: Annotated[ApiKeyCreate, Body()]
    ) -> ApiKeyCreated:
        """Create a key with at most the caller's own scopes, an expiry no later than the caller's and a rate limit
        no higher (absent: the caller's). The full ``key`` is in this response only.
        """
        services: Services = request.app.state.services
        principal = request.user
        async with services.sessions.begin() as session:
            issued = await ApiKeyService(session, principal.tenant_id).issue(
                KeyRequest(
                    name=data.name,
                    scopes=tuple(data.scopes),
                    expires_at=data.expires_at,
                    rate_limit_per_minute=data.rate_limit_per_minute,
                ),
                issuer=principal,
                user_id=principal.user_id,
            )
        return ApiKeyCreated(**msgspec.structs.asdict(ApiKeyRead.of(issued.row)), key=issued.key)

    @get("/", summary="List API keys", guards=[requires_scope("keys:read")])
    async def list_keys(self, request: Request[Principal, Any, Any]) -> list[ApiKeyRead]:
        """The tenant's keys, newest first; never secrets or hashes."""
        services: Services = request.app.state.services
        async with services.sessions() as session:
            rows = await ApiKeyService(session, request.user.tenant_id).list()
        return [ApiKeyRead.of(row) for row in rows]

    @delete("/{key_id:str}", summary="Revoke an API key", guards=[requires_scope("keys:write")])
    async def revoke_key(self, request: Request[Principal, Any, Any], key_id: FromPath[str]) -> None:
        """Revoke a key and every key it created, transitively; they stop working at once (on every process when
        they share Redis). Only an ``admin`` key may revoke an ``admin`` key (403), and the tenant's last usable
        admin key cannot be revoked (409). Another tenant's key is a 404.
        """
        services: Services = request.app.state.services
        async with services.sessions.begin() as session:
            revoked = await ApiKeyService(session, request.user.tenant_id).revoke(key_id, actor=request.user)
        await services.keys_revoked(revoked)
