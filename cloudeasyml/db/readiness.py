"""Whether the database can serve: it answers, and its schema is at the migrations' head."""

from __future__ import annotations

from functools import cache

from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cloudeasyml.migrations_path import alembic_config

__all__ = ("expected_heads", "not_ready_reason")


@cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def expected_heads() -> frozenset[str]:
    """The head revision(s) of the migrations this code ships."""
    return frozenset(_scripts().get_heads())


def _newer_than_this_code(revisions: set[str]) -> bool:
    """Revisions this code does not know come from a newer release (migrations are written to keep the previous
    release working), so pods of the previous release stay ready while a rollout migrates the database.
    """
    known = {script.revision for script in _scripts().walk_revisions()}
    return bool(revisions) and not revisions & known


async def not_ready_reason(sessions: async_sessionmaker[AsyncSession]) -> str | None:
    """Why the database cannot serve, or None when it can."""
    try:
        async with sessions() as session:
            rows = await session.execute(text("SELECT version_num FROM alembic_version"))
            current = {row[0] for row in rows}
    except Exception as exc:  # any database failure (down, no such table) means not ready; say which, briefly
        return f"database not ready: {type(exc).__name__}"
    if current != expected_heads() and not _newer_than_this_code(current):
        return (
            f"database schema is at {sorted(current) or 'nothing'}, expected {sorted(expected_heads())}: "
            "run `cloudeasyml db upgrade`"
        )
    return None
