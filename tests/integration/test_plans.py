"""Plans as data: ``/plans`` lists the code's plans and the stored ones, the operator creates and changes them, and
a stored plan's prices, per-key rate limit, default caps and deployment limit apply to its tenants on the next
request, on every process sharing Redis, without the hot path reading the table. Real apps on SQLite and
PostgreSQL."""

from __future__ import annotations

from decimal import Decimal

import msgspec
from litestar.testing import AsyncTestClient
from sqlalchemy import event

from cloudeasyml.app import create_app
from cloudeasyml.settings import LimitsSettings, OperatorSettings, PlanLimits, RedisSettings, Settings
from tests.conftest import bearer
from tests.integration.test_operator_api import operator_key
from tests.integration.test_predict import deploy
from tests.integration.test_shared_state import two_processes

POINT = {"x": 1.0, "y": 2.0}


def _with_code_plans(settings: Settings, **operator: float) -> Settings:
    return msgspec.structs.replace(
        settings,
        limits=LimitsSettings(plans={"free": PlanLimits(max_deployments=1)}),
        operator=OperatorSettings(**operator),
    )


async def _tenant_on(client: AsyncTestClient, ops: dict, plan: str, **caps: object) -> str:
    body = {"name": f"t-{plan}-{len(caps)}", "ownerEmail": "o@x.test", "plan": plan, **caps}
    made = await client.post("/operator/tenants", json=body, headers=ops)
    assert made.status_code == 201, made.text
    return made.json()


async def _cost(client: AsyncTestClient, key: str, deployment: dict) -> Decimal:
    body = {"deploymentId": deployment["id"], "inputs": [POINT]}
    answer = await client.post("/predict", json=body, headers=bearer(key))
    assert answer.status_code == 200, answer.text
    return Decimal(answer.headers["x-usage-cost"])


async def test_plans_list_the_codes_and_only_the_operator_writes(
    settings, plugin_manager, migrated_url, tenant
) -> None:
    async with AsyncTestClient(app=create_app(_with_code_plans(settings), plugin_manager)) as client:
        listed = await client.get("/plans", headers=bearer(tenant.key))
        assert listed.status_code == 200
        assert [(p["name"], p["source"], p["maxDeployments"]) for p in listed.json()] == [
            ("default", "code", None),
            ("free", "code", 1),
        ]
        refused = await client.post("/plans", json={"name": "mine"}, headers=bearer(tenant.key))
        assert refused.status_code == 403
        ops = bearer(await operator_key(migrated_url))
        made = await client.post("/plans", json={"name": "pro", "description": "Pro"}, headers=ops)
        assert made.status_code == 201 and made.json()["source"] == "database"
        assert (await client.post("/plans", json={"name": "pro"}, headers=ops)).status_code == 409
        # Changing a plan only the code defines stores it, seeded from the code.
        seeded = await client.patch("/plans/free", json={"rateLimitPerMinute": 5}, headers=ops)
        assert seeded.status_code == 200, seeded.text
        assert (seeded.json()["source"], seeded.json()["maxDeployments"], seeded.json()["rateLimitPerMinute"]) == (
            "database",
            1,
            5,
        )
        assert (await client.get("/plans/nope", headers=ops)).status_code == 404
        bad = await client.patch("/plans/pro", json={"prices": {"tiny": {"perRequest": "-1"}}}, headers=ops)
        assert bad.status_code == 422
        events = (await client.get("/audit", params={"resourceType": "plan"}, headers=ops)).json()["items"]
        assert [e["action"] for e in events] == ["plan.updated", "plan.created"] and events[0]["tenant"] is None


async def test_a_stored_plan_prices_limits_and_caps_its_tenants(settings, plugin_manager, migrated_url) -> None:
    # Plans read again only every 300 s: what applies at once is the changing process's own refresh.
    async with AsyncTestClient(
        app=create_app(_with_code_plans(settings, plan_refresh_seconds=300), plugin_manager)
    ) as client:
        ops = bearer(await operator_key(migrated_url))
        plan = {
            "name": "pro",
            "prices": {"tiny": {"perRequest": "0.5"}},
            "maxDeployments": 1,
            "rateLimitPerMinute": 4,
            "spendCap": "100",
            "requestCap": 50,
        }
        assert (await client.post("/plans", json=plan, headers=ops)).status_code == 201
        made = await _tenant_on(client, ops, "pro")
        assert (made["tenant"]["spendCap"], made["tenant"]["requestCap"]) == ("100", 50)  # the plan's defaults
        key = made["key"]
        deployment = await deploy(client, key)
        assert await _cost(client, key, deployment) == Decimal("0.5")
        second = await client.post("/deployments", json={"modelName": "tiny"}, headers=bearer(key))
        assert second.status_code == 409  # the plan's maxDeployments

        changed = await client.patch("/plans/pro", json={"prices": {"tiny": {"perRequest": "0.25"}}}, headers=ops)
        assert changed.status_code == 200
        assert await _cost(client, key, deployment) == Decimal("0.25")
        # Four requests so far this minute (create, two predictions, a refused create): the plan allows 4 per minute.
        limited = await client.get("/usage", headers=bearer(key))
        assert limited.status_code == 429


async def test_a_plan_change_reaches_every_process_sharing_redis_at_once(
    settings, plugin_manager, migrated_url, redis_url
) -> None:
    shared = msgspec.structs.replace(
        _with_code_plans(settings, plan_refresh_seconds=300), redis=RedisSettings(url=redis_url)
    )
    async with two_processes(shared, plugin_manager) as (a, b):
        ops = bearer(await operator_key(migrated_url))
        plan = {"name": "shared", "prices": {"tiny": {"perRequest": "0.5"}}}
        assert (await a.post("/plans", json=plan, headers=ops)).status_code == 201
        key = (await _tenant_on(a, ops, "shared"))["key"]
        deployment = await deploy(a, key)
        assert await _cost(b, key, deployment) == Decimal("0.5")
        changed = await a.patch("/plans/shared", json={"prices": {"tiny": {"perRequest": "0.125"}}}, headers=ops)
        assert changed.status_code == 200
        for _ in range(100):
            cost = await _cost(b, key, deployment)
            if cost == Decimal("0.125"):
                break
        assert cost == Decimal("0.125")


async def test_pricing_reads_no_plan_per_request(settings, plugin_manager, migrated_url) -> None:
    if "postgres" in migrated_url:
        return  # counts the app engine's statements from the test's loop: SQLite suffices
    async with AsyncTestClient(
        app=create_app(_with_code_plans(settings, plan_refresh_seconds=300), plugin_manager)
    ) as client:
        ops = bearer(await operator_key(migrated_url))
        await client.post("/plans", json={"name": "pro", "prices": {"tiny": {"perRequest": "0.5"}}}, headers=ops)
        key = (await _tenant_on(client, ops, "pro"))["key"]
        deployment = await deploy(client, key)
        statements: list[str] = []

        def count(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
            statements.append(statement)

        engine = client.app.state.services.engine.sync_engine
        event.listen(engine, "before_cursor_execute", count)
        try:
            for _ in range(20):
                assert await _cost(client, key, deployment) == Decimal("0.5")
        finally:
            event.remove(engine, "before_cursor_execute", count)
    assert not [s for s in statements if "FROM plan" in s]
