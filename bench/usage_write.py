"""What writing usage records costs the event loop: ``python -m bench.usage_write [--records N] [--rounds R]``.

The meter writes every billed request's record from the server's event loop, so its CPU per record is taken from
the predictions. This inserts batches of records into a fresh SQLite database (or ``--url``'s, migrated) two ways,
taking turns, and prints the thread CPU per record of each:

- ``sqlalchemy``: the records' insert compiled by SQLAlchemy, through the column types' bind processors per row
  (how the meter inserted them before ``cloudeasyml.metering.usage_insert``), 25 rows a statement;
- ``driver``: ``insert_usage``, the driver's own SQL with values made once per row, as the meter does now.

Both insert the records only (no rollups, no exports), one transaction a batch.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import cast

import msgspec
from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from cloudeasyml.cli.db import upgrade_database
from cloudeasyml.core.clock import utc_now
from cloudeasyml.db.engine import create_engine, one_transaction, session_factory
from cloudeasyml.db.models import UsageRecord
from cloudeasyml.domain.tenants import create_tenant
from cloudeasyml.metering.usage_insert import insert_usage
from cloudeasyml.metering.usage_record import Usage

__all__ = ("main",)


async def _through_sqlalchemy(session: AsyncSession, batch: list[Usage]) -> None:
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    table = cast(Table, UsageRecord.__table__)
    statement = insert(table).on_conflict_do_nothing(index_elements=["request_id"]).returning(table.c.request_id)
    for start in range(0, len(batch), 25):
        rows = [msgspec.structs.asdict(usage) for usage in batch[start : start + 25]]
        set((await session.execute(statement, rows)).scalars())


async def _through_the_driver(session: AsyncSession, batch: list[Usage]) -> None:
    for start in range(0, len(batch), 50):
        await insert_usage(session, batch[start : start + 50])


async def _run(url: str | None, records: int, rounds: int) -> None:
    if url is None:
        url = f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'usage.db'}"
    await asyncio.to_thread(upgrade_database, url)
    async with one_transaction(url) as session:
        tenant = await create_tenant(session, f"bench-{uuid.uuid4().hex[:8]}", "owner@example.com")
    engine = create_engine(url)
    sessions = session_factory(engine)
    deployment = uuid.uuid4()

    def batch() -> list[Usage]:
        now = utc_now()
        return [
            Usage(
                request_id=uuid.uuid4().hex,
                tenant_id=tenant.tenant.id,
                api_key_id=tenant.key_id,
                deployment_id=deployment,
                deployment_name="housing",
                model_name="housing",
                model_version="1.0.0",
                items=1,
                processing_ms=0.05,
                gpu_ms=0.0,
                cost=Decimal("0.000012"),
                created_at=now,
            )
            for _ in range(records)
        ]

    ways = {"sqlalchemy": _through_sqlalchemy, "driver": _through_the_driver}
    cpu: dict[str, list[float]] = {name: [] for name in ways}
    try:
        for round_ in range(rounds + 1):  # the first round warms up (compiles, prepares) and is not counted
            order = list(ways) if round_ % 2 else list(reversed(ways))
            for name in order:
                records_ = batch()
                started = time.thread_time()
                async with sessions() as session, session.begin():
                    await ways[name](session, records_)
                if round_:
                    cpu[name].append((time.thread_time() - started) / records * 1e6)
    finally:
        await engine.dispose()
    print(f"{records} records a batch, {rounds} rounds taking turns; event-loop thread CPU per record (median, range)")
    for name, figures in cpu.items():
        print(f"  {name:<11} {statistics.median(figures):6.1f} µs   ({min(figures):.1f}-{max(figures):.1f})")
    ratio = statistics.median(cpu["sqlalchemy"]) / statistics.median(cpu["driver"])
    print(f"  sqlalchemy / driver: {ratio:.2f}x")


def main(argv: list[str] | None = None) -> int:
    """Print the thread CPU per usage record of both ways of inserting."""
    parser = argparse.ArgumentParser(prog="python -m bench.usage_write", description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--url", help="A database URL (default: a fresh SQLite file).")
    args = parser.parse_args(argv)
    asyncio.run(_run(args.url, args.records, args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
