"""Request payloads -> a model's inputs, per family: table records, images or texts.

Images go through ingest's own conversion (`tasks.images.to_model_image`: to L or RGB, transparency onto
white, a bilinear resize to the model's size) and texts through ingest's normalisation and training's
`tasks.texts.encode_texts` with the version's tokenizer.json, so the network sees what it was trained on.
Every problem is an `InputError` naming the item, answered with its HTTP `status`, never a traceback.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import orjson
import pandas as pd
from PIL import Image
from pydantic import BaseModel, Field
from tokenizers import Tokenizer

from tasks.errors import ShipyardError
from tasks.images import to_model_image
from tasks.texts import encode_texts, normalise_texts

MAX_PIXELS = 40_000_000  # per image, checked from the header before any pixel is decoded
IMAGE_TYPES = ("image/png", "image/jpeg")
IMAGE_FORMATS = ["PNG", "JPEG"]
KEYS = {"tabular": "records", "image": "images", "text": "texts"}
USAGE = {
    "tabular": '{"records": [{column: value, ...}, ...]} (content-type: application/json)',
    "image": '{"images": ["<base64 PNG/JPEG or data URL>" or [[0-255, ...], ...], ...]} '
    "(content-type: application/json), or one raw image (content-type: image/png or image/jpeg)",
    "text": '{"texts": ["...", ...]} (content-type: application/json)',
}
_DATA_URL = re.compile(r"data:[^,]*;base64,", re.IGNORECASE)


class InputError(ShipyardError):
    """A request the model cannot take: the client's to fix, answered with `status`."""

    status = 422


class NotJson(InputError):
    status = 400


class UnsupportedMediaType(InputError):
    status = 415


class ImagePreprocessing(BaseModel):
    """The manifest's image `preprocessing`: the size and channels the network takes."""

    height: int = Field(gt=0)
    width: int = Field(gt=0)
    channels: Literal[1, 3]


def read_request(task: str, content_type: str | None, body: bytes, max_items: int) -> list[Any]:
    """The request's items for this family: a raw image body is one image; else a JSON object."""
    media = media_type(content_type)
    if media in IMAGE_TYPES:
        if task != "image":
            raise UnsupportedMediaType(f"content-type {media}: this {task} model takes {USAGE[task]}")
        if not body:
            raise InputError(f"the {media} body is empty; send one image")
        return [body]
    if media and media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(
            f"content-type '{media}' is not supported; this {task} model takes {USAGE[task]}"
        )
    return parse_items(parse_json(body, task), task, max_items)


def media_type(content_type: str | None) -> str:
    """`image/png` from `image/png; charset=...`; "" when the header is absent."""
    return (content_type or "").split(";")[0].strip().lower()


def parse_json(body: bytes, task: str) -> Any:
    if not body.strip():
        raise InputError(f"the body must be a JSON object like {USAGE[task]}")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass  # orjson is strict; the standard library also reads NaN and Infinity, and says where it broke
    try:
        return json.loads(body)
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise NotJson(f"request body is not valid JSON: {err}") from None
    except RecursionError:
        raise NotJson("request body is not valid JSON: nested too deeply") from None


def parse_items(body: Any, task: str, max_items: int) -> list[Any]:
    """The family's list (`records`, `images` or `texts`); a single record, image or text is one item."""
    key = KEYS[task]
    if not isinstance(body, dict):
        raise InputError(f"the body must be a JSON object like {USAGE[task]}")
    if key not in body:
        sent = next((k for k in KEYS.values() if k in body), None)
        if sent:
            raise InputError(f"'{sent}' sent, but this {task} model takes {USAGE[task]}")
        raise InputError(f"expected a body like {USAGE[task]}")
    items = body[key]
    if isinstance(items, dict if task == "tabular" else str):
        items = [items]
    if not isinstance(items, list):
        raise InputError(f"'{key}' must be a list, got {type(items).__name__}")
    if not items:
        raise InputError(f"'{key}' is empty")
    if len(items) > max_items:
        raise InputError(f"{len(items)} {key} in one request; the limit is {max_items}")
    return items


def decode_images(items: Sequence[Any], size: ImagePreprocessing) -> np.ndarray:
    """uint8 [n, H, W, C] from base64 strings, data URLs, raw bytes or (H, W[, C]) arrays."""
    return np.stack([decode_image(item, size, f"image {index}") for index, item in enumerate(items)])


def decode_image(item: Any, size: ImagePreprocessing, where: str) -> np.ndarray:
    if isinstance(item, str):
        image = open_image(decode_base64(item, where), where)
    elif isinstance(item, bytes | bytearray):
        image = open_image(bytes(item), where)
    elif isinstance(item, list | np.ndarray):
        image = image_from_array(item, where)
    else:
        raise InputError(
            f"{where}: expected a base64 PNG/JPEG string or a nested list of 0-255 integers, "
            f"got {type(item).__name__}"
        )
    return to_pixels(image, size)


