"""Models, health, readiness, OpenAPI."""

from __future__ import annotations

import msgspec

from cloudeasyml.cli.db import upgrade_database
from cloudeasyml.domain.tenants import NewTenant
from tests.conftest import bearer


async def test_models_list_their_metadata_and_a_valid_example_input(client, tenant: NewTenant) -> None:
    models = (await client.get("/models", headers=bearer(tenant.key))).json()
    tiny = next(m for m in models if m["name"] == "tiny")
    assert tiny["version"] == "1.0.0" and tiny["versions"][0] == "1.0.0"
    assert tiny["exampleInput"] == {"x": 1.0, "y": 2.0}
    assert tiny["pricing"] == {"perRequest": "0.001", "perSecond": "0.5", "perGpuHour": "0"}
    assert tiny["serving"]["maxBatchSize"] == 16
    assert tiny["limits"] == {
        "maxItemsPerRequest": 256,
        "maxBatchItems": 256,
        "maxCharactersPerItem": None,
        "maxTokensPerItem": None,
    }
    assert tiny["inputTensors"] == [{"name": "points", "datatype": "FP32", "shape": [-1, 2], "dynamicAxes": ["batch"]}]
    assert "x" in str(tiny["inputSchema"])
    one = await client.get("/models/tiny", headers=bearer(tenant.key))
    assert one.json() == tiny
    assert (await client.get("/models/nope", headers=bearer(tenant.key))).status_code == 404


async def test_example_input_is_accepted_by_predict(client, tenant: NewTenant) -> None:
    headers = bearer(tenant.key)
    for model in (await client.get("/models", headers=headers)).json():
        deployment = (await client.post("/deployments", json={"modelName": model["name"]}, headers=headers)).json()
        response = await client.post(
            "/predict", json={"deploymentId": deployment["id"], "inputs": [model["exampleInput"]]}, headers=headers
        )
        assert response.status_code == 200, (model["name"], response.text)


async def test_health_and_readiness(client) -> None:
    health = (await client.get("/health")).json()
    assert health["status"] == "healthy" and "timestamp" in health and health["modelsLoaded"] == 0
    ready = await client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


async def test_not_ready_until_migrated(database_url, settings, plugin_manager) -> None:
    from litestar.testing import AsyncTestClient

    from cloudeasyml.app import create_app

    app = create_app(
        msgspec.structs.replace(settings, database=msgspec.structs.replace(settings.database, url=database_url)),
        plugin_manager,
    )
    async with AsyncTestClient(app=app) as client:
        # `settings` already migrated this database; go back to nothing and ask again.
        from alembic import command

        from cloudeasyml.migrations_path import alembic_config

        await _in_thread(command.downgrade, alembic_config(database_url), "base")
        response = await client.get("/health/ready")
        assert response.status_code == 503 and "db upgrade" in response.json()["detail"]
        await _in_thread(upgrade_database, database_url)
        assert (await client.get("/health/ready")).status_code == 200


async def _in_thread(fn, *args):  # type: ignore[no-untyped-def]
    import asyncio

    return await asyncio.to_thread(fn, *args)


async def test_openapi_document_describes_the_api(client) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    paths = schema["paths"]
    for path in ("/predict", "/deployments", "/api-keys", "/usage", "/models", "/health"):
        assert path in paths, path
    assert schema["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    ui = await client.get("/schema")
    assert ui.status_code == 200 and "html" in ui.headers["content-type"]


async def test_metrics_count_predictions_and_errors_in_prometheus_format(client, tenant: NewTenant) -> None:
    headers = bearer(tenant.key)
    deployment = (await client.post("/deployments", json={"modelName": "tiny", "name": "m"}, headers=headers)).json()
    for _ in range(3):
        await client.post(
            f"/deployments/{deployment['id']}/predict", json={"inputs": [{"x": 1, "y": 2}] * 2}, headers=headers
        )
    await client.post(f"/deployments/{deployment['id']}/predict", json={"inputs": []}, headers=headers)
    response = await client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'cloudeasyml_predictions_total{model="tiny",version="1.0.0"} 3.0' in text
    assert 'cloudeasyml_prediction_items_total{model="tiny",version="1.0.0"} 6.0' in text
    assert 'cloudeasyml_http_errors_total{status="422"} 1' in text
    assert "cloudeasyml_deployments_loaded 1" in text
    assert "# TYPE cloudeasyml_predictions_total counter" in text


async def test_ready_when_the_schema_is_newer_than_this_release(client, migrated_url: str) -> None:
    from sqlalchemy import text

    from tests.conftest import db_session

    async with db_session(migrated_url) as session:
        await session.execute(text("UPDATE alembic_version SET version_num = 'from_a_newer_release'"))
    assert (await client.get("/health/ready")).status_code == 200
