"""The registry and promote: immutable versions, an atomic production pointer, and a guarded promotion."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from tasks import promote
from tasks.errors import GateFailed, ShipyardError
from tasks.io import read_json
from tasks.paths import BLESSING_FILE, MANIFEST_FILE, ONNX_FILE, PROMOTION_REPORT
from tasks.registry import (
    POINTER,
    production_manifest,
    production_version,
    publish_version,
    set_production,
    versions,
)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_file(folder: Path, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    path.write_bytes(data)
    return path


def publish(registry: Path, folder: Path, data: bytes, **extra: Any) -> str:
    path = model_file(folder, data)
    return publish_version(registry, [path], {"files": {"model.onnx": sha256(data)}, **extra})


def snapshot(folder: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file under folder: bytes, mtime and inode (a rewrite changes one of them)."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def leftovers(registry: Path) -> list[str]:
    return [p.name for p in (registry / "versions").iterdir() if not p.name.startswith("v")]


# ---- registry -----------------------------------------------------------------------------------------


def test_publishes_are_numbered_and_immutable(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    assert versions(registry) == [] and production_version(registry) is None
    assert production_manifest(registry) is None

    first = publish(registry, tmp_path / "a", b"model one", note="first")
    v1 = registry / "versions" / first
    before = snapshot(v1)
    second = publish(registry, tmp_path / "b", b"model two", note="second")

    assert (first, second) == ("v0001", "v0002") and versions(registry) == ["v0001", "v0002"]
    assert snapshot(v1) == before
    assert sorted(before) == ["manifest.json", "model.onnx"]
    assert before["model.onnx"][0] == b"model one"
    assert read_json(v1 / "manifest.json") == {
        "files": {"model.onnx": sha256(b"model one")},
        "note": "first",
        "version": "v0001",
    }
    assert read_json(registry / "versions" / second / "manifest.json")["version"] == "v0002"
    assert leftovers(registry) == []


def test_published_manifest_does_not_alias_the_input(tmp_path: Path) -> None:
    manifest = {"files": {"model.onnx": sha256(b"m")}}
    publish_version(tmp_path / "r", [model_file(tmp_path / "a", b"m")], manifest)
    assert "version" not in manifest


def test_versions_sort_numerically_and_ignore_other_folders(tmp_path: Path) -> None:
    root = tmp_path / "versions"
    for name in ("v0010", "v0009", "v10000", "v12", ".staging-abc", "notes", "v0002x"):
        (root / name).mkdir(parents=True)
    assert versions(tmp_path) == ["v0009", "v0010", "v10000"]


def test_numbering_continues_past_four_digits(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    (registry / "versions" / "v9999").mkdir(parents=True)
    assert publish(registry, tmp_path / "a", b"m") == "v10000"
    assert versions(registry) == ["v9999", "v10000"]


def test_a_failed_publish_leaves_nothing_behind(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    with pytest.raises(FileNotFoundError):
        publish_version(registry, [tmp_path / "absent.onnx"], {"files": {}})
    assert list((registry / "versions").iterdir()) == []


def test_set_production_moves_the_pointer(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    v1 = publish(registry, tmp_path / "a", b"one")
    v2 = publish(registry, tmp_path / "b", b"two")
    set_production(registry, v1)
    assert production_version(registry) == v1
    assert production_manifest(registry)["files"] == {"model.onnx": sha256(b"one")}
    set_production(registry, v2)
    assert production_version(registry) == v2
    assert read_json(registry / POINTER)["version"] == v2
    assert sorted(p.name for p in registry.iterdir()) == [POINTER, "versions"]  # no temp pointer left


def test_set_production_refuses_an_unknown_version(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    set_production(registry, publish(registry, tmp_path / "a", b"one"))
    before = (registry / POINTER).read_bytes()
    with pytest.raises(ShipyardError, match="no version v0007 to promote"):
        set_production(registry, "v0007")
    assert (registry / POINTER).read_bytes() == before


@pytest.mark.parametrize("content", ["not json", "[]", '{"other": 1}'])
def test_unreadable_pointer_is_a_clear_error(tmp_path: Path, content: str) -> None:
    (tmp_path / POINTER).write_text(content, encoding="utf-8")
    with pytest.raises(ShipyardError, match="unreadable production pointer"):
        production_version(tmp_path)


def test_version_folders_get_the_usual_permissions(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    version = publish(registry, tmp_path / "a", b"m")
    umask = os.umask(0)
    os.umask(umask)
    assert (registry / "versions" / version).stat().st_mode & 0o777 == 0o777 & ~umask


def test_readers_always_see_a_complete_consistent_version(tmp_path: Path) -> None:
    """While versions are published and promoted, every read finds one whole version, never a mix."""
    registry = tmp_path / "registry"
    set_production(registry, publish(registry, tmp_path / "src0", b"model 0" * 500, n=0))
    done = threading.Event()
    problems: list[str] = []
    seen: list[str] = []

    def check_version(version: str) -> None:
        folder = registry / "versions" / version
        manifest = read_json(folder / "manifest.json")
        data = (folder / "model.onnx").read_bytes()
        if manifest["version"] != version:
            problems.append(f"{version}: manifest says {manifest['version']}")
        if sha256(data) != manifest["files"]["model.onnx"]:
            problems.append(f"{version}: model.onnx does not match its manifest")
        if data != f"model {manifest['n']}".encode() * 500:
            problems.append(f"{version}: model.onnx belongs to another version")

    def read_forever() -> None:
        mine: list[str] = []  # what this reader saw, in order
        while not done.is_set():
            try:
                version = production_version(registry)
                check_version(version)
                check_version(versions(registry)[-1])  # a listed version is complete, even before promotion
                if mine and int(version[1:]) < int(mine[-1][1:]):
                    problems.append(f"pointer went back from {mine[-1]} to {version}")
                mine.append(version)
            except Exception as err:  # noqa: BLE001 - any failure to read is what this test looks for
                problems.append(f"{type(err).__name__}: {err}")
        seen.extend(mine)

    readers = [threading.Thread(target=read_forever) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        for n in range(1, 40):
            version = publish(registry, tmp_path / f"src{n}", f"model {n}".encode() * 500, n=n)
            set_production(registry, version)
    finally:
        done.set()
        for reader in readers:
            reader.join()
    assert problems == []
    assert len(seen) > 40 and len(set(seen)) > 5
    assert production_version(registry) == "v0040"
    assert leftovers(registry) == []


def test_concurrent_publishers_never_share_a_version(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    results: dict[str, list[str]] = {"a": [], "b": []}
    errors: list[BaseException] = []

    def publisher(who: str) -> None:
        try:
            for n in range(12):
                data = f"{who}{n}".encode()
                results[who].append(publish(registry, tmp_path / f"{who}{n}", data, who=who, n=n))
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=publisher, args=(who,)) for who in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    published = results["a"] + results["b"]
    assert sorted(published) == versions(registry) == [f"v{i:04d}" for i in range(1, 25)]
    for who, names in results.items():
        for n, name in enumerate(names):
            manifest = read_json(registry / "versions" / name / "manifest.json")
            assert (manifest["who"], manifest["n"], manifest["version"]) == (who, n, name)
            assert (registry / "versions" / name / "model.onnx").read_bytes() == f"{who}{n}".encode()
    assert leftovers(registry) == []


# ---- promote ------------------------------------------------------------------------------------------


def stage_export(data: bytes, blessed: bool = True, reasons: tuple[str, ...] = ()) -> dict[str, Any]:
    """What evaluate and export leave for promote: the ONNX file, its manifest and the blessing."""
    ONNX_FILE.parent.mkdir(parents=True, exist_ok=True)
    ONNX_FILE.write_bytes(data)
    manifest = {
        "name": "shipyard-model",
        "files": {ONNX_FILE.name: sha256(data)},
        "metrics": {"f1_macro": 0.9},
    }
    MANIFEST_FILE.write_text(json.dumps(manifest), encoding="utf-8")
    BLESSING_FILE.parent.mkdir(parents=True, exist_ok=True)
    BLESSING_FILE.write_text(json.dumps({"blessed": blessed, "reasons": list(reasons)}), encoding="utf-8")
    return manifest


def test_promote_publishes_and_moves_production(project: Path, make_params) -> None:
    params = make_params()
    manifest = stage_export(b"onnx one")
    report = promote.run(params)
    assert report == {
        "registry": "registry",
        "version": "v0001",
        "path": str(Path("registry/versions/v0001")),
    }
    assert read_json(PROMOTION_REPORT) == report
    assert production_version("registry") == "v0001"
    assert production_manifest("registry") == {**manifest, "version": "v0001"}
    assert Path("registry/versions/v0001/model.onnx").read_bytes() == b"onnx one"

    stage_export(b"onnx two")
    assert promote.run(params)["version"] == "v0002"
    assert production_version("registry") == "v0002"
    assert Path("registry/versions/v0001/model.onnx").read_bytes() == b"onnx one"


def test_promote_refuses_an_unblessed_model(project: Path, make_params) -> None:
    params = make_params()
    stage_export(b"good")
    promote.run(params)
    before = snapshot(Path("registry"))
    stage_export(b"bad", blessed=False, reasons=("accuracy 0.5000 is below the threshold 0.8",))
    with pytest.raises(GateFailed, match="model not blessed, not promoted: accuracy 0.5000 is below"):
        promote.run(params)
    assert snapshot(Path("registry")) == before  # pointer byte-identical, no new version


def test_promote_refuses_unblessed_into_an_empty_registry(project: Path, make_params) -> None:
    stage_export(b"bad", blessed=False, reasons=("f1_macro too low",))
    with pytest.raises(GateFailed):
        promote.run(make_params())
    assert not Path("registry").exists() and not PROMOTION_REPORT.exists()


@pytest.mark.parametrize("tamper", ["changed", "missing"])
def test_promote_refuses_a_file_that_does_not_match_the_manifest(project: Path, make_params, tamper) -> None:
    params = make_params()
    stage_export(b"first")
    promote.run(params)
    before = snapshot(Path("registry"))
    stage_export(b"second")
    if tamper == "changed":
        ONNX_FILE.write_bytes(b"second, edited after export")
    else:
        ONNX_FILE.unlink()
    with pytest.raises(ShipyardError, match=r"export/model.onnx: missing or changed since export \(sha256"):
        promote.run(params)
    assert snapshot(Path("registry")) == before


def test_promoting_the_same_export_twice_is_a_no_op(project: Path, make_params) -> None:
    params = make_params()
    stage_export(b"same")
    first = promote.run(params)
    before = snapshot(Path("registry"))
    again = promote.run(params)
    assert again == first
    assert versions("registry") == ["v0001"]
    assert snapshot(Path("registry")) == before  # the pointer is not even rewritten


def test_promote_uses_the_configured_registry(project: Path, make_params) -> None:
    stage_export(b"m")
    report = promote.run(make_params(promote={"registry": "shared/models"}))
    assert report["registry"] == "shared/models" and production_version("shared/models") == "v0001"
    assert not Path("registry").exists()
