"""The data contract: inference from a training split, the GE suite built from it, the suite file format."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tasks.config import ColumnContract, Contract, ValidateParams
from tasks.contract import (
    NUMBER_REGEX,
    build_suite,
    infer_contract,
    load_suite,
    numeric_columns,
    severity_of,
    suite_to_dict,
)
from tasks.errors import ShipyardError


@pytest.fixture
def train() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "size μm": [1.0, 2.0, 3.0, None, 5.0],
            "delta": [-1.0, 0.0, 1.0, 2.0, 3.0],
            "colour": ["red", "blue", "red", "green", None],
            "7": ["1.5", "2.5", "3.5", "4.5", "5.5"],
            "label": [1, 0, 1, 0, 1],
        }
    )


def test_infer_contract_kinds_ranges_nulls_and_labels(train: pd.DataFrame) -> None:
    params = ValidateParams(range_margin=0.5, null_margin=0.05, max_duplicate_fraction=0.1)
    contract = infer_contract(train, "label", params)

    assert list(contract.columns) == list(train.columns)
    size = contract.columns["size μm"]
    assert size.type == "numeric"
    assert size.min == 0.0  # 1 - 0.5 * 4 would be negative; all training values are >= 0
    assert size.max == pytest.approx(7.0)
    assert size.max_null_fraction == pytest.approx(0.2 + 0.05)
    delta = contract.columns["delta"]
    assert (delta.min, delta.max) == (pytest.approx(-3.0), pytest.approx(5.0))
    assert contract.columns["7"].type == "numeric"  # numbers stored as text, as features.column_kind says
    assert contract.columns["7"].min == 0.0
    colour = contract.columns["colour"]
    assert colour.type == "categorical" and colour.values is None  # unseen categories are legitimate
    assert contract.columns["label"].max_null_fraction == 0.0
    assert contract.labels == [0, 1] and all(type(v) is int for v in contract.labels)
    assert contract.min_rows == 1 and contract.max_rows is None
    assert contract.max_duplicate_fraction == 0.1


def test_infer_contract_string_and_bool_labels() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": ["b", "a", "b"], "z": [True, False, True]})
    assert infer_contract(frame, "y", ValidateParams()).labels == ["a", "b"]
    contract = infer_contract(frame, "z", ValidateParams())
    assert contract.labels == [False, True]
    assert contract.columns["z"].type == "categorical"


def test_infer_contract_names_a_missing_label_column(train: pd.DataFrame) -> None:
    with pytest.raises(ShipyardError, match="'target'"):
        infer_contract(train, "target", ValidateParams())


def test_constant_column_gets_a_nonzero_range() -> None:
    frame = pd.DataFrame({"c": [4.0, 4.0], "y": [0, 1]})
    rules = infer_contract(frame, "y", ValidateParams(range_margin=0.5)).columns["c"]
    assert rules.min < 4.0 < rules.max


def _by_type(suite) -> dict[str, list]:
    out: dict[str, list] = {}
    for expectation in suite.expectations:
        config = expectation.configuration
        out.setdefault(config.type, []).append(config)
    return out


def test_build_suite_covers_the_contract() -> None:
    contract = Contract(
        columns={
            "a": ColumnContract(type="numeric", max_null_fraction=0.1, min=0, max=10),
            "b": ColumnContract(type="categorical", values=["x", "y"], critical=False),
            "y": ColumnContract(type="categorical"),
        },
        labels=["no", "yes"],
        min_rows=2,
        max_rows=100,
        max_duplicate_fraction=0.05,
    )
    kinds = _by_type(build_suite(contract, "y"))

    (columns,) = kinds["expect_table_columns_to_match_set"]
    assert columns.kwargs["column_set"] == ["a", "b", "y"] and columns.kwargs.get("exact_match", True) is True
    (rows,) = kinds["expect_table_row_count_to_be_between"]
    assert (rows.kwargs["min_value"], rows.kwargs["max_value"]) == (2, 100)
    (dups,) = kinds["expect_compound_columns_to_be_unique"]
    assert dups.kwargs["mostly"] == pytest.approx(0.95)
    not_null = {c.kwargs["column"]: c for c in kinds["expect_column_values_to_not_be_null"]}
    assert not_null["a"].kwargs["mostly"] == pytest.approx(0.9)
    assert not_null["b"].kwargs.get("mostly") is None  # max_null_fraction 0: strict
    assert not_null["y"].kwargs.get("mostly") is None  # the label is never missing
    (number,) = kinds["expect_column_values_to_match_regex"]
    assert number.kwargs == {"column": "a", "regex": NUMBER_REGEX}
    (between,) = kinds["expect_column_values_to_be_between"]
    assert (between.kwargs["min_value"], between.kwargs["max_value"]) == (0, 10)
    in_set = {c.kwargs["column"]: c for c in kinds["expect_column_values_to_be_in_set"]}
    assert in_set["y"].kwargs["value_set"] == ["no", "yes"]
    assert in_set["b"].kwargs["value_set"] == ["x", "y"]
    assert severity_of(in_set["b"]) == "warning"  # column b is not critical
    assert severity_of(not_null["b"]) == "warning"
    assert severity_of(in_set["y"]) == "critical"
    assert severity_of(columns) == "critical"


def test_range_severity_overrides_only_ranges() -> None:
    contract = Contract(
        columns={"a": ColumnContract(type="numeric", min=0, max=1), "y": ColumnContract(type="numeric")}
    )
    kinds = _by_type(build_suite(contract, "y", range_severity="warning"))
    assert severity_of(kinds["expect_column_values_to_be_between"][0]) == "warning"
    assert severity_of(kinds["expect_column_values_to_match_regex"][0]) == "critical"


def test_number_regex_accepts_what_pandas_parses() -> None:
    import re

    pattern = re.compile(NUMBER_REGEX)
    for text in ["1", "-2.5", " 3e-05 ", "1E+20", ".5", "7.", "inf", "-Infinity", str(1e-7)]:
        assert pattern.search(text), text
        assert not math.isnan(float(pd.to_numeric(text)))
    for text in ["abc", "", "1,5", "nan", "True", "1 2", "0x1F"]:
        assert not pattern.search(text), text


def test_suite_file_round_trip(tmp_path: Path, train: pd.DataFrame) -> None:
    suite = build_suite(infer_contract(train, "label", ValidateParams()), "label")
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(suite_to_dict(suite)), encoding="utf-8")

    loaded = load_suite(path)
    assert suite_to_dict(loaded) == suite_to_dict(suite)
    assert numeric_columns(loaded) == {"size μm", "delta", "7", "label"} - {"label"}
    assert "id" not in json.loads(path.read_text())["expectations"][0]


def test_load_suite_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ShipyardError, match="nowhere.json: suite file not found"):
        load_suite(tmp_path / "nowhere.json")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json", encoding="utf-8")
    with pytest.raises(ShipyardError, match="bad.json: not a readable suite JSON"):
        load_suite(bad_json)
    not_suite = tmp_path / "list.json"
    not_suite.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ShipyardError, match="list.json: expected a GE suite"):
        load_suite(not_suite)
    unknown = tmp_path / "unknown.json"
    unknown.write_text(
        json.dumps({"expectations": [{"type": "expect_magic", "kwargs": {}}]}), encoding="utf-8"
    )
    with pytest.raises(ShipyardError, match=r"unknown.json: expectation 1 \(expect_magic\)"):
        load_suite(unknown)
    severity = tmp_path / "severity.json"
    item = {"type": "expect_column_to_exist", "kwargs": {"column": "a"}, "meta": {"severity": "fatal"}}
    severity.write_text(json.dumps({"expectations": [item]}), encoding="utf-8")
    with pytest.raises(ShipyardError, match="severity.json: expectation 1.*severity must be one of"):
        load_suite(severity)


def test_modules_import_without_great_expectations() -> None:
    code = (
        "import sys; import tasks.contract, tasks.validate; "
        "assert 'great_expectations' not in sys.modules, 'imported at module level'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
