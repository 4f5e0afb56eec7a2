"""Usage reports at scale: write N usage records (default 1,000,000) for one tenant across a month, as the meter
writes them (``write_usage``: the records and the daily rollup), then time ``GET /usage`` for the month, for
bounds that cut days in two, with ``groupBy``, ``GET /usage/records`` and ``GET /invoices/{month}`` (its first
read, which freezes it, and a later one), through the real app over ASGI.

    python -m bench.usage_reports                          # SQLite in a temporary directory
    python -m bench.usage_reports --database postgresql+asyncpg://user@host/db   # a server: a database of its own
    python -m bench.usage_reports --records 100000 --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncSession

from cloudeasyml.app import create_app
from cloudeasyml.cli.db import upgrade_database
from cloudeasyml.db.engine import create_engine, one_transaction
from cloudeasyml.domain.tenants import create_tenant
from cloudeasyml.metering.meter import Usage, write_usage
from cloudeasyml.plugins.manager import get_plugin_manager
from cloudeasyml.settings import DatabaseSettings, Settings

MONTH_START = datetime(2026, 11, 1, tzinfo=UTC)
MONTH_END = datetime(2026, 12, 1, tzinfo=UTC)
BATCH = 10_000


def _records(tenant_id: uuid.UUID, count: int, keys: list[str]) -> list[Usage]:
    deployments = [uuid.UUID(int=i + 1) for i in range(5)]
    step = (MONTH_END - MONTH_START) / count
    return [
        Usage(
            request_id=str(uuid.uuid4()),
            tenant_id=tenant_id,
            api_key_id=keys[i % len(keys)],
            deployment_id=deployments[i % 5],
            deployment_name=f"d{i % 5}",
            model_name=("housing", "minilm", "sentiment")[i % 3],
            model_version="1.0.0",
            items=1 + i % 4,
            processing_ms=0.5 + (i % 17) * 0.25,
            gpu_ms=0.0,
            cost=Decimal("0.0000125") + Decimal(i % 13).scaleb(-10),
            created_at=MONTH_START + step * i,
        )
        for i in range(count)
    ]


async def _fill(url: str, count: int) -> tuple[str, Decimal]:
    async with one_transaction(url) as session:
        tenant = await create_tenant(session, f"bench-{uuid.uuid4().hex[:8]}", "bench@example.com")
    engine = create_engine(url)
    total = Decimal(0)
    started = time.perf_counter()
    try:
        records = _records(tenant.tenant.id, count, [tenant.key_id, "sk_other0000000000"])
        for offset in range(0, count, BATCH):
            batch = records[offset : offset + BATCH]
            async with AsyncSession(bind=engine) as session, session.begin():
                await write_usage(session, batch)
            total += sum((r.cost for r in batch), Decimal(0))
    finally:
        await engine.dispose()
    print(f"wrote {count:,} records in {time.perf_counter() - started:.0f} s")
    return tenant.key, total


async def _admin(url: str, statement: str) -> None:
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def _time(client: AsyncTestClient, path: str, key: str, params: dict[str, str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        response = await client.get(path, params=params, headers={"Authorization": f"Bearer {key}"})
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text
    return times


async def main(url: str, count: int, runs: int) -> None:
    """Fill, then time each report ``runs`` times (the database is migrated already)."""
    key, total = await _fill(url, count)
    home = tempfile.mkdtemp(prefix="usage-bench-")
    app = create_app(Settings(database=DatabaseSettings(url=url), home=home), get_plugin_manager())
    month = {"start": "2026-11-01T00:00:00Z", "end": "2026-12-01T00:00:00Z"}
    cut = {"start": "2026-11-03T05:30:00Z", "end": "2026-11-28T13:07:00Z"}
    async with AsyncTestClient(app=app) as client:
        report = (await client.get("/usage", params=month, headers={"Authorization": f"Bearer {key}"})).json()
        assert Decimal(report["totalCost"]) == total and report["totalRequests"] == count, report
        first_invoice = await _time(client, "/invoices/2026-11", key, {}, 1)
        figures = {
            "GET /usage (the month)": await _time(client, "/usage", key, month, runs),
            "GET /usage (days cut in two)": await _time(client, "/usage", key, cut, runs),
            "GET /invoices/2026-11 (first read: computed, frozen)": first_invoice,
            "GET /invoices/2026-11 (frozen)": await _time(client, "/invoices/2026-11", key, {}, runs),
            "GET /invoices": await _time(client, "/invoices", key, {}, runs),
        }
        for group_by in ("model", "apiKey", "model,day", "hour", "apiKey,hour"):
            name = f"GET /usage?groupBy={group_by} (the month)"
            figures[name] = await _time(client, "/usage", key, {**month, "groupBy": group_by}, runs)
        records = {**month, "limit": "100"}
        figures["GET /usage/records?limit=100 (the month)"] = await _time(client, "/usage/records", key, records, runs)
        keyed = {**records, "apiKeyId": "sk_other0000000000"}
        figures["GET /usage/records?apiKeyId=...&limit=100"] = await _time(client, "/usage/records", key, keyed, runs)
        invoice = (await client.get("/invoices/2026-11", headers={"Authorization": f"Bearer {key}"})).json()
        assert Decimal(invoice["total"]) == total
    print(f"{count:,} records, {url.split('://')[0]}; ms over {runs} runs (median, max):")
    for name, times in figures.items():
        print(f"  {name:55} {statistics.median(times):8.1f} {max(times):8.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--database",
        default="",
        help="a PostgreSQL URL: the benchmark makes a database of its own on that server and drops it after "
        "(default: a new SQLite file)",
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    if not args.database:
        database = f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'usage.db'}"
        upgrade_database(database)  # alembic runs its own event loop
        asyncio.run(main(database, args.records, args.runs))
    else:
        name = f"usage_bench_{uuid.uuid4().hex[:8]}"
        database = args.database.rsplit("/", 1)[0] + f"/{name}"
        asyncio.run(_admin(args.database, f'CREATE DATABASE "{name}"'))
        try:
            upgrade_database(database)
            asyncio.run(main(database, args.records, args.runs))
        finally:
            asyncio.run(_admin(args.database, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
