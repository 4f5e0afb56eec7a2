"""Tests of the housing plugin: export and parity, accuracy, input validation, training, serving without torch."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from importlib.metadata import PackageNotFoundError, distribution, entry_points
from pathlib import Path

import cloudeasyml_housing
import msgspec
import numpy as np
import pluggy
import pytest
from cloudeasyml_housing import HouseFeatures, HousePrice, HousingModel
from cloudeasyml_housing.dataset import FEATURE_COLUMNS, read_csv, regression_metrics, shipped_data_path, split_indices

import cloudeasyml.plugins.hookspecs
from cloudeasyml import ModelPlugin, TrainOptions
from cloudeasyml.runtime.export import ExportReport, export_onnx, torch_outputs
from cloudeasyml.runtime.session import OnnxSession, open_session

# Measured held-out figures of the shipped weights are R² 0.678, RMSE 16.75k, MAE 11.91k (README); the floors
# leave room for float differences across platforms, not for a worse model.
R2_FLOOR = 0.65
RMSE_CEILING = 17.5

VALID = {
    "lotSize": 5850,
    "bedrooms": 3,
    "bathrooms": 1,
    "stories": 2,
    "garagePlaces": 1,
    "driveway": True,
    "recreationRoom": False,
    "fullBasement": True,
    "gasHotWater": False,
    "airConditioning": False,
    "preferredArea": False,
}
DECODER = msgspec.json.Decoder(HouseFeatures)


@pytest.fixture(name="model", scope="module")
def fx_model() -> HousingModel:
    """The plugin's model, as the host holds it."""
    return HousingModel()


@pytest.fixture(name="exported", scope="module")
def fx_exported(model: HousingModel, tmp_path_factory: pytest.TempPathFactory) -> tuple[ExportReport, Path]:
    """Export the shipped weights once for the module: the exporter's report and the ONNX file."""
    path = tmp_path_factory.mktemp("housing") / "housing.onnx"
    return export_onnx(model, model.load_weights(), path), path


@pytest.fixture(name="session", scope="module")
def fx_session(exported: tuple[ExportReport, Path]) -> OnnxSession:
    """An onnxruntime session on the exported file, as the host serves it."""
    return open_session(exported[1], device="cpu")


def decode(fields: dict[str, object]) -> HouseFeatures:
    """Decode one input as the API does."""
    return DECODER.decode(msgspec.json.encode(fields))


def test_export_passes_the_parity_check_on_examples_and_a_random_batch(exported: tuple[ExportReport, Path]) -> None:
    """The host's exporter accepts the graph; torch and onnxruntime agree within 1e-4 thousand dollars."""
    report, path = exported
    assert report.parity_error_examples <= 1e-4
    assert report.parity_error_random <= 1e-4
    assert path.stat().st_size == report.size_bytes > 0


def test_graph_has_the_declared_dynamic_batch_tensors(model: HousingModel, session: OnnxSession) -> None:
    """The session's inputs and outputs carry the TensorSpec names, and any batch size runs."""
    assert session.input_names == ("features",)
    assert session.output_names == ("price",)
    for size in (1, 2, 7, 300):
        batch = model.random_arrays(np.random.default_rng(size), size)
        assert session.run(batch)["price"].shape == (size, 1)


def test_onnxruntime_prices_equal_torch_prices_for_several_houses(model: HousingModel, session: OnnxSession) -> None:
    """The served prediction of each house is torch's to within 1e-4 (thousand dollars)."""
    houses = [*model.example_inputs(), decode(VALID), decode({**VALID, "lotSize": 16200.5, "preferredArea": True})]
    arrays = model.to_arrays(houses)
    expected = torch_outputs(model, model.build_module(model.load_weights()), arrays)["price"][:, 0]
    served = model.from_outputs(session.run(arrays))
    assert [type(p) for p in served] == [HousePrice] * len(houses)
    np.testing.assert_allclose([p.price for p in served], expected, rtol=0, atol=1e-4)


def test_shipped_weights_reach_the_documented_held_out_accuracy(model: HousingModel, session: OnnxSession) -> None:
    """On the 20 % of the shipped data held out from training (seed 0), the served graph keeps R² and RMSE."""
    data = read_csv(shipped_data_path())
    _, held_out = split_indices(len(data.price), 0.2, seed=0)
    predicted = session.run({"features": data.features[held_out]})["price"]
    metrics = regression_metrics(data.price[held_out], predicted)
    assert metrics["r2"] > R2_FLOOR
    assert metrics["rmse"] < RMSE_CEILING


def test_example_prices_are_plausible_and_ordered(model: HousingModel, session: OnnxSession) -> None:
    """Examples price between $25k and $190k (the data's range), and the big house beats the starter."""
    outputs = session.run(model.to_arrays(model.example_inputs()))
    typical, large, starter = (p.price for p in model.from_outputs(outputs))
    assert all(25 < price < 190 for price in (typical, large, starter))
    assert large > typical > starter


def test_feature_columns_follow_the_csv_columns(model: HousingModel) -> None:
    """to_arrays of the first shipped row, typed as JSON, equals the row read from the CSV."""
    first = decode(VALID)  # VALID is the CSV's first row: 5850,3,1,2,yes,no,yes,no,no,1,no
    np.testing.assert_array_equal(model.to_arrays([first])["features"][0], read_csv(shipped_data_path()).features[0])
    assert len(FEATURE_COLUMNS) == model.input_tensors[0].shape[1] == 11


def test_to_arrays_of_an_empty_batch_has_eleven_columns(model: HousingModel) -> None:
    """An empty batch still has the graph's shape."""
    assert model.to_arrays([])["features"].shape == (0, 11)


