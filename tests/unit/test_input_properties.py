"""Property tests (hypothesis): whatever bytes or text a client sends, the key parser, the ``Authorization``
parsing, the predict envelope and inputs decoding and the V2 codecs raise nothing but the platform's domain
errors (``MalformedRequestError`` / ``InvalidInputError``), and what they accept is what was sent."""

from __future__ import annotations

import json
import math
import zlib
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudeasyml.api.auth import _token
from cloudeasyml.api.open_inference import (
    InferenceRequest,
    RequestInput,
    decode_inputs,
    decompress,
    select_outputs,
    split_body,
)
from cloudeasyml.domain.inference import InferenceService, _Envelope, decode_json
from cloudeasyml.domain.key_format import KEY_ID_PATTERN, generate_key, parse_key
from cloudeasyml.errors import InvalidInputError, MalformedRequestError
from cloudeasyml.plugins.catalog import build_catalog
from cloudeasyml.plugins.manager import get_plugin_manager
from cloudeasyml.settings import OpenInferenceSettings
from tests.support import tiny_model

pytestmark = pytest.mark.fuzz

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DOMAIN = (InvalidInputError, MalformedRequestError)  # MalformedRequestError is an InvalidInputError; both named

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=30,
)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


# --- keys and the Authorization header ------------------------------------------------------------------


@PROPERTY
@given(st.text())
def test_parse_key_accepts_only_whole_well_formed_keys(token: str) -> None:
    parsed = parse_key(token)
    if parsed is not None:
        key_id, secret = parsed
        assert f"{key_id}.{secret}" == token and KEY_ID_PATTERN.fullmatch(key_id)
        assert "\n" not in token and token.isascii()


@PROPERTY
@given(st.sampled_from(["\n", "\r\n", " ", "\x00", "é"]), st.booleans())
def test_a_real_key_with_anything_appended_or_prepended_is_not_a_key(extra: str, before: bool) -> None:
    key_id, secret = generate_key()
    key = f"{key_id}.{secret}"
    assert parse_key(key) == (key_id, secret)
    assert parse_key(extra + key if before else key + extra) is None


@PROPERTY
@given(st.lists(st.tuples(st.sampled_from([b"authorization", b"x-api-key", b"other"]), st.binary()), max_size=4))
def test_the_authorization_header_parses_any_bytes(headers: list[tuple[bytes, bytes]]) -> None:
    token = _token(headers)
    assert token is None or isinstance(token, str)
    if token is not None:
        assert parse_key(token) is None or "\n" not in token


# --- the predict envelope and inputs --------------------------------------------------------------------

_ENVELOPE = msgspec.json.Decoder(_Envelope)
_SERVICE = InferenceService.__new__(InferenceService)  # only its decoding: no database, no runtime
_SERVICE._inputs_decoders = {}
_pm = get_plugin_manager(load_entrypoints=False)
_pm.register(tiny_model, name="tiny")
_TINY = build_catalog(_pm).get("tiny")


@PROPERTY
@given(
    st.binary(max_size=200)
    | json_values.map(_json_bytes)
    | st.builds(lambda v: b'{"inputs":' + v + b"}", st.binary(max_size=50))
)
def test_the_predict_envelope_decodes_any_bytes_to_a_domain_error_at_worst(body: bytes) -> None:
    try:
        envelope = decode_json(body, _ENVELOPE)
    except DOMAIN:
        return
    try:
        inputs = _SERVICE._decode_inputs(_TINY, envelope.inputs)
    except DOMAIN:
        return
    assert all(isinstance(item, tiny_model.Point) for item in inputs)


@PROPERTY
@given(st.integers(min_value=1, max_value=5000), st.sampled_from(["[", '{"a":', '[{"x":']))
def test_any_nesting_depth_is_a_domain_error_at_worst(depth: int, opener: str) -> None:
    body = f'{{"deploymentId":null,"inputs":{opener * depth}'.encode()
    with pytest.raises(DOMAIN):
        envelope = decode_json(body, _ENVELOPE)
        _SERVICE._decode_inputs(_TINY, envelope.inputs)


# --- the V2 codecs ---------------------------------------------------------------------------------------

_V2_REQUEST = msgspec.json.Decoder(InferenceRequest)
LIMITS = OpenInferenceSettings(max_tensor_elements=4096, max_request_elements=8192, max_tensor_dims=4)
datatypes = st.sampled_from(["FP32", "FP64", "INT64", "INT8", "UINT8", "BOOL", "FP16", "BYTES", "fp32", ""])
shapes = st.lists(st.integers(min_value=0, max_value=2**70), max_size=6) | st.lists(
    st.integers(min_value=1, max_value=4), min_size=1, max_size=4
)


@PROPERTY
@given(st.binary(max_size=300), st.sampled_from([None, "gzip", "deflate", "br", "identity", "GZIP "]))
def test_decompress_takes_any_bytes(body: bytes, encoding: str | None) -> None:
    for data in (body, zlib.compress(body)):
        try:
            out = decompress(data, encoding, limit=1000)
        except MalformedRequestError:
            continue
        assert len(out) <= 1000


@PROPERTY
@given(st.binary(max_size=100), st.none() | st.text(max_size=12))
def test_split_body_takes_any_header(body: bytes, header: str | None) -> None:
    try:
        head, rest = split_body(body, header)
    except MalformedRequestError:
        return
    assert head + rest == body


@PROPERTY
@given(st.binary(max_size=300) | json_values.map(_json_bytes))
def test_an_inference_request_decodes_any_bytes_to_a_domain_error_at_worst(body: bytes) -> None:
    try:
        request = decode_json(body, _V2_REQUEST)
    except DOMAIN:
        return
    try:
        decode_inputs(request.inputs, b"", LIMITS)
        select_outputs(request, ["score"])
    except DOMAIN:
        pass


@PROPERTY
@given(
    st.lists(
        st.builds(
            RequestInput,
            name=st.sampled_from(["a", "b"]),
            shape=shapes,
            datatype=datatypes,
            parameters=st.dictionaries(
                st.sampled_from(["binary_data_size", "other"]),
                st.none() | st.booleans() | st.integers(min_value=-5, max_value=10**6) | st.floats() | st.text(),
                max_size=2,
            ),
            data=st.none() | json_values,
        ),
        min_size=1,
        max_size=3,
    ),
    st.binary(max_size=256),
)
def test_decode_inputs_allocates_only_within_bounds(inputs: list[RequestInput], binary: bytes) -> None:
    try:
        arrays = decode_inputs(inputs, binary, LIMITS)
    except InvalidInputError:
        return
    total = 0
    for tensor in inputs:
        array = arrays[tensor.name]
        assert list(array.shape) == tensor.shape and 1 <= array.ndim <= LIMITS.max_tensor_dims
        assert array.size == math.prod(tensor.shape) <= LIMITS.max_tensor_elements
        total += array.size
    assert total <= LIMITS.max_request_elements


def test_decode_inputs_round_trips_json_and_binary() -> None:
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    flat = RequestInput(name="a", shape=[2, 3], datatype="FP32", data=values.ravel().tolist())
    raw = values.astype("<f4").tobytes()
    binary = RequestInput(name="b", shape=[2, 3], datatype="FP32", parameters={"binary_data_size": len(raw)})
    arrays = decode_inputs([flat, binary], raw, LIMITS)
    np.testing.assert_array_equal(arrays["a"], values)
    np.testing.assert_array_equal(arrays["b"], values)
