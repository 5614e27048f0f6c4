"""The OIP v2 codec, without a server: tritonclient's own encoder and decoder on one side, ours on the other.

`InferenceServerClient.generate_request_body` writes exactly the bytes `client.infer` would send, and
`parse_response_body` reads a response as `client.infer` would, so a round trip here is what tritonclient
sees over HTTP. Every malformed request must be an OipError (400) naming what is wrong, whatever the bytes.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import pytest
import tritonclient.http as triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from tritonclient.utils import np_to_triton_dtype

from serving.inputs import InputError
from serving.oip import (
    DATATYPES,
    HEADER_LENGTH,
    InferRequest,
    OipError,
    RequestedOutput,
    TensorSpec,
    encode_infer_response,
    error_body,
    model_metadata,
    parse_infer_request,
    server_metadata,
    tensor_specs,
)

Client = triton.InferenceServerClient
RNG = np.random.default_rng(5)
FEATURES = TensorSpec("features", "FP32", [-1, 4], ("batch", ""))
LOGITS = TensorSpec("logits", "FP32", [-1, 2], ("batch", ""))
PROBABILITIES = TensorSpec("probabilities", "FP32", [-1, 2], ("batch", ""))
OUTPUTS = [LOGITS, PROBABILITIES]
TEXT = [
    TensorSpec("input_ids", "INT64", [-1, -1], ("batch", "seq")),
    TensorSpec("attention_mask", "INT64", [-1, -1], ("batch", "seq")),
]
PIXELS = TensorSpec("pixels", "UINT8", [-1, 3, 3, 1], ("batch", "", "", ""))


def request(
    inputs: list[tuple[str, np.ndarray, bool]], outputs: list[Any] | None = None, **kw: Any
) -> tuple[bytes, int | None]:
    """tritonclient's request body and header length for (name, array, binary) inputs."""
    infer_inputs = []
    for name, array, binary in inputs:
        infer_input = triton.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        infer_inputs.append(infer_input.set_data_from_numpy(array, binary_data=binary))
    return Client.generate_request_body(infer_inputs, outputs=outputs, **kw)


def parse(body: bytes | dict[str, Any], header_length: int | str | None = None, **kw: Any) -> InferRequest:
    """parse_infer_request for the FEATURES model; a dict body is JSON-encoded first."""
    raw = orjson.dumps(body) if isinstance(body, dict) else body
    return parse_infer_request(raw, header_length, kw.pop("inputs", [FEATURES]), OUTPUTS, **kw)


def read_back(body: bytes, headers: dict[str, str]) -> triton.InferResult:
    length = headers.get(HEADER_LENGTH)
    return Client.parse_response_body(body, header_length=None if length is None else int(length))


def features(rows: int = 3) -> np.ndarray:
    return RNG.normal(size=(rows, 4)).astype(np.float32)


# --- round trips with tritonclient ---------------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize(
    ("spec", "make"),
    [
        (FEATURES, features),
        (TensorSpec("ids", "INT64", [-1, 5]), lambda: RNG.integers(-(2**62), 2**62, (3, 5))),
        (PIXELS, lambda: RNG.integers(0, 256, (2, 3, 3, 1)).astype(np.uint8)),
    ],
    ids=["FP32", "INT64", "UINT8"],
)
def test_tritonclient_request_decodes_to_the_same_array(spec: TensorSpec, make: Any, binary: bool) -> None:
    array = make()
    body, json_size = request([(spec.name, array, binary)], request_id="req-7")
    assert (json_size is not None) == binary
    parsed = parse_infer_request(body, json_size, [spec], OUTPUTS)
    tensor = parsed.tensors[spec.name]
    assert tensor.dtype == array.dtype and tensor.shape == array.shape and tensor.flags.c_contiguous
    np.testing.assert_array_equal(tensor, array)
    assert parsed.id == "req-7" and parsed.batch_size == array.shape[0]
    # no outputs named: tritonclient asks for every output in binary
    assert parsed.outputs == [] and parsed.binary_output_default is True


