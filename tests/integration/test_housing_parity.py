"""The housing plugin end to end: a prediction over HTTP equals the torch model's output within 1e-4."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from cloudeasyml.domain.tenants import NewTenant
from cloudeasyml.runtime.export import torch_outputs
from tests.conftest import bearer

housing_model = pytest.importorskip("cloudeasyml_housing.model")


@pytest.mark.export
async def test_http_prediction_equals_torch_within_1e_4(client, tenant: NewTenant) -> None:
    headers = bearer(tenant.key)
    example = (await client.get("/models/housing", headers=headers)).json()["exampleInput"]
    deployment = (await client.post("/deployments", json={"modelName": "housing"}, headers=headers)).json()
    rng = np.random.default_rng(1)
    payload = [
        {**example, "lotSize": float(rng.integers(2000, 12000)), "bedrooms": int(rng.integers(1, 6))} for _ in range(12)
    ]
    response = await client.post(
        "/predict", json={"deploymentId": deployment["id"], "inputs": payload}, headers=headers
    )
    assert response.status_code == 200, response.text
    served = np.array([p["price"] for p in response.json()["predictions"]])

    model = housing_model.HousingModel()
    decoded = msgspec.convert(payload, list[model.input_type])
    module = model.build_module(model.load_weights())
    expected = torch_outputs(model, module, model.to_arrays(decoded))["price"][:, 0]
    assert np.max(np.abs(served - expected)) <= 1e-4
