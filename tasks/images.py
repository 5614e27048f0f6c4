"""Reading image datasets for the image family's ingest stage: ImageFolder trees and MNIST-style IDX files.

Both become one `ImageData`: a table (path, label, original width/height/mode, sha256) and a uint8 pixel
array at one common size and channel count. `to_model_image` is the single conversion rule; serving
mirrors it, so a picture sent to the model is prepared exactly as the training pictures were.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import re
import struct
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from tasks.errors import ShipyardError

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger("shipyard.ingest")

META_COLUMNS = ("path", "width", "height", "mode", "sha256")
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")  # PNG, JPEG
IDX_IMAGES = re.compile(r"idx3-ubyte(\.gz)?$")
IDX_LABELS = re.compile(r"idx1-ubyte(\.gz)?$")
IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049
BACKGROUND = 255  # transparent pixels are composited onto white
MAX_NAMED = 5


@dataclass
class ImageData:
    """Images as one table (a row per image) and one pixel array, row i <-> pixels[i]."""

    meta: pd.DataFrame
    pixels: np.ndarray
    skipped: list[dict]
    resized: int


@dataclass
class _Loaded:
    """One image file read and decoded, before it is brought to the common size."""

    path: str
    label: str
    image: Image.Image
    sha256: str


# ---- detection ------------------------------------------------------------------------------------------


def is_image_source(path: str | Path) -> bool:
    """True for an ImageFolder tree (class sub-folders holding PNG/JPEG files) or MNIST-style IDX files."""
    path = Path(path)
    if path.is_file():
        return bool(IDX_IMAGES.search(path.name))
    if not path.is_dir():
        return False
    return bool(_idx_image_files(path)) or any(_holds_png_or_jpeg(d) for d in _class_folders(path))


def _holds_png_or_jpeg(folder: Path) -> bool:
    return any(_starts_like_png_or_jpeg(f) for f in _files_in(folder))


def _starts_like_png_or_jpeg(file: Path) -> bool:
    try:
        with file.open("rb") as handle:
            head = handle.read(8)
    except OSError:
        return False
    return head.startswith(IMAGE_SIGNATURES)


# ---- the public entry points ----------------------------------------------------------------------------


def read_images(
    source: str | Path,
    label_column: str,
    size: tuple[int, int] | None = None,
    channels: int | None = None,
    on_bad: Literal["skip", "fail"] = "skip",
) -> ImageData:
    """Read an ImageFolder tree or IDX files; `size` is (height, width), None = the most common one."""
    source = Path(source)
    if label_column in META_COLUMNS:
        raise ShipyardError(f"images: label column '{label_column}' is a meta column name; pick another")
    if channels not in (None, 1, 3):
        raise ShipyardError(f"images: channels must be 1 or 3 (or null for automatic), got {channels}")
    if not source.exists():
        raise ShipyardError(f"images: {source} does not exist")
    if source.is_file() or _idx_image_files(source):
        data = _read_idx(source, label_column, size, channels)
    else:
        data = _read_image_folder(source, label_column, size, channels, on_bad)
    _require_two_classes(data.meta[label_column], source)
    return data


def drop_duplicate_images(data: ImageData, label_column: str) -> tuple[ImageData, dict[str, int]]:
    """Drop exact duplicates (same sha256) keeping the first, and every copy whose labels disagree.

    duplicates_dropped counts extra copies that agree on their label; conflicting_labels counts all rows
    of a sha256 whose labels disagree. The result has len(data) - duplicates_dropped - conflicting_labels
    rows.
    """
    sha = data.meta["sha256"]
    labels_per_image = data.meta.groupby("sha256")[label_column].nunique()
    conflicting = sha.isin(labels_per_image.index[labels_per_image > 1])
    repeated = sha.duplicated(keep="first") & ~conflicting
    keep = ~(conflicting | repeated)
    counts = {"duplicates_dropped": int(repeated.sum()), "conflicting_labels": int(conflicting.sum())}
    return subset(data, np.flatnonzero(keep.to_numpy())), counts


def subset(data: ImageData, index: np.ndarray) -> ImageData:
    """The rows at these positions (meta re-indexed from 0); skipped and resized are carried over."""
    index = np.asarray(index, dtype=np.int64)
    meta = data.meta.iloc[index].reset_index(drop=True)
    return ImageData(meta=meta, pixels=data.pixels[index], skipped=data.skipped, resized=data.resized)


def to_model_image(image: Image.Image, size: tuple[int, int], channels: int) -> np.ndarray:
    """The one conversion rule: to "L" (1 channel) or "RGB" (3), resized bilinearly to (height, width).

    Transparency is composited onto white; 16-bit and float grayscale are scaled to 0..255.
    """
    from PIL import Image

    height, width = size
    converted = _to_mode(image, "L" if channels == 1 else "RGB")
    if converted.size != (width, height):
        converted = converted.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(converted, dtype=np.uint8).reshape(height, width, channels)


# ---- conversion -----------------------------------------------------------------------------------------


def _to_mode(image: Image.Image, mode: str) -> Image.Image:
    """`image` in mode "L" or "RGB", with transparency flattened and deep grayscale scaled to 8 bits."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _deep_gray_to_8bit(image)
    if _has_transparency(image):
        image = _flatten_onto_background(image)
    return image if image.mode == mode else image.convert(mode)


