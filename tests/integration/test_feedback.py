"""``POST /feedback``: ground truth for an answered request of the caller's tenant, written once."""

from __future__ import annotations

from datetime import timedelta

from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import update

from cloudeasyml.core.clock import utc_now
from cloudeasyml.db.models import UsageRecord
from cloudeasyml.domain.tenants import NewTenant
from tests.conftest import bearer, db_session


async def _answered(client: AsyncTestClient[Litestar], key: str, points: int = 1) -> str:
    """A request id of a prediction answered for ``key``'s tenant."""
    headers = bearer(key)
    deployment = (await client.post("/deployments", json={"modelName": "tiny"}, headers=headers)).json()
    inputs = [{"x": float(i), "y": 1.0} for i in range(points)]
    response = await client.post(f"/deployments/{deployment['id']}/predict", json={"inputs": inputs}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["requestId"]


async def _key(client: AsyncTestClient[Litestar], admin_key: str, scopes: list[str]) -> str:
    response = await client.post("/api-keys", json={"name": "k", "scopes": scopes}, headers=bearer(admin_key))
    assert response.status_code == 201, response.text
    return response.json()["key"]


async def test_feedback_is_stored_once_and_the_same_again_is_the_same_row(client, tenant: NewTenant) -> None:
    request_id = await _answered(client, tenant.key)
    first = await client.post("/feedback", json={"requestId": request_id, "value": 182.5}, headers=bearer(tenant.key))
    assert first.status_code == 201, first.text
    assert first.json()["requestId"] == request_id and first.json()["value"] == 182.5
    assert first.json()["label"] is None
    again = await client.post("/feedback", json={"requestId": request_id, "value": 182.5}, headers=bearer(tenant.key))
    assert again.status_code == 200 and again.json() == first.json()
    other = await client.post("/feedback", json={"requestId": request_id, "value": 90}, headers=bearer(tenant.key))
    assert other.status_code == 409 and "written once" in other.json()["detail"]
    label = await client.post("/feedback", json={"requestId": request_id, "label": "x"}, headers=bearer(tenant.key))
    assert label.status_code == 409


async def test_another_tenants_unknown_and_expired_requests_are_not_found(
    client, tenant: NewTenant, other_tenant: NewTenant, migrated_url: str
) -> None:
    mine = await _answered(client, tenant.key)
    theirs = await client.post("/feedback", json={"requestId": mine, "value": 1.0}, headers=bearer(other_tenant.key))
    assert theirs.status_code == 404
    unknown = await client.post("/feedback", json={"requestId": "0" * 36, "value": 1.0}, headers=bearer(tenant.key))
    assert unknown.status_code == 404
    old = await _answered(client, tenant.key)
    assert (await client.get("/usage", headers=bearer(tenant.key))).status_code == 200  # its usage is written
    async with db_session(migrated_url) as session:
        await session.execute(
            update(UsageRecord).where(UsageRecord.request_id == old).values(created_at=utc_now() - timedelta(days=31))
        )
    expired = await client.post("/feedback", json={"requestId": old, "value": 1.0}, headers=bearer(tenant.key))
    assert expired.status_code == 404 and "30 days" in expired.json()["detail"]
    # Nothing was written for the refused ones: the owner can still give the first feedback.
    ok = await client.post("/feedback", json={"requestId": mine, "value": 2.0}, headers=bearer(tenant.key))
    assert ok.status_code == 201


async def test_bad_bodies_are_422(client, tenant: NewTenant) -> None:
    request_id = await _answered(client, tenant.key, points=3)
    headers = bearer(tenant.key)
    cases = [
        ({"requestId": request_id}, "one of them"),
        ({"requestId": request_id, "label": "a", "value": 1.0}, "one of them"),
        ({"requestId": request_id, "value": 1.0}, "as a list of 3"),
        ({"requestId": request_id, "value": [1.0, 2.0]}, "answered 3 item(s)"),
        ({"requestId": request_id, "value": "high"}, "Expected"),
        ({"requestId": request_id, "label": "a", "extra": 1}, "unknown field"),
        ({"value": 1.0}, "requestId"),
    ]
    for body, words in cases:
        response = await client.post("/feedback", json=body, headers=headers)
        assert response.status_code == 422, (body, response.text)
        assert words in response.json()["detail"], (body, response.text)
    ok = await client.post("/feedback", json={"requestId": request_id, "value": [1.0, 2.0, 3]}, headers=headers)
    assert ok.status_code == 201 and ok.json()["value"] == [1.0, 2.0, 3.0]


async def test_inference_keys_may_give_feedback_and_others_may_not(client, tenant: NewTenant) -> None:
    request_id = await _answered(client, tenant.key, points=1)
    predict = await _key(client, tenant.key, ["predict"])
    labelling = await _key(client, tenant.key, ["feedback:write"])
    reader = await _key(client, tenant.key, ["usage:read"])
    refused = await client.post("/feedback", json={"requestId": request_id, "label": 1}, headers=bearer(reader))
    assert refused.status_code == 403 and "feedback:write" in refused.json()["detail"]
    by_predict = await client.post("/feedback", json={"requestId": request_id, "label": 1}, headers=bearer(predict))
    assert by_predict.status_code == 201
    by_labeller = await client.post("/feedback", json={"requestId": request_id, "label": 1}, headers=bearer(labelling))
    assert by_labeller.status_code == 200  # the same feedback: the stored row


async def test_a_model_says_what_feedback_it_takes(client, tenant: NewTenant) -> None:
    tiny = (await client.get("/models/tiny", headers=bearer(tenant.key))).json()
    assert tiny["qualityMetric"] == {"kind": "regression", "field": "score", "name": "rmse", "higherIsBetter": False}
