"""Doctor checks of the stores a server needs: the database (reachable, at the migration head) and Redis."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import make_url

from cloudeasyml.cli.diagnostics.findings import Context, Finding, safe_url, scrub
from cloudeasyml.db.engine import create_engine
from cloudeasyml.db.models import Deployment
from cloudeasyml.migrations_path import alembic_config

__all__ = ("check_database", "check_redis")


def _known_revisions() -> tuple[frozenset[str], frozenset[str]]:
    scripts = ScriptDirectory.from_config(alembic_config())
    return frozenset(scripts.get_heads()), frozenset(s.revision for s in scripts.walk_revisions())


async def _read_database(url: str, timeout: float) -> tuple[set[str], int | None]:
    """The schema's revisions and, when the deployment table is there, how many deployments ask for CUDA."""
    engine = create_engine(url, pool_size=1, connect_timeout=timeout)
    try:
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
            current: set[str] = set()
            if "alembic_version" in tables:
                current = {row[0] for row in await connection.execute(text("SELECT version_num FROM alembic_version"))}
            cuda = None
            if "deployment" in tables:
                # An operator's view across tenants: only the device of each config is looked at.
                configs = await connection.execute(select(Deployment.config))
                cuda = sum(1 for (config,) in configs if isinstance(config, dict) and config.get("device") == "cuda")
            return current, cuda
    finally:
        await engine.dispose()


def check_database(context: Context) -> list[Finding]:
    """The database answers, and its schema is at this release's migration head."""
    settings = context.settings
    url = settings.database_url
    shown = safe_url(url)
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path and path != ":memory:" and not Path(path).is_file():
            return [
                Finding(
                    "database",
                    "FAIL",
                    f"no SQLite database at {path}",
                    "run `cloudeasyml db upgrade` to create it, or point CLOUDEASYML_DATABASE_URL at yours",
                )
            ]
    timeout = settings.database.connect_timeout_seconds
    try:
        current, context.cuda_deployments = asyncio.run(asyncio.wait_for(_read_database(url, timeout), timeout + 5))
    except Exception as exc:  # any failure to connect or read means the server could not either
        reason = scrub(f"{type(exc).__name__}: {exc}".strip().rstrip(":"), url)
        return [
            Finding(
                "database",
                "FAIL",
                f"cannot reach {shown}: {reason}",
                "check that the database server is running and reachable from here, and CLOUDEASYML_DATABASE_URL "
                "(host, port, name, user, password)",
            )
        ]
    found = [Finding("database", "OK", f"{shown} answers")]
    heads, known = _known_revisions()
    if current == heads:
        found.append(Finding("migrations", "OK", f"schema at head {', '.join(sorted(heads))}"))
    elif not current:
        found.append(
            Finding("migrations", "FAIL", "the database has no schema (never migrated)", "run `cloudeasyml db upgrade`")
        )
    elif not current & known:
        found.append(
            Finding(
                "migrations",
                "WARN",
                f"schema at {', '.join(sorted(current))}, from a newer release than this one "
                f"(head {', '.join(sorted(heads))})",
                "upgrade cloudeasyml to the release that migrated it; this one may not understand its tables",
            )
        )
    else:
        found.append(
            Finding(
                "migrations",
                "FAIL",
                f"schema at {', '.join(sorted(current))}, behind this release's head {', '.join(sorted(heads))}",
                "back the database up, then run `cloudeasyml db upgrade`",
            )
        )
    return found


async def _ping(url: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        await client.ping()
    finally:
        await client.aclose()


def check_redis(context: Context) -> list[Finding]:
    """Redis answers, when one is configured."""
    url = context.settings.redis.url
    if not url:
        return [Finding("redis", "OK", "not configured: rate limits and quotas are counted by each process alone")]
    try:
        asyncio.run(_ping(url))
    except Exception as exc:  # refused, timed out, wrong password: the servers would fall back to local counts
        return [
            Finding(
                "redis",
                "FAIL",
                f"cannot reach {safe_url(url)}: {type(exc).__name__}: {scrub(str(exc), url)}",
                "start Redis or correct CLOUDEASYML_REDIS__URL (unset it to run one process without Redis)",
            )
        ]
    return [Finding("redis", "OK", f"{safe_url(url)} answers")]