def _has_transparency(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info


def _flatten_onto_background(image: Image.Image) -> Image.Image:
    from PIL import Image

    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (BACKGROUND, BACKGROUND, BACKGROUND, 255))
    flat = Image.alpha_composite(background, rgba)
    return flat.convert("L" if image.mode in ("LA", "La") else "RGB")


def _deep_gray_to_8bit(image: Image.Image) -> Image.Image:
    """16-bit (and 32-bit int) gray >> 8; float gray in 0..1 times 255, otherwise clipped to 0..255."""
    from PIL import Image

    values = np.asarray(image)
    if image.mode == "F":
        scaled = values * 255.0 if np.nanmax(values, initial=0.0) <= 1.0 else values
        gray = np.clip(np.nan_to_num(scaled), 0, 255).round()
    elif image.mode.startswith("I;16") or np.max(values, initial=0) > 255:
        gray = np.clip(values.astype(np.int64), 0, 65535) >> 8
    else:
        gray = np.clip(values, 0, 255)
    return Image.fromarray(gray.astype(np.uint8), "L")


def _common_size(counts: Counter[tuple[int, int]]) -> tuple[int, int]:
    """The most common (height, width); ties go to the larger area."""
    return max(counts, key=lambda hw: (counts[hw], hw[0] * hw[1], hw))


def _is_gray_mode(mode: str) -> bool:
    return mode in GRAY_MODES


def _meta_frame(rows: dict[str, list], label_column: str) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame = frame[["path", label_column, "width", "height", "mode", "sha256"]]
    return frame.astype({"path": str, "width": "int64", "height": "int64", "mode": str, "sha256": str})


def _require_two_classes(labels: pd.Series, source: Path) -> None:
    classes = sorted(labels.unique().tolist())
    if len(classes) < 2:
        raise ShipyardError(f"images: {source} has {len(classes)} class(es) {classes}; need at least 2")


# ---- ImageFolder ----------------------------------------------------------------------------------------


def _read_image_folder(
    source: Path, label_column: str, size: tuple[int, int] | None, channels: int | None, on_bad: str
) -> ImageData:
    folders = _class_folders(source)
    _check_folder_layout(source, folders)
    _warn_about_root_files(source)
    loaded: list[_Loaded] = []
    skipped: list[dict] = []
    for folder in folders:
        images, bad = _load_class_folder(source, folder)
        loaded += images
        skipped += bad
    _report_bad_files(skipped, on_bad)
    _require_images_in_every_class(source, folders, loaded, skipped)
    return _assemble_folder_images(loaded, skipped, label_column, size, channels)


def _class_folders(source: Path) -> list[Path]:
    return sorted(d for d in source.iterdir() if d.is_dir() and not d.name.startswith("."))


def _files_in(folder: Path) -> list[Path]:
    """Every non-hidden file under `folder`, recursively, sorted by relative path."""
    files = (f for f in folder.rglob("*") if f.is_file())
    visible = (f for f in files if not any(p.startswith(".") for p in f.relative_to(folder).parts))
    return sorted(visible, key=lambda f: f.relative_to(folder).as_posix())


def _check_folder_layout(source: Path, folders: list[Path]) -> None:
    if not folders:
        raise ShipyardError(
            f"images: {source} has no class folders; expected {source}/<class>/<image file> "
            "(ImageFolder layout) or MNIST-style *-idx3-ubyte[.gz] + *-idx1-ubyte[.gz] files"
        )
    if len(folders) < 2:
        raise ShipyardError(
            f"images: {source} has 1 class folder ({folders[0].name}); need at least 2 classes"
        )


def _warn_about_root_files(source: Path) -> None:
    stray = sorted(f.name for f in source.iterdir() if f.is_file() and not f.name.startswith("."))
    if stray:
        log.warning(
            "images: ignoring %d file(s) directly in %s (images belong in %s/<class>/): %s",
            len(stray),
            source,
            source,
            ", ".join(stray[:MAX_NAMED]),
        )


