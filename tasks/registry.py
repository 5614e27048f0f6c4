"""The local model registry: immutable version folders and an atomically moved production pointer.

    <registry>/versions/v0001/{model.onnx, manifest.json}
    <registry>/production.json   {"version": "v0001", "promoted_at": ...}

A version folder is assembled under a temporary name and renamed into place whole; the pointer is
replaced with os.replace, so a reader sees the old version or the new one, never a mix.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.errors import ShipyardError
from tasks.io import read_json, umask, write_json

POINTER = "production.json"
MANIFEST = "manifest.json"
VERSION_PATTERN = re.compile(r"^v(\d{4,})$")


def production_version(registry: str | Path) -> str | None:
    pointer = Path(registry) / POINTER
    if not pointer.exists():
        return None
    try:
        return read_json(pointer)["version"]
    except (ValueError, KeyError, TypeError):
        raise ShipyardError(f"{pointer}: unreadable production pointer") from None


def production_manifest(registry: str | Path) -> dict[str, Any] | None:
    version = production_version(registry)
    return None if version is None else read_json(Path(registry) / "versions" / version / MANIFEST)


def versions(registry: str | Path) -> list[str]:
    folder = Path(registry) / "versions"
    names = [p.name for p in folder.iterdir()] if folder.exists() else []
    return sorted((n for n in names if VERSION_PATTERN.match(n)), key=lambda n: int(n[1:]))


def publish_version(registry: str | Path, files: list[Path], manifest: dict[str, Any]) -> str:
    """Copy files plus manifest into a new immutable version folder; returns its name."""
    root = Path(registry) / "versions"
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    os.chmod(staging, 0o777 & ~umask())  # mkdtemp makes 0700; a published version is world-readable
    try:
        for file in files:
            shutil.copy2(file, staging / file.name)
        while True:
            existing = versions(registry)
            version = f"v{int(existing[-1][1:]) + 1 if existing else 1:04d}"
            write_json(staging / MANIFEST, {**manifest, "version": version})
            try:
                os.rename(staging, root / version)  # fails if another writer took the name
                return version
            except OSError:
                if not (root / version).exists():
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def set_production(registry: str | Path, version: str) -> None:
    if not (Path(registry) / "versions" / version / MANIFEST).exists():
        raise ShipyardError(f"{registry}: no version {version} to promote")
    write_json(Path(registry) / POINTER, {"version": version, "promoted_at": datetime.now(UTC).isoformat()})
