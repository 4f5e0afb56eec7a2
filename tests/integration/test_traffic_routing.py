"""Traffic splitting in the data plane, on the real app with the tiny model: a real second version ("2.0.0",
other weights in the artifact store, exported on first use) against the shipped "1.0.0".

A split obeys its weights on every protocol, a routing key keeps one version, every answer names the version that
served it, usage and metrics add up by version, and shadow copies run after the answer, billed as shadow (or not,
per plan), shed when asked to."""

from __future__ import annotations

import asyncio
import shutil
import threading
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from cloudeasyml.app import create_app
from cloudeasyml.core.serving import ServingConfig
from cloudeasyml.core.traffic import TrafficRoute
from cloudeasyml.domain.request_context import RequestContext
from cloudeasyml.domain.routing import BUCKETS, sticky_bucket
from cloudeasyml.domain.tenants import NewTenant, set_caps
from cloudeasyml.runtime.artifacts import ArtifactStore
from cloudeasyml.runtime.registry import DeploymentSpec
from cloudeasyml.settings import LimitsSettings, Settings
from tests.conftest import bearer, db_session
from tests.support.tiny_model import Point, tiny_weights

pytest.importorskip("torch")  # the second version is exported on first use

SPLIT = [{"modelVersion": "1.0.0", "weight": 50}, {"modelVersion": "2.0.0", "weight": 50}]
POINT = {"x": 1.0, "y": 2.0}


@pytest.fixture(name="settings")
def fx_settings(settings: Settings, artifact_dir: Path, tmp_path: Path) -> Settings:
    """The test's own artifact store: the shared one's tiny graphs, and a trained version "2.0.0" of tiny."""
    own = tmp_path / "artifacts"
    if (artifact_dir / "tiny").exists():
        shutil.copytree(artifact_dir / "tiny", own / "tiny")
    weights = {name: array * 1.5 for name, array in tiny_weights().items()}
    ArtifactStore(own).save_trained_weights("tiny", "2.0.0", weights)
    runtime = msgspec.structs.replace(settings.runtime, artifact_dir=str(own))
    return msgspec.structs.replace(settings, runtime=runtime)


async def deploy(client: AsyncTestClient[Litestar], key: str, traffic: list[dict[str, Any]], **body: Any) -> dict:
    body = {"modelName": "tiny", "traffic": traffic, "config": {"eagerLoad": True}, **body}  # noqa: PLW2901
    response = await client.post("/deployments", json=body, headers=bearer(key))
    assert response.status_code == 201, response.text
    return response.json()


