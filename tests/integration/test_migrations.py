"""Migrations up and down on SQLite and PostgreSQL; the models match the migrations."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from cloudeasyml.db.base import Base
from cloudeasyml.db.engine import create_engine
from cloudeasyml.migrations_path import alembic_config

TABLES = {
    "tenant",
    "app_user",
    "api_key",
    "deployment",
    "deployment_revision",
    "usage_record",
    "webhook_endpoint",
    "webhook_event",
    "webhook_delivery",
    "idempotency_record",
    "invoice",
    "usage_daily",
    "operator_key",
    "audit_event",
    "plan",
    "usage_hourly",
}


async def _revisions(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return {row[0] for row in await connection.execute(text("SELECT version_num FROM alembic_version"))}
    finally:
        await engine.dispose()


async def _inspect(url: str):  # type: ignore[no-untyped-def]
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
            diff = await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
            )
        return tables, diff
    finally:
        await engine.dispose()


def test_upgrade_downgrade_upgrade(database_url: str) -> None:
    config = alembic_config(database_url)
    command.upgrade(config, "head")
    tables, diff = asyncio.run(_inspect(database_url))
    assert TABLES <= tables
    assert diff == [], f"models and migrations disagree: {diff}"
    command.downgrade(config, "base")
    tables, _ = asyncio.run(_inspect(database_url))
    assert not (TABLES & tables)
    command.upgrade(config, "head")
    tables, _ = asyncio.run(_inspect(database_url))
    assert TABLES <= tables


def test_the_template_the_tests_copy_is_what_alembic_makes(migrated_url: str) -> None:
    # Every other test gets a copy of one template (tests/support/template_db.py): it must be a database at head.
    tables, diff = asyncio.run(_inspect(migrated_url))
    assert TABLES <= tables and diff == []
    assert asyncio.run(_revisions(migrated_url)) == set(ScriptDirectory.from_config(alembic_config()).get_heads())


PREVIOUS_RELEASE = "b7e2c41d9a05"
"""The schema of the last release (landed with issue 10: keys record the key that created them)."""
FIRST_RELEASE = "3fa78f7cfddf"
"""The initial schema: a database never upgraded since also goes to head."""

_metadata = sa.MetaData()
_tenant = sa.Table(
    "tenant",
    _metadata,
    sa.Column("id", sa.Uuid()),
    sa.Column("name", sa.String(200)),
    sa.Column("plan", sa.String(50)),
    sa.Column("created_at", sa.DateTime(timezone=True)),
)
_api_key = sa.Table(
    "api_key",
    _metadata,
    sa.Column("id", sa.String(32)),
    sa.Column("tenant_id", sa.Uuid()),
    sa.Column("name", sa.String(200)),
    sa.Column("secret_hash", sa.String(64)),
    sa.Column("scopes", sa.JSON()),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
    sa.Column("created_at", sa.DateTime(timezone=True)),
)
_usage = sa.Table(
    "usage_record",
    _metadata,
    sa.Column("request_id", sa.String(36)),
    sa.Column("tenant_id", sa.Uuid()),
    sa.Column("api_key_id", sa.String(32)),
    sa.Column("deployment_id", sa.Uuid()),
    sa.Column("deployment_name", sa.String(100)),
    sa.Column("model_name", sa.String(100)),
    sa.Column("model_version", sa.String(100)),
    sa.Column("items", sa.Integer()),
    sa.Column("processing_ms", sa.Double()),
    sa.Column("gpu_ms", sa.Double()),
    sa.Column("cost", sa.BigInteger()),
    sa.Column("created_at", sa.DateTime(timezone=True)),
)
_deployment = sa.Table(
    "deployment",
    _metadata,
    sa.Column("id", sa.Uuid()),
    sa.Column("tenant_id", sa.Uuid()),
    sa.Column("name", sa.String(100)),
    sa.Column("model_name", sa.String(100)),
    sa.Column("model_version", sa.String(100)),
    sa.Column("config", sa.JSON()),
    sa.Column("status", sa.String(20)),
    sa.Column("created_at", sa.DateTime(timezone=True)),
)
"""The previous release's tables as it wrote them (its own columns only), to fill a database of that release."""


