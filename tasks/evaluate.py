"""evaluate: test-split metrics with scikit-learn, DVC plots, and the blessing gate."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.config import EvaluateParams, Params
from tasks.drift import DRIFT_REPORT, compare, critical_summary, drift_lines, production_profile
from tasks.errors import stage_main
from tasks.families import load_split
from tasks.features import encode_labels
from tasks.io import atomic_write, write_json, write_text
from tasks.model import Trained, load_model
from tasks.paths import BLESSING_FILE, METRICS_FILE, MODEL_FILE, PLOTS_DIR
from tasks.registry import production_manifest

log = logging.getLogger("shipyard.evaluate")


def predict_proba(trained: Trained, inputs: list[np.ndarray], batch: int = 256) -> np.ndarray:
    """Class probabilities from the torch model as float64 rows that sum to 1."""
    proba = trained.predict(inputs, batch)[1].astype(np.float64)
    return proba / proba.sum(axis=1, keepdims=True)


def compute_metrics(y: np.ndarray, proba: np.ndarray, labels: list[Any]) -> dict[str, Any]:
    """Accuracy, precision/recall/F1 (macro and per class), ROC-AUC, PR-AUC (one-vs-rest), log-loss."""
    from sklearn import metrics as m
    from sklearn.preprocessing import label_binarize

    classes = list(range(len(labels)))
    pred = proba.argmax(1)
    precision, recall, f1, support = m.precision_recall_fscore_support(
        y, pred, labels=classes, zero_division=0
    )
    onehot = label_binarize(y, classes=classes) if len(classes) > 2 else y
    scores = proba if len(classes) > 2 else proba[:, 1]
    result: dict[str, Any] = {
        "accuracy": m.accuracy_score(y, pred),
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "f1_macro": float(f1.mean()),
        "roc_auc": _safe(m.roc_auc_score, onehot, scores, average="macro"),
        "pr_auc": _safe(m.average_precision_score, onehot, scores, average="macro"),
        "log_loss": m.log_loss(y, proba, labels=classes),
        "rows": len(y),
        "per_class": {
            str(label): {"precision": p, "recall": r, "f1": f, "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
        },
    }
    return _plain(result)


def _safe(metric, *args, **kwargs) -> float | None:
    """None where a metric is undefined (e.g. a class absent from the test split)."""
    try:
        value = float(metric(*args, **kwargs))
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value.item() if hasattr(value, "item") else value


def bless(metrics: dict[str, Any], params: EvaluateParams, production: dict[str, Any] | None) -> list[str]:
    """Reasons the model is NOT blessed (empty list = blessed)."""
    reasons = []
    for name, minimum in params.thresholds.items():
        value = metrics.get(name)
        if value is None or not value >= minimum:  # NaN never passes
            reasons.append(f"{name} {_fmt(value)} is below the threshold {minimum}")
    for name in params.regression_metrics if production else []:
        current, candidate = production.get(name), metrics.get(name)
        if current is not None and (
            candidate is None or not candidate >= current - params.regression_tolerance
        ):
            reasons.append(
                f"{name} {_fmt(candidate)} is worse than production's {current:.4f} "
                f"by more than {params.regression_tolerance}"
            )
    return reasons


def _fmt(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.4f}"


def write_plots(y: np.ndarray, proba: np.ndarray, labels: list[Any]) -> None:
    """DVC plot data (CSV) plus PNGs: confusion matrix, ROC and PR curves (one-vs-rest)."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    names = [str(label) for label in labels]
    confusion = pd.DataFrame(
        {"actual": [names[i] for i in y], "predicted": [names[i] for i in proba.argmax(1)]}
    )
    write_text(PLOTS_DIR / "confusion.csv", confusion.to_csv(index=False))
    roc, pr = [], []
    for k in range(len(names)) if len(names) > 2 else [1]:
        name = names[k]
        if (y == k).all() or not (y == k).any():
            continue
        fpr, tpr, _ = roc_curve(y == k, proba[:, k])
        precision, recall, _ = precision_recall_curve(y == k, proba[:, k])
        roc.append(pd.DataFrame({"class": name, "fpr": fpr, "tpr": tpr}))
        pr.append(pd.DataFrame({"class": name, "recall": recall, "precision": precision}))
    for file, frames in (("roc.csv", roc), ("pr.csv", pr)):
        frame = pd.concat(frames) if frames else pd.DataFrame(columns=["class", "x", "y"])
        write_text(PLOTS_DIR / file, frame.to_csv(index=False))
    draw_figures(y, proba, names, roc, pr)


