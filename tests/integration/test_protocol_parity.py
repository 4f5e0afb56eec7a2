"""One failure, every protocol, one outcome: ``POST /predict``, ``POST /deployments/{id}/predict``, the Open Inference
Protocol (``/v2/models/{name}/infer``) and OpenAI embeddings (``/v1/embeddings``) all run through
``InferenceService.execute``, so a deployment evicted mid-request, a tenant past its caps, an invalid input or a
missed deadline must end the same way in each, in its own dialect, and be billed (or not) the same.

Real parts throughout: a uvicorn server on a port, real onnxruntime sessions of the tiny models (the tiny MLP; the
tiny embedder for the embeddings protocol, which serves embedding models only), the test's own database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cloudeasyml.app import create_app
from cloudeasyml.domain.tenants import NewTenant, set_caps
from tests.conftest import bearer, db_session
from tests.support import tiny_embedder
from tests.support.live_server import serve_in_thread

POINT = {"x": 1.0, "y": 2.0}


def _predict(http: httpx.Client, deployment: dict, bad: bool) -> httpx.Response:
    point = {"x": "far", "y": 2.0} if bad else POINT
    return http.post("/predict", json={"deploymentId": deployment["id"], "inputs": [point]})


def _deployment_predict(http: httpx.Client, deployment: dict, bad: bool) -> httpx.Response:
    point = {"x": "far", "y": 2.0} if bad else POINT
    return http.post(f"/deployments/{deployment['id']}/predict", json={"inputs": [point]})


def _v2(http: httpx.Client, deployment: dict, bad: bool) -> httpx.Response:
    data = ["far", 2.0] if bad else [1.0, 2.0]
    tensor = {"name": "points", "shape": [1, 2], "datatype": "FP32", "data": data}
    return http.post(f"/v2/models/{deployment['name']}/infer", json={"inputs": [tensor]})


def _embeddings(http: httpx.Client, deployment: dict, bad: bool) -> httpx.Response:
    return http.post("/v1/embeddings", json={"model": deployment["name"], "input": [""] if bad else ["a man eats"]})


PROTOCOLS: dict[str, tuple[str, Callable[[httpx.Client, dict, bool], httpx.Response]]] = {
    "predict": ("tiny", _predict),
    "deployment-predict": ("tiny", _deployment_predict),
    "v2": ("tiny", _v2),
    "openai": ("tiny-embed", _embeddings),
}
"""Protocol → (the model its deployment serves, how it sends one good or bad input)."""

BAD_INPUT = {
    "predict": (422, "$.inputs[0].x"),
    "deployment-predict": (422, "$.inputs[0].x"),
    "v2": (400, "input 'points'"),
    "openai": (400, "$.input[0]"),
}
"""Status and the path the detail names, by protocol: a 422 in the platform's dialect, the 400 the Open Inference
Protocol and OpenAI prescribe for every bad request."""

OPERATIONS = {
    "predict": ("/predict", "post"),
    "deployment-predict": ("/deployments/{deployment_id}/predict", "post"),
    "v2": ("/v2/models/{name}/infer", "post"),
    "openai": ("/v1/embeddings", "post"),
}


def _detail(protocol: str, response: httpx.Response) -> str:
    """The problem's detail, after checking the protocol's own error member says the same."""
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    body = response.json()
    if protocol == "v2":
        assert body["error"] == body["detail"]
    elif protocol == "openai":
        assert body["error"]["message"] == body["detail"] and body["error"]["type"]
    assert body["status"] == response.status_code
    return str(body["detail"])


class Served:
    """The app on a real port, one deployment per protocol, and the tenant's billed request count."""

    def __init__(self, app: Any, address: str, tenant: NewTenant, config: dict[str, Any]) -> None:
        self.app = app
        self.services = app.state.services
        self.http = httpx.Client(base_url=f"http://{address}", headers=bearer(tenant.key), timeout=60)
        self.deployments = {}
        for protocol, (model, _send) in PROTOCOLS.items():
            created = self.http.post("/deployments", json={"modelName": model, "name": protocol, "config": config})
            assert created.status_code == 201, created.text
            self.deployments[protocol] = created.json()

    def billed(self) -> int:
        return int(self.http.get("/usage").json()["totalRequests"])

    def refusals(self, cause: str) -> float:
        """``cloudeasyml_refusals_total{cause}`` as ``/metrics`` reports it."""
        return sum(
            sample.value
            for family in text_string_to_metric_families(self.http.get("/metrics").text)
            for sample in family.samples
            if sample.name == "cloudeasyml_refusals_total" and sample.labels.get("cause") == cause
        )

    def send(self, protocol: str, *, bad: bool = False) -> httpx.Response:
        _model, send = PROTOCOLS[protocol]
        response = send(self.http, self.deployments[protocol], bad)
        assert response.headers["x-request-id"]
        return response

    def outcomes(self, *, bad: bool = False) -> dict[str, tuple[int, str, int]]:
        """``protocol → (status, detail or "", requests billed by it)``, one request each, in turn."""
        outcomes = {}
        for protocol in PROTOCOLS:
            before = self.billed()
            response = self.send(protocol, bad=bad)
            detail = "" if response.status_code == 200 else _detail(protocol, response)
            outcomes[protocol] = (response.status_code, detail, self.billed() - before)
        return outcomes


