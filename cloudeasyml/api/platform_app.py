"""The platform's application class: Litestar, with every HTTP request given its id and access-log line first.

``PlatformApp`` runs each HTTP request through ``serve_logged`` (its id in ``X-Request-ID``, its access-log line and
request metrics when it ends), then, for a POST with an ``Idempotency-Key``, through ``cloudeasyml.api.idempotency``
(run once, replayed after), then through ``entry``: Litestar itself, or, when ``create_app`` found the app's
configuration to allow it, the ``POST /predict`` fast path (``cloudeasyml.api.fast_path``) in front of Litestar.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from litestar import Litestar
from litestar.types import HTTPScope, LifeSpanReceive, LifeSpanScope, LifeSpanSend, Receive, Scope, Send

from cloudeasyml.api.idempotency import idempotency_key, serve_idempotent
from cloudeasyml.api.request_log import RequestObserver, serve_logged

__all__ = ("HTTPApp", "PlatformApp")

HTTPApp = Callable[[HTTPScope, Receive, Send], Awaitable[None]]
"""An ASGI app for HTTP requests only."""


class PlatformApp(Litestar):
    """A ``Litestar`` app whose HTTP requests pass through ``serve_logged`` and then ``entry``."""

    entry: HTTPApp
    """What serves an HTTP request once it has its id: Litestar (the default) or the fast path in front of it."""
    fast_path_blockers: tuple[str, ...] = ()
    """Why ``create_app`` left the ``POST /predict`` fast path out (empty: it is in ``entry``)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.entry = self.litestar_entry

    async def __call__(
        self, scope: Scope | LifeSpanScope, receive: Receive | LifeSpanReceive, send: Send | LifeSpanSend
    ) -> None:
        """Give every HTTP request its id and access-log line, then hand it to ``entry``; other scopes to Litestar."""
        if scope["type"] == "http":
            await serve_logged(scope, receive, send, self._dispatch, self._observe())  # type: ignore[arg-type]
            return
        await super().__call__(scope, receive, send)

    async def _dispatch(self, scope: HTTPScope, receive: Receive, send: Send) -> None:
        key = idempotency_key(scope)
        if key is not None:  # one layer for every POST, the fast path's and the router's
            scope["app"] = scope["litestar_app"] = self
            await serve_idempotent(scope, receive, send, self.entry, key)
            return
        await self.entry(scope, receive, send)

    async def litestar_entry(self, scope: HTTPScope, receive: Receive, send: Send) -> None:
        """Litestar's own entry for an HTTP request (the router, with all of the app's configuration)."""
        await Litestar.__call__(self, scope, receive, send)

    def _observe(self) -> RequestObserver | None:
        """The request metrics' observer, found once (a ``State`` lookup per request costs more)."""
        observe = self.__dict__.get("_request_observer")
        if observe is None:
            services = self.state.get("services")
            observe = self.__dict__["_request_observer"] = services.metrics.observe_request if services else None
        return observe
