"""export: ONNX with dynamic axes, checked against PyTorch; INT8/FP16 variants; the manifest for serving."""

from __future__ import annotations

import logging
import statistics
import subprocess
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from tasks.config import ExportParams, Params
from tasks.contract import suite_settings
from tasks.drift import profile_split
from tasks.errors import GateFailed, ShipyardError, stage_main
from tasks.families import Family, load_split
from tasks.features import encode_labels
from tasks.io import atomic_write, read_json, sha256_file, write_bytes, write_json
from tasks.model import Trained, load_model
from tasks.paths import (
    BLESSING_FILE,
    EXPORT_DIR,
    INFERRED_SUITE,
    INGEST_REPORT,
    MANIFEST_FILE,
    METRICS_FILE,
    MODEL_FILE,
    ONNX_FILE,
    VARIANT_FILES,
)

log = logging.getLogger("shipyard.export")

OUTPUTS = ["logits", "probabilities"]
PARITY_TEXT_ROWS = 256  # text shapes are checked on this many test rows (a transformer at seq 128 is slow)
LATENCY_RUNS = 30
PROFILE_FILE = EXPORT_DIR / "profile.json"  # the training data's profile: the reference for drift
CONTRACT_FILE = EXPORT_DIR / "suite.json"  # the suite the validate stage used: the contract for serving


def export_onnx(trained: Trained, example: list[np.ndarray], path: Path, opset: int) -> None:
    """torch -> ONNX with the legacy exporter (torch 2.13's dynamo exporter was seen freezing batch axes)."""
    import onnx
    import torch

    family = trained.family
    axes = {**family.axes, **{name: {0: "batch"} for name in OUTPUTS}}

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():  # the exporter's advice; parity below is the real check
            warnings.simplefilter("ignore")
            export(tmp)
        onnx.checker.check_model(str(tmp), full_check=True)

    def export(tmp: Path) -> None:
        torch.onnx.export(
            trained.network,
            tuple(torch.from_numpy(a) for a in example),
            str(tmp),
            input_names=list(family.inputs),
            output_names=OUTPUTS,
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )

    atomic_write(path, write)


def parity_cases(trained: Trained, inputs: list[np.ndarray], params: ExportParams) -> Iterator[tuple]:
    """(label, batch size, inputs) to compare: every batch size, and for text every (batch, seq) shape."""
    if trained.task != "text":
        for batch in params.parity_batch_sizes:
            yield f"batch {batch}", batch, inputs
        return
    for batch, seq in params.parity_shapes:
        rows = max(PARITY_TEXT_ROWS, 2 * batch)
        yield f"batch {batch}, seq {seq}", batch, [_fit_length(a[:rows], seq) for a in inputs]


def _fit_length(array: np.ndarray, length: int) -> np.ndarray:
    """Cut or right-pad (with 0: padding, masked) token arrays to exactly `length` columns."""
    if array.shape[1] >= length:
        return np.ascontiguousarray(array[:, :length])
    return np.pad(array, ((0, 0), (0, length - array.shape[1])))


def ort_outputs(
    session: Any, names: list[str], inputs: list[np.ndarray], batch: int, output: str, take: Any = None
) -> np.ndarray:
    """One output of the session over all rows, `batch` rows per call (cut by `take` when given)."""
    take = take or (lambda arrays, rows: [a[rows] for a in arrays])
    parts = []
    for start in range(0, len(inputs[0]), batch):
        feed = dict(zip(names, take(inputs, slice(start, start + batch)), strict=True))
        parts.append(session.run([output], feed)[0])
    return np.concatenate(parts)


def check_parity(
    trained: Trained, path: Path, inputs: list[np.ndarray], params: ExportParams
) -> dict[str, Any]:
    """ONNX Runtime vs torch on every test row at each batch size (and text shape); raises if they differ."""
    session = cpu_session(path)
    names = list(trained.family.inputs)
    report = {}
    for label, batch, case in parity_cases(trained, inputs, params):
        expected = trained.predict(case, cut=False)[0]  # the very arrays ORT gets
        try:
            got = ort_outputs(session, names, case, batch, OUTPUTS[0])
        except Exception as err:  # onnxruntime's own error types, e.g. a batch axis frozen at export
            raise ShipyardError(f"ONNX parity failed at {label}: {str(err).splitlines()[0]}") from None
        max_diff = float(np.abs(got - expected).max())
        agreement = float((got.argmax(1) == expected.argmax(1)).mean())
        report[label] = {"max_abs_diff": max_diff, "class_agreement": agreement}
        if max_diff > params.parity_atol or agreement < params.min_agreement:
            raise ShipyardError(
                f"ONNX parity failed at {label}: max |logit diff| {max_diff:.2e} "
                f"(limit {params.parity_atol:.0e}), class agreement {agreement:.4%} "
                f"(minimum {params.min_agreement:.2%})"
            )
    return report


