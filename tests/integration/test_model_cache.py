"""Sessions are shared by deployments of one artifact and evicted least-recently-used past the memory budget."""

from __future__ import annotations

import uuid
from pathlib import Path

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from cloudeasyml.app import create_app
from cloudeasyml.runtime.artifacts import ArtifactStore
from cloudeasyml.runtime.resolver import ArtifactResolver
from tests.conftest import bearer
from tests.support.tiny_model import TinyModel

HousingModel = pytest.importorskip("cloudeasyml_housing.model").HousingModel
pytestmark = pytest.mark.export  # housing's graph is exported here


async def predict(client, key: str, deployment: dict, inputs: list) -> None:  # type: ignore[no-untyped-def]
    response = await client.post(
        f"/deployments/{deployment['id']}/predict", json={"inputs": inputs}, headers=bearer(key)
    )
    assert response.status_code == 200, response.text


async def test_least_recently_used_model_is_unloaded_past_the_budget_and_reloads(
    settings, plugin_manager, tenant
) -> None:
    # A budget that holds the larger graph (housing's) but not both.
    resolver = ArtifactResolver(ArtifactStore(Path(settings.runtime.artifact_dir)))
    sizes = [resolver.ensure(model, model.version).stat().st_size for model in (TinyModel(), HousingModel())]
    budget = max(sizes) + min(sizes) // 2
    runtime = msgspec.structs.replace(settings.runtime, memory_budget_mb=budget / 2**20)
    app = create_app(msgspec.structs.replace(settings, runtime=runtime), plugin_manager)
    headers = bearer(tenant.key)
    async with AsyncTestClient(app=app) as client:
        housing_example = (await client.get("/models/housing", headers=headers)).json()["exampleInput"]
        tiny = (await client.post("/deployments", json={"modelName": "tiny"}, headers=headers)).json()
        tiny_twin = (await client.post("/deployments", json={"modelName": "tiny"}, headers=headers)).json()
        housing = (await client.post("/deployments", json={"modelName": "housing"}, headers=headers)).json()
        registry = app.state.services.registry

        await predict(client, tenant.key, tiny, [{"x": 1, "y": 2}])
        await predict(client, tenant.key, tiny_twin, [{"x": 1, "y": 2}])
        assert len(registry) == 2 and len(registry._sessions) == 1  # one artifact, one shared session

        await predict(client, tenant.key, housing, [housing_example])
        assert registry.get_loaded(uuid.UUID(housing["id"])) is not None
        assert len(registry) == 1  # both tiny deployments went with their session

        await predict(client, tenant.key, tiny, [{"x": 3, "y": 4}])  # loads again, evicting housing
        assert len(registry) == 1 and registry.session_bytes <= budget
        assert (await client.get("/health")).json()["modelsLoaded"] == 1
