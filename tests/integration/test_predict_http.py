"""``POST /predict`` is an ASGI route handler (the hot path): the HTTP behaviour a ``@post`` handler would get
from Litestar (405, 413, 401/403, problem details, the OpenAPI operation) is checked here through the real app."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import httpx
import msgspec

from cloudeasyml.app import create_app
from cloudeasyml.domain.tenants import NewTenant
from cloudeasyml.settings import ServerSettings, Settings
from tests.conftest import bearer
from tests.integration.test_predict import deploy, usage
from tests.support.live_server import serve_in_thread

POINT = {"x": 1.0, "y": 2.0}


async def test_other_methods_get_405_with_allow(client, tenant: NewTenant) -> None:
    for method in ("GET", "PUT", "DELETE"):
        response = await client.request(method, "/predict", headers=bearer(tenant.key))
        assert response.status_code == 405, method
        assert response.headers["allow"] == "POST"
        assert response.headers["content-type"].startswith("application/problem+json")


async def test_missing_key_is_401_and_missing_scope_is_403(client, tenant: NewTenant) -> None:
    deployment = await deploy(client, tenant.key)
    body = {"deploymentId": deployment["id"], "inputs": [POINT]}
    anonymous = await client.post("/predict", json=body)
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer")
    reader = await client.post(
        "/api-keys", json={"name": "reader", "scopes": ["usage:read"]}, headers=bearer(tenant.key)
    )
    refused = await client.post("/predict", json=body, headers=bearer(reader.json()["key"]))
    assert refused.status_code == 403 and "predict" in refused.json()["detail"]
    assert (await usage(client, tenant.key))["totalRequests"] == 0


def _chunks(*parts: bytes) -> Iterator[bytes]:
    yield from parts


def test_a_body_over_the_limit_is_413_whether_announced_or_streamed(
    settings: Settings, plugin_manager, tenant: NewTenant
) -> None:
    small = create_app(msgspec.structs.replace(settings, server=ServerSettings(max_body_bytes=512)), plugin_manager)
    # A long timeout: the first prediction may export the model (several seconds on a slow machine).
    with serve_in_thread(small) as address, httpx.Client(base_url=f"http://{address}", timeout=60) as http:
        deployment = http.post("/deployments", json={"modelName": "tiny"}, headers=bearer(tenant.key)).json()
        fits = {"deploymentId": deployment["id"], "inputs": [POINT]}
        assert http.post("/predict", json=fits, headers=bearer(tenant.key)).status_code == 200
        payload = msgspec.json.encode({"deploymentId": deployment["id"], "inputs": [POINT] * 40})
        headers = {**bearer(tenant.key), "Content-Type": "application/json"}
        announced = http.post("/predict", content=payload, headers=headers)
        assert announced.status_code == 413
        assert announced.headers["content-type"].startswith("application/problem+json")
        streamed = http.post("/predict", content=_chunks(payload[:300], payload[300:]), headers=headers)
        assert streamed.status_code == 413  # chunked: no content-length to refuse early
        report = http.get("/usage", headers=bearer(tenant.key)).json()
    assert report["totalRequests"] == 1 and Decimal(report["totalCost"]) > 0


def test_a_body_sent_in_chunks_over_real_http_is_read_whole(app, tenant: NewTenant) -> None:
    with serve_in_thread(app) as address, httpx.Client(base_url=f"http://{address}") as http:
        created = http.post("/deployments", json={"modelName": "tiny"}, headers=bearer(tenant.key))
        payload = msgspec.json.encode({"deploymentId": created.json()["id"], "inputs": [POINT] * 3})
        response = http.post(
            "/predict",
            content=_chunks(payload[:10], payload[10:50], payload[50:]),  # Transfer-Encoding: chunked
            headers={**bearer(tenant.key), "Content-Type": "application/json"},
        )
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 3
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)


async def test_openapi_documents_both_prediction_operations(client) -> None:
    paths = (await client.get("/schema/openapi.json")).json()["paths"]
    by_body = paths["/predict"]["post"]
    request = by_body["requestBody"]["content"]["application/json"]["schema"]
    assert request["required"] == ["deploymentId", "inputs"]
    answer = by_body["responses"]["200"]["content"]["application/json"]["schema"]
    assert {"predictions", "requestId", "processingTimeMs"} <= set(answer["properties"])
    assert "application/problem+json" in by_body["responses"]["422"]["content"]
    in_path = paths["/deployments/{deployment_id}/predict"]["post"]
    assert in_path["parameters"][0]["name"] == "deployment_id"
    assert in_path["requestBody"]["content"]["application/json"]["schema"]["required"] == ["inputs"]
    assert by_body["tags"] == in_path["tags"] == ["Inference"]


async def _answers(client, path: str, cases: list[tuple[str, dict[str, str], bytes]]) -> list[tuple]:
    """Status, the headers a client acts on, and the body less ``requestId`` and ``processingTimeMs``."""
    answers = []
    for _name, headers, content in cases:
        response = await client.post(path, content=content, headers=headers)
        body = response.json()
        if response.status_code < 400:
            body.pop("requestId")
            body.pop("processingTimeMs")
        picked = {k: response.headers.get(k) for k in ("content-type", "www-authenticate", "retry-after", "allow")}
        answers.append((response.status_code, picked, body))
    return answers


async def test_predict_served_ahead_of_the_router_answers_as_the_routed_endpoint(client, tenant: NewTenant) -> None:
    """``PlatformApp`` serves ``POST /predict`` itself; ``/predict/`` goes through Litestar's router to the same route.
    Every answer, good or bad, must be the same on both (and nothing failed is billed)."""
    deployment = await deploy(client, tenant.key)
    reader = await client.post("/api-keys", json={"name": "r", "scopes": ["usage:read"]}, headers=bearer(tenant.key))
    json_headers = {**bearer(tenant.key), "Content-Type": "application/json"}

    def body(**fields: object) -> bytes:
        return msgspec.json.encode({"deploymentId": deployment["id"], "inputs": [POINT], **fields})

    cases = [
        ("good", json_headers, body()),
        ("no key", {"Content-Type": "application/json"}, body()),
        ("unknown key", {**bearer("sk_AAAAAAAAAAAAAAAA." + "b" * 43)}, body()),
        ("not a key", {"X-API-Key": "nonsense"}, body()),
        ("no predict scope", bearer(reader.json()["key"]), body()),
        ("malformed JSON", json_headers, b'{"deploymentId": '),
        ("inputs not a list", json_headers, body(inputs=POINT)),
        ("wrong input type", json_headers, body(inputs=[{"x": "one", "y": 2.0}])),
        ("no deploymentId", json_headers, msgspec.json.encode({"inputs": [POINT]})),
        ("unknown deployment", json_headers, body(deploymentId="00000000-0000-4000-8000-000000000000")),
        ("unknown field", json_headers, body(extra=1)),
    ]
    fast = await _answers(client, "/predict", cases)
    routed = await _answers(client, "/predict/", cases)
    for (name, *_), one, other in zip(cases, fast, routed, strict=True):
        assert one == other, name
    assert [status for status, *_ in fast] == [200, 401, 401, 401, 403, 400, 422, 422, 422, 404, 422]
    assert (await usage(client, tenant.key))["totalRequests"] == 2


async def test_rate_limits_hold_on_the_predict_path(client, tenant: NewTenant) -> None:
    deployment = await deploy(client, tenant.key)
    limited = await client.post(
        "/api-keys", json={"name": "slow", "scopes": ["predict"], "rateLimitPerMinute": 2}, headers=bearer(tenant.key)
    )
    headers = bearer(limited.json()["key"])
    payload = {"deploymentId": deployment["id"], "inputs": [POINT]}
    statuses = [(await client.post("/predict", json=payload, headers=headers)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    fast = await client.post("/predict", json=payload, headers=headers)
    routed = await client.post("/predict/", json=payload, headers=headers)
    assert fast.status_code == routed.status_code == 429
    assert fast.headers["retry-after"] and routed.headers["retry-after"]
    assert fast.json()["detail"] == routed.json()["detail"]
