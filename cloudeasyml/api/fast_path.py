"""``POST /predict`` and the Open Inference Protocol's ``infer`` served ahead of Litestar's router: an outer ASGI
layer that ``create_app`` adds only when the app's configuration is one this layer is known to be equivalent to.

``POST /predict`` is the hot path: on a small machine every microsecond of event-loop CPU it costs is taken from
the models. Litestar's entry for a request (its exception middleware and the wrapped ``send`` it builds, path
normalisation, route lookup, the route's own exception middleware, the app middleware's public-path check) cost
about a quarter of the loop's work on a prediction (in-process profile of MiniLM requests); for a V2 ``infer`` (a
``@post`` handler, with its ``Request``, guard, path parameters and ``Response``) ``litestar/routes/http.py:handle``
was 1,876 of 3,118 profiled µs per request. ``PredictFastPath`` serves exactly ``POST /predict``, ``POST
/v2/models/{name}/infer`` and ``POST /v2/models/{name}/versions/{version}/infer`` itself with the same parts the
routes use:

- the key is authenticated and rate-limited by ``authenticate_scope``, as ``ApiKeyMiddleware`` does; the
  ``predict`` scope is required, as the V2 routes' guard requires it (``/predict``'s handler body checks it);
- the answer comes from ``prediction`` or ``infer_answer``, the routes' own handler bodies;
- any exception is answered by ``send_problem`` with the route's problem-details handlers (the V2 routes' add the
  protocol's ``error`` member).

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

from cloudeasyml.api.auth import ApiKeyMiddleware, authenticate_scope, require
from cloudeasyml.api.controllers.inference import prediction
from cloudeasyml.api.controllers.v2 import V2_EXCEPTION_HANDLERS, infer_answer
from cloudeasyml.api.platform_app import HTTPApp
from cloudeasyml.api.problems import exception_handlers, send_problem
from cloudeasyml.api.raw_http import send_json

if TYPE_CHECKING:
    from cloudeasyml.settings import ServerSettings

__all__ = ("PredictFastPath", "fast_path_blockers", "v2_infer_target")

_V2_MODELS = "/v2/models/"
_INFER = "/infer"
_OCTET_STREAM = b"application/octet-stream"
_HEADER_LENGTH = b"inference-header-content-length"

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


def v2_infer_target(path: str) -> tuple[str, str | None] | None:
    """``(name, version)`` when ``path`` is exactly a V2 ``infer`` route's (``/v2/models/{name}/infer`` or
    ``/v2/models/{name}/versions/{version}/infer``, no empty segment), else None: the router decides the rest.
    """
    if not (path.startswith(_V2_MODELS) and path.endswith(_INFER)):
        return None
    parts = path[len(_V2_MODELS) : -len(_INFER)].split("/")
    if len(parts) == 1 and parts[0]:
        return parts[0], None
    if len(parts) == 3 and parts[1] == "versions" and parts[0] and parts[2]:
        return parts[0], parts[2]
    return None


class PredictFastPath:
    """Answers ``POST /predict`` and ``POST`` to the V2 ``infer`` routes (no root path) itself; passes every other
    request to ``app`` (Litestar).
    """

    def __init__(self, litestar: Litestar, app: HTTPApp) -> None:
        self.litestar = litestar
        self.app = app

    async def __call__(self, scope: HTTPScope, receive: Receive, send: Send) -> None:
        """Serve ``POST /predict`` and V2 ``infer``; hand everything else on."""
        if scope["method"] == "POST" and not scope.get("root_path"):
            path = scope["path"]
            if path == "/predict":
                await self._predict(scope, receive, send)
                return
            target = v2_infer_target(path)
            if target is not None:
                await self._v2_infer(scope, receive, send, *target)
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

    async def _v2_infer(self, scope: HTTPScope, receive: Receive, send: Send, name: str, version: str | None) -> None:
        scope["app"] = scope["litestar_app"] = self.litestar
        # As Litestar's router sets them (the access log's and the metrics' route label, the handlers' parameters).
        if version is None:
            scope["path_template"] = "/v2/models/{name}/infer"
            scope["path_params"] = {"name": name}
        else:
            scope["path_template"] = "/v2/models/{name}/versions/{version}/infer"
            scope["path_params"] = {"name": name, "version": version}
        try:
            require(await authenticate_scope(scope), "predict")
            answer = await infer_answer(scope, receive, name, version)
        except Exception as exc:  # noqa: BLE001 - as in _predict, in the protocol's dialect
            await send_problem(scope, receive, send, exc, V2_EXCEPTION_HANDLERS)
            return
        if answer.header_length is None:
            await send_json(send, answer.body)
        else:
            length = str(answer.header_length).encode()
            await send_json(send, answer.body, content_type=_OCTET_STREAM, extra=((_HEADER_LENGTH, length),))
