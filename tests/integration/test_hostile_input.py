"""Hostile input never gets a 500 (issue 10 rows 10, 12, 13, 14, 18): each payload the issue found answering
500 now answers a 4xx problem detail; V2 model routes need a scope and readiness never loads a model; the
unauthenticated ``/metrics`` names no tenant or deployment; a name with a final newline is refused; Litestar's
validation errors are 422s naming the field; titles match statuses; onnxruntime stays inside the runtime."""

from __future__ import annotations

import json
import re
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from cloudeasyml.app import create_app
from cloudeasyml.domain.tenants import NewTenant
from cloudeasyml.plugins.manager import PluginManager, get_plugin_manager
from cloudeasyml.settings import DatabaseSettings, OpenInferenceSettings, RuntimeSettings, Settings
from tests.conftest import bearer
from tests.support import tiny_model

ROOT = Path(__file__).resolve().parents[2]
DEEP_LIST = "[" * 1000 + "]" * 1000
DEEP_OBJECT = '{"a":' * 1000 + "1" + "}" * 1000


@pytest.fixture(name="plugin_manager")
def fx_plugin_manager() -> PluginManager:
    """The tiny model, and the sentiment model when installed (text inputs; its decoding needs no load)."""
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(tiny_model, name="tiny")
    try:
        import cloudeasyml_sentiment
    except ImportError:
        pass
    else:
        pm.register(cloudeasyml_sentiment, name="sentiment")
    return pm


async def _deploy(client: AsyncTestClient[Litestar], key: str, model: str, name: str) -> str:
    response = await client.post("/deployments", json={"modelName": model, "name": name}, headers=bearer(key))
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _v2(shape: list[int], data: Any = None, **extra: Any) -> bytes:
    tensor = {"name": "points", "datatype": "FP32", "shape": shape} | ({"data": data} if data is not None else {})
    return json.dumps({"inputs": [tensor | extra]}).encode()


def _assert_problem(response: Any, status: int | None = None) -> dict[str, Any]:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    if status is not None:
        assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == response.status_code
    assert body["title"] == HTTPStatus(response.status_code).phrase  # titles match statuses
    return body


async def test_the_issues_hostile_payloads_are_4xx_problems(
    client: AsyncTestClient[Litestar], tenant: NewTenant
) -> None:
    key = tenant.key
    scorer = await _deploy(client, key, "tiny", "scorer")
    cases: list[tuple[str, str, bytes | None, int]] = [
        ("POST", "/predict", f'{{"deploymentId":"{scorer}","inputs":{DEEP_LIST}}}'.encode(), 400),
        ("POST", f"/deployments/{scorer}/predict", f'{{"inputs":{DEEP_LIST}}}'.encode(), 400),
        ("POST", "/deployments", f'{{"modelName":"tiny","config":{DEEP_OBJECT}}}'.encode(), 400),
        ("POST", "/deployments", f'{{"modelName":{DEEP_LIST}}}'.encode(), 400),
        ("POST", "/api-keys", f'{{"name":"x","scopes":{DEEP_LIST}}}'.encode(), 400),
        ("POST", "/api-keys", DEEP_OBJECT.encode(), 400),
        ("POST", "/v1/embeddings", f'{{"model":"scorer","input":{DEEP_LIST}}}'.encode(), 400),
        ("GET", "/usage?start=0001-01-01T00:00:00%2B05:00", None, 422),
        ("GET", "/usage?end=9999-12-31T23:59:59-05:00", None, 422),
        ("POST", "/deployments", json.dumps({"modelName": "tiny", "modelVersion": "é" * 200}).encode(), 404),
        ("POST", "/deployments", json.dumps({"modelName": "tiny", "modelVersion": "../../../etc"}).encode(), 404),
        ("POST", "/v2/models/scorer/infer", _v2([0, 2**62], []), 400),
        ("POST", "/v2/models/scorer/infer", _v2([2**62, 2**62], parameters={"binary_data_size": 8}), 400),
        ("POST", "/v2/models/scorer/infer", _v2([1] * 65, [1.0]), 400),
        ("POST", "/v2/models/scorer/infer", _v2([1, 0], []), 400),
        ("POST", "/v2/models/scorer/infer", _v2([2**70, 2], [1.0]), 400),
        ("POST", "/v2/models/scorer/infer", _v2([1, 2], [[[[[1.0, 2.0]]]]]), 400),
        ("POST", "/v2/models/scorer/infer", _v2([3, 2], [[1, 2], [3, 4], [5, [6]]]), 400),
        ("POST", "/v2/models/scorer/infer", _v2([1, 2], ["a", {"b": 1}]), 400),
        (
            "POST",
            "/v2/models/scorer/infer",
            f'{{"inputs":[{{"name":"points","datatype":"FP32","shape":[1,2],"data":{DEEP_LIST}}}]}}'.encode(),
            400,
        ),
        (
            "POST",
            "/v2/models/scorer/infer",
            f'{{"inputs":[{{"name":"points","datatype":"FP32","shape":[1,2],"data":[1,2],"parameters":{{"a":{DEEP_LIST}}}}}]}}'.encode(),
            400,
        ),
        ("POST", "/v2/models/scorer/infer", f'{{"inputs":[],"parameters":{{"a":{DEEP_OBJECT}}}}}'.encode(), 400),
    ]
    if "sentiment" in {entry.model.name for entry in client.app.state.services.catalog}:
        reviews = await _deploy(client, key, "sentiment", "reviews")
        cases.append(
            ("POST", "/predict", b'{"deploymentId":"%s","inputs":[{"text":"\xff\xfe"}]}' % reviews.encode(), 400)
        )
    wrong = []  # every payload is tried, and every wrong answer reported
    for method, path, body, status in cases:
        response = await client.request(
            method, path, content=body, headers={**bearer(key), "Content-Type": "application/json"}
        )
        try:
            _assert_problem(response, status)
        except AssertionError:
            wrong.append((method, path, (body or b"")[:60], response.status_code, response.text[:200]))
    assert not wrong, "\n".join(repr(case) for case in wrong)


