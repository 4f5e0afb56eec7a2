"""``Idempotency-Key`` errors on the OpenAI-compatible (``/v1/``) and V2 (``/v2/``) routes answer in those protocols'
error shapes, as their other errors do there, seen by the stock ``openai`` and ``tritonclient`` clients and raw HTTP
against a real server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from cloudeasyml.app import create_app
from cloudeasyml.domain.tenants import NewTenant
from tests.conftest import bearer
from tests.integration.test_v2_protocol import POINTS, points_input
from tests.support import tiny_embedder
from tests.support.live_server import serve_in_thread

openai = pytest.importorskip("openai")


@pytest.fixture(name="server")
def fx_server(request, settings, plugin_manager, artifact_dir) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The app, with the tiny embedder and the tiny model, under uvicorn on a free local port."""
    if "postgres" in request.node.name:
        pytest.skip("the error's shape does not depend on the database (the idempotency tests cover both)")
    tiny_embedder.seed_graph(artifact_dir)
    plugin_manager.register(tiny_embedder, name="tiny-embed")
    with serve_in_thread(create_app(settings, plugin_manager)) as address:
        yield address


def _deploy(server: str, key: str, model: str, name: str) -> None:
    response = httpx.post(f"http://{server}/deployments", json={"modelName": model, "name": name}, headers=bearer(key))
    assert response.status_code == 201, response.text


def test_openai_client_sees_an_idempotency_conflict_as_openais_error(server: str, tenant: NewTenant) -> None:
    _deploy(server, tenant.key, "tiny-embed", "embed")
    client = openai.OpenAI(base_url=f"http://{server}/v1", api_key=tenant.key, max_retries=0)
    first = client.embeddings.create(model="embed", input="one", extra_headers={"Idempotency-Key": "k-1"})
    again = client.embeddings.create(model="embed", input="one", extra_headers={"Idempotency-Key": "k-1"})
    assert again.data[0].embedding == first.data[0].embedding  # the replay

    with pytest.raises(openai.ConflictError) as conflict:
        client.embeddings.create(model="embed", input="another", extra_headers={"Idempotency-Key": "k-1"})
    error = conflict.value.body
    assert isinstance(error, dict), error  # the client unwraps the body's "error" object
    assert error["type"] == "conflict_error" and error["code"] == "idempotency_key_reused"
    assert "different request" in error["message"]
    assert conflict.value.status_code == 409

    with pytest.raises(openai.BadRequestError) as bad:  # a malformed key: the 400 in OpenAI's shape too
        client.embeddings.create(model="embed", input="one", extra_headers={"Idempotency-Key": "a key"})
    assert bad.value.body["type"] == "invalid_request_error" and "Idempotency-Key" in bad.value.body["message"]
    with pytest.raises(openai.AuthenticationError) as unauthenticated:  # refused before the key is looked at
        openai.OpenAI(base_url=f"http://{server}/v1", api_key="wrong", max_retries=0).embeddings.create(
            model="embed", input="one", extra_headers={"Idempotency-Key": "k-2"}
        )
    assert unauthenticated.value.body["type"] == "authentication_error"

    raw = httpx.post(
        f"http://{server}/v1/embeddings",
        json={"model": "embed", "input": "a third"},
        headers={**bearer(tenant.key), "Idempotency-Key": "k-1"},
    )
    assert raw.status_code == 409
    assert set(raw.json()["error"]) == {"message", "type", "param", "code"}


def test_v2_idempotency_conflict_answers_the_v2_error(server: str, tenant: NewTenant) -> None:
    _deploy(server, tenant.key, "tiny", "scorer")
    url = f"http://{server}/v2/models/scorer/infer"
    headers = {**bearer(tenant.key), "Idempotency-Key": "v2-1"}
    body = {"inputs": [points_input()]}
    first = httpx.post(url, json=body, headers=headers, timeout=60)
    assert first.status_code == 200, first.text
    assert httpx.post(url, json=body, headers=headers).headers["idempotent-replayed"] == "true"

    other = httpx.post(url, json={"id": "other", **body}, headers=headers)
    assert other.status_code == 409
    assert isinstance(other.json()["error"], str) and "different request" in other.json()["error"]
    malformed = httpx.post(url, json=body, headers={**bearer(tenant.key), "Idempotency-Key": ""})
    assert malformed.status_code == 400 and "Idempotency-Key" in malformed.json()["error"]


def test_tritonclient_reads_the_conflicts_message(server: str, tenant: NewTenant) -> None:
    http: Any = pytest.importorskip("tritonclient.http")
    from tritonclient.utils import InferenceServerException

    _deploy(server, tenant.key, "tiny", "scorer")
    triton = http.InferenceServerClient(url=server)
    try:
        headers = {**bearer(tenant.key), "Idempotency-Key": "triton-1"}

        def infer(request_id: str) -> Any:
            tensor = http.InferInput("points", list(POINTS.shape), "FP32")
            tensor.set_data_from_numpy(POINTS, binary_data=False)
            return triton.infer("scorer", [tensor], request_id=request_id, headers=headers)

        infer("a")
        with pytest.raises(InferenceServerException, match="different request") as conflict:
            infer("b")  # another body (its id) with the key
        assert conflict.value.status() == "409"
    finally:
        triton.close()
