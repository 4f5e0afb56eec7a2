"""Batch inference through the real app: files uploaded over HTTP, jobs run by the app's batch workers through the
one data plane (real onnxruntime sessions), output in input order, failed lines in the error file, each chunk
billed once at the batch price, cancel, resume after a lost lease, round-robin between tenants, quota pauses."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select, update

from cloudeasyml.app import create_app
from cloudeasyml.core.clock import utc_now
from cloudeasyml.db.models import BatchChunk, BatchFile, BatchJob, UsageRecord, WebhookEvent
from cloudeasyml.domain.batch import queue
from cloudeasyml.domain.tenants import NewTenant, set_caps
from cloudeasyml.settings import BatchSettings, Settings
from tests.conftest import bearer, db_session, new_tenant
from tests.integration.test_predict import deploy
from tests.support.live_server import serve_in_thread
from tests.support.tiny_model import numpy_forward, tiny_weights

CHUNK = 3


@pytest.fixture(name="batch_settings")
def fx_batch_settings(settings: Settings) -> Settings:
    """No workers of their own: each test runs chunks one at a time (``run_once``), so the order is its to see."""
    batch = BatchSettings(chunk_lines=CHUNK, workers=0, poll_interval_seconds=0.05, lease_seconds=30)
    return msgspec.structs.replace(settings, batch=batch)


@pytest.fixture(name="bclient")
async def fx_bclient(batch_settings: Settings, plugin_manager):  # type: ignore[no-untyped-def]
    app = create_app(batch_settings, plugin_manager)
    async with AsyncTestClient(app=app) as client:
        yield client


class _OnAppLoop:
    """The app's batch worker, its calls run on the app's event loop (the test client's portal thread), where its
    database connections live (asyncpg's cannot leave their loop)."""

    def __init__(self, client: AsyncTestClient[Any]) -> None:
        self._client = client
        self.worker = client.app.state.services.batches

    async def call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(self._client.blocking_portal.call, fn, *args)

    async def run_once(self) -> bool:
        return await self.call(self.worker.run_once)


def _worker(client: AsyncTestClient[Any]) -> _OnAppLoop:
    return _OnAppLoop(client)


def _points(n: int) -> list[dict[str, float]]:
    return [{"x": float(i) / 3, "y": 1.0 - i} for i in range(n)]


def _jsonl(rows: list[Any]) -> bytes:
    return b"".join(msgspec.json.encode(row) + b"\n" for row in rows)


async def _upload(client: AsyncTestClient[Any], key: str, body: bytes, **params: str) -> dict[str, Any]:
    response = await client.post(
        "/files", content=body, headers={**bearer(key), "Content-Type": "application/jsonl"}, params=params
    )
    assert response.status_code == 201, response.text
    return response.json()


async def _submit(client: AsyncTestClient[Any], key: str, deployment: dict[str, Any], body: bytes) -> dict[str, Any]:
    file = await _upload(client, key, body)
    response = await client.post(
        "/batches", json={"deploymentId": deployment["id"], "inputFileId": file["id"]}, headers=bearer(key)
    )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "validating"
    assert await _worker(client).run_once()  # a worker checks its lines first
    return await _get(client, key, response.json()["id"])


async def _run_all(client: AsyncTestClient[Any], limit: int = 100) -> int:
    """Run chunks until none is left; how many ran."""
    ran = 0
    while await _worker(client).run_once():
        ran += 1
        assert ran < limit
    return ran


async def _get(client: AsyncTestClient[Any], key: str, batch_id: str) -> dict[str, Any]:
    response = await client.get(f"/batches/{batch_id}", headers=bearer(key))
    assert response.status_code == 200, response.text
    return response.json()


async def _lines(client: AsyncTestClient[Any], key: str, file_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/files/{file_id}/content", headers=bearer(key))
    assert response.status_code == 200, response.text
    return [msgspec.json.decode(line) for line in response.content.splitlines()]


async def test_a_job_completes_in_input_order_with_failed_lines_in_the_error_file(
    bclient, tenant: NewTenant, migrated_url: str
) -> None:
    deployment = await deploy(bclient, tenant.key)
    points = _points(10)
    rows: list[Any] = [{"input": p, "customId": f"row-{i}"} for i, p in enumerate(points)]
    body = (
        _jsonl(rows[:4])
        + b"\n"
        + b"{not json\n"
        + _jsonl([{"input": {"x": "a"}, "customId": "bad"}])
        + _jsonl(rows[4:])
    )
    job = await _submit(bclient, tenant.key, deployment, body)
    assert job["status"] == "queued" and job["counts"] == {"total": 12, "completed": 0, "failed": 0}
    assert await _run_all(bclient) == 5  # 14 physical lines in chunks of 3
    job = await _get(bclient, tenant.key, job["id"])
    assert job["status"] == "completed" and job["counts"] == {"total": 12, "completed": 10, "failed": 2}
    assert job["finishedAt"] and job["startedAt"]

    output = await _lines(bclient, tenant.key, job["outputFileId"])
    assert [line["customId"] for line in output] == [f"row-{i}" for i in range(10)]
    assert [line["line"] for line in output] == [1, 2, 3, 4, *range(8, 14)]  # 5 blank, 6 and 7 failed
    expected = numpy_forward(tiny_weights(), np.array([[p["x"], p["y"]] for p in points], dtype=np.float32))
    assert np.allclose([line["output"]["score"] for line in output], expected, atol=1e-5)

    errors = await _lines(bclient, tenant.key, job["errorFileId"])
    assert [(e["line"], e["customId"], e["error"]["status"]) for e in errors] == [(6, None, 400), (7, "bad", 422)]
    assert "x" in errors[1]["error"]["detail"]

    # Every item billed once, per chunk, as batch usage at half the online price of the same work.
    usage = (await bclient.get("/usage", headers=bearer(tenant.key))).json()
    batch = usage["byKind"]["batch"]
    assert batch["items"] == 10 and "online" not in usage["byKind"]
    async with db_session(migrated_url) as session:
        records = (await session.execute(select(UsageRecord).where(UsageRecord.kind == "batch"))).scalars().all()
        events = (await session.execute(select(WebhookEvent.type))).scalars().all()
    online_price = (
        Decimal("0.001") * 10 + Decimal("0.5") * sum(Decimal(repr(round(r.processing_ms, 3))) for r in records) / 1000
    )
    assert sum(r.cost for r in records) == (online_price / 2).quantize(Decimal("1e-10"))
    assert "batch.completed" in events


async def test_a_chunk_run_twice_is_billed_and_written_once(bclient, tenant: NewTenant, migrated_url: str) -> None:
    deployment = await deploy(bclient, tenant.key)
    job = await _submit(bclient, tenant.key, deployment, _jsonl([{"input": p} for p in _points(7)]))
    on_app = _worker(bclient)
    worker = on_app.worker

    async def claim() -> queue.Claim | None:
        async with worker._sessions() as session:
            return await queue.claim(session, timedelta(seconds=30))

    held = await on_app.call(claim)
    assert held is not None and held.index == 0
    await on_app.call(worker.runner.run, held)  # a worker ran it, journaled its usage, then died before its checkpoint
    await on_app.call(worker.runner.run, held)  # and its successor runs it again
    await on_app.call(bclient.app.state.services.meter.flush)
    async with db_session(migrated_url) as session:
        assert await session.scalar(select(func.count()).select_from(UsageRecord)) == 1
    # The dead worker's lease runs out: the chunk is claimed again (a new attempt) and the job finishes whole.
    async with db_session(migrated_url) as session:
        await session.execute(
            update(BatchChunk).where(BatchChunk.job_id == held.job_id).values(lease_until=utc_now() - timedelta(1))
        )
    await _run_all(bclient)
    await on_app.call(bclient.app.state.services.meter.flush)
    job = await _get(bclient, tenant.key, job["id"])
    assert job["status"] == "completed" and job["counts"]["completed"] == 7
    output = await _lines(bclient, tenant.key, job["outputFileId"])
    assert [line["line"] for line in output] == list(range(1, 8))
    async with db_session(migrated_url) as session:
        assert await session.scalar(select(func.count()).select_from(UsageRecord)) == 3  # one per chunk


async def test_a_cancelled_job_keeps_and_bills_what_finished(bclient, tenant: NewTenant, migrated_url: str) -> None:
    deployment = await deploy(bclient, tenant.key)
    job = await _submit(bclient, tenant.key, deployment, _jsonl([{"input": p} for p in _points(9)]))
    assert await _worker(bclient).run_once()
    response = await bclient.post(f"/batches/{job['id']}/cancel", headers=bearer(tenant.key))
    assert response.status_code == 200 and response.json()["status"] == "cancelling"
    assert not await _worker(bclient).run_once()  # nothing more starts; the sweep ends it
    job = await _get(bclient, tenant.key, job["id"])
    assert job["status"] == "cancelled" and job["counts"] == {"total": 9, "completed": 3, "failed": 0}
    assert [line["line"] for line in await _lines(bclient, tenant.key, job["outputFileId"])] == [1, 2, 3]
    usage = (await bclient.get("/usage", headers=bearer(tenant.key))).json()
    assert usage["byKind"]["batch"]["items"] == 3
    again = await bclient.post(f"/batches/{job['id']}/cancel", headers=bearer(tenant.key))
    assert again.status_code == 200 and again.json()["status"] == "cancelled"


async def test_a_small_job_of_another_tenant_is_not_starved(bclient, tenant: NewTenant, migrated_url: str) -> None:
    other = await new_tenant(migrated_url, "small-tenant")
    big = await _submit(
        bclient, tenant.key, await deploy(bclient, tenant.key), _jsonl([{"input": p} for p in _points(60)])
    )
    assert await _worker(bclient).run_once()  # the big job has started
    small = await _submit(
        bclient, other.key, await deploy(bclient, other.key), _jsonl([{"input": p} for p in _points(2)])
    )
    assert await _worker(bclient).run_once()
    assert (await _get(bclient, other.key, small["id"]))["status"] == "completed"  # its one chunk ran next
    assert (await _get(bclient, tenant.key, big["id"]))["counts"]["completed"] == 3


async def test_a_job_past_the_request_cap_pauses_instead_of_failing_lines(
    bclient, tenant: NewTenant, migrated_url: str
) -> None:
    deployment = await deploy(bclient, tenant.key)
    async with db_session(migrated_url) as session:
        await set_caps(session, tenant.tenant.name, request_cap=0)
    await asyncio.sleep(0)
    job = await _submit(bclient, tenant.key, deployment, _jsonl([{"input": p} for p in _points(4)]))
    assert await _worker(bclient).run_once()
    job = await _get(bclient, tenant.key, job["id"])
    assert job["status"] == "running" and job["counts"]["failed"] == 0
    assert job["pausedUntil"] and "paused" in job["message"] and "cap" in job["message"]
    assert not await _worker(bclient).run_once()  # paused: no chunk is claimed


async def test_files_are_the_tenants_own_and_bounded(
    batch_settings: Settings, plugin_manager, tenant: NewTenant, other_tenant: NewTenant
) -> None:
    body = _jsonl([{"input": p} for p in _points(5)])
    most = 2 * len(body) + 10
    small = msgspec.structs.replace(
        batch_settings,
        batch=msgspec.structs.replace(batch_settings.batch, max_file_bytes=most, tenant_storage_bytes=3 * len(body)),
    )
    async with AsyncTestClient(app=create_app(small, plugin_manager)) as client:
        file = await _upload(client, tenant.key, body, filename="points.jsonl")
        assert file["filename"] == "points.jsonl" and file["bytes"] == len(body) and file["lines"] == 5
        listed = (await client.get("/files", headers=bearer(tenant.key))).json()
        assert [f["id"] for f in listed] == [file["id"]]
        assert (await client.get(f"/files/{file['id']}", headers=bearer(other_tenant.key))).status_code == 404
        assert (await client.get(f"/files/{file['id']}/content", headers=bearer(other_tenant.key))).status_code == 404
        assert (await client.get(f"/files/{file['id']}/content", headers=bearer(tenant.key))).content == body
        # Multipart, as the openai client sends it.
        multipart = await client.post(
            "/files", files={"file": ("m.jsonl", body, "application/jsonl")}, headers=bearer(tenant.key)
        )
        assert multipart.status_code == 201 and multipart.json()["filename"] == "m.jsonl"
        too_big = await client.post(
            "/files", content=b"x" * (most + 1), headers={**bearer(tenant.key), "Content-Type": "application/jsonl"}
        )
        assert too_big.status_code == 413
        over_quota = await client.post(
            "/files", content=body * 2, headers={**bearer(tenant.key), "Content-Type": "application/jsonl"}
        )
        assert over_quota.status_code == 409 and "quota" in over_quota.json()["detail"]
        assert (await client.delete(f"/files/{file['id']}", headers=bearer(other_tenant.key))).status_code == 404
        assert (await client.delete(f"/files/{file['id']}", headers=bearer(tenant.key))).status_code == 204
        assert (await client.get(f"/files/{file['id']}", headers=bearer(tenant.key))).status_code == 404


async def test_a_job_past_its_window_expires_and_expired_files_are_deleted(
    bclient, tenant: NewTenant, migrated_url: str, batch_settings: Settings
) -> None:
    deployment = await deploy(bclient, tenant.key)
    file = await _upload(bclient, tenant.key, _jsonl([{"input": p} for p in _points(7)]))
    response = await bclient.post(
        "/batches",
        json={"deploymentId": deployment["id"], "inputFileId": file["id"], "completionWindow": "1h"},
        headers=bearer(tenant.key),
    )
    assert response.status_code == 201, response.text
    job = response.json()
    too_long = await bclient.post(
        "/batches",
        json={"deploymentId": deployment["id"], "inputFileId": file["id"], "completionWindow": "25h"},
        headers=bearer(tenant.key),
    )
    assert too_long.status_code == 422
    assert await _worker(bclient).run_once()  # its lines checked
    assert await _worker(bclient).run_once()  # one chunk done in time
    async with db_session(migrated_url) as session:
        await session.execute(
            update(BatchJob).where(BatchJob.id == job["id"]).values(expires_at=utc_now() - timedelta(seconds=1))
        )
        await session.execute(
            update(BatchFile).where(BatchFile.id == file["id"]).values(expires_at=utc_now() - timedelta(seconds=1))
        )
    assert not await _worker(bclient).run_once()  # nothing claimable: the sweep ends the job, deletes the file
    job = await _get(bclient, tenant.key, job["id"])
    assert job["status"] == "expired" and job["counts"]["completed"] == CHUNK
    assert [line["line"] for line in await _lines(bclient, tenant.key, job["outputFileId"])] == [1, 2, 3]
    assert (await bclient.get(f"/files/{file['id']}", headers=bearer(tenant.key))).status_code == 404
    stored = Path(batch_settings.runtime.artifact_dir) / "files" / str(tenant.tenant.id) / f"{file['id']}.jsonl"
    assert not stored.exists()


async def test_a_job_is_validating_until_its_lines_are_checked_and_fails_when_none_is_valid(
    bclient, tenant: NewTenant, migrated_url: str
) -> None:
    deployment = await deploy(bclient, tenant.key)
    body = b'{not json\n{"input": {"x": "a"}, "customId": "bad"}\n\n{"customId": "no-input"}\n' + b"[1, 2]\n"
    file = await _upload(bclient, tenant.key, body)
    created = await bclient.post(
        "/batches", json={"deploymentId": deployment["id"], "inputFileId": file["id"]}, headers=bearer(tenant.key)
    )
    assert created.status_code == 201 and created.json()["status"] == "validating"
    job_id = created.json()["id"]
    on_app = _worker(bclient)

    # A checker that dies mid-check holds the job until its lease runs out; then another checks it.
    async def claim_check() -> queue.Validation | None:
        async with on_app.worker._sessions() as session:
            return await queue.claim_validation(session, timedelta(seconds=30))

    assert await on_app.call(claim_check) is not None
    assert not await on_app.run_once()  # held by the dead checker: no chunk of a validating job is claimable
    assert (await _get(bclient, tenant.key, job_id))["status"] == "validating"
    async with db_session(migrated_url) as session:
        await session.execute(
            update(BatchJob).where(BatchJob.id == job_id).values(last_claimed_at=utc_now() - timedelta(minutes=1))
        )

    assert await on_app.run_once()
    job = await _get(bclient, tenant.key, job_id)
    assert job["status"] == "failed" and job["counts"] == {"total": 4, "completed": 0, "failed": 4}
    assert "no valid line" in job["message"] and "4 malformed" in job["message"] and "line 1" in job["message"]
    assert job["outputFileId"] and job["finishedAt"]
    errors = await _lines(bclient, tenant.key, job["errorFileId"])
    assert [(e["line"], e["customId"]) for e in errors] == [(1, None), (2, "bad"), (4, "no-input"), (5, None)]
    assert await _run_all(bclient) == 0  # nothing left to run
    async with db_session(migrated_url) as session:
        assert await session.scalar(select(func.count()).select_from(UsageRecord)) == 0
        events = (await session.execute(select(WebhookEvent.type))).scalars().all()
    assert "batch.failed" in events


async def test_a_job_cancelled_while_validating_is_cancelled(bclient, tenant: NewTenant) -> None:
    deployment = await deploy(bclient, tenant.key)
    file = await _upload(bclient, tenant.key, _jsonl([{"input": p} for p in _points(4)]))
    created = await bclient.post(
        "/batches", json={"deploymentId": deployment["id"], "inputFileId": file["id"]}, headers=bearer(tenant.key)
    )
    job_id = created.json()["id"]
    cancelled = await bclient.post(f"/batches/{job_id}/cancel", headers=bearer(tenant.key))
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelling"
    assert not await _worker(bclient).run_once()  # not checked, nothing run: the sweep ends it
    job = await _get(bclient, tenant.key, job_id)
    assert job["status"] == "cancelled" and job["counts"] == {"total": 4, "completed": 0, "failed": 0}


def test_concurrent_uploads_cannot_pass_the_storage_quota_together(
    batch_settings: Settings, plugin_manager, tenant: NewTenant, migrated_url: str
) -> None:
    body = _jsonl([{"input": p} for p in _points(200)])
    quota = 2 * len(body) + len(body) // 2  # room for two uploads, not three
    small = msgspec.structs.replace(
        batch_settings, batch=msgspec.structs.replace(batch_settings.batch, tenant_storage_bytes=quota)
    )
    headers = {**bearer(tenant.key), "Content-Type": "application/jsonl"}

    async def round_of_uploads(base: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            return list(await asyncio.gather(*(client.post("/files", content=body, headers=headers) for _ in range(8))))

    async def stored() -> int:
        async with db_session(migrated_url) as session:
            query = select(func.coalesce(func.sum(BatchFile.bytes), 0)).where(BatchFile.tenant_id == tenant.tenant.id)
            return int(await session.scalar(query) or 0)

    with serve_in_thread(create_app(small, plugin_manager)) as address:
        base = f"http://{address}"
        for _ in range(3):  # each round: eight uploads at once, after the files of the round before are deleted
            answers = asyncio.run(round_of_uploads(base))
            statuses = sorted(answer.status_code for answer in answers)
            assert statuses == [201, 201, 409, 409, 409, 409, 409, 409], [a.text[:200] for a in answers]
            assert asyncio.run(stored()) == 2 * len(body) <= quota
            for answer in answers:
                if answer.status_code == 201:
                    deleted = httpx.delete(f"{base}/files/{answer.json()['id']}", headers=bearer(tenant.key))
                    assert deleted.status_code == 204


async def test_a_job_pauses_before_the_chunk_that_would_cross_the_spend_cap(
    batch_settings: Settings, plugin_manager, tenant: NewTenant, migrated_url: str
) -> None:
    quick = msgspec.structs.replace(  # caps read again after 50 ms, so the cap set below applies at once
        batch_settings, quota=msgspec.structs.replace(batch_settings.quota, refresh_seconds=0.05)
    )
    async with AsyncTestClient(app=create_app(quick, plugin_manager)) as client:
        deployment = await deploy(client, tenant.key)
        async with db_session(migrated_url) as session:
            await set_caps(session, tenant.tenant.name, spend_cap=Decimal(1))
        job = await _submit(client, tenant.key, deployment, _jsonl([{"input": p} for p in _points(12)]))
        assert await _worker(client).run_once()
        assert await _worker(client).run_once()
        await _worker(client).call(client.app.state.services.meter.flush)

        async def spent() -> tuple[Decimal, int]:
            async with db_session(migrated_url) as session:
                row = (
                    await session.execute(
                        select(func.sum(UsageRecord.cost), func.count()).where(
                            UsageRecord.tenant_id == tenant.tenant.id
                        )
                    )
                ).one()
            return row[0], row[1]

        # A chunk of 3 lines costs 3 x 0.0005 at the batch price, plus its processing time. What is left under the
        # cap now is more than the online minimum price (0.001, all a chunk used to hold: the third chunk ran and
        # the spend passed the cap) and less than the third chunk's price.
        two_chunks, _ = await spent()
        cap = two_chunks + Decimal("0.00125")
        async with db_session(migrated_url) as session:
            await set_caps(session, tenant.tenant.name, spend_cap=cap)
        await asyncio.sleep(0.1)
        assert await _worker(client).run_once()  # the third chunk: refused before it runs, the job pauses
        job = await _get(client, tenant.key, job["id"])
        assert job["status"] == "running" and job["counts"] == {"total": 12, "completed": 6, "failed": 0}
        assert job["pausedUntil"] and "spend cap" in job["message"] and "next chunk" in job["message"]
        assert not await _worker(client).run_once()  # paused: no chunk is claimed
        await _worker(client).call(client.app.state.services.meter.flush)
        assert await spent() == (two_chunks, 2)


async def test_a_suspended_tenants_jobs_wait_until_it_is_resumed(bclient, tenant: NewTenant, migrated_url: str) -> None:
    from tests.integration.test_operator_api import operator_key

    deployment = await deploy(bclient, tenant.key)
    job = await _submit(bclient, tenant.key, deployment, _jsonl([{"input": p} for p in _points(4)]))
    ops = bearer(await operator_key(migrated_url))
    assert (await bclient.post(f"/operator/tenants/{tenant.tenant.id}/suspend", headers=ops)).status_code == 200
    assert not await _worker(bclient).run_once()  # no chunk of it is claimed
    assert (await bclient.post(f"/operator/tenants/{tenant.tenant.id}/resume", headers=ops)).status_code == 200
    assert await _run_all(bclient) == 2
    assert (await _get(bclient, tenant.key, job["id"]))["status"] == "completed"
