"""The Open Inference Protocol v2 (REST) codec: request bytes -> named numpy tensors -> response bytes.

KServe and Triton speak this protocol, so clients such as tritonclient work against shipyard unchanged. Both
ways of carrying tensor data are read and written: JSON `data` (flat row-major, or nested lists) and Triton's
binary tensor data extension, where the JSON header is followed by the raw little-endian bytes of each tensor
and the header's length travels in the `Inference-Header-Content-Length` HTTP header.

There is no HTTP framework here: the server hands over the body and that header's value. Every request the
model cannot take is an `OipError` (400) naming the input or field, whatever the bytes; a tensor's size is
checked against `max_bytes` before anything is allocated for it. This runs on every request, so the work is
orjson and vectorised numpy; Python-level loops run only to explain a value already known to be bad.

Spec: https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/ and
https://docs.nvidia.com/deeplearning/triton-inference-server/user-guide/docs/protocol/extension_binary_data.html
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, NamedTuple

import numpy as np
import orjson

from serving.inputs import InputError

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_EXTENSION = "binary_tensor_data"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"
DEFAULT_MAX_BYTES = 256 * 2**20
PLATFORM = "onnxruntime_onnx"

# OIP datatype -> numpy dtype, little-endian as the binary extension lays tensors out.
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
UNSUPPORTED = ("BYTES", "BF16")  # valid OIP datatypes that no shipyard model takes
_BY_DTYPE = {dtype: name for name, dtype in DATATYPES.items()}
ORT_DATATYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
    "tensor(bfloat16)": "BF16",
}
_NON_FINITE = "non-finite"  # a value problem that gets its own message


class OipError(InputError):
    """A request the OIP codec refuses: what is wrong and which input or field, answered with 400."""

    status = 400


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output as the protocol describes it; -1 marks a dynamic axis.

    `axes` keeps onnxruntime's symbolic axis names ("" where fixed or unnamed): inputs that share a name,
    such as a text model's `seq`, must agree on its size in one request.
    """

    name: str
    datatype: str
    shape: list[int]
    axes: tuple[str, ...] = ()

    @property
    def dtype(self) -> np.dtype | None:
        """The numpy dtype, None for a datatype the codec does not carry (BYTES, BF16)."""
        return DATATYPES.get(self.datatype)

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


class RequestedOutput(NamedTuple):
    name: str
    binary: bool  # returned as raw bytes after the JSON header, not as JSON `data`


@dataclass(slots=True)
class InferRequest:
    """A decoded inference request.

    `tensors` follow the model's input order, each shaped and typed as the model declares. Binary inputs
    may be read-only views of the request body (zero copy). `outputs` is empty when the client asked for
    every output (each then binary when `binary_output_default`).
    """

    id: str | None
    tensors: dict[str, np.ndarray]
    outputs: list[RequestedOutput]
    binary_output_default: bool
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        """Rows in the request: the first axis of its first tensor (0 for scalars)."""
        first = next(iter(self.tensors.values()), None)
        return int(first.shape[0]) if first is not None and first.ndim else 0


@dataclass(frozen=True)
class NonFinite:
    """Which non-finite floats a model takes: a tabular model imputes NaN (a missing value) in its graph,
    no shipyard model takes Inf."""

    nan: bool = False
    inf: bool = False

    def refused(self, tensor: np.ndarray) -> np.ndarray | None:
        """The mask of refused values, None when there are none (one vectorised pass when all are finite)."""
        if self.nan and self.inf:
            return None
        finite = np.isfinite(tensor)
        if finite.all():
            return None
        mask = np.isinf(tensor) if self.nan else np.isnan(tensor) if self.inf else ~finite
        return mask if mask.any() else None

    def refuses(self, value: float) -> bool:
        return not (self.nan if math.isnan(value) else self.inf)

    def error(self, name: str, position: int, shape: Sequence[int]) -> OipError:
        index = _index(position, shape)
        if self.nan:
            return OipError(
                f"input '{name}' has Inf at index {index}; this model takes NaN (a missing value), not Inf"
            )
        if self.inf:
            return OipError(f"input '{name}' has NaN at index {index}; this model does not accept NaN")
        return OipError(f"input '{name}' has NaN or Inf at index {index}; this model does not accept them")


