"""Serving image and text models: tiny hand-built ONNX graphs, answers checked against numpy."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from tokenizers.trainers import WordLevelTrainer

from serving import inputs
from serving.app import create_app
from serving.lifecycle import ServeSettings
from serving.model import ServingError, load_production
from tasks.images import to_model_image
from tests.serving.test_serving import publish as publish_tabular

HEIGHT, WIDTH = 6, 5  # not square: a swapped width and height shows
LABELS = ["cat", "dog", "eel"]
MAX_LENGTH = 16
DIM = 4
TEXT_INPUTS = ["input_ids", "attention_mask"]
SENTENCES = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "eels swim in the dark sea",
    "the dog and the cat are friends",
]
RNG = np.random.default_rng(1)


# ---- models, registry and the same computations in numpy


def finish(nodes: list, inputs_: list, initializers: list[np.ndarray], names: list[str]) -> onnx.ModelProto:
    """Add logits -> probabilities to a graph and check it."""
    classes = len(LABELS)
    graph = helper.make_graph(
        [*nodes, helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1)],
        "tiny",
        inputs_,
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes]),
        ],
        [numpy_helper.from_array(value, name) for value, name in zip(initializers, names, strict=True)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def image_model(channels: int) -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    """pixels uint8 [batch, H, W, C] -> Cast -> / 255 -> Flatten -> MatMul + Add -> Softmax."""
    weights = RNG.normal(size=(HEIGHT * WIDTH * channels, len(LABELS))).astype(np.float32)
    bias = RNG.normal(size=len(LABELS)).astype(np.float32)
    nodes = [
        helper.make_node("Cast", ["pixels"], ["floats"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["floats", "S"], ["scaled"]),
        helper.make_node("Flatten", ["scaled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["scores"]),
        helper.make_node("Add", ["scores", "B"], ["logits"]),
    ]
    pixels = helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["batch", HEIGHT, WIDTH, channels])
    model = finish(nodes, [pixels], [np.array(255, np.float32), weights, bias], ["S", "W", "B"])
    return model, weights, bias


def text_model(vocab: int) -> tuple[onnx.ModelProto, np.ndarray, np.ndarray, np.ndarray]:
    """ids -> embedding, mean over the unmasked tokens -> MatMul + Add -> Softmax."""
    embedding = RNG.normal(size=(vocab, DIM)).astype(np.float32)
    weights = RNG.normal(size=(DIM, len(LABELS))).astype(np.float32)
    bias = RNG.normal(size=len(LABELS)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["E", "input_ids"], ["vectors"]),
        helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask", "A2"], ["mask3"]),
        helper.make_node("Mul", ["vectors", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "A1"], ["total"], keepdims=0),
        helper.make_node("ReduceSum", ["mask", "A1"], ["count"], keepdims=1),
        helper.make_node("Max", ["count", "One"], ["denominator"]),
        helper.make_node("Div", ["total", "denominator"], ["mean"]),
        helper.make_node("MatMul", ["mean", "W"], ["scores"]),
        helper.make_node("Add", ["scores", "B"], ["logits"]),
    ]
    ids = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in TEXT_INPUTS]
    constants = [np.array([2]), np.array([1]), np.array(1, np.float32)]
    model = finish(nodes, ids, [embedding, weights, bias, *constants], ["E", "W", "B", "A2", "A1", "One"])
    return model, embedding, weights, bias


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def image_expected(pixels: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    flat = (pixels.astype(np.float32) / np.float32(255)).reshape(len(pixels), -1)
    return softmax(flat @ weights + bias)


def text_expected(ids: np.ndarray, mask: np.ndarray, model: tuple[np.ndarray, ...]) -> np.ndarray:
    embedding, weights, bias = model
    total = (embedding[ids] * mask[..., None]).sum(axis=1)
    mean = total / np.maximum(mask.sum(axis=1, keepdims=True), 1)
    return softmax(mean @ weights + bias)


def make_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    tokenizer.train_from_iterator(SENTENCES, WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"]))
    tokenizer.enable_truncation(max_length=MAX_LENGTH)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    return tokenizer


def write_version(registry: Path, manifest: dict[str, Any], files: dict[str, bytes]) -> Path:
    """Files + manifest (with their sha256) in versions/v0001, and production pointing at it."""
    folder = registry / "versions" / "v0001"
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    tensor = {"dtype": "float32", "shape": ["batch", len(LABELS)]}
    manifest = {
        "format": 1,
        "name": f"{manifest['task']}-model",
        "version": "v0001",
        "labels": LABELS,
        **manifest,
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
    }
    manifest["onnx"] = {
        "file": "model.onnx",
        "opset": 17,
        "outputs": [{"name": "logits", **tensor}, {"name": "probabilities", **tensor}],
        **manifest.get("onnx", {}),
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (registry / "production.json").write_text(json.dumps({"version": "v0001"}))
    return folder


def publish_image(registry: Path, channels: int, **extra: Any) -> tuple[np.ndarray, np.ndarray]:
    model, weights, bias = image_model(channels)
    shape = ["batch", HEIGHT, WIDTH, channels]
    manifest = {
        "task": "image",
        "preprocessing": {"height": HEIGHT, "width": WIDTH, "channels": channels},
        "onnx": {"inputs": [{"name": "pixels", "dtype": "uint8", "shape": shape}]},
        **extra.pop("manifest", {}),
    }
    write_version(registry, manifest, {"model.onnx": model.SerializeToString(), **extra.pop("files", {})})
    return weights, bias


def publish_text(registry: Path, tokenizer: Tokenizer) -> tuple[np.ndarray, ...]:
    model, *arrays = text_model(tokenizer.get_vocab_size())
    path = registry / "tokenizer.json"
    tokenizer.save(str(path))
    manifest = {
        "task": "text",
        "preprocessing": {"tokenizer": "tokenizer.json", "max_length": MAX_LENGTH},
        "onnx": {"inputs": [{"name": n, "dtype": "int64", "shape": ["batch", "seq"]} for n in TEXT_INPUTS]},
    }
    files = {"model.onnx": model.SerializeToString(), "tokenizer.json": path.read_bytes()}
    write_version(registry, manifest, files)
    return tuple(arrays)


def encode(image: Image.Image, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def as_model_sees(data: bytes, channels: int) -> np.ndarray:
    """Opaque image bytes decoded by PIL here: convert, then a bilinear resize (ingest's rule)."""
    image = Image.open(io.BytesIO(data)).convert("L" if channels == 1 else "RGB")
    image = image.resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR)
    return np.asarray(image, np.uint8).reshape(HEIGHT, WIDTH, channels)


