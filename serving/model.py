"""Load the version `promote` published as production and run it with onnxruntime.

Reads only the registry: `production.json` names a folder under `versions/` that holds `manifest.json` and
the files it lists with their sha256. Every file is checked before a session is created, and the provider
that is really active is read back from the session: onnxruntime-gpu lists CUDA as available on machines
where it then falls back to CPU. The manifest's `task` (tabular when absent) says what the model takes:
feature records, uint8 pixels, or texts tokenized with the version's own tokenizer.json (see inputs.py).
A published variant (int8, fp16) is served in place of the fp32 model when asked for.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import onnxruntime as ort
from pydantic import BaseModel, Field, ValidationError
from tokenizers import Tokenizer

from serving.inputs import ImagePreprocessing, InputError, check_texts, decode_images, tokenize
from tasks.errors import ShipyardError
from tasks.features import FeatureSpec, encode_records

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
MANIFEST_FORMAT = 1
PROBABILITIES = "probabilities"
FP32 = "fp32"
INT8 = "int8"
FP16 = "fp16"
AUTO = "auto"  # fp16 on an active GPU, int8 on the CPU, fp32 where the variant was not published
# The inputs each family's network takes, by name, as onnxruntime types them (tabular: any one name).
INPUTS = {
    "image": {"pixels": "tensor(uint8)"},
    "text": {"input_ids": "tensor(int64)", "attention_mask": "tensor(int64)"},
}
ITEMS = {"tabular": "records", "image": "images", "text": "texts"}
_VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

Task = Literal["tabular", "image", "text"]


class ServingError(ShipyardError):
    """The production model cannot be loaded or run."""


class RecordError(ServingError, InputError):
    """A request's records cannot be encoded (missing column, not a number, ...): the client's to fix."""


class TensorSection(BaseModel):
    name: str


class OnnxSection(BaseModel):
    file: str
    inputs: list[TensorSection] | None = None


class VariantSection(BaseModel):
    file: str | None = None  # absent where the variant could not be built
    published: bool = False


class TextPreprocessing(BaseModel):
    tokenizer: str
    max_length: int = Field(gt=0)


class Manifest(BaseModel):
    """The part of `manifest.json` that serving reads; other keys are kept in `LoadedModel.manifest`."""

    format: int
    name: str
    version: str
    task: Task = "tabular"
    labels: list[Any]
    features: FeatureSpec | None = None
    preprocessing: dict[str, Any] | None = None
    onnx: OnnxSection
    files: dict[str, str]
    variants: dict[str, VariantSection] = Field(default_factory=dict)
    contract: str | None = None  # the data contract (GE suite JSON) export published beside the model

    @cached_property
    def image(self) -> ImagePreprocessing:
        return ImagePreprocessing.model_validate(self.preprocessing or {})

    @cached_property
    def text(self) -> TextPreprocessing:
        return TextPreprocessing.model_validate(self.preprocessing or {})


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    manifest: dict[str, Any]
    spec: FeatureSpec | None
    labels: list[Any]
    session: ort.InferenceSession
    provider: str
    provider_note: str  # why the provider is not CUDA ("" when it is)
    task: Task = "tabular"
    variant: str = FP32
    image: ImagePreprocessing | None = None
    tokenizer: Tokenizer | None = None
    folder: Path | None = None  # the version folder (for files read on demand, such as the contract)

    @property
    def input_name(self) -> str:
        return self.session.get_inputs()[0].name

    def describe(self) -> str:
        """One line for the start-up log: name, version, family, variant and the provider really active."""
        note = f" ({self.provider_note})" if self.provider_note else ""
        return f"serving {self.name} {self.version} ({self.task}, {self.variant}) on {self.provider}{note}"

    def predict(self, items: Sequence[Any]) -> list[dict[str, Any]]:
        """Records, images or texts -> per item {"label": original label, "probabilities": {str(label): p}}.

        Images may be base64 strings, data URLs, raw PNG/JPEG bytes or (H, W[, C]) arrays of 0-255.
        """
        if not items:
            raise RecordError(f"no {ITEMS[self.task]} to predict")
        outputs = self.run(self.encode(items), [PROBABILITIES])
        return self.predictions(outputs[PROBABILITIES])

    def predictions(self, probabilities: np.ndarray) -> list[dict[str, Any]]:
        """Per row {"label": the original label, "probabilities": {str(label): p}}, the output checked."""
        self._check_output(probabilities, len(probabilities))
        keys = self.label_keys
        winners = probabilities.argmax(axis=1).tolist()
        return [
            {"label": self.labels[winner], "probabilities": dict(zip(keys, row, strict=True))}
            for winner, row in zip(winners, probabilities.tolist(), strict=True)
        ]

    @cached_property
    def label_keys(self) -> list[str]:
        return [str(label) for label in self.labels]

    @cached_property
    def output_names(self) -> list[str]:
        return [output.name for output in self.session.get_outputs()]

    def run(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """The named outputs (all when None) for one batch; through IO binding when CUDA is active."""
        names = list(outputs or self.output_names)
        if self.provider != CUDA:
            return dict(zip(names, self.session.run(names, dict(inputs)), strict=True))
        binding = self.session.io_binding()
        for name, value in inputs.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name in names:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        return dict(zip(names, binding.copy_outputs_to_cpu(), strict=True))

    @property
    def pad_values(self) -> dict[str, int]:
        """What pads each input when texts of different lengths share a batch."""
        if self.tokenizer is None:
            return {}
        return {"input_ids": (self.tokenizer.padding or {}).get("pad_id", 0), "attention_mask": 0}

    def warm_up(self, max_batch: int) -> float:
        """Run example inputs at batch 1 and max_batch before taking traffic (allocations, kernels);
        the median seconds of a few batch-1 runs afterwards."""
        for rows in sorted({1, max(1, max_batch)}):
            self.run(self.encode(self.example_items(rows)), [PROBABILITIES])
        one, times = self.encode(self.example_items(1)), []
        for _ in range(5):
            started = time.perf_counter()
            self.run(one, [PROBABILITIES])
            times.append(time.perf_counter() - started)
        return sorted(times)[len(times) // 2]

    def example_items(self, rows: int) -> list[Any]:
        """Items this model takes: zero records, black images, or texts of a few words."""
        if self.task == "image":
            assert self.image is not None
            return [np.zeros((self.image.height, self.image.width), np.uint8)] * rows
        if self.task == "text":
            return ["a short text to warm the model up before it serves"] * rows
        assert self.spec is not None
        return [dict.fromkeys(self.spec.columns, 0)] * rows

    def encode(self, items: Sequence[Any]) -> dict[str, np.ndarray]:
        """The network's named inputs for these items; an InputError names the item a client got wrong."""
        if self.task == "image":
            assert self.image is not None
            return {"pixels": decode_images(items, self.image)}
        if self.task == "text":
            assert self.tokenizer is not None
            return tokenize(self.tokenizer, check_texts(items))
        return {self.input_name: self._encode_records(items)}

    def _encode_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        assert self.spec is not None
        try:
            with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused just below
                features = encode_records(records, self.spec)
        except ShipyardError as err:
            raise RecordError(str(err)) from None
        self._check_finite(features, records)
        return features

    def _check_finite(self, features: np.ndarray, records: Sequence[Mapping[str, Any]]) -> None:
        infinite = np.argwhere(np.isinf(features))
        if infinite.size:
            assert self.spec is not None
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