_POLICIES = {(nan, inf): NonFinite(nan, inf) for nan in (False, True) for inf in (False, True)}


class _Input(NamedTuple):
    """One validated entry of the request's `inputs`, before its data is decoded."""

    spec: TensorSpec
    shape: list[int]
    entry: dict[str, Any]


# --- metadata -----------------------------------------------------------------------------------------


def tensor_specs(ort_nodes: Iterable[Any]) -> list[TensorSpec]:
    """Specs from `session.get_inputs()` or `get_outputs()` (their `.name`, `.type`, `.shape`)."""
    return [tensor_spec(node) for node in ort_nodes]


def tensor_spec(node: Any) -> TensorSpec:
    """One onnxruntime node as a spec; a type the protocol cannot carry is a ValueError at load time."""
    datatype = ORT_DATATYPES.get(node.type)
    if datatype is None:
        raise ValueError(f"tensor '{node.name}' has onnxruntime type {node.type}, which OIP cannot carry")
    shape = [dim if _is_int(dim) and dim >= 0 else -1 for dim in node.shape]
    axes = tuple(dim if isinstance(dim, str) else "" for dim in node.shape)
    return TensorSpec(node.name, datatype, shape, axes)


def server_metadata(name: str, version: str, extensions: Sequence[str]) -> dict[str, Any]:
    """GET /v2: `{"name", "version", "extensions"}`."""
    return {"name": name, "version": version, "extensions": list(extensions)}


def model_metadata(
    name: str,
    versions: Sequence[str],
    platform: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
) -> dict[str, Any]:
    """GET /v2/models/{name}: `{"name", "versions", "platform", "inputs", "outputs"}`."""
    return {
        "name": name,
        "versions": list(versions),
        "platform": platform,
        "inputs": [spec.metadata() for spec in inputs],
        "outputs": [spec.metadata() for spec in outputs],
    }


def error_body(message: str) -> bytes:
    """The protocol's error shape, `{"error": message}`."""
    return orjson.dumps({"error": message})


def oip_datatype(dtype: np.dtype) -> str:
    """The OIP name of a numpy dtype (a ValueError for one the protocol cannot carry)."""
    name = _BY_DTYPE.get(np.dtype(dtype).newbyteorder("<")) or _BY_DTYPE.get(np.dtype(dtype))
    if name is None:
        raise ValueError(f"numpy dtype {dtype} has no OIP datatype")
    return name


# --- requests ------------------------------------------------------------------------------------------


def parse_infer_request(
    body: bytes,
    header_length: int | str | None,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    allow_nan: bool = False,
    allow_inf: bool = False,
    allow_nonfinite: bool = False,
) -> InferRequest:
    """Decode one inference request for a model with these inputs and outputs.

    `header_length` is the `Inference-Header-Content-Length` header (int or its raw text), None when absent:
    then the whole body is JSON. With it, the JSON is `body[:header_length]` and the raw bytes of the inputs
    that carry `parameters.binary_data_size` follow in the order those inputs are listed. `max_bytes` caps
    the decoded size of all input tensors together. Float inputs with NaN or Inf are refused unless allowed:
    `allow_nan` for a model that imputes missing values in its graph (`allow_nonfinite`: NaN and Inf).
    """
    body = body if isinstance(body, bytes) else bytes(body)
    split = _header_end(body, header_length)
    header = body if split is None else body[:split]
    request = _load_object(header)
    parameters = _object_field(request, "parameters", "the request's 'parameters'")
    binary_default = _bool_parameter(parameters, "binary_data_output", "the request's parameters")
    requested = read_requested_outputs(request.get("outputs"), outputs, binary_default)
    entries = read_inputs(request.get("inputs", _MISSING), inputs)
    check_sizes(entries, max_bytes)
    maybe_bools = any("data" in item.entry for item in entries) and (
        header.count(b"true") + header.count(b"false") > _parameter_bools(request)
    )
    accept = _POLICIES[allow_nan or allow_nonfinite, allow_inf or allow_nonfinite]
    tensors = decode_tensors(body, split, entries, accept, maybe_bools)
    ordered = {spec.name: tensors[spec.name] for spec in inputs}
    return InferRequest(_request_id(request), ordered, requested, binary_default, parameters)