def _json(value: object) -> object:
    """A JSON column read through plain SQL: text on SQLite, decoded already on PostgreSQL."""
    return json.loads(value) if isinstance(value, str) else value


def _utc(value: object) -> datetime:
    """A timestamp read through plain SQL: text on SQLite, a datetime on PostgreSQL."""
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    assert isinstance(when, datetime)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


async def _run(url: str, work):  # type: ignore[no-untyped-def]
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            return await connection.run_sync(work)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("release", [PREVIOUS_RELEASE, FIRST_RELEASE])
def test_a_previous_release_database_with_data_upgrades_and_downgrades_keeping_it(
    database_url: str, release: str
) -> None:
    config = alembic_config(database_url)
    command.upgrade(config, release)
    tenant_id, now = uuid.uuid4(), datetime.now(UTC)
    deployment_id, created = uuid.uuid4(), datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    serving = {"maxBatchSize": 16, "variant": "float"}
    keys = [
        {"id": f"sk_{'a' * 16}", "revoked_at": None},
        {"id": f"sk_{'b' * 16}", "revoked_at": now},
    ]
    # The last release records each key's creator: there, the second key was made by the first.
    parents = [None, keys[0]["id"]] if release == PREVIOUS_RELEASE else [None, None]

    def fill(sync: sa.Connection) -> None:
        sync.execute(_tenant.insert(), [{"id": tenant_id, "name": "old", "plan": "default", "created_at": now}])
        sync.execute(
            _api_key.insert(),
            [
                {
                    **key,
                    "tenant_id": tenant_id,
                    "name": "k",
                    "secret_hash": "0" * 64,
                    "scopes": ["admin"],
                    "created_at": now,
                }
                for key in keys
            ],
        )
        if release == PREVIOUS_RELEASE:
            sync.execute(
                sa.text("UPDATE api_key SET created_by_key_id = :parent WHERE id = :id"),
                {"parent": parents[1], "id": keys[1]["id"]},
            )
        sync.execute(
            _deployment.insert(),
            [
                {
                    "id": deployment_id,
                    "tenant_id": tenant_id,
                    "name": "d",
                    "model_name": "housing",
                    "model_version": "1.0.0",
                    "config": serving,
                    "status": "ready",
                    "created_at": created,
                }
            ],
        )
        sync.execute(
            _usage.insert(),
            [
                {
                    "request_id": str(uuid.uuid4()),
                    "tenant_id": tenant_id,
                    "api_key_id": keys[0]["id"],
                    "deployment_id": uuid.uuid4(),
                    "deployment_name": "d",
                    "model_name": "housing",
                    "model_version": "1.0.0",
                    "items": 1,
                    "processing_ms": 1.0,
                    "gpu_ms": 0.0,
                    "cost": 12345,
                    "created_at": now,
                }
            ],
        )

    def read(sync: sa.Connection) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
        columns = {column["name"] for column in inspect(sync).get_columns("api_key")}
        parent = [sa.column("created_by_key_id")] if "created_by_key_id" in columns else []
        rows = sync.execute(
            sa.select(_api_key.c.id, _api_key.c.revoked_at.is_not(None), *parent).order_by(_api_key.c.id)
        ).all()
        usage = sync.execute(sa.select(_usage.c.api_key_id, _usage.c.cost)).all()
        return [tuple(row) for row in rows], [tuple(row) for row in usage]

    def revisions(sync: sa.Connection) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
        current = sync.execute(sa.text("SELECT id, model_version, revision FROM deployment")).all()
        history = sync.execute(
            sa.text(
                "SELECT deployment_id, tenant_id, number, model_version, config, traffic, changes, action, "
                "created_by_key_id, created_at FROM deployment_revision"
            )
        ).all()
        return [tuple(row) for row in current], [tuple(row) for row in history]

    asyncio.run(_run(database_url, fill))
    command.upgrade(config, "head")
    keys_at_head, usage_at_head = asyncio.run(_run(database_url, read))
    # The existing deployment became a single-version deployment at revision 1, equal to its row.
    current, history = asyncio.run(_run(database_url, revisions))
    assert [(uuid.UUID(str(i)), v, n) for i, v, n in current] == [(deployment_id, "1.0.0", 1)]
    [(dep, tenant, number, version, stored, traffic, changes, action, by, at)] = history
    assert (uuid.UUID(str(dep)), uuid.UUID(str(tenant)), number, version) == (deployment_id, tenant_id, 1, "1.0.0")
    assert (_json(stored), _json(traffic), _json(changes), action, by) == (serving, None, {}, "create", None)
    assert _utc(at) == created
    # Keys keep their creator; those made before the hierarchy have none, as if the operator made them.
    assert keys_at_head == [(keys[0]["id"], False, parents[0]), (keys[1]["id"], True, parents[1])]
    assert usage_at_head == [(keys[0]["id"], 12345)]
    # The rollups are filled from the records there were (the hourly one by its own revision).
    for rollup in ("usage_daily", "usage_hourly"):
        summed = sa.text(f"SELECT api_key_id, requests, cost FROM {rollup}")  # noqa: S608 - a name of the two above
        assert asyncio.run(_run(database_url, lambda sync, q=summed: sync.execute(q).all())) == [
            (keys[0]["id"], 1, 12345)
        ], rollup
    command.downgrade(config, release)
    keys_after, usage_after = asyncio.run(_run(database_url, read))
    # Back at the release: its creators stay (the first release has no such column).
    unparented = [(keys[0]["id"], False), (keys[1]["id"], True)]
    assert keys_after == (keys_at_head if release == PREVIOUS_RELEASE else unparented)
    assert usage_after == usage_at_head
    assert asyncio.run(_run(database_url, lambda sync: sync.execute(sa.select(_deployment.c.name)).all())) == [("d",)]
    command.upgrade(config, "head")