@pytest.mark.parametrize("datatype", sorted(DATATYPES))
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_every_datatype_round_trips_both_ways(datatype: str, binary: bool) -> None:
    dtype = DATATYPES[datatype]
    if dtype.kind == "b":
        array = RNG.integers(0, 2, (2, 3)).astype(bool)
    elif dtype.kind == "f":
        array = RNG.normal(size=(2, 3)).astype(dtype)
    else:
        info = np.iinfo(dtype)
        array = np.array([[info.min, info.max, 0], [1, info.max - 1, info.min + 1]], dtype)
    spec = TensorSpec("x", datatype, [-1, 3])
    body, json_size = request([("x", array, binary)])
    np.testing.assert_array_equal(parse_infer_request(body, json_size, [spec], []).tensors["x"], array)

    requested = [RequestedOutput("y", binary)]
    response, headers = encode_infer_response("m", "1", None, {"y": array}, requested, False)
    result = read_back(response, headers).as_numpy("y")
    assert result.dtype == array.dtype
    np.testing.assert_array_equal(result, array)


def test_two_inputs_mixing_binary_and_json_are_read_in_input_order() -> None:
    ids = RNG.integers(0, 30_000, (2, 6))
    mask = np.ones((2, 6), np.int64)
    body, json_size = request([("attention_mask", mask, True), ("input_ids", ids, False)])
    parsed = parse_infer_request(body, json_size, TEXT, [PROBABILITIES])
    assert list(parsed.tensors) == ["input_ids", "attention_mask"]  # the model's order
    np.testing.assert_array_equal(parsed.tensors["input_ids"], ids)
    np.testing.assert_array_equal(parsed.tensors["attention_mask"], mask)

    body, json_size = request([("input_ids", ids, True), ("attention_mask", mask * 7, True)])
    parsed = parse_infer_request(body, json_size, TEXT, [PROBABILITIES])
    np.testing.assert_array_equal(parsed.tensors["attention_mask"], mask * 7)


@pytest.mark.parametrize("binary_in", [True, False], ids=["binary-in", "json-in"])
@pytest.mark.parametrize("binary_out", [True, False], ids=["binary-out", "json-out"])
def test_requested_outputs_come_back_as_asked(binary_in: bool, binary_out: bool) -> None:
    x = features()
    wanted = [triton.InferRequestedOutput("probabilities", binary_data=binary_out)]
    body, json_size = request([("features", x, binary_in)], outputs=wanted, request_id="abc")
    parsed = parse(body, json_size)
    assert parsed.outputs == [RequestedOutput("probabilities", binary_out)]
    probabilities = np.abs(x[:, :2]) / np.abs(x[:, :2]).sum(axis=1, keepdims=True)
    results = {"logits": x[:, :2], "probabilities": probabilities}
    response, headers = encode_infer_response(
        "tiny", "v0003", parsed.id, results, parsed.outputs, parsed.binary_output_default
    )
    assert headers["Content-Type"] == ("application/octet-stream" if binary_out else "application/json")
    assert (HEADER_LENGTH in headers) == binary_out
    result = read_back(response, headers)
    np.testing.assert_array_equal(result.as_numpy("probabilities"), probabilities)
    assert result.as_numpy("logits") is None  # not requested, not sent
    assert result.get_response()["id"] == "abc"
    assert result.get_response()["model_name"] == "tiny"
    assert result.get_response()["model_version"] == "v0003"


def test_all_outputs_in_the_model_order_when_none_requested() -> None:
    logits, probabilities = features()[:, :2], features()[:, 2:]
    for binary in (True, False):
        response, headers = encode_infer_response(
            "m", "1", None, {"logits": logits, "probabilities": probabilities}, [], binary
        )
        result = read_back(response, headers)
        assert [o["name"] for o in result.get_response()["outputs"]] == ["logits", "probabilities"]
        assert "id" not in result.get_response()
        np.testing.assert_array_equal(result.as_numpy("logits"), logits)
        np.testing.assert_array_equal(result.as_numpy("probabilities"), probabilities)


def test_requested_order_is_kept_and_binary_default_fills_unset_outputs() -> None:
    body = {
        "parameters": {"binary_data_output": True},
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}],
        "outputs": [{"name": "probabilities"}, {"name": "logits", "parameters": {"binary_data": False}}],
    }
    parsed = parse(body)
    assert parsed.outputs == [RequestedOutput("probabilities", True), RequestedOutput("logits", False)]
    results = {"logits": np.zeros((1, 2), np.float32), "probabilities": np.ones((1, 2), np.float32)}
    response, headers = encode_infer_response("m", "1", None, results, parsed.outputs, True)
    header = orjson.loads(response[: int(headers[HEADER_LENGTH])])
    assert [o["name"] for o in header["outputs"]] == ["probabilities", "logits"]
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert header["outputs"][1]["data"] == [0.0, 0.0]  # JSON data is flat, row-major
    assert response[int(headers[HEADER_LENGTH]) :] == np.ones(2, "<f4").tobytes()


