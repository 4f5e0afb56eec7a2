"""Predictions through the real app: tiny model exported to ONNX, served by onnxruntime, metered."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
from litestar import Litestar
from litestar.testing import AsyncTestClient

from cloudeasyml.domain.tenants import NewTenant
from tests.conftest import bearer, db_session
from tests.support.tiny_model import numpy_forward, tiny_weights


async def deploy(client: AsyncTestClient[Litestar], key: str, model: str = "tiny", **extra: object) -> dict:
    response = await client.post("/deployments", json={"modelName": model, **extra}, headers=bearer(key))
    assert response.status_code == 201, response.text
    return response.json()


async def usage(client: AsyncTestClient[Litestar], key: str) -> dict:
    response = await client.get("/usage", headers=bearer(key))
    assert response.status_code == 200, response.text
    return response.json()


async def test_prediction_equals_the_network_computed_independently(client, tenant: NewTenant) -> None:
    deployment = await deploy(client, tenant.key)
    points = [{"x": 1.5, "y": -2.0}, {"x": 0.0, "y": 3.0}, {"x": -4.0, "y": 0.5}]
    response = await client.post(
        "/predict", json={"deploymentId": deployment["id"], "inputs": points}, headers=bearer(tenant.key)
    )
    assert response.status_code == 200, response.text
    body = response.json()
    expected = numpy_forward(tiny_weights(), np.array([[p["x"], p["y"]] for p in points], dtype=np.float32))
    assert [p["score"] for p in body["predictions"]] == np.round(expected, 5).tolist() or np.allclose(
        [p["score"] for p in body["predictions"]], expected, atol=1e-5
    )
    assert body["modelName"] == "tiny" and body["modelVersion"] == "1.0.0"
    assert body["deploymentId"] == deployment["id"]
    assert body["processingTimeMs"] >= 0 and len(body["requestId"]) == 36


async def test_deployment_in_the_path_predicts_the_same(client, tenant: NewTenant) -> None:
    deployment = await deploy(client, tenant.key)
    payload = {"inputs": [{"x": 1.0, "y": 1.0}]}
    by_path = await client.post(f"/deployments/{deployment['id']}/predict", json=payload, headers=bearer(tenant.key))
    by_body = await client.post(
        "/predict", json={**payload, "deploymentId": deployment["id"]}, headers=bearer(tenant.key)
    )
    assert by_path.status_code == by_body.status_code == 200
    assert by_path.json()["predictions"] == by_body.json()["predictions"]


async def test_usage_totals_after_n_predictions(client, tenant: NewTenant) -> None:
    deployment = await deploy(client, tenant.key)
    n = 7
    for i in range(n):
        response = await client.post(
            "/predict",
            json={"deploymentId": deployment["id"], "inputs": [{"x": float(i), "y": 1.0}] * 2},
            headers=bearer(tenant.key),
        )
        assert response.status_code == 200
    report = await usage(client, tenant.key)
    assert report["tenantId"] == str(tenant.tenant.id)
    assert report["totalRequests"] == n and report["totalItems"] == 2 * n
    tiny = report["byModel"]["tiny"]
    assert tiny["requests"] == n and tiny["items"] == 2 * n
    # Per request 0.001 plus 0.5 per processing second: exact decimals, at least the fixed part.
    assert Decimal(report["totalCost"]) == Decimal(tiny["cost"])
    assert Decimal(report["totalCost"]) >= Decimal("0.001") * n
    expected_time_part = Decimal(report["totalCost"]) - Decimal("0.001") * n
    assert abs(expected_time_part - Decimal("0.5") * Decimal(str(tiny["processingTimeMs"])) / 1000) < Decimal("0.00001")


async def test_usage_records_each_request_with_its_key_and_deployment(migrated_url, client, tenant: NewTenant) -> None:
    from sqlalchemy import select

    from cloudeasyml.db.models import UsageRecord

    deployment = await deploy(client, tenant.key, name="scorer")
    response = await client.post(
        "/predict", json={"deploymentId": deployment["id"], "inputs": [{"x": 1, "y": 2}]}, headers=bearer(tenant.key)
    )
    await usage(client, tenant.key)  # flushes the meter
    async with db_session(migrated_url) as session:
        rows = list(await session.scalars(select(UsageRecord).where(UsageRecord.tenant_id == tenant.tenant.id)))
    assert len(rows) == 1
    record = rows[0]
    assert record.request_id == response.json()["requestId"]
    assert record.api_key_id == tenant.key_id and record.deployment_name == "scorer"
    assert record.model_name == "tiny" and record.items == 1 and record.cost > 0


BAD_BODIES = [
    ("malformed json", b'{"inputs": [', 400),
    ("not an object", b"[1, 2]", 422),
    ("missing inputs", None, 422),
    ("empty inputs", {"inputs": []}, 422),
    ("wrong type", {"inputs": [{"x": "one", "y": 2}]}, 422),
    ("missing field", {"inputs": [{"x": 1}]}, 422),
    ("unknown field", {"inputs": [{"x": 1, "y": 2, "z": 3}]}, 422),
    ("out of range", {"inputs": [{"x": 1e9, "y": 2}]}, 422),
    ("inputs not a list", {"inputs": {"x": 1, "y": 2}}, 422),
]


async def test_bad_inputs_get_problem_details_and_are_not_billed(client, tenant: NewTenant) -> None:
    deployment = await deploy(client, tenant.key)
    for label, body, status in BAD_BODIES:
        if isinstance(body, dict):
            response = await client.post(
                "/predict", json={**body, "deploymentId": deployment["id"]}, headers=bearer(tenant.key)
            )
        elif body is None:
            response = await client.post(
                "/predict", json={"deploymentId": deployment["id"]}, headers=bearer(tenant.key)
            )
        else:
            response = await client.post(
                f"/deployments/{deployment['id']}/predict",
                content=body,
                headers={**bearer(tenant.key), "Content-Type": "application/json"},
            )
        assert response.status_code == status, (label, response.text)
        assert response.headers["content-type"].startswith("application/problem+json"), label
        problem = response.json()
        assert problem["status"] == status and problem["detail"], label
    report = await usage(client, tenant.key)
    assert report["totalRequests"] == 0 and Decimal(report["totalCost"]) == 0


async def test_validation_error_names_the_offending_field(client, tenant: NewTenant) -> None:
    deployment = await deploy(client, tenant.key)
    response = await client.post(
        "/predict",
        json={"deploymentId": deployment["id"], "inputs": [{"x": 1, "y": 2}, {"x": "bad", "y": 2}]},
        headers=bearer(tenant.key),
    )
    assert response.status_code == 422
    assert "$.inputs[1].x" in response.json()["detail"]


async def test_unknown_or_missing_deployment_is_404_or_422(client, tenant: NewTenant) -> None:
    unknown = await client.post(
        "/predict",
        json={"deploymentId": "00000000-0000-0000-0000-000000000000", "inputs": [{"x": 1, "y": 2}]},
        headers=bearer(tenant.key),
    )
    assert unknown.status_code == 404
    not_uuid = await client.post(
        "/predict", json={"deploymentId": "housing", "inputs": [{"x": 1, "y": 2}]}, headers=bearer(tenant.key)
    )
    assert not_uuid.status_code == 422


async def test_other_tenants_deployment_cannot_be_used(client, tenant: NewTenant, other_tenant: NewTenant) -> None:
    deployment = await deploy(client, tenant.key)
    response = await client.post(
        "/predict",
        json={"deploymentId": deployment["id"], "inputs": [{"x": 1, "y": 2}]},
        headers=bearer(other_tenant.key),
    )
    assert response.status_code == 404
    path = await client.post(
        f"/deployments/{deployment['id']}/predict",
        json={"inputs": [{"x": 1, "y": 2}]},
        headers=bearer(other_tenant.key),
    )
    assert path.status_code == 404
    assert (await usage(client, other_tenant.key))["totalRequests"] == 0
    assert (await usage(client, tenant.key))["totalRequests"] == 0


async def test_concurrent_requests_are_batched_and_each_billed_once(client, tenant: NewTenant) -> None:
    import asyncio

    deployment = await deploy(client, tenant.key)

    async def one(i: int) -> dict:
        response = await client.post(
            "/predict",
            json={"deploymentId": deployment["id"], "inputs": [{"x": float(i), "y": 0.0}]},
            headers=bearer(tenant.key),
        )
        assert response.status_code == 200, response.text
        return response.json()

    results = await asyncio.gather(*(one(i) for i in range(40)))
    expected = numpy_forward(tiny_weights(), np.array([[float(i), 0.0] for i in range(40)], dtype=np.float32))
    assert np.allclose([r["predictions"][0]["score"] for r in results], expected, atol=1e-5)
    assert len({r["requestId"] for r in results}) == 40
    assert (await usage(client, tenant.key))["totalRequests"] == 40


async def test_a_request_larger_than_the_queue_is_refused_and_not_billed(client, tenant: NewTenant) -> None:
    deployment = await deploy(client, tenant.key, config={"maxQueueItems": 2})
    response = await client.post(
        f"/deployments/{deployment['id']}/predict", json={"inputs": [{"x": 1, "y": 1}] * 3}, headers=bearer(tenant.key)
    )
    assert response.status_code == 422 and "at most 2 inputs" in response.json()["detail"]
    ok = await client.post(
        f"/deployments/{deployment['id']}/predict", json={"inputs": [{"x": 1, "y": 1}] * 2}, headers=bearer(tenant.key)
    )
    assert ok.status_code == 200
    assert (await usage(client, tenant.key))["totalRequests"] == 1