STATUS_REVISION = "5c1d8e2f7a3b"
"""The revision that made ``deployment.status`` the last load's outcome and added ``status_reason``."""


def test_deployments_stored_ready_become_pending_and_go_back_on_downgrade(database_url: str) -> None:
    config = alembic_config(database_url)
    before = ScriptDirectory.from_config(config).get_revision(STATUS_REVISION).down_revision
    command.upgrade(config, str(before))
    tenant_id, deployment_id, now = uuid.uuid4(), uuid.uuid4(), datetime.now(UTC)

    def fill(sync: sa.Connection) -> None:
        sync.execute(_tenant.insert(), [{"id": tenant_id, "name": "old", "plan": "default", "created_at": now}])
        sync.execute(
            _deployment.insert(),
            [
                {
                    "id": deployment_id,
                    "tenant_id": tenant_id,
                    "name": "d",
                    "model_name": "housing",
                    "model_version": "1.0.0",
                    "config": {},
                    "status": "ready",  # what every release before this one stored
                    "created_at": now,
                }
            ],
        )

    def read(sync: sa.Connection) -> list[tuple[object, ...]]:
        columns = {column["name"] for column in inspect(sync).get_columns("deployment")}
        reason = [sa.column("status_reason")] if "status_reason" in columns else []
        return [tuple(row) for row in sync.execute(sa.select(_deployment.c.name, _deployment.c.status, *reason))]

    asyncio.run(_run(database_url, fill))
    command.upgrade(config, STATUS_REVISION)
    assert asyncio.run(_run(database_url, read)) == [("d", "pending", None)]
    command.downgrade(config, str(before))
    assert asyncio.run(_run(database_url, read)) == [("d", "ready")]
    command.upgrade(config, "head")
