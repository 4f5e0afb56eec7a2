"""Bearer API keys → ``Principal`` in ``scope["user"]``; scope guards for handlers."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.types import Guard

from cloudeasyml.domain.principal import Principal
from cloudeasyml.errors import AuthenticationError, PermissionDeniedError

__all__ = ("PUBLIC_PATHS", "ApiKeyMiddleware", "requires_scope")

PUBLIC_PATHS = (r"^/health", r"^/schema", r"^/v2/health", r"^/metrics$")
"""Paths that answer without a key (probes, docs, Prometheus scraping)."""

_PREFIX = "bearer "


class ApiKeyMiddleware(AbstractAuthenticationMiddleware):
    """Authenticates ``Authorization: Bearer <key>`` (or ``X-API-Key: <key>``) through the app's
    ``ApiKeyAuthenticator``."""

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        """The caller's principal, or ``AuthenticationError`` (401)."""
        header = connection.headers.get("authorization")
        if header is not None and header[: len(_PREFIX)].lower() == _PREFIX:
            token = header[len(_PREFIX) :].strip()
        else:
            token = connection.headers.get("x-api-key")
        if not token:
            raise AuthenticationError("missing API key: send 'Authorization: Bearer <key>'")
        services = connection.app.state.services
        principal = await services.authenticator.authenticate(token)
        services.rate_limiter.check(principal.key_id, principal.rate_limit_per_minute)
        return AuthenticationResult(user=principal, auth=principal.key_id)


def requires_scope(scope: str) -> Guard:
    """A guard that lets through callers whose key holds ``scope`` (403 otherwise). It is async: Litestar runs
    sync guards in a thread pool, which costs more than the check."""

    async def guard(connection: ASGIConnection[Any, Principal, Any, Any], _handler: BaseRouteHandler) -> None:
        if not connection.user.has_scope(scope):
            raise PermissionDeniedError(f"this API key lacks the {scope!r} scope")

    return guard
