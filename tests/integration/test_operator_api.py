"""The platform operator's API: operator keys (a scope no tenant key reaches), tenants created, listed, read and
changed over HTTP, suspension (every key of the tenant refused at once, on the fast path too, and on every process
sharing Redis), and deletion with all the tenant's data after a confirmation token. Real apps on SQLite and
PostgreSQL; real processes for the cross-process suspension."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import msgspec
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select

from cloudeasyml.app import create_app
from cloudeasyml.db.base import Base
from cloudeasyml.domain.operators import issue_operator_key, revoke_operator_key
from cloudeasyml.domain.principal import Principal
from cloudeasyml.domain.tenants import NewTenant
from cloudeasyml.settings import OperatorSettings, RedisSettings, ServerSettings, Settings
from tests.conftest import bearer, db_session
from tests.integration.test_predict import deploy
from tests.integration.test_shared_state import _status_becomes, two_processes
from tests.support.server_process import serve_process

POINT = {"x": 1.0, "y": 2.0}


async def operator_key(url: str, name: str = "ops") -> str:
    """A new operator key, as ``cloudeasyml operators create`` makes it."""
    async with db_session(url) as session:
        return (await issue_operator_key(session, name)).key


def _long_caches(settings: Settings, **changes: object) -> Settings:
    """Settings whose key cache would keep a key for 300 s unless told to forget it."""
    return msgspec.structs.replace(settings, server=ServerSettings(key_cache_seconds=300), **changes)


def test_a_tenant_admin_does_not_hold_the_operator_scope() -> None:
    admin = Principal(tenant_id=uuid.uuid4(), key_id="sk_x", scopes=frozenset({"admin"}))
    operator = Principal(tenant_id=uuid.uuid4(), key_id="sk_y", scopes=frozenset({"operator"}))
    assert admin.has_scope("deployments:write") and not admin.has_scope("operator")
    assert operator.has_scope("operator") and not operator.has_scope("deployments:read")


async def test_tenant_keys_can_neither_call_nor_mint_the_operator_api(client, tenant: NewTenant) -> None:
    refused = await client.get("/operator/tenants", headers=bearer(tenant.key))
    assert refused.status_code == 403 and "operator" in refused.json()["detail"]
    minted = await client.post("/api-keys", json={"name": "x", "scopes": ["operator"]}, headers=bearer(tenant.key))
    assert minted.status_code == 422 and "operator" in minted.json()["detail"]


async def test_an_operator_creates_lists_reads_and_changes_tenants(client, migrated_url: str, tenant) -> None:
    ops = bearer(await operator_key(migrated_url))
    body = {"name": "acme", "ownerEmail": "boss@acme.test", "plan": "pro", "spendCap": "12.5", "requestCap": 1000}
    created = await client.post("/operator/tenants", json=body, headers=ops)
    assert created.status_code == 201, created.text
    made = created.json()
    assert made["tenant"]["plan"] == "pro" and made["tenant"]["status"] == "active"
    assert made["tenant"]["spendCap"] == "12.5" and made["tenant"]["requestCap"] == 1000
    # The owner key works as the CLI's does.
    assert (await client.get("/usage", headers=bearer(made["key"]))).status_code == 200
    assert (await client.post("/operator/tenants", json=body, headers=ops)).status_code == 409
    tenant_id = made["tenant"]["id"]

    page = (await client.get("/operator/tenants", params={"limit": 1}, headers=ops)).json()
    assert [row["name"] for row in page] == ["acme"]
    rest = (await client.get("/operator/tenants", params={"after": "acme"}, headers=ops)).json()
    assert tenant.tenant.name in [row["name"] for row in rest] and "acme" not in [row["name"] for row in rest]
    assert (await client.get(f"/operator/tenants/{tenant_id}", headers=ops)).json()["name"] == "acme"
    assert (await client.get(f"/operator/tenants/{uuid.uuid4()}", headers=ops)).status_code == 404

    changed = await client.patch(f"/operator/tenants/{tenant_id}", json={"plan": "free", "spendCap": None}, headers=ops)
    assert changed.status_code == 200, changed.text
    assert changed.json()["plan"] == "free" and changed.json()["spendCap"] is None
    assert changed.json()["requestCap"] == 1000  # absent: unchanged
    bad = await client.patch(f"/operator/tenants/{tenant_id}", json={"spendCap": "-1"}, headers=ops)
    assert bad.status_code == 422
    # An operator key is no tenant key: it reaches no tenant's resources.
    assert (await client.get("/deployments", headers=ops)).status_code == 403


async def test_a_plan_change_reaches_the_key_cache_at_once(settings, plugin_manager, migrated_url, tenant) -> None:
    if "postgres" in migrated_url:
        pytest.skip("reads the app's authenticator from the test's event loop, which asyncpg connections cannot leave")
    async with AsyncTestClient(app=create_app(_long_caches(settings), plugin_manager)) as client:
        ops = bearer(await operator_key(migrated_url))
        assert (await client.get("/usage", headers=bearer(tenant.key))).status_code == 200  # cached for 300 s
        changed = await client.patch(f"/operator/tenants/{tenant.tenant.id}", json={"plan": "gold"}, headers=ops)
        assert changed.status_code == 200
        principal = await client.app.state.services.authenticator.authenticate(tenant.key)
    assert principal.plan == "gold"


async def test_suspension_refuses_every_key_of_the_tenant_on_every_path(
    settings, plugin_manager, migrated_url: str, tenant: NewTenant, other_tenant: NewTenant
) -> None:
    async with AsyncTestClient(app=create_app(_long_caches(settings), plugin_manager)) as client:
        ops = bearer(await operator_key(migrated_url))
        deployment = await deploy(client, tenant.key)
        reader = await client.post("/api-keys", json={"name": "r", "scopes": ["predict"]}, headers=bearer(tenant.key))
        child = reader.json()["key"]
        body = {"deploymentId": deployment["id"], "inputs": [POINT]}
        v2 = {"inputs": [{"name": "points", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}]}
        calls = {
            "fast path /predict": lambda key: client.post("/predict", json=body, headers=bearer(key)),
            "router predict": lambda key: client.post(
                f"/deployments/{deployment['id']}/predict", json={"inputs": [POINT]}, headers=bearer(key)
            ),
            "V2 infer": lambda key: client.post(f"/v2/models/{deployment['name']}/infer", json=v2, headers=bearer(key)),
            "management": lambda key: client.get("/deployments", headers=bearer(key)),
        }
        for name, call in calls.items():  # every key cached now, for 300 s
            assert (await call(tenant.key)).status_code == 200, name
        assert (await calls["fast path /predict"](child)).status_code == 200

        suspended = await client.post(
            f"/operator/tenants/{tenant.tenant.id}/suspend", json={"reason": "unpaid invoice"}, headers=ops
        )
        assert suspended.status_code == 200 and suspended.json()["status"] == "suspended"
        for name, call in calls.items():
            refused = await call(tenant.key)
            assert refused.status_code == 403, name
            assert "suspended" in refused.text and "unpaid invoice" in refused.text, name
        assert (await calls["fast path /predict"](child)).status_code == 403
        # A key made before, and one the tenant could try to make now: refused too; another tenant is untouched.
        again = await client.post("/api-keys", json={"name": "n"}, headers=bearer(tenant.key))
        assert again.status_code == 403
        assert (await client.get("/deployments", headers=bearer(other_tenant.key))).status_code == 200

        resumed = await client.post(f"/operator/tenants/{tenant.tenant.id}/resume", headers=ops)
        assert resumed.status_code == 200 and resumed.json()["status"] == "active"
        for name, call in calls.items():
            assert (await call(tenant.key)).status_code == 200, name


async def test_suspension_through_one_process_stops_the_keys_on_the_others_at_once(
    settings, plugin_manager, migrated_url: str, tenant: NewTenant, redis_url: str
) -> None:
    shared = _long_caches(settings, redis=RedisSettings(url=redis_url))
    async with two_processes(shared, plugin_manager) as (a, b):
        ops = bearer(await operator_key(migrated_url))
        assert (await b.get("/usage", headers=bearer(tenant.key))).status_code == 200  # cached in b for 300 s
        assert (await a.post(f"/operator/tenants/{tenant.tenant.id}/suspend", headers=ops)).status_code == 200
        assert await _status_becomes(403, lambda: b.get("/usage", headers=bearer(tenant.key))) == 403
        assert (await a.post(f"/operator/tenants/{tenant.tenant.id}/resume", headers=ops)).status_code == 200
        assert await _status_becomes(200, lambda: b.get("/usage", headers=bearer(tenant.key))) == 200


async def _rows_of(url: str, tenant_id: uuid.UUID) -> dict[str, int]:
    """Rows per table that carry ``tenant_id`` = ``tenant_id`` (and the tenant's own row)."""
    counts = {}
    async with db_session(url) as session:
        for table in Base.metadata.sorted_tables:
            column = table.c.get("tenant_id") if table.name != "tenant" else table.c.id
            if column is not None:
                counts[table.name] = await session.scalar(select(func.count()).where(column == tenant_id))
    return counts


async def test_deleting_a_tenant_takes_a_confirmation_token_and_removes_all_its_data(
    settings, plugin_manager, migrated_url: str, tenant: NewTenant, other_tenant: NewTenant
) -> None:
    async with AsyncTestClient(app=create_app(_long_caches(settings), plugin_manager)) as client:
        ops = bearer(await operator_key(migrated_url))
        deployment = await deploy(client, tenant.key)
        body = {"deploymentId": deployment["id"], "inputs": [POINT]}
        assert (await client.post("/predict", json=body, headers=bearer(tenant.key))).status_code == 200
        usage = await client.get("/usage", headers=bearer(tenant.key))  # reports write pending usage first
        assert usage.json()["totalRequests"] == 1
        files = client.app.state.services.files
        files.write(files.path(tenant.tenant.id, "file-x"), b"{}\n")
        path = f"/operator/tenants/{tenant.tenant.id}"

        first = await client.delete(path, headers=ops)
        assert first.status_code == 202, first.text
        token = first.json()["confirmationToken"]
        # Nothing is deleted yet.
        assert (await client.post("/predict", json=body, headers=bearer(tenant.key))).status_code == 200
        wrong = await client.delete(path, params={"confirm": "del_wrong"}, headers=ops)
        assert wrong.status_code == 422
        assert (await client.delete(path, params={"confirm": token}, headers=ops)).status_code == 204

        assert (await client.get(path, headers=ops)).status_code == 404
        assert (await client.post("/predict", json=body, headers=bearer(tenant.key))).status_code == 401
        assert not client.app.state.services.registry.get_loaded(uuid.UUID(deployment["id"]))
        assert not (files.root / str(tenant.tenant.id)).exists()
        assert (await client.get("/usage", headers=bearer(other_tenant.key))).status_code == 200
    left = await _rows_of(migrated_url, tenant.tenant.id)
    kept = left.pop("audit_event")  # the platform's record of the tenant outlives it, its deletion last
    assert left and set(left.values()) == {0}, left
    assert kept == 3  # deployment.created, tenant.deletion_requested, tenant.deleted
    assert (await _rows_of(migrated_url, other_tenant.tenant.id))["tenant"] == 1


async def test_a_confirmation_token_expires(settings, plugin_manager, migrated_url: str, tenant) -> None:
    quick = msgspec.structs.replace(settings, operator=OperatorSettings(deletion_token_seconds=0.001))
    async with AsyncTestClient(app=create_app(quick, plugin_manager)) as client:
        ops = bearer(await operator_key(migrated_url))
        path = f"/operator/tenants/{tenant.tenant.id}"
        assert (await client.delete(path, params={"confirm": "del_x"}, headers=ops)).status_code == 409  # none asked
        token = (await client.delete(path, headers=ops)).json()["confirmationToken"]
        await asyncio.sleep(0.05)
        expired = await client.delete(path, params={"confirm": token}, headers=ops)
        assert expired.status_code == 409 and "expired" in expired.json()["detail"]
        assert (await client.get(path, headers=ops)).status_code == 200


async def test_a_revoked_operator_key_is_refused(client, migrated_url: str) -> None:
    async with db_session(migrated_url) as session:
        issued = await issue_operator_key(session, "temp")
    assert (await client.get("/operator/tenants", headers=bearer(issued.key))).status_code == 200
    async with db_session(migrated_url) as session:
        await revoke_operator_key(session, issued.row.id)
    client.app.state.services.authenticator.forget(issued.row.id)  # as after the cache's few seconds
    assert (await client.get("/operator/tenants", headers=bearer(issued.key))).status_code == 401


@pytest.mark.slow
def test_cli_operator_key_suspends_a_tenant_across_real_processes_sharing_redis(
    artifact_dir: Path, tmp_path: Path, redis_url: str, database_url: str
) -> None:
    """``cloudeasyml operators create`` prints a key; through one ``cloudeasyml serve`` process it suspends a tenant
    whose key another process has cached for 300 s: that process refuses it at once."""
    if "postgres" in database_url:
        pytest.skip("the processes serve a SQLite file; PostgreSQL is covered by the in-process tests")
    env = {"CLOUDEASYML_REDIS__URL": redis_url, "CLOUDEASYML_SERVER__KEY_CACHE_SECONDS": "300"}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    with serve_process(artifact_dir, tmp_path / "a", env=env) as a:
        cli_env = {**os.environ, "CLOUDEASYML_DATABASE_URL": a.database_url, "CLOUDEASYML_HOME": str(tmp_path)}
        made = subprocess.run(
            [sys.executable, "-m", "cloudeasyml.cli", "operators", "create", "ops", "--json"],
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        ops = bearer(json.loads(made.stdout)["key"])
        with serve_process(artifact_dir, tmp_path / "b", database_url=a.database_url, env=env) as b:
            key = bearer(a.keys[0])
            tenant_id = httpx.get(f"{a.base_url}/operator/tenants", headers=ops).json()[0]["id"]
            assert httpx.get(f"{b.base_url}/usage", headers=key).status_code == 200  # cached in b
            assert httpx.post(f"{a.base_url}/operator/tenants/{tenant_id}/suspend", headers=ops).status_code == 200
            statuses = []
            for _ in range(100):
                statuses.append(httpx.get(f"{b.base_url}/usage", headers=key).status_code)
                if statuses[-1] == 403:
                    break
            assert statuses[-1] == 403, statuses


def test_the_cli_makes_lists_and_revokes_operator_keys(migrated_url: str, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from cloudeasyml.cli.main import cli

    env = {"CLOUDEASYML_DATABASE_URL": migrated_url, "CLOUDEASYML_HOME": str(tmp_path)}
    runner = CliRunner()
    made = runner.invoke(cli, ["operators", "create", "night-shift", "--json"], env=env)
    assert made.exit_code == 0, made.output
    issued = json.loads(made.output)
    assert issued["keyId"].startswith("op_") and issued["key"].startswith(issued["keyId"] + ".")
    assert issued["scopes"] == ["operator"]
    listed = runner.invoke(cli, ["operators", "list"], env=env).output
    assert issued["keyId"] in listed and "night-shift" in listed and issued["key"] not in listed
    assert runner.invoke(cli, ["operators", "revoke", issued["keyId"]], env=env).exit_code == 0
    assert "revoked" in runner.invoke(cli, ["operators", "list"], env=env).output
    unknown = runner.invoke(cli, ["operators", "revoke", "op_AAAAAAAAAAAAAAAA"], env=env)
    assert unknown.exit_code != 0 and "no operator key" in unknown.output
