"""A batch job survives restarts of its PostgreSQL server: a server of the test's own is stopped (``pg_ctl stop -m
fast``: every connection closed, new ones refused) while a chunk is in flight and started again seconds later,
twice (once for less than the workers' lease, once for more); the server process's workers back off and retry
instead of dying, and the job completes with every line exactly once, in input order, each chunk billed once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from cloudeasyml.cli.db import upgrade_database
from cloudeasyml.db.models import BatchChunk
from tests.conftest import db_session, new_tenant
from tests.integration.test_batch_crash import CHUNK, LINES, _check_output, _env, _submit, _wait, _wait_billed
from tests.support.own_postgres import OwnPostgres, own_postgres
from tests.support.server_process import export_models, serve_process

housing = pytest.importorskip("cloudeasyml_housing")

LEASE_SECONDS = 3.0
"""The workers' lease in this test (``_env``)."""


async def _running(url: str, job_id: str) -> int:
    async with db_session(url) as session:
        query = select(func.count()).where(BatchChunk.job_id == job_id, BatchChunk.status == "running")
        return int(await session.scalar(query) or 0)


def _restart_mid_chunk(database: OwnPostgres, job_id: str, down_seconds: float) -> None:
    """Stop the server while one of the job's chunks is running, keep it down ``down_seconds``, start it again."""
    deadline = time.monotonic() + 60
    while asyncio.run(_running(database.url, job_id)) == 0:
        assert time.monotonic() < deadline, "no chunk of the job ran"
    database.stop()
    time.sleep(down_seconds)
    database.start()


@pytest.mark.slow
def test_a_job_survives_restarts_of_the_database(artifact_dir: Path, tmp_path: Path) -> None:
    export_models(artifact_dir, housing.HousingModel())
    with own_postgres() as database:
        upgrade_database(database.url)
        key = asyncio.run(new_tenant(database.url)).key
        env = _env(CLOUDEASYML_BATCH__RETRY_BACKOFF_MAX_SECONDS="1")
        with serve_process(artifact_dir, tmp_path, database_url=database.url, env=env) as server:
            job_id = _submit(server.base_url, key)
            job = _wait(server.base_url, key, job_id, lambda j: j["counts"]["completed"] >= 2 * CHUNK)
            assert job["counts"]["completed"] < LINES // 3, "the job ran too fast to restart the database mid-job"
            _restart_mid_chunk(database, job_id, LEASE_SECONDS / 3)  # leases outlive the outage
            job = _wait(server.base_url, key, job_id, lambda j: j["counts"]["completed"] >= LINES // 3)
            assert job["status"] == "running", job
            _restart_mid_chunk(database, job_id, LEASE_SECONDS * 2)  # every lease runs out meanwhile
            job = _wait(server.base_url, key, job_id, lambda j: j["status"] not in ("validating", "queued", "running"))
            _check_output(server.base_url, key, job)
            assert _wait_billed(database.url) == (LINES // CHUNK, LINES)
        log = (tmp_path / "server.log").read_text()
        assert "batch worker: working again" in log  # the workers saw the outage, and outlived it
