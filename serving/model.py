"""Load the version `promote` published as production and run it with onnxruntime.

Reads only the registry: `production.json` names a folder under `versions/` that holds `manifest.json` and
the files it lists with their sha256. Every file is checked before a session is created, and the provider
that is really active is read back from the session: onnxruntime-gpu lists CUDA as available on machines
where it then falls back to CPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from pydantic import BaseModel, ValidationError

from tasks.errors import ShipyardError
from tasks.features import FeatureSpec, encode_records

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
MANIFEST_FORMAT = 1
PROBABILITIES = "probabilities"
_VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class ServingError(ShipyardError):
    """The production model cannot be loaded or run."""


class RecordError(ServingError):
    """A request's records cannot be encoded (missing column, not a number, ...): the client's to fix."""


class OnnxSection(BaseModel):
    file: str


class Manifest(BaseModel):
    """The part of `manifest.json` that serving reads; other keys are kept in `LoadedModel.manifest`."""

    format: int
    name: str
    version: str
    labels: list[Any]
    features: FeatureSpec
    onnx: OnnxSection
    files: dict[str, str]


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    manifest: dict[str, Any]
    spec: FeatureSpec
    labels: list[Any]
    session: ort.InferenceSession
    provider: str
    provider_note: str  # why the provider is not CUDA ("" when it is)

    @property
    def input_name(self) -> str:
        return self.session.get_inputs()[0].name

    def describe(self) -> str:
        """One line for the start-up log: name, version and the provider that is really active."""
        note = f" ({self.provider_note})" if self.provider_note else ""
        return f"serving {self.name} {self.version} on {self.provider}{note}"

    def predict(self, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Raw feature records -> per record {"label": original label, "probabilities": {str(label): p}}."""
        if not records:
            raise RecordError("no records to predict")
        try:
            with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused just below
                features = encode_records(records, self.spec)
        except ShipyardError as err:
            raise RecordError(str(err)) from None
        self._check_finite(features, records)
        (probabilities,) = self.session.run([PROBABILITIES], {self.input_name: features})
        self._check_output(probabilities, len(records))
        keys = [str(label) for label in self.labels]
        winners = probabilities.argmax(axis=1).tolist()
        return [
            {"label": self.labels[winner], "probabilities": dict(zip(keys, row, strict=True))}
            for winner, row in zip(winners, probabilities.tolist(), strict=True)
        ]

    def _check_finite(self, features: np.ndarray, records: Sequence[Mapping[str, Any]]) -> None:
        infinite = np.argwhere(np.isinf(features))
        if infinite.size:
            index, column = (int(i) for i in infinite[0])
            name = self.spec.columns[column]
            value = records[index][name]
            raise RecordError(f"record {index}: column '{name}': expected a finite number, got {value!r}")

    def _check_output(self, probabilities: np.ndarray, rows: int) -> None:
        if probabilities.shape != (rows, len(self.labels)):
            raise ServingError(
                f"{self.name} {self.version} returned probabilities of shape {probabilities.shape}, "
                f"expected ({rows}, {len(self.labels)})"
            )
        if not np.isfinite(probabilities).all():
            raise ServingError(f"{self.name} {self.version} returned non-finite probabilities")


def load_production(registry: Path, prefer_gpu: bool = True) -> LoadedModel:
    """The version `production.json` points to, with every file checked against the manifest."""
    registry = Path(registry)
    version = read_pointer(registry)
    folder = registry / "versions" / version
    raw, manifest = read_manifest(folder, version)
    verify_files(folder, manifest.files)
    if manifest.onnx.file not in manifest.files:
        raise ServingError(f"{folder / 'manifest.json'}: onnx.file '{manifest.onnx.file}' is not in 'files'")
    model_path = inside(folder, manifest.onnx.file)
    check_external_data(model_path)
    session = create_session(model_path, prefer_gpu)
    check_signature(session, manifest, model_path)
    provider = session.get_providers()[0]
    return LoadedModel(
        name=manifest.name,
        version=manifest.version,
        manifest=raw,
        spec=manifest.features,
        labels=manifest.labels,
        session=session,
        provider=provider,
        provider_note=provider_note(provider, prefer_gpu),
    )


def read_pointer(registry: Path) -> str:
    """The production version's name, from `production.json` (which promote moves atomically)."""
    pointer = registry / "production.json"
    if not pointer.is_file():
        raise ServingError(f"no production model: {pointer} does not exist (promote a version first)")
    data = _read_json(pointer)
    version = data.get("version") if isinstance(data, dict) else None
    if not isinstance(version, str) or not _VERSION_NAME.fullmatch(version) or ".." in version:
        raise ServingError(f'{pointer}: expected {{"version": "<folder name>"}}, got {data!r}')
    return version


