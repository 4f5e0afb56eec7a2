"""Per-tenant resources: deployments per plan, loaded deployments per tenant, threads clamped to the CPUs, sessions
shared by canonical key and opened once, and deployments deleted while they load."""

from __future__ import annotations

import asyncio
import gc
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import msgspec
import psutil
import pytest

from cloudeasyml.app import create_app
from cloudeasyml.core.serving import ServingConfig
from cloudeasyml.domain.tenants import create_tenant
from cloudeasyml.errors import NotFoundError
from cloudeasyml.runtime.artifacts import ArtifactStore
from cloudeasyml.runtime.registry import DeploymentSpec, ServingRegistry
from cloudeasyml.runtime.resolver import ArtifactResolver
from cloudeasyml.runtime.session import OnnxSession
from cloudeasyml.settings import LimitsSettings, PlanLimits
from tests.conftest import bearer, db_session
from tests.support.live_server import serve_in_thread
from tests.support.tiny_model import TinyModel


@asynccontextmanager
async def live(app) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    """The app on a real port: requests sent at once are served at once (the ASGI test client runs them in turn)."""
    with serve_in_thread(app) as address:
        async with httpx.AsyncClient(base_url=f"http://{address}", timeout=60) as client:
            yield client


def with_limits(settings, **limits):  # type: ignore[no-untyped-def]
    return msgspec.structs.replace(settings, limits=LimitsSettings(**limits))


async def deploy(client, key: str, **body: object):  # type: ignore[no-untyped-def]
    return await client.post("/deployments", json={"modelName": "tiny", **body}, headers=bearer(key))


async def predict(client, key: str, deployment_id: str):  # type: ignore[no-untyped-def]
    return await client.post(
        f"/deployments/{deployment_id}/predict", json={"inputs": [{"x": 1, "y": 2}]}, headers=bearer(key)
    )


def live_sessions() -> int:
    gc.collect()
    return sum(isinstance(o, OnnxSession) for o in gc.get_objects())


def assert_no_trace(registry: ServingRegistry, deployment_id: uuid.UUID) -> None:
    assert registry.get_loaded(deployment_id) is None and len(registry) == 0
    assert registry._sessions == {} and registry.session_bytes == 0
    assert not registry._loading.keys() and not registry._admitted and not registry._cancelled


async def test_deployments_past_the_plans_cap_are_refused_even_when_created_at_once(
    settings, plugin_manager, migrated_url, tenant, other_tenant
) -> None:
    app = create_app(
        with_limits(settings, max_deployments=3, plans={"free": PlanLimits(max_deployments=1)}), plugin_manager
    )
    async with db_session(migrated_url) as session:
        free = await create_tenant(session, "free-tenant", "f@example.com", plan="free")
    async with live(app) as client:
        answers = await asyncio.gather(*(deploy(client, tenant.key) for _ in range(8)))
        assert sorted(r.status_code for r in answers) == [201] * 3 + [409] * 5
        refused = next(r for r in answers if r.status_code == 409)
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert "delete one first" in refused.json()["detail"]
        listed = (await client.get("/deployments", headers=bearer(tenant.key))).json()
        assert len(listed) == 3
        assert (await deploy(client, other_tenant.key)).status_code == 201  # another tenant is unaffected
        # Deleting one makes room again.
        assert (await client.delete(f"/deployments/{listed[0]['id']}", headers=bearer(tenant.key))).status_code == 204
        assert (await deploy(client, tenant.key)).status_code == 201
        # A plan's override.
        assert (await deploy(client, free.key)).status_code == 201
        assert (await deploy(client, free.key)).status_code == 409


async def test_config_that_multiplies_resources_is_bounded(client, tenant) -> None:
    for field, too_much in [
        ("instances", 17),
        ("intraOpThreads", 257),
        ("maxQueueItems", 65_537),
        ("timeoutMs", 120_001),
        ("maxBatchSize", 4097),
        ("maxBatchDelayMs", 1001),
    ]:
        response = await deploy(client, tenant.key, config={field: too_much})
        assert response.status_code == 422, (field, response.text)
        assert f"$.{field}" in response.json()["detail"]


async def test_thread_counts_past_the_cpus_share_one_session_and_start_no_more_threads(client, app, tenant) -> None:
    registry: ServingRegistry = app.state.services.registry
    a = (await deploy(client, tenant.key, config={"intraOpThreads": 256, "device": "cpu"})).json()
    b = (await deploy(client, tenant.key, config={"intraOpThreads": 255, "device": "cpu"})).json()
    threads_before = psutil.Process().num_threads()
    assert (await predict(client, tenant.key, a["id"])).status_code == 200
    assert (await predict(client, tenant.key, b["id"])).status_code == 200
    added = psutil.Process().num_threads() - threads_before
    loaded_a, loaded_b = registry.get_loaded(uuid.UUID(a["id"])), registry.get_loaded(uuid.UUID(b["id"]))
    assert loaded_a is not None and loaded_b is not None
    assert loaded_a.session is loaded_b.session and len(registry._sessions) == 1
    cpus = registry._cpus
    assert loaded_a.session_key[3] == cpus
    # Without the clamp onnxruntime started 255 + 254 threads here; with it, at most the CPUs (and the few worker
    # threads of the deployments' batchers).
    assert added <= cpus + 8, added


async def test_instances_run_at_most_one_per_cpu(client, app, tenant) -> None:
    registry: ServingRegistry = app.state.services.registry
    wide = (await deploy(client, tenant.key, config={"instances": 16, "intraOpThreads": 16, "device": "cpu"})).json()
    assert (await predict(client, tenant.key, wide["id"])).status_code == 200
    loaded = registry.get_loaded(uuid.UUID(wide["id"]))
    assert loaded is not None and not loaded.on_gpu
    assert loaded.spec.config.instances * max(1, loaded.session_key[3]) <= registry._cpus