_MISSING = object()


def _parameter_bools(request: Mapping[str, Any]) -> int:
    """The JSON booleans among the values of the request's, its inputs' and its outputs' `parameters`.

    When the header holds no more `true`/`false` tokens than these, no tensor `data` holds a boolean and
    the per-value search for them is skipped (strings that contain the words only make it run).
    """
    dicts = [request.get("parameters")]
    for key in ("inputs", "outputs"):
        entries = request.get(key)
        if isinstance(entries, list):
            dicts += [entry.get("parameters") for entry in entries if isinstance(entry, dict)]
    return sum(type(value) is bool for d in dicts if isinstance(d, dict) for value in d.values())


def _header_end(body: bytes, header_length: int | str | None) -> int | None:
    """Where the JSON header ends, from the binary extension's header; None: the body is all JSON."""
    if header_length is None:
        return None
    if isinstance(header_length, str) and header_length.strip().isdecimal() and len(header_length) < 20:
        header_length = int(header_length)
    if not _is_int(header_length) or header_length < 0:
        raise OipError(f"{HEADER_LENGTH} must be a non-negative integer, got {_show(header_length)}")
    if header_length > len(body):
        raise OipError(f"{HEADER_LENGTH} is {header_length}, but the body has only {len(body)} bytes")
    return int(header_length)


def _load_object(text: bytes) -> dict[str, Any]:
    """The JSON header as a dict. orjson first; Python's parser when it fails, for NaN and Infinity
    (tritonclient writes them for non-finite floats), so they are refused by name and index later."""
    try:
        request = orjson.loads(text)
    except orjson.JSONDecodeError:
        request = _load_lenient(text)
    if not isinstance(request, dict):
        raise OipError(
            f'the request must be a JSON object like {{"inputs": [...]}}, got {_json_type(request)}'
        )
    return request


def _load_lenient(text: bytes) -> Any:
    try:
        return json.loads(text.decode("utf-8"))  # UTF-8 only, as orjson: no guessing UTF-16
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError, int digit limit
        reason = "nested too deeply" if isinstance(err, RecursionError) else str(err)
        raise OipError(f"the request body is not valid JSON: {reason}") from None


def _request_id(request: Mapping[str, Any]) -> str | None:
    value = request.get("id")
    if value is not None and not isinstance(value, str):
        raise OipError(f"'id' must be a string, got {_json_type(value)}")
    return value


def read_inputs(value: Any, specs: Sequence[TensorSpec]) -> list[_Input]:
    """The request's `inputs`: every model input once, each with the model's datatype and a shape that
    fits the model's (rank, fixed sizes); batch and shared named axes agreeing across inputs."""
    if value is _MISSING:
        raise OipError(f"the request has no 'inputs'; this model takes {_describe(specs)}")
    if not isinstance(value, list):
        raise OipError(f"'inputs' must be a list of tensors, got {_json_type(value)}")
    by_name = {spec.name: spec for spec in specs}
    entries: dict[str, _Input] = {}
    for index, entry in enumerate(value):
        item = read_input(index, entry, by_name)
        if item.spec.name in entries:
            raise OipError(f"input '{item.spec.name}' is given twice")
        entries[item.spec.name] = item
    missing = [spec for spec in specs if spec.name not in entries]
    if missing:
        raise OipError(f"input '{missing[0].name}' is missing; this model takes {_describe(specs)}")
    ordered = list(entries.values())
    check_batch(ordered)
    check_shared_axes(ordered)
    return ordered


