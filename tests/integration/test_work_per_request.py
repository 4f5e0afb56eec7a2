"""Work per request through the real app (issue 10 rows 1 and 8): inputs per request, requests larger than a batch,
deadlines, and what a client that hangs up is billed."""

from __future__ import annotations

import socket
import time

import httpx
import msgspec

from cloudeasyml.domain.tenants import NewTenant
from tests.conftest import bearer
from tests.integration.test_predict import deploy, usage
from tests.support.live_server import serve_in_thread
from tests.support.tiny_model import TinyModel

POINT = {"x": 1.0, "y": 2.0}


async def test_a_request_over_the_models_inputs_per_request_is_refused_before_it_runs(
    client, tenant: NewTenant
) -> None:
    limit = TinyModel.max_items_per_request
    deployment = await deploy(client, tenant.key, config={"maxBatchSize": 4})
    over = await client.post(
        f"/deployments/{deployment['id']}/predict", json={"inputs": [POINT] * (limit + 1)}, headers=bearer(tenant.key)
    )
    assert over.status_code == 422, over.text
    assert str(limit) in over.json()["detail"]
    assert (await usage(client, tenant.key))["totalRequests"] == 0


async def test_a_request_larger_than_a_batch_runs_in_several_and_is_billed_as_one(client, tenant: NewTenant) -> None:
    limit = TinyModel.max_items_per_request
    deployment = await deploy(client, tenant.key, config={"maxBatchSize": 4})
    points = [{"x": float(i), "y": 0.0} for i in range(limit)]
    whole = await client.post(
        f"/deployments/{deployment['id']}/predict", json={"inputs": points}, headers=bearer(tenant.key)
    )
    assert whole.status_code == 200, whole.text
    one_by_one = [
        (
            await client.post(
                f"/deployments/{deployment['id']}/predict", json={"inputs": [p]}, headers=bearer(tenant.key)
            )
        ).json()["predictions"][0]
        for p in points[:9]
    ]
    assert whole.json()["predictions"][:9] == one_by_one  # joined in order
    assert len(whole.json()["predictions"]) == limit
    assert (await usage(client, tenant.key))["totalRequests"] == 1 + 9


async def test_a_request_past_its_deadline_is_a_504_and_not_billed(client, tenant: NewTenant) -> None:
    deployment = await deploy(client, tenant.key, config={"timeoutMs": 0.001})
    response = await client.post(
        f"/deployments/{deployment['id']}/predict", json={"inputs": [POINT]}, headers=bearer(tenant.key)
    )
    assert response.status_code == 504, response.text
    assert (await usage(client, tenant.key))["totalRequests"] == 0


def test_a_client_that_hangs_up_after_its_body_is_still_served_and_billed(app, tenant: NewTenant) -> None:
    """What the README states: the server does not cancel a request whose client has gone once its body is read;
    it runs and is billed (the answer is dropped). A client that hangs up mid-body is not served."""
    with serve_in_thread(app) as address, httpx.Client(base_url=f"http://{address}", timeout=60) as http:
        deployment = http.post("/deployments", json={"modelName": "tiny"}, headers=bearer(tenant.key)).json()
        host, port = address.split(":")
        body = msgspec.json.encode({"deploymentId": deployment["id"], "inputs": [POINT]})
        head = (
            f"POST /predict HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {tenant.key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection((host, int(port))) as raw:
            raw.sendall(head + body[:10])  # hangs up mid-body
        with socket.create_connection((host, int(port))) as raw:
            raw.sendall(head + body)  # hangs up at once, before any answer
        deadline = time.monotonic() + 30
        while (total := http.get("/usage", headers=bearer(tenant.key)).json()["totalRequests"]) < 1:
            assert time.monotonic() < deadline, "the request of the client that hung up was never billed"
            time.sleep(0.1)
        time.sleep(1.5)  # the usage writer batches: give a second record time to show up, were there one
        assert http.get("/usage", headers=bearer(tenant.key)).json()["totalRequests"] == total == 1
