"""The platform's application class: Litestar, with ``POST /predict`` served ahead of the router.

``POST /predict`` is the hot path: on a small machine every microsecond of event-loop CPU it costs is taken from
the models. Litestar's entry for a request (its exception middleware and the wrapped ``send`` it builds, path
normalisation, route lookup, the route's own exception middleware, the app middleware's public-path check)
cost about a quarter of the loop's work on a prediction (in-process profile of MiniLM requests). So
``PlatformApp`` serves exactly ``POST /predict`` itself, with the same parts the route uses:

- the key is authenticated and rate-limited by ``authenticate_scope``, as ``ApiKeyMiddleware`` does;
- the answer comes from ``prediction``, the route's own handler body;
- any exception is answered by ``send_problem`` with the app's problem-details handlers.

Before either, ``serve_logged`` gives the request its id (``X-Request-ID``) and, when it ends, its access-log line,
and a POST with an ``Idempotency-Key`` goes through ``cloudeasyml.api.idempotency`` (run once, replayed after).

Every other request goes through Litestar unchanged, as do ``/predict`` with another method or under a root
path. The route stays registered, so the OpenAPI document and those cases behave as before.
"""

from __future__ import annotations

from litestar import Litestar
from litestar.types import HTTPScope, LifeSpanReceive, LifeSpanScope, LifeSpanSend, Receive, Scope, Send

from cloudeasyml.api.auth import authenticate_scope
from cloudeasyml.api.controllers.inference import prediction
from cloudeasyml.api.idempotency import idempotency_key, serve_idempotent
from cloudeasyml.api.problems import send_problem
from cloudeasyml.api.raw_http import send_json
from cloudeasyml.api.request_log import RequestObserver, serve_logged

__all__ = ("PlatformApp",)


class PlatformApp(Litestar):
    """A ``Litestar`` app that answers ``POST /predict`` without going through its router."""

    async def __call__(
        self, scope: Scope | LifeSpanScope, receive: Receive | LifeSpanReceive, send: Send | LifeSpanSend
    ) -> None:
        """Give every HTTP request its id and access-log line; serve ``POST /predict`` directly, hand everything
        else to Litestar.
        """
        if scope["type"] == "http":
            await serve_logged(scope, receive, send, self._dispatch, self._observe())  # type: ignore[arg-type]
            return
        await super().__call__(scope, receive, send)

    def _observe(self) -> RequestObserver | None:
        """The request metrics' observer, found once (a ``State`` lookup per request costs more)."""
        observe = self.__dict__.get("_request_observer")
        if observe is None:
            services = self.state.get("services")
            observe = self.__dict__["_request_observer"] = services.metrics.observe_request if services else None
        return observe

    async def _dispatch(self, scope: HTTPScope, receive: Receive, send: Send) -> None:
        key = idempotency_key(scope)
        if key is not None:  # one layer for every POST, the fast path's and the router's
            scope["app"] = scope["litestar_app"] = self
            await serve_idempotent(scope, receive, send, self._route, key)
            return
        await self._route(scope, receive, send)

    async def _route(self, scope: HTTPScope, receive: Receive, send: Send) -> None:
        if (
            scope["path"] == "/predict"
            and scope["method"] == "POST"
            and not self.before_send  # hooks on every answer: leave them to Litestar
        ):
            await self._predict(scope, receive, send)
            return
        await Litestar.__call__(self, scope, receive, send)

    async def _predict(self, scope: HTTPScope, receive: Receive, send: Send) -> None:
        scope["app"] = scope["litestar_app"] = self
        scope["path_template"] = "/predict"  # as Litestar's router sets it
        try:
            await authenticate_scope(scope)
            content = await prediction(scope, receive, None)
        except Exception as exc:  # noqa: BLE001 - every error is answered, as Litestar's exception middleware does
            await send_problem(scope, receive, send, exc)
            return
        await send_json(send, content)