def random_image(mode: str, size: tuple[int, int] = (WIDTH, HEIGHT)) -> Image.Image:
    bands = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    array = RNG.integers(0, 256, size=(size[1], size[0], bands), dtype=np.uint8)
    return Image.fromarray(array[:, :, 0] if bands == 1 else array)


def assert_predictions(response: Any, want: np.ndarray) -> None:
    assert response.status_code == 200, response.text
    got = response.json()["predictions"]
    assert [p["label"] for p in got] == [LABELS[i] for i in want.argmax(axis=1)]
    probabilities = [list(p["probabilities"].values()) for p in got]
    np.testing.assert_allclose(probabilities, want, atol=1e-5)


# ---- fixtures: one registry per family for the module (the app is read-only)


@pytest.fixture(scope="module")
def gray(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestClient, np.ndarray, np.ndarray]:
    registry = tmp_path_factory.mktemp("gray")
    weights, bias = publish_image(registry, channels=1)
    return TestClient(create_app(registry, ServeSettings(prefer_gpu=False, max_items=4))), weights, bias


@pytest.fixture(scope="module")
def rgb(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestClient, np.ndarray, np.ndarray]:
    registry = tmp_path_factory.mktemp("rgb")
    weights, bias = publish_image(registry, channels=3)
    return TestClient(create_app(registry, ServeSettings(prefer_gpu=False))), weights, bias


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestClient, Tokenizer, tuple[np.ndarray, ...]]:
    registry = tmp_path_factory.mktemp("text")
    tokenizer = make_tokenizer()
    arrays = publish_text(registry, tokenizer)
    return TestClient(create_app(registry, ServeSettings(prefer_gpu=False, max_items=4))), tokenizer, arrays