def read_input(index: int, entry: Any, specs: Mapping[str, TensorSpec]) -> _Input:
    """One `inputs[index]` entry checked against the model's spec of that name (its data not yet read)."""
    if not isinstance(entry, dict):
        raise OipError(
            f"inputs[{index}]: expected an object with 'name', 'datatype', 'shape' and 'data', "
            f"got {_json_type(entry)}"
        )
    name = entry.get("name")
    if not isinstance(name, str):
        raise OipError(f"inputs[{index}]: 'name' must be a string, got {_json_type(name)}")
    spec = specs.get(name)
    if spec is None:
        raise OipError(f"unknown input {_show(name)}; this model's inputs are {_names(specs)}")
    check_datatype(spec, entry.get("datatype"))
    return _Input(spec, read_shape(spec, entry.get("shape")), entry)


def check_datatype(spec: TensorSpec, datatype: Any) -> None:
    if not isinstance(datatype, str):
        raise OipError(f"input '{spec.name}': 'datatype' must be a string such as {spec.datatype}")
    if spec.datatype in UNSUPPORTED:
        raise OipError(f"input '{spec.name}': datatype {spec.datatype} is not supported by this model")
    if datatype in UNSUPPORTED:
        raise OipError(
            f"input '{spec.name}': datatype {datatype} is not supported by this model; "
            f"it takes {spec.datatype}"
        )
    if datatype not in DATATYPES:
        raise OipError(
            f"input '{spec.name}': unknown datatype {_show(datatype)}; the model takes {spec.datatype}"
        )
    if datatype != spec.datatype:
        raise OipError(f"input '{spec.name}': datatype {datatype}, the model takes {spec.datatype}")


def read_shape(spec: TensorSpec, shape: Any) -> list[int]:
    """The request's shape: non-negative integers, the model's rank, and its size wherever that is fixed."""
    if type(shape) is not list or not all(map(_is_size, shape)):
        raise OipError(
            f"input '{spec.name}': 'shape' must be a list of non-negative integers, got {_show(shape)}"
        )
    if len(shape) != len(spec.shape) or any(map(_differs, shape, spec.shape)):
        raise OipError(
            f"input '{spec.name}': shape {_cut(str(shape))}, the model takes {spec.shape} (-1: any size)"
        )
    return shape


def _is_size(dim: Any) -> bool:
    return type(dim) is int and 0 <= dim < 2**63  # JSON integers only: true and 2.0 are not sizes


def _differs(dim: int, want: int) -> bool:
    return want >= 0 and dim != want


def check_batch(entries: Sequence[_Input]) -> None:
    """One batch size for all inputs whose first axis is dynamic, and at least one row."""
    first: _Input | None = None
    for item in entries:
        if not item.spec.shape or item.spec.shape[0] >= 0:
            continue
        if item.shape[0] == 0:
            raise OipError(f"input '{item.spec.name}': the batch is empty (shape {item.shape}); send a row")
        if first is None:
            first = item
        elif item.shape[0] != first.shape[0]:
            raise OipError(
                f"input '{item.spec.name}': batch size {item.shape[0]}, but input '{first.spec.name}' "
                f"has {first.shape[0]}; the inputs of one request must have the same batch size"
            )


