"""A batch job in real server processes: it survives SIGKILL of its worker's process mid-job and the database going
away (SQLite locked; PostgreSQL dropping every connection), and two processes share one job on PostgreSQL; every
line is in the output exactly once, in input order, and each chunk is billed once."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from sqlalchemy import func, select, text

from cloudeasyml.db.models import BatchChunk, UsageRecord
from tests.conftest import bearer, db_session, new_tenant
from tests.support.server_process import export_models, serve_process

housing = pytest.importorskip("cloudeasyml_housing")

LINES = 30_000
CHUNK = 500


def _rows() -> bytes:
    rows = [
        {
            "input": {
                "lotSize": 2000.0 + (i % 1000) * 10,
                "bedrooms": 1 + i % 5,
                "bathrooms": 1 + i % 3,
                "stories": 1 + i % 3,
                "garagePlaces": i % 3,
                "driveway": True,
                "recreationRoom": i % 2 == 0,
                "fullBasement": False,
                "gasHotWater": False,
                "airConditioning": i % 3 == 0,
                "preferredArea": False,
            },
            "customId": str(i),
        }
        for i in range(LINES)
    ]
    return b"".join(msgspec.json.encode(row) + b"\n" for row in rows)


def _env(**extra: str) -> dict[str, str]:
    return {
        "CLOUDEASYML_BATCH__CHUNK_LINES": str(CHUNK),
        "CLOUDEASYML_BATCH__LEASE_SECONDS": "3",
        "CLOUDEASYML_BATCH__POLL_INTERVAL_SECONDS": "0.1",
        "CLOUDEASYML_BATCH__IDLE_POLL_MAX_SECONDS": "0.1",  # idle workers do not back off: the test times the takeover
        "CLOUDEASYML_BATCH__WORKERS": "1",
        **extra,
    }


def _submit(base: str, key: str) -> str:
    headers = bearer(key)
    deployment = httpx.post(f"{base}/deployments", json={"modelName": "housing"}, headers=headers, timeout=60)
    assert deployment.status_code == 201, deployment.text
    file = httpx.post(
        f"{base}/files", content=_rows(), headers={**headers, "Content-Type": "application/jsonl"}, timeout=60
    )
    assert file.status_code == 201, file.text
    body = {"deploymentId": deployment.json()["id"], "inputFileId": file.json()["id"]}
    job = httpx.post(f"{base}/batches", json=body, headers=headers, timeout=60)
    assert job.status_code == 201, job.text
    return job.json()["id"]


def _job(base: str, key: str, job_id: str) -> dict[str, Any]:
    return httpx.get(f"{base}/batches/{job_id}", headers=bearer(key), timeout=30).json()


def _wait(base: str, key: str, job_id: str, until: Any, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not until(job := _job(base, key, job_id)):
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    return job


def _check_output(base: str, key: str, job: dict[str, Any]) -> None:
    assert job["status"] == "completed" and job["counts"] == {"total": LINES, "completed": LINES, "failed": 0}
    content = httpx.get(f"{base}/files/{job['outputFileId']}/content", headers=bearer(key), timeout=60).content
    lines = [msgspec.json.decode(line) for line in content.splitlines()]
    assert [line["line"] for line in lines] == list(range(1, LINES + 1))  # every line once, in order
    assert [line["customId"] for line in lines[:3]] == ["0", "1", "2"]


async def _billed(url: str) -> tuple[int, int]:
    async with db_session(url) as session:
        row = (
            await session.execute(select(func.count(), func.sum(UsageRecord.items)).where(UsageRecord.kind == "batch"))
        ).one()
    return int(row[0]), int(row[1] or 0)


def _wait_billed(url: str, timeout: float = 60) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    while (billed := asyncio.run(_billed(url))) != (LINES // CHUNK, LINES) and time.monotonic() < deadline:
        time.sleep(0.2)
    return billed


def _drop_the_database(url: str, seconds: float) -> None:
    """SQLite: hold its write lock for ``seconds``. PostgreSQL: end every other connection to it, twice."""
    if url.startswith("sqlite"):
        connection = sqlite3.connect(url.split("///", 1)[1], isolation_level=None, timeout=10)
        connection.execute("BEGIN EXCLUSIVE")
        time.sleep(seconds)
        connection.rollback()
        connection.close()
        return

    async def terminate() -> None:
        async with db_session(url) as session:
            await session.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )

    for _ in range(2):
        asyncio.run(terminate())
        time.sleep(seconds / 2)


@pytest.mark.slow
def test_a_job_survives_sigkill_of_its_worker_and_the_database_going_away(
    artifact_dir: Path, tmp_path: Path, migrated_url: str
) -> None:
    export_models(artifact_dir, housing.HousingModel())
    key = asyncio.run(new_tenant(migrated_url)).key
    with serve_process(artifact_dir, tmp_path, database_url=migrated_url, env=_env()) as first:
        job_id = _submit(first.base_url, key)
        _wait(first.base_url, key, job_id, lambda j: j["counts"]["completed"] >= 2 * CHUNK)
        os.kill(first.pid, signal.SIGKILL)  # mid-job: its running chunk keeps a lease nobody renews
    with serve_process(artifact_dir, tmp_path, database_url=migrated_url, env=_env()) as second:
        job = _job(second.base_url, key, job_id)
        assert job["status"] == "running" and 0 < job["counts"]["completed"] < LINES
        outage = threading.Thread(target=_drop_the_database, args=(migrated_url, 3.0))
        outage.start()
        outage.join()
        job = _wait(second.base_url, key, job_id, lambda j: j["status"] not in ("validating", "queued", "running"))
        _check_output(second.base_url, key, job)
        # The killed process's journal is replayed by the second; a chunk run twice is billed once.
        assert _wait_billed(migrated_url) == (LINES // CHUNK, LINES)


@pytest.mark.slow
@pytest.mark.postgres
def test_two_server_processes_share_one_job(artifact_dir: Path, tmp_path: Path, migrated_url: str) -> None:
    if not migrated_url.startswith("postgres"):
        pytest.skip("several processes share a job through PostgreSQL (SQLite: one process)")
    export_models(artifact_dir, housing.HousingModel())
    key = asyncio.run(new_tenant(migrated_url)).key
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        serve_process(artifact_dir, tmp_path / "a", database_url=migrated_url, env=_env()) as first,
        serve_process(artifact_dir, tmp_path / "b", database_url=migrated_url, env=_env()) as second,
    ):
        job_id = _submit(first.base_url, key)
        job = _wait(second.base_url, key, job_id, lambda j: j["status"] not in ("validating", "queued", "running"))
        _check_output(first.base_url, key, job)
        assert _wait_billed(migrated_url) == (LINES // CHUNK, LINES)

        async def workers() -> set[str]:
            async with db_session(migrated_url) as session:
                return set(await session.scalars(select(BatchChunk.worker).where(BatchChunk.job_id == job_id)))

        assert {name.rsplit(":", 1)[1] for name in asyncio.run(workers())} == {str(first.pid), str(second.pid)}