def load_production(registry: Path, prefer_gpu: bool = True, variant: str = AUTO) -> LoadedModel:
    """The version `production.json` points to, with every file checked against the manifest."""
    return load_version(registry, read_pointer(registry), prefer_gpu, variant)


def load_version(
    registry: Path, version: str, prefer_gpu: bool = True, variant: str = AUTO, threads: int = 0
) -> LoadedModel:
    """One version of the registry, every file checked against its manifest.

    `variant` picks the file: "fp32" is `onnx.file`; "int8"/"fp16" must be published entries of `variants`;
    "auto" takes fp16 where CUDA is really active, int8 on the CPU, and fp32 where that one was not published.
    `threads` sets onnxruntime's intra-op threads (0: the CPUs this process may use).
    """
    folder = Path(registry) / "versions" / version
    raw, manifest = read_manifest(folder, version)
    verify_files(folder, manifest.files)
    tokenizer = load_tokenizer(folder, manifest) if manifest.task == "text" else None
    variant, session = open_variant(folder, manifest, variant, prefer_gpu, threads)
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
        task=manifest.task,
        variant=variant,
        image=manifest.image if manifest.task == "image" else None,
        tokenizer=tokenizer,
        folder=folder,
    )


def open_variant(
    folder: Path, manifest: Manifest, variant: str, prefer_gpu: bool, threads: int = 0
) -> tuple[str, ort.InferenceSession]:
    """The variant's name and its checked session; "auto" resolved against the provider really active."""
    if variant != AUTO:
        return variant, open_session(folder, manifest, variant, prefer_gpu, threads)
    published = {key for key, entry in manifest.variants.items() if entry.published}
    if prefer_gpu and cuda_usable():
        chosen = FP16 if FP16 in published else FP32
        session = open_session(folder, manifest, chosen, prefer_gpu, threads)
        if session.get_providers()[0] == CUDA:
            return chosen, session
    chosen = INT8 if INT8 in published else FP32
    return chosen, open_session(folder, manifest, chosen, False, threads)


