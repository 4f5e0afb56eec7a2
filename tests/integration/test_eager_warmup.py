"""A process that starts loads the ``eagerLoad`` deployments before it reports ready: a second app on the same
database (another replica, or the same server restarted) holds them loaded once ``/health/ready`` answers 200, and
its first prediction loads nothing. Deployments without ``eagerLoad``, a suspended tenant's and those of a model no
longer installed are left alone; one that fails to load does not keep the others from loading or the process from
becoming ready."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text, update

from cloudeasyml.app import create_app
from cloudeasyml.core.clock import utc_now
from cloudeasyml.db.engine import create_engine
from cloudeasyml.db.models import Deployment, Tenant
from cloudeasyml.domain.tenants import NewTenant
from cloudeasyml.settings import RuntimeSettings, Settings
from tests.conftest import bearer, db_session

POINT = {"x": 1.0, "y": 2.0}


async def _deploy(client: AsyncTestClient[Litestar], key: str, name: str, eager: bool) -> uuid.UUID:
    body: dict[str, Any] = {"modelName": "tiny", "name": name, "config": {"eagerLoad": eager}}
    response = await client.post("/deployments", json=body, headers=bearer(key))
    assert response.status_code == 201, response.text
    return uuid.UUID(response.json()["id"])


async def _ready(client: AsyncTestClient[Litestar], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while (answer := await client.get("/health/ready")).status_code != 200:
        assert answer.status_code == 503 and time.monotonic() < deadline, answer.text
        await asyncio.sleep(0.05)


def _loaded(app: Litestar, deployment_id: uuid.UUID) -> bool:
    return bool(app.state.services.registry.units_of(deployment_id))


async def test_a_new_process_loads_eager_deployments_before_it_is_ready(
    settings: Settings, plugin_manager, tenant: NewTenant, other_tenant: NewTenant, migrated_url: str
) -> None:
    async with AsyncTestClient(app=create_app(settings, plugin_manager)) as first:
        eager = await _deploy(first, tenant.key, "eager", True)
        lazy = await _deploy(first, tenant.key, "lazy", False)
        suspended = await _deploy(first, other_tenant.key, "suspended-eager", True)
        gone = await _deploy(first, tenant.key, "uninstalled-eager", True)
    async with db_session(migrated_url) as session:
        await session.execute(
            update(Tenant)
            .where(Tenant.id == other_tenant.tenant.id)
            .values(suspended_at=utc_now(), suspended_reason="x")
        )
        # A deployment whose model was uninstalled since (the name is no installed model's).
        await session.execute(update(Deployment).where(Deployment.id == gone).values(model_name="uninstalled"))

    app = create_app(settings, plugin_manager)
    async with AsyncTestClient(app=app) as second:
        await _ready(second)
        warmup = app.state.services.eager
        assert (warmup.total, warmup.loaded, warmup.failed) == (1, 1, 0)
        assert _loaded(app, eager)
        assert not _loaded(app, lazy) and not _loaded(app, suspended) and not _loaded(app, gone)
        units = app.state.services.registry.units_of(eager)
        body = {"deploymentId": str(eager), "inputs": [POINT]}
        answer = await second.post("/predict", json=body, headers=bearer(tenant.key))
        assert answer.status_code == 200, answer.text
        assert app.state.services.registry.units_of(eager) == units  # the first prediction loaded nothing new


async def test_a_deployment_that_fails_to_load_does_not_keep_the_process_unready(
    settings: Settings, plugin_manager, tenant: NewTenant, migrated_url: str
) -> None:
    async with AsyncTestClient(app=create_app(settings, plugin_manager)) as first:
        broken = await _deploy(first, tenant.key, "broken", True)
        fine = await _deploy(first, tenant.key, "fine", True)
    async with db_session(migrated_url) as session:  # a version whose artifact is not in the store
        await session.execute(update(Deployment).where(Deployment.id == broken).values(model_version="9.9.9"))
    app = create_app(settings, plugin_manager)
    async with AsyncTestClient(app=app) as second:
        await _ready(second)
        warmup = app.state.services.eager
        assert (warmup.total, warmup.loaded, warmup.failed) == (2, 1, 1)
        assert _loaded(app, fine) and not _loaded(app, broken)


async def test_without_eager_deployments_the_process_is_ready_at_once(settings: Settings, plugin_manager) -> None:
    app = create_app(settings, plugin_manager)
    async with AsyncTestClient(app=app) as client:
        assert (await client.get("/health/ready")).status_code == 200  # no pass to wait for
        assert not app.state.services.eager.pending


async def test_switched_off_nothing_loads_at_start(settings: Settings, plugin_manager, tenant: NewTenant) -> None:
    async with AsyncTestClient(app=create_app(settings, plugin_manager)) as first:
        eager = await _deploy(first, tenant.key, "eager", True)
    off = msgspec.structs.replace(
        settings, runtime=msgspec.structs.replace(settings.runtime, eager_load_on_start=False)
    )
    app = create_app(off, plugin_manager)
    async with AsyncTestClient(app=app) as second:
        assert (await second.get("/health/ready")).status_code == 200
        await asyncio.sleep(0.2)
        assert not _loaded(app, eager)
    assert RuntimeSettings().eager_load_on_start is True


async def test_ready_answers_503_while_eager_deployments_load(
    settings: Settings, plugin_manager, tenant: NewTenant, migrated_url: str
) -> None:
    if not migrated_url.startswith("postgresql"):
        pytest.skip("holds the start's pass with PostgreSQL's LOCK TABLE ... IN SHARE MODE")
    async with AsyncTestClient(app=create_app(settings, plugin_manager)) as first:
        eager = await _deploy(first, tenant.key, "eager", True)
    engine = create_engine(migrated_url)
    try:
        async with engine.connect() as lock:
            holding = await lock.begin()
            # SHARE lets the start's read of the deployments through and holds any write to the table: the pass then
            # waits on the load's outcome, which the registry stores in the deployment's row once the model is loaded.
            await lock.execute(text("LOCK TABLE deployment IN SHARE MODE"))
            app = create_app(settings, plugin_manager)
            async with AsyncTestClient(app=app) as second:
                for _ in range(3):
                    answer = await second.get("/health/ready")
                    assert answer.status_code == 503, answer.text
                    assert "loading eagerLoad deployments" in answer.json()["detail"]
                    v2 = await second.get("/v2/health/ready")  # the Open Inference Protocol's readiness too
                    assert v2.status_code == 503 and v2.json()["ready"] is False
                    await asyncio.sleep(0.1)
                await holding.rollback()  # the lock goes; the pass reads, loads, and the process becomes ready
                await _ready(second)
                assert _loaded(app, eager)
    finally:
        await engine.dispose()
