"""At least once across a restart: an event whose first attempt failed is delivered by the next server process
(a real ``cloudeasyml serve`` subprocess, stopped between the attempts) from the outbox in the database."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from tests.support.server_process import serve_process
from tests.support.webhook_receiver import receiver

ENV = {
    "CLOUDEASYML_WEBHOOKS__ALLOW_HTTP": "true",
    "CLOUDEASYML_WEBHOOKS__ALLOWED_NETWORKS": "127.0.0.1/32",
    "CLOUDEASYML_WEBHOOKS__POLL_INTERVAL_SECONDS": "0.1",
    # Long enough that the first server is stopped before the second attempt is due; short enough for a test.
    "CLOUDEASYML_WEBHOOKS__RETRY_BASE_SECONDS": "4",
    "CLOUDEASYML_WEBHOOKS__RETRY_JITTER": "0",
}


def _deliveries(base: str, key: str, endpoint_id: str) -> list[dict]:
    response = httpx.get(f"{base}/webhooks/{endpoint_id}/deliveries", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return response.json()["items"]


def _until(condition, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return found


@pytest.mark.slow
def test_an_event_whose_first_attempt_failed_is_delivered_after_the_server_restarts(
    artifact_dir: Path, tmp_path: Path
) -> None:
    with receiver(fail_first=1) as hook:
        with serve_process(artifact_dir, tmp_path, env=ENV) as first:
            (key,) = first.keys
            headers = {"Authorization": f"Bearer {key}"}
            created = httpx.post(
                f"{first.base_url}/webhooks", json={"url": hook.url, "events": ["key.revoked"]}, headers=headers
            )
            assert created.status_code == 201, created.text
            endpoint = created.json()
            sent = httpx.post(f"{first.base_url}/webhooks/{endpoint['id']}/test", headers=headers)
            assert sent.status_code == 202
            failed = _until(lambda: [d for d in _deliveries(first.base_url, key, endpoint["id"]) if d["attempts"]])
            assert failed[0]["status"] == "pending" and failed[0]["responseStatus"] == 500
        assert len(hook.received) == 1  # stopped before the retry was due
        with serve_process(artifact_dir, tmp_path, database_url=first.database_url, env=ENV) as second:
            done = _until(
                lambda: [d for d in _deliveries(second.base_url, key, endpoint["id"]) if d["status"] == "succeeded"]
            )
        received = hook.wait_for(2)
    assert done[0]["attempts"] == 2
    assert [got.headers["webhook-id"] for got in received] == [sent.json()["eventId"]] * 2
    assert Webhook(endpoint["secret"]).verify(received[1].body, received[1].headers)["type"] == "webhook.test"
