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
from tasks.features import FeatureSpec, encode_frame
from tasks.io import read_json, write_json
from tasks.model import Trained, load_model
from tasks.paths import (
    INFERRED_SUITE,
    INGEST_REPORT,
    MANIFEST_FILE,
    METRICS_FILE,
    MODEL_FILE,
    ONNX_FILE,
    VARIANT_FILES,
)
from tasks.train import resolve

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BATCHES = [1, 7, 64]


def fitted_inputs() -> tuple[Trained, np.ndarray]:
    """The fitted project's trained model plus 150 encoded rows (a few missing values)."""
    trained = load_model(MODEL_FILE)
    x = encode_frame(pd.read_csv("data.csv").iloc[:150], FeatureSpec.model_validate(trained.prep))
    x[::11, 0] = np.nan
    return trained, x


def test_export_and_parity_at_several_batch_sizes(fitted_project: Path) -> None:
    trained, x = fitted_inputs()
    path = Path("export/model.onnx")
    export_onnx(trained, [x[:2]], path, opset=17)
    assert [p.name for p in path.parent.iterdir()] == ["model.onnx"]  # no temp file left

    report = check_parity(trained, path, [x], ExportParams(parity_batch_sizes=BATCHES))
    assert list(report) == ["batch 1", "batch 7", "batch 64"]
    for entry in report.values():
        assert entry["max_abs_diff"] <= 1e-4 and entry["class_agreement"] == 1.0

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    labels = trained.labels
    with torch.no_grad():
        want_logits, want_proba = (t.numpy() for t in trained.network(torch.from_numpy(x)))
    for batch in BATCHES:  # the batch axis really is dynamic
        logits, proba = session.run(["logits", "probabilities"], {"features": x[:batch]})
        assert logits.shape == proba.shape == (batch, len(labels))
        np.testing.assert_allclose(logits, want_logits[:batch], atol=1e-4)
        np.testing.assert_allclose(proba, want_proba[:batch], atol=1e-5)


def test_tampered_onnx_fails_parity(fitted_project: Path) -> None:
    trained, x = fitted_inputs()
    path = Path("export/model.onnx")
    torch.manual_seed(123)
    params = resolve(TrainParams(hidden=[16]), "mlp")
    network = trained.family.build("mlp", trained.prep, len(trained.labels), params).eval()
    other = Trained(network, "tabular", "mlp", trained.prep, trained.labels, params)
    export_onnx(other, [x[:2]], path, opset=17)
    with pytest.raises(ShipyardError, match=r"ONNX parity failed at batch 1: max \|logit diff\|"):
        check_parity(trained, path, [x], ExportParams(parity_batch_sizes=BATCHES))


def test_parity_tolerance_is_applied(fitted_project: Path) -> None:
    trained, x = fitted_inputs()
    path = Path("model.onnx")
    export_onnx(trained, [x[:2]], path, opset=17)
    report = check_parity(trained, path, [x], ExportParams(parity_batch_sizes=[7]))
    worst = report["batch 7"]["max_abs_diff"]
    if worst == 0:
        pytest.skip("ONNX Runtime matched torch bit for bit: no tolerance to undercut")
    with pytest.raises(ShipyardError, match="parity failed at batch 7"):
        check_parity(trained, path, [x], ExportParams(parity_batch_sizes=[7], parity_atol=worst / 2))


def test_frozen_batch_axis_is_a_parity_failure(fitted_project: Path) -> None:
    trained, x = fitted_inputs()
    path = Path("static.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            trained.network,
            (torch.zeros(2, x.shape[1]),),
            str(path),
            input_names=["features"],
            output_names=["logits", "probabilities"],
            opset_version=17,
            dynamo=False,
        )
    with pytest.raises(ShipyardError, match="^ONNX parity failed at batch 1: "):
        check_parity(trained, path, [x], ExportParams(parity_batch_sizes=BATCHES))


