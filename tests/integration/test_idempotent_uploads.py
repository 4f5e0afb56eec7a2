"""A keyed file upload larger than the request limit (10 MiB): the edge spools it to disk while hashing it, so the
upload runs once and a retry with its key gets the first answer, through a real server; the platform's client sends
every upload keyed and retries one whose answer was lost, storing the file once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest

from cloudeasyml.app import create_app
from cloudeasyml.client import Client, RetryPolicy
from cloudeasyml.db.models import BatchFile, IdempotencyRecord
from cloudeasyml.domain.tenants import NewTenant
from cloudeasyml.settings import BatchSettings, Settings
from tests.conftest import bearer
from tests.integration.test_idempotency import count
from tests.support.live_server import serve_in_thread

FILE_LIMIT = 16 * 1024 * 1024
"""The batch file limit here (200 MiB by default): past the request limit of 10 MiB, and quick to send."""
LINE = b'{"input": {"x": 1.0, "y": 2.0}, "customId": "%08d"}\n'


def _jsonl(size: int, salt: int = 0) -> bytes:
    """Valid JSON Lines of about ``size`` bytes (distinct per ``salt``)."""
    lines = size // len(LINE % 0)
    return b"".join(LINE % (salt * 10_000_000 + n) for n in range(lines))


@pytest.fixture(name="server")
def fx_server(settings: Settings, plugin_manager) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The app under uvicorn, with a batch file limit of 16 MiB."""
    settings = msgspec.structs.replace(settings, batch=BatchSettings(max_file_bytes=FILE_LIMIT))
    with serve_in_thread(create_app(settings, plugin_manager)) as address:
        yield address


def _upload(server: str, tenant: NewTenant, key: str, body: bytes) -> httpx.Response:
    headers = {**bearer(tenant.key), "Idempotency-Key": key, "Content-Type": "application/jsonl"}
    return httpx.post(
        f"http://{server}/files", params={"filename": "big.jsonl"}, content=body, headers=headers, timeout=60
    )


async def test_a_keyed_upload_past_the_request_limit_runs_once_and_is_replayed(
    server: str, tenant: NewTenant, migrated_url: str
) -> None:
    body = _jsonl(12 * 1024 * 1024)
    assert 10 * 1024 * 1024 < len(body) < FILE_LIMIT
    first = _upload(server, tenant, "upload-1", body)
    assert first.status_code == 201, first.text
    assert first.json()["bytes"] == len(body) and "idempotent-replayed" not in first.headers
    again = _upload(server, tenant, "upload-1", body)
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    other = _upload(server, tenant, "upload-1", _jsonl(12 * 1024 * 1024, salt=1))
    assert other.status_code == 409, other.text  # the same key with another body
    assert await count(migrated_url, BatchFile, tenant_id=tenant.tenant.id) == 1


async def test_multipart_uploads_are_keyed_too(server: str, tenant: NewTenant, migrated_url: str) -> None:
    """As the ``openai`` client sends a file to ``/v1/files``: the spooled body reaches the multipart parser whole."""
    body = _jsonl(11 * 1024 * 1024)
    files = {"file": ("big.jsonl", body, "application/jsonl")}
    encoded = httpx.Request("POST", f"http://{server}/v1/files", data={"purpose": "batch"}, files=files)
    content = encoded.read()  # one boundary for both attempts: a retry sends the same bytes
    headers = {**bearer(tenant.key), "Idempotency-Key": "multipart-1", "Content-Type": encoded.headers["content-type"]}
    first = httpx.post(f"http://{server}/v1/files", content=content, headers=headers, timeout=60)
    assert first.status_code == 200, first.text
    assert first.json()["bytes"] == len(body)
    again = httpx.post(f"http://{server}/v1/files", content=content, headers=headers, timeout=60)
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true", again.text
    assert again.json()["id"] == first.json()["id"]
    assert await count(migrated_url, BatchFile, tenant_id=tenant.tenant.id) == 1


async def test_a_keyed_upload_past_the_file_limit_is_a_413_and_keeps_nothing(
    server: str, tenant: NewTenant, migrated_url: str
) -> None:
    refused = _upload(server, tenant, "too-big", _jsonl(FILE_LIMIT + 128 * 1024))
    assert refused.status_code == 413, refused.text
    assert f"limit of {FILE_LIMIT} bytes" in refused.json()["detail"]
    assert await count(migrated_url, BatchFile, tenant_id=tenant.tenant.id) == 0
    assert await count(migrated_url, IdempotencyRecord, tenant_id=tenant.tenant.id) == 0
    small = _upload(server, tenant, "too-big", _jsonl(1024))  # the key was never taken: it may serve another body
    assert small.status_code == 201, small.text


class _LoseFirstAnswer(httpx.HTTPTransport):
    """Sends each request; the first answer of a POST is dropped after the server has sent it (a broken connection)."""

    def __init__(self) -> None:
        super().__init__()
        self.posts = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.method == "POST":
            self.posts += 1
            if self.posts == 1:
                response.read()
                response.close()
                raise httpx.ReadError("connection lost after the server answered", request=request)
        return response


async def test_the_client_retries_a_large_upload_with_its_key_and_it_is_stored_once(
    server: str, tenant: NewTenant, migrated_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "big.jsonl"
    path.write_bytes(_jsonl(12 * 1024 * 1024))
    transport = _LoseFirstAnswer()
    retry = RetryPolicy(max_attempts=3, backoff_seconds=0.05)
    with Client(f"http://{server}", tenant.key, timeout=60, retry=retry, transport=transport) as client:
        stored = client.files.upload(path)
    assert transport.posts == 2  # the lost answer, then the retry
    assert stored.bytes == path.stat().st_size and stored.filename == "big.jsonl"
    assert await count(migrated_url, BatchFile, tenant_id=tenant.tenant.id) == 1