def cpu_session(path: Path, cuda: bool = False) -> Any:
    """An onnxruntime session on the CPU, or on CUDA when asked and really active (else the CPU)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    if cuda and torch_sees_cuda() and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(path), options, providers=providers)


def torch_sees_cuda() -> bool:
    """A cheap guard: onnxruntime-gpu lists CUDA as available (and logs loudly) on machines without one."""
    import torch

    return torch.cuda.is_available()


def make_variant(kind: str, source: Path, dest: Path) -> None:
    """int8: dynamic quantization (weights int8, activations quantized at run time), for the CPU path;
    fp16: weights and compute in float16 with float32 inputs/outputs, for the GPU path."""
    import onnx

    if kind == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # Conv stays float: ConvInteger was 3x slower than float Conv on the CPU provider here.
        ops = ["MatMul", "Gemm", "LSTM", "Attention", "EmbedLayerNormalization"]

        def quantize(tmp: Path) -> None:
            with quiet_root_logger():  # onnxruntime.quantization logs its advice on the root logger
                quantize_dynamic(source, tmp, weight_type=QuantType.QInt8, op_types_to_quantize=ops)

        atomic_write(dest, quantize)
    else:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        half = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
        atomic_write(dest, lambda tmp: onnx.save(half, str(tmp)))


@contextmanager
def quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def score_model(
    path: Path, family: Family, inputs: list[np.ndarray], y: np.ndarray, cuda: bool = False
) -> dict[str, Any]:
    """Test-set accuracy and batch-1 / batch-32 median latency of one ONNX file on the CPU provider.

    Rows are scored shortest first in batches cut to their longest (texts); latency is timed on the first
    1 and 32 test rows (texts cut to the longest of them), as a server would batch them. `cuda`: on the
    CUDA provider where it is active (the FP16 variant's path)."""
    session = cpu_session(path, cuda)
    names = list(family.inputs)
    ranked = family.by_length(inputs)
    sorted_inputs = [a[ranked] for a in inputs]
    proba = ort_outputs(session, names, sorted_inputs, 64, OUTPUTS[1], take=family.take)
    latency = {}
    for batch in (1, 32):
        feed = dict(zip(names, family.take(inputs, slice(0, batch)), strict=True))  # texts: cut to longest
        session.run(None, feed)
        times = []
        for _ in range(LATENCY_RUNS):
            start = time.perf_counter()
            session.run(None, feed)
            times.append(time.perf_counter() - start)
        latency[f"batch_{batch}_ms"] = round(statistics.median(times) * 1000, 3)
    return {
        "accuracy": float((proba.argmax(1) == y[ranked]).mean()),
        "provider": session.get_providers()[0],
        "latency": latency,
        "bytes": path.stat().st_size,
    }


def build_variants(
    trained: Trained, inputs: list[np.ndarray], y: np.ndarray, params: ExportParams
) -> dict[str, Any]:
    """Each variant with its accuracy and latency; published only within the accuracy budget of fp32."""
    reference = score_model(ONNX_FILE, trained.family, inputs, y)
    variants: dict[str, Any] = {"fp32": {"file": ONNX_FILE.name, "published": True, **reference}}
    floor = reference["accuracy"] - params.variant_budget
    for kind in params.variants:
        path = VARIANT_FILES[kind]
        try:
            make_variant(kind, ONNX_FILE, path)
            scored = score_model(path, trained.family, inputs, y, cuda=kind == "fp16")
        except Exception as err:  # a variant that cannot be built or run is reported, never published
            path.unlink(missing_ok=True)
            variants[kind] = {"published": False, "reason": f"failed: {str(err).splitlines()[0][:200]}"}
            continue
        published = scored["accuracy"] >= floor
        variants[kind] = {"file": path.name, "published": published, **scored}
        if not published:
            variants[kind]["reason"] = (
                f"accuracy {scored['accuracy']:.4f} is below fp32's minus the budget ({floor:.4f})"
            )
            path.unlink()
    for kind in set(VARIANT_FILES) - set(params.variants):
        VARIANT_FILES[kind].unlink(missing_ok=True)
    return variants


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def describe_graph(path: Path) -> dict[str, Any]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False)

    def tensors(values: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": v.name,
                "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
                "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
            }
            for v in values
        ]

    opset = next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))
    return {
        "file": path.name,
        "opset": opset,
        "inputs": tensors(graph.graph.input),
        "outputs": tensors(graph.graph.output),
    }