def check_shared_axes(entries: Sequence[_Input]) -> None:
    """Dynamic axes the model names alike (a text model's `seq`) have one size across inputs."""
    seen: dict[str, tuple[int, str]] = {}
    for item in entries:
        for axis, (name, want) in enumerate(zip(item.spec.axes, item.spec.shape, strict=False)):
            if not name or want >= 0:
                continue
            size, owner = seen.setdefault(name, (item.shape[axis], item.spec.name))
            if size != item.shape[axis]:
                raise OipError(
                    f"input '{item.spec.name}': dimension {axis} ('{name}') is {item.shape[axis]}, "
                    f"but input '{owner}' has {size}"
                )


def check_sizes(entries: Sequence[_Input], max_bytes: int) -> None:
    """Refuse, before allocating, tensors that together would exceed `max_bytes`."""
    total = 0
    for item in entries:
        total += math.prod(item.shape) * _dtype(item.spec).itemsize
        if total > max_bytes:
            raise OipError(
                f"input '{item.spec.name}': shape {item.shape} brings the request's tensors to {total:,} "
                f"bytes, over the limit of {max_bytes:,} bytes"
            )


def decode_tensors(
    body: bytes, split: int | None, entries: Sequence[_Input], accept: NonFinite, maybe_bools: bool
) -> dict[str, np.ndarray]:
    """Each input's tensor, from its JSON `data` or its slice of the binary section, which must be used
    exactly: no input short of bytes and none left over."""
    tensors: dict[str, np.ndarray] = {}
    offset = split if split is not None else len(body)
    for item in entries:
        parameters = _object_field(item.entry, "parameters", "input '{}': 'parameters'", item.spec.name)
        if "shared_memory_region" in parameters:
            raise OipError(f"input '{item.spec.name}': shared memory is not supported; send the data")
        if "binary_data_size" in parameters:
            size = _binary_size(item, parameters["binary_data_size"], split)
            tensors[item.spec.name] = binary_tensor(item, body, offset, size, accept)
            offset += size
        else:
            tensors[item.spec.name] = json_tensor(item, accept, maybe_bools)
    if offset < len(body):
        raise OipError(
            f"{len(body) - offset} bytes follow the binary tensor data that no input's binary_data_size "
            "accounts for"
        )
    return tensors


def _binary_size(item: _Input, size: Any, split: int | None) -> int:
    name = item.spec.name
    if split is None:
        raise OipError(f"input '{name}' has binary_data_size, but the request has no {HEADER_LENGTH} header")
    if "data" in item.entry:
        raise OipError(f"input '{name}': give either 'data' or parameters.binary_data_size, not both")
    expected = math.prod(item.shape) * _dtype(item.spec).itemsize
    if not _is_int(size) or size != expected:
        raise OipError(
            f"input '{name}': binary_data_size is {_show(size)}, but shape {item.shape} of "
            f"{item.spec.datatype} takes {expected} bytes"
        )
    return expected


def binary_tensor(item: _Input, body: bytes, offset: int, size: int, accept: NonFinite) -> np.ndarray:
    """A zero-copy view of the tensor's bytes (copied only when misaligned), checked without a loop."""
    spec, dtype = item.spec, _dtype(item.spec)
    if offset + size > len(body):
        raise OipError(
            f"input '{spec.name}': its binary data ends at byte {offset + size} of the body, which has "
            f"only {len(body)}"
        )
    count = math.prod(item.shape)
    if count == 0:
        return np.zeros(item.shape, dtype)
    tensor = np.frombuffer(body, dtype=dtype, count=count, offset=offset).reshape(item.shape)
    if not tensor.flags.aligned:
        tensor = tensor.copy()
    if dtype.kind == "b":
        check_bool_bytes(spec.name, tensor)
    elif dtype.kind == "f" and (refused := accept.refused(tensor)) is not None:
        raise accept.error(spec.name, int(np.flatnonzero(refused)[0]), tensor.shape)
    return tensor


def check_bool_bytes(name: str, tensor: np.ndarray) -> None:
    raw = tensor.view(np.uint8)
    if raw.max() > 1:
        position = int(np.flatnonzero(raw > 1)[0])
        raise OipError(
            f"input '{name}': BOOL bytes must be 0 or 1, found {raw.flat[position]} at index "
            f"{_index(position, tensor.shape)}"
        )