def open_session(
    folder: Path, manifest: Manifest, variant: str, prefer_gpu: bool, threads: int = 0
) -> ort.InferenceSession:
    path = model_file(folder, manifest, variant)
    check_external_data(path)
    session = create_session(path, prefer_gpu, threads)
    check_signature(session, manifest, path)
    return session


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
        raise ServingError(f"{path}: {_problems(err)}") from None
    if manifest.format != MANIFEST_FORMAT:
        raise ServingError(f"{path}: manifest format {manifest.format} is not supported (expected 1)")
    if manifest.version != version:
        raise ServingError(f"{path}: says version '{manifest.version}', production.json says '{version}'")
    if not manifest.labels or len({str(label) for label in manifest.labels}) != len(manifest.labels):
        raise ServingError(f"{path}: labels must be non-empty and distinct as text, got {manifest.labels}")
    check_family(manifest, path)
    return raw, manifest


def check_family(manifest: Manifest, path: Path) -> None:
    """The keys the manifest's task needs: `features` (tabular) or `preprocessing` (image, text)."""
    if manifest.task == "tabular" and manifest.features is None:
        raise ServingError(f"{path}: features: Field required (a tabular model's feature spec)")
    try:
        if manifest.task == "image":
            _ = manifest.image
        elif manifest.task == "text":
            _ = manifest.text
    except ValidationError as err:
        raise ServingError(f"{path}: {_problems(err, 'preprocessing')} ({manifest.task} model)") from None


def model_file(folder: Path, manifest: Manifest, variant: str) -> Path:
    """The ONNX file of the asked-for variant; it must be published and listed in `files`."""
    if variant == FP32:
        name = manifest.onnx.file
    else:
        published = [FP32, *(key for key, entry in manifest.variants.items() if entry.published)]
        entry = manifest.variants.get(variant)
        if entry is None:
            raise ServingError(
                f"{manifest.name} {manifest.version} has no variant '{variant}'; published: {published}"
            )
        if not entry.published:
            raise ServingError(
                f"{manifest.name} {manifest.version}: variant '{variant}' was not published at export; "
                f"published: {published}"
            )
        name = entry.file or ""
    if name not in manifest.files:
        raise ServingError(f"{folder / 'manifest.json'}: {variant} model '{name}' is not in 'files'")
    return inside(folder, name)


def load_tokenizer(folder: Path, manifest: Manifest) -> Tokenizer:
    """The version's tokenizer.json (sha256-checked with the other files); it must truncate."""
    name = manifest.text.tokenizer
    if name not in manifest.files:
        raise ServingError(f"{folder / 'manifest.json'}: tokenizer '{name}' is not in 'files'")
    path = inside(folder, name)
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as err:  # the Rust side raises plain Exception
        raise ServingError(f"{path} is not a readable tokenizer: {err}") from None
    if tokenizer.truncation is None:
        raise ServingError(f"{path}: truncation must be enabled (export saves it with max_length)")
    return tokenizer


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


