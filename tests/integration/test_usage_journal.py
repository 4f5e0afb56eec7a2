"""Usage that survives a crash and a database outage: the meter's journal against a real database, and the 503
(never a 500) that a locked or unreachable database gives."""

from __future__ import annotations

import asyncio
import gc
import socket
import sqlite3
import subprocess
import sys
import textwrap
import tracemalloc
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import event, func, select

from cloudeasyml.app import create_app
from cloudeasyml.core.clock import utc_now
from cloudeasyml.db.engine import create_engine, session_factory
from cloudeasyml.db.models import UsageRecord
from cloudeasyml.domain.tenants import NewTenant
from cloudeasyml.errors import DatabaseUnavailableError
from cloudeasyml.metering.meter import WRITE_SLICE, Meter, Usage
from cloudeasyml.plugins.manager import PluginManager
from cloudeasyml.settings import DatabaseSettings, MeteringSettings, RuntimeSettings, Settings
from tests.conftest import bearer, db_session

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@contextmanager
def sqlite_locked(url: str) -> Iterator[None]:
    """Another connection holds the SQLite database's write lock (``BEGIN EXCLUSIVE``) until the block ends."""
    connection = sqlite3.connect(url.split("///", 1)[1], isolation_level=None, timeout=10)
    connection.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        connection.rollback()
        connection.close()


def usage_of(tenant: NewTenant, n: int = 0) -> Usage:
    return Usage(
        request_id=str(uuid.uuid4()),
        tenant_id=tenant.tenant.id,
        api_key_id=tenant.key_id,
        deployment_id=uuid.uuid4(),
        deployment_name="d",
        model_name="m",
        model_version="1",
        items=1 + n % 3,
        processing_ms=1.25,
        gpu_ms=0.0,
        cost=Decimal("0.0001"),
        created_at=utc_now(),
    )


