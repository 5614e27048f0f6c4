"""promote: publish the blessed ONNX model and manifest as a new registry version, move production to it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tasks.config import Params
from tasks.errors import GateFailed, ShipyardError, stage_main
from tasks.io import read_json, sha256_file, write_json
from tasks.paths import BLESSING_FILE, MANIFEST_FILE, PROMOTION_REPORT
from tasks.registry import production_manifest, publish_version, set_production

log = logging.getLogger("shipyard.promote")


def check_export(manifest: dict[str, Any], folder: Path) -> list[Path]:
    """The exported files, each matching the sha256 the manifest gives it."""
    files = []
    for name, digest in manifest["files"].items():
        path = folder / name
        if not path.exists() or sha256_file(path) != digest:
            raise ShipyardError(f"{path}: missing or changed since export (sha256 mismatch); re-run export")
        files.append(path)
    return files


def run(params: Params) -> dict[str, Any]:
    registry = params.promote.registry
    blessing = read_json(BLESSING_FILE)
    if not blessing["blessed"]:
        raise GateFailed("model not blessed, not promoted: " + "; ".join(blessing["reasons"]))
    manifest = read_json(MANIFEST_FILE)
    files = check_export(manifest, MANIFEST_FILE.parent)
    current = production_manifest(registry)
    if current and current["files"] == manifest["files"]:
        version = current["version"]
        log.info("the exported model is already production (%s/%s); nothing to publish", registry, version)
    else:
        version = publish_version(registry, files, manifest)
        set_production(registry, version)
        log.info("promoted %s to production in %s", version, registry)
    report = {"registry": registry, "version": version, "path": str(Path(registry) / "versions" / version)}
    write_json(PROMOTION_REPORT, report)
    return report


if __name__ == "__main__":
    stage_main(run)
