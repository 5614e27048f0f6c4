"""export: ONNX with a dynamic batch axis, checked against PyTorch, plus the manifest serving reads."""

from __future__ import annotations

import logging
import subprocess
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.config import ExportParams, Params
from tasks.errors import ShipyardError, stage_main
from tasks.features import encode_frame
from tasks.io import atomic_write, read_json, sha256_file, write_json
from tasks.paths import INGEST_REPORT, MANIFEST_FILE, METRICS_FILE, MODEL_FILE, ONNX_FILE, split_path

log = logging.getLogger("shipyard.export")

INPUT, OUTPUTS = "features", ["logits", "probabilities"]


def export_onnx(model: Any, n_features: int, path: Path, opset: int) -> None:
    """torch -> ONNX with the legacy exporter (torch 2.13's dynamo exporter was seen freezing batch axes)."""
    import onnx
    import torch

    example = torch.zeros(2, n_features)
    axes = {name: {0: "batch"} for name in [INPUT, *OUTPUTS]}

    def write(tmp: Path) -> None:
        warnings.filterwarnings(
            "ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning
        )
        torch.onnx.export(
            model,
            (example,),
            str(tmp),
            input_names=[INPUT],
            output_names=OUTPUTS,
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )
        onnx.checker.check_model(str(tmp), full_check=True)

    atomic_write(path, write)


def check_parity(model: Any, path: Path, x: np.ndarray, params: ExportParams) -> dict[str, Any]:
    """ONNX Runtime vs torch on every row, at each batch size; raises when they disagree."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(torch.from_numpy(x))[0].numpy()
    report = {}
    for batch in params.parity_batch_sizes:
        try:
            got = np.concatenate(
                [session.run([OUTPUTS[0]], {INPUT: x[i : i + batch]})[0] for i in range(0, len(x), batch)]
            )
        except Exception as err:  # onnxruntime's own error types, e.g. a batch axis frozen at export
            reason = str(err).splitlines()[0]
            raise ShipyardError(f"ONNX parity failed at batch size {batch}: {reason}") from None
        max_diff = float(np.abs(got - expected).max())
        agreement = float((got.argmax(1) == expected.argmax(1)).mean())
        report[str(batch)] = {"max_abs_diff": max_diff, "class_agreement": agreement}
        if max_diff > params.parity_atol or agreement < params.min_agreement:
            raise ShipyardError(
                f"ONNX parity failed at batch size {batch}: max |logit diff| {max_diff:.2e} "
                f"(limit {params.parity_atol:.0e}), class agreement {agreement:.4%} "
                f"(minimum {params.min_agreement:.2%})"
            )
    return report


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


def build_manifest(params: Params, spec: Any, labels: list[Any], parity: dict[str, Any]) -> dict[str, Any]:
    ingest = read_json(INGEST_REPORT)
    return {
        "format": 1,
        "name": "shipyard-model",
        "task": "tabular",
        "created_at": datetime.now(UTC).isoformat(),
        "target": params.ingest.target,
        "labels": labels,
        "features": spec.model_dump(),
        "onnx": describe_graph(ONNX_FILE),
        "files": {ONNX_FILE.name: sha256_file(ONNX_FILE)},
        "parity": parity,
        "metrics": read_json(METRICS_FILE),
        "data": {
            "source": ingest["source"],
            "source_sha256": ingest["source_sha256"],
            "splits": ingest["splits"],
        },
        "git_commit": git_commit(),
        "params": params.model_dump(
            by_alias=True, include={"ingest", "validate_", "train", "evaluate", "export"}
        ),
    }


def run(params: Params) -> dict[str, Any]:
    from tasks.model import load_model

    model, spec, labels = load_model(MODEL_FILE)
    x = encode_frame(pd.read_parquet(split_path("test")), spec)
    export_onnx(model, len(spec.columns), ONNX_FILE, params.export.opset)
    parity = check_parity(model, ONNX_FILE, x, params.export)
    manifest = build_manifest(params, spec, labels, parity)
    write_json(MANIFEST_FILE, manifest)
    worst = max(r["max_abs_diff"] for r in parity.values())
    log.info(
        "exported %s (opset %d); parity on %d rows: max |diff| %.1e",
        ONNX_FILE,
        params.export.opset,
        len(x),
        worst,
    )
    return manifest


if __name__ == "__main__":
    stage_main(run)