def test_nested_json_data_is_accepted_row_major() -> None:
    rows = [[1, 2, 3, 4], [5, 6, 7, 8]]
    body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [2, 4], "data": rows}]}
    np.testing.assert_array_equal(parse(body).tensors["features"], np.array(rows, np.float32))


def test_words_true_and_false_in_strings_do_not_make_numbers_suspect() -> None:
    body = {
        "id": "true false",
        "inputs": [tensor(data=[1, 0, 1, 0])],
        "parameters": {"binary_data_output": False},
    }
    parsed = parse(body)
    assert parsed.id == "true false" and parsed.tensors["features"].tolist() == [[1.0, 0.0, 1.0, 0.0]]


def test_header_length_may_be_the_raw_header_text() -> None:
    body, json_size = request([("features", features(), True)])
    assert parse(body, str(json_size)).tensors["features"].shape == (3, 4)


def test_misaligned_binary_data_is_copied_aligned() -> None:
    x, offsets = features(), set()
    for pad in range(1, 5):  # headers of every length modulo 4: the floats start misaligned in 3 of them
        body, json_size = request([("features", x, True)], request_id="y" * pad)
        assert json_size is not None
        offsets.add(json_size % 4)
        tensor = parse(body, json_size).tensors["features"]
        assert tensor.flags.aligned
        np.testing.assert_array_equal(tensor, x)
    assert offsets == {0, 1, 2, 3}


def test_allow_nan_takes_missing_values_but_not_inf() -> None:
    x = features()
    x[0, 1] = np.nan
    for binary in (True, False):
        body, json_size = request([("features", x, binary)])
        assert np.isnan(parse(body, json_size, allow_nan=True).tensors["features"][0, 1])
    x[2, 3] = np.inf
    for binary in (True, False):
        body, json_size = request([("features", x, binary)])
        with pytest.raises(OipError, match=r"'features' has Inf at index \[2, 3\]; this model takes NaN"):
            parse(body, json_size, allow_nan=True)
        assert np.isinf(parse(body, json_size, allow_nan=True, allow_inf=True).tensors["features"][2, 3])
        assert np.isinf(parse(body, json_size, allow_nonfinite=True).tensors["features"][2, 3])


# --- refusals ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_refused_naming_input_and_index(binary: bool, value: float) -> None:
    x = features()
    x[1, 2] = value
    body, json_size = request([("features", x, binary)])
    with pytest.raises(OipError) as caught:
        parse(body, json_size)
    assert str(caught.value) == (
        "input 'features' has NaN or Inf at index [1, 2]; this model does not accept them"
    )


def tensor(name: Any = "features", *, data: Any = None, shape: Any = None, **extra: Any) -> dict[str, Any]:
    entry = {"name": name, "datatype": "FP32", "shape": [1, 4] if shape is None else shape, **extra}
    entry["data"] = [1.0, 2.0, 3.0, 4.0] if data is None else data
    return entry


def inputs(*entries: dict[str, Any], **top: Any) -> bytes:
    return orjson.dumps({"inputs": list(entries), **top})


def binary_body(header: dict[str, Any], payload: bytes) -> tuple[bytes, int]:
    text = json.dumps(header).encode()  # stdlib: integers beyond 64 bits too
    return text + payload, len(text)


def case(name: str, body: bytes, header_length: Any, words: str, model: list[TensorSpec] | None = None):
    """One malformed request: its body, header length, the words its message must hold, the model's inputs."""
    return pytest.param(body, header_length, words, model or [FEATURES], id=name)


FOUR_FLOATS = np.arange(4, dtype="<f4").tobytes()
BINARY_ENTRY = {
    "name": "features",
    "datatype": "FP32",
    "shape": [1, 4],
    "parameters": {"binary_data_size": 16},
}
FLAGS = [TensorSpec("flags", "BOOL", [-1, 2])]
DEEP: Any = [1]
for _ in range(70):
    DEEP = [DEEP]

