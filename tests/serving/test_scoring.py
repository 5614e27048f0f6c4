"""`shipyard predict`: files scored in chunks equal one-shot LoadedModel.predict, for the three families."""

from __future__ import annotations

import gzip
import io
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from flows.cli import app
from serving import scoring
from serving.model import LoadedModel, load_production
from serving.scoring import encode_columns
from tasks.features import encode_records
from tests.serving.test_families import SENTENCES, make_tokenizer, publish_image, publish_text
from tests.serving.test_serving import CATEGORIES, publish

RNG = np.random.default_rng(7)


# ---- helpers


def run(*args: str | Path) -> Any:
    """`shipyard predict ARGS` in-process; stdout and stderr apart."""
    return CliRunner().invoke(app, ["predict", *map(str, args)])


def tabular_frame(rows: int = 30) -> pd.DataFrame:
    """The tiny model's columns (in another order), a label, an extra column, and awkward values."""
    frame = pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(rows)],
            "colour": RNG.choice([*CATEGORIES, "green", None], rows),
            "b": RNG.integers(-3, 4, rows),
            "mean radius": RNG.normal(size=rows).round(3),
            "target": RNG.integers(0, 3, rows),
        }
    )
    frame.loc[[2, rows - 1], "mean radius"] = np.nan  # missing: imputed in the graph
    frame.loc[5, "colour"] = np.nan
    return frame


def one_shot(model: LoadedModel, items: list[Any]) -> tuple[list[Any], np.ndarray]:
    """Labels and probabilities from LoadedModel.predict on every item at once."""
    answers = model.predict(items)
    return [a["label"] for a in answers], np.array([list(a["probabilities"].values()) for a in answers])


def assert_scores(out: pd.DataFrame, model: LoadedModel, items: list[Any]) -> None:
    labels, probabilities = one_shot(model, items)
    assert out["prediction"].tolist() == labels
    columns = [f"probability_{label}" for label in model.labels]
    np.testing.assert_allclose(out[columns].to_numpy(), probabilities, atol=1e-6)


