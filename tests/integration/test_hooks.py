"""Every hook, exercised by an example plugin through the real app."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from litestar.testing import AsyncTestClient

from cloudeasyml import hookimpl
from cloudeasyml.app import create_app
from cloudeasyml.domain.principal import Principal
from cloudeasyml.domain.tenants import create_tenant
from tests.conftest import bearer, db_session
from tests.support.example_plugins import JwtAuth, TierPricing, make_jwt


@pytest.fixture(name="hooked_client")
async def fx_hooked_client(settings, plugin_manager):  # type: ignore[no-untyped-def]
    plugin_manager.register(JwtAuth(), name="jwt-auth")
    plugin_manager.register(TierPricing(), name="tier-pricing")
    async with AsyncTestClient(app=create_app(settings, plugin_manager)) as client:
        yield client


async def test_hook_cloudeasyml_register_models_serves_the_registered_model(client, tenant) -> None:
    models = (await client.get("/models", headers=bearer(tenant.key))).json()
    assert "tiny" in [m["name"] for m in models]


async def test_hook_cloudeasyml_authenticate_accepts_a_jwt_in_place_of_a_key(hooked_client, tenant) -> None:
    claims = {
        "sub": "alice",
        "tenant": str(tenant.tenant.id),
        "scope": "predict deployments:write",
        "exp": time.time() + 60,
    }
    headers = bearer(make_jwt(claims))
    deployment = await hooked_client.post("/deployments", json={"modelName": "tiny"}, headers=headers)
    assert deployment.status_code == 201
    response = await hooked_client.post(
        "/predict", json={"deploymentId": deployment.json()["id"], "inputs": [{"x": 1, "y": 2}]}, headers=headers
    )
    assert response.status_code == 200
    # Scopes come from the token: no usage:read here.
    assert (await hooked_client.get("/usage", headers=headers)).status_code == 403
    # The deployment belongs to the token's tenant.
    listed = (await hooked_client.get("/deployments", headers=bearer(tenant.key))).json()
    assert [d["id"] for d in listed] == [deployment.json()["id"]]


async def test_hook_cloudeasyml_authenticate_rejections_are_401(hooked_client, tenant) -> None:
    expired = make_jwt({"sub": "a", "tenant": str(tenant.tenant.id), "scope": "predict", "exp": time.time() - 1})
    forged = make_jwt({"sub": "a", "tenant": str(tenant.tenant.id), "scope": "admin", "exp": time.time() + 60}, b"x")
    for token, message in ((expired, "expired"), (forged, "signature"), ("not-a-token", "invalid API key")):
        response = await hooked_client.get("/models", headers=bearer(token))
        assert response.status_code == 401 and message in response.json()["detail"]


async def test_hook_cloudeasyml_adjust_pricing_bills_a_plan_differently(hooked_client, migrated_url, tenant) -> None:
    async with db_session(migrated_url) as session:
        enterprise = await create_tenant(session, "big-co", "cfo@big.co", plan="enterprise")
    totals = {}
    for who in (tenant, enterprise):
        headers = bearer(who.key)
        deployment = (await hooked_client.post("/deployments", json={"modelName": "tiny"}, headers=headers)).json()
        for _ in range(3):
            response = await hooked_client.post(
                "/predict", json={"deploymentId": deployment["id"], "inputs": [{"x": 1, "y": 2}]}, headers=headers
            )
            assert response.status_code == 200
        report = (await hooked_client.get("/usage", headers=headers)).json()
        totals[who.tenant.name] = (Decimal(report["totalCost"]), report["byModel"]["tiny"]["processingTimeMs"])
    default_cost, default_ms = totals["tenant-a"]
    enterprise_cost, enterprise_ms = totals["big-co"]
    # Per request 0.001 (default) vs 0.0005 (enterprise), plus half the per-second rate on the measured time.
    assert default_cost - Decimal("0.5") * Decimal(str(default_ms)) / 1000 == pytest.approx(
        Decimal("0.003"), abs=Decimal("0.000001")
    )
    assert enterprise_cost - Decimal("0.25") * Decimal(str(enterprise_ms)) / 1000 == pytest.approx(
        Decimal("0.0015"), abs=Decimal("0.000001")
    )


class CountingJwtAuth(JwtAuth):
    """The example JWT plugin, counting the tokens the host asks it about."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    @hookimpl
    def cloudeasyml_authenticate(self, token: str) -> Principal | None:
        self.asked.append(token)
        return super().cloudeasyml_authenticate(token)


async def test_hook_cloudeasyml_authenticate_answers_are_cached_accepted_or_refused(
    settings, plugin_manager, tenant
) -> None:
    plugin = CountingJwtAuth()
    plugin_manager.register(plugin, name="counting-jwt-auth")
    app = create_app(settings, plugin_manager)
    claims = {"sub": "a", "tenant": str(tenant.tenant.id), "scope": "predict", "exp": time.time() + 60}
    good = make_jwt(claims)
    forged = make_jwt(claims, b"another-key")
    async with AsyncTestClient(app=app) as client:
        for token, status in ((good, 200), (forged, 401), ("not-a-token", 401)):
            for _ in range(4):
                assert (await client.get("/models", headers=bearer(token))).status_code == status
        detail = (await client.get("/models", headers=bearer(forged))).json()["detail"]
    assert detail == "invalid token signature"  # a cached refusal keeps the plugin's words
    # One call per token, whether the plugin accepted it, refused it or did not recognise it.
    assert plugin.asked == [good, forged, "not-a-token"]
    # The cache holds digests, never the tokens.
    cache = app.state.services.authenticator._external_answers._entries
    assert len(cache) == 3 and not any(isinstance(key, str) or good.encode() in key for key in cache)