MALFORMED = [
    case("not-json", b"{inputs: [", None, "not valid JSON"),
    case("not-utf8", b'{"inputs": "\xff"}', None, "not valid JSON"),
    case("empty-body", b"", None, "not valid JSON"),
    case("not-an-object", b"[1, 2]", None, "must be a JSON object"),
    case("no-inputs", b'{"outputs": []}', None, "no 'inputs'; this model takes 'features' (FP32 [-1, 4])"),
    case("inputs-not-list", b'{"inputs": {"name": "features"}}', None, "'inputs' must be a list"),
    case("input-not-object", b'{"inputs": [3]}', None, "inputs[0]: expected an object"),
    case("name-not-string", inputs(tensor(name=5)), None, "inputs[0]: 'name' must be a string"),
    case(
        "unknown-input",
        inputs(tensor(name="feature")),
        None,
        "unknown input \"feature\"; this model's inputs are 'features'",
    ),
    case("input-twice", inputs(tensor(), tensor()), None, "input 'features' is given twice"),
    case(
        "missing-input",
        inputs(tensor("input_ids", data=[1], shape=[1, 1], datatype="INT64")),
        None,
        "input 'attention_mask' is missing",
        TEXT,
    ),
    case(
        "datatype-differs",
        inputs({**tensor(), "datatype": "INT32"}),
        None,
        "input 'features': datatype INT32, the model takes FP32",
    ),
    case(
        "datatype-unknown",
        inputs({**tensor(), "datatype": "FLOAT"}),
        None,
        "input 'features': unknown datatype \"FLOAT\"",
    ),
    case(
        "datatype-missing",
        inputs({"name": "features", "shape": [1, 4], "data": [1, 2, 3, 4]}),
        None,
        "input 'features': 'datatype' must be a string",
    ),
    case(
        "bytes-datatype",
        inputs({**tensor(), "datatype": "BYTES"}),
        None,
        "input 'features': datatype BYTES is not supported by this model",
    ),
    case(
        "bytes-model",
        inputs({**tensor(name="text"), "datatype": "BYTES"}),
        None,
        "input 'text': datatype BYTES is not supported by this model",
        [TensorSpec("text", "BYTES", [-1])],
    ),
    case("rank", inputs(tensor(shape=[4])), None, "input 'features': shape [4], the model takes [-1, 4]"),
    case("rank-100", inputs(tensor(shape=[1] * 100)), None, "input 'features': shape [1, 1, 1, 1"),
    case(
        "fixed-dim",
        inputs(tensor(shape=[1, 5], data=[1] * 5)),
        None,
        "input 'features': shape [1, 5], the model takes [-1, 4]",
    ),
    case(
        "huge-dims",
        b'{"inputs":[{"name":"features","datatype":"FP32","shape":[%s,4],"data":[]}]}' % (b"9" * 3000),
        None,
        "input 'features': 'shape' must be a list of non-negative integers",
    ),
    case("nested-shape", inputs(tensor(shape=DEEP)), None, "input 'features': 'shape' must be a list"),
    case(
        "negative-dim",
        inputs(tensor(shape=[-1, 4])),
        None,
        "input 'features': 'shape' must be a list of non-negative integers",
    ),
    case(
        "float-dim",
        inputs(tensor(shape=[1.0, 4])),
        None,
        "input 'features': 'shape' must be a list of non-negative integers",
    ),
    case("bool-dim", inputs(tensor(shape=[True, 4])), None, "input 'features': 'shape' must be"),
    case("shape-not-list", inputs(tensor(shape="1,4")), None, "input 'features': 'shape' must be"),
    case("empty-batch", inputs(tensor(shape=[0, 4], data=[])), None, "input 'features': the batch is empty"),
    case(
        "seq-disagrees",
        inputs(
            {**tensor("input_ids", shape=[1, 3], data=[1, 2, 3]), "datatype": "INT64"},
            {**tensor("attention_mask", shape=[1, 2], data=[1, 1]), "datatype": "INT64"},
        ),
        None,
        "input 'attention_mask': dimension 1 ('seq') is 2, but input 'input_ids' has 3",
        TEXT,
    ),
    case(
        "too-few-values",
        inputs(tensor(data=[1, 2, 3])),
        None,
        "input 'features': 'data' has 3 values, shape [1, 4] takes 4",
    ),
    case(
        "too-many-values",
        inputs(tensor(data=[[1, 2, 3, 4], [5, 6, 7, 8]])),
        None,
        "input 'features': 'data' has 8 values",
    ),
    case("ragged", inputs(tensor(data=[[1, 2], [3]])), None, "input 'features': 'data' must be a flat list"),
    case(
        "data-dict",
        inputs(tensor(data={"a": 1})),
        None,
        "input 'features': 'data' must be a list of values, got an object",
    ),
    case(
        "data-missing",
        inputs({"name": "features", "datatype": "FP32", "shape": [1, 4]}),
        None,
        "input 'features' has no 'data'",
    ),
    case(
        "string-in-data",
        inputs(tensor(data=[1, 2, "3", 4])),
        None,
        "input 'features': expected a number for FP32, found \"3\" at index [0, 2]",
    ),
    case("null-in-data", inputs(tensor(data=[1, None, 3, 4])), None, "found null at index [0, 1]"),
    case(
        "bool-in-data",
        inputs(tensor(data=[1, 2, True, 4])),
        None,
        "input 'features': expected a number for FP32, found true at index [0, 2]",
    ),
    case(
        "bool-among-bool-parameters",
        inputs(
            tensor(data=[1, True, 3, 4]),
            parameters={"binary_data_output": True},
            outputs=[{"name": "logits", "parameters": {"binary_data": False}}],
        ),
        None,
        "input 'features': expected a number for FP32, found true at index [0, 1]",
    ),
    case("all-bools", inputs(tensor(data=[True, False, True, True])), None, "found true at index [0, 0]"),
    case("list-in-data", inputs(tensor(data=[1, 2, {"x": 3}, 4])), None, 'found {"x":3} at index [0, 2]'),
    case(
        "huge-float",
        inputs(tensor(data=[1, 2, 1e300, 4])),
        None,
        "input 'features': 1e+300 is out of range for FP32 at index [0, 2]",
    ),
    case(
        "huge-int-fp32",
        b'{"inputs":[{"name":"features","datatype":"FP32","shape":[1,4],"data":[1,2,3,'
        + b"9" * 400
        + b"]}]}",
        None,
        "is out of range for FP32 at index [0, 3]",
    ),
    case(
        "float-for-int",
        inputs(
            {**tensor(name="input_ids", shape=[1, 1], data=[1.5]), "datatype": "INT64"},
            {**tensor(name="attention_mask", shape=[1, 1], data=[1]), "datatype": "INT64"},
        ),
        None,
        "input 'input_ids': expected an integer for INT64, found 1.5 at index [0, 0]",
        TEXT,
    ),
    case(
        "int-out-of-range",
        inputs({"name": "pixels", "datatype": "UINT8", "shape": [1, 3, 3, 1], "data": [0] * 8 + [256]}),
        None,
        "input 'pixels': 256 is out of range for UINT8 (0 to 255) at index [0, 2, 2, 0]",
        [PIXELS],
    ),
    case(
        "negative-uint",
        inputs({"name": "pixels", "datatype": "UINT8", "shape": [1, 3, 3, 1], "data": [-1] + [0] * 8}),
        None,
        "-1 is out of range for UINT8",
        [PIXELS],
    ),
    case(
        "int64-overflow",
        inputs(
            {**tensor(name="input_ids", shape=[1, 1], data=[2**63]), "datatype": "INT64"},
            {**tensor(name="attention_mask", shape=[1, 1], data=[1]), "datatype": "INT64"},
        ),
        None,
        "9223372036854775808 is out of range for INT64",
        TEXT,
    ),
    case(
        "nan-literal",
        b'{"inputs":[{"name":"features","datatype":"FP32","shape":[1,4],"data":[1,NaN,3,4]}]}',
        None,
        "input 'features' has NaN or Inf at index [0, 1]",
    ),
    case(
        "number-for-bool",
        inputs({"name": "flags", "datatype": "BOOL", "shape": [1, 2], "data": [True, 1]}),
        None,
        "input 'flags': expected true or false for BOOL, found 1 at index [0, 1]",
        FLAGS,
    ),
    case("id-not-string", inputs(tensor(), id=7), None, "'id' must be a string"),
    case(
        "parameters-not-object",
        inputs(tensor(), parameters=[1]),
        None,
        "the request's 'parameters' must be an object",
    ),
    case(
        "binary-output-not-bool",
        inputs(tensor(), parameters={"binary_data_output": "yes"}),
        None,
        "'binary_data_output' must be true or false",
    ),
    case("outputs-not-list", inputs(tensor(), outputs="probabilities"), None, "'outputs' must be a list"),
    case(
        "output-not-object",
        inputs(tensor(), outputs=["probabilities"]),
        None,
        "outputs[0]: expected an object",
    ),
    case(
        "unknown-output",
        inputs(tensor(), outputs=[{"name": "probs"}]),
        None,
        "unknown output \"probs\"; this model's outputs are 'logits', 'probabilities'",
    ),
    case(
        "output-twice",
        inputs(tensor(), outputs=[{"name": "logits"}, {"name": "logits"}]),
        None,
        "output 'logits' is requested twice",
    ),
    case(
        "output-binary-not-bool",
        inputs(tensor(), outputs=[{"name": "logits", "parameters": {"binary_data": 1}}]),
        None,
        "output 'logits': parameters: 'binary_data' must be true or false",
    ),
    case(
        "classification",
        inputs(tensor(), outputs=[{"name": "logits", "parameters": {"classification": 2}}]),
        None,
        "output 'logits': the classification extension is not supported",
    ),
    case(
        "input-shared-memory",
        inputs(tensor(parameters={"shared_memory_region": "r"})),
        None,
        "input 'features': shared memory is not supported",
    ),
    case(
        "input-parameters-list",
        inputs(tensor(parameters=[])),
        None,
        "input 'features': 'parameters' must be an object",
    ),
    case(
        "header-length-text",
        binary_body({"inputs": [BINARY_ENTRY]}, FOUR_FLOATS)[0],
        "12a",
        f'{HEADER_LENGTH} must be a non-negative integer, got "12a"',
    ),
    case("header-length-negative", inputs(tensor()), -1, f"{HEADER_LENGTH} must be a non-negative integer"),
    case(
        "header-length-beyond-body",
        inputs(tensor()),
        10_000,
        f"{HEADER_LENGTH} is 10000, but the body has only",
    ),
    case(
        "binary-without-header",
        binary_body({"inputs": [BINARY_ENTRY]}, FOUR_FLOATS)[0],
        None,
        "not valid JSON",
    ),
    case(
        "binary-size-without-header",
        orjson.dumps({"inputs": [BINARY_ENTRY]}),
        None,
        "input 'features' has binary_data_size, but the request has no Inference-Header-Content-Length",
    ),
    case(
        "binary-size-wrong",
        *binary_body(
            {"inputs": [{**BINARY_ENTRY, "parameters": {"binary_data_size": 12}}]}, FOUR_FLOATS[:12]
        ),
        "input 'features': binary_data_size is 12, but shape [1, 4] of FP32 takes 16 bytes",
    ),
    case(
        "binary-size-not-int",
        *binary_body({"inputs": [{**BINARY_ENTRY, "parameters": {"binary_data_size": "16"}}]}, FOUR_FLOATS),
        "input 'features': binary_data_size is \"16\"",
    ),
    case(
        "binary-short",
        *binary_body({"inputs": [BINARY_ENTRY]}, FOUR_FLOATS[:10]),
        "input 'features': its binary data ends at byte",
    ),
    case(
        "binary-trailing",
        *binary_body({"inputs": [BINARY_ENTRY]}, FOUR_FLOATS + b"xx"),
        "2 bytes follow the binary tensor data",
    ),
    case(
        "json-trailing",
        inputs(tensor()) + b"junk",
        len(inputs(tensor())),
        "4 bytes follow the binary tensor data",
    ),
    case(
        "binary-and-data",
        *binary_body({"inputs": [{**BINARY_ENTRY, "data": [1, 2, 3, 4]}]}, FOUR_FLOATS),
        "input 'features': give either 'data' or parameters.binary_data_size",
    ),
    case(
        "binary-nan",
        *binary_body({"inputs": [BINARY_ENTRY]}, np.array([0, 1, np.nan, 3], "<f4").tobytes()),
        "input 'features' has NaN or Inf at index [0, 2]",
    ),
    case(
        "binary-bool-byte",
        *binary_body(
            {
                "inputs": [
                    {
                        "name": "flags",
                        "datatype": "BOOL",
                        "shape": [1, 2],
                        "parameters": {"binary_data_size": 2},
                    }
                ]
            },
            b"\x01\x07",
        ),
        "input 'flags': BOOL bytes must be 0 or 1, found 7 at index [0, 1]",
        FLAGS,
    ),
    case(
        "over-max-bytes",
        inputs(tensor(shape=[10**12, 4])),
        None,
        "input 'features': shape [1000000000000, 4] brings the request's tensors to 16,000,000,000,000 bytes",
    ),
    case("deep-nesting", b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}", None, "not valid JSON"),
    case("deep-data", inputs(tensor(data=DEEP)), None, "input 'features': 'data' must be a flat list"),
]


