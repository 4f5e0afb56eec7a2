"""The CUDA probe opens a real onnxruntime session on its embedded graph and reports the provider it got."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from cloudeasyml.runtime.probe import PROBE_GRAPH, probe_providers


def test_the_embedded_graph_is_the_identity_model_onnx_helper_builds() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8, producer_name="cloudeasyml-doctor"
    )
    onnx.checker.check_model(model)
    assert model.SerializeToString() == PROBE_GRAPH
    session = ort.InferenceSession(PROBE_GRAPH, providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": np.array([1.5], dtype=np.float32)})[0].tolist() == [1.5]


def test_the_probe_reports_what_a_session_really_got() -> None:
    report = probe_providers()
    assert report.available == tuple(ort.get_available_providers()) and report.error is None
    assert report.cuda_listed == ("CUDAExecutionProvider" in report.available)
    if report.cuda_listed:
        assert report.session_providers[-1] == "CPUExecutionProvider"
        assert report.cuda_loads == (report.session_providers[0] == "CUDAExecutionProvider")
    else:
        assert not report.cuda_loads and report.session_providers == ()
