"""A tiny but real model for the platform's tests: a 2→4→1 MLP with fixed weights.

Prediction tests serve ``graph()``: the same network written with ``onnx.helper`` (the very nodes, names and opset
torch's exporter writes for it), placed in the artifact store by ``seed_graph``, so they need neither torch nor an
export. The tests marked ``export`` export it through torch like any plugin and check the two agree."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import msgspec
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from cloudeasyml import ModelPlugin, Pricing, QualityMetric, ServingConfig, TensorSpec, hookimpl

WEIGHTS = Path(__file__).with_name("tiny_weights.npz")
OPSET = 18
"""The opset (and below, the IR version) torch 2.13's exporter writes."""
IR_VERSION = 10


class Point(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """One input."""

    x: Annotated[float, msgspec.Meta(ge=-1000, le=1000)]
    y: Annotated[float, msgspec.Meta(ge=-1000, le=1000)]


class Score(msgspec.Struct, rename="camel"):
    """One output."""

    score: float


def tiny_weights() -> dict[str, np.ndarray]:
    """Deterministic weights (what ``tiny_weights.npz`` holds)."""
    rng = np.random.default_rng(7)
    return {
        "0.weight": rng.normal(size=(4, 2)).astype(np.float32),
        "0.bias": rng.normal(size=(4,)).astype(np.float32),
        "2.weight": rng.normal(size=(1, 4)).astype(np.float32),
        "2.bias": rng.normal(size=(1,)).astype(np.float32),
    }


def numpy_forward(weights: Mapping[str, np.ndarray], points: np.ndarray) -> np.ndarray:
    """The same network in numpy, to check served predictions independently of torch and onnxruntime."""
    hidden = np.maximum(points @ weights["0.weight"].T + weights["0.bias"], 0)
    return (hidden @ weights["2.weight"].T + weights["2.bias"])[:, 0]


def graph(weights: Mapping[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """The network as an ONNX graph, built without torch: ``Gemm → Relu → Gemm`` over the weights (the shipped ones
    by default), input ``points`` ``[batch, 2]``, output ``score`` ``[batch, 1]``."""
    weights = TinyModel().load_weights() if weights is None else weights
    gemm = {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 1}
    nodes = [
        helper.make_node("Gemm", ["points", "0.weight", "0.bias"], ["linear"], **gemm),
        helper.make_node("Relu", ["linear"], ["relu"]),
        helper.make_node("Gemm", ["relu", "2.weight", "2.bias"], ["score"], **gemm),
    ]
    network = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("points", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
        [numpy_helper.from_array(np.asarray(value, dtype=np.float32), name) for name, value in weights.items()],
    )
    model = helper.make_model(network, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    onnx.checker.check_model(model, full_check=True)
    return model


def seed_graph(artifact_dir: Path, model: TinyModel | None = None) -> Path:
    """Put ``graph()`` where the artifact store keeps the export of the shipped weights (as ``cloudeasyml export``
    would have), so that loading the model finds it and never exports; returns its path."""
    from cloudeasyml.runtime.artifacts import ArtifactStore
    from cloudeasyml.runtime.resolver import ArtifactResolver

    model = model or TinyModel()
    resolver = ArtifactResolver(ArtifactStore(artifact_dir))
    path = resolver.store.onnx_path(model.name, model.version, resolver.weights_digest(model, model.version))
    if not path.exists():
        manifest = {"model": model.name, "version": model.version, "weightsSha256": model.weights_digest()}

        def produce(tmp: Path) -> dict[str, str]:
            onnx.save(graph(model.load_weights()), str(tmp))
            return {"builtBy": "tests/support/tiny_model.py graph() (onnx.helper), not an export"}

        resolver.store.write_export(path, produce, manifest)
    return path


def seed_version(artifact_dir: Path, version: str, shift: float) -> dict[str, np.ndarray]:
    """Store a trained version of the tiny model, as ``cloudeasyml train`` would (its weights in the artifact store,
    the shipped ones with ``shift`` added to the output bias, so its scores are the shipped version's plus
    ``shift``), with its graph beside them; returns the weights. Nothing happens if the version exists."""
    from cloudeasyml.core.digest import file_digest
    from cloudeasyml.runtime.artifacts import ArtifactStore

    model = TinyModel()
    store = ArtifactStore(artifact_dir)
    weights = {name: value.copy() for name, value in model.load_weights().items()}
    weights["2.bias"] = (weights["2.bias"] + shift).astype(np.float32)
    path = store.trained_weights_path(model.name, version)
    if not path.exists():
        store.save_trained_weights(model.name, version, weights)
    onnx_path = store.onnx_path(model.name, version, file_digest(path))
    if not onnx_path.exists():
        manifest = {"model": model.name, "version": version, "weightsSha256": file_digest(path)}
        store.write_export(onnx_path, lambda tmp: onnx.save(graph(weights), str(tmp)), manifest)
    return weights


class TinyModel(ModelPlugin[Point, Score]):
    """Scores a point: a two-layer perceptron."""

    name = "tiny"
    version = "1.0.0"
    task = "regression"
    input_type = Point
    output_type = Score
    input_tensors = (TensorSpec("points", "FP32", (-1, 2), ("batch",)),)
    output_tensors = (TensorSpec("score", "FP32", (-1, 1), ("batch",)),)
    pricing = Pricing(per_request=Decimal("0.001"), per_second=Decimal("0.5"))
    serving = ServingConfig(max_batch_size=16)
    quality_metric = QualityMetric.regression("score")

    def weights_path(self) -> Path:
        return WEIGHTS

    def example_inputs(self) -> list[Point]:
        return [Point(x=1.0, y=2.0), Point(x=-0.5, y=0.25)]

    def build_module(self, weights):  # type: ignore[no-untyped-def]
        import torch

        module = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
        module.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
        return module.eval()

    def to_arrays(self, items: list[Point]) -> dict[str, np.ndarray]:
        return {"points": np.array([[p.x, p.y] for p in items], dtype=np.float32)}

    def from_outputs(self, outputs: Mapping[str, np.ndarray]) -> list[Score]:
        return [Score(score=float(v)) for v in outputs["score"][:, 0]]


@hookimpl
def cloudeasyml_register_models(register):  # type: ignore[no-untyped-def]
    """Register the tiny model."""
    register(TinyModel())