@pytest.mark.parametrize(("body", "header_length", "words", "model_inputs"), MALFORMED)
def test_malformed_request_is_a_400_naming_what_is_wrong(
    body: bytes, header_length: Any, words: str, model_inputs: list[TensorSpec]
) -> None:
    with pytest.raises(OipError) as caught:
        parse_infer_request(body, header_length, model_inputs, OUTPUTS)
    assert isinstance(caught.value, InputError) and caught.value.status == 400
    assert words in str(caught.value)
    assert "Traceback" not in str(caught.value) and len(str(caught.value)) < 400


def test_batch_disagreement_names_both_inputs() -> None:
    body = inputs(
        {"name": "input_ids", "datatype": "INT64", "shape": [2, 1], "data": [1, 2]},
        {"name": "attention_mask", "datatype": "INT64", "shape": [1, 2], "data": [1, 1]},
    )
    with pytest.raises(OipError) as caught:
        parse_infer_request(body, None, TEXT, OUTPUTS)
    assert str(caught.value) == (
        "input 'attention_mask': batch size 1, but input 'input_ids' has 2; "
        "the inputs of one request must have the same batch size"
    )


def test_memory_guard_refuses_before_allocating() -> None:
    header = {"inputs": [{**BINARY_ENTRY, "shape": [2**40, 4], "parameters": {"binary_data_size": 2**44}}]}
    body, length = binary_body(header, FOUR_FLOATS)
    with pytest.raises(OipError, match="over the limit of 1,024"):
        parse(body, length, max_bytes=1024)
    ok, length = binary_body({"inputs": [BINARY_ENTRY]}, FOUR_FLOATS)
    assert parse(ok, length, max_bytes=16).tensors["features"].nbytes == 16
    with pytest.raises(OipError, match="over the limit of 15 bytes"):
        parse(ok, length, max_bytes=15)