def create_session(path: Path, prefer_gpu: bool = True, threads: int = 0) -> ort.InferenceSession:
    """Ask for CUDA first when this onnxruntime build has it; read `get_providers()` for the active one."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or cpu_count()
    options.log_severity_level = 3  # errors only: node-placement warnings are noise here
    providers = [CPU]
    if prefer_gpu and cuda_usable():
        providers.insert(0, CUDA)
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as err:  # onnxruntime raises its own pybind types
        raise ServingError(f"onnxruntime could not load {path}: {err}") from None


def check_signature(session: ort.InferenceSession, manifest: Manifest, path: Path) -> None:
    """The family's inputs (names, types, fixed sizes); a probabilities output as wide as the labels."""
    if manifest.task == "tabular":
        check_tabular_input(session, manifest, path)
    else:
        check_named_inputs(session, manifest, path)
    if manifest.onnx.inputs is not None:
        listed, actual = [i.name for i in manifest.onnx.inputs], [i.name for i in session.get_inputs()]
        if not set(actual) <= set(listed):  # a listed initializer is no input of the session
            raise ServingError(f"{path}: takes inputs {actual}, the manifest lists {listed}")
    outputs = {o.name: o for o in session.get_outputs()}
    if PROBABILITIES not in outputs:
        raise ServingError(f"{path}: no '{PROBABILITIES}' output (found {sorted(outputs)})")
    classes = outputs[PROBABILITIES].shape[-1]
    if isinstance(classes, int) and classes != len(manifest.labels):
        raise ServingError(
            f"{path}: gives {classes} probabilities, the manifest lists {len(manifest.labels)} labels"
        )


def check_tabular_input(session: ort.InferenceSession, manifest: Manifest, path: Path) -> None:
    """One float input as wide as the feature spec."""
    assert manifest.features is not None
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].type != "tensor(float)":
        found = [(i.name, i.type) for i in inputs]
        raise ServingError(f"{path}: expected one float32 input, found {found}")
    width, columns = inputs[0].shape[-1], len(manifest.features.columns)
    if isinstance(width, int) and width != columns:
        raise ServingError(f"{path}: takes {width} features, the manifest lists {columns}")


def check_named_inputs(session: ort.InferenceSession, manifest: Manifest, path: Path) -> None:
    """Image: pixels uint8 [batch, H, W, C] of the manifest's size; text: ids and mask int64 [batch, seq]."""
    expected = INPUTS[manifest.task]
    found = {i.name: i for i in session.get_inputs()}
    if {name: i.type for name, i in found.items()} != expected:
        actual = [(name, i.type) for name, i in found.items()]
        raise ServingError(f"{path}: a {manifest.task} model takes {list(expected.items())}, found {actual}")
    if manifest.task == "image":
        image = manifest.image
        _check_shape(
            path, "pixels", found["pixels"].shape, ["batch", image.height, image.width, image.channels]
        )
    else:
        for name in expected:
            _check_shape(path, name, found[name].shape, ["batch", "seq"])


def _check_shape(path: Path, name: str, shape: list[Any], want: list[int | str]) -> None:
    """Same rank, and every fixed size of the model the one wanted (named axes stay free)."""
    fixed = (d == w for d, w in zip(shape, want, strict=False) if isinstance(d, int) and isinstance(w, int))
    if len(shape) != len(want) or not all(fixed):
        raise ServingError(f"{path}: '{name}' is shaped {shape}, expected {want}")


def provider_note(provider: str, prefer_gpu: bool) -> str:
    """Why the active provider is not CUDA, for the start-up line; "" when it is."""
    if provider == CUDA:
        return ""
    if not prefer_gpu:
        return "GPU not requested"
    if CUDA not in ort.get_available_providers():
        return "CUDA not available in this onnxruntime build"
    if not nvidia_device_present():
        return "CUDA not used: no NVIDIA GPU found"
    return "CUDA not active"


def cuda_usable() -> bool:
    """CUDA is worth asking for: this build has it and the machine shows an NVIDIA device. onnxruntime-gpu
    lists CUDA on any machine and logs a loud library error when it then cannot load it."""
    return CUDA in ort.get_available_providers() and nvidia_device_present()


def nvidia_device_present() -> bool:
    if sys.platform != "linux":
        return True  # no cheap check elsewhere: let onnxruntime try
    return any(Path(path).exists() for path in ("/dev/nvidiactl", "/proc/driver/nvidia"))


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


def _problems(err: ValidationError, prefix: str = "") -> str:
    """Pydantic's errors as `key.path: message; ...`."""
    return "; ".join(
        f"{'.'.join(map(str, [*([prefix] if prefix else []), *e['loc']]))}: {e['msg']}" for e in err.errors()
    )


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
