"""export: ONNX with a dynamic batch axis, parity with torch at several batch sizes, and the manifest."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch

from tasks import evaluate, export
from tasks.config import ExportParams, TrainParams
from tasks.errors import ShipyardError
from tasks.export import check_parity, export_onnx
from tasks.features import encode_frame
from tasks.io import read_json
from tasks.model import build_model, load_model
from tasks.paths import INGEST_REPORT, MANIFEST_FILE, METRICS_FILE, MODEL_FILE, ONNX_FILE

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BATCHES = [1, 7, 64]


def fitted_inputs() -> tuple[torch.nn.Module, object, list, np.ndarray]:
    """The fitted project's model, spec and labels, plus 150 encoded rows (a few missing values)."""
    model, spec, labels = load_model(MODEL_FILE)
    x = encode_frame(pd.read_csv("data.csv").iloc[:150], spec)
    x[::11, 0] = np.nan
    return model, spec, labels, x


def test_export_and_parity_at_several_batch_sizes(fitted_project: Path) -> None:
    model, spec, labels, x = fitted_inputs()
    path = Path("export/model.onnx")
    export_onnx(model, len(spec.columns), path, opset=17)
    assert [p.name for p in path.parent.iterdir()] == ["model.onnx"]  # no temp file left

    report = check_parity(model, path, x, ExportParams(parity_batch_sizes=BATCHES))
    assert list(report) == ["1", "7", "64"]
    for entry in report.values():
        assert entry["max_abs_diff"] <= 1e-4 and entry["class_agreement"] == 1.0

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        want_logits, want_proba = (t.numpy() for t in model(torch.from_numpy(x)))
    for batch in BATCHES:  # the batch axis really is dynamic
        logits, proba = session.run(["logits", "probabilities"], {"features": x[:batch]})
        assert logits.shape == proba.shape == (batch, len(labels))
        np.testing.assert_allclose(logits, want_logits[:batch], atol=1e-4)
        np.testing.assert_allclose(proba, want_proba[:batch], atol=1e-5)


def test_tampered_onnx_fails_parity(fitted_project: Path) -> None:
    model, spec, labels, x = fitted_inputs()
    path = Path("export/model.onnx")
    torch.manual_seed(123)
    other = build_model(spec, len(labels), TrainParams(hidden=[16])).eval()
    export_onnx(other, len(spec.columns), path, opset=17)
    with pytest.raises(ShipyardError, match=r"ONNX parity failed at batch size 1: max \|logit diff\|"):
        check_parity(model, path, x, ExportParams(parity_batch_sizes=BATCHES))


def test_parity_tolerance_is_applied(fitted_project: Path) -> None:
    model, spec, _, x = fitted_inputs()
    path = Path("model.onnx")
    export_onnx(model, len(spec.columns), path, opset=17)
    report = check_parity(model, path, x, ExportParams(parity_batch_sizes=[7]))
    worst = report["7"]["max_abs_diff"]
    if worst == 0:
        pytest.skip("ONNX Runtime matched torch bit for bit: no tolerance to undercut")
    with pytest.raises(ShipyardError, match="parity failed at batch size 7"):
        check_parity(model, path, x, ExportParams(parity_batch_sizes=[7], parity_atol=worst / 2))


def test_frozen_batch_axis_is_a_parity_failure(fitted_project: Path) -> None:
    model, spec, _, x = fitted_inputs()
    path = Path("static.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(2, len(spec.columns)),),
            str(path),
            input_names=["features"],
            output_names=["logits", "probabilities"],
            opset_version=17,
            dynamo=False,
        )
    with pytest.raises(ShipyardError, match="batch size 1"):
        check_parity(model, path, x, ExportParams(parity_batch_sizes=BATCHES))


def test_run_writes_onnx_and_manifest(fitted_project: Path, fitted_params) -> None:
    evaluate.run(fitted_params)  # export reads reports/metrics.json
    manifest = export.run(fitted_params)
    assert json.loads(MANIFEST_FILE.read_text(encoding="utf-8")) == json.loads(json.dumps(manifest))
    assert sorted(p.name for p in ONNX_FILE.parent.iterdir()) == ["manifest.json", "model.onnx"]

    digest = hashlib.sha256(ONNX_FILE.read_bytes()).hexdigest()
    assert manifest["files"] == {"model.onnx": digest}

    model, spec, labels = load_model(MODEL_FILE)
    n_features, n_classes = len(spec.columns), len(labels)
    assert manifest["labels"] == labels == ["no", "yes"]
    assert manifest["features"] == spec.model_dump()
    assert manifest["target"] == "label"
    graph = manifest["onnx"]
    assert graph["file"] == "model.onnx" and graph["opset"] == fitted_params.export.opset
    assert graph["inputs"] == [{"name": "features", "dtype": "float32", "shape": ["batch", n_features]}]
    assert graph["outputs"] == [
        {"name": name, "dtype": "float32", "shape": ["batch", n_classes]}
        for name in ("logits", "probabilities")
    ]
    loaded = onnx.load(str(ONNX_FILE))
    assert loaded.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"

    assert set(manifest["parity"]) == {str(b) for b in fitted_params.export.parity_batch_sizes}
    assert manifest["metrics"] == read_json(METRICS_FILE)
    ingest = read_json(INGEST_REPORT)
    assert manifest["data"] == {k: ingest[k] for k in ("source", "source_sha256", "splits")}
    assert set(manifest["params"]) == {"ingest", "validate", "train", "evaluate", "export"}
    assert manifest["params"]["train"]["hidden"] == fitted_params.train.hidden


def test_run_respects_the_opset(fitted_project: Path, fitted_params) -> None:
    evaluate.run(fitted_params)
    params = fitted_params.model_copy(update={"export": ExportParams(opset=13)})
    manifest = export.run(params)
    assert manifest["onnx"]["opset"] == 13
    assert next(o.version for o in onnx.load(str(ONNX_FILE)).opset_import if o.domain == "") == 13