def draw_figures(y: np.ndarray, proba: np.ndarray, names: list[str], roc: list, pr: list) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(5, 5))
    ConfusionMatrixDisplay.from_predictions(
        y, proba.argmax(1), labels=range(len(names)), display_labels=names, ax=ax, colorbar=False
    )
    _save_figure(fig, PLOTS_DIR / "confusion.png")
    for file, frames, (x, yname) in (
        ("roc.png", roc, ("fpr", "tpr")),
        ("pr.png", pr, ("recall", "precision")),
    ):
        fig, ax = plt.subplots(figsize=(5, 5))
        for frame in frames:
            ax.plot(frame[x], frame[yname], label=f"class {frame['class'].iloc[0]}")
        ax.set_xlabel(x)
        ax.set_ylabel(yname)
        ax.legend(loc="lower right" if x == "fpr" else "lower left")
        _save_figure(fig, PLOTS_DIR / file)
    plt.close("all")


def _save_figure(fig: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))


def comparable_production(params: Params, trained: Trained) -> dict[str, Any] | None:
    """Production's manifest when it solves the same problem (task, target, labels), else None.

    A model for another dataset (say, images after a table) is not a regression of the one in production:
    it is gated by the thresholds alone, and the log says so.
    """
    production = production_manifest(params.promote.registry)
    if production is None:
        return None
    mine = (trained.task, params.ingest.target, trained.labels)
    theirs = (production.get("task", "tabular"), production.get("target"), production.get("labels"))
    if mine != theirs:
        log.info(
            "production %s is a different problem (%s, target %r, %d labels): no regression check",
            production["version"],
            theirs[0],
            theirs[1],
            len(theirs[2] or []),
        )
        return None
    return production


def training_drift(params: Params, trained: Trained, production: dict[str, Any] | None) -> dict[str, Any]:
    """This run's training split against the training profile production was published with."""
    if production is None:
        return {"status": "no reference", "reason": "no production model for the same problem"}
    version = production["version"]
    profile = production_profile(params.promote.registry, production)
    if profile is None:
        return {"status": "no reference", "reason": f"production {version} has no training profile"}
    train = load_split("train", trained.task)
    report = compare(profile, train.frame, train.pixels, params.drift)
    return {"status": report["status"], "reference": f"production {version}", **report}


def drift_reasons(params: Params, report: dict[str, Any]) -> list[str]:
    """Critical drift is a reason not to bless (with drift.gate on); warnings are only logged."""
    if report["status"] == "no reference":
        log.info("drift: not checked (%s)", report["reason"])
        return []
    for line in drift_lines(report):
        log.warning("drift against %s: %s", report["reference"], line)
    if report["status"] != "critical":
        return []
    reason = f"data drift against {report['reference']} in column(s) {critical_summary(report)}"
    if not params.drift.gate:
        log.warning("%s; drift.gate is off, so the model may still be promoted", reason)
        return []
    return [f"{reason} (see {DRIFT_REPORT}; to promote anyway: --set drift.gate=false)"]


def run(params: Params) -> dict[str, Any]:
    trained = load_model(MODEL_FILE)
    labels = trained.labels
    test = load_split("test", trained.task)
    y = encode_labels(test.frame[params.ingest.target], labels)
    proba = predict_proba(trained, trained.family.encode(test, trained.prep))
    metrics = compute_metrics(y, proba, labels)
    write_json(METRICS_FILE, metrics)
    write_plots(y, proba, labels)
    production = comparable_production(params, trained)
    reasons = bless(metrics, params.evaluate, production["metrics"] if production else None)
    drift = training_drift(params, trained, production)
    write_json(DRIFT_REPORT, drift)
    reasons += drift_reasons(params, drift)
    blessing = {
        "blessed": not reasons,
        "reasons": reasons,
        "compared_with": production["version"] if production else None,
    }
    write_json(BLESSING_FILE, blessing)
    log.info(
        "test accuracy %.4f, f1_macro %.4f, roc_auc %s",
        metrics["accuracy"],
        metrics["f1_macro"],
        _fmt(metrics["roc_auc"]),
    )
    if reasons:  # recorded, not raised: export refuses it, and a sweep keeps it as an experiment
        log.warning("model not blessed (export and promote will refuse it): %s", "; ".join(reasons))
    return {"metrics": metrics, "blessing": blessing}


if __name__ == "__main__":
    stage_main(run)