def json_tensor(item: _Input, accept: NonFinite, maybe_bools: bool) -> np.ndarray:
    """The tensor from JSON `data` (flat row-major or nested), converted and checked by numpy in bulk;
    when that fails, the first offending value is found and named with its index."""
    spec, shape, dtype = item.spec, item.shape, _dtype(item.spec)
    if "data" not in item.entry:
        raise OipError(f"input '{spec.name}' has no 'data' (and no parameters.binary_data_size)")
    data = item.entry["data"]
    if not isinstance(data, list):
        raise OipError(f"input '{spec.name}': 'data' must be a list of values, got {_json_type(data)}")
    values = _as_array(spec.name, data)
    count = math.prod(shape)
    if values.size != count:
        raise OipError(f"input '{spec.name}': 'data' has {values.size} values, shape {shape} takes {count}")
    if count == 0:
        return np.zeros(shape, dtype)
    tensor = None
    if maybe_bools and dtype.kind != "b" and _has_bools(data, values.ndim):
        pass  # explained below
    elif dtype.kind in "iu" and values.dtype.kind == "f" and _beyond_exact(values):
        tensor = exact_integers(data, values.ndim, dtype)
    else:
        tensor = convert(values, dtype, accept)
    if tensor is None:
        raise explain(spec, data, values.ndim, shape, accept)
    return tensor.reshape(shape)


def _as_array(name: str, data: list[Any]) -> np.ndarray:
    try:
        with np.errstate(all="ignore"):
            return np.array(data)
    except (ValueError, TypeError, OverflowError, RecursionError, MemoryError):
        raise OipError(
            f"input '{name}': 'data' must be a flat list of values, or nested lists of equal lengths"
        ) from None