def _load_class_folder(source: Path, folder: Path) -> tuple[list[_Loaded], list[dict]]:
    loaded, bad = [], []
    for file in _files_in(folder):
        path = file.relative_to(source).as_posix()
        image, digest, reason = _load_image_file(file)
        if image is None:
            bad.append({"path": path, "reason": reason})
        else:
            loaded.append(_Loaded(path=path, label=folder.name, image=image, sha256=digest))
    return loaded, bad


def _load_image_file(file: Path) -> tuple[Image.Image | None, str, str]:
    """(decoded image, sha256 of the file, "") or (None, "", why it cannot be used)."""
    from PIL import Image, UnidentifiedImageError

    data = file.read_bytes()
    if not data:
        return None, "", "empty file"
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except UnidentifiedImageError:
        if data.startswith(IMAGE_SIGNATURES):
            return None, "", "corrupt image: header cannot be read"
        return None, "", "not an image (PIL cannot identify it)"
    except Image.DecompressionBombError as err:
        return None, "", f"image too large: {_short(err)}"
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as err:
        return None, "", f"corrupt image: {_short(err)}"
    return image, hashlib.sha256(data).hexdigest(), ""


def _short(err: Exception, limit: int = 80) -> str:
    text = (str(err).splitlines() or [""])[0].strip() or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe_bad(skipped: list[dict]) -> str:
    named = ", ".join(f"{b['path']} ({b['reason']})" for b in skipped[:MAX_NAMED])
    more = f" and {len(skipped) - MAX_NAMED} more" if len(skipped) > MAX_NAMED else ""
    return named + more


def _report_bad_files(skipped: list[dict], on_bad: str) -> None:
    if not skipped:
        return
    if on_bad == "fail":
        raise ShipyardError(
            f"images: {len(skipped)} unreadable file(s): {_describe_bad(skipped)}; "
            "set ingest.bad_files: skip to skip them"
        )
    log.warning("images: skipped %d unreadable file(s): %s", len(skipped), _describe_bad(skipped))


def _require_images_in_every_class(
    source: Path, folders: list[Path], loaded: list[_Loaded], skipped: list[dict]
) -> None:
    used = {item.label for item in loaded}
    empty = [f.name for f in folders if f.name not in used]
    if not empty:
        return
    bad_in_first = sum(1 for b in skipped if b["path"].startswith(f"{empty[0]}/"))
    notes = [f"{bad_in_first} unreadable file(s) skipped"] if bad_in_first else []
    if len(empty) > 1:
        notes.append(f"also empty: {', '.join(empty[1 : MAX_NAMED + 1])}")
    suffix = f" ({'; '.join(notes)})" if notes else ""
    raise ShipyardError(f"{source}/{empty[0]}: class folder has no images{suffix}")


def _assemble_folder_images(
    loaded: list[_Loaded],
    skipped: list[dict],
    label_column: str,
    size: tuple[int, int] | None,
    channels: int | None,
) -> ImageData:
    originals = [(item.image.height, item.image.width) for item in loaded]
    size = size or _common_size(Counter(originals))
    if channels is None:
        channels = 1 if all(_is_gray_mode(item.image.mode) for item in loaded) else 3
    pixels = np.stack([to_model_image(item.image, size, channels) for item in loaded])
    rows = {
        "path": [item.path for item in loaded],
        label_column: [item.label for item in loaded],
        "width": [item.image.width for item in loaded],
        "height": [item.image.height for item in loaded],
        "mode": [item.image.mode for item in loaded],
        "sha256": [item.sha256 for item in loaded],
    }
    resized = sum(hw != tuple(size) for hw in originals)
    return ImageData(_meta_frame(rows, label_column), pixels, skipped, resized)


# ---- IDX (MNIST format) ---------------------------------------------------------------------------------


def _idx_image_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and IDX_IMAGES.search(f.name))


def _idx_prefix(name: str, kind: str) -> str:
    """The part of an IDX file name before "-images"/"-labels" (or before the idx suffix)."""
    for marker in (f"-{kind}", f".{kind}", kind):
        if marker in name:
            return name.split(marker)[0]
    return re.split(r"[-.]?idx[13]-ubyte", name)[0]


