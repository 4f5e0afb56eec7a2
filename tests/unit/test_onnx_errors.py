"""onnxruntime's errors become plain ``InvalidInputError``s inside the runtime: no graph node names, no
onnxruntime exception types above ``cloudeasyml/runtime/`` (real sessions on small real graphs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from cloudeasyml.errors import InvalidInputError
from cloudeasyml.runtime.session import open_session

NODE = "secret_internal_gather_node"


def _graph(path: Path) -> Path:
    """``ids`` (INT64 [batch, sequence]) → rows of a 4-row table: like a token embedding with 4 positions."""
    table = helper.make_tensor("table", TensorProto.FLOAT, [4, 2], np.arange(8, dtype=np.float32).ravel().tolist())
    gather = helper.make_node("Gather", ["table", "ids"], ["rows"], name=NODE, axis=0)
    graph = helper.make_graph(
        [gather],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["batch", "sequence", 2])],
        initializer=[table],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture(name="session", scope="module")
def fx_session(tmp_path_factory: pytest.TempPathFactory):
    return open_session(_graph(tmp_path_factory.mktemp("onnx") / "g.onnx"), device="cpu")


def test_valid_inputs_run(session) -> None:
    rows = session.run({"ids": np.array([[0, 3]], dtype=np.int64)})["rows"]
    assert rows.shape == (1, 2, 2)


@pytest.mark.parametrize(
    "ids",
    [
        np.array([[0, 4]], dtype=np.int64),  # past the table: like a sequence longer than the model's positions
        np.array([[0, -9]], dtype=np.int64),
        np.array([[0.0, 1.0]], dtype=np.float32),  # wrong datatype
        np.array([0, 1], dtype=np.int64),  # wrong rank
    ],
)
def test_onnxruntime_errors_are_plain_invalid_input(session, ids: np.ndarray) -> None:
    with pytest.raises(InvalidInputError) as caught:
        session.run({"ids": ids})
    message = caught.value.detail
    assert NODE not in message and "onnxruntime" not in message.lower() and "Gather" not in message
    assert type(caught.value) is InvalidInputError and caught.value.__cause__ is None
