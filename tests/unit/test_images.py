"""images: ImageFolder and IDX reading, bad files, the common size/channels rule, duplicates, detection."""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tasks.errors import ShipyardError
from tasks.images import (
    ImageData,
    drop_duplicate_images,
    is_image_source,
    read_images,
    subset,
    to_model_image,
)

LABEL = "label"
MNIST = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "mnist-10k"


def solid(height: int, width: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    shape = (height, width) if mode == "L" else (height, width, len(mode))
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


def save(image: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def image_folder(root: Path, spec: dict[str, list[tuple[str, Image.Image]]]) -> Path:
    for label, files in spec.items():
        for name, image in files:
            save(image, root / label / name)
    return root


def idx_images(images: np.ndarray, magic: int = 2051) -> bytes:
    count, rows, cols = images.shape
    return struct.pack(">IIII", magic, count, rows, cols) + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes()


def write_idx(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray, gz: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    pack = gzip.compress if gz else bytes
    (folder / f"{prefix}-images-idx3-ubyte{suffix}").write_bytes(pack(idx_images(images)))
    (folder / f"{prefix}-labels-idx1-ubyte{suffix}").write_bytes(pack(idx_labels(labels)))
    return folder


# ---- ImageFolder ------------------------------------------------------------------------------------


def test_image_folder_reads_labels_meta_and_exact_png_pixels(tmp_path: Path) -> None:
    cat = solid(6, 5, seed=1)
    root = image_folder(
        tmp_path / "pets",
        {
            "cat": [("001.png", cat), ("002.jpg", solid(6, 5, seed=2))],
            "dog": [("a.jpeg", solid(6, 5, seed=3)), ("b.png", solid(6, 5, seed=4))],
            "fox": [("x.png", solid(6, 5, seed=5))],
        },
    )
    data = read_images(root, LABEL)
    assert list(data.meta.columns) == ["path", LABEL, "width", "height", "mode", "sha256"]
    paths = ["cat/001.png", "cat/002.jpg", "dog/a.jpeg", "dog/b.png", "fox/x.png"]
    assert data.meta["path"].tolist() == paths
    assert data.meta[LABEL].tolist() == ["cat", "cat", "dog", "dog", "fox"]
    assert (data.meta["width"] == 5).all() and (data.meta["height"] == 6).all()
    assert set(data.meta["mode"]) == {"RGB"}
    assert data.meta["sha256"][0] == hashlib.sha256((root / "cat/001.png").read_bytes()).hexdigest()
    assert data.pixels.shape == (5, 6, 5, 3) and data.pixels.dtype == np.uint8
    np.testing.assert_array_equal(data.pixels[0], np.asarray(cat))
    assert data.skipped == [] and data.resized == 0


def test_nested_files_are_included_and_root_files_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = image_folder(
        tmp_path / "d",
        {"a": [("deep/er/1.png", solid(4, 4))], "b": [("2.png", solid(4, 4, seed=9))]},
    )
    save(solid(4, 4), root / "stray.png")
    with caplog.at_level(logging.WARNING, logger="shipyard.ingest"):
        data = read_images(root, LABEL)
    assert data.meta["path"].tolist() == ["a/deep/er/1.png", "b/2.png"]
    assert "stray.png" in caplog.text


def test_mixed_sizes_use_the_most_common_size_and_count_resizes(tmp_path: Path) -> None:
    root = image_folder(
        tmp_path / "d",
        {
            "a": [("1.png", solid(8, 6)), ("2.png", solid(8, 6, seed=1)), ("3.png", solid(10, 10))],
            "b": [("4.png", solid(8, 6, seed=2)), ("5.png", solid(3, 4))],
        },
    )
    data = read_images(root, LABEL)
    assert data.pixels.shape == (5, 8, 6, 3)
    assert data.resized == 2
    assert data.meta.loc[data.meta["path"] == "a/3.png", ["height", "width"]].values.tolist() == [[10, 10]]

    forced = read_images(root, LABEL, size=(3, 4))
    assert forced.pixels.shape == (5, 3, 4, 3) and forced.resized == 4


def test_size_tie_goes_to_the_larger_area(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "d", {"a": [("1.png", solid(4, 4))], "b": [("2.png", solid(9, 9))]})
    assert read_images(root, LABEL).pixels.shape[1:3] == (9, 9)


def test_channels_are_1_for_all_gray_and_3_when_any_image_has_colour(tmp_path: Path) -> None:
    gray = {"a": [("1.png", solid(5, 5, "L"))], "b": [("2.png", solid(5, 5, "L", seed=1))]}
    root = image_folder(tmp_path / "gray", gray)
    assert read_images(root, LABEL).pixels.shape == (2, 5, 5, 1)
    assert read_images(root, LABEL, channels=3).pixels.shape == (2, 5, 5, 3)

    save(solid(5, 5, "RGB"), root / "b" / "3.png")
    mixed = read_images(root, LABEL)
    assert mixed.pixels.shape == (3, 5, 5, 3)
    gray_as_rgb = mixed.pixels[0]
    np.testing.assert_array_equal(gray_as_rgb[..., 0], gray_as_rgb[..., 2])


def bad_folder(tmp_path: Path) -> Path:
    root = image_folder(
        tmp_path / "d",
        {"cat": [("good.png", solid(4, 4))], "dog": [("good.png", solid(4, 4, seed=1))]},
    )
    whole = png_bytes(solid(32, 32, seed=2))
    (root / "cat" / "bad.png").write_bytes(whole[: len(whole) // 2])
    (root / "dog" / "empty.png").write_bytes(b"")
    (root / "dog" / "notes.txt").write_text("not a picture")
    (root / "dog" / ".DS_Store").write_bytes(b"\x00\x01junk")
    (root / "cat" / ".hidden" / "x.png").parent.mkdir()
    (root / "cat" / ".hidden" / "x.png").write_text("junk")
    return root


def test_bad_files_are_skipped_with_reasons_and_hidden_files_ignored(tmp_path: Path) -> None:
    data = read_images(bad_folder(tmp_path), LABEL, on_bad="skip")
    assert data.meta["path"].tolist() == ["cat/good.png", "dog/good.png"]
    reasons = {bad["path"]: bad["reason"] for bad in data.skipped}
    assert set(reasons) == {"cat/bad.png", "dog/empty.png", "dog/notes.txt"}
    assert reasons["cat/bad.png"].startswith("corrupt image: ")
    assert reasons["dog/empty.png"] == "empty file"
    assert reasons["dog/notes.txt"] == "not an image (PIL cannot identify it)"


def test_bad_files_fail_naming_the_paths(tmp_path: Path) -> None:
    with pytest.raises(ShipyardError) as err:
        read_images(bad_folder(tmp_path), LABEL, on_bad="fail")
    message = str(err.value)
    assert "3 unreadable file(s)" in message
    for path in ("cat/bad.png (corrupt image", "dog/empty.png (empty file)", "dog/notes.txt (not an image"):
        assert path in message
    assert "bad_files: skip" in message and ".DS_Store" not in message


def test_a_class_folder_without_images_is_an_error_naming_it(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "d", {"cat": [("1.png", solid(4, 4))]})
    (root / "dog").mkdir()
    (root / "dog" / "readme.txt").write_text("nothing here")
    with pytest.raises(ShipyardError, match=r"d/dog: class folder has no images \(1 unreadable"):
        read_images(root, LABEL)


def test_one_class_or_no_class_folders_is_an_error(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "one", {"cat": [("1.png", solid(4, 4))]})
    with pytest.raises(ShipyardError, match="1 class folder \\(cat\\); need at least 2"):
        read_images(root, LABEL)
    flat = tmp_path / "flat"
    save(solid(4, 4), flat / "1.png")
    with pytest.raises(ShipyardError, match="no class folders; expected .*<class>/<image file>"):
        read_images(flat, LABEL)


# ---- to_model_image ---------------------------------------------------------------------------------


def test_to_model_image_flattens_alpha_onto_white_and_scales_16_bit() -> None:
    transparent = Image.new("RGBA", (3, 2), (10, 20, 30, 0))
    assert (to_model_image(transparent, (2, 3), 3) == 255).all()
    deep = Image.fromarray(np.array([[0, 65535], [256, 1000]], dtype=np.uint16))
    assert deep.mode == "I;16"
    np.testing.assert_array_equal(to_model_image(deep, (2, 2), 1)[..., 0], [[0, 255], [1, 3]])
    assert to_model_image(solid(5, 7), (2, 3), 1).shape == (2, 3, 1)


# ---- IDX --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
def test_idx_pairs_are_read_and_concatenated(tmp_path: Path, gz: bool) -> None:
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    test = rng.integers(0, 256, (2, 4, 3), dtype=np.uint8)
    write_idx(tmp_path, "train", train, np.array([0, 1, 2, 1, 0]), gz)
    write_idx(tmp_path, "t10k", test, np.array([2, 2]), gz)
    assert is_image_source(tmp_path)

    data = read_images(tmp_path, LABEL)
    name = "t10k-images-idx3-ubyte" + (".gz" if gz else "")
    assert data.meta["path"].tolist()[:2] == [f"{name}#0", f"{name}#1"]
    assert data.meta[LABEL].tolist() == [2, 2, 0, 1, 2, 1, 0]
    assert (data.meta["width"] == 3).all() and (data.meta["height"] == 4).all()
    assert set(data.meta["mode"]) == {"L"}
    assert data.meta["sha256"][0] == hashlib.sha256(test[0].tobytes()).hexdigest()
    assert data.pixels.shape == (7, 4, 3, 1) and data.pixels.dtype == np.uint8
    np.testing.assert_array_equal(data.pixels[2:, ..., 0], train)


def test_idx_wrong_magic_truncation_and_count_mismatch_are_errors(tmp_path: Path) -> None:
    images = np.zeros((3, 2, 2), dtype=np.uint8)
    folder = write_idx(tmp_path / "magic", "x", images, np.array([0, 1, 0]), gz=False)
    (folder / "x-images-idx3-ubyte").write_bytes(idx_images(images, magic=2049))
    with pytest.raises(ShipyardError, match="x-images-idx3-ubyte: wrong IDX magic number 2049"):
        read_images(folder, LABEL)

    folder = write_idx(tmp_path / "short", "x", images, np.array([0, 1, 0]), gz=False)
    (folder / "x-images-idx3-ubyte").write_bytes(idx_images(images)[:-3])
    with pytest.raises(ShipyardError, match="x-images-idx3-ubyte: header says 3x2x2 = 12 bytes"):
        read_images(folder, LABEL)

    folder = write_idx(tmp_path / "count", "x", images, np.array([0, 1]), gz=False)
    with pytest.raises(ShipyardError, match="has 3 image\\(s\\) but .*x-labels-idx1-ubyte has 2 label"):
        read_images(folder, LABEL)


def test_idx_reference_mnist_10k() -> None:
    if not (MNIST / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"reference data not found at {MNIST}")
    data = read_images(MNIST, LABEL)
    assert data.pixels.shape == (10_000, 28, 28, 1)
    counts = data.meta[LABEL].value_counts().sort_index().tolist()
    assert counts == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# ---- duplicates, subset, detection ------------------------------------------------------------------


def test_drop_duplicate_images_counts_and_drops_conflicting_labels() -> None:
    meta = pd.DataFrame(
        {
            "path": list("abcdef"),
            LABEL: ["cat", "cat", "dog", "cat", "dog", "dog"],
            "width": 1,
            "height": 1,
            "mode": "L",
            "sha256": ["s1", "s1", "s2", "s3", "s3", "s1x"],
        }
    )
    pixels = np.arange(6, dtype=np.uint8).reshape(6, 1, 1, 1)
    data = ImageData(meta=meta, pixels=pixels, skipped=[], resized=0)
    kept, counts = drop_duplicate_images(data, LABEL)
    assert counts == {"duplicates_dropped": 1, "conflicting_labels": 2}
    assert kept.meta["path"].tolist() == ["a", "c", "f"]
    assert kept.meta.index.tolist() == [0, 1, 2]
    assert kept.pixels.ravel().tolist() == [0, 2, 5]


def test_subset_takes_rows_by_position() -> None:
    meta = pd.DataFrame({"path": ["a", "b", "c"]}, index=[7, 8, 9])
    data = ImageData(meta=meta, pixels=np.arange(3).reshape(3, 1, 1, 1), skipped=[], resized=1)
    part = subset(data, np.array([2, 0]))
    assert part.meta["path"].tolist() == ["c", "a"] and part.meta.index.tolist() == [0, 1]
    assert part.pixels.ravel().tolist() == [2, 0] and part.resized == 1


def test_is_image_source(tmp_path: Path) -> None:
    folder = image_folder(tmp_path / "pets", {"cat": [("1.png", solid(2, 2))], "dog": []})
    idx = write_idx(tmp_path / "mnist", "t10k", np.zeros((1, 2, 2)), np.array([0]), gz=True)
    table = tmp_path / "table.csv"
    table.write_text("x,label\n1,a\n")
    texts = tmp_path / "texts"
    (texts / "a").mkdir(parents=True)
    (texts / "a" / "1.txt").write_text("hello")
    assert is_image_source(folder)
    assert is_image_source(idx)
    assert is_image_source(idx / "t10k-images-idx3-ubyte.gz")
    assert not is_image_source(table)
    assert not is_image_source(texts)
    assert not is_image_source(tmp_path / "missing")
