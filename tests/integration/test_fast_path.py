"""The ``POST /predict`` fast path is on only where it is equivalent to Litestar's router: each app setting it would
skip switches it off, and then takes effect on ``/predict``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
from litestar.config.compression import CompressionConfig
from litestar.config.cors import CORSConfig
from litestar.exceptions import PermissionDeniedException
from litestar.plugins import InitPluginProtocol
from litestar.testing import AsyncTestClient
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from cloudeasyml.api.fast_path import PredictFastPath
from cloudeasyml.app import create_app
from cloudeasyml.domain.tenants import NewTenant
from cloudeasyml.settings import ServerSettings, Settings
from tests.conftest import bearer
from tests.integration.test_predict import deploy

POINT = {"x": 1.0, "y": 2.0}


@pytest.fixture(autouse=True)
def _sqlite_only(database_url: str) -> None:
    if "postgres" in database_url:
        pytest.skip("the fast path adds no persistence of its own: SQLite is enough")


@asynccontextmanager
async def _client(settings: Settings, plugin_manager: Any, **options: Any) -> AsyncIterator[AsyncTestClient]:
    app = create_app(settings, plugin_manager, **options)
    fast = isinstance(app.entry, PredictFastPath)
    assert fast == (not options and settings.server.fast_path), app.fast_path_blockers
    async with AsyncTestClient(app=app) as client:
        yield client


async def _predict(client: AsyncTestClient, tenant: NewTenant, **headers: str) -> Any:
    headers = {**bearer(tenant.key), **headers}
    deployment = (await client.post("/deployments", json={"modelName": "tiny"}, headers=headers)).json()
    body = {"deploymentId": deployment["id"], "inputs": [POINT]}
    return await client.post("/predict", json=body, headers=headers)


def _adds_header(name: bytes) -> Callable[[ASGIApp], ASGIApp]:
    """A plain ASGI middleware (factory) adding a response header."""

    def middleware(app: ASGIApp) -> ASGIApp:
        async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
            async def send_with(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", ()), (name, b"1")]
                await send(message)

            await app(scope, receive, send_with)

        return wrapped

    return middleware


async def test_the_fast_path_is_on_by_default_and_off_by_setting(settings, plugin_manager, tenant) -> None:
    async with _client(settings, plugin_manager) as client:
        assert (await _predict(client, tenant)).status_code == 200
    off = msgspec.structs.replace(settings, server=ServerSettings(fast_path=False))
    async with _client(off, plugin_manager) as client:
        response = await _predict(client, tenant)
        assert response.status_code == 200 and response.headers["x-request-id"] == response.json()["requestId"]
        assert client.app.fast_path_blockers == ("CLOUDEASYML_SERVER__FAST_PATH is false",)


async def test_cors_switches_it_off_and_answers_carry_cors_headers(settings, plugin_manager, tenant) -> None:
    async with _client(settings, plugin_manager, cors_config=CORSConfig(allow_origins=["https://app.example"])) as c:
        response = await _predict(c, tenant, Origin="https://app.example")
        refused = await c.post("/predict", json={}, headers={"Origin": "https://app.example"})
    assert response.status_code == 200 and refused.status_code == 401
    assert response.headers["access-control-allow-origin"] == refused.headers["access-control-allow-origin"]


async def test_allowed_hosts_switch_it_off_and_other_hosts_are_refused(settings, plugin_manager, tenant) -> None:
    async with _client(settings, plugin_manager, allowed_hosts=["api.example"]) as client:
        refused = await client.post("/predict", json={"inputs": [POINT]}, headers=bearer(tenant.key))
        allowed = await _predict(client, tenant, Host="api.example")
    assert refused.status_code == 400 and allowed.status_code == 200, (refused.text, allowed.text)


async def test_before_send_hooks_switch_it_off_and_run_on_predict(settings, plugin_manager, tenant) -> None:
    async def stamp(message: Message, _scope: Scope) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), (b"x-stamped", b"1")]

    async with _client(settings, plugin_manager, before_send=[stamp]) as client:
        assert (await _predict(client, tenant)).headers["x-stamped"] == "1"


async def test_after_exception_hooks_switch_it_off_and_see_predict_errors(settings, plugin_manager) -> None:
    seen: list[str] = []

    async def note(exc: Exception, _scope: Scope) -> None:
        seen.append(type(exc).__name__)

    async with _client(settings, plugin_manager, after_exception=[note]) as client:
        assert (await client.post("/predict", json={})).status_code == 401
    assert seen == ["AuthenticationError"]


@pytest.mark.parametrize("hook", ["before_request", "after_request", "after_response"])
async def test_request_hooks_switch_it_off(settings, plugin_manager, tenant, hook: str) -> None:
    """Litestar runs these hooks for ``@get``-style handlers only, not for its ASGI routes such as ``/predict``: the
    router's ``/predict`` answers as the fast path would. The fast path stays off all the same (it is on only for
    configurations it knows), so were ``/predict`` ever a ``@post`` handler the hooks would apply."""
    called: list[str] = []

    async def record(value: Any) -> Any:
        called.append(hook)
        return value if hook == "after_request" else None

    async with _client(settings, plugin_manager, **{hook: record}) as client:
        assert (await _predict(client, tenant)).status_code == 200
        assert hook in called  # the hook ran for the deployment's creation, a @post handler


async def test_extra_middleware_switches_it_off_and_wraps_predict(settings, plugin_manager, tenant) -> None:
    async with _client(settings, plugin_manager, middleware=[_adds_header(b"x-middleware")]) as client:
        assert (await _predict(client, tenant)).headers["x-middleware"] == "1"


async def test_compression_switches_it_off_and_compresses_predict(settings, plugin_manager, tenant) -> None:
    config = CompressionConfig(backend="gzip", minimum_size=1)
    async with _client(settings, plugin_manager, compression_config=config) as client:
        response = await _predict(client, tenant, **{"Accept-Encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip" and "predictions" in response.json()  # httpx gunzipped it


async def test_app_wide_guards_switch_it_off_and_guard_predict(settings, plugin_manager, tenant) -> None:
    def closed(_connection: Any, _handler: Any) -> None:
        raise PermissionDeniedException("closed for maintenance")

    async with _client(settings, plugin_manager, guards=[closed]) as client:
        response = await client.post("/predict", json={"inputs": [POINT]}, headers=bearer(tenant.key))
    assert response.status_code == 403 and "maintenance" in response.text


class OpenTelemetryPlugin(InitPluginProtocol):
    """Litestar finds its OpenTelemetry plugin by this class name and wraps its ASGI handler in the plugin's
    ``middleware``: what ``litestar.contrib.opentelemetry.OpenTelemetryPlugin`` does, without the package (not
    installed here), adding a trace header where the real one would open a span."""

    def on_app_init(self, app_config: Any) -> Any:
        return app_config

    def middleware(self, app: ASGIApp) -> ASGIApp:
        return _adds_header(b"x-trace")(app)


async def test_an_opentelemetry_plugin_switches_it_off_and_traces_predict(settings, plugin_manager, tenant) -> None:
    async with _client(settings, plugin_manager, plugins=[OpenTelemetryPlugin()]) as client:
        assert (await _predict(client, tenant)).headers["x-trace"] == "1"
        assert client.app.fast_path_blockers == ("plugins OpenTelemetryPlugin",)


async def test_a_root_path_sends_predict_through_the_router(settings, plugin_manager, tenant) -> None:
    app = create_app(settings, plugin_manager)
    async with AsyncTestClient(app=app, root_path="/api") as client:
        deployment = await deploy(client, tenant.key)
        body = {"deploymentId": deployment["id"], "inputs": [POINT]}
        response = await client.post("/api/predict", json=body, headers=bearer(tenant.key))
    assert response.status_code == 200, response.text