def image_header(item: Any) -> dict[str, Any] | None:
    """An image item's width, height and mode, read from its header (or a nested list's shape) without
    decoding pixels; None when unreadable: the decoder then names the problem."""
    try:
        if isinstance(item, str):
            item = decode_base64(item, "image")
        if isinstance(item, bytes | bytearray):
            with Image.open(io.BytesIO(item), formats=IMAGE_FORMATS) as image:
                return {"width": image.width, "height": image.height, "mode": image.mode}
        if isinstance(item, list | np.ndarray):
            return _array_header(item)
    except Exception:  # the decoder reports what is wrong with the item
        return None
    return None


def _array_header(item: list[Any] | np.ndarray) -> dict[str, Any] | None:
    """Width, height and the mode `Image.fromarray` gives, from the lengths of the first elements."""
    if isinstance(item, np.ndarray):
        shape = list(item.shape)
    else:
        shape, node = [], item
        while isinstance(node, list) and node and len(shape) < 3:
            shape.append(len(node))
            node = node[0]
    if len(shape) == 2:
        mode = "L"
    elif len(shape) == 3:
        mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(shape[2])
    else:
        return None
    return {"width": shape[1], "height": shape[0], "mode": mode} if mode else None


def to_pixels(image: Image.Image, size: ImagePreprocessing) -> np.ndarray:
    """uint8 [H, W, C] by ingest's rule, so served and training pixels are prepared alike."""
    return to_model_image(image, (size.height, size.width), size.channels)


def decode_base64(text: str, where: str) -> bytes:
    """The bytes of a base64 string, or of a `data:image/...;base64,` URL."""
    if match := _DATA_URL.match(text):
        text = text[match.end() :]
    elif text.startswith("data:"):
        raise InputError(f"{where}: a data URL must be base64, like data:image/png;base64,...")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{where}: not valid base64 (expected a base64 PNG or JPEG)") from None


def open_image(data: bytes, where: str) -> Image.Image:
    """A decoded PNG or JPEG; its size is checked from the header before the pixels are decoded."""
    try:
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as err:
        raise InputError(f"{where}: refused: {err}") from None
    except Exception:  # Pillow raises several types for unknown or hostile data
        raise InputError(f"{where}: not a PNG or JPEG image") from None
    check_pixel_count(image.width, image.height, where)
    try:
        image.load()
    except Exception as err:  # truncated or corrupt data: OSError, SyntaxError, zlib.error, ...
        raise InputError(f"{where}: cannot decode the image: {err}") from None
    return image


def image_from_array(value: Any, where: str) -> Image.Image:
    """A nested list (or array) of 0-255 integers shaped (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        raise InputError(f"{where}: a nested list must be rectangular, shaped (H, W) or (H, W, C)") from None
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))) or 0 in array.shape:
        raise InputError(
            f"{where}: expected a nested list shaped (H, W) or (H, W, C), C 1, 3 or 4; got {array.shape}"
        )
    check_pixel_count(array.shape[1], array.shape[0], where)
    check_pixel_values(array, where)
    return Image.fromarray(array.astype(np.uint8))


def check_pixel_values(array: np.ndarray, where: str) -> None:
    """Integers (or integral numbers) from 0 to 255; the first bad value is named with its position."""
    if array.dtype.kind not in "iuf":
        raise InputError(f"{where}: pixel values must be integers from 0 to 255, not {_kind(array)}")
    with np.errstate(invalid="ignore"):
        bad = ~((array >= 0) & (array <= 255) & (array == np.round(array)))
    if bad.any():
        position = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InputError(
            f"{where}: pixel values must be integers from 0 to 255, found {array[position].item()!r} at "
            f"{list(position)}"
        )


def check_pixel_count(width: int, height: int, where: str) -> None:
    if width * height > MAX_PIXELS:
        raise InputError(f"{where}: {width}x{height} is over the limit of {MAX_PIXELS:,} pixels")


def check_texts(items: Sequence[Any]) -> list[str]:
    """Every item a string (empty ones too: the model answers for them)."""
    for index, text in enumerate(items):
        if not isinstance(text, str):
            raise InputError(f"text {index}: expected a string, got {type(text).__name__}")
    return list(items)


def tokenize(tokenizer: Tokenizer, texts: list[str]) -> dict[str, np.ndarray]:
    """input_ids and attention_mask, int64 [n, seq]: normalised as at ingest, encoded as in training."""
    normalised = normalise_texts(pd.Series(texts, dtype=object)).tolist()
    ids, mask = encode_texts(tokenizer, normalised)
    return {"input_ids": ids, "attention_mask": mask}


def _kind(array: np.ndarray) -> str:
    return {"b": "true/false", "U": "text", "O": "mixed or huge values"}.get(
        array.dtype.kind, str(array.dtype)
    )
