"""A deployment's status tells the truth: ``pending`` until this process loads it, ``loading`` meanwhile, ``ready`` once
loaded here, ``failed`` with the reason when its last load failed in any process (stored: another process sees it),
back to ``pending`` elsewhere once a load succeeds."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from cloudeasyml.app import create_app
from cloudeasyml.domain.principal import Principal
from cloudeasyml.domain.tenants import NewTenant
from cloudeasyml.settings import RuntimeSettings, Settings
from tests.conftest import bearer
from tests.integration.test_predict import deploy
from tests.support import tiny_embedder, tiny_model

POINT = {"x": 1.0, "y": 2.0}


async def _status(client: AsyncTestClient, key: str, deployment_id: str) -> tuple[str, str | None]:
    body = (await client.get(f"/deployments/{deployment_id}", headers=bearer(key))).json()
    listed = {d["id"]: d for d in (await client.get("/deployments", headers=bearer(key))).json()}[deployment_id]
    assert (listed["status"], listed["statusReason"]) == (body["status"], body["statusReason"])
    assert body["loaded"] == (body["status"] == "ready")
    return body["status"], body["statusReason"]


async def test_pending_until_loaded_here_and_readiness_polls_never_load(client, tenant: NewTenant) -> None:
    deployment = await deploy(client, tenant.key, name="scorer")
    assert deployment["status"] == "pending" and deployment["statusReason"] is None
    ready = await client.get("/v2/models/scorer/ready", headers=bearer(tenant.key))
    assert ready.status_code == 200  # its graph is exported: the first inference only opens a session
    assert await _status(client, tenant.key, deployment["id"]) == ("pending", None)
    predicted = await client.post(
        "/predict", json={"deploymentId": deployment["id"], "inputs": [POINT]}, headers=bearer(tenant.key)
    )
    assert predicted.status_code == 200
    assert await _status(client, tenant.key, deployment["id"]) == ("ready", None)


async def test_loading_while_a_load_is_under_way_here(app, client, tenant: NewTenant, database_url: str) -> None:
    if "postgres" in database_url:  # the load runs on the test's loop, which the app's asyncpg pool cannot serve
        pytest.skip("loading is this process's own state: SQLite is enough")
    deployment = await deploy(client, tenant.key)
    services = app.state.services
    spec = await services.directory.by_id(_principal(tenant), uuid.UUID(deployment["id"]))
    load = asyncio.ensure_future(services.registry.load(spec, services.catalog.get("tiny").model))
    await asyncio.sleep(0)  # the load starts, and waits for its artifact in a thread
    assert await _status(client, tenant.key, deployment["id"]) == ("loading", None)
    await load
    assert await _status(client, tenant.key, deployment["id"]) == ("ready", None)


def _principal(tenant: NewTenant) -> Principal:
    return Principal(tenant_id=tenant.tenant.id, key_id="test", scopes=frozenset({"admin"}))


async def test_a_failed_load_is_stored_with_its_reason_for_every_process_and_cleared_by_a_success(
    settings: Settings, plugin_manager, tenant: NewTenant, tmp_path: Path
) -> None:
    """Two apps on one database stand for two worker processes: a load that fails in one shows in the other."""
    artifacts = tmp_path / "artifacts"
    tiny_model.seed_graph(artifacts)  # the tiny embedder's graph is not there, and nothing may export it
    runtime = RuntimeSettings(artifact_dir=str(artifacts), export_on_load=False)
    settings = msgspec.structs.replace(settings, runtime=runtime)
    plugin_manager.register(tiny_embedder, name="tiny-embed")
    one, other = create_app(settings, plugin_manager), create_app(settings, plugin_manager)
    async with AsyncTestClient(app=one) as first, AsyncTestClient(app=other) as second:
        deployment = await deploy(first, tenant.key, model="tiny-embed", name="embed")
        body = {"deploymentId": deployment["id"], "inputs": ["a man eats"]}
        failed = await first.post("/predict", json=body, headers=bearer(tenant.key))
        assert failed.status_code == 503 and "has not been exported" in failed.json()["detail"]
        for client in (first, second):
            status, reason = await _status(client, tenant.key, deployment["id"])
            assert status == "failed" and reason is not None and "has not been exported" in reason
        tiny_embedder.seed_graph(artifacts)  # the operator runs the export
        assert (await second.post("/predict", json=body, headers=bearer(tenant.key))).status_code == 200
        assert await _status(second, tenant.key, deployment["id"]) == ("ready", None)
        # The first process has not loaded it: not ready there, but not failed any more either.
        assert await _status(first, tenant.key, deployment["id"]) == ("pending", None)


async def test_a_version_gone_from_the_artifact_store_fails_its_load_with_the_reason(
    client, tenant: NewTenant, artifact_dir: Path
) -> None:
    """An operator deletes a trained version's files while a deployment still serves it: its next load fails, the
    deployment says so (``failed``, with the reason) and its predictions are 503, not a 404 that reads as if the
    deployment were gone."""
    version = "1.3.0-removed"
    tiny_model.seed_version(artifact_dir, version, 1.0)
    deployment = await deploy(client, tenant.key, name="gone", modelVersion=version)
    shutil.rmtree(artifact_dir / "tiny" / version)
    body = {"deploymentId": deployment["id"], "inputs": [POINT]}
    failed = await client.post("/predict", json=body, headers=bearer(tenant.key))
    assert failed.status_code == 503, failed.text
    assert version in failed.json()["detail"] and "artifact store" in failed.json()["detail"]
    status, reason = await _status(client, tenant.key, deployment["id"])
    assert status == "failed" and reason is not None and version in reason
    v2 = await client.post(
        "/v2/models/gone/infer",
        json={"inputs": [{"name": "points", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}]},
        headers=bearer(tenant.key),
    )
    assert v2.status_code == 503 and version in v2.json()["error"], v2.text
