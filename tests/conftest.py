"""Fixtures: real SQLite files and (when CLOUDEASYML_TEST_POSTGRES_URL is set) real PostgreSQL databases, copied
from a template that Alembic migrated once per run; the real app over ASGI; real exported models in a session-wide
artifact store."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from cloudeasyml.api import request_log
from cloudeasyml.api.request_log import drain_access_log
from cloudeasyml.app import create_app
from cloudeasyml.db.engine import one_transaction
from cloudeasyml.domain.tenants import NewTenant, create_tenant
from cloudeasyml.plugins.manager import PluginManager, get_plugin_manager
from cloudeasyml.settings import DatabaseSettings, RuntimeSettings, Settings
from tests.support import tiny_model
from tests.support.template_db import TEMPLATES, TemplateDatabases, plain_dsn

# A hook for xdist (make test): a test marked serial runs while no other test runs.
from tests.support.workers import pytest_runtest_protocol  # noqa: F401

POSTGRES_URL = os.environ.get("CLOUDEASYML_TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("CLOUDEASYML_TEST_REDIS_URL")

# Access-log lines are written when a test phase ends, inside its output capture, never by the writer thread's own
# timer: a line it wrote between two phases (capture off) went to the run's output, among xdist's dots.
request_log.WRITE_INTERVAL_S = 3600.0


def _write_access_lines() -> Iterator[None]:
    yield
    drain_access_log(2.0)


pytest_runtest_setup = pytest.hookimpl(hookwrapper=True, trylast=True)(_write_access_lines)
pytest_runtest_call = pytest.hookimpl(hookwrapper=True, trylast=True)(_write_access_lines)
pytest_runtest_teardown = pytest.hookimpl(hookwrapper=True, trylast=True)(_write_access_lines)


async def _admin(url: str, statement: str) -> None:
    connection = await asyncpg.connect(plain_dsn(url))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(name="templates", scope="session")
def fx_templates() -> Iterator[TemplateDatabases]:
    """The run's migrated template databases (built on first use), removed when the run ends."""
    yield TEMPLATES
    TEMPLATES.close()


@pytest.fixture(name="database_url", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fx_database_url(request: pytest.FixtureRequest, tmp_path: Path, templates: TemplateDatabases) -> Iterator[str]:
    """The test's own database: a SQLite file, or a PostgreSQL database dropped afterwards.

    Empty, unless the test also asks for ``migrated_url``: then it is made as a copy of the run's migrated template
    (so a test that asks for both gets one database, at head).
    """
    migrated = "migrated_url" in request.fixturenames
    if request.param == "sqlite":
        path = tmp_path / "test.db"
        yield templates.sqlite(path) if migrated else f"sqlite+aiosqlite:///{path}"
        return
    if not POSTGRES_URL:
        pytest.skip("CLOUDEASYML_TEST_POSTGRES_URL is not set")
    if migrated:
        url = templates.postgres(POSTGRES_URL)
    else:
        url = POSTGRES_URL.rsplit("/", 1)[0] + f"/test_{uuid.uuid4().hex[:12]}"
        asyncio.run(_admin(POSTGRES_URL, f'CREATE DATABASE "{url.rsplit("/", 1)[1]}"'))
    yield url
    asyncio.run(_admin(POSTGRES_URL, f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))


@pytest.fixture(name="redis_url")
def fx_redis_url() -> str:
    """A real Redis server (``CLOUDEASYML_TEST_REDIS_URL``; the test is skipped without one).

    The xdist workers of a run share its database: what tests write there is keyed by random ids (tenant, key,
    deployment), and the broadcast channels are server-wide whatever the database number, so a database per worker
    would isolate nothing that needs it. No test may ``FLUSHDB``: another worker's (or another run's) keys would go.
    """
    if not REDIS_URL:
        pytest.skip("CLOUDEASYML_TEST_REDIS_URL is not set")
    return REDIS_URL


@pytest.fixture(name="migrated_url")
def fx_migrated_url(database_url: str) -> str:
    """The test's database at head: a copy of the template that `cloudeasyml db upgrade` migrated once this run."""
    if database_url.startswith("sqlite"):
        # ``database_url`` made the copy; a module that overrides it must make one too (``TEMPLATES.sqlite``).
        assert Path(database_url.split(":///", 1)[1]).is_file(), f"{database_url} was not copied from the template"
    return database_url


@pytest.fixture(name="artifact_dir", scope="session")
def fx_artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One artifact store for the session, so each model is exported once; the tiny model's graph is there from
    the start (built with ``onnx.helper``: serving it needs no torch, tests marked ``export`` export it)."""
    path = tmp_path_factory.mktemp("artifacts")
    tiny_model.seed_graph(path)
    return path


def installed_plugins() -> list[object]:
    """Bundled plugin modules that are installed in this environment."""
    modules = []
    for name in ("cloudeasyml_housing", "cloudeasyml_sentiment", "cloudeasyml_minilm"):
        try:
            modules.append(__import__(name))
        except ImportError:
            pass
    return modules


@pytest.fixture(name="plugin_manager")
def fx_plugin_manager() -> PluginManager:
    """The tiny test model plus the housing plugin when installed (not every installed plugin: tests pick)."""
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(tiny_model, name="tiny")
    try:
        import cloudeasyml_housing
    except ImportError:
        pass
    else:
        pm.register(cloudeasyml_housing, name="housing")
    return pm


@pytest.fixture(name="settings")
def fx_settings(migrated_url: str, artifact_dir: Path, tmp_path: Path) -> Settings:
    """Settings for one test app."""
    return Settings(
        database=DatabaseSettings(url=migrated_url),
        runtime=RuntimeSettings(artifact_dir=str(artifact_dir)),
        home=str(tmp_path / "home"),
    )


@pytest.fixture(name="app")
def fx_app(settings: Settings, plugin_manager: PluginManager) -> Litestar:
    """The real app."""
    return create_app(settings, plugin_manager)


@pytest.fixture(name="client")
async def fx_client(app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """An HTTP client over ASGI, with the app's lifespan (meter, shutdown drain) running."""
    async with AsyncTestClient(app=app) as client:
        yield client


db_session = one_transaction
"""A session in one transaction on the test's own engine: the app's pool lives on the test client's event loop,
which asyncpg connections cannot leave."""


async def new_tenant(url: str, name: str | None = None) -> NewTenant:
    """Create a tenant with its owner and admin key, as `cloudeasyml tenants create` does."""
    async with db_session(url) as session:
        return await create_tenant(session, name or f"tenant-{uuid.uuid4().hex[:8]}", "owner@example.com")


def bearer(key: str) -> dict[str, str]:
    """Authorization header for a key."""
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(name="tenant")
async def fx_tenant(migrated_url: str) -> NewTenant:
    """Tenant A with an admin key."""
    return await new_tenant(migrated_url, "tenant-a")


@pytest.fixture(name="other_tenant")
async def fx_other_tenant(migrated_url: str) -> NewTenant:
    """Tenant B with an admin key."""
    return await new_tenant(migrated_url, "tenant-b")