@pytest.fixture
def text_registry(tmp_path: Path) -> Path:
    publish_text(tmp_path, make_tokenizer())
    return tmp_path


# ---- images


def test_health_names_task_and_variant(gray: tuple, text: tuple) -> None:
    for client, task in [(gray[0], "image"), (text[0], "text")]:
        body = client.get("/health").json()
        assert (body["task"], body["variant"], body["version"]) == (task, "fp32", "v0001")


def test_gray_model_answers_every_kind_of_image_like_numpy(gray: tuple) -> None:
    client, weights, bias = gray
    png = encode(random_image("L"))
    rgb_png = encode(random_image("RGB"))  # converted to L
    bigger_png = encode(random_image("L", (WIDTH * 3 + 1, HEIGHT * 2)))  # resized
    array = RNG.integers(0, 256, size=(HEIGHT, WIDTH), dtype=np.uint8)
    images = [b64(png), f"data:image/png;base64,{b64(rgb_png)}", array.tolist(), b64(bigger_png)]
    want = np.stack(
        [as_model_sees(png, 1), as_model_sees(rgb_png, 1), array[..., None], as_model_sees(bigger_png, 1)]
    )
    assert_predictions(client.post("/predict", json={"images": images}), image_expected(want, weights, bias))


def test_rgb_model_takes_jpeg_and_converts_gray_and_wrong_size_lists(rgb: tuple) -> None:
    client, weights, bias = rgb
    jpeg = encode(random_image("RGB"), "JPEG")
    gray_png = encode(random_image("L"))
    small = RNG.integers(0, 256, size=(3, 4, 3), dtype=np.uint8)
    images = [b64(jpeg), b64(gray_png), small.tolist()]
    resized = Image.fromarray(small).resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR)
    want = np.stack([as_model_sees(jpeg, 3), as_model_sees(gray_png, 3), np.asarray(resized)])
    assert_predictions(client.post("/predict", json={"images": images}), image_expected(want, weights, bias))


def test_transparency_is_flattened_onto_white_as_at_ingest(gray: tuple) -> None:
    model = gray[0].app.state.shipyard.current.model
    clear = encode(Image.new("RGBA", (WIDTH, HEIGHT), (0, 0, 0, 0)))
    assert (model.encode([b64(clear)])["pixels"] == 255).all()
    rgba = encode(random_image("RGBA"))
    ingest = to_model_image(Image.open(io.BytesIO(rgba)), (HEIGHT, WIDTH), 1)
    np.testing.assert_array_equal(model.encode([rgba])["pixels"][0], ingest)


@pytest.mark.parametrize("media", ["image/png", "image/jpeg"])
def test_a_raw_image_body_is_one_image(rgb: tuple, media: str) -> None:
    client, weights, bias = rgb
    data = encode(random_image("RGB"), media.split("/")[1].upper())
    response = client.post("/predict", content=data, headers={"content-type": media})
    assert_predictions(response, image_expected(as_model_sees(data, 3)[None], weights, bias))


def test_a_single_base64_string_is_one_image(gray: tuple) -> None:
    client, weights, bias = gray
    png = encode(random_image("L"))
    response = client.post("/predict", json={"images": b64(png)})
    assert_predictions(response, image_expected(as_model_sees(png, 1)[None], weights, bias))


