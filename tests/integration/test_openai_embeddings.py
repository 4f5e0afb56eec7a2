"""`POST /v1/embeddings` answers the stock `openai` client, authenticated and billed like /predict."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator

import numpy as np
import pytest
from litestar.testing import AsyncTestClient

from cloudeasyml.app import create_app
from tests.conftest import bearer
from tests.support.live_server import serve_in_thread

minilm = pytest.importorskip("cloudeasyml_minilm")
openai = pytest.importorskip("openai")


@pytest.fixture(name="embedding_app")
def fx_embedding_app(settings, plugin_manager, database_url):  # type: ignore[no-untyped-def]
    if "postgres" in database_url:
        pytest.skip("the endpoint adds no persistence of its own: SQLite is enough")
    plugin_manager.register(minilm, name="minilm")
    return create_app(settings, plugin_manager)


@pytest.fixture(name="server")
def fx_server(embedding_app) -> Iterator[str]:  # type: ignore[no-untyped-def]
    with serve_in_thread(embedding_app) as address:
        yield address


def test_openai_client_gets_embeddings_that_match_the_model(server: str, tenant) -> None:
    import httpx

    base = f"http://{server}"
    headers = bearer(tenant.key)
    assert (
        httpx.post(f"{base}/deployments", json={"modelName": "minilm", "name": "embed"}, headers=headers).status_code
        == 201
    )
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=tenant.key, max_retries=0)
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply."]
    # Left alone, the client asks for base64 and decodes it itself; it hands back base64 asked for explicitly.
    for encoding in (openai.NOT_GIVEN, "float", "base64"):
        result = client.embeddings.create(model="embed", input=texts, encoding_format=encoding)
        vectors = np.array([_floats(d.embedding) for d in result.data])
        assert vectors.shape == (3, 384) and [d.index for d in result.data] == [0, 1, 2]
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
        assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
        assert result.model == "embed" and result.usage.prompt_tokens > len(texts)
    single = client.embeddings.create(model="embed", input="A man is eating food.", encoding_format="float")
    assert np.allclose(single.data[0].embedding, vectors[0], atol=1e-5)
    # Equal to /predict on the same deployment.
    deployment = httpx.get(f"{base}/deployments", headers=headers).json()[0]
    predicted = httpx.post(
        f"{base}/predict", json={"deploymentId": deployment["id"], "inputs": texts[:1]}, headers=headers
    )
    assert np.allclose(predicted.json()["predictions"][0], vectors[0], atol=1e-5)
    usage = httpx.get(f"{base}/usage", headers=headers).json()
    assert usage["byModel"]["minilm"]["requests"] == 5 and usage["byModel"]["minilm"]["items"] == 3 * 3 + 1 + 1


def _floats(embedding: list[float] | str) -> np.ndarray:
    if isinstance(embedding, str):
        return np.frombuffer(base64.b64decode(embedding), dtype="<f4")
    return np.asarray(embedding)


def test_openai_client_sees_the_servers_errors(server: str, tenant) -> None:
    client = openai.OpenAI(base_url=f"http://{server}/v1", api_key=tenant.key, max_retries=0)
    with pytest.raises(openai.NotFoundError, match="not found"):
        client.embeddings.create(model="nope", input="hello")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"http://{server}/v1", api_key="wrong", max_retries=0).embeddings.create(
            model="x", input="y"
        )


async def test_bad_embedding_requests_are_400_and_not_billed(embedding_app, tenant) -> None:
    headers = bearer(tenant.key)
    async with AsyncTestClient(app=embedding_app) as client:
        await client.post("/deployments", json={"modelName": "minilm", "name": "embed"}, headers=headers)
        await client.post("/deployments", json={"modelName": "tiny", "name": "scorer"}, headers=headers)
        cases = [
            {"model": "embed", "input": ""},
            {"model": "embed", "input": []},
            {"model": "embed", "input": [1, 2]},
            {"model": "embed", "input": "x", "dimensions": 8},
            {"model": "scorer", "input": "x"},
            {"input": "x"},
        ]
        responses = await asyncio.gather(*(client.post("/v1/embeddings", json=c, headers=headers) for c in cases))
        for case, response in zip(cases, responses, strict=True):
            assert response.status_code == 400, (case, response.text)
            assert response.json()["error"]["message"] and response.json()["error"]["type"] == "invalid_request_error"
        usage = (await client.get("/usage", headers=headers)).json()
        assert usage["totalRequests"] == 0
