"""`cloudeasyml train` makes a new version that can be deployed while the old one keeps serving."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import pytest

from tests.conftest import bearer

pytest.importorskip("cloudeasyml_housing")


@pytest.mark.export
async def test_trained_version_is_deployable_and_the_old_one_keeps_serving(
    client, tenant, database_url: str, artifact_dir: Path
) -> None:
    if "postgres" in database_url:
        pytest.skip("training touches the artifact store, not the database: SQLite is enough")
    headers = bearer(tenant.key)
    old = (await client.post("/deployments", json={"modelName": "housing", "name": "old"}, headers=headers)).json()
    data = Path(str(files("cloudeasyml_housing") / "data" / "housing.csv"))
    env = {**os.environ, "CLOUDEASYML_RUNTIME__ARTIFACT_DIR": str(artifact_dir)}
    result = subprocess.run(
        [sys.executable, "-m", "cloudeasyml.cli", "train", "housing", "--data", str(data), "--epochs", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    version = result.stdout.splitlines()[0].split()[1]
    assert version.startswith("1.0.0+ft") and "r2" in result.stdout and "parity" in result.stdout

    model = (await client.get("/models/housing", headers=headers)).json()
    assert model["versions"][0] == "1.0.0" and version in model["versions"]
    new = await client.post(
        "/deployments", json={"modelName": "housing", "name": "new", "modelVersion": version}, headers=headers
    )
    assert new.status_code == 201 and new.json()["modelVersion"] == version
    inputs = {"inputs": [model["exampleInput"]]}
    old_answer = await client.post(f"/deployments/{old['id']}/predict", json=inputs, headers=headers)
    new_answer = await client.post(f"/deployments/{new.json()['id']}/predict", json=inputs, headers=headers)
    assert old_answer.status_code == new_answer.status_code == 200
    assert new_answer.json()["modelVersion"] == version and old_answer.json()["modelVersion"] == "1.0.0"
    assert old_answer.json()["predictions"] != new_answer.json()["predictions"]


def test_training_refuses_a_bad_data_file(tmp_path: Path, artifact_dir: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("price,lotsize\n1,2\n")
    env = {**os.environ, "CLOUDEASYML_RUNTIME__ARTIFACT_DIR": str(artifact_dir)}
    result = subprocess.run(
        [sys.executable, "-m", "cloudeasyml.cli", "train", "housing", "--data", str(bad)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "cannot train" in result.stderr and "Traceback" not in result.stderr