async def predict(client: AsyncTestClient[Litestar], key: str, deployment: dict, **headers: str) -> Any:
    response = await client.post(
        f"/deployments/{deployment['id']}/predict", json={"inputs": [POINT]}, headers={**bearer(key), **headers}
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-model-version"] == response.json()["modelVersion"]
    return response


def key_for(deployment: dict, version: str) -> str:
    """A routing key that lands on ``version`` of a 50/50 split of "1.0.0" then "2.0.0" (the first route, or
    the second).
    """
    spec = DeploymentSpec(
        id=uuid.UUID(deployment["id"]),
        tenant_id=uuid.uuid4(),
        name="x",
        model_name="tiny",
        model_version="1.0.0",
        config=ServingConfig(),
    )
    first = version == "1.0.0"
    return next(k for k in (f"user-{i}" for i in range(1000)) if (sticky_bucket(spec, k) < BUCKETS // 2) == first)


def metric(text: str, name: str, **labels: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


async def test_a_50_50_split_lands_within_a_binomial_bound_and_usage_and_metrics_add_up_by_version(
    client: AsyncTestClient[Litestar], tenant: NewTenant
) -> None:
    deployment = await deploy(client, tenant.key, SPLIT)
    answers: list[Any] = []
    for _ in range(8):
        answers += await asyncio.gather(*(predict(client, tenant.key, deployment) for _ in range(50)))
    served = Counter(answer.json()["modelVersion"] for answer in answers)
    # n=400, p=1/2: standard deviation 10; 6 of them either side (a wrong split, say 90/10, is off by 160).
    assert set(served) == {"1.0.0", "2.0.0"} and abs(served["1.0.0"] - 200) <= 60, served
    # The versions answer differently (other weights): each answer is its version's.
    scores = {a.json()["modelVersion"]: a.json()["predictions"][0]["score"] for a in answers}
    assert scores["1.0.0"] != pytest.approx(scores["2.0.0"])
    usage = (await client.get("/usage?groupBy=version", headers=bearer(tenant.key))).json()
    by_version = {(row["modelVersion"], row["kind"]): row["requests"] for row in usage["byVersion"]}
    assert by_version == {("1.0.0", "online"): served["1.0.0"], ("2.0.0", "online"): served["2.0.0"]}
    assert usage["totalRequests"] == 400 and usage["byModel"]["tiny"]["requests"] == 400 and usage["shadow"] is None
    assert sum(row["cost"] != "0" for row in usage["byVersion"]) == 2
    plain = (await client.get("/usage", headers=bearer(tenant.key))).json()
    assert "byVersion" not in plain or plain["byVersion"] is None
    text = (await client.get("/metrics")).text
    for version, count in served.items():
        assert metric(text, "cloudeasyml_predictions_total", model="tiny", version=version) == count


async def test_a_routing_key_always_gets_one_version(client: AsyncTestClient[Litestar], tenant: NewTenant) -> None:
    deployment = await deploy(client, tenant.key, SPLIT)
    seen: dict[str, set[str]] = {}
    for _ in range(4):
        for user in range(25):
            answer = await predict(client, tenant.key, deployment, **{"X-Routing-Key": f"end-user-{user}"})
            seen.setdefault(f"end-user-{user}", set()).add(answer.headers["x-model-version"])
    assert all(len(versions) == 1 for versions in seen.values()), seen
    assert {v for versions in seen.values() for v in versions} == {"1.0.0", "2.0.0"}


async def test_every_protocol_obeys_the_split_and_names_the_version(
    client: AsyncTestClient[Litestar], tenant: NewTenant
) -> None:
    deployment = await deploy(client, tenant.key, SPLIT, name="scorer")
    headers = bearer(tenant.key)
    points = {"name": "points", "datatype": "FP32", "shape": [1, 2], "data": [[1.0, 2.0]]}
    for version in ("1.0.0", "2.0.0"):
        sticky = {**headers, "X-Routing-Key": key_for(deployment, version)}
        by_body = await client.post(
            "/predict", json={"deploymentId": deployment["id"], "inputs": [POINT]}, headers=sticky
        )
        by_path = await client.post(
            f"/deployments/{deployment['id']}/predict", json={"inputs": [POINT]}, headers=sticky
        )
        v2 = await client.post("/v2/models/scorer/infer", json={"inputs": [points]}, headers=sticky)
        for answer in (by_body, by_path, v2):
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-model-version"] == version and "x-model-variant" not in answer.headers
        assert by_body.json()["modelVersion"] == by_path.json()["modelVersion"] == version
        assert v2.json()["model_version"] == version
        v2_score = np.asarray(v2.json()["outputs"][0]["data"], dtype=np.float32).ravel()[0]
        assert v2_score == pytest.approx(by_path.json()["predictions"][0]["score"], rel=1e-5)
    # A variant route names its variant too.
    split = [{"modelVersion": "1.0.0", "weight": 50}, {"modelVersion": "1.0.0", "weight": 50, "variant": "int8"}]
    variants = await deploy(client, tenant.key, split, name="quantised")
    answer = await predict(client, tenant.key, variants, **{"X-Routing-Key": key_for(variants, "2.0.0")})
    assert answer.headers["x-model-variant"] == "int8" and answer.headers["x-model-version"] == "1.0.0"
    # Errors name no version.
    refused = await client.post(f"/deployments/{deployment['id']}/predict", json={"inputs": []}, headers=headers)
    assert refused.status_code == 422 and "x-model-version" not in refused.headers


async def test_a_single_version_deployment_answers_with_its_version(
    client: AsyncTestClient[Litestar], tenant: NewTenant
) -> None:
    deployment = await deploy(client, tenant.key, [{"modelVersion": "2.0.0", "weight": 100}])
    answer = await predict(client, tenant.key, deployment)
    assert answer.headers["x-model-version"] == "2.0.0" == answer.json()["modelVersion"]


SHADOWED = [{"modelVersion": "1.0.0", "weight": 100}, {"modelVersion": "2.0.0", "weight": 100, "mode": "shadow"}]
SHADOWED_ROUTE = {"model_version": "2.0.0", "weight": 100, "mode": "shadow"}


async def wait_for_shadows(app: Litestar, count: int) -> str:
    """The metrics page once ``count`` shadow copies have finished (run, shed or failed)."""
    for _ in range(500):
        text = app.state.services.metrics.render().decode()
        if (
            metric(text, "cloudeasyml_shadow_copies_total") >= count
            and not app.state.services.inference.shadows.in_flight
        ):
            return text
        await asyncio.sleep(0.02)
    raise AssertionError(f"{count} shadow copies did not finish: {text}")


async def test_shadow_copies_never_answer_are_billed_as_shadow_and_not_as_requests(
    app: Litestar, client: AsyncTestClient[Litestar], tenant: NewTenant, migrated_url: str
) -> None:
    async with db_session(migrated_url) as session:
        await set_caps(session, tenant.tenant.name, request_cap=10)
    deployment = await deploy(client, tenant.key, SHADOWED)
    answers = [await predict(client, tenant.key, deployment) for _ in range(10)]
    assert {a.json()["modelVersion"] for a in answers} == {"1.0.0"}  # a shadow never answers
    text = await wait_for_shadows(app, 10)
    assert metric(text, "cloudeasyml_shadow_copies_total", outcome="run") == 10
    assert metric(text, "cloudeasyml_predictions_total", version="2.0.0") == 0  # not a request
    usage = (await client.get("/usage?groupBy=version", headers=bearer(tenant.key))).json()
    assert usage["totalRequests"] == 10 and usage["shadow"]["requests"] == 10
    rows = {(row["modelVersion"], row["kind"]): row for row in usage["byVersion"]}
    assert rows.keys() == {("1.0.0", "online"), ("2.0.0", "shadow")}
    assert float(rows["2.0.0", "shadow"]["cost"]) > 0
    # Ten live requests used the request cap of ten; the ten shadow copies did not count.
    quota = (await client.get("/usage/quota", headers=bearer(tenant.key))).json()
    assert quota["requests"] == 10
    assert (await client.post(f"/deployments/{deployment['id']}/predict", json={"inputs": [POINT]},
                              headers=bearer(tenant.key))).status_code == 429  # fmt: skip


async def test_a_plan_without_shadow_billing_runs_shadows_free(
    settings: Settings, plugin_manager: Any, tenant: NewTenant
) -> None:
    app = create_app(msgspec.structs.replace(settings, limits=LimitsSettings(bill_shadow=False)), plugin_manager)
    async with AsyncTestClient(app=app) as client:
        deployment = await deploy(client, tenant.key, SHADOWED)
        for _ in range(5):
            await predict(client, tenant.key, deployment)
        text = await wait_for_shadows(app, 5)
        assert metric(text, "cloudeasyml_shadow_copies_total", outcome="run") == 5
        usage = (await client.get("/usage?groupBy=version", headers=bearer(tenant.key))).json()
        assert usage["shadow"] is None and {row["kind"] for row in usage["byVersion"]} == {"online"}


async def test_shadow_copies_are_shed_past_the_in_flight_bound(
    settings: Settings, plugin_manager: Any, tenant: NewTenant
) -> None:
    app = create_app(msgspec.structs.replace(settings, limits=LimitsSettings(max_shadow_in_flight=0)), plugin_manager)
    async with AsyncTestClient(app=app) as client:
        deployment = await deploy(client, tenant.key, SHADOWED)
        for _ in range(5):
            await predict(client, tenant.key, deployment)
        text = await wait_for_shadows(app, 5)
        assert metric(text, "cloudeasyml_shadow_copies_total", outcome="shed") == 5
        assert metric(text, "cloudeasyml_shadow_copies_total", outcome="run") == 0


async def on_app_loop(client: AsyncTestClient[Litestar], work: Any) -> Any:
    """Run ``work()`` on the app's own event loop (its batchers and tasks live there), as test_quotas does."""
    return await asyncio.wrap_future(client.blocking_portal.start_task_soon(work))


async def test_a_shadow_copy_starts_after_the_live_result_and_never_delays_it(
    app: Litestar, client: AsyncTestClient[Litestar], tenant: NewTenant
) -> None:
    """The live request returns from the data plane while its shadow copy is still blocked in its run."""
    services = app.state.services
    deployment = await deploy(client, tenant.key, SHADOWED)
    started: list[str] = []

    async def scenario() -> None:
        principal = await services.authenticator.authenticate(tenant.key)
        spec = await services.directory.by_id(principal, uuid.UUID(deployment["id"]))
        entry = services.inference.entry_for(spec)
        release = asyncio.Event()

        async def run(loaded: Any) -> Any:
            started.append(loaded.spec.model_version)
            if loaded.spec.model_version == "2.0.0":
                await release.wait()  # the shadow copy holds here until the scenario lets it go
            return await services.inference.run(loaded, [Point(**POINT)])

        result, _request_id = await services.inference.execute(principal, spec, entry, 1, run)
        assert started == ["1.0.0"] and result.outputs  # returned before the copy even started
        for _ in range(500):
            if len(started) == 2:
                break
            await asyncio.sleep(0.01)
        assert started == ["1.0.0", "2.0.0"] and services.inference.shadows.in_flight == 1  # blocked; live done
        release.set()

    await on_app_loop(client, scenario)
    text = await wait_for_shadows(app, 1)
    assert metric(text, "cloudeasyml_shadow_copies_total", outcome="run") == 1


async def test_shadow_copies_are_shed_while_the_live_queue_is_above_its_fraction(
    app: Litestar, client: AsyncTestClient[Litestar], tenant: NewTenant
) -> None:
    """One run holds the live unit's only instance; items wait behind it, past a quarter of the queue bound of 8."""
    services = app.state.services
    config = {"eagerLoad": True, "instances": 1, "maxQueueItems": 8}
    deployment = await deploy(client, tenant.key, SHADOWED, config=config)
    assert services.settings.limits.shadow_queue_fraction == 0.25

    async def scenario() -> None:
        principal = await services.authenticator.authenticate(tenant.key)
        spec = await services.directory.by_id(principal, uuid.UUID(deployment["id"]))
        live = services.registry.get_loaded(spec)
        gate = threading.Event()
        holding = asyncio.create_task(live.batcher.submit_alone(gate.wait, 1, 10**9))  # in a worker thread
        await asyncio.sleep(0.05)
        waiting = asyncio.create_task(live.predict([Point(**POINT)] * 3))
        await asyncio.sleep(0.05)
        try:
            assert live.batcher.queued_items == 3
            shadow = spec.for_route(TrafficRoute(**SHADOWED_ROUTE))
            services.inference.shadows.copy(principal, [shadow], live, RequestContext(), None)
            assert services.inference.shadows.in_flight == 0  # shed at once, nothing started
        finally:
            gate.set()
            await asyncio.gather(holding, waiting)

    await on_app_loop(client, scenario)
    text = services.metrics.render().decode()
    assert metric(text, "cloudeasyml_shadow_copies_total", outcome="shed") == 1