def read(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    publish(tmp_path / "registry", [0, 1, 2])
    return tmp_path / "registry"


@pytest.fixture
def model(registry: Path) -> LoadedModel:
    return load_production(registry, prefer_gpu=False)


# ---- tabular


@pytest.mark.parametrize(
    ("suffix", "out_suffix"),
    [(".csv", ".csv"), (".parquet", ".parquet"), (".csv", ".parquet"), (".tsv", ".tsv")],
)
def test_a_table_scored_in_chunks_of_7_equals_one_shot_predict(
    tmp_path: Path, registry: Path, model: LoadedModel, suffix: str, out_suffix: str
) -> None:
    frame = tabular_frame(30)
    data, out = tmp_path / f"data{suffix}", tmp_path / f"scores{out_suffix}"
    if suffix == ".parquet":
        frame.to_parquet(data)
    else:
        frame.to_csv(data, index=False, sep="\t" if suffix == ".tsv" else ",")
    result = run("--data", data, "--out", out, "--registry", registry, "--chunk-rows", "7")
    assert result.exit_code == 0, result.output
    scored = read(out)
    input_columns = list(frame.columns)
    assert list(scored.columns) == [
        *input_columns,
        "prediction",
        "probability_0",
        "probability_1",
        "probability_2",
    ]
    assert scored["id"].tolist() == frame["id"].tolist()  # input order, extra columns kept
    assert_scores(scored, model, read(data).to_dict("records"))
    assert "scored 30 rows in" in result.stdout and "rows/s" in result.stdout


def test_the_reader_is_asked_for_chunks_of_the_given_size(
    tmp_path: Path, registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tabular_frame(30).drop(columns="target").to_csv(tmp_path / "data.csv", index=False)  # no label: fine
    sizes: list[int] = []
    reader = scoring.read_table_chunks

    def counting(*args: Any) -> Any:
        for frame, table in reader(*args):
            sizes.append(len(frame))
            yield frame, table

    monkeypatch.setattr(scoring, "read_table_chunks", counting)
    result = run(
        "--data",
        tmp_path / "data.csv",
        "--out",
        tmp_path / "s.csv",
        "--registry",
        registry,
        "--chunk-rows",
        "7",
    )
    assert result.exit_code == 0, result.output
    assert sizes == [7, 7, 7, 7, 2]
    assert len(pd.read_csv(tmp_path / "s.csv")) == 30


def test_column_wise_encoding_equals_encode_records(model: LoadedModel) -> None:
    frame = pd.DataFrame(
        {
            "mean radius": pd.Series([" 1.5", "2", "", None, "1_000", "nan", "-3e2", "7"], dtype=object),
            "b": [1, 2, 3, 4, 5, 6, 7, 8],
            "colour": pd.Series(["red", 1, 1.0, True, None, "blue", float("nan"), "1"], dtype=object),
        }
    )
    assert model.spec is not None
    np.testing.assert_array_equal(
        encode_columns(frame, model.spec), encode_records(frame.to_dict("records"), model.spec)
    )
    numbers = pd.DataFrame(
        {"mean radius": [1.0, np.nan], "b": pd.array([1, None], "Int64"), "colour": ["red", "x"]}
    )
    np.testing.assert_array_equal(
        encode_columns(numbers, model.spec)[:1], encode_records(numbers.to_dict("records")[:1], model.spec)
    )
    assert math.isnan(encode_columns(numbers, model.spec)[1, 1])  # a nullable int's gap is missing


@pytest.mark.parametrize(
    ("value", "words", "suffix"),
    [
        ("abc", "row 10, column 'b': expected a number, got 'abc'", ".csv"),
        ("1e400", "row 10, column 'b': expected a finite", ".csv"),
        ("abc", "row 10, column 'b': expected a number, got 'abc'", ".parquet"),  # spooled CSV chunks
    ],
)
def test_a_bad_value_names_row_and_column_and_leaves_the_old_output(
    tmp_path: Path, registry: Path, value: str, words: str, suffix: str
) -> None:
    frame = tabular_frame(20).astype({"b": object})
    frame.loc[9, "b"] = value  # row 10, in the second chunk of 7
    frame.to_csv(tmp_path / "data.csv", index=False)
    out = tmp_path / f"scores{suffix}"
    out.write_text("yesterday's scores\n")
    result = run("--data", tmp_path / "data.csv", "--out", out, "--registry", registry, "--chunk-rows", "7")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and words in result.stderr, result.stderr
    assert "Traceback" not in result.output
    assert out.read_text() == "yesterday's scores\n"
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["data.csv", "registry", out.name])  # no temp file, no spool


def test_csv_columns_whose_type_changes_between_chunks_fit_one_parquet_schema(
    tmp_path: Path, registry: Path
) -> None:
    frame = tabular_frame(20)
    frame["note"] = [None] * 10 + ["late text"] * 10  # empty in the first chunk: typed by pandas as float
    frame["code"] = [*range(10), *"abcdefghij"]  # numbers, then text
    frame.loc[15, "b"] = None  # whole numbers with a gap in the second chunk only
    frame.to_csv(tmp_path / "data.csv", index=False)
    out = tmp_path / "s.parquet"
    result = run("--data", tmp_path / "data.csv", "--out", out, "--registry", registry, "--chunk-rows", "10")
    assert result.exit_code == 0, result.output
    scored = pd.read_parquet(out)
    assert scored["note"].isna().sum() == 10 and scored["note"].iloc[10:].eq("late text").all()
    assert scored["code"].tolist() == [str(i) for i in range(10)] + list("abcdefghij")
    assert scored["b"].isna().tolist() == [i == 15 for i in range(20)]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_missing_feature_column_is_named(tmp_path: Path, registry: Path) -> None:
    tabular_frame(10).drop(columns="b").to_parquet(tmp_path / "data.parquet")
    result = run("--data", tmp_path / "data.parquet", "--out", tmp_path / "s.csv", "--registry", registry)
    assert result.exit_code == 1
    assert "missing feature column(s) ['b'] (chunk starting at row 1)" in result.stderr, result.stderr
    assert not (tmp_path / "s.csv").exists()


def test_registry_defaults_to_params_and_parquet_types_survive(
    tmp_path: Path, registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text("promote:\n  registry: registry\n")
    frame = tabular_frame(12)
    frame["when"] = pd.date_range("2026-01-01", periods=12, freq="D")
    frame.loc[8, "b"] = None  # the int column has a gap only in the second chunk
    frame.to_parquet("data.parquet")
    result = run("--data", "data.parquet", "--out", "s.parquet", "--chunk-rows", "5")
    assert result.exit_code == 0, result.output
    scored = pd.read_parquet("s.parquet")
    pd.testing.assert_frame_equal(scored[frame.columns], pd.read_parquet("data.parquet"))


def test_a_header_only_file_gives_a_header_only_output(tmp_path: Path, registry: Path) -> None:
    (tmp_path / "data.csv").write_text("mean radius,b,colour\n")
    result = run("--data", tmp_path / "data.csv", "--out", tmp_path / "s.csv", "--registry", registry)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s.csv").read_text().splitlines() == [
        "mean radius,b,colour,prediction,probability_0,probability_1,probability_2"
    ]


@pytest.mark.parametrize(
    ("data", "out", "words"),
    [
        ("nowhere.csv", "s.csv", "nowhere.csv: file not found"),
        ("data.xlsx", "s.csv", "unknown suffix '.xlsx'"),
        ("data.csv", "s.json", "--out s.json: unknown suffix '.json'"),
        ("data.csv", "missing/s.csv", "folder missing does not exist"),
        ("data.csv", "data.csv", "is the --data file"),
    ],
)
def test_bad_paths_are_one_line_errors(
    tmp_path: Path, registry: Path, monkeypatch: pytest.MonkeyPatch, data: str, out: str, words: str
) -> None:
    monkeypatch.chdir(tmp_path)
    tabular_frame(5).to_csv("data.csv", index=False)
    Path("data.xlsx").write_bytes(b"PK\x03\x04")
    before = Path("data.csv").read_bytes()
    result = run("--data", data, "--out", out, "--registry", registry)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and words in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert Path("data.csv").read_bytes() == before


def test_no_production_model_is_a_clear_error(tmp_path: Path) -> None:
    tabular_frame(5).to_csv(tmp_path / "data.csv", index=False)
    result = run(
        "--data", tmp_path / "data.csv", "--out", tmp_path / "s.csv", "--registry", tmp_path / "empty"
    )
    assert result.exit_code == 1 and "no production model" in result.stderr


# ---- text


@pytest.fixture
def text_registry(tmp_path: Path) -> Path:
    (tmp_path / "registry").mkdir()
    publish_text(tmp_path / "registry", make_tokenizer())
    return tmp_path / "registry"


def text_frame(rows: int = 23) -> pd.DataFrame:
    sentences = [*SENTENCES, "a cat", "", "the the the dog sat in the dark park with a cat"]
    texts = [sentences[i % len(sentences)] + (" sea" * (i % 3)) for i in range(rows)]
    frame = pd.DataFrame(
        {"n": range(rows), "message": texts, "label": ["cat", "dog"] * (rows // 2) + ["cat"] * (rows % 2)}
    )
    frame.loc[4, "message"] = None  # a missing text is scored as empty
    return frame


@pytest.mark.parametrize("named", [True, False])
def test_texts_scored_in_chunks_equal_one_shot_predict(
    tmp_path: Path, text_registry: Path, named: bool
) -> None:
    frame = text_frame()
    frame.to_csv(tmp_path / "data.csv", index=False)
    args = ["--text-column", "message"] if named else []  # else found as ingest finds it
    out = tmp_path / "s.parquet"
    result = run(
        "--data", tmp_path / "data.csv", "--out", out, "--registry", text_registry, "--chunk-rows", "5", *args
    )
    assert result.exit_code == 0, result.output
    scored = pd.read_parquet(out)
    assert list(scored.columns[:3]) == ["n", "message", "label"] and scored["n"].tolist() == list(range(23))
    model = load_production(text_registry, prefer_gpu=False)
    assert_scores(scored, model, frame["message"].fillna("").tolist())


def test_an_unknown_text_column_is_named(tmp_path: Path, text_registry: Path) -> None:
    text_frame().to_csv(tmp_path / "data.csv", index=False)
    result = run(
        "--data",
        tmp_path / "data.csv",
        "--out",
        tmp_path / "s.csv",
        "--registry",
        text_registry,
        "--text-column",
        "body",
    )
    assert result.exit_code == 1 and "missing text column ['body']" in result.stderr, result.stderr


# ---- images


def png(mode: str, size: tuple[int, int]) -> bytes:
    bands = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    array = RNG.integers(0, 256, size=(size[1], size[0], bands), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array[:, :, 0] if bands == 1 else array).save(
        buffer, format="PNG" if mode != "RGB" else "JPEG"
    )
    return buffer.getvalue()


@pytest.fixture
def image_registry(tmp_path: Path) -> Path:
    publish_image(tmp_path / "registry", channels=3)
    return tmp_path / "registry"


def test_an_image_folder_scored_in_chunks_equals_one_shot_predict(
    tmp_path: Path, image_registry: Path
) -> None:
    folder = tmp_path / "images"
    files = {
        "cat/a.png": png("L", (5, 6)),
        "cat/b.jpg": png("RGB", (9, 4)),  # resized, as the server resizes
        "dog/deep/c.png": png("RGBA", (5, 6)),
        "loose.png": png("L", (3, 3)),  # images directly in the folder are scored too
        "dog/.hidden.png": b"skipped",
    }
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    out = tmp_path / "s.csv"
    result = run("--data", folder, "--out", out, "--registry", image_registry, "--chunk-rows", "3")
    assert result.exit_code == 0, result.output
    scored = pd.read_csv(out)
    names = ["cat/a.png", "cat/b.jpg", "dog/deep/c.png", "loose.png"]
    assert scored["path"].tolist() == names
    assert_scores(scored, load_production(image_registry, prefer_gpu=False), [files[n] for n in names])


def test_idx_images_are_scored_as_arrays(tmp_path: Path) -> None:
    publish_image(tmp_path / "registry", channels=1)
    pixels = RNG.integers(0, 256, size=(11, 6, 5), dtype=np.uint8)
    data = tmp_path / "t10k-images-idx3-ubyte.gz"
    data.write_bytes(gzip.compress(struct.pack(">4I", 2051, 11, 6, 5) + pixels.tobytes()))
    out = tmp_path / "s.parquet"
    result = run("--data", data, "--out", out, "--registry", tmp_path / "registry", "--chunk-rows", "4")
    assert result.exit_code == 0, result.output
    scored = pd.read_parquet(out)
    assert scored["path"].tolist() == [f"{data.name}#{i}" for i in range(11)]
    assert_scores(scored, load_production(tmp_path / "registry", prefer_gpu=False), list(pixels))


def test_an_unreadable_image_is_named_and_nothing_is_written(tmp_path: Path, image_registry: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.png").write_bytes(png("L", (5, 6)))
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    result = run("--data", folder, "--out", tmp_path / "s.csv", "--registry", image_registry)
    assert result.exit_code == 1
    assert f"error: {folder / 'b.png'}: not a PNG or JPEG image" in result.stderr, result.stderr
    assert not (tmp_path / "s.csv").exists()


def test_a_table_for_an_image_model_says_what_fits(tmp_path: Path, image_registry: Path) -> None:
    tabular_frame(3).to_csv(tmp_path / "data.csv", index=False)
    result = run("--data", tmp_path / "data.csv", "--out", tmp_path / "s.csv", "--registry", image_registry)
    assert result.exit_code == 1 and "this image model scores a folder of images" in result.stderr


def test_a_parquet_folder_is_one_table_and_progress_counts_rows(tmp_path: Path, model: LoadedModel) -> None:
    frame = tabular_frame(25)
    (tmp_path / "parts").mkdir()
    frame.iloc[:10].to_parquet(tmp_path / "parts" / "a.parquet")  # a chunk of 7 spans both files
    frame.iloc[10:].to_parquet(tmp_path / "parts" / "b.parquet")
    seen: list[int] = []
    summary = scoring.score_file(
        model, tmp_path / "parts", tmp_path / "s.csv", chunk_rows=7, on_progress=seen.append
    )
    assert (summary.rows, seen) == (25, [7, 14, 21, 25])
    scored = pd.read_csv(tmp_path / "s.csv")
    assert scored["id"].tolist() == frame["id"].tolist()
    assert_scores(scored, model, frame.to_dict("records"))
