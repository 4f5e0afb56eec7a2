"""The tiny model exported through torch: the graph the other tests serve (``tiny_model.graph()``, built with
``onnx.helper``) is the one torch's exporter writes, and both compute the numpy reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from cloudeasyml.runtime.artifacts import ArtifactStore
from cloudeasyml.runtime.resolver import ArtifactResolver
from tests.support import tiny_model

pytestmark = pytest.mark.export


def _run(model: onnx.ModelProto, points: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["score"], {"points": points})[0]


def test_the_exported_tiny_model_is_the_graph_the_tests_serve(tmp_path: Path) -> None:
    pytest.importorskip("torch")  # here, not at import: collecting the suite then costs no torch import
    model = tiny_model.TinyModel()
    path, manifest = ArtifactResolver(ArtifactStore(tmp_path)).export(model, model.version)
    report = manifest["export"]
    assert max(report["parityErrorExamples"], report["parityErrorRandom"]) <= model.parity_tolerance  # type: ignore[index]
    exported, built = onnx.load(str(path)), tiny_model.graph()
    assert [(n.op_type, list(n.input)) for n in exported.graph.node] == [
        (n.op_type, list(n.input)) for n in built.graph.node
    ]
    assert [i.name for i in exported.graph.input] == ["points"] and [o.name for o in exported.graph.output] == ["score"]
    assert exported.graph.input[0].type == built.graph.input[0].type
    assert (exported.opset_import[0].version, exported.ir_version) == (tiny_model.OPSET, tiny_model.IR_VERSION)
    points = np.random.default_rng(3).normal(scale=10, size=(64, 2)).astype(np.float32)
    expected = tiny_model.numpy_forward(model.load_weights(), points)
    np.testing.assert_allclose(_run(exported, points)[:, 0], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_run(built, points)[:, 0], expected, rtol=1e-5, atol=1e-5)
