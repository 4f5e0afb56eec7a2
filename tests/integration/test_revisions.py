"""Revisions: PATCH, the history with who, when, what changed and requests served, rollback, promote, abort; a
change warms the new revision before it serves and drains the old; a new revision that cannot load is not made."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cloudeasyml.domain.deployments import DeploymentRequest, DeploymentService
from cloudeasyml.domain.revisions import DeploymentChange, RevisionService
from cloudeasyml.domain.tenants import NewTenant
from cloudeasyml.errors import ConflictError, DeploymentUnloadedError
from cloudeasyml.plugins.catalog import build_catalog
from cloudeasyml.runtime.artifacts import ArtifactStore
from cloudeasyml.runtime.resolver import ArtifactResolver
from cloudeasyml.settings import ServerSettings
from tests.conftest import bearer, db_session
from tests.support import tiny_model

NEW = "1.1.0"
"""A second, trained version of the tiny model: its scores are the shipped version's plus ``SHIFT``."""
SHIFT = 10.0


@pytest.fixture(name="artifact_dir", scope="module")
def fx_artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's own artifact store: the shipped tiny graph and a second version (kept out of the session's
    store, where other tests expect the tiny model to have one version)."""
    path = tmp_path_factory.mktemp("artifacts-revisions")
    tiny_model.seed_graph(path)
    tiny_model.seed_version(path, NEW, SHIFT)
    return path


async def _create(client, key: str, **body: Any) -> dict[str, Any]:
    response = await client.post("/deployments", json={"modelName": "tiny", **body}, headers=bearer(key))
    assert response.status_code == 201, response.text
    return response.json()


async def _revisions(client, key: str, deployment_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/deployments/{deployment_id}/revisions", headers=bearer(key))
    assert response.status_code == 200, response.text
    return response.json()


async def _predict(client, key: str, deployment_id: str) -> dict[str, Any]:
    response = await client.post(
        f"/deployments/{deployment_id}/predict", json={"inputs": [{"x": 1.0, "y": 2.0}]}, headers=bearer(key)
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_patch_makes_revisions_and_the_history_says_who_what_and_when(client, tenant: NewTenant) -> None:
    key = tenant.key
    created = await _create(client, key, name="scorer")
    assert created["revision"] == 1
    [first] = await _revisions(client, key, created["id"])
    assert (first["number"], first["action"], first["createdByKeyId"], first["changes"]) == (
        1,
        "create",
        tenant.key_id,
        {},
    )
    assert first["current"] is True and first["modelVersion"] == "1.0.0" and first["requests"] == 0

    patched = await client.patch(
        f"/deployments/{created['id']}", json={"config": {"maxBatchSize": 4}, "variant": "int8"}, headers=bearer(key)
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["revision"] == 2 and body["config"]["maxBatchSize"] == 4 and body["config"]["variant"] == "int8"
    history = await _revisions(client, key, created["id"])
    assert [r["number"] for r in history] == [1, 2] and [r["current"] for r in history] == [False, True]
    assert history[1]["action"] == "update" and history[1]["createdByKeyId"] == tenant.key_id
    assert history[1]["changes"] == {
        "config": {"maxBatchSize": {"from": 16, "to": 4}, "variant": {"from": "float", "to": "int8"}}
    }
    assert history[1]["createdAt"] >= history[0]["createdAt"]

    # The same values again change nothing: 200, no revision.
    again = await client.patch(f"/deployments/{created['id']}", json={"variant": "int8"}, headers=bearer(key))
    assert again.status_code == 200 and again.json()["revision"] == 2
    assert len(await _revisions(client, key, created["id"])) == 2

    # Another version: alone, it replaces the whole traffic.
    moved = await client.patch(f"/deployments/{created['id']}", json={"modelVersion": NEW}, headers=bearer(key))
    assert moved.status_code == 200, moved.text
    assert moved.json()["modelVersion"] == NEW and moved.json()["traffic"] == [
        {"modelVersion": NEW, "weight": 100, "variant": None, "mode": "live"}
    ]
    assert (await _revisions(client, key, created["id"]))[-1]["changes"]["modelVersion"] == {"from": "1.0.0", "to": NEW}


async def test_invalid_changes_are_refused_and_make_no_revision(
    client, tenant: NewTenant, other_tenant: NewTenant
) -> None:
    key = tenant.key
    created = await _create(client, key)
    url = f"/deployments/{created['id']}"
    cases = [
        ({"modelVersion": "9.9.9"}, 404),
        ({"config": {"maxBatchSize": 0}}, 422),
        ({"config": {"noSuchOption": 1}}, 422),
        ({"variant": "int4"}, 422),
        ({"variant": "int8", "config": {"variant": "optimized"}}, 422),
        ({"variant": "int8", "config": {"device": "cuda"}}, 422),
        ({"traffic": [{"modelVersion": "1.0.0", "weight": 50}]}, 422),
        ({"traffic": [{"modelVersion": "1.0.0", "weight": 90}, {"modelVersion": "9.9.9", "weight": 10}]}, 404),
        ({"modelVersion": NEW, "traffic": [{"modelVersion": "1.0.0", "weight": 100}]}, 422),
        ({"noSuchField": 1}, 422),
    ]
    for body, status in cases:
        response = await client.patch(url, json=body, headers=bearer(key))
        assert response.status_code == status, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    assert len(await _revisions(client, key, created["id"])) == 1
    # Another tenant's deployment does not exist for the caller, whatever the operation.
    other = bearer(other_tenant.key)
    assert (await client.patch(url, json={"variant": "int8"}, headers=other)).status_code == 404
    assert (await client.get(f"{url}/revisions", headers=other)).status_code == 404
    assert (await client.post(f"{url}/rollback", headers=other)).status_code == 404
    assert (await client.post(f"{url}/promote", json={"modelVersion": "1.0.0"}, headers=other)).status_code == 404
    assert (await client.get(url, headers=bearer(key))).json()["revision"] == 1


async def test_rollback_to_the_previous_or_a_named_revision(client, tenant: NewTenant) -> None:
    key = tenant.key
    created = await _create(client, key)
    url = f"/deployments/{created['id']}"
    nothing = await client.post(f"{url}/rollback", headers=bearer(key))
    assert nothing.status_code == 422  # revision 1 has nothing before it
    await client.patch(url, json={"config": {"maxBatchSize": 8}}, headers=bearer(key))
    await client.patch(url, json={"modelVersion": NEW}, headers=bearer(key))
    back = await client.post(f"{url}/rollback", headers=bearer(key))  # to revision 2
    assert back.status_code == 200, back.text
    assert (back.json()["revision"], back.json()["modelVersion"], back.json()["config"]["maxBatchSize"]) == (
        4,
        "1.0.0",
        8,
    )
    first = await client.post(f"{url}/rollback", json={"revision": 1}, headers=bearer(key))
    assert first.status_code == 200, first.text
    assert (first.json()["revision"], first.json()["config"]["maxBatchSize"]) == (5, 16)
    history = await _revisions(client, key, created["id"])
    assert [r["action"] for r in history] == ["create", "update", "update", "rollback", "rollback"]
    assert [(r["modelVersion"], r["config"]) for r in history][4] == (history[0]["modelVersion"], history[0]["config"])
    assert (await client.post(f"{url}/rollback", json={"revision": 9}, headers=bearer(key))).status_code == 404
    assert (await client.post(f"{url}/rollback", json={"revision": 0}, headers=bearer(key))).status_code == 422


async def test_promote_and_abort_are_one_call_each(client, tenant: NewTenant) -> None:
    key = tenant.key
    canary = [{"modelVersion": "1.0.0", "weight": 90}, {"modelVersion": NEW, "weight": 10}]
    created = await _create(client, key, traffic=canary)
    url = f"/deployments/{created['id']}"
    # Abort the candidate: its weight goes back to the first live route.
    aborted = await client.post(f"{url}/abort", json={"modelVersion": NEW}, headers=bearer(key))
    assert aborted.status_code == 200, aborted.text
    assert [(r["modelVersion"], r["weight"]) for r in aborted.json()["traffic"]] == [("1.0.0", 100)]
    # The last live route cannot be aborted; a version not in the traffic is refused.
    assert (await client.post(f"{url}/abort", json={"modelVersion": "1.0.0"}, headers=bearer(key))).status_code == 422
    assert (await client.post(f"{url}/promote", json={"modelVersion": NEW}, headers=bearer(key))).status_code == 422
    # A canary and a shadow; promoting the canary drops every other route.
    split = [*canary, {"modelVersion": "1.0.0", "variant": "int8", "weight": 20, "mode": "shadow"}]
    assert (await client.patch(url, json={"traffic": split}, headers=bearer(key))).status_code == 200
    promoted = await client.post(f"{url}/promote", json={"modelVersion": NEW}, headers=bearer(key))
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["modelVersion"] == NEW
    assert [(r["modelVersion"], r["weight"], r["mode"]) for r in promoted.json()["traffic"]] == [(NEW, 100, "live")]
    # Promoting what already serves alone changes nothing.
    same = await client.post(f"{url}/promote", json={"modelVersion": NEW}, headers=bearer(key))
    assert same.status_code == 200 and same.json()["revision"] == promoted.json()["revision"]
    # One version as two variants: the call must name one.
    variants = [{"modelVersion": "1.0.0", "weight": 50}, {"modelVersion": "1.0.0", "variant": "int8", "weight": 50}]
    assert (await client.patch(url, json={"traffic": variants}, headers=bearer(key))).status_code == 200
    vague = await client.post(f"{url}/promote", json={"modelVersion": "1.0.0"}, headers=bearer(key))
    assert vague.status_code == 422 and "variant" in vague.json()["detail"]
    int8 = await client.post(f"{url}/promote", json={"modelVersion": "1.0.0", "variant": "int8"}, headers=bearer(key))
    assert int8.status_code == 200
    assert int8.json()["traffic"] == [{"modelVersion": "1.0.0", "weight": 100, "variant": "int8", "mode": "live"}]
    actions = [r["action"] for r in await _revisions(client, key, created["id"])]
    assert actions == ["create", "abort", "update", "promote", "update", "promote"]


async def _counts_become(client, key: str, deployment_id: str, expected: list[int]) -> list[int]:
    """The revisions' request counts, read until they are ``expected`` (the meter writes usage every 0.5 s) or for
    about ten seconds."""
    for _ in range(200):
        counts = [r["requests"] for r in await _revisions(client, key, deployment_id)]
        if counts == expected:
            break
        await asyncio.sleep(0.05)
    return counts


async def test_requests_are_counted_by_the_revision_that_served_them(client, tenant: NewTenant) -> None:
    key = tenant.key
    created = await _create(client, key)
    for _ in range(3):
        assert (await _predict(client, key, created["id"]))["modelVersion"] == "1.0.0"
    # Usage is billed when written: the change waits until the first three are, so that none falls after it.
    assert await _counts_become(client, key, created["id"], [3]) == [3]
    patched = await client.patch(f"/deployments/{created['id']}", json={"modelVersion": NEW}, headers=bearer(key))
    assert patched.status_code == 200
    for _ in range(2):
        assert (await _predict(client, key, created["id"]))["modelVersion"] == NEW
    assert await _counts_become(client, key, created["id"], [3, 2]) == [3, 2]
    # A shadow copy of every request is metered (as shadow usage), but it is no request of the revision's.
    shadow = [{"modelVersion": NEW, "weight": 100}, {"modelVersion": "1.0.0", "weight": 100, "mode": "shadow"}]
    patched = await client.patch(f"/deployments/{created['id']}", json={"traffic": shadow}, headers=bearer(key))
    assert patched.status_code == 200, patched.text
    for _ in range(2):
        assert (await _predict(client, key, created["id"]))["modelVersion"] == NEW
    for _ in range(200):  # the copies run after the answers: wait until they are written too
        usage = (await client.get("/usage", headers=bearer(key))).json()
        if usage["shadow"] is not None and usage["shadow"]["requests"] == 2:
            break
        await asyncio.sleep(0.05)
    assert usage["shadow"]["requests"] == 2
    assert await _counts_become(client, key, created["id"], [3, 2, 2]) == [3, 2, 2]


async def test_a_loaded_deployment_switches_warm_and_unloads_the_old_version(client, app, tenant: NewTenant) -> None:
    key = tenant.key
    created = await _create(client, key)
    before = await _predict(client, key, created["id"])
    registry = app.state.services.registry
    [old] = registry.units_of(uuid.UUID(created["id"]))
    patched = await client.patch(f"/deployments/{created['id']}", json={"modelVersion": NEW}, headers=bearer(key))
    assert patched.status_code == 200, patched.text
    # The new version was loaded (and warmed) before the answer; the old one is gone.
    [new] = registry.units_of(old.spec.id)
    assert new.spec.model_version == NEW and new is not old and patched.json()["loaded"] is True
    after = await _predict(client, key, created["id"])
    assert after["modelVersion"] == NEW
    assert after["predictions"][0]["score"] == pytest.approx(before["predictions"][0]["score"] + SHIFT, abs=1e-4)


async def test_a_revision_that_cannot_load_is_not_made_and_the_old_one_serves(
    client, app, tenant: NewTenant, artifact_dir: Path
) -> None:
    key = tenant.key
    broken = "1.2.0-broken"
    tiny_model.seed_version(artifact_dir, broken, 1.0)
    store = app.state.services.resolver.store
    for graph in (artifact_dir / "tiny" / broken).glob("*/model.onnx"):
        graph.write_bytes(b"not an onnx graph")  # the version exists, its graph does not open
    assert store.trained_weights_path("tiny", broken).exists()
    created = await _create(client, key)
    await _predict(client, key, created["id"])
    failed = await client.patch(f"/deployments/{created['id']}", json={"modelVersion": broken}, headers=bearer(key))
    assert failed.status_code == 503, failed.text
    assert "no revision was made" in failed.json()["detail"]
    assert (await client.get(f"/deployments/{created['id']}", headers=bearer(key))).json()["revision"] == 1
    assert len(await _revisions(client, key, created["id"])) == 1
    assert (await _predict(client, key, created["id"]))["modelVersion"] == "1.0.0"
    [unit] = app.state.services.registry.units_of(uuid.UUID(created["id"]))
    assert unit.spec.model_version == "1.0.0"


async def test_a_change_through_one_process_switches_the_others_through_redis(
    settings, plugin_manager, tenant: NewTenant, redis_url: str
) -> None:
    from tests.integration.test_shared_state import _sharing_redis_with_long_caches, two_processes

    key = tenant.key
    async with two_processes(_sharing_redis_with_long_caches(settings, redis_url), plugin_manager) as (a, b):
        created = await _create(a, key)
        assert (await _predict(b, key, created["id"]))["modelVersion"] == "1.0.0"  # loaded and cached in b for 300 s
        patched = await a.patch(f"/deployments/{created['id']}", json={"modelVersion": NEW}, headers=bearer(key))
        assert patched.status_code == 200, patched.text
        registry = b.app.state.services.registry
        for _ in range(200):  # a message through Redis, then b warms the new version: well under a second
            units = registry.units_of(uuid.UUID(created["id"]))
            if [unit.spec.model_version for unit in units] == [NEW]:
                break
            await asyncio.sleep(0.02)
        assert [unit.spec.model_version for unit in units] == [NEW]  # warmed in b, the old version unloaded there
        assert (await _predict(b, key, created["id"]))["modelVersion"] == NEW


async def test_a_request_that_looked_up_the_old_revision_is_not_served_by_reloading_it(
    client, app, tenant: NewTenant
) -> None:
    key = tenant.key
    created = await _create(client, key)
    await _predict(client, key, created["id"])
    services = app.state.services
    [old] = services.registry.units_of(uuid.UUID(created["id"]))
    patched = await client.patch(f"/deployments/{created['id']}", json={"modelVersion": NEW}, headers=bearer(key))
    assert patched.status_code == 200
    # A request that read the deployment before the switch asks for the old unit: it is turned back (and the data
    # plane looks the deployment up again) instead of loading the old version for good.
    with pytest.raises(DeploymentUnloadedError):
        await services.registry.load(old.spec, old.model)
    assert [unit.spec.model_version for unit in services.registry.units_of(old.spec.id)] == [NEW]


async def test_a_change_planned_against_a_revision_that_moved_on_is_a_conflict(
    migrated_url: str, tenant: NewTenant, plugin_manager, artifact_dir: Path
) -> None:
    catalog = build_catalog(plugin_manager)
    resolver = ArtifactResolver(ArtifactStore(artifact_dir))
    tenant_id = tenant.tenant.id
    async with db_session(migrated_url) as session:
        row = await DeploymentService(session, tenant_id, catalog, resolver).create(
            DeploymentRequest(model_name="tiny"), created_by_key_id=tenant.key_id
        )
    async with db_session(migrated_url) as session:
        revisions = RevisionService(session, tenant_id, DeploymentService(session, tenant_id, catalog, resolver))
        # Two callers plan against revision 1 (as two PATCHes read at once); the first to store wins.
        first = await revisions.plan_update(row.id, DeploymentChange(config={"maxBatchSize": 4}))
        second = await revisions.plan_update(row.id, DeploymentChange(model_version=NEW))
        assert first is not None and second is not None and first.base == second.base == 1
        assert (await revisions.apply(first, tenant.key_id)).revision == 2
        with pytest.raises(ConflictError, match="changed meanwhile"):
            await revisions.apply(second, tenant.key_id)
    async with db_session(migrated_url) as session:
        revisions = RevisionService(session, tenant_id, DeploymentService(session, tenant_id, catalog, resolver))
        assert [summary.row.number for summary in await revisions.list(row.id)] == [1, 2]


async def test_concurrent_changes_make_one_revision_each_or_a_conflict(client, tenant: NewTenant) -> None:
    key = tenant.key
    created = await _create(client, key)
    url = f"/deployments/{created['id']}"
    answers = await asyncio.gather(
        *(client.patch(url, json={"config": {"maxBatchSize": size}}, headers=bearer(key)) for size in range(2, 8))
    )
    statuses = [answer.status_code for answer in answers]
    assert set(statuses) <= {200, 409} and 200 in statuses, [answer.text for answer in answers]
    history = await _revisions(client, key, created["id"])
    # Every change that answered 200 is one revision, numbered without a gap, each diffed against the one before.
    assert [r["number"] for r in history] == list(range(1, statuses.count(200) + 2))
    for before, after in zip(history, history[1:], strict=False):
        change = after["changes"]["config"]["maxBatchSize"]
        assert change == {"from": before["config"]["maxBatchSize"], "to": after["config"]["maxBatchSize"]}
    final = (await client.get(url, headers=bearer(key))).json()
    assert (final["revision"], final["config"]) == (history[-1]["number"], history[-1]["config"])


async def test_without_redis_another_process_switches_when_its_lookup_expires(
    settings, plugin_manager, tenant: NewTenant
) -> None:
    from tests.integration.test_shared_state import two_processes

    key = tenant.key
    short = msgspec.structs.replace(settings, server=ServerSettings(key_cache_seconds=0.3))
    async with two_processes(short, plugin_manager) as (a, b):
        created = await _create(a, key)
        assert (await _predict(b, key, created["id"]))["modelVersion"] == "1.0.0"  # loaded in b
        patched = await a.patch(f"/deployments/{created['id']}", json={"modelVersion": NEW}, headers=bearer(key))
        assert patched.status_code == 200, patched.text
        await asyncio.sleep(0.4)  # b's lookup expires; b was told nothing
        assert (await _predict(b, key, created["id"]))["modelVersion"] == NEW
        registry = b.app.state.services.registry
        for _ in range(200):  # the old version drains and unloads in the background
            versions = [unit.spec.model_version for unit in registry.units_of(uuid.UUID(created["id"]))]
            if versions == [NEW]:
                break
            await asyncio.sleep(0.02)
        assert versions == [NEW]