def test_run_writes_onnx_and_manifest(fitted_project: Path, fitted_params) -> None:
    evaluate.run(fitted_params)  # export reads reports/metrics.json
    manifest = export.run(fitted_params)
    assert json.loads(MANIFEST_FILE.read_text(encoding="utf-8")) == json.loads(json.dumps(manifest))
    variants = manifest["variants"]
    assert set(variants) == {"fp32", "int8", "fp16"}
    assert variants["fp32"]["published"] is True and variants["fp32"]["file"] == "model.onnx"
    published = sorted(v["file"] for k, v in variants.items() if k != "fp32" and v["published"])
    assert sorted(p.name for p in ONNX_FILE.parent.iterdir()) == sorted(
        ["manifest.json", "model.onnx", "profile.json", *published]
    )
    for kind, entry in variants.items():
        if kind != "fp32" and not entry["published"]:
            assert entry["reason"] and not VARIANT_FILES[kind].exists()

    files = ["model.onnx", *published, "profile.json"]
    assert manifest["files"] == {
        name: hashlib.sha256((ONNX_FILE.parent / name).read_bytes()).hexdigest() for name in files
    }

    trained = load_model(MODEL_FILE)
    spec, labels = FeatureSpec.model_validate(trained.prep), trained.labels
    n_features, n_classes = len(spec.columns), len(labels)
    assert (manifest["task"], manifest["model"]) == ("tabular", "mlp")
    assert manifest["labels"] == labels == ["no", "yes"]
    assert manifest["features"] == spec.model_dump() == manifest["preprocessing"]
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

    assert set(manifest["parity"]) == {f"batch {b}" for b in fitted_params.export.parity_batch_sizes}
    assert manifest["metrics"] == read_json(METRICS_FILE)
    ingest = read_json(INGEST_REPORT)
    assert manifest["data"] == {k: ingest[k] for k in ("source", "source_sha256", "splits")}
    assert set(manifest["params"]) == {"task", "ingest", "validate", "train", "evaluate", "export"}
    assert manifest["params"]["train"]["hidden"] == fitted_params.train.hidden
    assert manifest["profile"] == "profile.json" and manifest["contract"] is None  # validate did not run
    profile = read_json(ONNX_FILE.parent / "profile.json")
    assert profile["rows"] == len(pd.read_parquet("data/splits/train.parquet"))
    assert set(profile["columns"]) == {"x1", "x2", "colour", "label"}


def test_run_publishes_the_validated_suite_and_hides_sensitive_values(
    fitted_project: Path, fitted_params
) -> None:
    """The contract serving checks requests with, and the drift reference, travel with the model."""
    suite = {"name": "shipyard", "expectations": [], "meta": {"shipyard": {"sensitive_columns": ["colour"]}}}
    write_json(INFERRED_SUITE, suite)
    evaluate.run(fitted_params)
    manifest = export.run(fitted_params)
    copied = ONNX_FILE.parent / "suite.json"
    assert copied.read_bytes() == INFERRED_SUITE.read_bytes() and manifest["contract"] == "suite.json"
    assert manifest["files"]["suite.json"] == hashlib.sha256(copied.read_bytes()).hexdigest()
    profile_text = (ONNX_FILE.parent / "profile.json").read_text(encoding="utf-8")
    assert manifest["files"]["profile.json"] == hashlib.sha256(profile_text.encode()).hexdigest()
    assert json.loads(profile_text)["columns"]["colour"]["hashed"] is True
    assert not any(colour in profile_text for colour in ("red", "green", "blue"))


def test_run_respects_the_opset(fitted_project: Path, fitted_params) -> None:
    evaluate.run(fitted_params)
    params = fitted_params.model_copy(update={"export": ExportParams(opset=13)})
    manifest = export.run(params)
    assert manifest["onnx"]["opset"] == 13
    assert next(o.version for o in onnx.load(str(ONNX_FILE)).opset_import if o.domain == "") == 13