@pytest.mark.parametrize(
    ("images", "words"),
    [
        ([b64(encode(random_image("L"))), "not base64 !!"], ["image 1", "not valid base64"]),
        ([b64(b"hello, not an image")], ["image 0", "not a PNG or JPEG"]),
        ([b64(encode(random_image("L"))[:60])], ["image 0", "cannot decode"]),
        (["data:image/png,rawtext"], ["image 0", "must be base64"]),
        ([[[0, 1], [2, 300]]], ["image 0", "0 to 255", "300", "[1, 1]"]),
        ([[[0, 1], [2, 3]], [[0, 0.5]]], ["image 1", "0 to 255", "0.5"]),
        ([[[0, 1], [2, -1]]], ["image 0", "-1"]),
        ([[[True, False]]], ["image 0", "true/false"]),
        ([[[0, 1], [2]]], ["image 0", "rectangular"]),
        ([[1, 2, 3]], ["image 0", "(H, W)"]),
        ([{"png": "..."}], ["image 0", "got dict"]),
        ([], ["'images' is empty"]),
        ([b64(encode(random_image("L")))] * 5, ["5 images", "limit is 4"]),
    ],
)
def test_bad_images_are_422_naming_the_image(gray: tuple, images: Any, words: list[str]) -> None:
    response = gray[0].post("/predict", json={"images": images})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert all(word in detail for word in words), detail


def test_images_over_the_pixel_limit_are_refused_before_decoding(
    gray: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inputs, "MAX_PIXELS", 100)
    for image in [b64(encode(random_image("L", (20, 20)))), np.zeros((20, 20), int).tolist()]:
        response = gray[0].post("/predict", json={"images": [image]})
        assert response.status_code == 422 and "over the limit of 100 pixels" in response.json()["detail"]


def test_a_decompression_bomb_is_422(gray: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    response = gray[0].post("/predict", json={"images": [b64(encode(random_image("L", (40, 40))))]})
    assert response.status_code == 422
    assert (
        "image 0: refused" in response.json()["detail"] and "decompression bomb" in response.json()["detail"]
    )


# ---- texts


def test_texts_are_tokenized_as_the_saved_tokenizer_does(text: tuple) -> None:
    client, tokenizer, arrays = text
    texts = [
        "the cat sat",
        "",  # no tokens at all: the model still answers
        "a dog and an unseen aardvark",
        " ".join(SENTENCES),  # longer than max_length: truncated
    ]
    encodings = tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in encodings], np.int64)
    mask = np.array([e.attention_mask for e in encodings], np.int64)
    feeds = inputs.tokenize(Tokenizer.from_str(tokenizer.to_str()), texts)
    np.testing.assert_array_equal(feeds["input_ids"], ids)
    np.testing.assert_array_equal(feeds["attention_mask"], mask)
    assert ids.shape == (4, MAX_LENGTH) and mask[1].sum() == 0
    assert_predictions(client.post("/predict", json={"texts": texts}), text_expected(ids, mask, arrays))