def read_manifest(folder: Path, version: str) -> tuple[dict[str, Any], Manifest]:
    """The raw manifest and its checked form; its version must be the one the pointer names."""
    path = folder / "manifest.json"
    if not path.is_file():
        raise ServingError(f"production version '{version}' has no manifest: {path} does not exist")
    raw = _read_json(path)
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ServingError(f"{path}: {problems}") from None
    if manifest.format != MANIFEST_FORMAT:
        raise ServingError(f"{path}: manifest format {manifest.format} is not supported (expected 1)")
    if manifest.version != version:
        raise ServingError(f"{path}: says version '{manifest.version}', production.json says '{version}'")
    if not manifest.labels or len({str(label) for label in manifest.labels}) != len(manifest.labels):
        raise ServingError(f"{path}: labels must be non-empty and distinct as text, got {manifest.labels}")
    return raw, manifest


def verify_files(folder: Path, files: Mapping[str, str]) -> None:
    """Every file the manifest lists exists inside the version folder and has the listed sha256."""
    for name, expected in files.items():
        path = inside(folder, name)
        if not path.is_file():
            raise ServingError(f"{path} is listed in the manifest but does not exist")
        with path.open("rb") as handle:
            actual = hashlib.file_digest(handle, "sha256").hexdigest()
        if actual != expected.lower():
            raise ServingError(
                f"{path}: sha256 {actual} does not match the manifest's {expected}; refusing it"
            )


def check_external_data(path: Path) -> None:
    """Refuse an ONNX file whose external-data locations point outside its own folder."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf raises several types for a corrupt file
        raise ServingError(f"{path} is not a readable ONNX model: {err}") from None
    for tensor in _model_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
        target = inside(path.parent, location, f"{path.name}: external data of tensor '{tensor.name}'")
        if not target.is_file():
            raise ServingError(f"{path.name}: external data file {target} of '{tensor.name}' does not exist")


def create_session(path: Path, prefer_gpu: bool = True) -> ort.InferenceSession:
    """Ask for CUDA first when this onnxruntime build has it; read `get_providers()` for the active one."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = cpu_count()
    options.log_severity_level = 3  # errors only: node-placement warnings are noise here
    providers = [CPU]
    if prefer_gpu and CUDA in ort.get_available_providers():
        providers.insert(0, CUDA)
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as err:  # onnxruntime raises its own pybind types
        raise ServingError(f"onnxruntime could not load {path}: {err}") from None


def check_signature(session: ort.InferenceSession, manifest: Manifest, path: Path) -> None:
    """One float input as wide as the feature spec; a probabilities output as wide as the labels."""
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].type != "tensor(float)":
        found = [(i.name, i.type) for i in inputs]
        raise ServingError(f"{path}: expected one float32 input, found {found}")
    width, columns = inputs[0].shape[-1], len(manifest.features.columns)
    if isinstance(width, int) and width != columns:
        raise ServingError(f"{path}: takes {width} features, the manifest lists {columns}")
    outputs = {o.name: o for o in session.get_outputs()}
    if PROBABILITIES not in outputs:
        raise ServingError(f"{path}: no '{PROBABILITIES}' output (found {sorted(outputs)})")
    classes = outputs[PROBABILITIES].shape[-1]
    if isinstance(classes, int) and classes != len(manifest.labels):
        raise ServingError(
            f"{path}: gives {classes} probabilities, the manifest lists {len(manifest.labels)} labels"
        )


def provider_note(provider: str, prefer_gpu: bool) -> str:
    """Why the active provider is not CUDA, for the start-up line; "" when it is."""
    if provider == CUDA:
        return ""
    if not prefer_gpu:
        return "GPU not requested"
    if CUDA not in ort.get_available_providers():
        return "CUDA not available in this onnxruntime build"
    return "CUDA not active"


def cpu_count() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def inside(folder: Path, name: str, what: str = "manifest file") -> Path:
    """`folder / name`, refused when it resolves (links included) outside `folder`."""
    target = (folder / name).resolve()
    if not name or not target.is_relative_to(folder.resolve()):
        raise ServingError(f"{what} '{name}' points outside {folder}; refusing it")
    return target


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ServingError(f"cannot read {path}: {err}") from None


def _model_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        yield from _node_tensors(function.node)


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    yield from _node_tensors(graph.node)


def _node_tensors(nodes: Sequence[onnx.NodeProto]) -> Iterator[onnx.TensorProto]:
    for node in nodes:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _graph_tensors(attribute.g)
            for graph in attribute.graphs:
                yield from _graph_tensors(graph)
