"""The tenant web console (``/console``): static HTML, vanilla JavaScript modules (no framework, no build step) and a
style sheet, shipped in the wheel and served by the app itself.

The console holds no server-side session: its script calls the same public JSON API as every other client, with
the API key the user signs in with sent as ``Authorization: Bearer`` from ``sessionStorage`` (never a URL, never
``localStorage``, never a cookie, so there is no CSRF surface). The pages are public paths (``PUBLIC_PATHS`` in
``cloudeasyml.api.auth``): they hold nothing of any tenant, and every API call they make needs the key and its
scopes. Every console response carries ``SECURITY_HEADERS``: a strict Content-Security-Policy (no inline script,
nothing from another origin, never framed), ``nosniff``, no referrer and ``X-Frame-Options: DENY``. The routes are
left out of the OpenAPI document (they are not part of the API).
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Any, Final

from litestar import Controller, Request, Response, get
from litestar.params import FromPath

from cloudeasyml.api.problems import problem

__all__ = ("ASSETS", "CONTENT_SECURITY_POLICY", "SECURITY_HEADERS", "ConsoleController")

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
"""Only the console's own files run or style the page (no inline script or style attribute, no other origin); its
script talks to this origin only; no page may frame it."""

SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    # A new release's files must replace the old ones at once: revalidated on each load, never stored stale.
    "Cache-Control": "no-cache",
}
"""Headers of every console response, its 404s included."""

ASSETS: Final = {
    "index.html": "text/html",
    "console.css": "text/css",
    # The page's module (sign-in, navigation), the shared parts, and one module per page (the operator's last).
    **{
        f"{name}.js": "text/javascript"
        for name in (
            *("console", "core", "models", "deployments", "keys", "usage", "webhooks", "batches"),
            *("tenants", "audit", "plans"),
        )
    },
}
"""The console's files (in ``static/``) and their media types (Litestar adds ``charset=utf-8``); nothing else under
``/console`` is served."""


@cache
def _asset(name: str) -> bytes:
    """The bytes of one of ``ASSETS``, read once from the package (wheel or checkout)."""
    return files(__name__).joinpath("static", name).read_bytes()


class ConsoleController(Controller):
    """``GET /console`` (the single page; the page's own routes are in the URL fragment) and its files."""

    path = "/console"
    include_in_schema = False

    @get("/", name="console")
    async def page(self) -> Response[bytes]:
        """The console's page."""
        return _serve("index.html")

    # A path parameter, not a name: every path under /console is answered here, a 404 with the same headers too.
    @get("/{name:path}", name="console-asset")
    async def asset(self, request: Request[Any, Any, Any], name: FromPath[str]) -> Response[Any]:
        """One of the console's files; any other path is a 404 (with the same headers)."""
        name = name.lstrip("/")
        if name not in ASSETS:
            return problem(request, 404, "no such console file", headers=dict(SECURITY_HEADERS))
        return _serve(name)


def _serve(name: str) -> Response[bytes]:
    return Response(_asset(name), media_type=ASSETS[name], headers=dict(SECURITY_HEADERS))
