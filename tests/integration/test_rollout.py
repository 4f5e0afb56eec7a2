"""Rollouts on a real server: clients sending without pause while the version changes see no failed request, and
every answer names the version that really served it; the operator's ``cloudeasyml deployments`` commands."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

from cloudeasyml.cli.main import cli
from tests.conftest import bearer, new_tenant
from tests.support import tiny_model
from tests.support.live_server import serve_in_thread

NEW = "1.1.0"
SHIFT = 10.0
"""The second version's scores are the shipped version's plus ``SHIFT``: an answer's score says which served it."""
POINT = {"x": 1.0, "y": 2.0}
BASE = float(tiny_model.numpy_forward(tiny_model.tiny_weights(), np.array([[1.0, 2.0]]))[0])

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture(name="artifact_dir", scope="module")
def fx_artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's artifact store: the shipped tiny graph and a second version ``NEW``."""
    path = tmp_path_factory.mktemp("artifacts-rollout")
    tiny_model.seed_graph(path)
    tiny_model.seed_version(path, NEW, SHIFT)
    return path


class Clients:
    """Threads that each send predictions one after another until stopped, recording every answer with the
    times its request left and its answer came."""

    def __init__(self, base: str, key: str, deployment_id: str, count: int) -> None:
        self.answers: list[tuple[float, float, int, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._send, args=(base, key, deployment_id), daemon=True) for _ in range(count)
        ]

    def __enter__(self) -> Clients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _send(self, base: str, key: str, deployment_id: str) -> None:
        with httpx.Client(base_url=base, headers=bearer(key), timeout=60) as http:
            while not self._stop.is_set():
                sent = time.monotonic()
                response = http.post(f"/deployments/{deployment_id}/predict", json={"inputs": [POINT]})
                body = response.json()
                body["header"] = response.headers.get("x-model-version")
                with self._lock:
                    self.answers.append((sent, time.monotonic(), response.status_code, body))

    def wait_for(self, more: int) -> None:
        """Until ``more`` answers beyond those so far have come."""
        target = len(self.answers) + more
        deadline = time.monotonic() + 60
        while len(self.answers) < target:
            assert time.monotonic() < deadline, "the clients stopped getting answers"
            time.sleep(0.01)


def _expected(version: str) -> float:
    return BASE + (SHIFT if version == NEW else 0.0)


def test_clients_see_no_failure_across_version_changes_and_every_answer_names_its_version(
    app, migrated_url: str
) -> None:
    key = asyncio.run(new_tenant(migrated_url)).key
    with serve_in_thread(app) as address:
        base = f"http://{address}"
        http = httpx.Client(base_url=base, headers=bearer(key), timeout=120)
        created = http.post("/deployments", json={"modelName": "tiny", "config": {"eagerLoad": True}}).json()
        url = f"/deployments/{created['id']}"
        steps: list[tuple[str, str, dict[str, Any]]] = [
            ("PATCH", url, {"modelVersion": NEW}),
            ("PATCH", url, {"variant": "int8"}),
            ("POST", f"{url}/rollback", {}),
            ("PATCH", url, {"traffic": [{"modelVersion": "1.0.0", "weight": 90}, {"modelVersion": NEW, "weight": 10}]}),
            ("POST", f"{url}/abort", {"modelVersion": NEW}),
            ("PATCH", url, {"traffic": [{"modelVersion": "1.0.0", "weight": 50}, {"modelVersion": NEW, "weight": 50}]}),
            ("POST", f"{url}/promote", {"modelVersion": "1.0.0"}),
            ("PATCH", url, {"config": {"maxBatchSize": 4}}),
        ]
        switches: list[tuple[float, float, set[str]]] = []
        with Clients(base, key, created["id"], count=4) as clients:
            clients.wait_for(50)
            for method, path, body in steps:
                sent = time.monotonic()
                response = http.request(method, path, json=body)
                assert response.status_code == 200, response.text
                live = {r["modelVersion"] for r in response.json()["traffic"] if r["mode"] == "live"}
                switches.append((sent, time.monotonic(), live))
                clients.wait_for(50)
        answers = clients.answers
        units = app.state.services.registry.units_of(uuid.UUID(created["id"]))
        # One unit left, of the last revision: every earlier one drained and unloaded.
        assert [(unit.spec.model_version, unit.spec.config.max_batch_size) for unit in units] == [("1.0.0", 4)]
    failed = [(status, body) for _sent, _done, status, body in answers if status != 200]
    assert not failed, f"{len(failed)} of {len(answers)} requests failed across the switches: {failed[:3]}"
    for _sent, _done, _status, body in answers:
        # The version an answer names is the one that computed it (int8 moves the score by far less than SHIFT).
        assert body["predictions"][0]["score"] == pytest.approx(_expected(body["modelVersion"]), abs=1.0), body
        assert body["header"] == body["modelVersion"]  # X-Model-Version says the same
    for index, (_sent, answered, live) in enumerate(switches):
        # Requests sent once a change has answered, and answered before the next change was asked for, are served
        # by the new revision's versions.
        until = switches[index + 1][0] if index + 1 < len(switches) else float("inf")
        served = {body["modelVersion"] for sent, done, _status, body in answers if answered < sent and done < until}
        assert served and served <= live, (index, live, served)
    versions = {body["modelVersion"] for *_rest, body in answers}
    assert versions == {"1.0.0", NEW}