@pytest.fixture(name="served")
def fx_served(request, settings, plugin_manager, artifact_dir, tenant) -> Iterator[Callable[..., Served]]:  # type: ignore[no-untyped-def]
    """Start the server with the tiny models, deployments made with the given serving ``config``."""
    if "postgres" in request.node.name:
        pytest.skip("the parity of protocols does not depend on the database: SQLite is enough")
    tiny_embedder.seed_graph(artifact_dir)
    plugin_manager.register(tiny_embedder, name="tiny-embed")
    app = create_app(settings, plugin_manager)
    with serve_in_thread(app) as address:
        made: list[Served] = []

        def serve(**config: Any) -> Served:
            made.append(Served(app, address, tenant, config))
            return made[-1]

        yield serve
        for served in made:
            served.http.close()


def _documented(app: Any, protocol: str, status: int) -> bool:
    path, method = OPERATIONS[protocol]
    operation = getattr(app.openapi_schema.paths[path], method)
    return str(status) in (operation.responses or {})


def test_a_deployment_evicted_mid_request_is_loaded_again_once_and_served(served) -> None:
    server = served()
    services = server.services
    real_load = services.inference.load
    evicted: dict[uuid.UUID, object] = {}

    async def load_then_evict(spec: Any, entry: Any, *, plan: str) -> Any:
        loaded = await real_load(spec, entry, plan=plan)
        if spec.id not in evicted:
            # Evicted (for memory) between this request's lookup and its queueing, by the registry's own unload:
            # the deployment's batcher drains and refuses the request, which must load it again and run.
            evicted[spec.id] = loaded
            await services.registry.unload(spec.id)
        return loaded

    services.inference.load = load_then_evict
    outcomes = server.outcomes()
    assert outcomes == {protocol: (200, "", 1) for protocol in PROTOCOLS}
    for protocol, deployment in server.deployments.items():
        deployment_id = uuid.UUID(deployment["id"])
        reloaded = services.registry.get_loaded(deployment_id)
        assert reloaded is not None and reloaded is not evicted[deployment_id], protocol


async def _caps(url: str, tenant: NewTenant, **caps: object) -> None:
    async with db_session(url) as session:
        await set_caps(session, tenant.tenant.name, **caps)


@pytest.mark.parametrize(
    ("caps", "status", "cause", "metric"),
    [
        ({"request_cap": 0}, 429, "request cap (0 per month)", "request_cap"),
        ({"spend_cap": Decimal("0.0005")}, 402, "spend cap (0.0005 per month)", "spend_cap"),  # below the fixed price
    ],
    ids=["request-cap", "spend-cap"],
)
def test_a_tenant_past_a_monthly_cap_is_refused_alike_and_not_billed(
    served, migrated_url: str, tenant: NewTenant, caps: dict, status: int, cause: str, metric: str
) -> None:
    asyncio.run(_caps(migrated_url, tenant, **caps))
    server = served()
    refused = server.refusals(metric)
    outcomes = server.outcomes()
    assert server.refusals(metric) - refused == len(PROTOCOLS)  # each counted once, by cause
    for protocol, (got, detail, billed) in outcomes.items():
        assert (got, billed) == (status, 0) and cause in detail, (protocol, outcomes)
        assert _documented(server.app, protocol, status), protocol
    assert all(server.send(protocol).headers.get("retry-after") for protocol in PROTOCOLS)


def test_an_invalid_input_is_refused_with_its_path_in_each_dialect_and_not_billed(served) -> None:
    server = served()
    outcomes = server.outcomes(bad=True)
    for protocol, (status, detail, billed) in outcomes.items():
        want_status, path = BAD_INPUT[protocol]
        assert (status, billed) == (want_status, 0) and path in detail, (protocol, outcomes)
        assert _documented(server.app, protocol, status), protocol
    # OpenAI's one-text form: the text itself is at `$.input`.
    single = server.http.post("/v1/embeddings", json={"model": "openai", "input": ""})
    assert single.status_code == 400 and _detail("openai", single).endswith("- at `$.input`"), single.text


def test_a_request_past_its_deadline_is_a_504_in_every_protocol_and_not_billed(served) -> None:
    server = served(timeoutMs=0.001)
    refused = server.refusals("deadline")
    outcomes = server.outcomes()
    assert server.refusals("deadline") - refused == len(PROTOCOLS)
    for protocol, (status, detail, billed) in outcomes.items():
        assert (status, billed) == (504, 0) and "no result within" in detail, (protocol, outcomes)
        assert _documented(server.app, protocol, status), protocol


def test_the_embeddings_protocol_tokenizes_its_inputs_once(served) -> None:
    """Its token count comes from the run's own tokenization (the attention mask), not a second one."""
    server = served()
    assert server.send("openai").status_code == 200  # loaded (its warm-up run tokenizes the example inputs)
    model = server.services.catalog.get("tiny-embed").model
    calls: list[int] = []
    to_arrays = model.to_arrays

    def counted(items: list[str]) -> Any:
        calls.append(len(items))
        return to_arrays(items)

    model.to_arrays = counted  # type: ignore[method-assign]
    try:
        texts = ["a man eats food", "the market fell sharply today", "x"]
        response = server.http.post("/v1/embeddings", json={"model": "openai", "input": texts})
    finally:
        del model.to_arrays
    assert response.status_code == 200, response.text
    assert calls == [3]  # the one batch the request ran in
    assert response.json()["usage"]["prompt_tokens"] == 4 + 5 + 1