def test_a_single_string_is_one_text_and_empty_texts_get_an_answer(text: tuple) -> None:
    client, _, arrays = text
    response = client.post("/predict", json={"texts": ""})
    assert response.status_code == 200, response.text
    ids, mask = np.zeros((1, 1), np.int64), np.zeros((1, 1), np.int64)
    assert_predictions(response, text_expected(ids, mask, arrays))


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"texts": ["fine", 7]}, ["text 1", "expected a string", "int"]),
        ({"texts": ["a", None]}, ["text 1", "NoneType"]),
        ({"texts": ["a"] * 5}, ["5 texts", "limit is 4"]),
        ({"records": [{"a": 1}]}, ["'records' sent", "text model", '{"texts": [']),
        ({"images": ["..."]}, ["'images' sent", "text model"]),
        ({"sentences": ["a"]}, ['{"texts": [']),
        ({"texts": 3}, ["'texts' must be a list"]),
    ],
)
def test_bad_text_payloads_are_422(text: tuple, body: Any, words: list[str]) -> None:
    response = text[0].post("/predict", json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert all(word in detail for word in words), detail


# ---- wrong family, content type and body


@pytest.mark.parametrize(
    ("fixture", "content", "media", "status", "words"),
    [
        ("gray", b'{"records": [{"a": 1}]}', "application/json", 422, ["image model", '{"images": [']),
        ("gray", b"pixels", "text/plain", 415, ["'text/plain'", '{"images": [']),
        ("gray", b"", "image/png", 422, ["empty"]),
        ("gray", b"{not json", "application/json", 400, ["not valid JSON"]),
        ("gray", b"[1]", "application/json", 422, ["JSON object"]),
        ("text", encode(random_image("L")), "image/png", 415, ["image/png", "text model", '{"texts": [']),
        ("text", b"texts=a", "application/x-www-form-urlencoded", 415, ["not supported"]),
    ],
)
def test_wrong_content_is_refused_with_what_the_model_takes(
    request: pytest.FixtureRequest, fixture: str, content: bytes, media: str, status: int, words: list[str]
) -> None:
    client = request.getfixturevalue(fixture)[0]
    response = client.post("/predict", content=content, headers={"content-type": media})
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert all(word in detail for word in words), detail
    assert "Traceback" not in response.text


def test_a_tabular_model_refuses_images(tmp_path: Path) -> None:
    publish_tabular(tmp_path, [0, 1, 2])
    client = TestClient(create_app(tmp_path, ServeSettings(prefer_gpu=False)))
    response = client.post("/predict", json={"images": ["..."]})
    assert (
        response.status_code == 422
        and "'images' sent, but this tabular model takes" in response.json()["detail"]
    )


def test_the_documented_example_is_answered(gray: tuple, text: tuple, tmp_path: Path) -> None:
    publish_tabular(tmp_path, [0, 1, 2])
    for client in [gray[0], text[0], TestClient(create_app(tmp_path, ServeSettings(prefer_gpu=False)))]:
        operation = client.get("/openapi.json").json()["paths"]["/predict"]["post"]
        example = operation["requestBody"]["content"]["application/json"]["example"]
        assert client.post("/predict", json=example).status_code == 200, example
    assert (
        "image/png"
        in gray[0].get("/openapi.json").json()["paths"]["/predict"]["post"]["requestBody"]["content"]
    )


# ---- loading


def test_a_changed_tokenizer_is_refused(text_registry: Path) -> None:
    path = text_registry / "versions" / "v0001" / "tokenizer.json"
    path.write_text(path.read_text().replace("[UNK]", "[UNKNOWN]"))
    with pytest.raises(ServingError, match=r"tokenizer.json: sha256 .* does not match"):
        load_production(text_registry)


def _edit_manifest(registry: Path, change: Any) -> None:
    path = registry / "versions" / "v0001" / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_a_tokenizer_not_in_files_is_refused(text_registry: Path) -> None:
    _edit_manifest(text_registry, lambda m: m["files"].pop("tokenizer.json"))
    with pytest.raises(ServingError, match="tokenizer 'tokenizer.json' is not in 'files'"):
        load_production(text_registry)


def test_a_tokenizer_without_truncation_is_refused(tmp_path: Path) -> None:
    tokenizer = make_tokenizer()
    tokenizer.no_truncation()
    publish_text(tmp_path, tokenizer)
    with pytest.raises(ServingError, match="truncation must be enabled"):
        load_production(tmp_path)


def test_a_tokenizer_outside_the_version_folder_is_refused(text_registry: Path) -> None:
    _edit_manifest(text_registry, lambda m: m["preprocessing"].update(tokenizer="../../tokenizer.json"))
    with pytest.raises(ServingError, match="not in 'files'|points outside"):
        load_production(text_registry)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda m: m.pop("preprocessing"), r"preprocessing.height: Field required"),
        (lambda m: m["preprocessing"].update(channels=2), r"preprocessing.channels"),
        (lambda m: m["preprocessing"].update(height=HEIGHT + 1), r"'pixels' is shaped .* expected"),
        (
            lambda m: m.update(task="text", preprocessing={"tokenizer": "model.onnx", "max_length": 8}),
            "tokenizer",
        ),
        (lambda m: m.update(task="video"), r"task: Input should be"),
        (lambda m: m["onnx"].update(inputs=[{"name": "image"}]), r"takes inputs \['pixels'\]"),
    ],
)
def test_an_image_manifest_that_does_not_fit_the_model_is_refused(
    tmp_path: Path, change: Any, words: str
) -> None:
    publish_image(tmp_path, channels=1)
    _edit_manifest(tmp_path, change)
    with pytest.raises(ServingError, match=words):
        load_production(tmp_path)


