"""The Open Inference Protocol codecs on their own: tensors encoded as a response body (JSON data or Triton's binary
extension) decode back to the same arrays through the request path, for every datatype; output selection and
content encodings. No server: tests/integration/test_v2_protocol.py drives the same codecs over HTTP."""

from __future__ import annotations

import gzip
import zlib

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from cloudeasyml.api.open_inference import (
    HEADER_LENGTH,
    InferenceRequest,
    RequestInput,
    RequestOutput,
    decode_inputs,
    decompress,
    encode_outputs,
    select_outputs,
    split_body,
)
from cloudeasyml.domain.tensor_inference import DTYPE_BY_DATATYPE
from cloudeasyml.errors import InvalidInputError, MalformedRequestError
from cloudeasyml.settings import OpenInferenceSettings

LIMITS = OpenInferenceSettings()


def _tensors() -> st.SearchStrategy[dict[str, np.ndarray]]:
    """One to three named tensors of any supported datatype: finite (JSON has no NaN), small; UINT64 below 2**63
    (see the xfail below)."""

    def tensor(dtype: np.dtype) -> st.SearchStrategy[np.ndarray]:
        elements: dict[str, object] | None = None
        if dtype.kind == "f":
            elements = {"allow_nan": False, "allow_infinity": False}
        elif dtype == np.uint64:
            elements = {"max_value": 2**63 - 1}
        shapes = array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4)
        return arrays(dtype, shapes, elements=elements)  # type: ignore[arg-type]

    named = st.sampled_from(sorted(DTYPE_BY_DATATYPE.values(), key=str)).flatmap(tensor)
    return st.dictionaries(st.sampled_from(["a", "b", "score", "x.1"]), named, min_size=1, max_size=3)


def _as_request_body(outputs: dict[str, np.ndarray], binary: dict[str, bool]) -> tuple[bytes, str | None]:
    """What a client sends to feed ``outputs`` back as inputs: the encoder's entries turned into request inputs,
    the JSON header, then the binary tensors (and the header length when there are any)."""
    entries, blob = encode_outputs(outputs, [(name, binary[name]) for name in outputs])
    inputs = [
        RequestInput(entry.name, entry.shape, entry.datatype, parameters=entry.parameters or {}, data=entry.data)
        for entry in entries
    ]
    header = msgspec.json.encode(InferenceRequest(inputs=inputs))
    return header + blob, (str(len(header)) if blob else None)


@settings(max_examples=60, deadline=None)
@given(tensors=_tensors(), data=st.data())
def test_any_tensors_round_trip_through_json_and_the_binary_extension(tensors: dict[str, np.ndarray], data) -> None:  # type: ignore[no-untyped-def]
    binary = {name: data.draw(st.booleans(), label=f"binary {name}") for name in tensors}
    body, header_length = _as_request_body(tensors, binary)
    head, blob = split_body(body, header_length)
    request = msgspec.json.decode(head, type=InferenceRequest)
    decoded = decode_inputs(request.inputs, blob, LIMITS)
    assert list(decoded) == list(tensors)
    for name, array in tensors.items():
        assert decoded[name].dtype == array.dtype and decoded[name].shape == array.shape
        np.testing.assert_array_equal(decoded[name], array)


def test_uint64_json_data_past_int64_decodes_exactly() -> None:
    # np.asarray makes float64 of this list (it mixes an int past 2**63 with others): 2**64 - 1 would be refused.
    tensor = RequestInput("x", [2], "UINT64", data=[2**64 - 1, 1])
    assert decode_inputs([tensor], b"", LIMITS)["x"].tolist() == [2**64 - 1, 1]
    nested = RequestInput("x", [2, 1], "UINT64", data=[[2**64 - 1], [2**63]])
    assert decode_inputs([nested], b"", LIMITS)["x"].tolist() == [[2**64 - 1], [2**63]]


@pytest.mark.parametrize(
    ("datatype", "data"),
    [("UINT64", [2**64, 1]), ("UINT64", [-1, 2**64 - 1]), ("INT64", [2**63, -1]), ("UINT8", [256, 2**64 - 1])],
)
def test_integers_past_the_types_range_are_refused(datatype: str, data: list[int]) -> None:
    with pytest.raises(InvalidInputError, match="out of range"):
        decode_inputs([RequestInput("x", [2], datatype, data=data)], b"", LIMITS)


def test_floats_mixed_with_big_integers_are_not_integers() -> None:
    with pytest.raises(InvalidInputError, match="not UINT64"):
        decode_inputs([RequestInput("x", [2], "UINT64", data=[1.5, 2**64 - 1])], b"", LIMITS)


