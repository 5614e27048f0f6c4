"""Helpers for tests that run the real pipeline: a throwaway project folder, data, servers on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PROJECT_FILES = ["dvc.yaml", "params.yaml", "pyproject.toml", ".dvc/config", ".dvc/.gitignore", ".gitignore"]
CODE_DIRS = ["tasks", "flows", "serving"]

# What a failed run must leave byte-identical: the last good model, its metrics, the registry, the params.
PROTECTED = [
    "registry/production.json",
    "models/model.pt",
    "export/model.onnx",
    "export/manifest.json",
    "reports/metrics.json",
    "params.yaml",
]

# Small and quick: the tests check behaviour, not accuracy.
FAST = ["train.epochs=40", "train.patience=8", "train.hidden=[32]", "train.lr=0.01"]


def make_project(path: Path) -> Path:
    """A fresh git + DVC project folder with this checkout's code, dvc.yaml and params.yaml."""
    path.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, path / name)
    for name in CODE_DIRS:
        shutil.copytree(ROOT / name, path / name, ignore=shutil.ignore_patterns("__pycache__"))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    subprocess.run(git + ["add", "-A"], cwd=path, check=True)
    subprocess.run(git + ["commit", "-qm", "project"], cwd=path, check=True)
    return path


def snapshot(project: Path) -> dict[str, str]:
    """sha256 of each PROTECTED file of a project."""
    import hashlib

    return {name: hashlib.sha256((project / name).read_bytes()).hexdigest() for name in PROTECTED}


def env(**extra: str) -> dict[str, str]:
    """The environment a user has after activating .venv (so dvc.yaml's `python` is the venv's)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_URL")}
    base["PATH"] = f"{BIN}{os.pathsep}{base.get('PATH', '')}"
    base["DO_NOT_TRACK"] = "1"
    return {**base, **extra}


def shipyard(
    project: Path, *args: str, timeout: float = 300, **extra_env: str
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "shipyard"), *args],
        cwd=project,
        env=env(**extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def dvc(project: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "dvc"), *args], cwd=project, env=env(), capture_output=True, text=True, timeout=timeout
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, timeout: float = 90) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def tabular_frame(rows: int = 300, classes: int = 2, seed: int = 0) -> pd.DataFrame:
    """A learnable table with numeric, categorical and missing values, and string labels."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, classes, rows)
    colour = np.array(["red", "green", "blue"])[(label + rng.integers(0, 2, rows)) % 3]
    frame = pd.DataFrame(
        {
            "age (years)": np.round(40 + 8 * label + rng.normal(0, 3, rows), 1),
            "dose_mg": np.round(rng.normal(5, 1, rows) + 2 * label, 3),
            "colour": colour,
            "noise": rng.normal(0, 1, rows),
            "label": np.array(["low", "mid", "high"])[label] if classes <= 3 else label,
        }
    )
    frame.loc[rng.choice(rows, rows // 20, replace=False), "dose_mg"] = np.nan
    return frame


def image_folder(root: Path, per_class: int = 20, size: int = 12, seed: int = 0) -> dict[str, list[Path]]:
    """ImageFolder layout: classes told apart by which half of the image is bright (PNG, some JPEG)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    made: dict[str, list[Path]] = {}
    for label, bright in (
        ("left", np.s_[:, : size // 2]),
        ("right", np.s_[:, size // 2 :]),
        ("top", np.s_[: size // 2]),
    ):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        made[label] = []
        for i in range(per_class):
            pixels = rng.integers(0, 60, (size, size)).astype(np.uint8)
            pixels[bright] = rng.integers(190, 256, pixels[bright].shape)
            path = folder / f"{i:03d}.{'jpg' if i % 5 == 0 else 'png'}"
            Image.fromarray(pixels, "L").save(path, quality=95)
            made[label].append(path)
    return made


SPAM_WORDS = ["win", "free", "prize", "cash", "claim", "urgent", "offer", "txt", "now", "call"]
HAM_WORDS = ["see", "you", "later", "dinner", "tonight", "thanks", "love", "home", "meeting", "soon"]


def text_frame(rows: int = 160, seed: int = 0) -> pd.DataFrame:
    """Short messages labelled spam/ham by their words, plus a short categorical column."""
    rng = np.random.default_rng(seed)
    label = rng.random(rows) < 0.3
    texts = [
        " ".join(rng.choice(SPAM_WORDS if spam else HAM_WORDS, rng.integers(5, 12))) + f" #{i}"
        for i, spam in enumerate(label)
    ]
    channel = rng.choice(["sms", "mail"], rows)
    return pd.DataFrame({"channel": channel, "message": texts, "kind": np.where(label, "spam", "ham")})