async def flushed(meter: Meter, seconds: float = 60) -> None:
    """Flush until the meter has caught up (each try waits ``flush_timeout`` at most)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            return await meter.flush()
        except DatabaseUnavailableError:
            if asyncio.get_running_loop().time() > deadline:
                raise


async def stored_ids(url: str) -> list[str]:
    async with db_session(url) as session:
        return list(await session.scalars(select(UsageRecord.request_id)))


@sqlite_only
async def test_records_wait_in_the_journal_not_in_memory_while_the_database_is_locked(
    migrated_url: str, tenant: NewTenant, tmp_path: Path
) -> None:
    engine = create_engine(migrated_url)
    meter = Meter(session_factory(engine), tmp_path / "journal", flush_interval=0.05, flush_timeout=0.5, batch_size=200)
    await meter.start()
    records = [usage_of(tenant, i) for i in range(200)]
    try:
        with sqlite_locked(migrated_url):
            for usage in records[:100]:
                meter.record(usage)
            with pytest.raises(DatabaseUnavailableError):
                await meter.flush()
            # Memory stays flat while the database is away: the writer holds one batch (here 200 records) at most,
            # whatever the number of records waiting.
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            grown = []
            for _ in range(2):
                for i in range(10_000):
                    meter.record(usage_of(tenant, i))
                await asyncio.sleep(0.2)  # the writer keeps trying meanwhile
                grown.append(tracemalloc.get_traced_memory()[0] - before)
            tracemalloc.stop()
            # One batch in flight (its lines, records and rows) is about 600 KB; 10,000 records kept would be 10 MB.
            assert max(grown) < 1024 * 1024, f"the meter kept {grown} bytes for records the database could not take"
            assert meter.pending == 20_100
            journaled = sum(p.read_bytes().count(b"\n") for p in (tmp_path / "journal").glob("*.jsonl"))
            assert journaled == 20_100
            for usage in records[100:]:
                meter.record(usage)
        await flushed(meter)  # the writer catches up from the journal
        assert meter.pending == 0
        ids = set(await stored_ids(migrated_url))
        assert {u.request_id for u in records} <= ids and len(ids) == 20_200
        after = [usage_of(tenant, i) for i in range(50)]  # buffered in memory again, now that the writer caught up
        for usage in after:
            meter.record(usage)
        await meter.flush()
        assert len(set(await stored_ids(migrated_url))) == 20_250 and meter.pending == 0
    finally:
        await meter.stop()
        await engine.dispose()
    assert list((tmp_path / "journal").iterdir()) == []  # everything written: nothing left to replay


_CRASHING_METER = textwrap.dedent(
    """
    import asyncio, os, signal, sys, uuid
    from decimal import Decimal
    from pathlib import Path
    from cloudeasyml.db.engine import create_engine, session_factory
    from cloudeasyml.core.clock import utc_now
    from cloudeasyml.metering.meter import WRITE_SLICE, Meter, Usage

    url, journal, tenant, written, unwritten, forget_checkpoint = sys.argv[1:7]

    def usage(i):
        return Usage(request_id=f"{i:08d}-0000-0000-0000-000000000000", tenant_id=uuid.UUID(tenant),
                     api_key_id=None, deployment_id=uuid.uuid4(), deployment_name="d", model_name="m",
                     model_version="1", items=1, processing_ms=1.0, gpu_ms=0.0, cost=Decimal("0.01"),
                     created_at=utc_now())

    async def main():
        meter = Meter(session_factory(create_engine(url)), Path(journal), flush_interval=3600, segment_bytes=4096)
        await meter.start()
        for i in range(int(written)):
            meter.record(usage(i))
        await meter.flush()
        if forget_checkpoint == "1":  # as if it died between a database write and its checkpoint
            for path in Path(journal).glob("*.checkpoint"):
                path.unlink()
        for i in range(int(written), int(written) + int(unwritten)):
            meter.record(usage(i))
        os.kill(os.getpid(), signal.SIGKILL)

    asyncio.run(main())
    """
)


def crash_a_meter(url: str, journal: Path, tenant: NewTenant, written: int, unwritten: int, forget: bool) -> None:
    """A real process meters ``written`` records into the database and ``unwritten`` more, then is SIGKILLed."""
    args = [url, str(journal), str(tenant.tenant.id), str(written), str(unwritten), "1" if forget else "0"]
    result = subprocess.run([sys.executable, "-c", _CRASHING_METER, *args], capture_output=True, timeout=120)
    assert result.returncode == -9, result.stderr.decode()


@pytest.mark.parametrize("forget_checkpoint", [False, True], ids=["checkpointed", "checkpoint-lost"])
async def test_a_killed_process_journal_is_replayed_at_start_exactly_once(
    migrated_url: str, tenant: NewTenant, tmp_path: Path, forget_checkpoint: bool
) -> None:
    journal = tmp_path / "journal"
    crash_a_meter(migrated_url, journal, tenant, written=150, unwritten=230, forget=forget_checkpoint)
    assert len(await stored_ids(migrated_url)) == 150
    engine = create_engine(migrated_url)
    try:
        for _ in range(2):  # a second start finds nothing left to replay
            meter = Meter(session_factory(engine), journal)
            await meter.start()  # replays before it returns, i.e. before the app serves
            ids = await stored_ids(migrated_url)
            assert len(ids) == len(set(ids)) == 380
            await meter.stop()
    finally:
        await engine.dispose()
    assert list(journal.iterdir()) == []


@sqlite_only
async def test_a_journal_left_while_the_database_is_locked_is_written_once_it_is_free(
    migrated_url: str, tenant: NewTenant, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    crash_a_meter(migrated_url, journal, tenant, written=0, unwritten=50, forget=False)
    engine = create_engine(migrated_url)
    meter = Meter(session_factory(engine), journal, flush_interval=0.05, flush_timeout=0.5)
    try:
        with sqlite_locked(migrated_url):
            await meter.start()  # the replay fails: the process serves anyway, the writer retries
            assert await stored_ids(migrated_url) == []
        for _ in range(200):
            if len(await stored_ids(migrated_url)) == 50:
                break
            await asyncio.sleep(0.05)
        assert len(await stored_ids(migrated_url)) == 50
    finally:
        await meter.stop()
        await engine.dispose()


async def test_two_live_meters_never_share_or_replay_each_others_files(
    migrated_url: str, tenant: NewTenant, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    engine = create_engine(migrated_url)
    first = Meter(session_factory(engine), journal, flush_interval=3600)
    second = Meter(session_factory(engine), journal, flush_interval=3600)
    try:
        await first.start()
        first.record(usage_of(tenant))
        await second.start()  # the first is alive: its journal is not second's to replay
        second.record(usage_of(tenant))
        assert len(list(journal.glob("*.jsonl"))) == 2
        assert await stored_ids(migrated_url) == []
        await second.flush()
        assert len(await stored_ids(migrated_url)) == 1
        await first.flush()
        assert len(await stored_ids(migrated_url)) == 2
    finally:
        await first.stop()
        await second.stop()
        await engine.dispose()


async def test_a_record_the_database_refuses_is_set_aside_and_billing_goes_on(
    migrated_url: str, tenant: NewTenant, tmp_path: Path
) -> None:
    engine = create_engine(migrated_url)
    meter = Meter(session_factory(engine), tmp_path / "journal", flush_interval=3600)
    await meter.start()
    try:
        good = [usage_of(tenant, i) for i in range(3)]
        orphan = Usage(
            **{
                **{f: getattr(good[0], f) for f in Usage.__struct_fields__},
                "request_id": "x" * 36,
                "tenant_id": uuid.uuid4(),
            }
        )  # no such tenant: the foreign key refuses it
        for usage in [good[0], orphan, *good[1:]]:
            meter.record(usage)
        await meter.flush()
        assert sorted(await stored_ids(migrated_url)) == sorted(u.request_id for u in good)
        assert (tmp_path / "journal" / "usage-rejected.jsonl").read_bytes().count(b"x" * 36) == 1
    finally:
        await meter.stop()
        await engine.dispose()


async def count_usage(url: str) -> int:
    async with db_session(url) as session:
        return await session.scalar(select(func.count()).select_from(UsageRecord)) or 0


@sqlite_only
async def test_usage_read_while_the_database_is_locked_is_a_503_with_retry_after(
    migrated_url: str, artifact_dir: Path, tmp_path: Path, plugin_manager: PluginManager, tenant: NewTenant
) -> None:
    settings = Settings(
        database=DatabaseSettings(url=migrated_url),
        runtime=RuntimeSettings(artifact_dir=str(artifact_dir)),
        metering=MeteringSettings(flush_timeout_seconds=1.0),
        home=str(tmp_path / "home"),
    )
    async with AsyncTestClient(app=create_app(settings, plugin_manager)) as client:
        headers = bearer(tenant.key)
        deployment = (await client.post("/deployments", json={"modelName": "tiny"}, headers=headers)).json()
        body = {"deploymentId": deployment["id"], "inputs": [{"x": 1.0, "y": 2.0}]}
        with sqlite_locked(migrated_url):
            answered = [await client.post("/predict", json=body, headers=headers) for _ in range(5)]
            assert [r.status_code for r in answered] == [200] * 5  # predictions go on: reads are not locked
            locked = [
                await client.get("/usage", headers=headers),
                await client.get("/usage/quota", headers=headers),
                await client.post("/api-keys", json={"name": "k"}, headers=headers),
                await client.post("/deployments", json={"modelName": "tiny"}, headers=headers),
            ]
        for response in locked:
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"].isdigit()
            assert response.headers["content-type"].startswith("application/problem+json")
            assert "unavailable" in response.json()["detail"] or "could not be written" in response.json()["detail"]
        report = await client.get("/usage", headers=headers)
        assert report.status_code == 200 and report.json()["totalRequests"] == 5


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_every_endpoint_answers_503_not_500_when_the_database_is_down(
    artifact_dir: Path, tmp_path: Path, plugin_manager: PluginManager
) -> None:
    settings = Settings(
        database=DatabaseSettings(url=f"postgresql+asyncpg://nobody@127.0.0.1:{_closed_port()}/gone"),
        runtime=RuntimeSettings(artifact_dir=str(artifact_dir)),
        home=str(tmp_path / "home"),
    )
    app = create_app(settings, plugin_manager)
    async with AsyncTestClient(app=app) as client:
        paths = (await client.get("/schema/openapi.json")).json()["paths"]
        headers = bearer("sk_" + "a" * 16 + "." + "b" * 43)
        statuses = {}
        for path, operations in paths.items():
            url = path.replace("{deployment_id}", str(uuid.uuid4())).replace("{key_id}", "sk_" + "c" * 16)
            url = url.replace("{model_name}", "tiny").replace("{name}", "tiny").replace("{model_version}", "1")
            for method in operations:
                response = await client.request(method.upper(), url, headers=headers, json={})
                statuses[f"{method.upper()} {path}"] = response.status_code
                assert response.status_code != 500, (method, path, response.text)
                if response.status_code == 503:
                    assert response.headers.get("retry-after"), (method, path)
        assert statuses["GET /usage"] == 503 and statuses["POST /predict"] == 503
        assert statuses["GET /health"] == 200


@sqlite_only
async def test_records_made_while_the_writer_catches_up_are_all_written_once(
    migrated_url: str, tenant: NewTenant, tmp_path: Path
) -> None:
    """After an outage the writer reads the journal back, while new records arrive and are buffered again: it reads
    the journal up to where the buffer starts and writes the rest from memory, losing and repeating nothing.
    """
    engine = create_engine(migrated_url)
    meter = Meter(session_factory(engine), tmp_path / "journal", flush_interval=0.01, flush_timeout=0.2, batch_size=50)
    await meter.start()
    made: list[str] = []

    def make(n: int) -> None:
        for i in range(n):
            usage = usage_of(tenant, i)
            meter.record(usage)
            made.append(usage.request_id)

    try:
        with sqlite_locked(migrated_url):
            make(500)  # past the buffer: given up, the journal has them
            with pytest.raises(DatabaseUnavailableError):
                await meter.flush()
        for _ in range(40):  # the writer catches up meanwhile, and buffers again
            make(7)
            await asyncio.sleep(0.005)
        await flushed(meter)
        ids = await stored_ids(migrated_url)
        assert len(ids) == len(set(ids)) == len(made) == 780 and set(ids) == set(made)
        assert meter.pending == 0
    finally:
        await meter.stop()
        await engine.dispose()


async def test_a_large_batch_is_written_in_slices_that_each_hold_the_event_loop_briefly(
    migrated_url: str, tenant: NewTenant, tmp_path: Path
) -> None:
    """SQLAlchemy turns an insert's rows into parameters on the event loop: 1,000 rows in one statement held the loop
    for ~5 ms of CPU every flush, the c=1 p99 of /predict. No statement carries more than WRITE_SLICE rows; the
    batch is still one transaction and every record is written once."""
    engine = create_engine(migrated_url)
    statements: list[int] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("INSERT INTO USAGE_RECORD"):
            # Rows of one statement: an executemany's parameter sets, or a multi-row VALUES (which the insert with
            # RETURNING renders, its parameters then one flat tuple).
            many = executemany and parameters and isinstance(parameters[0], tuple | list | dict)
            statements.append(len(parameters) if many else statement.count("), (") + 1)

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    meter = Meter(session_factory(engine), tmp_path / "journal", flush_interval=60, batch_size=1000)
    await meter.start()
    made = [usage_of(tenant, i) for i in range(400)]
    try:
        for usage in made:
            meter.record(usage)
        await flushed(meter)
        assert sorted(await stored_ids(migrated_url)) == sorted(u.request_id for u in made)
        # Either way, slices of WRITE_SLICE rows.
        assert len(statements) >= 400 // WRITE_SLICE
        assert max(statements) <= WRITE_SLICE, statements
    finally:
        await meter.stop()
        await engine.dispose()