def test_binary_outputs_are_little_endian_bytes_in_the_order_selected() -> None:
    outputs = {"first": np.array([[1, 2]], dtype=np.int32), "second": np.array([0.5, -2.0], dtype=np.float64)}
    entries, blob = encode_outputs(outputs, [("second", True), ("first", True)])
    assert [(e.name, e.datatype, e.shape, e.parameters, e.data) for e in entries] == [
        ("second", "FP64", [2], {"binary_data_size": 16}, None),
        ("first", "INT32", [1, 2], {"binary_data_size": 8}, None),
    ]
    assert blob == np.array([0.5, -2.0], dtype="<f8").tobytes() + np.array([1, 2], dtype="<i4").tobytes()


def test_json_outputs_are_flat_row_major_lists() -> None:
    (entry,), blob = encode_outputs({"m": np.arange(6, dtype=np.int64).reshape(2, 3)}, [("m", False)])
    assert (entry.shape, entry.data, entry.parameters, blob) == ([2, 3], [0, 1, 2, 3, 4, 5], None, b"")


def test_big_endian_binary_input_is_never_assumed() -> None:
    # The extension is little-endian whatever the machine: these bytes are 1, not 16777216.
    tensor = RequestInput("x", [1], "INT32", parameters={"binary_data_size": 4})
    assert decode_inputs([tensor], b"\x01\x00\x00\x00", LIMITS)["x"].tolist() == [1]


@pytest.mark.parametrize(
    ("inputs", "binary", "message"),
    [
        ([RequestInput("x", [2], "FP32", parameters={"binary_data_size": 8})], b"\x00" * 4, "body ends"),
        ([RequestInput("x", [2], "FP32", parameters={"binary_data_size": 4})], b"\x00" * 4, "needs 8"),
        ([RequestInput("x", [1], "FP32", parameters={"binary_data_size": 4})], b"\x00" * 6, "belong to no input"),
        ([RequestInput("x", [1], "FP32", data=[1.0], parameters={"binary_data_size": 4})], b"\x00" * 4, "both"),
        ([RequestInput("x", [2], "FP32", data=[1.0])], b"", "needs 2 elements"),
        ([RequestInput("x", [1], "INT8", data=[300])], b"", "out of range"),
        ([RequestInput("x", [1], "BYTES", data=["a"])], b"", "unsupported datatype"),
        ([RequestInput("x", [1], "FP32", data=[1.0]), RequestInput("x", [1], "FP32", data=[1.0])], b"", "twice"),
    ],
)
def test_inputs_that_do_not_add_up_are_invalid(inputs: list[RequestInput], binary: bytes, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        decode_inputs(inputs, binary, LIMITS)


def test_output_selection_follows_the_request_default_and_each_output() -> None:
    plain = msgspec.convert(
        {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}, InferenceRequest
    )
    assert select_outputs(plain, ["a", "b"]) == [("a", False), ("b", False)]
    chosen = msgspec.convert(
        {
            "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
            "parameters": {"binary_data_output": True},
            "outputs": [{"name": "b"}, {"name": "a", "parameters": {"binary_data": False}}],
        },
        InferenceRequest,
    )
    assert select_outputs(chosen, ["a", "b"]) == [("b", True), ("a", False)]
    for outputs, message in (([{"name": "c"}], "unknown output"), ([{"name": "a"}, {"name": "a"}], "twice")):
        bad = msgspec.structs.replace(chosen, outputs=msgspec.convert(outputs, list[RequestOutput]))
        with pytest.raises(InvalidInputError, match=message):
            select_outputs(bad, ["a", "b"])


def test_split_body_needs_a_header_length_within_the_body() -> None:
    assert split_body(b"{}rest", None) == (b"{}rest", b"")
    assert split_body(b"{}rest", "2") == (b"{}", b"rest")
    for length in ("0", "7", "two"):
        with pytest.raises(MalformedRequestError, match=HEADER_LENGTH):
            split_body(b"{}rest", length)


def test_gzip_and_deflate_bodies_are_inflated_within_the_limit() -> None:
    body = b'{"inputs": []}' * 10
    assert decompress(gzip.compress(body), "gzip", len(body)) == body
    assert decompress(zlib.compress(body), " Deflate ", len(body)) == body
    assert decompress(body, None, 1) == body  # identity: nothing to inflate, the body limit applies elsewhere
    with pytest.raises(MalformedRequestError, match="more than"):
        decompress(gzip.compress(body), "gzip", len(body) - 1)
    with pytest.raises(MalformedRequestError, match="truncated"):
        decompress(gzip.compress(body)[:-8], "gzip", len(body))
    with pytest.raises(MalformedRequestError, match="unsupported"):
        decompress(body, "br", len(body))
