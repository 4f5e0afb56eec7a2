"""The Open Inference Protocol (KServe V2) through the real app: raw HTTP over ASGI for the contract and its
errors, and the stock ``tritonclient.http`` client against a real uvicorn server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from cloudeasyml.app import create_app
from cloudeasyml.domain.tenants import NewTenant
from cloudeasyml.plugins.manager import PluginManager
from cloudeasyml.settings import Settings
from tests.conftest import bearer
from tests.support.live_server import serve_in_thread
from tests.support.tiny_model import numpy_forward, tiny_weights

POINTS = np.array([[1.5, -2.0], [0.0, 3.0], [-4.0, 0.5]], dtype=np.float32)
EXPECTED = numpy_forward(tiny_weights(), POINTS).reshape(-1, 1)


def points_input(points: np.ndarray = POINTS, **overrides: Any) -> dict[str, Any]:
    """A JSON input tensor of the tiny model."""
    return {
        "name": "points",
        "datatype": "FP32",
        "shape": list(points.shape),
        "data": points.ravel().tolist(),
    } | overrides


async def deploy(client: AsyncTestClient[Litestar], key: str, name: str = "scorer") -> dict[str, Any]:
    response = await client.post("/deployments", json={"modelName": "tiny", "name": name}, headers=bearer(key))
    assert response.status_code == 201, response.text
    return response.json()


async def total_requests(client: AsyncTestClient[Litestar], key: str) -> int:
    response = await client.get("/usage", headers=bearer(key))
    assert response.status_code == 200, response.text
    return response.json()["totalRequests"]


def binary_body(header: dict[str, Any], *tensors: bytes) -> tuple[bytes, dict[str, str]]:
    """A body in the binary tensor data extension: JSON header, then raw bytes; and its length header."""
    encoded = json.dumps(header).encode()
    return encoded + b"".join(tensors), {"Inference-Header-Content-Length": str(len(encoded))}


def split_response(response: httpx.Response) -> tuple[dict[str, Any], bytes]:
    """The JSON header of a response and the binary data after it."""
    length = int(response.headers["Inference-Header-Content-Length"])
    return json.loads(response.content[:length]), response.content[length:]


# --- the contract over ASGI ------------------------------------------------------------------------------


async def test_health_and_server_metadata(client: AsyncTestClient[Litestar], tenant: NewTenant) -> None:
    assert (await client.get("/v2/health/live")).json() == {"live": True}
    assert (await client.get("/v2/health/ready")).json() == {"ready": True}
    assert (await client.get("/v2")).status_code == 401
    server = (await client.get("/v2", headers=bearer(tenant.key))).json()
    assert server["name"] == "cloudeasyml" and server["version"]
    assert server["extensions"] == ["binary_tensor_data"]


async def test_model_metadata_and_readiness(client: AsyncTestClient[Litestar], tenant: NewTenant) -> None:
    await deploy(client, tenant.key)
    metadata = (await client.get("/v2/models/scorer", headers=bearer(tenant.key))).json()
    assert metadata == {
        "name": "scorer",
        "versions": ["1.0.0"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "points", "datatype": "FP32", "shape": [-1, 2]}],
        "outputs": [{"name": "score", "datatype": "FP32", "shape": [-1, 1]}],
    }
    versioned = await client.get("/v2/models/scorer/versions/1.0.0", headers=bearer(tenant.key))
    assert versioned.json() == metadata
    wrong_version = await client.get("/v2/models/scorer/versions/9.9.9", headers=bearer(tenant.key))
    assert wrong_version.status_code == 404 and wrong_version.json()["error"]
    # Readiness never loads: once an inference has loaded the deployment, it is ready.
    infer = await client.post("/v2/models/scorer/infer", json={"inputs": [points_input()]}, headers=bearer(tenant.key))
    assert infer.status_code == 200, infer.text
    ready = await client.get("/v2/models/scorer/ready", headers=bearer(tenant.key))
    assert ready.status_code == 200 and ready.json() == {"name": "scorer", "ready": True}


async def test_json_inference_equals_the_network_and_is_billed(
    client: AsyncTestClient[Litestar], tenant: NewTenant
) -> None:
    await deploy(client, tenant.key)
    flat = {"id": "req-1", "inputs": [points_input()]}
    nested = {"inputs": [points_input(data=POINTS.tolist())], "outputs": [{"name": "score"}]}
    for path, body in (("/v2/models/scorer/infer", flat), ("/v2/models/scorer/versions/1.0.0/infer", nested)):
        response = await client.post(path, json=body, headers=bearer(tenant.key))
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        answer = response.json()
        assert answer["model_name"] == "scorer" and answer["model_version"] == "1.0.0"
        assert answer.get("id") == body.get("id")
        [output] = answer["outputs"]
        assert output["name"] == "score" and output["datatype"] == "FP32" and output["shape"] == [3, 1]
        np.testing.assert_allclose(np.array(output["data"]).reshape(3, 1), EXPECTED, atol=1e-5)
    assert await total_requests(client, tenant.key) == 2


async def test_binary_tensors_in_and_out(client: AsyncTestClient[Litestar], tenant: NewTenant) -> None:
    await deploy(client, tenant.key)
    raw = POINTS.astype("<f4").tobytes()
    tensor = {"name": "points", "datatype": "FP32", "shape": [3, 2], "parameters": {"binary_data_size": len(raw)}}
    body, headers = binary_body({"inputs": [tensor], "parameters": {"binary_data_output": True}}, raw)
    response = await client.post("/v2/models/scorer/infer", content=body, headers={**bearer(tenant.key), **headers})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    answer, data = split_response(response)
    [output] = answer["outputs"]
    assert output["parameters"] == {"binary_data_size": 12} and "data" not in output
    np.testing.assert_allclose(np.frombuffer(data, dtype="<f4").reshape(3, 1), EXPECTED, atol=1e-5)
    assert await total_requests(client, tenant.key) == 1


def _binary_points(size: int, extra: bytes = b"") -> tuple[bytes, dict[str, str]]:
    tensor = {"name": "points", "datatype": "FP32", "shape": [2, 2], "parameters": {"binary_data_size": size}}
    return binary_body({"inputs": [tensor]}, np.ones(size // 4, dtype="<f4").tobytes() + extra)


BAD_JSON_REQUESTS = [
    ("no inputs", {"inputs": []}),
    ("unknown input", {"inputs": [points_input(name="pts")]}),
    ("wrong datatype", {"inputs": [points_input(datatype="FP64")]}),
    ("unknown datatype", {"inputs": [points_input(datatype="FP8")]}),
    ("shape and data disagree", {"inputs": [points_input(shape=[2, 2])]}),
    ("wrong inner dimension", {"inputs": [points_input(POINTS.reshape(2, 3))]}),
    ("wrong rank", {"inputs": [points_input(POINTS.ravel())]}),
    ("nested data of another shape", {"inputs": [points_input(shape=[2, 3], data=POINTS.tolist())]}),
    ("ragged data", {"inputs": [points_input(data=[[1.0, 2.0], [3.0]])]}),
    ("strings as numbers", {"inputs": [points_input(data=["a"] * 6)]}),
    ("no data", {"inputs": [points_input(data=None)]}),
    ("empty batch", {"inputs": [points_input(np.zeros((0, 2), np.float32))]}),
    ("batch over maxBatchSize", {"inputs": [points_input(np.zeros((17, 2), np.float32))]}),
    ("unknown output", {"inputs": [points_input()], "outputs": [{"name": "nope"}]}),
    ("duplicate input", {"inputs": [points_input(), points_input()]}),
]


async def test_bad_requests_are_400_with_an_error_and_not_billed(
    client: AsyncTestClient[Litestar], tenant: NewTenant
) -> None:
    await deploy(client, tenant.key)
    requests: list[tuple[str, bytes, dict[str, str]]] = [
        (label, json.dumps(body).encode(), {}) for label, body in BAD_JSON_REQUESTS
    ]
    requests += [
        ("malformed json", b'{"inputs": [', {}),
        ("binary size off the shape", *_binary_points(12)),
        ("binary data left over", *_binary_points(16, b"\0\0\0\0")),
        ("binary data cut short", *_binary_points(20)),
        ("header length past the body", b"{}", {"Inference-Header-Content-Length": "999"}),
        ("header length not a number", b"{}", {"Inference-Header-Content-Length": "x"}),
    ]
    for label, body, headers in requests:
        response = await client.post("/v2/models/scorer/infer", content=body, headers={**bearer(tenant.key), **headers})
        assert response.status_code == 400, (label, response.text)
        problem = response.json()
        assert problem["status"] == 400 and problem["error"] == problem["detail"], label
    assert await total_requests(client, tenant.key) == 0


async def test_other_tenants_deployment_is_unknown_and_keys_are_required(
    client: AsyncTestClient[Litestar], tenant: NewTenant, other_tenant: NewTenant
) -> None:
    await deploy(client, tenant.key)
    body = {"inputs": [points_input()]}
    for path in ("/v2/models/scorer", "/v2/models/scorer/ready"):
        assert (await client.get(path, headers=bearer(other_tenant.key))).status_code == 404
    stranger = await client.post("/v2/models/scorer/infer", json=body, headers=bearer(other_tenant.key))
    assert stranger.status_code == 404 and "scorer" in stranger.json()["error"]
    anonymous = await client.post("/v2/models/scorer/infer", json=body)
    assert anonymous.status_code == 401 and anonymous.json()["error"]
    issued = await client.post(
        "/api-keys", json={"name": "reader", "scopes": ["usage:read"]}, headers=bearer(tenant.key)
    )
    reader = issued.json()["key"]
    # Metadata and readiness need the predict scope too (a key with none cannot probe deployments by name).
    for path in ("/v2/models/scorer", "/v2/models/scorer/ready"):
        assert (await client.get(path, headers=bearer(reader))).status_code == 403
    assert (await client.post("/v2/models/scorer/infer", json=body, headers=bearer(reader))).status_code == 403
    assert await total_requests(client, tenant.key) == 0
    assert await total_requests(client, other_tenant.key) == 0


# --- the stock client against a real server -------------------------------------------------------------


@pytest.fixture(name="server")
def fx_server(settings: Settings, plugin_manager: PluginManager) -> Iterator[str]:
    """The app under uvicorn on a free local port, in a background thread; yields ``host:port``."""
    with serve_in_thread(create_app(settings, plugin_manager)) as address:
        yield address


@pytest.fixture(name="triton")
def fx_triton(server: str) -> Iterator[Any]:
    """A ``tritonclient.http`` client of the live server."""
    http = pytest.importorskip("tritonclient.http")
    triton = http.InferenceServerClient(url=server)
    yield triton
    triton.close()


def deploy_live(server: str, key: str) -> None:
    response = httpx.post(
        f"http://{server}/deployments", json={"modelName": "tiny", "name": "scorer"}, headers=bearer(key)
    )
    assert response.status_code == 201, response.text


async def test_tritonclient_metadata_and_readiness(server: str, triton: Any, tenant: NewTenant) -> None:
    deploy_live(server, tenant.key)
    auth = bearer(tenant.key)
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.get_server_metadata(headers=auth)["extensions"] == ["binary_tensor_data"]
    # Readiness never loads a model: the first inference does, and from then on the model is ready.
    infer = httpx.post(
        f"http://{server}/v2/models/scorer/infer", json={"inputs": [points_input()]}, headers=auth, timeout=60
    )
    assert infer.status_code == 200, infer.text
    assert triton.is_model_ready("scorer", headers=auth)
    metadata = triton.get_model_metadata("scorer", model_version="1.0.0", headers=auth)
    assert metadata["inputs"] == [{"name": "points", "datatype": "FP32", "shape": [-1, 2]}]
    assert metadata["outputs"] == [{"name": "score", "datatype": "FP32", "shape": [-1, 1]}]


async def test_tritonclient_inference_in_every_encoding_is_correct_and_billed(
    server: str, triton: Any, tenant: NewTenant
) -> None:
    from tritonclient.http import InferInput, InferRequestedOutput

    deploy_live(server, tenant.key)
    calls = 0
    for binary_in in (True, False):
        for binary_out in (True, False):
            for compression in (None, "gzip"):
                tensor = InferInput("points", list(POINTS.shape), "FP32")
                tensor.set_data_from_numpy(POINTS, binary_data=binary_in)
                result = triton.infer(
                    "scorer",
                    [tensor],
                    outputs=[InferRequestedOutput("score", binary_data=binary_out)],
                    request_id=f"r{calls}",
                    headers=bearer(tenant.key),
                    request_compression_algorithm=compression,
                )
                np.testing.assert_allclose(result.as_numpy("score"), EXPECTED, atol=1e-5)
                assert result.get_response()["id"] == f"r{calls}"
                calls += 1
    # No requested outputs: tritonclient asks for all of them as binary data.
    tensor = InferInput("points", [1, 2], "FP32")
    tensor.set_data_from_numpy(POINTS[:1])
    np.testing.assert_allclose(
        triton.infer("scorer", [tensor], headers=bearer(tenant.key)).as_numpy("score"), EXPECTED[:1], atol=1e-5
    )
    usage = httpx.get(f"http://{server}/usage", headers=bearer(tenant.key)).json()
    assert usage["totalRequests"] == calls + 1 and usage["totalItems"] == 3 * calls + 1
    assert float(usage["totalCost"]) >= 0.001 * (calls + 1)  # the tiny model's per-request price


async def test_tritonclient_shows_the_servers_error(server: str, triton: Any, tenant: NewTenant) -> None:
    from tritonclient.http import InferInput
    from tritonclient.utils import InferenceServerException

    deploy_live(server, tenant.key)
    wrong = InferInput("points", [2, 3], "FP32")
    wrong.set_data_from_numpy(np.zeros((2, 3), np.float32))
    with pytest.raises(InferenceServerException) as bad:
        triton.infer("scorer", [wrong], headers=bearer(tenant.key))
    assert bad.value.status() == "400" and "[-1, 2]" in bad.value.message()
    with pytest.raises(InferenceServerException) as unknown:
        triton.get_model_metadata("nobody", headers=bearer(tenant.key))
    assert unknown.value.status() == "404" and "nobody" in unknown.value.message()
    with pytest.raises(InferenceServerException) as anonymous:
        triton.get_model_metadata("scorer")
    assert anonymous.value.status() == "401"
    assert httpx.get(f"http://{server}/usage", headers=bearer(tenant.key)).json()["totalRequests"] == 0


async def test_concurrent_requests_get_their_own_rows(client: AsyncTestClient[Litestar], tenant: NewTenant) -> None:
    """Requests arriving together may share one onnxruntime run (tensors of one shape are concatenated along the
    batch axis); each answer holds exactly its own rows, and each request is billed once."""
    await deploy(client, tenant.key)
    rng = np.random.default_rng(7)
    batches = [rng.normal(size=(rows, 2)).astype(np.float32) for rows in (1, 3, 2, 1, 4, 2, 1, 3)]

    async def infer(points: np.ndarray) -> Any:
        body = {"inputs": [points_input(points)]}
        return await client.post("/v2/models/scorer/infer", json=body, headers=bearer(tenant.key))

    responses = await asyncio.gather(*(infer(points) for points in batches))
    for points, response in zip(batches, responses, strict=True):
        assert response.status_code == 200, response.text
        (output,) = response.json()["outputs"]
        assert output["shape"] == [len(points), 1]
        np.testing.assert_allclose(output["data"], numpy_forward(tiny_weights(), points).ravel(), rtol=1e-5)
    assert await total_requests(client, tenant.key) == len(batches)
