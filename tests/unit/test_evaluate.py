"""evaluate: metrics agree with scikit-learn, the blessing gate's reasons, and the stage's reports."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from tasks import evaluate, export
from tasks.config import DriftParams, EvaluateParams
from tasks.drift import DRIFT_REPORT, profile_split
from tasks.errors import GateFailed
from tasks.evaluate import bless, compute_metrics
from tasks.paths import BLESSING_FILE, METRICS_FILE, MODEL_FILE, ONNX_FILE, PLOTS_DIR, split_path

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_proba(n: int, k: int, seed: int) -> np.ndarray:
    raw = np.random.default_rng(seed).random((n, k)) + 0.05
    return raw / raw.sum(1, keepdims=True)


def noisy_truth(proba: np.ndarray, seed: int) -> np.ndarray:
    """Labels that agree with the argmax about 70 % of the time, every class present."""
    rng = np.random.default_rng(seed)
    y = np.where(rng.random(len(proba)) < 0.7, proba.argmax(1), rng.integers(0, proba.shape[1], len(proba)))
    y[: proba.shape[1]] = np.arange(proba.shape[1])
    return y


# ---- compute_metrics ----------------------------------------------------------------------------------


def test_binary_metrics_match_sklearn() -> None:
    proba = random_proba(50, 2, seed=1)
    y = noisy_truth(proba, seed=2)
    pred = proba.argmax(1)
    got = compute_metrics(y, proba, ["benign", "malignant"])
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert got["precision_macro"] == pytest.approx(skm.precision_score(y, pred, average="macro"))
    assert got["recall_macro"] == pytest.approx(skm.recall_score(y, pred, average="macro"))
    assert got["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba[:, 1]))
    assert got["pr_auc"] == pytest.approx(skm.average_precision_score(y, proba[:, 1]))
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, proba))
    assert got["rows"] == 50
    assert list(got["per_class"]) == ["benign", "malignant"]
    f1 = skm.f1_score(y, pred, average=None)
    assert [c["f1"] for c in got["per_class"].values()] == pytest.approx(f1)
    assert [c["support"] for c in got["per_class"].values()] == np.bincount(y).tolist()


def test_multiclass_metrics_match_sklearn() -> None:
    proba = random_proba(60, 3, seed=3)
    y = noisy_truth(proba, seed=4)
    pred = proba.argmax(1)
    got = compute_metrics(y, proba, [0, 1, 2])
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert got["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    onehot = np.eye(3)[y]
    assert got["pr_auc"] == pytest.approx(skm.average_precision_score(onehot, proba, average="macro"))
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, proba))
    assert list(got["per_class"]) == ["0", "1", "2"]
    recall = skm.recall_score(y, pred, average=None)
    assert [c["recall"] for c in got["per_class"].values()] == pytest.approx(recall)


def test_metrics_are_plain_json() -> None:
    proba = random_proba(20, 3, seed=5)
    got = compute_metrics(noisy_truth(proba, seed=6), proba, ["a", "b", "c"])
    assert json.loads(json.dumps(got, allow_nan=False)) == got
    assert all(type(v) in (float, int) for k, v in got.items() if k != "per_class")


def test_a_class_absent_from_the_test_split_does_not_crash() -> None:
    proba = random_proba(12, 3, seed=7)
    y = np.array([0, 1] * 6)  # class 2 never appears
    got = compute_metrics(y, proba, ["a", "b", "c"])
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, proba.argmax(1)))
    assert got["per_class"]["c"]["support"] == 0
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, proba, labels=[0, 1, 2]))


@pytest.mark.parametrize(("k", "y"), [(3, [0, 1] * 6), (2, [1] * 12)], ids=["multiclass", "binary"])
def test_roc_auc_is_none_when_a_class_is_absent(k: int, y: list[int]) -> None:
    got = compute_metrics(np.array(y), random_proba(12, k, seed=8), [str(i) for i in range(k)])
    assert got["roc_auc"] is None
    json.dumps(got, allow_nan=False)


# ---- bless --------------------------------------------------------------------------------------------

GATE = EvaluateParams(thresholds={"accuracy": 0.8, "f1_macro": 0.75}, regression_metrics=["f1_macro"])


def test_good_metrics_are_blessed() -> None:
    assert bless({"accuracy": 0.9, "f1_macro": 0.85}, GATE, None) == []
    assert bless({"accuracy": 0.8, "f1_macro": 0.75}, GATE, None) == []  # at the threshold passes


def test_below_threshold_names_the_metric() -> None:
    reasons = bless({"accuracy": 0.79, "f1_macro": 0.9}, GATE, None)
    assert reasons == ["accuracy 0.7900 is below the threshold 0.8"]


def test_missing_or_undefined_metric_is_not_blessed() -> None:
    params = EvaluateParams(thresholds={"roc_auc": 0.9}, regression_metrics=[])
    assert bless({"roc_auc": None}, params, None) == ["roc_auc undefined is below the threshold 0.9"]
    assert bless({}, params, None) == ["roc_auc undefined is below the threshold 0.9"]


def test_nan_metric_is_not_blessed() -> None:
    params = EvaluateParams(thresholds={"roc_auc": 0.9}, regression_metrics=[])
    assert bless({"roc_auc": math.nan}, params, None) != []


def test_regression_beyond_tolerance_is_not_blessed() -> None:
    reasons = bless({"accuracy": 0.9, "f1_macro": 0.85}, GATE, {"f1_macro": 0.87})
    assert len(reasons) == 1
    assert "f1_macro 0.8500 is worse than production's 0.8700 by more than 0.01" in reasons[0]


def test_regression_within_tolerance_is_blessed() -> None:
    assert bless({"accuracy": 0.9, "f1_macro": 0.865}, GATE, {"f1_macro": 0.87}) == []
    assert bless({"accuracy": 0.9, "f1_macro": 0.95}, GATE, {"f1_macro": 0.87}) == []


def test_regression_checks_only_what_production_has() -> None:
    assert bless({"accuracy": 0.9, "f1_macro": 0.85}, GATE, {"accuracy": 0.99}) == []
    reasons = bless({"accuracy": 0.9}, EvaluateParams(thresholds={}), {"f1_macro": 0.8})
    assert reasons == ["f1_macro undefined is worse than production's 0.8000 by more than 0.01"]


def test_both_kinds_of_reason_are_reported() -> None:
    reasons = bless({"accuracy": 0.5, "f1_macro": 0.5}, GATE, {"f1_macro": 0.9})
    assert [r.split()[0] for r in reasons] == ["accuracy", "f1_macro", "f1_macro"]


# ---- run ----------------------------------------------------------------------------------------------


def save_constant_model(class_index: int) -> None:
    """A model that predicts one class whatever the input: the 'bad model' of these tests."""
    import torch

    from tasks.config import TrainParams
    from tasks.families import family
    from tasks.features import fit_features, label_values
    from tasks.model import Trained, save_model
    from tasks.train import resolve

    train = pd.read_parquet(split_path("train"))
    prep, labels = fit_features(train, "label").model_dump(), label_values(train["label"])
    params = resolve(TrainParams(hidden=[4], dropout=0.0), "mlp")
    model = family("tabular").build("mlp", prep, len(labels), params)
    last = model.mlp[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([10.0 if i == class_index else 0.0 for i in range(len(labels))]))
    save_model(MODEL_FILE, Trained(model, "tabular", "mlp", prep, labels, params))


def test_predict_proba_matches_the_network_batch_by_batch(fitted_project: Path) -> None:
    import torch

    from tasks.model import load_model

    trained = load_model(MODEL_FILE)
    inputs = trained.family.encode(evaluate.load_split("test", "tabular"), trained.prep)
    proba = evaluate.predict_proba(trained, inputs, batch=7)  # several batches, the last one short
    with torch.no_grad():
        want = trained.network(torch.from_numpy(inputs[0]))[1].double().numpy()
    assert proba.shape == (len(inputs[0]), len(trained.labels)) and proba.dtype == np.float64
    np.testing.assert_allclose(proba, want, atol=1e-6)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-12)


def test_run_blesses_a_good_model(fitted_project: Path, fitted_params) -> None:
    result = evaluate.run(fitted_params)
    metrics = json.loads(METRICS_FILE.read_text(encoding="utf-8"))
    blessing = json.loads(BLESSING_FILE.read_text(encoding="utf-8"))
    assert metrics == result["metrics"] and metrics["accuracy"] >= 0.8
    assert metrics["rows"] == len(pd.read_parquet(split_path("test")))
    assert blessing == {"blessed": True, "reasons": [], "compared_with": None}
    assert json.loads(DRIFT_REPORT.read_text(encoding="utf-8"))["status"] == "no reference"
    for name in ("confusion.csv", "roc.csv", "pr.csv", "confusion.png", "roc.png", "pr.png"):
        assert (PLOTS_DIR / name).stat().st_size > 0, name
    confusion = pd.read_csv(PLOTS_DIR / "confusion.csv")
    assert len(confusion) == metrics["rows"] and set(confusion["actual"]) <= {"no", "yes"}


def test_a_bad_model_is_recorded_as_not_blessed_and_export_refuses_it(
    fitted_project: Path, fitted_params
) -> None:
    save_constant_model(0)
    assert evaluate.run(fitted_params)["blessing"]["blessed"] is False
    with pytest.raises(GateFailed, match=r"model not blessed .*accuracy 0\.\d{4} is below the threshold 0.8"):
        export.run(fitted_params)
    assert not ONNX_FILE.exists()
    metrics = json.loads(METRICS_FILE.read_text(encoding="utf-8"))
    blessing = json.loads(BLESSING_FILE.read_text(encoding="utf-8"))
    assert metrics["accuracy"] == pytest.approx(0.5, abs=0.05)
    assert metrics["per_class"]["yes"]["recall"] == 0.0
    assert blessing["blessed"] is False
    assert any(r.startswith("accuracy ") for r in blessing["reasons"])
    assert any(r.startswith("f1_macro ") for r in blessing["reasons"])


def publish_production(params, **manifest) -> str:
    from tasks.registry import publish_version, set_production

    Path("model.onnx").write_bytes(b"onnx")
    problem = {"task": "tabular", "target": "label", "labels": ["no", "yes"]}
    manifest = {**problem, "metrics": {"f1_macro": 1.5}, "files": {}, **manifest}
    version = publish_version(params.promote.registry, [Path("model.onnx")], manifest)
    set_production(params.promote.registry, version)
    return version


def test_run_compares_with_production(fitted_project: Path, fitted_params) -> None:
    version = publish_production(fitted_params)
    reasons = evaluate.run(fitted_params)["blessing"]["reasons"]
    assert any("worse than production's 1.5000" in reason for reason in reasons)
    blessing = json.loads(BLESSING_FILE.read_text(encoding="utf-8"))
    assert blessing["blessed"] is False and blessing["compared_with"] == version == "v0001"


@pytest.mark.parametrize(
    "other",
    [{"task": "image"}, {"labels": ["benign", "malignant"]}, {"target": "diagnosis"}],
    ids=["another task", "other labels", "another target"],
)
def test_a_production_model_for_another_problem_is_not_a_regression_baseline(
    fitted_project: Path, fitted_params, other, caplog: pytest.LogCaptureFixture
) -> None:
    """After a table, a user trains on images: the gate is the thresholds alone (and says so)."""
    publish_production(fitted_params, **other)
    with caplog.at_level("INFO", logger="shipyard.evaluate"):
        evaluate.run(fitted_params)
    blessing = json.loads(BLESSING_FILE.read_text(encoding="utf-8"))
    assert blessing == {"blessed": True, "reasons": [], "compared_with": None}
    assert "is a different problem" in caplog.text


def test_run_does_not_bless_an_undefined_metric(fitted_project: Path, fitted_params) -> None:
    test = pd.read_parquet(split_path("test"))
    test[test["label"] == "yes"].to_parquet(split_path("test"), index=False)
    params = fitted_params.model_copy(
        update={"evaluate": EvaluateParams(thresholds={"roc_auc": 0.9}, regression_metrics=[])}
    )
    reasons = evaluate.run(params)["blessing"]["reasons"]
    assert any("roc_auc undefined" in reason for reason in reasons)
    json.loads(METRICS_FILE.read_text(encoding="utf-8"), parse_constant=lambda c: pytest.fail(c))


# ---- the drift gate -----------------------------------------------------------------------------------


def publish_with_profile(params, train: pd.DataFrame) -> str:
    """A production model for the same problem whose training data was `train`."""
    from tasks.io import write_json
    from tasks.registry import publish_version, set_production

    write_json("profile.json", profile_split(train, "tabular", "label"))
    problem = {"task": "tabular", "target": "label", "labels": ["no", "yes"], "metrics": {}}
    manifest = {**problem, "files": {}, "profile": "profile.json"}
    version = publish_version(params.promote.registry, [Path("profile.json")], manifest)
    set_production(params.promote.registry, version)
    return version


def test_drift_against_production_is_not_blessed(fitted_project: Path, fitted_params) -> None:
    train = pd.read_parquet(split_path("train"))
    version = publish_with_profile(fitted_params, train.assign(x2=train["x2"] / 10))  # now 10x its scale
    reasons = evaluate.run(fitted_params)["blessing"]["reasons"]
    assert re.match(rf"data drift against production {version} in column\(s\) 'x2' \(PSI", reasons[0])
    blessing = json.loads(BLESSING_FILE.read_text(encoding="utf-8"))
    assert blessing["blessed"] is False and "drift.gate=false" in blessing["reasons"][0]
    report = json.loads(DRIFT_REPORT.read_text(encoding="utf-8"))
    assert report["reference"] == f"production {version}" and report["critical_columns"] == ["x2"]


def test_drift_with_the_gate_off_is_only_logged(
    fitted_project: Path, fitted_params, caplog: pytest.LogCaptureFixture
) -> None:
    train = pd.read_parquet(split_path("train"))
    publish_with_profile(fitted_params, train.assign(x2=train["x2"] / 10))
    params = fitted_params.model_copy(update={"drift": DriftParams(gate=False)})
    with caplog.at_level("WARNING", logger="shipyard.evaluate"):
        assert evaluate.run(params)["blessing"]["blessed"] is True
    assert "column 'x2': PSI" in caplog.text and "drift.gate is off" in caplog.text
    assert json.loads(DRIFT_REPORT.read_text(encoding="utf-8"))["status"] == "critical"


def test_the_same_training_data_is_no_drift(fitted_project: Path, fitted_params) -> None:
    publish_with_profile(fitted_params, pd.read_parquet(split_path("train")))
    assert evaluate.run(fitted_params)["blessing"]["blessed"] is True
    report = json.loads(DRIFT_REPORT.read_text(encoding="utf-8"))
    assert report["status"] == "ok" and report["reference"] == "production v0001"


def test_a_production_model_without_a_profile_is_no_reference(fitted_project: Path, fitted_params) -> None:
    publish_production(fitted_params, metrics={"f1_macro": 0.0})
    evaluate.run(fitted_params)
    report = json.loads(DRIFT_REPORT.read_text(encoding="utf-8"))
    assert report == {"status": "no reference", "reason": "production v0001 has no training profile"}
