"""Online latency with a batch job running: housing ``/predict`` at c=16 against a real server process, alone and
while a large housing job runs on the same deployment. Batch chunks take only what online requests leave of each
batch, so the online p99 stays near its value without the job (bench/RESULTS.md, "Batch jobs", has the figure;
the bound here is generous for a shared machine)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest

from bench.batch import online_load
from tests.conftest import bearer
from tests.support.server_process import export_models, serve_process

housing = pytest.importorskip("cloudeasyml_housing")


@pytest.mark.slow
@pytest.mark.serial  # a latency target: another test on the CPU would be measured too
def test_online_p99_holds_while_a_batch_job_runs(artifact_dir: Path, tmp_path: Path, database_url: str) -> None:
    if "postgres" in database_url:
        pytest.skip("a latency figure: one database is enough")
    export_models(artifact_dir, housing.HousingModel())
    env = {"CLOUDEASYML_BATCH__CHUNK_LINES": "1024", "CLOUDEASYML_BATCH__WORKERS": "2"}
    with serve_process(artifact_dir, tmp_path, env=env) as server:
        key = server.keys[0]
        base = server.base_url
        example = httpx.get(f"{base}/models/housing", headers=bearer(key)).json()["exampleInput"]
        created = httpx.post(
            f"{base}/deployments",
            json={"modelName": "housing", "config": {"eagerLoad": True}},
            headers=bearer(key),
            timeout=60,
        )
        deployment = created.json()["id"]
        asyncio.run(online_load(base, key, deployment, example, 1.0))  # warm-up
        alone = asyncio.run(online_load(base, key, deployment, example, 4.0))
        rows = b"".join(json.dumps({"input": example}).encode() + b"\n" for _ in range(100_000))
        file = httpx.post(
            f"{base}/files", content=rows, headers={**bearer(key), "Content-Type": "application/jsonl"}, timeout=120
        ).json()
        job = httpx.post(
            f"{base}/batches", json={"deploymentId": deployment, "inputFileId": file["id"]}, headers=bearer(key)
        ).json()
        waiting = ("validating", "queued")
        while httpx.get(f"{base}/batches/{job['id']}", headers=bearer(key)).json()["status"] in waiting:
            time.sleep(0.05)
        with_job = asyncio.run(online_load(base, key, deployment, example, 4.0))
        during = httpx.get(f"{base}/batches/{job['id']}", headers=bearer(key)).json()
        assert during["counts"]["completed"] > 0  # the job ran while the online load did
        # Generous: 2x plus 10 ms (the bench's target is within 20 %; this machine is shared and noisy).
        assert with_job["p99_ms"] <= 2 * alone["p99_ms"] + 10, (alone, with_job)
        assert with_job["req_s"] >= 0.5 * alone["req_s"], (alone, with_job)