# --- fuzz: only OipError may escape ---------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)
NAMES = st.sampled_from(["features", "input_ids", "attention_mask", "pixels", "nope", ""])
SHAPES = st.lists(st.integers(min_value=-2, max_value=5), max_size=5) | JSON_VALUES
TENSORS = st.fixed_dictionaries(
    {"name": NAMES | JSON_VALUES, "shape": SHAPES},
    optional={
        "datatype": st.sampled_from([*DATATYPES, "BYTES", "BF16", "fp32"]) | JSON_VALUES,
        "data": st.lists(st.integers(-300, 300) | st.floats() | st.booleans(), max_size=30) | JSON_VALUES,
        "parameters": st.fixed_dictionaries({}, optional={"binary_data_size": st.integers(-4, 64)})
        | JSON_VALUES,
    },
)
OUTPUT_ENTRIES = st.fixed_dictionaries({"name": NAMES | JSON_VALUES}, optional={"parameters": JSON_VALUES})
REQUESTS = st.fixed_dictionaries(
    {},
    optional={
        "id": JSON_VALUES,
        "inputs": st.lists(TENSORS, max_size=3) | JSON_VALUES,
        "outputs": st.lists(OUTPUT_ENTRIES, max_size=3) | JSON_VALUES,
        "parameters": JSON_VALUES,
    },
)
MODELS = [[FEATURES], TEXT, [PIXELS], [TensorSpec("flags", "BOOL", [-1, 2]), TensorSpec("h", "FP16", [2])]]


