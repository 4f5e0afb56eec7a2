"""Real experiments through the HTTP API: a deployment splits its traffic 50/50 between a model and a deliberately
worse version of it, clients send the truth of each answer with ``POST /feedback``, and the experiment report names
the better version as significantly better.

- The tiny model against a version whose weights were corrupted (its graph built with ``onnx.helper``: no torch),
  the truth being the shipped network's answer plus noise. Runs everywhere.
- The housing model against a version trained with ``cloudeasyml train`` on a copy of its training sales whose prices
  were shuffled, the truth being the held-out sales (``split_indices(546, 0.2, seed=0)``, which neither version saw).
  Needs torch (training and export): marked ``export`` and ``slow``.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import onnx
import pytest

from cloudeasyml.app import create_app
from cloudeasyml.domain.tenants import NewTenant
from cloudeasyml.plugins.manager import PluginManager
from cloudeasyml.runtime.artifacts import ArtifactStore
from cloudeasyml.runtime.resolver import ArtifactResolver
from cloudeasyml.settings import RuntimeSettings, Settings
from tests.conftest import bearer
from tests.support import tiny_model
from tests.support.live_server import serve_in_thread

WORSE = "1.0.0+worse"


def _seed_worse_tiny(artifacts: Path) -> None:
    """A trained version of the tiny model with noisy weights, and its graph, in the artifact store."""
    model = tiny_model.TinyModel()
    tiny_model.seed_graph(artifacts, model)
    rng = np.random.default_rng(11)
    weights = {
        name: (w + rng.normal(0, 0.6, size=w.shape)).astype(np.float32) for name, w in tiny_model.tiny_weights().items()
    }
    resolver = ArtifactResolver(ArtifactStore(artifacts))
    resolver.store.save_trained_weights(model.name, WORSE, weights)
    path = resolver.store.onnx_path(model.name, WORSE, resolver.weights_digest(model, WORSE))

    def produce(tmp: Path) -> dict[str, str]:
        onnx.save(tiny_model.graph(weights), str(tmp))
        return {"builtBy": "test_experiment_end_to_end (onnx.helper)"}

    resolver.store.write_export(path, produce, {"model": model.name, "version": WORSE})


def _run_experiment(
    base: str, key: str, deployment: dict[str, Any], inputs: list[Any], truths: list[Any], kind: str
) -> dict[str, Any]:
    """Send each input as one request, then its truth as feedback; returns the experiment report."""
    headers = bearer(key)
    with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
        served: dict[str, int] = {}
        for item, truth in zip(inputs, truths, strict=True):
            answer = http.post(f"/deployments/{deployment['id']}/predict", json={"inputs": [item]})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            served[body["modelVersion"]] = served.get(body["modelVersion"], 0) + 1
            feedback = http.post("/feedback", json={"requestId": body["requestId"], kind: truth})
            assert feedback.status_code == 201, feedback.text
        assert len(served) == 2, served  # both versions answered
        report = http.get(f"/deployments/{deployment['id']}/experiment")
        assert report.status_code == 200, report.text
        return report.json()


def _the_shipped_version_wins(report: dict[str, Any], shipped: str, worse: str) -> dict[str, Any]:
    (versus,) = report["comparisons"]
    assert versus["modelVersion"] == worse and versus["mode"] == "live"
    comparison = versus["comparison"]
    assert comparison["verdict"] == "control better", comparison
    assert comparison["pValue"] < 0.05 and comparison["effect"] > 0  # the worse version's absolute errors are larger
    arms = {arm["modelVersion"]: arm for arm in report["arms"]}
    assert arms[shipped]["control"] and arms[shipped]["weight"] == arms[worse]["weight"] == 50
    assert arms[shipped]["quality"]["mae"]["value"] < arms[worse]["quality"]["mae"]["value"]
    assert (
        arms[shipped]["requests"] + arms[worse]["requests"]
        == comparison["controlSamples"] + comparison["candidateSamples"]
    )
    assert arms[shipped]["costPer1000Items"] is not None and arms[shipped]["latencyMs"]["p50"] > 0
    return comparison


def test_a_50_50_split_names_the_better_tiny_version(
    settings: Settings, plugin_manager: PluginManager, tenant: NewTenant, tmp_path: Path
) -> None:
    artifacts = tmp_path / "artifacts"
    _seed_worse_tiny(artifacts)
    settings = replace_runtime(settings, artifacts)
    rng = np.random.default_rng(5)
    points = rng.uniform(-3, 3, size=(300, 2)).astype(np.float32)
    truths = tiny_model.numpy_forward(tiny_model.tiny_weights(), points) + rng.normal(0, 0.1, size=300)
    split = [{"modelVersion": "1.0.0", "weight": 50}, {"modelVersion": WORSE, "weight": 50}]
    with serve_in_thread(create_app(settings, plugin_manager)) as address:
        base = f"http://{address}"
        created = httpx.post(
            f"{base}/deployments", json={"modelName": "tiny", "traffic": split}, headers=bearer(tenant.key)
        )
        assert created.status_code == 201, created.text
        inputs = [{"x": float(x), "y": float(y)} for x, y in points]
        report = _run_experiment(base, tenant.key, created.json(), inputs, [float(t) for t in truths], "value")
    _the_shipped_version_wins(report, "1.0.0", WORSE)


def replace_runtime(settings: Settings, artifacts: Path) -> Settings:
    """``settings`` with its own artifact store (so the extra version is seen by this test's app only)."""
    return msgspec.structs.replace(settings, runtime=RuntimeSettings(artifact_dir=str(artifacts)))


# --- the housing model, trained worse with `cloudeasyml train` -----------------------------------------------


def _corrupted_training_copy(tmp_path: Path) -> tuple[Path, list[int]]:
    """A CSV of the shipped sales outside the held-out split with their prices shuffled (the relation between a
    house and its price is gone: a model trained on it can only learn the mean), and the held-out row indices.
    """
    from cloudeasyml_housing.dataset import shipped_data_path, split_indices

    with shipped_data_path().open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        rows = list(reader)
    train, held_out = split_indices(len(rows), 0.2, 0)
    training = [dict(rows[i]) for i in train]
    prices = [row["price"] for row in training]
    np.random.default_rng(3).shuffle(prices)
    for row, price in zip(training, prices, strict=True):
        row["price"] = price
    path = tmp_path / "corrupted.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(training)
    return path, [int(i) for i in held_out]


@pytest.mark.slow
@pytest.mark.export
def test_a_50_50_split_names_the_housing_model_better_than_one_trained_on_corrupted_sales(
    settings: Settings, plugin_manager: PluginManager, tenant: NewTenant, tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    housing = pytest.importorskip("cloudeasyml_housing")
    from cloudeasyml_housing.dataset import read_csv, shipped_data_path

    artifacts = tmp_path / "artifacts"
    corrupted, held_out = _corrupted_training_copy(tmp_path)
    env = {**os.environ, "CLOUDEASYML_RUNTIME__ARTIFACT_DIR": str(artifacts)}
    trained = subprocess.run(
        [sys.executable, "-m", "cloudeasyml.cli", "train", "housing", "--data", str(corrupted), "--epochs", "40"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert trained.returncode == 0, trained.stderr
    worse = trained.stdout.splitlines()[0].split()[1]
    shipped = housing.HousingModel.version

    data = read_csv(shipped_data_path())
    fields = housing.model.FEATURE_FIELDS
    inputs = [
        {_camel(field): _feature(field, value) for field, value in zip(fields, data.features[i], strict=True)}
        for i in held_out
    ]
    truths = [round(float(data.price[i]), 3) for i in held_out]
    # Each held-out sale twice (218 requests, about 109 an arm): enough for the test to see the difference.
    inputs, truths = inputs * 2, truths * 2
    split = [{"modelVersion": shipped, "weight": 50}, {"modelVersion": worse, "weight": 50}]
    with serve_in_thread(create_app(replace_runtime(settings, artifacts), plugin_manager)) as address:
        base = f"http://{address}"
        created = httpx.post(
            f"{base}/deployments", json={"modelName": "housing", "traffic": split}, headers=bearer(tenant.key)
        )
        assert created.status_code == 201, created.text
        report = _run_experiment(base, tenant.key, created.json(), inputs, truths, "value")
    comparison = _the_shipped_version_wins(report, shipped, worse)
    assert report["qualityMetric"]["field"] == "price"
    print(f"housing {shipped} against {worse}: {comparison}")  # the figures, in the test's output (-s)
    for arm in report["arms"]:
        print({key: arm[key] for key in ("modelVersion", "weight", "requests", "errors", "latencyMs", "quality")})
    if os.environ.get("CLOUDEASYML_EXPERIMENT_REPORT"):  # the README's walk-through shows this file
        Path(os.environ["CLOUDEASYML_EXPERIMENT_REPORT"]).write_bytes(msgspec.json.format(msgspec.json.encode(report)))


_BOOLEAN_FIELDS = frozenset(
    {"driveway", "recreation_room", "full_basement", "gas_hot_water", "air_conditioning", "preferred_area"}
)


def _feature(field: str, value: float) -> bool | float | int:
    """A CSV column's value as ``HouseFeatures`` takes it."""
    if field in _BOOLEAN_FIELDS:
        return bool(value)
    return float(value) if field == "lot_size" else int(value)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)
