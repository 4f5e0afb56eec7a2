"""``POST /predict`` served ahead of Litestar's router: an outer ASGI layer that ``create_app`` adds only when the
app's configuration is one this layer is known to be equivalent to.

``POST /predict`` is the hot path: on a small machine every microsecond of event-loop CPU it costs is taken from
the models. Litestar's entry for a request (its exception middleware and the wrapped ``send`` it builds, path
normalisation, route lookup, the route's own exception middleware, the app middleware's public-path check) cost
about a quarter of the loop's work on a prediction (in-process profile of MiniLM requests). ``PredictFastPath``
serves exactly ``POST /predict`` itself with the same parts the route uses:

- the key is authenticated and rate-limited by ``authenticate_scope``, as ``ApiKeyMiddleware`` does;
- the answer comes from ``prediction``, the route's own handler body;
- any exception is answered by ``send_problem`` with the app's problem-details handlers.

That is equivalent only while Litestar would add nothing else to the answer. ``fast_path_blockers`` lists what
would: CORS, allowed hosts, request and send hooks, middleware besides ``ApiKeyMiddleware``, plugins a bare
Litestar app does not have (OpenTelemetry's among them), compression, CSRF, app-wide guards, headers or cookies, a
path prefix, other exception handlers, or ``CLOUDEASYML_SERVER__FAST_PATH=false``. Any of them and ``create_app``
does not add the layer: every request goes through Litestar. A request under an ASGI root path (``--root-path``
behind a proxy) goes through Litestar too, checked per request since the server, not the app, sets it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Litestar
from litestar.types import HTTPScope, Receive, Send

from cloudeasyml.api.auth import ApiKeyMiddleware, authenticate_scope
from cloudeasyml.api.controllers.inference import prediction
from cloudeasyml.api.platform_app import HTTPApp
from cloudeasyml.api.problems import exception_handlers, send_problem
from cloudeasyml.api.raw_http import send_json

if TYPE_CHECKING:
    from cloudeasyml.settings import ServerSettings

__all__ = ("PredictFastPath", "fast_path_blockers")

_BARE_PLUGINS: frozenset[type] | None = None


def _bare_plugin_types() -> frozenset[type]:
    """The plugins every Litestar app has (schema generation, DI, OpenAPI, ...), found once."""
    global _BARE_PLUGINS  # noqa: PLW0603 - computed on first use: building an app costs milliseconds
    if _BARE_PLUGINS is None:
        _BARE_PLUGINS = frozenset(type(plugin) for plugin in Litestar(openapi_config=None).plugins)
    return _BARE_PLUGINS


def fast_path_blockers(app: Litestar, server: ServerSettings) -> list[str]:
    """What in ``app``'s configuration the fast path would skip (empty: it is equivalent to the router's route)."""
    reasons = [] if server.fast_path else ["CLOUDEASYML_SERVER__FAST_PATH is false"]
    settings: list[tuple[str, Any]] = [
        ("CORS", app.cors_config),
        ("allowed hosts", app.allowed_hosts),
        ("a before_request hook", app.before_request),
        ("an after_request hook", app.after_request),
        ("an after_response hook", app.after_response),
        ("before_send hooks", app.before_send),
        ("after_exception hooks", app.after_exception),
        ("compression", app.compression_config),
        ("CSRF", app.csrf_config),
        ("app-wide guards", app.guards),
        ("app-wide response headers", app.response_headers),
        ("app-wide response cookies", app.response_cookies),
        ("a path prefix", app.path not in ("", "/")),
    ]
    reasons += [name for name, value in settings if value]
    if list(app.middleware) != [ApiKeyMiddleware]:
        reasons.append("middleware besides ApiKeyMiddleware")
    extra = sorted(type(p).__name__ for p in app.plugins if type(p) not in _bare_plugin_types())
    if extra:
        reasons.append(f"plugins {', '.join(extra)}")
    if app.exception_handlers != exception_handlers:
        reasons.append("other exception handlers")
    return reasons


class PredictFastPath:
    """Answers ``POST /predict`` (no root path) itself; passes every other request to ``app`` (Litestar)."""

    def __init__(self, litestar: Litestar, app: HTTPApp) -> None:
        self.litestar = litestar
        self.app = app

    async def __call__(self, scope: HTTPScope, receive: Receive, send: Send) -> None:
        """Serve ``POST /predict``; hand everything else on."""
        if scope["path"] == "/predict" and scope["method"] == "POST" and not scope.get("root_path"):
            await self._predict(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _predict(self, scope: HTTPScope, receive: Receive, send: Send) -> None:
        scope["app"] = scope["litestar_app"] = self.litestar
        scope["path_template"] = "/predict"  # as Litestar's router sets it
        try:
            await authenticate_scope(scope)
            content = await prediction(scope, receive, None)
        except Exception as exc:  # noqa: BLE001 - every error is answered, as Litestar's exception middleware does
            await send_problem(scope, receive, send, exc)
            return
        await send_json(send, content)
