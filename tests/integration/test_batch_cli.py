"""``cloudeasyml batches submit|status|download`` against a live server that runs no batch work itself, and
``cloudeasyml worker`` (a separate process on the same database and artifact directory) running the job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import msgspec
import pytest
from click.testing import CliRunner

from cloudeasyml.app import create_app
from cloudeasyml.cli.main import cli
from cloudeasyml.settings import BatchSettings, Settings
from tests.conftest import bearer
from tests.support.live_server import serve_in_thread
from tests.support.server_process import export_models

housing = pytest.importorskip("cloudeasyml_housing")


@pytest.mark.slow
def test_the_cli_submits_and_a_worker_process_runs_the_job(
    settings: Settings, plugin_manager, tenant, tmp_path: Path, artifact_dir: Path, migrated_url: str
) -> None:
    export_models(artifact_dir, housing.HousingModel())
    # No access log: its writer thread prints to the stdout that CliRunner captures, and a line printed after the
    # CLI's own output was taken for the batch id (once in a full run).
    quiet = msgspec.structs.replace(settings.server, access_log=False)
    app = create_app(msgspec.structs.replace(settings, batch=BatchSettings(workers=0), server=quiet), plugin_manager)
    with serve_in_thread(app) as address:
        base = f"http://{address}"
        example = httpx.get(f"{base}/models/housing", headers=bearer(tenant.key)).json()["exampleInput"]
        deployment = httpx.post(f"{base}/deployments", json={"modelName": "housing"}, headers=bearer(tenant.key))
        source = tmp_path / "houses.jsonl"
        source.write_text("".join(json.dumps({"input": example, "customId": f"h{i}"}) + "\n" for i in range(600)))
        runner = CliRunner()
        env = {"CLOUDEASYML_URL": base, "CLOUDEASYML_API_KEY": tenant.key}
        submitted = runner.invoke(
            cli, ["batches", "submit", str(source), "--deployment", deployment.json()["id"]], env=env
        )
        assert submitted.exit_code == 0, submitted.output
        batch_id = submitted.output.strip().splitlines()[-1]
        assert "validating" in runner.invoke(cli, ["batches", "status", batch_id], env=env).output

        worker_env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDEASYML_")}
        worker_env.update(
            CLOUDEASYML_HOME=str(tmp_path / "worker-home"),
            CLOUDEASYML_DATABASE_URL=migrated_url,
            CLOUDEASYML_RUNTIME__ARTIFACT_DIR=str(artifact_dir),
            CLOUDEASYML_RUNTIME__EXPORT_ON_LOAD="false",
            CLOUDEASYML_BATCH__POLL_INTERVAL_SECONDS="0.1",
            CLOUDEASYML_BATCH__IDLE_POLL_MAX_SECONDS="0.1",
        )
        worker = subprocess.Popen(
            [sys.executable, "-m", "cloudeasyml.cli", "worker", "--concurrency", "1"],
            env=worker_env,
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "worker.log").open("w"),
        )
        try:
            waited = runner.invoke(cli, ["batches", "status", batch_id, "--wait", "--interval", "0.2"], env=env)
            assert waited.exit_code == 0 and "completed" in waited.output, waited.output
            assert "600 done, 0 failed of 600" in waited.output
        finally:
            worker.terminate()
            assert worker.wait(timeout=30) == 0, (tmp_path / "worker.log").read_text()
        out = tmp_path / "out.jsonl"
        downloaded = runner.invoke(cli, ["batches", "download", batch_id, "-o", str(out)], env=env)
        assert downloaded.exit_code == 0, downloaded.output
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        assert [line["customId"] for line in lines] == [f"h{i}" for i in range(600)]
        errors = runner.invoke(cli, ["batches", "download", batch_id, "--errors"], env=env)
        assert errors.exit_code != 0 and "no failed lines" in errors.output
