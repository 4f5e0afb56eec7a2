"""`/v1/files` and `/v1/batches` answer the stock `openai` client: a batch of embeddings requests runs on the app's
own workers and its output equals `/v1/embeddings`, line for line, in input order."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import numpy as np
import pytest

from cloudeasyml.app import create_app
from cloudeasyml.settings import BatchSettings, Settings
from tests.conftest import bearer
from tests.support.live_server import serve_in_thread

minilm = pytest.importorskip("cloudeasyml_minilm")
openai = pytest.importorskip("openai")

TEXTS = [f"Sentence number {i} is about {topic}." for i, topic in enumerate(["cats", "stocks", "rain"] * 4)]


@pytest.fixture(name="server")
def fx_server(settings: Settings, plugin_manager, database_url) -> Iterator[str]:  # type: ignore[no-untyped-def]
    if "postgres" in database_url:
        pytest.skip("the same files, jobs and workers as /batches, tested on PostgreSQL there: SQLite is enough")
    plugin_manager.register(minilm, name="minilm")
    batch = BatchSettings(chunk_lines=4, poll_interval_seconds=0.05)
    with serve_in_thread(create_app(msgspec.structs.replace(settings, batch=batch), plugin_manager)) as address:
        yield address


def _wait(client, batch_id: str, *statuses: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 120
    while (batch := client.batches.retrieve(batch_id)).status not in statuses:
        assert time.monotonic() < deadline, batch
        time.sleep(0.1)
    return batch


def test_the_openai_client_runs_a_batch_of_embeddings(server: str, tenant, tmp_path: Path) -> None:
    base = f"http://{server}"
    created = httpx.post(
        f"{base}/deployments", json={"modelName": "minilm", "name": "embed"}, headers=bearer(tenant.key)
    )
    assert created.status_code == 201, created.text
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=tenant.key, max_retries=0)
    requests = [
        {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/embeddings", "body": {"model": "embed", "input": text}}
        for i, text in enumerate(TEXTS)
    ]
    requests.insert(
        5,
        {
            "custom_id": "wrong-model",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "other", "input": "x"},
        },
    )
    path = tmp_path / "requests.jsonl"
    path.write_bytes(b"".join(msgspec.json.encode(r) + b"\n" for r in requests))
    with path.open("rb") as handle:
        file = client.files.create(file=handle, purpose="batch")
    assert file.purpose == "batch" and file.bytes == path.stat().st_size and file.filename == "requests.jsonl"

    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/embeddings", completion_window="24h")
    assert batch.status in ("validating", "in_progress") and batch.request_counts.total == len(requests)
    batch = _wait(client, batch.id, "completed", "failed")
    assert batch.status == "completed" and batch.completed_at and batch.output_file_id and batch.error_file_id
    assert (batch.request_counts.completed, batch.request_counts.failed) == (len(TEXTS), 1)

    output = [msgspec.json.decode(line) for line in client.files.content(batch.output_file_id).content.splitlines()]
    assert [line["custom_id"] for line in output] == [f"req-{i}" for i in range(len(TEXTS))]
    online = client.embeddings.create(model="embed", input=TEXTS, encoding_format="float")
    for line, expected in zip(output, online.data, strict=True):
        assert line["response"]["status_code"] == 200 and line["error"] is None
        body = line["response"]["body"]
        assert body["object"] == "list" and body["model"] == "embed" and body["usage"]["prompt_tokens"] > 0
        assert np.allclose(body["data"][0]["embedding"], expected.embedding, atol=1e-5)
    errors = [msgspec.json.decode(line) for line in client.files.content(batch.error_file_id).content.splitlines()]
    assert [e["custom_id"] for e in errors] == ["wrong-model"]
    assert errors[0]["response"]["status_code"] == 400 and "other" in errors[0]["response"]["body"]["error"]["message"]

    # Batch usage is billed apart from the online request above, at half its price per item.
    usage = httpx.get(f"{base}/usage", headers=bearer(tenant.key)).json()
    assert usage["byKind"]["batch"]["items"] == len(TEXTS) and usage["byKind"]["online"]["items"] == len(TEXTS)

    # Cancel: a second batch stops; what finished stays in its output.
    with path.open("rb") as handle:
        second = client.files.create(file=handle, purpose="batch")
    running = client.batches.create(input_file_id=second.id, endpoint="/v1/embeddings", completion_window="24h")
    cancelled = client.batches.cancel(running.id)
    assert cancelled.status in ("cancelling", "cancelled")
    cancelled = _wait(client, running.id, "cancelled")
    assert cancelled.cancelled_at and cancelled.request_counts.completed < len(TEXTS)

    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")
