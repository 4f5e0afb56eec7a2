"""Batch jobs against online traffic, and batch throughput, on a real server (``python -m bench.batch``).

1. Online latency: housing ``/predict`` at c=16 (httpx clients in this process) for ``--seconds``, alone, then
   while a housing batch job of ``--lines`` lines runs; the online p99 with the job should stay within 20 % of the
   p99 without it (batch chunks run at the batcher's background priority).
2. Throughput: a MiniLM job of ``--texts`` texts on an otherwise idle server, in items/s from the job's own start
   and end, against onnxruntime in this process at the deployment's batch size (``bench.ceiling``; with
   ``to_arrays`` and ``from_outputs``, as the server runs them). Target: at least 0.9.

The models must be exported in ``--artifact-dir`` already (as for ``python -m bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.servers import HOST, PlatformServer, _ServerProcess, clean_environment, cloudeasyml_cli

__all__ = ("main", "online_load")

CONCURRENCY = 16


class BatchServer(PlatformServer):
    """``PlatformServer`` with batch workers (``CLOUDEASYML_BATCH__*`` given)."""

    def __init__(self, workdir: Path, artifact_dir: Path, batch_env: dict[str, str]) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        _ServerProcess.__init__(self, workdir, "cloudeasyml")
        home = workdir / "home"
        home.mkdir(exist_ok=True)
        self.env = {**clean_environment(home, artifact_dir), **batch_env}
        self._cli("db", "upgrade")
        created = json.loads(self._cli("tenants", "create", "bench", "--owner", "bench@example.com", "--json"))
        self.token = created["key"]
        serve = [*cloudeasyml_cli(), "serve", "--host", HOST, "--port", str(self.port), "--workers", "1"]
        self._start(serve, self.env)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def online_load(base: str, token: str, deployment_id: str, example: Any, seconds: float) -> dict[str, float]:
    """c=16 closed-loop ``/predict`` for ``seconds``: p50, p99 (ms) and req/s."""
    latencies: list[float] = []
    body = {"deploymentId": deployment_id, "inputs": [example]}
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        stop = time.perf_counter() + seconds

        async def loop() -> None:
            while time.perf_counter() < stop:
                started = time.perf_counter()
                response = await client.post("/predict", json=body)
                response.raise_for_status()
                latencies.append((time.perf_counter() - started) * 1000)

        await asyncio.gather(*(loop() for _ in range(CONCURRENCY)))
    return {
        "p50_ms": statistics.median(latencies),
        "p99_ms": _percentile(latencies, 0.99),
        "req_s": len(latencies) / seconds,
    }


def _submit(server: PlatformServer, deployment_id: str, lines: list[bytes]) -> str:
    headers = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.base, headers=headers, timeout=300) as client:
        file = client.post("/files", content=b"".join(lines), headers={"Content-Type": "application/jsonl"})
        file.raise_for_status()
        job = client.post("/batches", json={"deploymentId": deployment_id, "inputFileId": file.json()["id"]})
        job.raise_for_status()
        return job.json()["id"]


def _job(server: PlatformServer, job_id: str) -> dict[str, Any]:
    response = httpx.get(f"{server.base}/batches/{job_id}", headers={"Authorization": f"Bearer {server.token}"})
    response.raise_for_status()
    return response.json()


def _wait_ended(server: PlatformServer, job_id: str, timeout: float = 3600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (job := _job(server, job_id))["status"] in ("validating", "queued", "running"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} did not end: {job}")
        time.sleep(0.2)
    return job


def latency(server: PlatformServer, lines: int, seconds: float) -> dict[str, Any]:
    """Part 1."""
    example = server.model("housing")["exampleInput"]
    deployment = server.deploy("housing", "housing", {})
    asyncio.run(online_load(server.base, server.token, deployment["id"], example, 2.0))  # warm-up
    alone = asyncio.run(online_load(server.base, server.token, deployment["id"], example, seconds))
    rows = [json.dumps({"input": example, "customId": str(i)}).encode() + b"\n" for i in range(lines)]
    job_id = _submit(server, deployment["id"], rows)
    while _job(server, job_id)["status"] in ("validating", "queued"):
        time.sleep(0.05)
    before = _job(server, job_id)["counts"]["completed"]
    with_job = asyncio.run(online_load(server.base, server.token, deployment["id"], example, seconds))
    after = _job(server, job_id)
    ended = _wait_ended(server, job_id)
    return {
        "alone": alone,
        "with_job": with_job,
        "p99_ratio": with_job["p99_ms"] / alone["p99_ms"],
        "job_items_during_load": after["counts"]["completed"] - before,
        "job_running_at_end_of_window": after["status"] == "running",
        "job_status": ended["status"],
    }


def throughput(server: PlatformServer, artifact_dir: Path, texts: int, seconds: float) -> dict[str, Any]:
    """Part 2."""
    from cloudeasyml_minilm import MiniLMModel

    from bench.ceiling import measure_model
    from cloudeasyml.runtime.artifacts import ArtifactStore
    from cloudeasyml.runtime.resolver import ArtifactResolver

    model = MiniLMModel()
    deployment = server.deploy("minilm", "minilm", {})
    # The text the in-process figure repeats (MiniLM's time grows with the padded length: same text, same work).
    example = model.example_inputs()[0]
    rows = [json.dumps({"input": example, "customId": str(i)}).encode() + b"\n" for i in range(texts)]
    batch = min(model.serving.max_batch_size, model.max_batch_items)
    onnx_path = ArtifactResolver(ArtifactStore(artifact_dir), export_on_load=False).ensure(model, model.version)
    instances = int(deployment["config"]["instances"])  # the same sessions as the deployment runs
    (before,) = measure_model(model, onnx_path, [batch], seconds, instances)
    job = _wait_ended(server, _submit(server, deployment["id"], rows))
    started = datetime.fromisoformat(job["startedAt"])
    finished = datetime.fromisoformat(job["finishedAt"])
    rate = job["counts"]["completed"] / (finished - started).total_seconds()
    (after,) = measure_model(model, onnx_path, [batch], seconds, instances)
    # The machine's speed drifts (bench/RESULTS.md): the ceiling is measured just before and just after the job.
    ceiling = (before.full_items_per_s + after.full_items_per_s) / 2
    return {
        "job_status": job["status"],
        "job_items_s": rate,
        "batch": batch,
        "instances": instances,
        "in_process_items_s_before_after": [before.full_items_per_s, after.full_items_per_s],
        "ratio": rate / ceiling,
    }


def main(argv: list[str] | None = None) -> int:
    """Run both parts; print the figures as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.batch", description=__doc__)
    parser.add_argument("--artifact-dir", type=Path, required=True)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--texts", type=int, default=5_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--skip", choices=("latency", "throughput"), action="append", default=[])
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    env = {"CLOUDEASYML_BATCH__WORKERS": "2", "CLOUDEASYML_BATCH__CHUNK_LINES": "1024"}
    results: dict[str, Any] = {}
    try:
        if "latency" not in args.skip:
            with BatchServer(workdir / "latency", args.artifact_dir, env) as server:
                results["latency"] = latency(server, args.lines, args.seconds)
        if "throughput" not in args.skip:
            with BatchServer(workdir / "throughput", args.artifact_dir, env) as server:
                results["throughput"] = throughput(server, args.artifact_dir, args.texts, args.seconds)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