def test_example_input_is_valid_camel_case_json(model: HousingModel) -> None:
    """The published exampleInput decodes back with the API's decoder, with camelCase names on the wire."""
    wire = msgspec.json.encode(model.example_inputs()[0])
    assert set(msgspec.json.decode(wire)) == set(VALID)
    assert DECODER.decode(wire) == model.example_inputs()[0]
    assert msgspec.json.encode(HousePrice(price=64.5)) == b'{"price":64.5}'


@pytest.mark.parametrize(
    "change",
    [
        {"lotSize": -100},
        {"lotSize": 0},
        {"bedrooms": -1},
        {"stories": 0},
        {"garagePlaces": 11},
        {"bedrooms": "3"},
        {"bedrooms": 2.5},
        {"driveway": 1},
        {"lotSize": "big"},
        {"swimmingPool": True},
        {"lot_size": 5850},
    ],
    ids=str,
)
def test_invalid_inputs_are_rejected_by_the_schema(change: dict[str, object]) -> None:
    """Impossible values, wrong types and unknown fields (snake_case included) fail to decode."""
    with pytest.raises(msgspec.ValidationError):
        decode({**VALID, **change})


def test_a_missing_field_is_rejected() -> None:
    """Every feature is required: nothing is silently assumed."""
    with pytest.raises(msgspec.ValidationError, match="garagePlaces"):
        decode({k: v for k, v in VALID.items() if k != "garagePlaces"})


def test_train_on_the_shipped_csv_returns_metrics_and_weights_like_the_shipped_ones(model: HousingModel) -> None:
    """A few epochs give finite held-out metrics, one progress call per epoch, and loadable weights."""
    calls: list[tuple[int, int, float]] = []
    result = model.train(
        shipped_data_path(), TrainOptions(epochs=3, seed=1), lambda e, n, m: calls.append((e, n, m["loss"]))
    )
    assert set(result.metrics) == {"rmse", "mae", "r2"}
    assert all(math.isfinite(value) for value in result.metrics.values())
    assert [(e, n) for e, n, _ in calls] == [(1, 3), (2, 3), (3, 3)]
    assert all(math.isfinite(loss) and loss > 0 for _, _, loss in calls)
    shipped = model.load_weights()
    assert {k: (v.shape, v.dtype) for k, v in result.weights.items()} == {
        k: (v.shape, v.dtype) for k, v in shipped.items()
    }
    model.build_module(result.weights)  # strict load: same keys and shapes


def test_train_names_the_missing_columns(model: HousingModel, tmp_path: Path) -> None:
    """A CSV without some columns fails with a ValueError that lists them."""
    path = tmp_path / "short.csv"
    path.write_text("price,lotsize,bedrooms\n42000,5850,3\n")
    with pytest.raises(ValueError, match="missing column.*bathrms.*prefarea"):
        model.train(path, TrainOptions(epochs=1))


def test_train_names_the_line_of_a_bad_value(model: HousingModel, tmp_path: Path) -> None:
    """A value that is not yes/no in a boolean column is reported with its line number."""
    lines = shipped_data_path().read_text().splitlines()
    lines[3] = lines[3].replace(",yes,", ",maybe,", 1)
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="line 4: column 'driveway' must be yes or no"):
        model.train(path, TrainOptions(epochs=1))


def test_serving_path_never_imports_torch() -> None:
    """Importing the plugin, decoding JSON, to_arrays and from_outputs work without torch."""
    script = textwrap.dedent(
        """
        import sys
        import msgspec, numpy as np
        import cloudeasyml_housing
        model = cloudeasyml_housing.HousingModel()
        items = msgspec.json.decode(msgspec.json.encode(model.example_inputs()), type=list[model.input_type])
        arrays = model.to_arrays(items)
        assert arrays["features"].shape == (3, 11)
        prices = model.from_outputs({"price": np.array([[64.832], [120.5], [40.0]], np.float32)})
        assert [p.price for p in prices] == [64.832, 120.5, 40.0], prices
        assert model.weights_digest()
        assert "torch" not in sys.modules, "torch was imported"
        print("ok")
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_hookimpl_registers_exactly_one_model_named_housing() -> None:
    """The module's hook gives the host one HousingModel instance."""
    pm = pluggy.PluginManager("cloudeasyml")
    pm.add_hookspecs(cloudeasyml.plugins.hookspecs)
    pm.register(cloudeasyml_housing)
    registered: list[ModelPlugin] = []
    pm.hook.cloudeasyml_register_models(register=registered.append)
    assert [type(m) for m in registered] == [HousingModel]
    assert registered[0].name == "housing"
    assert registered[0].task == "regression"


def test_entry_point_names_the_plugin_module() -> None:
    """Once the distribution is installed, the cloudeasyml group has housing = cloudeasyml_housing."""
    try:
        distribution("cloudeasyml-housing")
    except PackageNotFoundError:
        pytest.skip("cloudeasyml-housing is not installed (pip install -e plugin_packages/cloudeasyml-housing)")
    found = [ep for ep in entry_points(group="cloudeasyml") if ep.name == "housing"]
    assert [ep.value for ep in found] == ["cloudeasyml_housing"]
    assert found[0].load() is cloudeasyml_housing


def test_package_ships_its_data_and_weights(model: HousingModel) -> None:
    """The CSV (546 sales) and the weights lie inside the package, where the wheel carries them."""
    assert len(read_csv(shipped_data_path()).price) == 546
    assert model.weights_path().is_file()
    assert model.weights_path().parent == shipped_data_path().parent.parent
