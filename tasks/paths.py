"""Where each stage reads and writes, relative to the project root (dvc.yaml lists the same paths)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_DATASET = Path("data/raw/breast_cancer.csv")

SPLITS_DIR = Path("data/splits")
SPLITS = ("train", "val", "test")
INGEST_REPORT = Path("data/ingest.json")

VALIDATION_DIR = Path("reports/validation")
VALIDATION_RESULTS = VALIDATION_DIR / "results.json"
INFERRED_SUITE = VALIDATION_DIR / "suite.json"
DATA_DOCS_DIR = VALIDATION_DIR / "docs"
QUARANTINE_ROWS = VALIDATION_DIR / "quarantine.csv"  # the rows set aside, with reasons (for people)
QUARANTINE_FILE = Path("data/quarantine.json")  # their positions per split (for the stages after validate)

MODEL_DIR = Path("models")
MODEL_FILE = MODEL_DIR / "model.pt"
CHECKPOINT_DIR = MODEL_DIR / "checkpoints"
TRAIN_REPORT = Path("reports/train.json")

METRICS_FILE = Path("reports/metrics.json")
PLOTS_DIR = Path("reports/plots")
BLESSING_FILE = Path("reports/blessing.json")

EXPORT_DIR = Path("export")
ONNX_FILE = EXPORT_DIR / "model.onnx"
VARIANT_FILES = {"int8": EXPORT_DIR / "model.int8.onnx", "fp16": EXPORT_DIR / "model.fp16.onnx"}
MANIFEST_FILE = EXPORT_DIR / "manifest.json"

PROMOTION_REPORT = Path("reports/promotion.json")


def split_path(name: str) -> Path:
    return SPLITS_DIR / f"{name}.parquet"


def pixels_path(name: str) -> Path:
    """An image split's pixels: uint8 (N, H, W, C), row i of the split's table."""
    return SPLITS_DIR / f"{name}.pixels.npy"