def test_a_manifest_without_task_is_tabular(tmp_path: Path) -> None:
    publish_tabular(tmp_path, [0, 1])
    _edit_manifest(tmp_path, lambda m: m.pop("task"))
    assert load_production(tmp_path, prefer_gpu=False).task == "tabular"


# ---- variants


def publish_with_variants(registry: Path) -> tuple[np.ndarray, np.ndarray]:
    """fp32 model.onnx plus a published int8 file (other weights) and an unpublished fp16 one."""
    int8, weights, bias = image_model(1)
    variants = {
        "int8": {"file": "model.int8.onnx", "published": True, "max_abs_diff": 0.01},
        "fp16": {"published": False, "reason": "failed: could not convert"},  # as export writes it
    }
    publish_image(
        registry,
        channels=1,
        manifest={"variants": variants},
        files={"model.int8.onnx": int8.SerializeToString()},
    )
    return weights, bias


def test_a_published_variant_is_served_when_asked_for(tmp_path: Path) -> None:
    weights, bias = publish_with_variants(tmp_path)
    model = load_production(tmp_path, prefer_gpu=False, variant="int8")
    assert model.variant == "int8" and "(image, int8)" in model.describe()
    client = TestClient(create_app(tmp_path, ServeSettings(prefer_gpu=False, variant="int8")))
    assert client.get("/health").json()["variant"] == "int8"
    png = encode(random_image("L"))
    response = client.post("/predict", content=png, headers={"content-type": "image/png"})
    assert_predictions(response, image_expected(as_model_sees(png, 1)[None], weights, bias))


@pytest.mark.parametrize(
    ("variant", "words"),
    [("fp16", r"variant 'fp16' was not published.*\['fp32', 'int8'\]"), ("bf16", r"no variant 'bf16'")],
)
def test_an_unpublished_or_unknown_variant_is_a_clear_error(tmp_path: Path, variant: str, words: str) -> None:
    publish_with_variants(tmp_path)
    with pytest.raises(ServingError, match=words):
        load_production(tmp_path, variant=variant)


def test_a_published_variant_must_be_listed_in_files(tmp_path: Path) -> None:
    publish_with_variants(tmp_path)
    _edit_manifest(tmp_path, lambda m: m["files"].pop("model.int8.onnx"))
    with pytest.raises(ServingError, match="int8 model 'model.int8.onnx' is not in 'files'"):
        load_production(tmp_path, variant="int8")


def test_auto_serves_int8_on_the_cpu_when_published_else_fp32(tmp_path: Path) -> None:
    publish_with_variants(tmp_path / "with")
    assert load_production(tmp_path / "with", prefer_gpu=False).variant == "int8"  # "auto" is the default
    publish_image(tmp_path / "without", channels=1)
    assert load_production(tmp_path / "without", prefer_gpu=False).variant == "fp32"
    config = TestClient(create_app(tmp_path / "with", ServeSettings(prefer_gpu=False))).get(
        "/v2/models/image-model/config"
    )
    assert config.json()["parameters"]["variant"] == {"string_value": "int8"}
    assert config.json()["parameters"]["execution_provider"] == {"string_value": "CPUExecutionProvider"}