def _cli(*args: str, key: str, base: str) -> Any:
    result = CliRunner().invoke(cli, ["deployments", "--url", base, "--key", key, *args], catch_exceptions=False)
    return result


def test_the_operator_scripts_a_rollout_with_the_cli(app, migrated_url: str) -> None:
    key = asyncio.run(new_tenant(migrated_url)).key
    with serve_in_thread(app) as address:
        base = f"http://{address}"
        http = httpx.Client(base_url=base, headers=bearer(key), timeout=60)
        http.post("/deployments", json={"modelName": "tiny", "name": "scorer"}).raise_for_status()

        listed = _cli("list", key=key, base=base)
        assert listed.exit_code == 0 and "scorer" in listed.stdout and "REVISION" in listed.stdout
        split = json.dumps([{"modelVersion": "1.0.0", "weight": 90}, {"modelVersion": NEW, "weight": 10}])
        canary = _cli("--json", "update", "scorer", "--traffic", split, key=key, base=base)
        assert canary.exit_code == 0, canary.output
        assert json.loads(canary.stdout)["revision"] == 2
        promoted = _cli("--json", "promote", "scorer", "--model-version", NEW, key=key, base=base)
        assert json.loads(promoted.stdout)["traffic"] == [
            {"modelVersion": NEW, "weight": 100, "variant": None, "mode": "live"}
        ]
        history = _cli("revisions", "scorer", key=key, base=base)
        assert history.exit_code == 0
        lines = history.stdout.splitlines()
        assert lines[0].split()[:3] == ["REV", "ACTION", "CREATED"]
        assert [line.split()[:2] for line in lines[1:]] == [["1", "create"], ["2", "update"], ["*3", "promote"]]
        back = _cli("--json", "rollback", "scorer", "--revision", "1", key=key, base=base)
        assert json.loads(back.stdout)["modelVersion"] == "1.0.0" and json.loads(back.stdout)["revision"] == 4
        got = json.loads(_cli("--json", "get", "scorer", key=key, base=base).stdout)
        assert got["revision"] == 4

        # Errors: the problem details on stderr and a non-zero exit, from a real process.
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDEASYML_")}
        env["CLOUDEASYML_API_KEY"] = key
        bad = subprocess.run(
            [sys.executable, "-m", "cloudeasyml.cli", "deployments", "--url", base, "abort", "scorer"]
            + ["--model-version", "9.9.9"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert bad.returncode == 1, bad.stderr
        problem = json.loads(bad.stderr.splitlines()[0])
        assert problem["status"] == 422 and "9.9.9" in problem["detail"]
        assert "Error: 422 Unprocessable Entity: version" in bad.stderr
        no_key = CliRunner().invoke(cli, ["deployments", "--url", base, "list"], env={"CLOUDEASYML_API_KEY": ""})
        assert no_key.exit_code == 2 and "API key" in no_key.output
        assert "A canary rollout" in CliRunner().invoke(cli, ["deployments", "--help"]).output