def _idx_pairs(source: Path) -> list[tuple[Path, Path]]:
    """(images file, labels file) pairs, matched by the prefix before "-images"/"-labels"."""
    if source.is_file() and not IDX_IMAGES.search(source.name):
        raise ShipyardError(
            f"images: {source} is a file but not an IDX images file (*-idx3-ubyte[.gz]); "
            "give a folder of class sub-folders or MNIST-style IDX files"
        )
    folder = source.parent if source.is_file() else source
    image_files = [source] if source.is_file() else _idx_image_files(source)
    label_files = sorted(f for f in folder.iterdir() if f.is_file() and IDX_LABELS.search(f.name))
    labels = {_idx_prefix(f.name, "labels"): f for f in label_files}
    pairs = []
    for images in image_files:
        prefix = _idx_prefix(images.name, "images")
        if prefix in labels:
            pairs.append((images, labels[prefix]))
        elif len(image_files) == 1 and len(label_files) == 1:
            pairs.append((images, label_files[0]))
        else:
            raise ShipyardError(
                f"images: no labels file for {images} (expected {prefix}-labels-idx1-ubyte[.gz] beside it)"
            )
    return pairs


def _read_idx_bytes(path: Path) -> bytes:
    try:
        return gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise ShipyardError(f"images: {path}: cannot read as gzip: {_short(err)}") from None


def _read_idx_header(path: Path, data: bytes, magic: int, dims: int) -> tuple[int, ...]:
    header = 4 * (dims + 1)
    if len(data) < header:
        raise ShipyardError(f"images: {path}: truncated IDX header ({len(data)} bytes, need {header})")
    found, *shape = struct.unpack(f">{dims + 1}I", data[:header])
    if found != magic:
        raise ShipyardError(
            f"images: {path}: wrong IDX magic number {found} (expected {magic}); not an MNIST-style file"
        )
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        raise ShipyardError(
            f"images: {path}: header says {'x'.join(map(str, shape))} = {expected} bytes of data "
            f"but the file holds {len(data) - header} (truncated or not IDX)"
        )
    return tuple(shape)


def _read_idx_images(path: Path) -> np.ndarray:
    """(count, rows, cols) uint8 from an IDX images file."""
    data = _read_idx_bytes(path)
    count, rows, cols = _read_idx_header(path, data, IDX_IMAGES_MAGIC, 3)
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(count, rows, cols)


def _read_idx_labels(path: Path) -> np.ndarray:
    data = _read_idx_bytes(path)
    _read_idx_header(path, data, IDX_LABELS_MAGIC, 1)
    return np.frombuffer(data, dtype=np.uint8, offset=8).astype(np.int64)


def _read_idx_pair(images_file: Path, labels_file: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = _read_idx_images(images_file), _read_idx_labels(labels_file)
    if len(images) != len(labels):
        raise ShipyardError(
            f"images: {images_file} has {len(images)} image(s) but {labels_file} has {len(labels)} label(s)"
        )
    return images, labels


def _read_idx(
    source: Path, label_column: str, size: tuple[int, int] | None, channels: int | None
) -> ImageData:
    pairs = _idx_pairs(source)
    files = [images_file for images_file, _ in pairs]
    groups = [_read_idx_pair(images_file, labels_file) for images_file, labels_file in pairs]
    counts = [len(images) for images, _ in groups]
    if sum(counts) == 0:
        raise ShipyardError(f"images: {source}: the IDX files hold no images")
    original = np.repeat([images.shape[1:] for images, _ in groups], counts, axis=0)  # (N, 2): height, width
    sizes: Counter[tuple[int, int]] = Counter()
    for images, _ in groups:
        sizes[(images.shape[1], images.shape[2])] += len(images)
    size = size or _common_size(sizes)
    pixels = np.concatenate([_gray_array_to_model(images, size, channels or 1) for images, _ in groups])
    rows = {
        "path": [f"{f.name}#{i}" for f, n in zip(files, counts, strict=True) for i in range(n)],
        label_column: np.concatenate([labels for _, labels in groups]),
        "width": original[:, 1],
        "height": original[:, 0],
        "mode": "L",
        "sha256": [hashlib.sha256(image).hexdigest() for images, _ in groups for image in images],
    }
    resized = int((original != np.asarray(size)).any(axis=1).sum())
    return ImageData(_meta_frame(rows, label_column), pixels, [], resized)


def _gray_array_to_model(images: np.ndarray, size: tuple[int, int], channels: int) -> np.ndarray:
    """(N, rows, cols) uint8 gray as (N, H, W, channels); vectorised unless a resize is needed."""
    from PIL import Image

    if images.shape[1:] == tuple(size):
        gray = images[..., None]
        return np.repeat(gray, channels, axis=3) if channels == 3 else gray.copy()
    return np.stack([to_model_image(Image.fromarray(image, "L"), size, channels) for image in images])