async def test_a_name_with_a_final_newline_is_refused(client: AsyncTestClient[Litestar], tenant: NewTenant) -> None:
    await _deploy(client, tenant.key, "tiny", "housing")
    for name in ("housing\n", "housing\r\n", "\nhousing", "hous\ning"):
        response = await client.post(
            "/deployments", json={"modelName": "tiny", "name": name}, headers=bearer(tenant.key)
        )
        _assert_problem(response, 422)
    listed = (await client.get("/deployments", headers=bearer(tenant.key))).json()
    assert [d["name"] for d in listed] == ["housing"]


async def test_litestar_validation_errors_are_422_naming_the_field(
    client: AsyncTestClient[Litestar], tenant: NewTenant
) -> None:
    headers = bearer(tenant.key)
    wrong_type = await client.post("/deployments", json={"modelName": 3}, headers=headers)
    assert "`$.modelName`" in _assert_problem(wrong_type, 422)["detail"]
    missing = await client.post("/api-keys", json={"scopes": ["predict"]}, headers=headers)
    assert "name" in _assert_problem(missing, 422)["detail"]
    bad_query = await client.get("/usage?start=yesterday", headers=headers)
    assert "start" in _assert_problem(bad_query, 422)["detail"]
    empty = await client.post("/deployments", content=b"", headers=headers)
    assert _assert_problem(empty, 422)["detail"] == "a JSON body is required"
    malformed = await client.post(
        "/deployments", content=b'{"modelName":', headers={**headers, "Content-Type": "application/json"}
    )
    _assert_problem(malformed, 400)


async def test_openai_problems_have_the_title_of_their_status(
    client: AsyncTestClient[Litestar], tenant: NewTenant
) -> None:
    await _deploy(client, tenant.key, "tiny", "scorer")
    for body in ({"model": "scorer"}, {"model": "scorer", "input": "hi"}, {"model": "nothing", "input": "hi"}):
        response = await client.post("/v1/embeddings", json=body, headers=bearer(tenant.key))
        problem = _assert_problem(response)
        assert problem["error"]["message"] == problem["detail"]


async def _scopeless_key(client: AsyncTestClient[Litestar], admin_key: str) -> str:
    issued = await client.post("/api-keys", json={"name": "nothing", "scopes": []}, headers=bearer(admin_key))
    assert issued.status_code == 201, issued.text
    return issued.json()["key"]


