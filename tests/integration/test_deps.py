"""``cloudeasyml.api.deps``'s write transaction, on a real database and the app's own error handlers: a handler's
writes commit when it returns, roll back when it raises, and a commit that fails answers the error, not the
handler's success; a handler that commits first keeps what it committed (as deployment creation does before its
model loads). And the dependencies stay out of the OpenAPI document."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from litestar import Litestar, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from cloudeasyml.api.deps import MANAGEMENT, WRITES, Injected
from cloudeasyml.api.problems import exception_handlers
from cloudeasyml.db.models import Tenant
from cloudeasyml.errors import ConflictError
from cloudeasyml.plugins.manager import PluginManager
from cloudeasyml.services import build_services
from cloudeasyml.settings import Settings
from tests.conftest import db_session


@post("/write/{name:str}", dependencies=WRITES)
async def write(
    db_session: Injected[AsyncSession], name: FromPath[str], fail: FromQuery[bool] = False
) -> dict[str, str]:
    db_session.add(Tenant(name=name))
    if fail:
        raise ConflictError("refused after writing")
    return {"written": name}


@post("/commit-first/{name:str}", dependencies=WRITES)
async def commit_first(db_session: Injected[AsyncSession], name: FromPath[str]) -> None:
    db_session.add(Tenant(name=name))
    await db_session.commit()
    raise ConflictError("a later step failed")


@pytest.fixture(name="write_client")
async def fx_write_client(
    settings: Settings, plugin_manager: PluginManager
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    services = build_services(settings, plugin_manager)
    app = Litestar(
        route_handlers=[write, commit_first],
        dependencies=MANAGEMENT,
        exception_handlers=exception_handlers,  # type: ignore[arg-type]
        state=State({"services": services}),
        on_shutdown=[services.engine.dispose],  # on the app's own loop, which holds the pool's connections
    )
    async with AsyncTestClient(app=app) as client:
        yield client


async def _tenants(url: str, name: str) -> int:
    async with db_session(url) as session:
        return int(await session.scalar(select(func.count()).where(Tenant.name == name)) or 0)


async def test_a_handler_that_returns_commits(write_client: AsyncTestClient[Litestar], migrated_url: str) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    answer = await write_client.post(f"/write/{name}")
    assert answer.status_code == 201 and answer.json() == {"written": name}
    assert await _tenants(migrated_url, name) == 1


async def test_a_handler_that_raises_writes_nothing(write_client: AsyncTestClient[Litestar], migrated_url: str) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    answer = await write_client.post(f"/write/{name}", params={"fail": "true"})
    assert answer.status_code == 409 and answer.json()["detail"] == "refused after writing"
    assert await _tenants(migrated_url, name) == 0


async def test_a_commit_that_fails_answers_the_error(
    write_client: AsyncTestClient[Litestar], migrated_url: str
) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    assert (await write_client.post(f"/write/{name}")).status_code == 201
    answer = await write_client.post(f"/write/{name}")  # the name is unique: the commit at the end fails
    assert answer.status_code >= 400 and "written" not in answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert await _tenants(migrated_url, name) == 1


async def test_what_a_handler_committed_stays_when_a_later_step_fails(
    write_client: AsyncTestClient[Litestar], migrated_url: str
) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    assert (await write_client.post(f"/commit-first/{name}")).status_code == 409
    assert await _tenants(migrated_url, name) == 1


async def test_no_dependency_shows_in_the_openapi_document(client: AsyncTestClient[Litestar]) -> None:
    """``/schema/openapi.json`` lists only what a client sends: path, query and header parameters and bodies."""
    injected = set(MANAGEMENT) | set(WRITES)
    paths = (await client.get("/schema/openapi.json")).json()["paths"]
    management = {path: ops for path, ops in paths.items() if path.startswith(("/api-keys", "/deployments", "/usage"))}
    assert len(management) >= 5
    for path, operations in paths.items():
        for method, operation in operations.items():
            names = {parameter["name"] for parameter in operation.get("parameters", [])}
            assert not names & injected, (method, path)
    assert [p["name"] for p in paths["/usage"]["get"]["parameters"]] == ["start", "end", "groupBy"]
    assert [p["name"] for p in paths["/api-keys/{key_id}"]["delete"]["parameters"]] == ["key_id"]
    assert "parameters" not in paths["/api-keys"]["post"] and "requestBody" in paths["/api-keys"]["post"]