def parse_only_oip_errors(body: bytes, header_length: Any, model: list[TensorSpec]) -> None:
    try:
        parsed = parse_infer_request(body, header_length, model, OUTPUTS, max_bytes=10_000)
    except OipError as err:
        assert err.status == 400 and str(err)
        return
    for spec in model:  # what is accepted is exactly what the model declares
        tensor = parsed.tensors[spec.name]
        assert tensor.dtype == DATATYPES[spec.datatype] and tensor.flags.c_contiguous
        assert all(w < 0 or d == w for d, w in zip(tensor.shape, spec.shape, strict=True))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=200), header_length=st.none() | st.integers(-5, 250) | st.text(max_size=4))
def test_random_bytes_raise_only_oip_errors(body: bytes, header_length: Any) -> None:
    for model in MODELS:
        parse_only_oip_errors(body, header_length, model)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    header=REQUESTS,
    payload=st.binary(max_size=80),
    framing=st.sampled_from(["json", "binary", "short"]),
    model=st.sampled_from(MODELS),
)
def test_structured_garbage_raises_only_oip_errors(
    header: dict[str, Any], payload: bytes, framing: str, model: list[TensorSpec]
) -> None:
    text = json.dumps(header).encode()  # stdlib: integers beyond 64 bits too
    length = {"json": None, "binary": len(text), "short": max(len(text) - 3, 0)}[framing]
    parse_only_oip_errors(text + (payload if framing != "json" else b""), length, model)


