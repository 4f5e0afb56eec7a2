"""Migrations up and down on SQLite and PostgreSQL; the models match the migrations."""

from __future__ import annotations

import asyncio

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from cloudeasyml.db.base import Base
from cloudeasyml.db.engine import create_engine
from cloudeasyml.migrations_path import alembic_config

TABLES = {"tenant", "app_user", "api_key", "deployment", "usage_record"}


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
