"""Reference results on real data: the pipeline's stages on MNIST-10k and the SMS Spam Collection.

    python -m bench.reference [--only NAME ...] [--datasets ../shared/datasets]

Each run is a fresh folder with this checkout's params.yaml and the stage modules run in order
(ingest, validate, train, evaluate, export; validate is skipped where Great Expectations is not
installed, so the rest runs on the GPU machines too). Results go to bench/results/reference.json and
print as the README table.
The TF-IDF + logistic-regression row is the classic model a user would otherwise pick, fitted on the
same train split and scored on the same test split as the SMS runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import machine_info, print_table, timestamp, write_results

PROJECT = Path(__file__).resolve().parents[1]
DEFAULT_DATASETS = PROJECT.parent / "shared" / "datasets"
STAGES = ("ingest", "validate", "train", "evaluate", "export")  # validate only where GE is installed
SPLIT_80_10_10 = ["ingest.val_fraction=0.1", "ingest.test_fraction=0.1"]

# name -> (dataset path under the datasets folder, target, --set assignments)
RUNS: dict[str, tuple[str, str, list[str]]] = {
    "mnist-cnn": ("mnist-10k", "target", [*SPLIT_80_10_10]),
    "mnist-mlp-baseline": (
        "mnist-10k",
        "target",
        [*SPLIT_80_10_10, "train.model=mlp", "train.hidden=[128, 64]", "train.epochs=10", "train.dropout=0"],
    ),
    "sms-minilm": ("sms-spam/SMSSpamCollection.tsv", "Label", []),
    "sms-lstm-baseline": ("sms-spam/SMSSpamCollection.tsv", "Label", ["train.model=lstm"]),
}


def run_pipeline(name: str, datasets: Path, workdir: Path) -> dict[str, Any]:
    """Ingest, train, evaluate and export one reference run in a fresh folder; collect its figures."""
    from tasks.config import apply_overrides, parse_assignment

    source, target, assignments = RUNS[name]
    folder = workdir / name
    folder.mkdir(parents=True)
    overrides = [parse_assignment(a) for a in assignments]
    overrides += [(["ingest", "source"], str(datasets / source)), (["ingest", "target"], target)]
    apply_overrides(PROJECT / "params.yaml", overrides, folder / "params.yaml")
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "HF_HUB_OFFLINE": "1"}
    seconds = {}
    for stage in STAGES:
        if stage == "validate" and importlib.util.find_spec("great_expectations") is None:
            continue
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", f"tasks.{stage}"], cwd=folder, env=env, text=True)
        seconds[stage] = round(time.perf_counter() - started, 1)
        if done.returncode:
            raise SystemExit(f"{name}: stage {stage} failed (exit {done.returncode})")
    return summarize(name, folder, seconds)


def summarize(name: str, folder: Path, seconds: dict[str, float]) -> dict[str, Any]:
    train = json.loads((folder / "reports/train.json").read_text())
    metrics = json.loads((folder / "reports/metrics.json").read_text())
    manifest = json.loads((folder / "export/manifest.json").read_text())
    variants = manifest["variants"]
    return {
        "run": name,
        "task": manifest["task"],
        "model": manifest["model"],
        "parameters": train["parameters"],
        "device": train["device"],
        "epochs": train["epochs_run"],
        "train_seconds": train["seconds"],
        "test_rows": metrics["rows"],
        "accuracy": metrics["accuracy"],
        "f1_macro": metrics["f1_macro"],
        "f1_spam": metrics["per_class"].get("spam", {}).get("f1"),
        "latency_ms_batch_1": {k: v.get("latency", {}).get("batch_1_ms") for k, v in variants.items()},
        "variant_accuracy": {k: v.get("accuracy") for k, v in variants.items()},
        "variants_published": [k for k, v in variants.items() if v["published"]],
        "stage_seconds": seconds,
        "splits": folder,
    }


def tfidf_baseline(splits: Path) -> dict[str, Any]:
    """TF-IDF (word 1-2-grams) + logistic regression on the SMS run's own train/test splits."""
    import pandas as pd
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    train, test = (pd.read_parquet(splits / f"data/splits/{s}.parquet") for s in ("train", "test"))
    started = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    model = LogisticRegression(C=10, max_iter=2000).fit(
        vectorizer.fit_transform(train["SMS"]), train["Label"]
    )
    seconds = time.perf_counter() - started
    predicted = model.predict(vectorizer.transform(test["SMS"]))
    return {
        "run": "sms-tfidf-logreg",
        "task": "text",
        "model": "tfidf+logreg (sklearn)",
        "train_seconds": round(seconds, 2),
        "test_rows": len(test),
        "accuracy": accuracy_score(test["Label"], predicted),
        "f1_spam": f1_score(test["Label"], predicted, pos_label="spam"),
    }


def table_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    def number(value: Any, digits: str = ".4f") -> str:
        return "-" if value is None else format(value, digits)

    rows = []
    for r in results:
        latency = r.get("latency_ms_batch_1", {})
        rows.append(
            [
                r["run"],
                r["model"],
                number(r["accuracy"]),
                number(r.get("f1_spam") if r.get("f1_spam") is not None else r.get("f1_macro")),
                f"{r['train_seconds']:.0f} s"
                if r.get("train_seconds", 0) >= 1
                else f"{r['train_seconds']} s",
                number(latency.get("fp32"), ".3f"),
                number(latency.get("int8"), ".3f"),
                ", ".join(r.get("variants_published", [])) or "-",
                f"{r['parameters']:,}" if "parameters" in r else "-",
            ]
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="*", choices=sorted(RUNS), help="runs to do (default: all)")
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    args = parser.parse_args(argv)
    if not args.datasets.is_dir():
        raise SystemExit(f"{args.datasets}: reference datasets not found (see ../shared/datasets/README.md)")
    results = []
    with tempfile.TemporaryDirectory(prefix="shipyard-reference-") as tmp:
        for name in args.only or list(RUNS):
            results.append(run_pipeline(name, args.datasets.resolve(), Path(tmp)))
            if name.startswith("sms") and not any(r["run"] == "sms-tfidf-logreg" for r in results):
                results.append(tfidf_baseline(results[-1]["splits"]))
        for result in results:
            result.pop("splits", None)
    headers = [
        "run",
        "model",
        "test acc",
        "F1 (spam / macro)",
        "train",
        "ORT fp32 ms",
        "ORT int8 ms",
        "published",
        "parameters",
    ]
    print_table("reference results (batch-1 latency on CPU, onnxruntime)", headers, table_rows(results))
    path = write_results("reference", {"when": timestamp(), "machine": machine_info(), "results": results})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