def convert(values: np.ndarray, dtype: np.dtype, accept: NonFinite) -> np.ndarray | None:
    """`values` as `dtype` when every value fits it (bools for BOOL; integral and in range for integers;
    finite unless allowed, and within range, for floats); None when one does not."""
    kind = values.dtype.kind
    if dtype.kind == "b":
        return values if kind == "b" else None
    if kind not in "iuf":
        return None
    if dtype.kind in "iu":
        return _convert_integers(values, dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        tensor = values.astype(dtype, copy=False)
    finite = np.isfinite(tensor)
    if finite.all():
        return tensor
    if not np.array_equal(finite, np.isfinite(values)):
        return None  # the cast overflowed: out of range for the datatype
    return tensor if accept.refused(tensor) is None else None


def _convert_integers(values: np.ndarray, dtype: np.dtype) -> np.ndarray | None:
    info = np.iinfo(dtype)
    if values.dtype.kind == "f":
        if not np.isfinite(values).all() or not (values == np.floor(values)).all():
            return None
        # info.max + 1 is a power of two, exact as a float: the bound stays exact for 64-bit types
        if values.min() < info.min or values.max() >= info.max + 1:
            return None
    elif values.min() < info.min or values.max() > info.max:
        return None
    return values.astype(dtype, copy=False)


def _beyond_exact(values: np.ndarray) -> bool:
    """numpy reads [1, 2**63] as float64, rounding integers beyond 2**53 (or a value is not finite)."""
    with np.errstate(invalid="ignore"):
        return not np.abs(values).max() < 2**53


def exact_integers(data: list[Any], ndim: int, dtype: np.dtype) -> np.ndarray | None:
    """Large 64-bit integers converted one by one, exactly (rare: ids or hashes beyond 2**53)."""
    info = np.iinfo(dtype)
    exact = []
    for value in _flatten(data, ndim):
        integral = type(value) is int or (type(value) is float and value.is_integer())
        if not integral or not info.min <= value <= info.max:
            return None
        exact.append(int(value))
    return np.array(exact, dtype=dtype)


def _has_bools(data: list[Any], ndim: int) -> bool:
    """numpy reads [true, 2] as [1, 2]: look for JSON booleans among the values (C-level iteration)."""
    return bool in set(map(type, _flatten(data, ndim)))


def explain(spec: TensorSpec, data: list[Any], ndim: int, shape: list[int], accept: NonFinite) -> OipError:
    """The error for the first value of `data` that does not fit the input's datatype."""
    for position, value in enumerate(_flatten(data, ndim)):
        problem = value_problem(value, spec.datatype, accept)
        if problem == _NON_FINITE:
            return accept.error(spec.name, position, shape)
        if problem:
            return OipError(f"input '{spec.name}': {problem} at index {_index(position, shape)}")
    return OipError(f"input '{spec.name}': 'data' does not fit datatype {spec.datatype}")


def value_problem(value: Any, datatype: str, accept: NonFinite) -> str | None:
    """Why one JSON value cannot be an element of `datatype`; None when it can."""
    if datatype == "BOOL":
        return None if isinstance(value, bool) else f"expected true or false for BOOL, found {_show(value)}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"expected a number for {datatype}, found {_show(value)}"
    dtype = DATATYPES[datatype]
    if dtype.kind in "iu":
        return _integer_problem(value, datatype, np.iinfo(dtype))
    if isinstance(value, float) and not math.isfinite(value):
        return _NON_FINITE if accept.refuses(value) else None
    return None if _fits_float(value, dtype) else f"{_show(value)} is out of range for {datatype}"


def _integer_problem(value: int | float, datatype: str, info: np.iinfo) -> str | None:
    if isinstance(value, float) and not value.is_integer():
        return f"expected an integer for {datatype}, found {_show(value)}"
    if not info.min <= value < info.max + 1:
        return f"{_show(value)} is out of range for {datatype} ({info.min} to {info.max})"
    return None


def _fits_float(value: int | float, dtype: np.dtype) -> bool:
    try:
        as_double = float(value)
    except OverflowError:  # an integer beyond float64
        return False
    with np.errstate(over="ignore"):
        return bool(np.isfinite(np.float64(as_double).astype(dtype)))


def read_requested_outputs(
    value: Any, specs: Sequence[TensorSpec], binary_default: bool
) -> list[RequestedOutput]:
    """The request's `outputs` (name, binary) in its order; [] when absent or empty (all outputs)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise OipError(f"'outputs' must be a list like [{{\"name\": ...}}], got {_json_type(value)}")
    known = [spec.name for spec in specs]
    requested: list[RequestedOutput] = []
    seen: set[str] = set()
    for index, entry in enumerate(value):
        output = read_requested_output(index, entry, known, binary_default)
        if output.name in seen:
            raise OipError(f"output '{output.name}' is requested twice")
        seen.add(output.name)
        requested.append(output)
    return requested


def read_requested_output(index: int, entry: Any, known: list[str], binary_default: bool) -> RequestedOutput:
    if not isinstance(entry, dict):
        raise OipError(f'outputs[{index}]: expected an object like {{"name": ...}}, got {_json_type(entry)}')
    name = entry.get("name")
    if not isinstance(name, str):
        raise OipError(f"outputs[{index}]: 'name' must be a string, got {_json_type(name)}")
    if name not in known:
        raise OipError(f"unknown output {_show(name)}; this model's outputs are {_names(known)}")
    parameters = _object_field(entry, "parameters", "output '{}': 'parameters'", name)
    if parameters.get("classification"):
        raise OipError(f"output '{name}': the classification extension is not supported; ask for the tensor")
    if "shared_memory_region" in parameters:
        raise OipError(f"output '{name}': shared memory is not supported")
    binary = _bool_parameter(parameters, "binary_data", "output '{}': parameters", binary_default, name)
    return RequestedOutput(name, binary)


# --- responses -----------------------------------------------------------------------------------------


def encode_infer_response(
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Mapping[str, np.ndarray],
    requested: Sequence[RequestedOutput | tuple[str, bool]],
    binary_default: bool,
) -> tuple[bytes, dict[str, str]]:
    """The response body and the headers to add to it.

    Outputs come in `requested` order, or in `outputs` order (the model's) when none were requested, each
    then binary when `binary_default`. Binary outputs follow the JSON header as raw bytes, and the header's
    length goes in `Inference-Header-Content-Length`; JSON `data` is flat row-major.
    """
    wanted = requested or [RequestedOutput(name, binary_default) for name in outputs]
    described, chunks = [], []
    for name, binary in wanted:
        if name not in outputs:
            raise ValueError(f"output '{name}' was requested but the model run did not produce it")
        tensor = np.ascontiguousarray(outputs[name])
        entry: dict[str, Any] = {
            "name": name,
            "datatype": oip_datatype(tensor.dtype),
            "shape": list(tensor.shape),
        }
        if binary:
            entry["parameters"] = {"binary_data_size": tensor.nbytes}
            chunks.append(_little_endian(tensor))
        else:
            entry["data"] = _native(tensor).reshape(-1)
        described.append(entry)
    response: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id:
        response["id"] = request_id
    response["outputs"] = described
    header = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, {"Content-Type": JSON_TYPE}
    return b"".join([header, *chunks]), {"Content-Type": BINARY_TYPE, HEADER_LENGTH: str(len(header))}


def _little_endian(tensor: np.ndarray) -> np.ndarray:
    return tensor if tensor.dtype.byteorder != ">" else tensor.astype(tensor.dtype.newbyteorder("<"))


def _native(tensor: np.ndarray) -> np.ndarray:
    return tensor if tensor.dtype.isnative else tensor.astype(tensor.dtype.newbyteorder("="))


# --- helpers -------------------------------------------------------------------------------------------


def _dtype(spec: TensorSpec) -> np.dtype:
    dtype = spec.dtype
    assert dtype is not None, spec  # check_datatype refused the others
    return dtype


def _object_field(container: Mapping[str, Any], key: str, where: str, name: str = "") -> dict[str, Any]:
    """`container[key]`, an object or absent ({}); `where.format(name)` names it in the error (formatted
    only then: this runs for every input of every request)."""
    value = container.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise OipError(f"{where.format(name)} must be an object, got {_json_type(value)}")
    return value


def _bool_parameter(
    parameters: Mapping[str, Any], key: str, where: str, default: bool = False, name: str = ""
) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise OipError(f"{where.format(name)}: '{key}' must be true or false, got {_show(value)}")
    return value


def _flatten(data: list[Any], ndim: int) -> Iterator[Any]:
    """The leaves of a rectangular nested list `ndim` deep, row-major."""
    values: Iterable[Any] = data
    for _ in range(ndim - 1):
        values = chain.from_iterable(values)
    return iter(values)


def _index(position: int, shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(i)) for i in np.unravel_index(position, tuple(shape))) + "]"


def _is_int(value: Any) -> bool:
    return type(value) is int or isinstance(value, np.integer)


def _names(names: Iterable[str]) -> str:
    return ", ".join(f"'{name}'" for name in names)


def _describe(specs: Sequence[TensorSpec]) -> str:
    return ", ".join(f"'{spec.name}' ({spec.datatype} {spec.shape})" for spec in specs)


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _show(value: Any, limit: int = 60) -> str:
    """A value as JSON text (true, null, "x"), cut short: messages must stay readable."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    try:
        text = orjson.dumps(value).decode()
    except TypeError:  # orjson's JSONEncodeError: an integer beyond 64 bits, nesting beyond 254 levels
        text = repr(value) if type(value) is int else _json_type(value)
    return _cut(text, limit)


def _cut(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
