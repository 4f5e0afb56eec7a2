"""Bearer API keys → ``Principal`` in ``scope["user"]``; scope guards for handlers."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.types import ASGIApp, Guard, Receive, Scope, Send

from cloudeasyml.domain.principal import Principal
from cloudeasyml.errors import AuthenticationError, PermissionDeniedError

__all__ = (
    "PUBLIC_PATHS",
    "ApiKeyMiddleware",
    "authenticate_scope",
    "is_public",
    "require",
    "requires_any_scope",
    "requires_scope",
    "token_of",
)

PUBLIC_PATHS = (
    r"^/health(/ready)?/?\Z",
    r"^/v2/health/(live|ready)/?\Z",
    r"^/metrics/?\Z",
    r"^/schema(/.*)?\Z",
    r"^/console(/.*)?\Z",
)
"""The paths that answer without a key (probes, Prometheus scraping, the API's documentation, the web console's
static files, which hold nothing of a tenant: its script calls the API with the key), whole paths: this list,
not a flag on the route, is what ``ApiKeyMiddleware`` (and the ``POST /predict`` fast path, which is not public)
and the OpenAPI document's ``security: []`` go by. ``tests/integration/test_public_routes.py`` walks the app's
routes and holds every other one to a key."""

_PUBLIC = re.compile("|".join(PUBLIC_PATHS))


class ApiKeyMiddleware:
    """Authenticates ``Authorization: Bearer <key>`` (or ``X-API-Key: <key>``) through the app's
    ``ApiKeyAuthenticator`` and puts the ``Principal`` in ``scope["user"]``.

    A plain ASGI middleware rather than Litestar's ``AbstractAuthenticationMiddleware``: it reads the raw
    header list instead of building a ``Headers`` object and a connection per request, which matters on the
    prediction path. Errors it raises are turned into problem details by the app's exception handlers.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Authenticate, rate-limit, then pass the request on (public paths pass untouched)."""
        if scope["type"] == "http" and not is_public(scope["path"]):
            await authenticate_scope(scope)
        await self.app(scope, receive, send)


def is_public(path: str) -> bool:
    """Whether ``path`` answers without a key (``PUBLIC_PATHS``)."""
    return _PUBLIC.match(path) is not None


def token_of(scope: Scope) -> str | None:
    """The API key the request of ``scope`` sent, if any."""
    return _token(scope["headers"])


async def authenticate_scope(scope: Scope) -> Principal:
    """Authenticate and rate-limit the request of ``scope``; put its ``Principal`` in ``scope["user"]``. A request
    already authenticated by an outer layer (``cloudeasyml.api.idempotency``) is not counted twice.
    """
    principal = scope.get("user")
    if isinstance(principal, Principal):
        return principal
    token = _token(scope["headers"])
    if not token:
        raise AuthenticationError("missing API key: send 'Authorization: Bearer <key>'")
    services = scope["litestar_app"].state.services
    principal = await services.authenticator.authenticate(token)
    rate = principal.rate_limit_per_minute
    plan_rate = services.plans.rate_limit(principal.plan)  # a dict lookup: the stored plans are held in memory
    if plan_rate is not None and (not rate or plan_rate < rate):
        rate = plan_rate
    if rate:
        await services.rate_limiter.check(principal.key_id, rate)
    scope["user"] = principal
    scope["auth"] = principal.key_id
    return principal


def _token(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    api_key = None
    for name, value in headers:
        if name == b"authorization":
            if value[:7].lower() == b"bearer ":
                return value[7:].strip().decode("latin-1")
        elif name == b"x-api-key":
            api_key = value.decode("latin-1")
    return api_key


def require(principal: Principal, scope: str) -> None:
    """Raise ``PermissionDeniedError`` (403) unless ``principal`` holds ``scope``."""
    if not principal.has_scope(scope):
        raise PermissionDeniedError(f"this API key lacks the {scope!r} scope")


def requires_scope(scope: str) -> Guard:
    """A guard that lets through callers whose key holds ``scope`` (403 otherwise). It is async: Litestar runs
    sync guards in a thread pool, which costs more than the check.
    """

    async def guard(connection: ASGIConnection[Any, Principal, Any, Any], _handler: BaseRouteHandler) -> None:
        require(connection.user, scope)

    return guard


def requires_any_scope(*scopes: str) -> Guard:
    """A guard that lets through callers whose key holds one of ``scopes`` (403 naming them otherwise)."""

    async def guard(connection: ASGIConnection[Any, Principal, Any, Any], _handler: BaseRouteHandler) -> None:
        if not any(connection.user.has_scope(scope) for scope in scopes):
            raise PermissionDeniedError(f"this API key lacks the {' or '.join(map(repr, scopes))} scope")

    return guard
