"""Every answer carries its request id; the id is the prediction's ``requestId`` and its usage record's key; every
request leaves one JSON access-log line with no secret in it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import httpx
import pytest
from sqlalchemy import select

from cloudeasyml.api.request_log import drain_access_log
from cloudeasyml.cli.db import upgrade_database
from cloudeasyml.db.models import UsageRecord
from cloudeasyml.domain.request_context import client_request_id
from cloudeasyml.domain.tenants import NewTenant
from tests.conftest import bearer, db_session
from tests.integration.test_predict import deploy
from tests.support.server_process import wait_until_healthy


def _access_lines(text: str) -> list[dict]:
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("logger") == "cloudeasyml.access"]


async def test_a_predictions_request_id_is_its_header_its_body_and_its_usage_record(
    client, tenant: NewTenant, migrated_url: str
) -> None:
    deployment = await deploy(client, tenant.key)
    payload = {"deploymentId": deployment["id"], "inputs": [{"x": 1.0, "y": 2.0}]}
    fast = await client.post("/predict", json=payload, headers=bearer(tenant.key))
    routed = await client.post(f"/deployments/{deployment['id']}/predict", json=payload, headers=bearer(tenant.key))
    ids = []
    for response in (fast, routed):
        assert response.status_code == 200, response.text
        assert response.headers["x-request-id"] == response.json()["requestId"]
        ids.append(response.headers["x-request-id"])
    assert (await client.get("/usage", headers=bearer(tenant.key))).status_code == 200  # flushes the meter
    async with db_session(migrated_url) as session:
        stored = set(await session.scalars(select(UsageRecord.request_id)))
    assert stored == set(ids)


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/health"), ("GET", "/models"), ("POST", "/predict"), ("GET", "/nope"), ("GET", "/deployments/x")],
)
async def test_every_answer_has_a_request_id_errors_and_public_paths_included(
    client, tenant: NewTenant, method: str, path: str
) -> None:
    response = await client.request(method, path, headers=bearer("sk_aaaaaaaaaaaaaaaa.bad"))
    assert len(response.headers["x-request-id"]) == 36


async def test_a_clients_request_id_is_echoed_but_never_becomes_the_billing_key(client, tenant: NewTenant) -> None:
    deployment = await deploy(client, tenant.key)
    payload = {"deploymentId": deployment["id"], "inputs": [{"x": 1.0, "y": 2.0}]}
    answers = [
        await client.post("/predict", json=payload, headers={**bearer(tenant.key), "X-Request-ID": "trace-42"})
        for _ in range(2)
    ]
    for response in answers:
        assert response.headers["x-client-request-id"] == "trace-42"
        assert response.headers["x-request-id"] == response.json()["requestId"] != "trace-42"
    # Replaying one id must not make the second answer free: both are billed under their own ids.
    assert answers[0].json()["requestId"] != answers[1].json()["requestId"]
    usage = (await client.get("/usage", headers=bearer(tenant.key))).json()
    assert usage["totalRequests"] == 2


@pytest.mark.parametrize("value", ["", "a b", "x" * 129, 'quote"d', "new\nline", "é"])
def test_invalid_client_request_ids_are_ignored(value: str) -> None:
    assert client_request_id(value) is None


async def test_one_json_access_line_per_request_with_tenant_deployment_and_items_and_no_secret(
    client, tenant: NewTenant, capsys: pytest.CaptureFixture[str]
) -> None:
    deployment = await deploy(client, tenant.key)
    assert drain_access_log(5.0)
    capsys.readouterr()
    payload = {"deploymentId": deployment["id"], "inputs": [{"x": 1.0, "y": 2.0}, {"x": 0.0, "y": 0.0}]}
    ok = await client.post("/predict", json=payload, headers=bearer(tenant.key))
    missing = await client.get(f"/deployments/{'0' * 8}-0000-0000-0000-{'0' * 12}", headers=bearer(tenant.key))
    assert drain_access_log(5.0)
    captured = capsys.readouterr().err
    lines = _access_lines(captured)
    assert [line["status"] for line in lines] == [200, 404]
    served, refused = lines
    assert served["requestId"] == ok.headers["x-request-id"]
    assert served["route"] == "/predict" and served["method"] == "POST"
    assert served["tenantId"] == str(tenant.tenant.id) and served["deploymentId"] == deployment["id"]
    assert served["model"] == "tiny" and served["items"] == 2 and served["latencyMs"] > 0
    assert (
        refused["route"] == "/deployments/{deployment_id}" and refused["requestId"] == missing.headers["x-request-id"]
    )
    secret = tenant.key.split(".", 1)[1]
    assert secret not in captured and tenant.key not in captured


def test_a_server_whose_log_pipe_nobody_reads_keeps_answering(tmp_path) -> None:
    """Access-log lines go through a writer thread: a full standard-error pipe drops lines, never stalls requests
    (written synchronously on the event loop, the 200th line or so blocked the whole server)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'served.db'}"
    upgrade_database(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDEASYML_")}
    env.update(CLOUDEASYML_HOME=str(tmp_path / "home"), CLOUDEASYML_DATABASE_URL=url)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "cloudeasyml.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,  # never read: it fills after about 64 KiB
    )
    try:
        wait_until_healthy(server, f"http://127.0.0.1:{port}")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            for _ in range(1500):  # ~500 KiB of log lines
                assert http.get("/health").status_code == 200
    finally:
        server.kill()
        server.wait(timeout=30)