@settings(max_examples=200, deadline=None)
@given(flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4))
def test_corrupted_tritonclient_requests_raise_only_oip_errors(flips: list[tuple[int, int]]) -> None:
    ids = np.arange(6, dtype=np.int64).reshape(2, 3)
    for binary in (True, False):
        body, length = request([("input_ids", ids, binary), ("attention_mask", ids * 0 + 1, not binary)])
        mutable = bytearray(body)
        for position, value in flips:
            mutable[position % len(mutable)] = value
        parse_only_oip_errors(bytes(mutable), length, TEXT)


# --- metadata ------------------------------------------------------------------------------------------


def identity_session() -> ort.InferenceSession:
    """A real onnxruntime session: named, unnamed and fixed axes, and several element types."""
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["input_ids"], ["as_float"], to=TensorProto.FLOAT),
            helper.make_node("Identity", ["as_float"], ["scores"]),
            helper.make_node("Identity", ["pixels"], ["same"]),
        ],
        "metadata",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["batch", 2, None]),
        ],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", "seq"]),
            helper.make_tensor_value_info("same", TensorProto.UINT8, ["batch", 2, None]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_tensor_specs_read_onnxruntime_nodes() -> None:
    session = identity_session()
    specs = tensor_specs(session.get_inputs())
    assert [(s.name, s.datatype, s.shape) for s in specs] == [
        ("input_ids", "INT64", [-1, -1]),
        ("pixels", "UINT8", [-1, 2, -1]),
    ]
    assert specs[0].axes == ("batch", "seq") and specs[1].axes[:2] == ("batch", "")
    assert [s.datatype for s in tensor_specs(session.get_outputs())] == ["FP32", "UINT8"]


def test_tensor_specs_map_every_datatype_and_refuse_unknown_types() -> None:
    types = {
        "tensor(bool)": "BOOL",
        "tensor(float16)": "FP16",
        "tensor(double)": "FP64",
        "tensor(uint64)": "UINT64",
    }
    nodes = [SimpleNamespace(name=t, type=t, shape=[None, 3]) for t in types]
    assert [s.datatype for s in tensor_specs(nodes)] == list(types.values())
    with pytest.raises(ValueError, match="tensor\\(complex64\\)"):
        tensor_specs([SimpleNamespace(name="c", type="tensor(complex64)", shape=[1])])


def test_metadata_has_the_fields_the_spec_names() -> None:
    assert server_metadata("shipyard", "0.4.0", ["binary_tensor_data"]) == {
        "name": "shipyard",
        "version": "0.4.0",
        "extensions": ["binary_tensor_data"],
    }
    session = identity_session()
    inputs_, outputs_ = tensor_specs(session.get_inputs()), tensor_specs(session.get_outputs())
    metadata = model_metadata("tiny", ["v0002"], "onnxruntime_onnx", inputs_, outputs_)
    assert metadata == {
        "name": "tiny",
        "versions": ["v0002"],
        "platform": "onnxruntime_onnx",
        "inputs": [
            {"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]},
            {"name": "pixels", "datatype": "UINT8", "shape": [-1, 2, -1]},
        ],
        "outputs": [
            {"name": "scores", "datatype": "FP32", "shape": [-1, -1]},
            {"name": "same", "datatype": "UINT8", "shape": [-1, 2, -1]},
        ],
    }
    orjson.dumps(metadata)  # plain JSON types only


def test_error_body_is_the_protocol_error_shape() -> None:
    assert orjson.loads(error_body("input 'x': datatype INT32, the model takes FP32")) == {
        "error": "input 'x': datatype INT32, the model takes FP32"
    }


def test_session_runs_on_what_the_codec_decodes() -> None:
    """End to end without HTTP: tritonclient body -> codec -> onnxruntime -> codec -> tritonclient."""
    session = identity_session()
    ids = RNG.integers(0, 1000, (2, 5))
    pixels = RNG.integers(0, 256, (2, 2, 3)).astype(np.uint8)
    body, length = request([("input_ids", ids, True), ("pixels", pixels, False)])
    inputs_ = tensor_specs(session.get_inputs())
    outputs_ = tensor_specs(session.get_outputs())
    parsed = parse_infer_request(body, length, inputs_, outputs_)
    results = dict(zip([o.name for o in outputs_], session.run(None, parsed.tensors), strict=True))
    response, headers = encode_infer_response(
        "m", "1", parsed.id, results, parsed.outputs, parsed.binary_output_default
    )
    result = read_back(response, headers)
    np.testing.assert_array_equal(result.as_numpy("scores"), ids.astype(np.float32))
    np.testing.assert_array_equal(result.as_numpy("same"), pixels)
