"""The validate stage on tiny splits: what passes, what stops the run, and what it writes."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tasks.config import ColumnContract, Contract, parse_params
from tasks.contract import build_suite
from tasks.errors import ShipyardError
from tasks.paths import DATA_DOCS_DIR, INFERRED_SUITE, VALIDATION_RESULTS, split_path
from tasks.validate import NUMBERS, failure_message, prepare_frame, run, validate_frames

TARGET = "label"
SIZE = "size μm"


def frame(**overrides: list[Any]) -> pd.DataFrame:
    data: dict[str, list[Any]] = {
        "size μm": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        "colour": ["red", "blue", "red", "green", "blue", "red"],
        TARGET: ["yes", "no", "yes", "no", "yes", "no"],
    }
    data.update(overrides)
    return pd.DataFrame(data)


CONTRACT = Contract(
    columns={
        "size μm": ColumnContract(type="numeric", max_null_fraction=0.2, min=0, max=50),
        "colour": ColumnContract(type="categorical", values=["red", "green", "blue"], critical=False),
        TARGET: ColumnContract(type="categorical"),
    },
    labels=["no", "yes"],
)


def check(**splits: pd.DataFrame) -> dict[str, Any]:
    """Validate frames against CONTRACT without Data Docs (fast)."""
    return validate_frames(splits, build_suite(CONTRACT, TARGET))


def write_splits(
    train: pd.DataFrame, val: pd.DataFrame | None = None, test: pd.DataFrame | None = None
) -> None:
    """Splits as ingest writes them; a split not given is train with sizes shifted (no row in two splits)."""
    for name, part, shift in (("train", train, 0.0), ("val", val, 0.5), ("test", test, 0.25)):
        if part is None:
            part = train.assign(**{SIZE: pd.to_numeric(train[SIZE]) + shift})
        path = split_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        part.to_parquet(path)


def params(**validate: Any):
    return parse_params({"ingest": {"target": TARGET}, "validate": validate})


def test_clean_splits_pass() -> None:
    report = check(train=frame(), val=frame(), test=frame())
    assert report["success"] and not report["failures"] and not report["warnings"]
    assert all(s["success"] and s["rows"] == 6 for s in report["splits"].values())


def test_missing_column_fails_naming_it() -> None:
    report = check(train=frame(), val=frame().drop(columns=["size μm"]))
    assert report["splits"]["train"]["success"]
    message = failure_message(report)
    assert message is not None
    assert "split 'val'" in message and "missing columns ['size μm']" in message
    assert "does not exist" not in message  # the per-column errors it causes are not repeated


def test_non_numeric_value_fails_naming_column_and_value() -> None:
    bad = frame(**{"size μm": ["1.5", "abc", "3", None, "", "6"]})
    message = failure_message(check(train=frame(), test=bad))
    assert message is not None
    assert f"split 'test', column 'size μm', expect_column_values_to_match_regex ({NUMBERS})" in message
    assert "'abc'" in message
    assert "be_between" not in message  # the range check cannot compare 'abc'; the type failure says why


def test_numbers_stored_as_text_are_parsed_for_ranges() -> None:
    text = frame(**{"size μm": ["1.5", " 2 ", "3e1", None, "", "99"]})
    prepared = prepare_frame(text, {"size μm"})
    assert prepared["size μm"].tolist()[:3] == [1.5, 2.0, 30.0]
    assert prepared["size μm"].isna().tolist()[3:5] == [True, True]
    message = failure_message(check(train=frame(), val=text))
    assert message is not None
    assert (
        "column 'size μm', expect_column_values_to_be_between (min 0, max 50): 1 unexpected values" in message
    )
    assert "e.g. [99.0]" in message and "match_regex" not in message


def test_label_outside_the_set_fails() -> None:
    message = failure_message(
        check(train=frame(), val=frame(**{TARGET: ["yes", "no", "maybe", "no", "yes", "no"]}))
    )
    assert message is not None
    assert (
        "split 'val', column 'label', expect_column_values_to_be_in_set (values in ['no', 'yes'])" in message
    )
    assert "e.g. ['maybe']" in message


def test_missing_label_fails() -> None:
    message = failure_message(
        check(train=frame(), val=frame(**{TARGET: ["yes", None, "yes", "no", "yes", "no"]}))
    )
    assert message is not None and "column 'label', expect_column_values_to_not_be_null (no nulls)" in message


def test_null_tolerance() -> None:
    one_null = frame(**{"size μm": [1.0, None, 3.0, 4.0, 5.0, 6.0]})  # 1/6 <= 0.2
    three_nulls = frame(**{"size μm": [1.0, None, None, None, 5.0, 6.0]})  # 3/6 > 0.2
    report = check(train=one_null, val=three_nulls)
    assert report["splits"]["train"]["success"]
    assert report["failures"] == [
        "split 'val', column 'size μm', expect_column_values_to_not_be_null (max null fraction 0.2): "
        "3 null values (50.0%)"
    ]


def test_warning_failures_do_not_stop_the_run() -> None:
    report = check(train=frame(), val=frame(colour=["red", "blue", "purple", "red", "red", "red"]))
    assert report["success"] and failure_message(report) is None
    (line,) = report["warnings"]
    assert "column 'colour', expect_column_values_to_be_in_set" in line and "'purple'" in line


def test_row_count_and_duplicates() -> None:
    contract = CONTRACT.model_copy(update={"min_rows": 5, "max_duplicate_fraction": 0.0})
    duplicated = pd.concat([frame().iloc[:2], frame().iloc[:2]], ignore_index=True)
    report = validate_frames({"val": duplicated}, build_suite(contract, TARGET))
    text = " | ".join(report["failures"])
    assert "expect_table_row_count_to_be_between (min 5): observed 4" in text
    assert "expect_compound_columns_to_be_unique (no duplicates): 4 rows duplicated (100.0%)" in text


def test_run_infers_a_suite_and_writes_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    write_splits(frame())
    with caplog.at_level(logging.INFO, logger="shipyard.validate"):
        report = run(params())

    assert report["success"] and report["suite"]["source"] == "inferred from the training split"
    assert set(report["splits"]) == {"train", "val", "test"}
    assert json.loads(VALIDATION_RESULTS.read_text(encoding="utf-8"))["success"] is True
    assert (DATA_DOCS_DIR / "index.html").exists()
    assert list(DATA_DOCS_DIR.glob("validations/**/*.html"))
    assert "copy it (e.g. to contract/suite.json)" in caplog.text
    # nothing outside reports/validation: no gx/ project, no great_expectations.yml, no temp folders left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "reports"]
    assert sorted(p.name for p in VALIDATION_RESULTS.parent.iterdir()) == [
        "docs",
        "results.json",
        "suite.json",
    ]

    # the inferred suite, copied and pointed at by validate.suite, is used as is
    Path("contract").mkdir()
    shutil.copy(INFERRED_SUITE, "contract/suite.json")
    again = run(params(suite="contract/suite.json"))
    assert again["suite"]["source"] == "suite file contract/suite.json"
    assert again["suite"]["expectations"] == report["suite"]["expectations"]
    assert json.loads(INFERRED_SUITE.read_text()) == json.loads(Path("contract/suite.json").read_text())

    # ... and an edit to it takes effect
    suite = json.loads(Path("contract/suite.json").read_text(encoding="utf-8"))
    for item in suite["expectations"]:
        if item["type"] == "expect_column_values_to_be_in_set" and item["kwargs"]["column"] == TARGET:
            item["kwargs"]["value_set"] = ["yes"]
    Path("contract/suite.json").write_text(json.dumps(suite), encoding="utf-8")
    with pytest.raises(
        ShipyardError, match=r"split 'train', column 'label', expect_column_values_to_be_in_set"
    ):
        run(params(suite="contract/suite.json"))


def test_run_with_a_params_contract_fails_before_training_and_keeps_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_splits(frame(), test=frame(**{SIZE: [1.25, 99.0, 3.25, 120.5, 5.25, 6.25]}))
    contract = CONTRACT.model_dump()
    with pytest.raises(ShipyardError) as err:
        run(params(contract=contract, suite="ignored.json"))

    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(
        "validation failed: split 'test', column 'size μm', "
        "expect_column_values_to_be_between (min 0, max 50): "
        "2 unexpected values, e.g. [99.0, 120.5]"
    )
    results = json.loads(VALIDATION_RESULTS.read_text(encoding="utf-8"))
    assert results["success"] is False and results["suite"]["source"] == "validate.contract in params.yaml"
    assert results["splits"]["train"]["success"] and not results["splits"]["test"]["success"]
    failed = [e for e in results["splits"]["test"]["expectations"] if not e["success"]]
    assert failed == [
        {
            "type": "expect_column_values_to_be_between",
            "column": "size μm",
            "severity": "critical",
            "success": False,
            "expected": "min 0, max 50",
            "element_count": 6,
            "missing_count": 0,
            "unexpected_count": 2,
            "unexpected_percent": pytest.approx(100 / 3),
            "unexpected_values": [99.0, 120.5],
        }
    ]
    assert (DATA_DOCS_DIR / "index.html").exists()


def test_missing_split_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ShipyardError, match=r"data/splits/train.parquet: split not found"):
        run(params())


def test_bad_suite_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_splits(frame())
    with pytest.raises(ShipyardError, match="contract/missing.json: suite file not found"):
        run(params(suite="contract/missing.json"))
    assert not Path("reports").exists()
