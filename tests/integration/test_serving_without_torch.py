"""The serving path never imports torch: an exported model is served by a process where `import torch` fails,
and a model with no artifact there gets a 503 that says what to do."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cloudeasyml.plugins.catalog import build_catalog
from cloudeasyml.plugins.manager import get_plugin_manager
from cloudeasyml.runtime.artifacts import ArtifactStore
from cloudeasyml.runtime.resolver import ArtifactResolver
from tests.conftest import new_tenant
from tests.support.template_db import TEMPLATES

pytest.importorskip("cloudeasyml_housing")
pytest.importorskip("cloudeasyml_sentiment")

CHILD = r"""
import importlib.abc, json, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers", "onnxscript"):
            raise ImportError(f"{name} is blocked in this process")

sys.meta_path.insert(0, NoTorch())

from litestar.testing import TestClient
from cloudeasyml.app import create_app
from cloudeasyml.settings import DatabaseSettings, RuntimeSettings, Settings

settings = Settings(database=DatabaseSettings(url=sys.argv[1]), runtime=RuntimeSettings(artifact_dir=sys.argv[2]))
headers = {"Authorization": "Bearer " + sys.argv[3]}
out = {}
with TestClient(create_app(settings)) as client:
    for model in ("housing", "sentiment"):
        info = client.get(f"/models/{model}", headers=headers).json()
        deployment = client.post("/deployments", json={"modelName": model}, headers=headers).json()
        response = client.post("/predict", json={"deploymentId": deployment["id"], "inputs": [info["exampleInput"]]},
                               headers=headers)
        out[model] = {"status": response.status_code, "body": response.json()}
out["torch_imported"] = "torch" in sys.modules
print(json.dumps(out))
"""


@pytest.mark.export
def test_exported_model_is_served_where_torch_cannot_be_imported(tmp_path: Path) -> None:
    url = TEMPLATES.sqlite(tmp_path / "db.sqlite")
    key = asyncio.run(new_tenant(url, "no-torch")).key
    artifacts = tmp_path / "artifacts"
    housing = build_catalog(get_plugin_manager()).get("housing").model
    ArtifactResolver(ArtifactStore(artifacts)).export(housing, housing.version)  # export here, where torch is

    result = subprocess.run(
        [sys.executable, "-c", CHILD, url, str(artifacts), key], capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["housing"]["status"] == 200 and out["housing"]["body"]["predictions"][0]["price"] > 0
    assert out["sentiment"]["status"] == 503
    assert "torch is not installed" in out["sentiment"]["body"]["detail"]
    assert "cloudeasyml export sentiment" in out["sentiment"]["body"]["detail"]
    assert out["torch_imported"] is False
