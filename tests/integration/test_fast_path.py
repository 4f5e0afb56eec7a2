"""The ``POST /predict`` fast path is on only where it is equivalent to Litestar's router: each app setting it would
skip switches it off, and then takes effect on ``/predict``."""

from __future__ import annotations

import gzip
import json
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
from tests.integration.test_v2_protocol import deploy as deploy_v2

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


# --- the Open Inference Protocol's infer, served by the fast path -------------------------------------------------

V2_POINTS = {"name": "points", "datatype": "FP32", "shape": [2, 2], "data": [1.5, -2.0, 0.0, 3.0]}


def _v2_requests(key: str, reader: str) -> list[tuple[str, str, dict[str, Any]]]:
    """``(label, path, httpx request options)``: successes in both answer shapes and each of the route's errors."""
    ok = {"inputs": [V2_POINTS], "id": "r-1"}
    return [
        ("json", "/v2/models/scorer/infer", {"json": ok, "headers": bearer(key)}),
        ("version", "/v2/models/scorer/versions/1.0.0/infer", {"json": ok, "headers": bearer(key)}),
        (
            "binary output",
            "/v2/models/scorer/infer",
            {"json": {**ok, "parameters": {"binary_data_output": True}}, "headers": bearer(key)},
        ),
        (
            "gzip",
            "/v2/models/scorer/infer",
            {"content": gzip.compress(json.dumps(ok).encode()), "headers": {**bearer(key), "Content-Encoding": "gzip"}},
        ),
        ("wrong version", "/v2/models/scorer/versions/9/infer", {"json": ok, "headers": bearer(key)}),
        ("unknown model", "/v2/models/nobody/infer", {"json": ok, "headers": bearer(key)}),
        ("no key", "/v2/models/scorer/infer", {"json": ok}),
        ("bad key", "/v2/models/scorer/infer", {"json": ok, "headers": bearer("cem_not-a-key")}),
        ("no predict scope", "/v2/models/scorer/infer", {"json": ok, "headers": bearer(reader)}),
        ("malformed json", "/v2/models/scorer/infer", {"content": b'{"inputs": [', "headers": bearer(key)}),
        (
            "bad shape",
            "/v2/models/scorer/infer",
            {"json": {"inputs": [{**V2_POINTS, "shape": [3, 2]}]}, "headers": bearer(key)},
        ),
        (
            "bad header length",
            "/v2/models/scorer/infer",
            {"content": b"{}", "headers": {**bearer(key), "Inference-Header-Content-Length": "x"}},
        ),
        ("empty name", "/v2/models//infer", {"json": ok, "headers": bearer(key)}),
        ("extra segment", "/v2/models/scorer/x/infer", {"json": ok, "headers": bearer(key)}),
    ]


def _answer(response: Any) -> tuple[Any, ...]:
    """What a client sees of an answer, but for the request id."""
    headers = {
        k: response.headers.get(k) for k in ("content-type", "www-authenticate", "inference-header-content-length")
    }
    try:
        body: Any = response.json()
    except ValueError:
        body = response.content
    return response.status_code, headers, body


async def test_v2_infer_answers_alike_with_and_without_the_fast_path(settings, plugin_manager, tenant) -> None:
    """Every answer of the V2 ``infer`` routes (successes, and each error in the protocol's dialect) is the same
    whether the fast path or Litestar's router serves it; the fast path serves the routes' requests itself (only
    paths that are no route's reach the router) and labels them with the router's route templates; each success
    is billed once either way."""
    answers: dict[bool, list[tuple[Any, ...]]] = {}
    reader = ""
    for fast in (True, False):
        current = msgspec.structs.replace(settings, server=ServerSettings(fast_path=fast))
        async with _client(current, plugin_manager) as client:
            if fast:
                await deploy_v2(client, tenant.key)
                scopes = {"name": "reader", "scopes": ["usage:read"]}
                reader = (await client.post("/api-keys", json=scopes, headers=bearer(tenant.key))).json()["key"]
                passed_on, templates = _record_paths(client.app), _record_templates(client.app)
            requests = _v2_requests(tenant.key, reader)
            answers[fast] = [_answer(await client.post(path, **options)) for _, path, options in requests]
            if fast:
                to_router = [path for path in passed_on if path.endswith("/infer")]
                assert to_router == ["/v2/models//infer", "/v2/models/scorer/x/infer"]
                assert templates[:4] == [
                    "/v2/models/{name}/infer",
                    "/v2/models/{name}/versions/{version}/infer",
                    "/v2/models/{name}/infer",
                    "/v2/models/{name}/infer",
                ]
            usage = (await client.get("/usage", headers=bearer(tenant.key))).json()["totalRequests"]
            assert usage == (4 if fast else 8)
    for (label, *_), on, off in zip(requests, answers[True], answers[False], strict=True):
        assert on == off, label
    statuses = [status for status, *_ in answers[True]]
    assert statuses == [200, 200, 200, 200, 404, 404, 401, 401, 403, 400, 400, 400, 405, 404]
    assert all(body["error"] == body["detail"] for _, _, body in answers[True][4:12])  # the routes' own errors
    assert answers[True][2][1]["content-type"] == "application/octet-stream"


def _record_paths(app: Any) -> list[str]:
    """The paths of the requests the fast path hands on to Litestar, from now on."""
    passed_on: list[str] = []
    router = app.entry.app

    async def recording(scope: Any, receive: Receive, send: Send) -> None:
        passed_on.append(scope["path"])
        await router(scope, receive, send)

    app.entry.app = recording
    return passed_on


def _record_templates(app: Any) -> list[str | None]:
    """The route template each request served from now on was labelled with (the access log's and metrics' route)."""
    templates: list[str | None] = []
    entry = app.entry

    async def recording(scope: Any, receive: Receive, send: Send) -> None:
        await entry(scope, receive, send)
        templates.append(scope.get("path_template"))

    app.entry = recording
    return templates