async def test_v2_model_routes_need_predict_and_readiness_never_loads(
    migrated_url: str, plugin_manager: PluginManager, tenant: NewTenant, tmp_path: Path
) -> None:
    # A fresh artifact store: nothing of the tiny model is exported yet.
    artifacts = tmp_path / "fresh-artifacts"
    settings = Settings(
        database=DatabaseSettings(url=migrated_url),
        runtime=RuntimeSettings(artifact_dir=str(artifacts)),
        home=str(tmp_path / "home"),
    )
    app = create_app(settings, plugin_manager)
    async with AsyncTestClient(app=app) as client:
        await _deploy(client, tenant.key, "tiny", "scorer")
        nothing = await _scopeless_key(client, tenant.key)
        for path in ("/v2/models/scorer", "/v2/models/scorer/ready", "/v2/models/scorer/versions/1.0.0/ready"):
            _assert_problem(await client.get(path, headers=bearer(nothing)), 403)
        registry = app.state.services.registry
        for _ in range(3):
            ready = await client.get("/v2/models/scorer/ready", headers=bearer(tenant.key))
            assert ready.status_code == 503 and ready.json()["ready"] is False and ready.json()["error"]
        assert len(registry) == 0 and not list(artifacts.rglob("*.onnx"))  # neither loaded nor exported
        body = {"inputs": [{"name": "points", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}]}
        assert (await client.post("/v2/models/scorer/infer", json=body, headers=bearer(tenant.key))).status_code == 200
        ready = await client.get("/v2/models/scorer/ready", headers=bearer(tenant.key))
        assert ready.status_code == 200 and ready.json() == {"name": "scorer", "ready": True}


async def test_metrics_name_no_tenant_and_no_deployment(client: AsyncTestClient[Litestar], tenant: NewTenant) -> None:
    deployment = await _deploy(client, tenant.key, "tiny", "acme-secret-project")
    body = {"deploymentId": deployment, "inputs": [{"x": 1.0, "y": 2.0}]}
    assert (await client.post("/predict", json=body, headers=bearer(tenant.key))).status_code == 200
    text = (await client.get("/metrics")).text
    assert 'cloudeasyml_queue_items{model="tiny"}' in text
    assert "acme-secret-project" not in text and deployment not in text
    assert str(tenant.tenant.id) not in text and "tenant" not in text


async def test_v2_tensor_bounds_follow_their_settings(
    migrated_url: str, plugin_manager: PluginManager, tenant: NewTenant, artifact_dir: Path, tmp_path: Path
) -> None:
    settings = Settings(
        database=DatabaseSettings(url=migrated_url),
        runtime=RuntimeSettings(artifact_dir=str(artifact_dir)),
        v2=OpenInferenceSettings(max_tensor_elements=4, max_request_elements=4, max_tensor_dims=2),
        home=str(tmp_path / "home"),
    )
    async with AsyncTestClient(app=create_app(settings, plugin_manager)) as client:
        await _deploy(client, tenant.key, "tiny", "scorer")
        headers = {**bearer(tenant.key), "Content-Type": "application/json"}
        fits = await client.post("/v2/models/scorer/infer", content=_v2([2, 2], [1.0] * 4), headers=headers)
        assert fits.status_code == 200, fits.text
        too_many = await client.post("/v2/models/scorer/infer", content=_v2([3, 2], [1.0] * 6), headers=headers)
        assert "at most 4" in _assert_problem(too_many, 400)["detail"]
        too_deep = await client.post("/v2/models/scorer/infer", content=_v2([1, 1, 2], [1.0] * 2), headers=headers)
        assert "dimensions" in _assert_problem(too_deep, 400)["detail"]


def test_nothing_above_the_runtime_imports_onnxruntime() -> None:
    importing = re.compile(r"^\s*(import onnxruntime|from onnxruntime)", re.MULTILINE)
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "cloudeasyml").rglob("*.py")
        if "runtime" not in path.relative_to(ROOT / "cloudeasyml").parts[:1] and importing.search(path.read_text())
    ]
    assert offenders == []