def write_references(params: Params, trained: Trained) -> list[Path]:
    """The training split's profile and the data contract, published with the model so that drift and
    serving inputs are judged against the data this model learnt from. The contract is the suite the
    validate stage used; without one (validate not run, e.g. on a GPU machine) none is published."""
    suite = read_json(INFERRED_SUITE) if INFERRED_SUITE.exists() else None
    settings = suite_settings(suite) if suite else {}
    sensitive = {*params.validate_params.sensitive_columns, *(settings.get("sensitive_columns") or [])}
    train = load_split("train", trained.task)
    profile = profile_split(
        train.frame,
        trained.task,
        params.ingest.target,
        pixels=train.pixels,
        text_column=read_json(INGEST_REPORT).get("text_column"),
        sensitive=sorted(sensitive),
        bins=params.drift.bins,
    )
    write_json(PROFILE_FILE, profile)
    if suite is None:
        CONTRACT_FILE.unlink(missing_ok=True)
        log.warning("%s not found: the model is exported without a data contract", INFERRED_SUITE)
        return [PROFILE_FILE]
    write_bytes(CONTRACT_FILE, INFERRED_SUITE.read_bytes())
    return [PROFILE_FILE, CONTRACT_FILE]


def build_manifest(
    params: Params,
    trained: Trained,
    preprocessing: dict[str, Any],
    parity: dict,
    variants: dict,
    references: Sequence[Path] = (),
) -> dict[str, Any]:
    ingest = read_json(INGEST_REPORT)
    files = [ONNX_FILE, *(EXPORT_DIR / name for name in preprocessing.values() if _is_file(name))]
    files += [EXPORT_DIR / v["file"] for k, v in variants.items() if k != "fp32" and v["published"]]
    files += list(references)
    manifest = {
        "format": 1,
        "name": "shipyard-model",
        "task": trained.task,
        "model": trained.model,
        "created_at": datetime.now(UTC).isoformat(),
        "target": params.ingest.target,
        "labels": trained.labels,
        "preprocessing": preprocessing,
        "onnx": describe_graph(ONNX_FILE),
        "files": {path.name: sha256_file(path) for path in files},
        "parity": parity,
        "variants": variants,
        "metrics": read_json(METRICS_FILE),
        "profile": PROFILE_FILE.name if PROFILE_FILE in references else None,
        "contract": CONTRACT_FILE.name if CONTRACT_FILE in references else None,
        "data": {
            "source": ingest["source"],
            "source_sha256": ingest["source_sha256"],
            "splits": ingest["splits"],
        },
        "git_commit": git_commit(),
        "params": params.model_dump(
            by_alias=True, include={"task", "ingest", "validate_", "train", "evaluate", "export"}
        ),
    }
    if trained.task == "tabular":
        manifest["features"] = trained.prep
    return manifest


def _is_file(value: Any) -> bool:
    return isinstance(value, str) and (EXPORT_DIR / value).is_file()


def refuse_unblessed() -> None:
    """The gate: a model evaluate did not bless stops here (exit 3), before anything is exported."""
    blessing = read_json(BLESSING_FILE) if BLESSING_FILE.exists() else {"blessed": True}
    if not blessing["blessed"]:
        reasons = "; ".join(blessing["reasons"])
        raise GateFailed(f"model not blessed (kept in models/, not exported or promoted): {reasons}")


def run(params: Params) -> dict[str, Any]:
    refuse_unblessed()
    trained = load_model(MODEL_FILE)
    test = load_split("test", trained.task)
    inputs = trained.family.encode(test, trained.prep)
    y = encode_labels(test.frame[params.ingest.target], trained.labels)
    text = trained.task == "text"
    example = _text_example(inputs) if text else [a[:2] for a in inputs]
    export_onnx(trained, example, ONNX_FILE, params.export.opset)
    parity = check_parity(trained, ONNX_FILE, inputs, params.export)
    preprocessing = trained.family.files(trained.prep, EXPORT_DIR)
    variants = build_variants(trained, inputs, y, params.export)
    references = write_references(params, trained)
    manifest = build_manifest(params, trained, preprocessing, parity, variants, references)
    write_json(MANIFEST_FILE, manifest)
    worst = max(r["max_abs_diff"] for r in parity.values())
    published = [k for k, v in variants.items() if v["published"]]
    log.info(
        "exported %s (opset %d); parity on %d rows: max |diff| %.1e; variants published: %s",
        ONNX_FILE,
        params.export.opset,
        len(y),
        worst,
        ", ".join(published),
    )
    return manifest


def _text_example(inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Two texts at a length other than the parity shapes', so no axis can be frozen at a tested size."""
    return [_fit_length(a[:2], 5) for a in inputs]


if __name__ == "__main__":
    stage_main(run)
