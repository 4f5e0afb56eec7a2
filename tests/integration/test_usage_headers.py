"""Every billed answer says what it cost (``X-Usage-Items``, ``X-Usage-Processing-Ms``, ``X-Usage-Cost``), equal to
the request's usage record, on every protocol; answers that were not billed carry none."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import select

from cloudeasyml.app import create_app
from cloudeasyml.db.models import UsageRecord
from cloudeasyml.domain.tenants import NewTenant
from tests.conftest import bearer, db_session
from tests.integration.test_predict import deploy
from tests.integration.test_v2_protocol import POINTS, binary_body, points_input

USAGE_HEADERS = ("x-usage-items", "x-usage-processing-ms", "x-usage-cost")


async def _records(client, key: str, url: str) -> dict[str, UsageRecord]:
    assert (await client.get("/usage", headers=bearer(key))).status_code == 200  # flushes the meter
    async with db_session(url) as session:
        return {record.request_id: record for record in await session.scalars(select(UsageRecord))}


def _check(response: httpx.Response, record: UsageRecord) -> None:
    assert response.headers["x-usage-items"] == str(record.items)
    assert float(response.headers["x-usage-processing-ms"]) == round(record.processing_ms, 3)
    cost = response.headers["x-usage-cost"]
    assert "E" not in cost.upper() and Decimal(cost) == record.cost


async def test_every_protocols_billed_answer_carries_its_usage_records_cost(
    client, tenant: NewTenant, migrated_url: str
) -> None:
    deployment = await deploy(client, tenant.key, name="scorer")
    auth = bearer(tenant.key)
    points = [{"x": 1.5, "y": -2.0}, {"x": 0.0, "y": 3.0}]
    raw = POINTS.astype("<f4").tobytes()
    tensor = {"name": "points", "datatype": "FP32", "shape": [3, 2], "parameters": {"binary_data_size": len(raw)}}
    v2_binary, v2_headers = binary_body({"inputs": [tensor], "parameters": {"binary_data_output": True}}, raw)
    answers = [
        await client.post("/predict", json={"deploymentId": deployment["id"], "inputs": points}, headers=auth),
        await client.post(f"/deployments/{deployment['id']}/predict", json={"inputs": points[:1]}, headers=auth),
        await client.post("/v2/models/scorer/infer", json={"inputs": [points_input()]}, headers=auth),
        await client.post("/v2/models/scorer/infer", content=v2_binary, headers={**auth, **v2_headers}),
    ]
    for response in answers:
        assert response.status_code == 200, response.text
    records = await _records(client, tenant.key, migrated_url)
    assert len(records) == len(answers)
    for response in answers:
        _check(response, records[response.headers["x-request-id"]])
    assert [r.headers["x-usage-items"] for r in answers] == ["2", "1", "3", "3"]


async def test_answers_that_were_not_billed_carry_no_cost(client, tenant: NewTenant) -> None:
    deployment = await deploy(client, tenant.key)
    auth = bearer(tenant.key)
    refused = await client.post("/predict", json={"deploymentId": deployment["id"], "inputs": []}, headers=auth)
    management = await client.get("/deployments", headers=auth)
    assert refused.status_code == 422 and management.status_code == 200
    for response in (refused, management):
        assert not set(USAGE_HEADERS) & set(response.headers)


@pytest.mark.slow  # loads MiniLM
async def test_an_embeddings_answer_carries_its_cost(settings, plugin_manager, tenant: NewTenant, migrated_url: str):  # type: ignore[no-untyped-def]
    if "postgres" in migrated_url:
        pytest.skip("the endpoint bills through the same data plane: SQLite is enough")
    minilm = pytest.importorskip("cloudeasyml_minilm")
    plugin_manager.register(minilm, name="minilm")
    async with AsyncTestClient(app=create_app(settings, plugin_manager)) as client:
        created = await client.post(
            "/deployments", json={"modelName": "minilm", "name": "embed"}, headers=bearer(tenant.key)
        )
        assert created.status_code == 201, created.text
        body = {"model": "embed", "input": ["one text", "and another"]}
        response = await client.post("/v1/embeddings", json=body, headers=bearer(tenant.key))
        assert response.status_code == 200, response.text
        records = await _records(client, tenant.key, migrated_url)
    _check(response, records[response.headers["x-request-id"]])
    assert response.headers["x-usage-items"] == "2"
