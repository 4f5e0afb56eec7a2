"""Deployments: create, list, read, delete; validation; tenancy."""

from __future__ import annotations

from cloudeasyml.domain.tenants import NewTenant
from tests.conftest import bearer


async def test_deployment_lifecycle(client, tenant: NewTenant) -> None:
    headers = bearer(tenant.key)
    created = await client.post(
        "/deployments", json={"modelName": "tiny", "name": "scorer", "config": {"maxBatchSize": 8}}, headers=headers
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == "scorer" and body["modelName"] == "tiny" and body["modelVersion"] == "1.0.0"
    assert body["status"] == "pending" and body["config"]["maxBatchSize"] == 8
    assert body["config"]["device"] == "auto"  # the model's default, kept
    listed = (await client.get("/deployments", headers=headers)).json()
    assert [d["id"] for d in listed] == [body["id"]]
    assert (await client.get(f"/deployments/{body['id']}", headers=headers)).json()["name"] == "scorer"
    assert (await client.delete(f"/deployments/{body['id']}", headers=headers)).status_code == 204
    assert (await client.get(f"/deployments/{body['id']}", headers=headers)).status_code == 404
    gone = await client.post(f"/deployments/{body['id']}/predict", json={"inputs": [{"x": 1, "y": 1}]}, headers=headers)
    assert gone.status_code == 404


async def test_generated_name_and_eager_load(client, tenant: NewTenant) -> None:
    response = await client.post(
        "/deployments", json={"modelName": "tiny", "config": {"eagerLoad": True}}, headers=bearer(tenant.key)
    )
    assert response.status_code == 201
    assert response.json()["name"].startswith("tiny-") and response.json()["loaded"] is True
    assert response.json()["status"] == "ready"
    health = (await client.get("/health")).json()
    assert health["modelsLoaded"] == 1


async def test_duplicate_name_is_a_conflict(client, tenant: NewTenant, other_tenant: NewTenant) -> None:
    body = {"modelName": "tiny", "name": "same"}
    assert (await client.post("/deployments", json=body, headers=bearer(tenant.key))).status_code == 201
    duplicate = await client.post("/deployments", json=body, headers=bearer(tenant.key))
    assert duplicate.status_code == 409
    # Names are unique per tenant, not globally.
    assert (await client.post("/deployments", json=body, headers=bearer(other_tenant.key))).status_code == 201


async def test_invalid_deployments_are_refused_and_nothing_is_written(client, tenant: NewTenant) -> None:
    headers = bearer(tenant.key)
    cases = [
        ({"modelName": "no-such-model"}, 404),
        ({"modelName": "tiny", "modelVersion": "9.9.9"}, 404),
        ({"modelName": "tiny", "name": "Bad Name!"}, 422),
        ({"modelName": "tiny", "config": {"maxBatchSize": 0}}, 422),
        ({"modelName": "tiny", "config": {"noSuchOption": 1}}, 422),
        ({"modelName": "tiny", "config": {"device": "tpu"}}, 422),
        ({"name": "x"}, 422),  # valid JSON missing a field: the README's 422, not Litestar's 400
    ]
    for body, status in cases:
        response = await client.post("/deployments", json=body, headers=headers)
        assert response.status_code == status, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    assert (await client.get("/deployments", headers=headers)).json() == []
    malformed = await client.post(
        "/deployments", content=b"{nope", headers={**headers, "Content-Type": "application/json"}
    )
    assert malformed.status_code == 400


async def test_other_tenants_deployments_are_invisible(client, tenant: NewTenant, other_tenant: NewTenant) -> None:
    created = (await client.post("/deployments", json={"modelName": "tiny"}, headers=bearer(tenant.key))).json()
    b = bearer(other_tenant.key)
    assert (await client.get("/deployments", headers=b)).json() == []
    assert (await client.get(f"/deployments/{created['id']}", headers=b)).status_code == 404
    assert (await client.delete(f"/deployments/{created['id']}", headers=b)).status_code == 404
    assert (await client.get(f"/deployments/{created['id']}", headers=bearer(tenant.key))).status_code == 200


async def test_unknown_routes_and_methods_are_problem_details(client, tenant: NewTenant) -> None:
    missing = await client.get("/nothing-here", headers=bearer(tenant.key))
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/problem+json")
    wrong = await client.put("/deployments", headers=bearer(tenant.key))
    assert wrong.status_code == 405


async def test_traffic_at_creation(client, tenant: NewTenant) -> None:
    """A split is stored and read back (live routes first); a single version reads as one route at 100."""
    headers = bearer(tenant.key)
    split = [
        {"modelVersion": "1.0.0", "variant": "optimized", "weight": 20, "mode": "shadow"},
        {"modelVersion": "1.0.0", "weight": 90},
        {"modelVersion": "1.0.0", "variant": "int8", "weight": 10},
    ]
    created = await client.post("/deployments", json={"modelName": "tiny", "traffic": split}, headers=headers)
    assert created.status_code == 201, created.text
    traffic = created.json()["traffic"]
    assert [(r["variant"], r["weight"], r["mode"]) for r in traffic] == [
        (None, 90, "live"),
        ("int8", 10, "live"),
        ("optimized", 20, "shadow"),
    ]
    assert (await client.get(f"/deployments/{created.json()['id']}", headers=headers)).json()["traffic"] == traffic
    single = await client.post("/deployments", json={"modelName": "tiny"}, headers=headers)
    assert single.json()["traffic"] == [{"modelVersion": "1.0.0", "weight": 100, "variant": None, "mode": "live"}]


async def test_invalid_traffic_is_refused_and_nothing_is_written(client, tenant: NewTenant) -> None:
    headers = bearer(tenant.key)
    live = {"modelVersion": "1.0.0", "weight": 100}
    cases = [
        ([{"modelVersion": "1.0.0", "weight": 90}], 422, "sum to 90"),
        ([{"modelVersion": "1.0.0", "weight": 30, "mode": "shadow"}], 422, "at least one live"),
        ([live, {"modelVersion": "1.0.0", "weight": 0, "mode": "shadow", "variant": "int8"}], 422, "1 to 100"),
        ([live, {"modelVersion": "1.0.0", "weight": 0}], 422, "twice"),
        ([{"modelVersion": "9.9.9", "weight": 100}], 404, "9.9.9"),
        ([{"modelVersion": "1.0.0", "weight": 101}], 422, "weight"),
        ([live] * 9, 422, "1 to 8"),
        ([{"modelVersion": "1.0.0", "weight": 100, "mode": "canary"}], 422, "mode"),
    ]
    for traffic, status, words in cases:
        response = await client.post("/deployments", json={"modelName": "tiny", "traffic": traffic}, headers=headers)
        assert response.status_code == status, (traffic, response.text)
        assert words in response.json()["detail"], (traffic, response.text)
    mismatch = await client.post(
        "/deployments", json={"modelName": "tiny", "modelVersion": "2.0.0", "traffic": [live]}, headers=headers
    )
    assert mismatch.status_code == 422, mismatch.text
    assert (await client.get("/deployments", headers=headers)).json() == []
