"""Quarantine (validate.on_bad_rows): bad rows are set aside with their reasons, the run goes on without
them, every later stage drops them, and too many of them still fail the run."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tasks.config import parse_params
from tasks.errors import ShipyardError
from tasks.families import load_split
from tasks.paths import (
    DATA_DOCS_DIR,
    QUARANTINE_FILE,
    QUARANTINE_ROWS,
    VALIDATION_RESULTS,
    pixels_path,
    split_path,
)
from tasks.validate import run

TARGET = "label"
CONTRACT = {
    "columns": {
        "size": {"type": "numeric", "min": 0, "max": 50},
        "colour": {"type": "categorical", "values": ["red", "green", "blue"], "critical": False},
        TARGET: {"type": "categorical"},
    },
    "labels": ["no", "yes"],
}


def split_frame(rows: int, offset: float) -> pd.DataFrame:
    """Distinct rows (sizes offset per split), sizes stored as text as a CSV with a bad cell would be."""
    return pd.DataFrame(
        {
            "size": [f"{1 + i * 0.5 + offset:g}" for i in range(rows)],
            "colour": [("red", "green", "blue")[i % 3] for i in range(rows)],
            TARGET: [("no", "yes")[i % 2] for i in range(rows)],
        }
    )


def splits(**cells: dict[tuple[int, str], Any]) -> dict[str, pd.DataFrame]:
    """train (40 rows), val and test (20 rows), with the given cells changed per split."""
    frames = {"train": split_frame(40, 0.0), "val": split_frame(20, 0.1), "test": split_frame(20, 0.2)}
    for name, changes in cells.items():
        for (row, column), value in changes.items():
            frames[name].loc[row, column] = value
    return frames


def write(frames: dict[str, pd.DataFrame]) -> None:
    for name, frame in frames.items():
        split_path(name).parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(split_path(name))


def params(**validate: Any):
    return parse_params({"ingest": {"target": TARGET}, "validate": {"contract": CONTRACT, **validate}})


def quarantine(cap: float = 0.1, **validate: Any):
    return params(on_bad_rows="quarantine", max_bad_row_fraction=cap, **validate)


BAD_TRAIN = {(3, "size"): "abc", (5, "size"): "999", (7, TARGET): "maybe"}
BAD_VAL = {(2, "size"): None}


def test_bad_rows_are_quarantined_the_run_goes_on_and_later_stages_drop_them(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(splits(train=BAD_TRAIN, val=BAD_VAL))
    with caplog.at_level(logging.INFO, logger="shipyard.validate"):
        report = run(quarantine())

    assert report["success"] and not report["failures"]
    assert report["quarantine"]["rows"] == {"train": 3, "val": 1, "test": 0}
    assert report["quarantine"]["file"] == str(QUARANTINE_ROWS)
    assert report["splits"]["train"]["rows"] == 37 and report["splits"]["train"]["quarantined"] == 3
    assert json.loads(VALIDATION_RESULTS.read_text())["quarantine"]["rows"]["val"] == 1
    assert json.loads(QUARANTINE_FILE.read_text()) == {"train": [3, 5, 7], "val": [2], "test": []}
    assert "quarantined 3 of 40 rows of train (7.5%) → reports/validation/quarantine.csv" in caplog.text
    assert (DATA_DOCS_DIR / "index.html").exists()

    with QUARANTINE_ROWS.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["split"], r["row"]) for r in rows] == [
        ("train", "3"),
        ("train", "5"),
        ("train", "7"),
        ("val", "2"),
    ]
    reasons = {r["row"]: r["reasons"] for r in rows if r["split"] == "train"}
    assert reasons["3"].startswith("column 'size': expect_column_values_to_match_regex (")  # the type check
    # the range failure is found once the text that made the range check error is set aside
    assert reasons["5"] == "column 'size': expect_column_values_to_be_between (min 0, max 50)"
    assert reasons["7"] == "column 'label': expect_column_values_to_be_in_set (values in ['no', 'yes'])"
    assert rows[0]["size"] == "abc" and rows[2][TARGET] == "maybe"

    train, val = load_split("train", "tabular").frame, load_split("val", "tabular").frame
    assert len(train) == 37 and len(val) == 19
    assert not {"abc", "999"} & set(train["size"]) and "maybe" not in set(train[TARGET])
    assert val["size"].notna().all() and list(train.index) == list(range(37))


def test_load_split_drops_the_same_rows_of_an_image_split_and_its_pixels(project: Path) -> None:
    meta = pd.DataFrame({"path": [f"{i}.png" for i in range(5)], TARGET: ["a", "b", "a", "b", "a"]})
    pixels = np.arange(5, dtype=np.uint8).reshape(5, 1, 1, 1) * np.ones((5, 2, 2, 1), dtype=np.uint8)
    write({"train": meta})
    np.save(pixels_path("train"), pixels)
    QUARANTINE_FILE.write_text(json.dumps({"train": [1, 3], "val": [], "test": []}))

    split = load_split("train", "image")
    assert split.frame["path"].tolist() == ["0.png", "2.png", "4.png"]
    assert split.pixels is not None and split.pixels[:, 0, 0, 0].tolist() == [0, 2, 4]

    QUARANTINE_FILE.write_text(json.dumps({"train": [9]}))
    with pytest.raises(
        ShipyardError, match=r"data/quarantine.json: 'train' must list row positions .*0 to 4"
    ):
        load_split("train", "image")


def test_quarantine_over_the_cap_fails_naming_share_cap_and_file(project: Path) -> None:
    write(splits(train={(3, "size"): "abc", (7, TARGET): "maybe", (8, TARGET): None}))
    with pytest.raises(ShipyardError) as err:
        run(quarantine(cap=0.05))

    message = str(err.value)
    assert (
        "split 'train': 3 of 40 rows (7.5%) break critical row rules, above validate.max_bad_row_fraction "
        "(5%): not quarantined, see reports/validation/quarantine.csv" in message
    )
    assert "expect_column_values_to_be_in_set" in message  # the rules themselves are reported too
    assert QUARANTINE_ROWS.exists()
    results = json.loads(VALIDATION_RESULTS.read_text())
    assert results["success"] is False and results["quarantine"]["rows"]["train"] == 3


def test_table_level_failures_still_fail_under_quarantine(project: Path) -> None:
    frames = splits(train=BAD_TRAIN)
    frames["val"] = frames["val"].drop(columns=["colour"])
    write(frames)
    with pytest.raises(
        ShipyardError, match=r"split 'val', expect_table_columns_to_match_set .*missing columns"
    ):
        run(quarantine())

    frames = splits()
    frames["test"] = pd.concat([frames["test"], frames["test"].iloc[:3]], ignore_index=True)
    write(frames)
    with pytest.raises(ShipyardError, match=r"split 'test', expect_compound_columns_to_be_unique"):
        run(quarantine(max_duplicate_fraction=0.0))


def test_fail_mode_quarantines_nothing(project: Path) -> None:
    write(splits(train=BAD_TRAIN))
    with pytest.raises(
        ShipyardError, match=r"split 'train', column 'size', expect_column_values_to_match_regex"
    ):
        run(params())

    assert json.loads(QUARANTINE_FILE.read_text()) == {"train": [], "val": [], "test": []}
    assert not QUARANTINE_ROWS.exists()
    results = json.loads(VALIDATION_RESULTS.read_text())
    assert results["quarantine"]["policy"] == "fail" and not any(results["quarantine"]["rows"].values())


def test_a_clean_run_leaves_no_stale_quarantine(project: Path) -> None:
    write(splits(train=BAD_TRAIN))
    run(quarantine())
    assert QUARANTINE_ROWS.exists()

    write(splits())
    report = run(quarantine())
    assert report["quarantine"]["file"] is None and not QUARANTINE_ROWS.exists()
    assert json.loads(QUARANTINE_FILE.read_text()) == {"train": [], "val": [], "test": []}
    assert len(load_split("train", "tabular")) == 40
