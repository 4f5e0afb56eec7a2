"""The Python client's calls added for later issues, against the real app over real HTTP, both clients: a rollout
(a canary split, a config change, the revision history, rollback, promote, abort), a batch job end to end (upload,
create, wait, the output lines in input order, the error lines), cancel, invoices (JSON and PDF), the usage records
a page at a time, and the keyed POSTs retried after a timeout without doing their work twice."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from cloudeasyml.app import create_app
from cloudeasyml.client import (
    AsyncClient,
    Batch,
    Client,
    ConflictError,
    Deployment,
    File,
    InvalidInputError,
    Invoice,
    NotFoundError,
    TrafficRoute,
)
from cloudeasyml.domain.tenants import NewTenant
from cloudeasyml.settings import BatchSettings, Settings
from tests.support import tiny_model
from tests.support.flaky_front import RefusingFront
from tests.support.live_server import serve_in_thread

NEW = "1.1.0"
"""A second, trained version of the tiny model: its scores are the shipped version's plus ``SHIFT``."""
SHIFT = 10.0
# Generous: the first prediction loads the model on a machine shared with other test runs.
TIMEOUT = 60.0
POINT = {"x": 1.0, "y": 2.0}


@pytest.fixture(name="artifact_dir", scope="module")
def fx_artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's own artifact store, with a second version of the tiny model (kept out of the session's store,
    where other tests expect the tiny model to have one version)."""
    path = tmp_path_factory.mktemp("artifacts-client-rollout")
    tiny_model.seed_graph(path)
    tiny_model.seed_version(path, NEW, SHIFT)
    return path


def _scores(points: list[dict[str, float]], shift: float = 0.0) -> list[float]:
    weights = tiny_model.TinyModel().load_weights()
    array = np.array([[p["x"], p["y"]] for p in points], dtype=np.float32)
    return [float(v) + shift for v in tiny_model.numpy_forward(weights, array)]


def _points(n: int) -> list[dict[str, float]]:
    return [{"x": i / 4, "y": 1.0 - i} for i in range(n)]


def _routes(deployment: Deployment) -> list[tuple[str, int]]:
    return [(r.model_version, r.weight) for r in deployment.traffic]


def test_a_rollout_with_the_client(app, tenant: NewTenant) -> None:
    with serve_in_thread(app) as address, Client(f"http://{address}", tenant.key, timeout=TIMEOUT) as client:
        deployment = client.deployments.create("tiny", name="canary")
        original = deployment.config.max_batch_size
        assert deployment.revision == 1

        # A 10 % canary: Structs and camelCase dicts both make routes.
        split = [TrafficRoute(model_version="1.0.0", weight=90), {"modelVersion": NEW, "weight": 10}]
        canary = client.deployments.update(deployment, traffic=split)
        assert canary.revision == 2 and _routes(canary) == [("1.0.0", 90), (NEW, 10)]
        resized = client.deployments.update(deployment.id, config={"maxBatchSize": 4})
        assert resized.revision == 3 and resized.config.max_batch_size == 4 and _routes(resized) == _routes(canary)
        assert client.deployments.update(deployment, config={"maxBatchSize": 4}).revision == 3  # no change: none

        revisions = client.deployments.revisions(deployment)
        assert [(r.number, r.action, r.current) for r in revisions] == [
            (1, "create", False),
            (2, "update", False),
            (3, "update", True),
        ]
        assert revisions[2].changes["config"]["maxBatchSize"] == {"from": original, "to": 4}
        assert "traffic" in revisions[1].changes and len(revisions[1].traffic) == 2
        assert revisions[0].created_by_key_id == tenant.key_id

        back = client.deployments.rollback(deployment)  # to the one before the current: the canary's config
        assert back.revision == 4 and back.config.max_batch_size == original and _routes(back) == _routes(canary)

        promoted = client.deployments.promote(deployment, NEW)
        assert promoted.revision == 5 and _routes(promoted) == [(NEW, 100)] and promoted.model_version == NEW
        answer = client.deployments.predict(deployment, [POINT])
        assert answer.model_version == NEW
        assert answer.predictions[0]["score"] == pytest.approx(_scores([POINT], SHIFT)[0], abs=1e-4)

        first = client.deployments.rollback(deployment, revision=1)
        assert first.revision == 6 and _routes(first) == [("1.0.0", 100)] and first.config.max_batch_size == original

        client.deployments.update(deployment, traffic=split)
        aborted = client.deployments.abort(deployment, NEW)
        assert aborted.revision == 8 and _routes(aborted) == [("1.0.0", 100)]
        with pytest.raises(InvalidInputError, match="not in the traffic"):  # no route of that version is left
            client.deployments.abort(deployment, NEW)
        assert client.deployments.get(deployment) == aborted
        assert [r.number for r in client.deployments.revisions(deployment) if r.current] == [8]


async def test_a_rollout_with_the_async_client(app, tenant: NewTenant) -> None:
    with serve_in_thread(app) as address:
        async with AsyncClient(f"http://{address}", tenant.key, timeout=TIMEOUT) as client:
            deployment = await client.deployments.create("tiny")
            moved = await client.deployments.update(deployment, model_version=NEW)
            assert moved.revision == 2 and _routes(moved) == [(NEW, 100)]
            answer = await client.predict(deployment, [POINT])
            assert answer.model_version == NEW
            split = [TrafficRoute(model_version=NEW, weight=50), TrafficRoute(model_version="1.0.0", weight=50)]
            assert _routes(await client.deployments.update(deployment, traffic=split)) == [(NEW, 50), ("1.0.0", 50)]
            promoted = await client.deployments.promote(deployment.id, "1.0.0")
            assert _routes(promoted) == [("1.0.0", 100)]
            back = await client.deployments.rollback(deployment)
            assert back.revision == 5 and _routes(back) == [(NEW, 50), ("1.0.0", 50)]
            aborted = await client.deployments.abort(deployment, NEW)
            assert _routes(aborted) == [("1.0.0", 100)]
            revisions = await client.deployments.revisions(deployment)
            assert [r.action for r in revisions] == ["create", "update", "update", "promote", "rollback", "abort"]


def _rows(points: list[dict[str, float]]) -> list[dict[str, Any]]:
    return [{"input": p, "customId": f"row-{i}"} for i, p in enumerate(points)]


def test_a_batch_job_end_to_end_with_the_client(app, tenant: NewTenant, tmp_path: Path) -> None:
    points = _points(7)
    bad = {"input": {"x": "one", "y": 2.0}, "customId": "bad"}
    rows = _rows(points)
    rows.insert(4, bad)  # line 5
    with serve_in_thread(app) as address, Client(f"http://{address}", tenant.key, timeout=TIMEOUT) as client:
        deployment = client.deployments.create("tiny")
        uploaded = client.files.upload(rows, filename="rows.jsonl")
        assert isinstance(uploaded, File) and uploaded.lines == 8 and uploaded.purpose == "batch"
        on_disk = tmp_path / "points.jsonl"
        on_disk.write_bytes(b"".join(msgspec.json.encode(r) + b"\n" for r in _rows(points[:2])))
        from_path = client.files.upload(on_disk)
        assert from_path.filename == "points.jsonl" and from_path.lines == 2
        assert client.files.content(from_path) == on_disk.read_bytes()
        assert client.files.rows(uploaded)[4] == bad

        job = client.batches.create(deployment, uploaded, metadata={"purpose": "test"})
        assert isinstance(job, Batch) and job.metadata == {"purpose": "test"} and not job.done
        done = client.batches.wait(job.id, poll=0.2, timeout=120)
        assert done.status == "completed" and msgspec.structs.astuple(done.counts) == (8, 7, 1)

        output = client.batches.output(done)
        assert [line["customId"] for line in output] == [f"row-{i}" for i in range(7)]  # input order
        assert [line["line"] for line in output] == [1, 2, 3, 4, 6, 7, 8]
        assert [line["output"]["score"] for line in output] == pytest.approx(_scores(points), abs=1e-4)
        errors = client.batches.errors(job.id)
        assert [(e["line"], e["customId"], e["error"]["status"]) for e in errors] == [(5, "bad", 422)]

        assert [b.id for b in client.batches.list()] == [job.id]
        assert client.files.get(done.output_file_id or "").purpose == "batch_output"
        assert {f.id for f in client.files.list(purpose="batch")} == {uploaded.id, from_path.id}
        with pytest.raises(ConflictError):
            client.batches.cancel(done)  # a finished job
        client.files.delete(from_path)
        with pytest.raises(NotFoundError):
            client.files.get(from_path.id)

        usage = client.usage.get()
        assert usage.by_kind["batch"].items == 7


async def test_a_batch_job_end_to_end_with_the_async_client(app, tenant: NewTenant) -> None:
    points = _points(5)
    with serve_in_thread(app) as address:
        async with AsyncClient(f"http://{address}", tenant.key, timeout=TIMEOUT) as client:
            deployment = await client.deployments.create("tiny")
            body = b"".join(msgspec.json.encode({"input": p}) + b"\n" for p in points)
            uploaded = await client.files.upload(body, filename="bytes.jsonl")
            assert uploaded.filename == "bytes.jsonl" and uploaded.lines == 5
            job = await client.batches.create(deployment.id, uploaded.id, completion_window="1h")
            done = await client.batches.wait(job, poll=0.2, timeout=120)
            assert done.status == "completed" and done.counts.completed == 5 and done.error_file_id is None
            output = await client.batches.output(job.id)
            assert [line["line"] for line in output] == [1, 2, 3, 4, 5]
            assert [line["output"]["score"] for line in output] == pytest.approx(_scores(points), abs=1e-4)
            assert await client.batches.errors(done) == []
            assert (await client.batches.get(job.id)).output_file_id == done.output_file_id
            assert [f.id for f in await client.files.list(purpose="batch_output")] == [done.output_file_id]


@pytest.fixture(name="idle_app")
def fx_idle_app(settings: Settings, plugin_manager):  # type: ignore[no-untyped-def]
    """The app with no batch workers: a job stays where the test leaves it."""
    batch = BatchSettings(workers=0, poll_interval_seconds=0.05)
    return create_app(msgspec.structs.replace(settings, batch=batch), plugin_manager)


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_cancel_and_a_wait_that_times_out(idle_app, tenant: NewTenant, flavour: str) -> None:
    rows = _rows(_points(3))
    with serve_in_thread(idle_app) as address:
        if flavour == "sync":
            with Client(f"http://{address}", tenant.key, timeout=TIMEOUT) as client:
                job = client.batches.create(client.deployments.create("tiny"), client.files.upload(rows))
                cancelled = client.batches.cancel(job)
                assert cancelled.status == "cancelling" and cancelled.cancelled_at is not None
                assert client.batches.cancel(job.id).status == "cancelling"  # again: the same
                with pytest.raises(ValueError, match="once it has ended"):
                    client.batches.output(job)  # no output while it has not ended
                started = time.monotonic()
                with pytest.raises(TimeoutError, match="cancelling"):
                    client.batches.wait(job, poll=0.1, timeout=0.5)
        else:
            async with AsyncClient(f"http://{address}", tenant.key, timeout=TIMEOUT) as aclient:
                deployment = await aclient.deployments.create("tiny")
                job = await aclient.batches.create(deployment, await aclient.files.upload(rows))
                assert (await aclient.batches.cancel(job)).status == "cancelling"
                started = time.monotonic()
                with pytest.raises(TimeoutError, match="cancelling"):
                    await aclient.batches.wait(job.id, poll=0.1, timeout=0.5)
    assert time.monotonic() - started < 30  # it gave up near its timeout, not never


def test_invoices_and_usage_records_with_the_client(app, tenant: NewTenant) -> None:
    month = datetime.now(UTC).strftime("%Y-%m")
    with serve_in_thread(app) as address, Client(f"http://{address}", tenant.key, timeout=TIMEOUT) as client:
        assert client.invoices.list() == []
        deployment = client.deployments.create("tiny")
        for point in _points(3):
            client.predict(deployment, [point, point])
        # The meter flushes usage to the database in the background: wait until all three requests are there.
        deadline = time.monotonic() + 60
        while client.usage.get().total_requests < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        usage = client.usage.get()

        summaries = client.invoices.list()
        assert [(s.month, s.requests, s.total) for s in summaries] == [(month, 3, usage.total_cost)]
        invoice = client.invoices.get(month)
        assert isinstance(invoice, Invoice) and invoice.status == "open" and invoice.issued_at is None
        assert invoice.total == usage.total_cost and invoice.tenant_id == tenant.tenant.id
        [line] = invoice.lines
        assert (line.model, line.kind, line.requests, line.items) == ("tiny", "online", 3, 6)
        assert line.unit_prices is not None and line.amount == invoice.subtotal
        assert client.invoices.pdf(month).startswith(b"%PDF-")
        with pytest.raises(NotFoundError):
            client.invoices.get("2999-01")

        pages = [client.usage.records(limit=2)]
        while pages[-1].next_cursor is not None:
            pages.append(client.usage.records(limit=2, cursor=pages[-1].next_cursor))
        assert [len(p.records) for p in pages] == [2, 1]
        every = list(client.usage.iter_records(limit=2, deployment=deployment))
        assert every == [r for p in pages for r in p.records]
        assert [r.items for r in every] == [2, 2, 2] and sum(r.cost for r in every) == usage.total_cost
        assert list(client.usage.iter_records(model="no-such-model")) == []


async def test_invoices_and_usage_records_with_the_async_client(app, tenant: NewTenant) -> None:
    with serve_in_thread(app) as address:
        async with AsyncClient(f"http://{address}", tenant.key, timeout=TIMEOUT) as client:
            deployment = await client.deployments.create("tiny")
            await client.predict(deployment, [POINT])
            deadline = time.monotonic() + 60
            while (await client.usage.get()).total_requests < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            [summary] = await client.invoices.list()
            invoice = await client.invoices.get(summary.month)
            assert invoice.total == summary.total and [line.requests for line in invoice.lines] == [1]
            assert (await client.invoices.pdf(summary.month)).startswith(b"%PDF-")
            records = [r async for r in client.usage.iter_records(limit=1)]
            assert len(records) == 1 and records[0].deployment_id == deployment.id


def _keyed_posts(*paths: str) -> Any:
    return lambda method, path: method == "POST" and path in paths


def test_keyed_posts_retried_after_a_timeout_do_their_work_once(app, tenant: NewTenant) -> None:
    with serve_in_thread(app) as address, Client(f"http://{address}", tenant.key, timeout=TIMEOUT) as setup:
        deployment = setup.deployments.create("tiny")
        setup.deployments.update(deployment, config={"maxBatchSize": 4})  # revision 2
    # The first attempt of each keyed POST is held past the client's timeout and then runs; the retry, with the
    # same Idempotency-Key, gets the one answer.
    front = RefusingFront(app, times=1, stall_seconds=3.0, matches=_keyed_posts("/files"))
    with serve_in_thread(front) as address, Client(f"http://{address}", tenant.key, timeout=1.5) as client:
        uploaded = client.files.upload(_rows(_points(2)))
        front.matches, front.times = _keyed_posts("/batches"), 1
        job = client.batches.create(deployment, uploaded)
        front.matches, front.times = _keyed_posts(f"/deployments/{deployment.id}/rollback"), 1
        back = client.deployments.rollback(deployment)
        time.sleep(4.0)  # every held first attempt has reached the app and been answered
        attempts = [s for s in front.seen if s.method == "POST"]
        assert [s.path for s in attempts] == [
            "/files",
            "/files",
            "/batches",
            "/batches",
            f"/deployments/{deployment.id}/rollback",
            f"/deployments/{deployment.id}/rollback",
        ]
        assert [f.id for f in client.files.list(purpose="batch")] == [uploaded.id]  # stored once
        assert [b.id for b in client.batches.list()] == [job.id]  # one job
        # One rollback (to revision 1), not two (the second would have gone back to revision 2's config).
        assert back.revision == 3 and client.deployments.get(deployment).revision == 3
        for first, retry in zip(attempts[::2], attempts[1::2], strict=True):
            assert first.headers["idempotency-key"] == retry.headers["idempotency-key"]


def test_the_readmes_rollout_and_batch_example_runs(app, tenant: NewTenant, capsys: pytest.CaptureFixture[str]) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("\n## Python client\n", 1)[1].split("\n## ", 1)[0]
    example = section.split("```python\n")[2].split("```", 1)[0]  # the second example: after the tour
    example = example.replace('"2026-11"', repr(datetime.now(UTC).strftime("%Y-%m")))
    with serve_in_thread(app) as address, Client(f"http://{address}", tenant.key, timeout=TIMEOUT) as client:
        deployment = client.deployments.create("tiny")
        names = {"client": client, "deployment": deployment, "NEW": NEW, "inputs": _points(3)}
        exec(example, names)  # our own README, run as written
        assert _routes(client.deployments.get(deployment)) == [(NEW, 100)]
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "[(1, 'create', False), (2, 'update', True)]"
    assert [line.split(" ", 1)[0] for line in printed[1:4]] == ["0", "1", "2"]
    assert printed[4].startswith("open ") and Decimal(printed[5]) > 0
