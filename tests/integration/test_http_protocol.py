"""The platform over a real socket with ``cloudeasyml serve``'s HTTP protocol (``CoalescingHttpToolsProtocol``):
answers with and without a body on one kept-alive connection. (Every test using ``serve_in_thread`` runs on it
too; what it writes when is checked in ``tests/unit/test_http_protocol.py``.)"""

from __future__ import annotations

import httpx

from cloudeasyml.domain.tenants import NewTenant
from tests.conftest import bearer
from tests.support.live_server import serve_in_thread


def test_answers_with_and_without_bodies_over_one_kept_alive_connection(app, tenant: NewTenant) -> None:
    with serve_in_thread(app) as address, httpx.Client(base_url=f"http://{address}", timeout=60) as http:
        created = http.post("/deployments", json={"modelName": "tiny"}, headers=bearer(tenant.key))
        assert created.status_code == 201, created.text
        body = {"deploymentId": created.json()["id"], "inputs": [{"x": 1.0, "y": 2.0}]}
        for _ in range(3):
            answer = http.post("/predict", json=body, headers=bearer(tenant.key))
            assert answer.status_code == 200 and len(answer.json()["predictions"]) == 1
        assert http.delete(f"/deployments/{created.json()['id']}", headers=bearer(tenant.key)).status_code == 204
        assert http.get("/health").json()["status"]
        assert http.post("/predict", json=body).status_code == 401
