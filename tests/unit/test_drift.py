"""drift: the training profile and new data against it (PSI, KS, JS, new categories, OOV, pixel stats)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp
from typer.testing import CliRunner

from flows.drift_cli import drift
from tasks.config import DriftParams, parse_params
from tasks.drift import (
    EPSILON,
    SKETCH_POINTS,
    compare,
    critical_summary,
    drift_lines,
    drift_of_file,
    profile_split,
    psi,
)
from tasks.errors import ShipyardError
from tasks.io import write_json

SKETCH_STEP = 1 / (SKETCH_POINTS - 1)


def table(rows: int = 1500, seed: int = 0) -> pd.DataFrame:
    """Numbers (one with gaps), a category and string labels; column names with spaces."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "mean radius": rng.normal(14, 3, rows),
            "dose mg": rng.gamma(2.0, 2.0, rows),
            "colour": rng.choice(["red", "green", "blue"], rows, p=[0.5, 0.3, 0.2]),
            "label": rng.choice(["benign", "malignant"], rows),
        }
    )
    frame.loc[rng.choice(rows, rows // 20, replace=False), "dose mg"] = np.nan
    return frame


def roundtrip(profile: dict) -> dict:
    """The profile as export writes and drift reads it: plain JSON, nothing lost."""
    return json.loads(json.dumps(profile, allow_nan=False))


# ---- numbers --------------------------------------------------------------------------------------------


def test_identical_data_is_ok() -> None:
    frame = table()
    report = compare(roundtrip(profile_split(frame, "tabular", "label")), frame)
    assert report["status"] == "ok"
    assert report["critical_columns"] == report["warning_columns"] == report["extra_columns"] == []
    for name in ("mean radius", "dose mg"):
        column = report["columns"][name]
        assert column["kind"] == "numeric" and column["psi"] == pytest.approx(0, abs=1e-12)
        assert column["ks"] <= SKETCH_STEP and column["ks_pvalue"] > 0.99
    for name in ("colour", "label"):
        assert report["columns"][name]["js"] == pytest.approx(0, abs=1e-9)
        assert report["columns"][name]["new_category_rate"] == 0


def test_a_fresh_sample_of_the_same_data_is_ok() -> None:
    report = compare(profile_split(table(seed=0), "tabular", "label"), table(seed=1))
    assert report["status"] == "ok", drift_lines(report)


def test_ten_times_the_scale_of_one_column_is_critical_in_that_column_only() -> None:
    shifted = table(seed=1)
    shifted["mean radius"] *= 10
    report = compare(profile_split(table(), "tabular", "label"), shifted)
    assert report["status"] == "critical"
    assert report["critical_columns"] == ["mean radius"] and report["warning_columns"] == []
    column = report["columns"]["mean radius"]
    assert column["psi"] > 5 and column["ks"] > 0.95 and column["ks_pvalue"] < 1e-10
    assert column["breaches"] == {"psi": "critical", "ks": "critical"}
    [line] = drift_lines(report)
    assert line.startswith("column 'mean radius': PSI ") and ">= 0.25 (critical), KS " in line
    assert critical_summary(report).startswith("'mean radius' (PSI ")


def test_warning_between_the_thresholds() -> None:
    frame = table()
    nudged = frame.assign(**{"mean radius": frame["mean radius"] + 1.0})  # a third of a std
    params = DriftParams()
    report = compare(profile_split(frame, "tabular", "label"), nudged, params=params)
    column = report["columns"]["mean radius"]
    assert params.warning.ks <= column["ks"] < params.critical.ks
    assert column["status"] == "warning" and column["breaches"]["ks"] == "warning"
    assert report["status"] == "warning" and report["warning_columns"] == ["mean radius"]


def test_psi_follows_its_formula_on_the_reference_bins() -> None:
    reference = pd.DataFrame({"v": np.arange(100.0), "label": ["a", "b"] * 50})
    profile = profile_split(reference, "tabular", "label", bins=4)
    column = profile["columns"]["v"]
    assert column["edges"] == pytest.approx([24.75, 49.5, 74.25])
    assert column["shares"] == pytest.approx([0.25, 0.25, 0.25, 0.25, 0.0])  # last: missing
    new = pd.DataFrame({"v": [1.0] * 6 + [60.0] * 2 + [np.nan] * 2})
    got = compare(profile, new)["columns"]["v"]["psi"]
    e = np.array([0.25, 0.25, 0.25, 0.25, EPSILON])
    a = np.array([0.6, EPSILON, 0.2, EPSILON, 0.2])
    assert got == pytest.approx(float(np.sum((a - e) * np.log(a / e))))
    assert psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0


def test_ks_agrees_with_scipy() -> None:
    rng = np.random.default_rng(3)
    old, new = rng.normal(0, 1, 4000), rng.normal(0.15, 1.3, 2500)
    profile = profile_split(pd.DataFrame({"v": old, "label": 0}), "tabular", "label")
    column = compare(profile, pd.DataFrame({"v": new}))["columns"]["v"]
    exact = ks_2samp(old, new, method="asymp")
    assert column["ks"] == pytest.approx(exact.statistic, abs=SKETCH_STEP)
    assert column["ks_pvalue"] == pytest.approx(exact.pvalue, rel=0.5)


def test_missing_values_are_a_bin_of_their_own() -> None:
    frame = table()
    gaps = frame.copy()
    gaps.loc[::2, "mean radius"] = np.nan
    gaps.loc[1::4, "mean radius"] = np.inf
    column = compare(profile_split(frame, "tabular", "label"), gaps)["columns"]["mean radius"]
    assert column["null_share"] == pytest.approx(0.75, abs=0.01) and column["reference_null_share"] == 0
    assert column["status"] == "critical" and column["psi"] > 1


def test_a_column_of_numbers_as_text_is_read_as_numbers() -> None:
    frame = table()
    as_text = frame.assign(**{"mean radius": frame["mean radius"].map(str)})
    column = compare(profile_split(frame, "tabular", "label"), as_text)["columns"]["mean radius"]
    assert column["status"] == "ok" and column["psi"] == pytest.approx(0, abs=1e-12)


# ---- categories -----------------------------------------------------------------------------------------


def test_a_new_category_is_counted_and_named() -> None:
    frame = table()
    new = table(seed=1)
    new.loc[: len(new) // 10 - 1, "colour"] = "purple"
    report = compare(profile_split(frame, "tabular", "label"), new)
    column = report["columns"]["colour"]
    assert column["new_category_rate"] == pytest.approx(0.1)
    assert column["new_categories"] == 1 and column["new_category_examples"] == ["purple"]
    assert column["breaches"]["new_category_rate"] == "critical"
    assert report["critical_columns"] == ["colour"]


def test_js_is_scipy_jensen_shannon_over_categories_other_and_missing() -> None:
    old = pd.DataFrame({"c": ["a"] * 50 + ["b"] * 30 + [None] * 20, "label": 0})
    new = pd.DataFrame({"c": ["a"] * 20 + ["b"] * 60 + ["z"] * 10 + [None] * 10})
    column = compare(profile_split(old, "tabular", "label"), new)["columns"]["c"]
    want = jensenshannon([0.5, 0.3, 0.0, 0.2], [0.2, 0.6, 0.1, 0.1], base=2)
    assert column["js"] == pytest.approx(want)
    assert column["new_category_rate"] == pytest.approx(10 / 90)


def test_a_label_read_as_floats_is_the_same_class() -> None:
    """A label column with a gap is read as floats (1.0): the same classes as the integers."""
    old = pd.DataFrame({"x": np.arange(60.0), "label": [0, 1, 1] * 20})
    new = pd.DataFrame({"x": np.arange(60.0), "label": [0.0, 1.0, np.nan] * 20})
    column = compare(profile_split(old, "tabular", "label"), new)["columns"]["label"]
    assert column["new_category_rate"] == 0 and column["null_share"] == pytest.approx(1 / 3)


def test_an_identifier_column_is_not_compared() -> None:
    frame = table().assign(id=lambda f: [f"row-{i}" for i in range(len(f))])
    new = table(seed=1).assign(id=lambda f: [f"new-{i}" for i in range(len(f))])
    report = compare(profile_split(frame, "tabular", "label"), new)
    assert report["columns"]["id"]["kind"] == "unique" and report["columns"]["id"]["status"] == "ok"
    assert report["columns"]["id"]["compared"] is False and report["status"] == "ok"


def test_missing_and_extra_columns_are_reported() -> None:
    frame = table()
    new = frame.drop(columns=["dose mg", "label"]).assign(extra=1)
    report = compare(profile_split(frame, "tabular", "label"), new)
    assert report["missing_columns"] == ["dose mg"] and report["critical_columns"] == ["dose mg"]
    assert report["columns"]["dose mg"]["reasons"] == ["missing from the new data"]
    assert report["extra_columns"] == ["extra"]
    label = report["columns"]["label"]  # unlabelled data (a serving batch) is fine
    assert label["status"] == "ok" and label["compared"] is False
    assert critical_summary(report) == "'dose mg' (missing)"


def test_no_rows_is_an_error() -> None:
    profile = profile_split(table(), "tabular", "label")
    with pytest.raises(ShipyardError, match="no rows"):
        compare(profile, table().iloc[:0])


# ---- sensitive columns ----------------------------------------------------------------------------------


def test_a_sensitive_columns_profile_holds_no_raw_value() -> None:
    rng = np.random.default_rng(5)
    rows = 400
    ssn = [f"SSN-{rng.integers(100, 999)}-{i % 7}" for i in range(rows)]
    salary = np.round(rng.normal(50_000, 9_000, rows), 2)
    frame = pd.DataFrame({"ssn": ssn, "salary": salary, "note": "x", "label": rng.choice(["a", "b"], rows)})
    frame["ssn"] = frame["ssn"].str.slice(0, 9)  # repeats, so it is a category rather than an id
    profile = roundtrip(profile_split(frame, "tabular", "label", sensitive=["ssn", "salary"]))
    text = json.dumps(profile)
    assert "SSN-" not in text and profile["columns"]["ssn"]["hashed"] is True
    assert profile["sensitive_columns"] == ["salary", "ssn"]
    sketch = profile["columns"]["salary"]["sketch"]
    assert salary.min() not in sketch and salary.max() not in sketch
    new = frame.copy()
    new.loc[:99, "ssn"] = "SSN-000-9"
    report = compare(profile, new)
    column = report["columns"]["ssn"]
    assert column["new_category_rate"] == pytest.approx(0.25) and "new_category_examples" not in column
    assert "SSN-" not in json.dumps(report)
    assert compare(profile, frame)["status"] == "ok"


# ---- texts and images -----------------------------------------------------------------------------------

WORDS = ["see", "you", "later", "dinner", "tonight", "thanks", "love", "home", "meeting", "soon", "free"]


def texts(rows: int, seed: int, vocabulary: list[str], length: tuple[int, int] = (5, 12)) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    messages = [" ".join(rng.choice(vocabulary, rng.integers(*length))) for _ in range(rows)]
    return pd.DataFrame({"message": messages, "kind": rng.choice(["spam", "ham"], rows)})


def test_texts_in_a_foreign_vocabulary_raise_the_oov_rate() -> None:
    profile = roundtrip(profile_split(texts(300, 0, WORDS), "text", "kind", text_column="message"))
    column = profile["columns"]["message"]
    assert column["kind"] == "text" and column["length_unit"] == "words"
    assert sorted(column["vocabulary"]) == sorted(WORDS) and column["oov_rate"] == 0
    same = compare(profile, texts(200, 1, WORDS))
    assert same["status"] == "ok" and same["columns"]["message"]["oov_increase"] == 0
    foreign = ["hola", "gracias", "adios", "manana", "noche", "casa", "amor"]
    mixed = compare(profile, texts(200, 2, WORDS + foreign))["columns"]["message"]
    assert mixed["oov_rate"] == pytest.approx(7 / 18, abs=0.05)
    assert mixed["breaches"]["oov_increase"] == "critical" and mixed["status"] == "critical"


def test_the_reference_oov_rate_is_that_of_unseen_texts() -> None:
    """Texts that each carry a unique token: a fresh sample is as out-of-vocabulary as the reference."""
    tagged = texts(300, 0, WORDS).assign(message=lambda f: f["message"] + [f" id{i}" for i in range(300)])
    profile = profile_split(tagged, "text", "kind", text_column="message")
    assert profile["columns"]["message"]["oov_rate"] > 0.05
    fresh = texts(200, 1, WORDS).assign(message=lambda f: f["message"] + [f" nid{i}" for i in range(200)])
    column = compare(profile, fresh)["columns"]["message"]
    assert column["status"] == "ok" and abs(column["oov_increase"]) < 0.05


def test_much_longer_texts_drift_in_length() -> None:
    profile = profile_split(texts(300, 0, WORDS), "text", "kind", text_column="message")
    column = compare(profile, texts(200, 1, WORDS, length=(40, 60)))["columns"]["message"]
    assert column["ks"] == pytest.approx(1.0) and column["breaches"]["psi"] == "critical"


def images(rows: int, seed: int, shift: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    pixels = (rng.integers(0, 120, (rows, 8, 8, 1)) + shift).astype(np.uint8)
    meta = pd.DataFrame(
        {
            "path": [f"c/{seed}-{i}.png" for i in range(rows)],
            "label": rng.choice(["left", "right"], rows),
            "width": 8,
            "height": 8,
            "mode": "L",
            "sha256": [f"{seed}-{i}" for i in range(rows)],
        }
    )
    return meta, pixels


def test_brightened_images_drift_in_pixel_mean() -> None:
    meta, pixels = images(1000, 0)
    profile = roundtrip(profile_split(meta, "image", "label", pixels=pixels))
    assert set(profile["columns"]) == {"label", "width", "height", "mode", "pixel_mean", "pixel_std"}
    assert profile["image"] == {"height": 8, "width": 8, "channels": 1}
    meta, pixels = images(800, 1)
    same = compare(profile, meta, pixels)
    assert same["status"] == "ok" and same["extra_columns"] == []  # path and sha256: not distributions
    meta, pixels = images(800, 2, shift=100)
    report = compare(profile, meta, pixels)
    assert report["critical_columns"] == ["pixel_mean"]
    assert report["columns"]["pixel_mean"]["ks"] == pytest.approx(1.0)
    assert report["columns"]["pixel_std"]["status"] == "ok"


def test_other_image_sizes_drift_in_size() -> None:
    meta, pixels = images(200, 0)
    profile = profile_split(meta, "image", "label", pixels=pixels)
    other = meta.assign(width=[8, 16] * 100)
    column = compare(profile, other, pixels)["columns"]["width"]
    assert column["new_category_rate"] == pytest.approx(0.5) and column["status"] == "critical"


# ---- drift of a file, and the command ---------------------------------------------------------------------


@pytest.fixture
def files(project: Path) -> Path:
    """train.csv's profile as profile.json, a shifted copy and a same-distribution copy; params.yaml."""
    write_json("profile.json", profile_split(table(), "tabular", "label"))
    shifted = table(seed=1)
    shifted["mean radius"] *= 10
    shifted.to_csv("shifted.csv", index=False)
    table(seed=2).to_csv("fresh.csv", index=False)
    Path("params.yaml").write_text("ingest: {target: label}\npromote: {registry: reg}\n", encoding="utf-8")
    return project


def test_drift_of_a_file_against_a_profile(files: Path) -> None:
    params = parse_params({"ingest": {"target": "label"}})
    report = drift_of_file("shifted.csv", params, reference="profile.json")
    assert report["status"] == "critical" and report["critical_columns"] == ["mean radius"]
    assert (report["data"], report["reference"]) == ("shifted.csv", "profile.json")
    assert drift_of_file("fresh.csv", params, reference="profile.json")["status"] == "ok"


def test_drift_of_a_file_against_production(files: Path) -> None:
    from tasks.registry import publish_version, set_production

    params = parse_params({"ingest": {"target": "label"}, "promote": {"registry": "reg"}})
    with pytest.raises(ShipyardError, match="reg: no production model to compare with"):
        drift_of_file("shifted.csv", params)
    set_production("reg", publish_version("reg", [Path("params.yaml")], {"files": {}}))
    with pytest.raises(ShipyardError, match="v0001: the production model has no training profile"):
        drift_of_file("shifted.csv", params)
    set_production("reg", publish_version("reg", [Path("profile.json")], {"profile": "profile.json"}))
    report = drift_of_file("shifted.csv", params)
    assert report["reference"] == "production v0002" and report["critical_columns"] == ["mean radius"]


def test_a_file_that_is_not_a_profile_is_an_error(files: Path) -> None:
    params = parse_params({})
    with pytest.raises(ShipyardError, match="params.yaml: not a readable profile"):
        drift_of_file("fresh.csv", params, reference="params.yaml")
    with pytest.raises(ShipyardError, match="nowhere.json: profile not found"):
        drift_of_file("fresh.csv", params, reference="nowhere.json")


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(drift)
    app.callback()(lambda: None)  # a group, as in `shipyard drift`
    return app


def test_command_exits_1_on_critical_drift_and_names_the_column(files: Path) -> None:
    result = CliRunner().invoke(cli(), ["drift", "--data", "shifted.csv", "--reference", "profile.json"])
    assert result.exit_code == 1, result.output
    assert "column 'mean radius': PSI" in result.stdout and "drift critical" in result.stdout
    assert "colour" in result.stdout  # every column in the table


def test_command_exits_0_without_critical_drift(files: Path) -> None:
    result = CliRunner().invoke(cli(), ["drift", "--data", "fresh.csv", "--reference", "profile.json"])
    assert result.exit_code == 0, result.output
    assert "drift ok" in result.stdout


def test_command_errors_are_one_line(files: Path) -> None:
    result = CliRunner().invoke(cli(), ["drift", "--data", "fresh.csv"])  # registry reg is empty
    assert result.exit_code == 1
    assert result.stderr.startswith("error: reg: no production model") and result.stdout == ""


def test_drift_of_an_image_folder_reads_it_at_the_training_size(project: Path) -> None:
    from PIL import Image

    from tasks.images import read_images
    from tests.project import image_folder

    made = image_folder(project / "photos", per_class=30)
    train = read_images("photos", "label")
    write_json("profile.json", profile_split(train.meta, "image", "label", pixels=train.pixels))
    params = parse_params({"ingest": {"target": "label"}})
    assert drift_of_file("photos", params, reference="profile.json")["status"] == "ok"
    for path in (p for paths in made.values() for p in paths):
        pixels = np.asarray(Image.open(path).convert("L").resize((24, 24)), dtype=np.int16)
        Image.fromarray(np.clip(pixels + 90, 0, 255).astype(np.uint8), "L").save(path.with_suffix(".png"))
        if path.suffix != ".png":
            path.unlink()
    report = drift_of_file("photos", params, reference="profile.json")
    assert set(report["critical_columns"]) >= {"pixel_mean", "width", "height"}
    with pytest.raises(ShipyardError, match="expected a folder of class folders"):
        drift_of_file("profile.json", params, reference="profile.json")


def test_drift_of_a_text_file(project: Path) -> None:
    write_json("profile.json", profile_split(texts(300, 0, WORDS), "text", "kind", text_column="message"))
    texts(100, 1, WORDS).assign(channel="sms").to_csv("batch.csv", index=False)
    report = drift_of_file("batch.csv", parse_params({}), reference="profile.json")
    assert report["status"] == "ok" and report["extra_columns"] == ["channel"]
