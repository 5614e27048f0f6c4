"""The validate stage for the image and text families: inferred contracts, class counts, leakage."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from tasks.config import ValidateParams
from tasks.contract_families import Task, family_checks, infer_family_suite
from tasks.errors import ShipyardError
from tasks.paths import DATA_DOCS_DIR, INFERRED_SUITE, INGEST_REPORT, VALIDATION_RESULTS, split_path
from tasks.validate import read_task, run

TARGET = "label"  # FAST_PARAMS' ingest.target
TEXT = "review"
CLASSES = ("cat", "dog")


def image_frame(split: str, classes: Sequence[Any] = CLASSES, per_class: int = 3) -> pd.DataFrame:
    """Image metadata as ingest writes it: distinct images (sha256 of the path) of two sizes, RGB."""
    rows = [(c, i) for c in classes for i in range(per_class)]
    paths = [f"{c}/{split}-{i}.png" for c, i in rows]
    return pd.DataFrame(
        {
            "path": paths,
            TARGET: [c for c, _ in rows],
            "width": [32 + 8 * (i % 2) for _, i in rows],
            "height": [32] * len(rows),
            "mode": ["RGB"] * len(rows),
            "sha256": [hashlib.sha256(p.encode()).hexdigest() for p in paths],
        }
    )


def text_frame(split: str, classes: Sequence[Any] = CLASSES, per_class: int = 3) -> pd.DataFrame:
    rows = [(c, i) for c in classes for i in range(per_class)]
    return pd.DataFrame({TEXT: [f"a {c} story, {split} #{i}" for c, i in rows], TARGET: [c for c, _ in rows]})


def write_project(task: str, frames: dict[str, pd.DataFrame], **ingest: Any) -> None:
    for name, frame in frames.items():
        path = split_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path)
    INGEST_REPORT.write_text(json.dumps({"target": TARGET, "task": task, **ingest}), encoding="utf-8")


def images(**changed: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {name: changed.get(name, image_frame(name)) for name in ("train", "val", "test")}


def texts(**changed: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {name: changed.get(name, text_frame(name)) for name in ("train", "val", "test")}


def failure(params: Any) -> str:
    """The one-line error of a run that must fail."""
    with pytest.raises(ShipyardError) as err:
        run(params)
    message = str(err.value)
    assert message.startswith("validation failed: ") and "\n" not in message
    return message


def results() -> dict[str, Any]:
    return json.loads(VALIDATION_RESULTS.read_text(encoding="utf-8"))


def test_clean_image_splits_pass_and_the_report_names_the_task(project: Path, make_params: Callable) -> None:
    write_project("image", images())
    report = run(make_params())

    saved = results()
    assert saved["success"] and saved["task"] == "image" and not saved["failures"] and not saved["warnings"]
    kinds = {(e["type"], e["column"]) for e in saved["splits"]["train"]["expectations"]}
    assert ("expect_column_values_to_be_unique", "sha256") in kinds
    assert ("expect_column_values_to_be_in_set", "mode") in kinds
    assert ("shipyard_min_rows_per_class", TARGET) in kinds
    test_checks = [e for e in saved["splits"]["test"]["expectations"] if e.get("source") == "shipyard"]
    assert {e["other_split"] for e in test_checks} == {"train", "val"}
    assert all(e["success"] for e in test_checks)
    assert report["suite"]["source"] == "inferred from the training split"
    assert len(list(DATA_DOCS_DIR.glob("validations/**/*.html"))) >= 3  # Data Docs for every split


def test_clean_text_splits_pass_and_the_report_names_the_text_column(
    project: Path, make_params: Callable
) -> None:
    write_project("text", texts(), text_column=TEXT)
    run(make_params())

    saved = results()
    assert saved["success"] and saved["task"] == "text" and saved["text_column"] == TEXT
    lengths = next(
        e
        for e in saved["splits"]["val"]["expectations"]
        if e["type"] == "expect_column_value_lengths_to_be_between"
    )
    assert (
        lengths["column"] == TEXT
        and lengths["severity"] == "warning"
        and lengths["expected"].startswith("length min 1, max ")
    )


def test_image_label_outside_the_training_set_fails(project: Path, make_params: Callable) -> None:
    write_project("image", images(test=image_frame("test", classes=("cat", "dog", "bird"))))
    message = failure(make_params())
    expected = "split 'test', column 'label', expect_column_values_to_be_in_set (values in ['cat', 'dog'])"
    assert expected in message
    assert "e.g. ['bird', 'bird', 'bird']" in message
    assert results()["splits"]["val"]["success"]


def test_the_same_image_in_train_and_test_fails_naming_both_splits(
    project: Path, make_params: Callable
) -> None:
    train, test = image_frame("train"), image_frame("test")
    test.loc[[0, 4], "sha256"] = train.loc[[1, 2], "sha256"].to_numpy()
    write_project("image", images(train=train, test=test))
    message = failure(make_params())

    assert (
        "split 'test', column 'sha256': 2 image(s) also in split 'train' (duplicates across splits leak "
        "test data), e.g. ['cat/test-0.png', 'dog/test-1.png']" in message
    )
    assert "split 'val'" not in message and "expect_column_values_to_be_unique" not in message
    (leak,) = [e for e in results()["splits"]["test"]["expectations"] if not e["success"]]
    assert leak["type"] == "shipyard_unique_across_splits" and leak["other_split"] == "train"


def test_the_same_image_twice_in_one_split_fails(project: Path, make_params: Callable) -> None:
    val = image_frame("val")
    val.loc[3, "sha256"] = val.loc[0, "sha256"]
    write_project("image", images(val=val))
    message = failure(make_params())
    expected = "split 'val', column 'sha256', expect_column_values_to_be_unique (no duplicates): 2 rows"
    assert expected in message


def test_a_class_with_too_few_training_rows_fails(project: Path, make_params: Callable) -> None:
    train = pd.concat([image_frame("train"), image_frame("train", classes=("bird",), per_class=1)])
    write_project("image", images(train=train))
    message = failure(make_params())
    assert (
        "split 'train', column 'label': 1 class(es) with fewer than 2 training rows "
        "(validate.min_class_rows; fewest: 1), e.g. ['bird']" in message
    )
    (item,) = [e for e in results()["splits"]["train"]["expectations"] if not e["success"]]
    assert item["observed_value"] == {"cat": 3, "dog": 3, "bird": 1} and item["severity"] == "critical"


def test_min_class_rows_and_the_dominant_class_warning() -> None:
    frames = {"train": pd.DataFrame({TARGET: ["cat"] * 200 + ["dog"] * 2})}
    enough, dominant = family_checks(frames, TARGET, Task("image"), ValidateParams())["train"]
    assert enough["success"]  # min_class_rows defaults to 2
    assert not dominant["success"] and dominant["severity"] == "warning"
    assert dominant["message"] == "class 'cat' holds 99.0% of the rows (above 99%)"

    strict, _ = family_checks(frames, TARGET, Task("image"), ValidateParams(min_class_rows=3))["train"]
    assert not strict["success"] and strict["unexpected_values"] == ["dog"]


def test_an_unusual_mode_is_a_warning_only(
    project: Path, make_params: Callable, caplog: pytest.LogCaptureFixture
) -> None:
    val = image_frame("val")
    val.loc[2, "mode"] = "L"
    write_project("image", images(val=val))
    with caplog.at_level(logging.WARNING, logger="shipyard.validate"):
        report = run(make_params())

    assert report["success"] and not report["failures"]
    (line,) = report["warnings"]
    assert "split 'val', column 'mode', expect_column_values_to_be_in_set (values in ['RGB'])" in line
    assert "e.g. ['L']" in line and line in caplog.text


def test_an_empty_text_in_val_fails_naming_split_and_column(project: Path, make_params: Callable) -> None:
    val = text_frame("val")
    val.loc[4, TEXT] = ""
    write_project("text", texts(val=val), text_column=TEXT)
    message = failure(make_params())
    assert (
        f"split 'val', column '{TEXT}', expect_column_values_to_match_regex (non-blank text): "
        "1 blank values (16.7%)" in message
    )
    assert results()["splits"]["train"]["success"] and results()["splits"]["test"]["success"]


def test_max_empty_fraction_loosens_the_blank_text_check() -> None:
    train = text_frame("train")
    params = SimpleNamespace(range_margin=0.5, max_duplicate_fraction=0.05, max_empty_fraction=0.25)
    suite = infer_family_suite(train, TARGET, Task("text", TEXT), params)
    (blank,) = [e for e in suite.expectations if e.expectation_type == "expect_column_values_to_match_regex"]
    assert blank.regex == r"\S" and blank.mostly == pytest.approx(0.75)


def test_the_same_text_in_two_splits_fails(project: Path, make_params: Callable) -> None:
    train, val = text_frame("train"), text_frame("val")
    val.loc[1, TEXT] = train.loc[5, TEXT]
    write_project("text", texts(train=train, val=val), text_column=TEXT)
    message = failure(make_params())
    assert (
        f"split 'val', column '{TEXT}': 1 text(s) also in split 'train' (duplicates across splits leak "
        "val data), e.g. ['a dog story, train #2']" in message
    )


def test_an_owned_image_suite_file_is_used_and_leakage_is_still_checked(
    project: Path, make_params: Callable
) -> None:
    write_project("image", images())
    run(make_params())
    Path("contract").mkdir()
    shutil.copy(INFERRED_SUITE, "contract/suite.json")
    again = run(make_params(validate={"suite": "contract/suite.json"}))
    assert again["success"] and again["suite"]["source"] == "suite file contract/suite.json"
    assert json.loads(INFERRED_SUITE.read_text()) == json.loads(Path("contract/suite.json").read_text())

    train, test = image_frame("train"), image_frame("test")
    test.loc[0, "sha256"] = train.loc[0, "sha256"]
    write_project("image", images(train=train, test=test))
    message = failure(make_params(validate={"suite": "contract/suite.json"}))
    assert "split 'test', column 'sha256': 1 image(s) also in split 'train'" in message


def test_the_task_comes_from_the_ingest_report(project: Path) -> None:
    assert read_task() == Task("tabular")  # no report: a tabular project from before families
    INGEST_REPORT.parent.mkdir(parents=True)
    INGEST_REPORT.write_text(json.dumps({"target": TARGET}), encoding="utf-8")
    assert read_task() == Task("tabular")
    INGEST_REPORT.write_text(json.dumps({"task": "text", "text_column": TEXT}), encoding="utf-8")
    assert read_task() == Task("text", TEXT)
    INGEST_REPORT.write_text(json.dumps({"task": "text"}), encoding="utf-8")
    with pytest.raises(ShipyardError, match=r"data/ingest.json: task 'text' needs 'text_column'"):
        read_task()
    INGEST_REPORT.write_text(json.dumps({"task": "audio"}), encoding="utf-8")
    with pytest.raises(ShipyardError, match=r"data/ingest.json: task must be one of .*got 'audio'"):
        read_task()


def test_image_metadata_without_a_hash_column_names_it(project: Path, make_params: Callable) -> None:
    write_project("image", {name: f.drop(columns=["sha256"]) for name, f in images().items()})
    with pytest.raises(ShipyardError, match=r"image metadata column\(s\) \['sha256'\] not found"):
        run(make_params())