async def test_two_deployments_of_one_model_loading_at_once_share_one_session(app, tenant) -> None:
    registry: ServingRegistry = app.state.services.registry
    async with live(app) as client:
        ids = [(await deploy(client, tenant.key)).json()["id"] for _ in range(3)]
        sessions_before = live_sessions()
        answers = await asyncio.gather(*(predict(client, tenant.key, i) for i in ids))
        assert [r.status_code for r in answers] == [200] * 3
        sessions = {id(registry.get_loaded(uuid.UUID(i)).session) for i in ids}  # type: ignore[union-attr]
        assert len(sessions) == 1 and len(registry._sessions) == 1
        assert live_sessions() - sessions_before == 1  # opened once, not once per deployment and then dropped


async def test_loaded_deployments_past_the_tenants_cap_unload_only_that_tenants(
    settings, plugin_manager, tenant, other_tenant
) -> None:
    app = create_app(with_limits(settings, max_loaded_deployments=2), plugin_manager)
    async with live(app) as client:
        registry: ServingRegistry = app.state.services.registry
        theirs = (await deploy(client, other_tenant.key)).json()["id"]
        assert (await predict(client, other_tenant.key, theirs)).status_code == 200
        mine = [(await deploy(client, tenant.key)).json()["id"] for _ in range(5)]
        for deployment_id in mine[:3]:
            assert (await predict(client, tenant.key, deployment_id)).status_code == 200
        loaded = {str(d.spec.id) for d in registry.loaded()}
        assert loaded == {theirs, mine[1], mine[2]}  # the tenant's least recently used went, not the other's
        # Loads at once: never more than the cap of the tenant's loaded at the end, the other tenant's kept.
        answers = await asyncio.gather(*(predict(client, tenant.key, i) for i in mine))
        assert [r.status_code for r in answers] == [200] * 5
        mine_loaded = [d for d in registry.loaded() if d.spec.tenant_id == tenant.tenant.id]
        assert len(mine_loaded) == 2 and registry.get_loaded(uuid.UUID(theirs)) is not None
        assert not registry._admitted


@pytest.fixture(name="registry")
def fx_registry(artifact_dir: Path) -> ServingRegistry:
    return ServingRegistry(ArtifactResolver(ArtifactStore(artifact_dir)))


def tiny_spec(**config: object) -> DeploymentSpec:
    return DeploymentSpec(
        id=uuid.uuid4(),
        tenant_id=uuid.uuid4(),
        name="tiny-x",
        model_name="tiny",
        model_version="1.0.0",
        config=ServingConfig(**config),  # type: ignore[arg-type]
    )


async def test_a_deployment_deleted_while_loading_is_unloaded_when_the_load_finishes(registry) -> None:
    model = TinyModel()
    await registry.load(tiny_spec(), model)  # the artifact exists: what follows times the load alone
    await registry.close()
    sessions_before = live_sessions()
    spec = tiny_spec()
    loading = asyncio.create_task(registry.load(spec, model))
    while spec.unit not in registry._loading:
        await asyncio.sleep(0)
    await registry.unload(spec.id, deleted=True)  # returns once the load has finished and been dropped
    assert loading.done()
    with pytest.raises(NotFoundError):
        await loading
    assert_no_trace(registry, spec.id)
    assert live_sessions() <= sessions_before  # the session it opened is freed
    # A request that looked the deployment up before its deletion cannot load it afterwards.
    with pytest.raises(NotFoundError):
        await registry.load(spec, model)
    assert_no_trace(registry, spec.id)


async def test_deleting_a_deployment_while_its_first_request_loads_it_leaves_nothing_loaded(
    settings, plugin_manager, tenant, tmp_path, artifact_dir
) -> None:
    # The load waits for the model's export: the test holds the export lock and, once the deletion is under way,
    # puts an exported graph in place and lets the load finish.
    pytest.importorskip("torch")
    exported = await asyncio.to_thread(ArtifactResolver(ArtifactStore(artifact_dir)).ensure, TinyModel(), "1.0.0")
    fresh = tmp_path / "fresh-artifacts"
    runtime = msgspec.structs.replace(settings.runtime, artifact_dir=str(fresh))
    app = create_app(msgspec.structs.replace(settings, runtime=runtime), plugin_manager)
    async with live(app) as client:
        registry: ServingRegistry = app.state.services.registry
        deployment = (await deploy(client, tenant.key)).json()
        deployment_id = uuid.UUID(deployment["id"])
        export_lock = registry.resolver._lock_for("tiny", "1.0.0")
        export_lock.acquire()
        try:
            racing = asyncio.create_task(predict(client, tenant.key, deployment["id"]))
            while not any(unit[0] == deployment_id for unit in registry._loading.keys()):
                assert not racing.done(), racing.result().text
                await asyncio.sleep(0.01)
            deleting = asyncio.create_task(
                client.delete(f"/deployments/{deployment['id']}", headers=bearer(tenant.key))
            )
            while not any(unit[0] == deployment_id for unit in registry._cancelled):
                assert not deleting.done(), deleting.result().text
                await asyncio.sleep(0.01)
            shutil.copytree(exported.parents[2], fresh / exported.parents[2].name)
        finally:
            export_lock.release()
        assert (await deleting).status_code == 204
        assert (await racing).status_code in (404, 503)  # not a result from a deleted deployment
        assert_no_trace(registry, deployment_id)
        assert (await client.get("/health")).json()["modelsLoaded"] == 0
