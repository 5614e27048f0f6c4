"""Task families: image and text ingest, networks, padding invariance, text export, MiniLM offline,
quantized variants, and how train params and model names are resolved."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import socket
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch
from PIL import Image

from tasks import evaluate, export, ingest, train
from tasks.config import ExportParams, Params, TrainParams, parse_assignment
from tasks.errors import ShipyardError
from tasks.export import build_variants, check_parity, export_onnx
from tasks.families import MODEL_DEFAULTS, Split, family, load_split
from tasks.families.image import PixelMLP, SmallCNN
from tasks.families.text import TOKENIZER_FILE, LSTMClassifier
from tasks.features import encode_frame, encode_labels, fit_features, label_values
from tasks.model import Trained, load_model
from tasks.paths import (
    EXPORT_DIR,
    INGEST_REPORT,
    MANIFEST_FILE,
    MODEL_FILE,
    ONNX_FILE,
    SPLITS,
    VARIANT_FILES,
    pixels_path,
    split_path,
)
from tasks.texts import encode_texts
from tasks.train import fit, resolve

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LABEL = "label"
SIZE = 8
CLASS_COLOURS = {"circle": (200, 40, 40), "square": (40, 200, 40), "star": (40, 40, 200)}


def quiet_export(*args, **kwargs) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(*args, **kwargs)


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


# ---- image --------------------------------------------------------------------------------------------


def class_pixels(label: str, n: int, seed: int) -> np.ndarray:
    """n distinct uint8 (8, 8, 3) images around the class's colour: easy to tell apart."""
    rng = np.random.default_rng(seed)
    base = np.array(CLASS_COLOURS[label], dtype=np.int64)
    noise = rng.integers(-30, 31, (n, SIZE, SIZE, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def image_folder(root: Path, per_class: int = 10) -> Path:
    for seed, label in enumerate(CLASS_COLOURS):
        (root / label).mkdir(parents=True)
        for i, array in enumerate(class_pixels(label, per_class, seed)):
            Image.fromarray(array, "RGB").save(root / label / f"{i:02d}.png")
    return root


def test_ingest_an_image_folder(project: Path, make_params) -> None:
    source = image_folder(Path("images"))
    (source / "circle" / "copy.png").write_bytes((source / "circle" / "03.png").read_bytes())
    (source / "star" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")

    report = ingest.run(make_params(ingest={"source": "images"}))

    on_disk = json.loads(INGEST_REPORT.read_text(encoding="utf-8"))
    assert on_disk == json.loads(json.dumps(report))
    assert on_disk["task"] == "image" and on_disk["target"] == LABEL
    assert on_disk["image"] == {"height": SIZE, "width": SIZE, "channels": 3}
    assert [f["path"] for f in on_disk["skipped_files"]] == ["star/broken.png"]
    assert on_disk["duplicates_dropped"] == 1 and on_disk["rows"] == 30
    assert sum(on_disk["splits"][s]["rows"] for s in SPLITS) == 30
    seen = set()
    for name in SPLITS:
        frame = pd.read_parquet(split_path(name))
        pixels = np.load(pixels_path(name))
        assert pixels.dtype == np.uint8 and pixels.shape == (len(frame), SIZE, SIZE, 3)
        assert (
            on_disk["splits"][name]["pixels_sha256"]
            == hashlib.sha256(pixels_path(name).read_bytes()).hexdigest()
        )
        for i, row in frame.iterrows():  # row i of the table is image i of the pixels
            on_file = np.asarray(Image.open(source / row["path"]).convert("RGB"))
            np.testing.assert_array_equal(pixels[i], on_file)
            assert row["path"].split("/")[0] == row[LABEL]
        seen |= set(frame["sha256"])
        assert set(frame[LABEL]) == set(CLASS_COLOURS)  # stratified: every class in every split
    assert len(seen) == 30  # the copy was dropped before splitting


def pixel_split(n_per_class: int = 10, seed: int = 0) -> tuple[Split, list[str]]:
    labels = list(CLASS_COLOURS)
    pixels = np.concatenate([class_pixels(label, n_per_class, seed + i) for i, label in enumerate(labels)])
    frame = pd.DataFrame({LABEL: np.repeat(labels, n_per_class)})
    return Split(frame, pixels), labels


def test_image_family_fits_mean_and_std_per_channel() -> None:
    split, _ = pixel_split()
    prep = family("image").fit(split, {"target": LABEL}, Params())
    scaled = split.pixels.reshape(-1, 3) / 255.0
    assert (prep["height"], prep["width"], prep["channels"]) == (SIZE, SIZE, 3)
    np.testing.assert_allclose(prep["mean"], scaled.mean(0), atol=1e-6)
    np.testing.assert_allclose(prep["std"], scaled.std(0), atol=1e-6)
    assert json.loads(json.dumps(prep)) == prep  # plain JSON, kept with the model


@pytest.mark.parametrize("value", [0, 7, 255])
def test_a_constant_channel_gets_std_one(value: int) -> None:
    split, labels = pixel_split()
    split.pixels[..., 2] = value
    kind = family("image")
    prep = kind.fit(split, {"target": LABEL}, Params())
    network = kind.build("mlp", prep, len(labels), resolve(TrainParams(hidden=[8]), "mlp")).eval()
    with torch.no_grad():
        logits, _ = network(torch.from_numpy(split.pixels[:4]))
    assert prep["std"][2] == 1.0 and torch.isfinite(logits).all()


@pytest.mark.parametrize(("model", "network"), [("cnn", SmallCNN), ("mlp", PixelMLP)])
def test_image_networks_take_uint8_pixels(model: str, network: type) -> None:
    split, labels = pixel_split()
    kind = family("image")
    prep = kind.fit(split, {"target": LABEL}, Params())
    built = kind.build(model, prep, len(labels), resolve(TrainParams(hidden=[16]), model)).eval()
    assert isinstance(built, network)
    x = torch.from_numpy(kind.encode(split, prep)[0][:5])
    assert x.dtype == torch.uint8
    with torch.no_grad():
        logits, proba = built(x)
        normalised = built.pixels(x)
    assert logits.shape == proba.shape == (5, 3) and logits.dtype == torch.float32
    torch.testing.assert_close(proba, torch.softmax(logits, dim=1))
    torch.testing.assert_close(proba.sum(1), torch.ones(5))
    want = (x.permute(0, 3, 1, 2).float() / 255 - built.pixels.mean) / built.pixels.std
    torch.testing.assert_close(normalised, want)


def test_image_family_refuses_pixels_of_another_size() -> None:
    split, _ = pixel_split()
    kind = family("image")
    prep = kind.fit(split, {"target": LABEL}, Params())
    smaller = Split(split.frame, split.pixels[:, :4, :4])
    with pytest.raises(ShipyardError, match=r"images are \(4, 4, 3\), the model takes \(8, 8, 3\)"):
        kind.encode(smaller, prep)


def test_training_on_images_lowers_the_loss(project: Path) -> None:
    kind = family("image")
    train_split, labels = pixel_split(seed=0)
    val_split, _ = pixel_split(n_per_class=4, seed=10)
    prep = kind.fit(train_split, {"target": LABEL}, Params())
    params = resolve(
        TrainParams(hidden=[16], dropout=0.0, epochs=8, batch_size=8, lr=0.01, patience=100), "cnn"
    )
    torch.manual_seed(0)
    network = kind.build("cnn", prep, len(labels), params)

    def data(split: Split) -> tuple[list[torch.Tensor], torch.Tensor]:
        inputs = [torch.from_numpy(a) for a in kind.encode(split, prep)]
        return inputs, torch.from_numpy(encode_labels(split.frame[LABEL], labels))

    history = fit(network, data(train_split), data(val_split), params, Path("ckpt.pt"), take=kind.take)
    losses = [e["loss"] for e in history.epochs]
    assert len(losses) == 8 and losses[-1] < 0.5 * losses[0]
    assert max(e["val_accuracy"] for e in history.epochs) == 1.0


# ---- text ---------------------------------------------------------------------------------------------

SPAM_WORDS = ["win", "prize", "free", "cash", "claim", "offer", "urgent", "bonus"]
HAM_WORDS = ["meeting", "lunch", "tomorrow", "project", "family", "dinner", "later", "call"]


def text_rows(n: int = 40, seed: int = 0) -> list[dict[str, str]]:
    """Distinct texts (a free-text column), a short categorical column, and a two-class label."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = "spam" if i % 2 else "ham"
        words = rng.choice(SPAM_WORDS if label == "spam" else HAM_WORDS, 6)
        text = f"note {i}: " + " ".join(words)
        rows.append({"channel": ["web", "app", "sms"][i % 3], "message": text, LABEL: label})
    return rows


def csv_bytes(rows: list[dict[str, str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["channel", "message", LABEL], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def write_text_csv(path: Path) -> set[str]:
    """40 texts plus 3 repeats (one differing only in surrounding spaces and channel), one text with two
    labels, and two texts with a Latin-1 byte; returns the texts ingest should keep."""
    rows = text_rows()
    repeats = [
        dict(rows[0]),
        dict(rows[1]),
        {**rows[2], "channel": "app", "message": f"  {rows[2]['message']}  "},
    ]
    conflict = {**rows[4], LABEL: "spam"}
    raw = csv_bytes(rows + repeats + [conflict])
    for i in (5, 6):  # one invalid byte sequence in each of two texts
        message = rows[i]["message"]
        raw = raw.replace(message.encode(), message.replace(":", " caf\xe9:").encode("latin-1"))
    path.write_bytes(raw)
    kept = {r["message"] for r in rows} - {rows[4]["message"]}
    return {
        m.replace(":", " caf\ufffd:") if m in (rows[5]["message"], rows[6]["message"]) else m for m in kept
    }


def test_ingest_a_table_with_free_text(project: Path, make_params) -> None:
    expected = write_text_csv(Path("texts.csv"))
    report = ingest.run(make_params(ingest={"source": "texts.csv"}))

    on_disk = json.loads(INGEST_REPORT.read_text(encoding="utf-8"))
    assert on_disk == json.loads(json.dumps(report))
    assert on_disk["task"] == "text" and on_disk["text_column"] == "message"
    assert on_disk["invalid_bytes_repaired"] == 2
    assert on_disk["duplicate_texts_dropped"] == 3 and on_disk["conflicting_labels_dropped"] == 2
    assert on_disk["rows"] == len(expected) == 39
    texts = {}
    for name in SPLITS:
        frame = pd.read_parquet(split_path(name))
        assert list(frame.columns) == ["message", LABEL] and not pixels_path(name).exists()
        texts[name] = set(frame["message"])
        assert len(texts[name]) == len(frame) == on_disk["splits"][name]["rows"]
    assert not (
        texts["train"] & texts["val"] or texts["train"] & texts["test"] or texts["val"] & texts["test"]
    )
    assert texts["train"] | texts["val"] | texts["test"] == expected
    assert sum("\ufffd" in t for t in expected) == 2


def test_text_ingest_counts_rows_read_and_unlabelled_rows(project: Path, make_params) -> None:
    rows = text_rows()
    rows.append({"channel": "web", "message": "a message that nobody labelled at all", LABEL: ""})
    Path("texts.csv").write_bytes(csv_bytes(rows + rows[:3]))
    report = ingest.run(make_params(ingest={"source": "texts.csv"}))
    assert report["duplicate_texts_dropped"] == 3 and report["rows"] == 40
    assert (report["rows_read"], report["unlabelled_dropped"]) == (44, 1)


def test_invalid_bytes_in_text_can_be_rejected(project: Path, make_params) -> None:
    write_text_csv(Path("texts.csv"))
    keys, value = parse_assignment("ingest.invalid_bytes=reject")
    assert keys == ["ingest", "invalid_bytes"]
    params = make_params(ingest={"source": "texts.csv", keys[1]: value})
    with pytest.raises(
        ShipyardError,
        match=r"^texts.csv: not UTF-8 text \(2 invalid byte sequence\(s\)\): re-encode it as UTF-8, "
        r"or set ingest.invalid_bytes: repair$",
    ):
        ingest.run(params)
    assert not INGEST_REPORT.exists()


def test_text_take_trims_padding_to_the_longest_text_in_the_batch() -> None:
    lengths = [3, 5, 2, 1]
    mask = torch.tensor([[1] * n + [0] * (10 - n) for n in lengths])
    ids = (torch.arange(1, 11).repeat(4, 1)) * mask
    take = family("text").take
    for index, width in ((slice(0, 4), 5), (torch.tensor([0, 2]), 3), (torch.tensor([3]), 1)):
        got_ids, got_mask = take([ids, mask], index)
        assert got_ids.shape == got_mask.shape == (len(ids[index]), width)
        assert torch.equal(got_ids, ids[index][:, :width]) and torch.equal(got_mask, mask[index][:, :width])
        assert int(got_mask.sum()) == int(mask[index].sum())  # no real token is cut


def lstm_model(texts: list[str], labels: list[str], max_length: int = 128, seed: int = 0) -> Trained:
    """An untrained LSTM text model with a tokenizer trained on `texts` (eval mode)."""
    frame = pd.DataFrame({"message": texts, LABEL: labels})
    params = Params(train=TrainParams(model="lstm", max_length=max_length, vocab_size=200, hidden=[16]))
    kind = family("text")
    prep = kind.fit(Split(frame), {"text_column": "message", "target": LABEL}, params)
    settings = resolve(params.train, "lstm")
    torch.manual_seed(seed)
    network = kind.build("lstm", prep, 2, settings).eval()
    return Trained(network, "text", "lstm", prep, sorted(set(labels)), settings)


@pytest.fixture(scope="module")
def texts() -> tuple[list[str], list[str]]:
    rows = text_rows(n=70)
    return [r["message"] for r in rows], [r[LABEL] for r in rows]


def test_lstm_answer_does_not_depend_on_padding(texts: tuple[list[str], list[str]]) -> None:
    trained = lstm_model(*texts)
    assert isinstance(trained.network, LSTMClassifier)
    pad = trained.prep["pad_id"]
    frame = pd.DataFrame({"message": ["win cash", texts[0][3] + " " + texts[0][5]]})
    ids, mask = (torch.from_numpy(a) for a in trained.family.encode(Split(frame), trained.prep))
    short = int(mask[0].sum())
    assert short < ids.shape[1]  # the short text is padded in its batch
    with torch.no_grad():
        alone = trained.network(ids[:1, :short], mask[:1, :short])[0]
        in_batch = trained.network(ids, mask)[0][:1]
        for extra in (1, 7, 100):
            padded_ids = torch.cat([ids[:1, :short], torch.full((1, extra), pad)], dim=1)
            padded_mask = torch.cat([mask[:1, :short], torch.zeros(1, extra, dtype=mask.dtype)], dim=1)
            torch.testing.assert_close(trained.network(padded_ids, padded_mask)[0], alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(in_batch, alone, atol=1e-5, rtol=0)


def random_tokens(rows: int, seq: int, vocab: int, pad: int, seed: int) -> list[np.ndarray]:
    """Right-padded token ids and masks: every row has 1..seq real tokens."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, seq + 1, rows)
    lengths[0] = seq  # one row fills the sequence
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    ids = np.where(mask == 1, rng.integers(0, vocab, (rows, seq)), pad).astype(np.int64)
    return [ids, mask]


def test_lstm_export_keeps_batch_and_sequence_dynamic(tmp_path: Path, texts) -> None:
    trained = lstm_model(*texts)
    inputs = trained.family.encode(Split(pd.DataFrame({"message": texts[0]})), trained.prep)
    path = tmp_path / "text.onnx"
    export_onnx(trained, export._text_example(inputs), path, opset=17)

    graph = onnx.load(str(path)).graph
    for value in graph.input:
        assert [d.dim_param for d in value.type.tensor_type.shape.dim] == ["batch", "sequence"]
    runner = session(path)
    vocab, pad = trained.prep["vocab_size"], trained.prep["pad_id"]
    for batch in (1, 7, 64):
        for seq in (8, 64, 128):
            ids, mask = random_tokens(batch, seq, vocab, pad, seed=batch * seq)
            logits, proba = runner.run(
                ["logits", "probabilities"], {"input_ids": ids, "attention_mask": mask}
            )
            assert logits.shape == proba.shape == (batch, 2), (batch, seq)
            with torch.no_grad():
                want = trained.network(torch.from_numpy(ids), torch.from_numpy(mask))[0].numpy()
            np.testing.assert_allclose(logits, want, atol=1e-4, err_msg=f"batch {batch}, seq {seq}")

    report = check_parity(trained, path, inputs, ExportParams())
    assert list(report) == ["batch 1, seq 8", "batch 7, seq 64", "batch 64, seq 128"]
    assert all(r["max_abs_diff"] <= 1e-4 and r["class_agreement"] == 1.0 for r in report.values())


def test_text_export_with_frozen_axes_fails_parity(tmp_path: Path, texts) -> None:
    trained = lstm_model(*texts)
    inputs = trained.family.encode(Split(pd.DataFrame({"message": texts[0]})), trained.prep)
    path = tmp_path / "static.onnx"
    example = tuple(torch.from_numpy(a) for a in export._text_example(inputs))
    quiet_export(
        trained.network,
        example,
        str(path),
        input_names=["input_ids", "attention_mask"],
        output_names=["logits", "probabilities"],
        opset_version=17,
        dynamo=False,
    )
    with pytest.raises(ShipyardError, match=r"^ONNX parity failed at batch 1, seq 8: "):
        check_parity(trained, path, inputs, ExportParams())


def test_text_pipeline_ships_the_tokenizer(project: Path, make_params) -> None:
    write_text_csv(Path("texts.csv"))
    params = make_params(
        ingest={"source": "texts.csv"},
        train={"model": "lstm", "epochs": 2, "vocab_size": 200, "max_length": 32, "hidden": [16]},
        evaluate={"thresholds": {"accuracy": 0.0, "f1_macro": 0.0}},
        export={"variants": ["int8"]},
    )
    ingest.run(params)
    report = train.run(params)
    assert (report["task"], report["model"], report["epochs_run"]) == ("text", "lstm", 2)
    evaluate.run(params)
    manifest = export.run(params)

    trained = load_model(MODEL_FILE)
    assert (trained.task, trained.model) == ("text", "lstm")
    assert (manifest["task"], manifest["model"]) == ("text", "lstm") and "features" not in manifest
    assert manifest["preprocessing"] == {
        "tokenizer": TOKENIZER_FILE,
        "max_length": 32,
        "text_column": "message",
    }
    tokenizer_path = EXPORT_DIR / TOKENIZER_FILE
    assert manifest["files"][TOKENIZER_FILE] == hashlib.sha256(tokenizer_path.read_bytes()).hexdigest()
    published = [v["file"] for k, v in manifest["variants"].items() if k != "fp32" and v["published"]]
    assert set(manifest["files"]) == {"model.onnx", TOKENIZER_FILE, "profile.json", *published}
    assert manifest["files"]["model.onnx"] == hashlib.sha256(ONNX_FILE.read_bytes()).hexdigest()
    assert json.loads(MANIFEST_FILE.read_text(encoding="utf-8")) == json.loads(json.dumps(manifest))
    assert set(manifest["parity"]) == {f"batch {b}, seq {s}" for b, s in params.export.parity_shapes}
    assert [i["name"] for i in manifest["onnx"]["inputs"]] == ["input_ids", "attention_mask"]

    from tokenizers import Tokenizer

    shipped = Tokenizer.from_file(str(tokenizer_path))
    test = load_split("test", "text")
    want_ids, want_mask = trained.family.encode(test, trained.prep)
    got_ids, got_mask = encode_texts(shipped, test.frame["message"].tolist())
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_array_equal(got_mask, want_mask)
    first = shipped.encode(test.frame["message"].iloc[0]).ids
    assert first == want_ids[0, : int(want_mask[0].sum())].tolist()


# ---- minilm -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_minilm_builds_offline_from_the_package_and_exports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, texts
) -> None:
    from safetensors import safe_open

    from tasks.texts import pretrained_model_dir

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "1")

    def no_network(*args, **kwargs):
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(OSError, match="network access attempted"):
        socket.create_connection(("127.0.0.1", 9), timeout=1)

    frame = pd.DataFrame({"message": texts[0][:8], LABEL: texts[1][:8]})
    params = Params(train=TrainParams(model="minilm", max_length=16))
    kind = family("text")
    prep = kind.fit(Split(frame), {"text_column": "message", "target": LABEL}, params)
    assert prep["max_length"] == 16 and prep["encoder_config"]["hidden_size"] == 384
    settings = resolve(params.train, "minilm")
    network = kind.build("minilm", prep, 2, settings, pretrained=True).eval()

    with safe_open(str(pretrained_model_dir() / "model.safetensors"), "pt") as weights:
        names = list(weights.keys())
        key = next(k for k in names if k.endswith("encoder.layer.0.attention.self.query.weight"))
        assert torch.equal(network.encoder.state_dict()[key.removeprefix("bert.")], weights.get_tensor(key))

    trained = Trained(network, "text", "minilm", prep, ["ham", "spam"], settings)
    inputs = kind.encode(Split(frame), prep)
    assert inputs[0].shape[1] <= 16
    path = tmp_path / "minilm.onnx"
    export_onnx(trained, export._text_example(inputs), path, opset=17)
    report = check_parity(trained, path, inputs, ExportParams(parity_shapes=[(1, 8), (7, 16)]))
    assert list(report) == ["batch 1, seq 8", "batch 7, seq 16"]
    assert all(r["max_abs_diff"] <= 1e-4 for r in report.values())


# ---- variants -----------------------------------------------------------------------------------------


@pytest.fixture
def exported_tabular(project: Path, make_frame) -> tuple[Trained, list[np.ndarray], np.ndarray]:
    """A small trained tabular model exported to export/model.onnx, with test inputs and labels."""
    train_frame, test_frame = make_frame(n=120, seed=0), make_frame(n=60, seed=1)
    spec = fit_features(train_frame, LABEL)
    labels = label_values(train_frame[LABEL])
    params = resolve(
        TrainParams(hidden=[16], dropout=0.0, epochs=10, batch_size=32, lr=0.01, patience=100), "mlp"
    )
    torch.manual_seed(0)
    network = family("tabular").build("mlp", spec.model_dump(), len(labels), params)

    def data(frame: pd.DataFrame) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = torch.from_numpy(encode_frame(frame, spec))
        return [x], torch.from_numpy(encode_labels(frame[LABEL], labels))

    fit(network, data(train_frame), data(test_frame), params, Path("ckpt.pt"))
    trained = Trained(network.eval(), "tabular", "mlp", spec.model_dump(), labels, params)
    x = encode_frame(test_frame, spec)
    export_onnx(trained, [x[:2]], ONNX_FILE, opset=17)
    return trained, [x], encode_labels(test_frame[LABEL], labels)


def test_variants_within_the_budget_are_published(exported_tabular) -> None:
    trained, inputs, y = exported_tabular
    variants = build_variants(trained, inputs, y, ExportParams())
    assert list(variants) == ["fp32", "int8", "fp16"]
    fp32 = variants["fp32"]
    assert fp32["accuracy"] >= 0.9 and fp32["published"] and fp32["file"] == ONNX_FILE.name
    for kind in ("int8", "fp16"):
        entry = variants[kind]
        assert entry["published"] is True and "reason" not in entry, entry
        assert entry["accuracy"] >= fp32["accuracy"] - ExportParams().variant_budget
        assert (
            entry["file"] == VARIANT_FILES[kind].name and VARIANT_FILES[kind].stat().st_size == entry["bytes"]
        )
        assert set(entry["latency"]) == {"batch_1_ms", "batch_32_ms"}
    int8_types = {init.data_type for init in onnx.load(str(VARIANT_FILES["int8"])).graph.initializer}
    assert onnx.TensorProto.INT8 in int8_types  # really quantized
    fp16_types = {init.data_type for init in onnx.load(str(VARIANT_FILES["fp16"])).graph.initializer}
    assert onnx.TensorProto.FLOAT16 in fp16_types


def test_a_variant_that_loses_accuracy_is_not_published(exported_tabular, monkeypatch) -> None:
    trained, inputs, y = exported_tabular
    real_score = export.score_model

    def worse_variants(path: Path, *args, **kwargs):
        scored = real_score(path, *args, **kwargs)
        return scored if path == ONNX_FILE else {**scored, "accuracy": scored["accuracy"] - 0.2}

    monkeypatch.setattr(export, "score_model", worse_variants)
    VARIANT_FILES["fp16"].write_bytes(b"stale")  # from an earlier export; fp16 is not asked for now
    variants = build_variants(trained, inputs, y, ExportParams(variants=["int8"]))
    int8 = variants["int8"]
    assert int8["published"] is False
    floor = variants["fp32"]["accuracy"] - 0.01
    assert int8["reason"] == f"accuracy {int8['accuracy']:.4f} is below fp32's minus the budget ({floor:.4f})"
    assert not VARIANT_FILES["int8"].exists() and not VARIANT_FILES["fp16"].exists()
    assert "fp16" not in variants and ONNX_FILE.exists()


def test_a_variant_that_cannot_be_built_is_reported(exported_tabular, monkeypatch) -> None:
    trained, inputs, y = exported_tabular

    def broken(kind: str, source: Path, dest: Path) -> None:
        dest.write_bytes(b"half")
        raise RuntimeError("quantizer exploded\nsecond line")

    monkeypatch.setattr(export, "make_variant", broken)
    variants = build_variants(trained, inputs, y, ExportParams(variants=["int8"]))
    assert variants["int8"] == {"published": False, "reason": "failed: quantizer exploded"}
    assert not VARIANT_FILES["int8"].exists()


# ---- params and model names ---------------------------------------------------------------------------


def test_resolve_fills_nulls_from_the_model_defaults() -> None:
    for model, defaults in MODEL_DEFAULTS.items():
        resolved = resolve(TrainParams(), model)
        assert resolved.model == model
        assert {k: getattr(resolved, k) for k in defaults} == defaults
    explicit = resolve(TrainParams(epochs=3, hidden=[7], dropout=0.3), "lstm")
    assert (explicit.epochs, explicit.hidden, explicit.dropout) == (3, [7], 0.3)
    assert (explicit.lr, explicit.batch_size) == (
        MODEL_DEFAULTS["lstm"]["lr"],
        MODEL_DEFAULTS["lstm"]["batch_size"],
    )


def test_choose_model() -> None:
    assert [family(t).choose_model("auto") for t in ("tabular", "image", "text")] == ["mlp", "cnn", "minilm"]
    assert family("text").choose_model("lstm") == "lstm" and family("image").choose_model("mlp") == "mlp"
    with pytest.raises(
        ShipyardError, match=r"^train.model: 'cnn' is not a text model; choose one of \['minilm', 'lstm'\]$"
    ):
        family("text").choose_model("cnn")
    with pytest.raises(ShipyardError, match=r"choose one of \['cnn', 'mlp'\]"):
        family("image").choose_model("lstm")
    with pytest.raises(
        ShipyardError, match=r"^unknown task 'audio'; choose one of \['tabular', 'image', 'text'\]"
    ):
        family("audio")
