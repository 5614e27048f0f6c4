"""Tabular checks GE cannot express: target leakage, the same rows in two splits, duplicates in the source."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tasks.config import parse_params
from tasks.contract_families import Task, family_checks, is_one_to_one, row_hashes
from tasks.errors import ShipyardError
from tasks.paths import INGEST_REPORT, VALIDATION_RESULTS, split_path
from tasks.validate import run

TARGET = "label"


def split_frame(rows: int, offset: float, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "size": np.arange(rows) * 0.5 + offset,
            "colour": rng.choice(["red", "green", "blue"], rows),
            TARGET: [("no", "yes")[i % 2] for i in range(rows)],
        }
    )


def splits(**frames: pd.DataFrame) -> dict[str, pd.DataFrame]:
    base = {"train": split_frame(30, 0.0), "val": split_frame(10, 0.1, 1), "test": split_frame(10, 0.2, 2)}
    return {**base, **frames}


def write(frames: dict[str, pd.DataFrame], ingest: dict[str, Any] | None = None) -> None:
    for name, frame in frames.items():
        split_path(name).parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(split_path(name))
    if ingest is not None:
        INGEST_REPORT.write_text(
            json.dumps({"task": "tabular", "target": TARGET, **ingest}), encoding="utf-8"
        )


def params(**validate: Any):
    return parse_params({"ingest": {"target": TARGET}, "validate": validate})


def with_hint(frame: pd.DataFrame) -> pd.DataFrame:
    """A feature that is the label in disguise."""
    return frame.assign(hint=frame[TARGET].map({"no": "N-7", "yes": "Y-3"}))


def failure(validate: dict[str, Any] | None = None) -> str:
    with pytest.raises(ShipyardError) as err:
        run(params(**(validate or {})))
    message = str(err.value)
    assert message.startswith("validation failed: ") and "\n" not in message
    return message


def results() -> dict[str, Any]:
    return json.loads(VALIDATION_RESULTS.read_text(encoding="utf-8"))


def test_a_feature_that_is_the_label_is_named(project: Path) -> None:
    write({name: with_hint(frame) for name, frame in splits().items()})
    message = failure()
    assert "split 'train': column 'hint' maps one-to-one onto the label 'label': target leakage" in message
    (item,) = [e for e in results()["splits"]["train"]["expectations"] if not e["success"]]
    assert item["type"] == "shipyard_target_leakage" and item["column"] == "hint"
    assert item["severity"] == "critical"


def test_target_leakage_as_a_warning_or_off(project: Path) -> None:
    write({name: with_hint(frame) for name, frame in splits().items()})
    report = run(params(target_leakage="warning"))
    assert report["success"]
    assert report["warnings"] == [
        "split 'train': column 'hint' maps one-to-one onto the label 'label': target leakage"
    ]

    report = run(params(target_leakage="off"))
    kinds = {e["type"] for s in report["splits"].values() for e in s["expectations"]}
    assert report["success"] and not report["warnings"] and "shipyard_target_leakage" not in kinds


def test_one_to_one_needs_enough_rows_and_both_directions() -> None:
    labels = pd.Series([0, 1] * 15)
    assert is_one_to_one(labels * 10 + 5, labels)  # numbers work as well as text
    assert not is_one_to_one((labels * 10)[:19], labels[:19])  # too few rows: chance
    assert not is_one_to_one(pd.Series(np.arange(30.0)), labels)  # each value one label, not vice versa
    assert not is_one_to_one(pd.Series(["a"] * 30), labels)  # constant
    near = (labels * 10).astype(float)
    near[4] = 10.0  # one row disagrees
    assert not is_one_to_one(near, labels)
    with_nulls = (labels * 10).astype(float)
    with_nulls[[1, 2]] = np.nan  # missing values are left out, not counted against
    assert is_one_to_one(with_nulls, labels)
    assert not is_one_to_one(pd.Series([[1]] * 30), labels)  # unhashable values: not comparable


def test_the_same_rows_in_two_splits_fail_naming_both_splits_and_the_count(project: Path) -> None:
    frames = splits()
    test = frames["test"].copy()
    test.loc[[0, 3]] = frames["train"].loc[[4, 9]].to_numpy()
    write({**frames, "test": test})
    message = failure()
    assert (
        "split 'test': 2 row(s) also in split 'train' (rows 0, 3 of test; duplicates across splits leak "
        "test data)" in message
    )
    assert "split 'val'" not in message
    (item,) = [e for e in results()["splits"]["test"]["expectations"] if not e["success"]]
    assert item["other_split"] == "train" and item["unexpected_count"] == 2 and item["rows"] == [0, 3]


def test_rows_hash_by_value_whatever_the_dtype() -> None:
    ints = pd.DataFrame({"a": [1, 2], "b": ["x", None]})
    floats = pd.DataFrame({"a": [1.0, 2.0], "b": ["x", None]})
    assert row_hashes(ints).tolist() == row_hashes(floats).tolist()
    assert row_hashes(ints).nunique() == 2
    frames = {"train": ints, "test": floats.iloc[::-1].reset_index(drop=True)}
    (shared,) = family_checks(frames, "b", Task(), params())["test"]
    assert shared["unexpected_count"] == 2


def test_duplicates_in_the_source_fail_above_the_cap(project: Path) -> None:
    write(splits(), ingest={"rows_read": 500, "duplicates_dropped": 412})
    message = failure()
    assert (
        "source data: 412 of 500 rows (82.4%) in the source are duplicates "
        "(max 5%, validate.max_duplicate_fraction)" in message
    )
    (item,) = results()["source_checks"]
    assert item["type"] == "shipyard_source_duplicates" and not item["success"]

    assert run(params(max_duplicate_fraction=0.9))["success"]
    write(splits(), ingest={"rows_read": 500, "duplicates_dropped": 10})
    assert run(params())["success"]
