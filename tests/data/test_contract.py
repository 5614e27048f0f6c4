"""The data contract: inference from a training split, the GE suite built from it, the suite file format."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.config import ColumnContract, Contract, ValidateParams
from tasks.contract import (
    NUMBER_REGEX,
    InferredContract,
    build_suite,
    clearly_varies,
    infer_contract,
    infer_suite,
    json_value,
    load_suite,
    numeric_columns,
    severity_of,
    suite_settings,
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
    assert contract.rows == 5 and contract.domains == []


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


def reference(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """A reference table: a float, a sparse flag, a few-valued category, a high-cardinality id, a label."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "x": rng.normal(10, 2, n),
            "flag": (np.arange(n) % 50 == 0).astype(int),  # 2% ones: a small batch may be all zeros
            "tier": rng.choice(["gold", "silver", "bronze"], n),
            "account": [f"acct-{i:05d}" for i in range(n)],
            "y": rng.choice(["no", "yes"], n),
        }
    )


def test_infer_contract_domains_varying_columns_and_rows() -> None:
    frame = reference()
    contract = infer_contract(frame, "y", ValidateParams())
    assert isinstance(contract, InferredContract) and contract.rows == 400
    assert contract.domains == ["tier"]  # few values; 'account' has one per row: no domain
    assert contract.columns["tier"].values == ["bronze", "gold", "silver"]
    assert contract.columns["account"].values is None
    assert set(contract.varying) == {"x", "tier", "account", "y"}  # 'flag' could be constant in 40 rows


def test_clearly_varies_weighs_the_batch_size() -> None:
    sparse = pd.Series([1] + [0] * 49)
    assert not clearly_varies(sparse, 20)
    assert clearly_varies(pd.Series([0, 1] * 25), 20)
    assert not clearly_varies(pd.Series([3.0] * 10 + [None] * 10), 100)  # one value: constant already


def test_sensitive_columns_get_no_rules_from_their_values() -> None:
    frame = reference()
    frame["salary"] = np.linspace(30_000, 90_000, len(frame))
    params = ValidateParams(sensitive_columns=["salary"])
    contract = infer_contract(frame, "y", params, sensitive=["tier"])
    assert contract.columns["salary"].min is None and contract.columns["salary"].max is None
    assert contract.columns["tier"].values is None and "tier" not in contract.domains
    suite = build_suite(contract, "y")
    text = json.dumps(suite_to_dict(suite))
    assert "gold" not in text and "89" not in text.split('"salary"')[-1][:200]
    assert suite_settings(suite)["sensitive_columns"] == ["salary", "tier"]


def test_inferred_suite_severities_and_settings() -> None:
    frame = reference()
    pipeline = _by_type(
        build_suite(infer_contract(frame, "y", ValidateParams()), "y", range_severity="warning")
    )
    owned = _by_type(infer_suite(frame, "y", ValidateParams(), strict=True))
    for kinds, ranges in ((pipeline, "warning"), (owned, "critical")):
        assert {severity_of(c) for c in kinds["expect_column_values_to_be_between"]} == {ranges}
        in_set = {c.kwargs["column"]: severity_of(c) for c in kinds["expect_column_values_to_be_in_set"]}
        assert in_set == {"tier": "warning", "y": "critical"}  # a new category is only reported
        varying = kinds["expect_column_unique_value_count_to_be_between"]
        assert {c.kwargs["column"] for c in varying} == {"x", "tier", "account", "y"}
        assert all(c.kwargs["min_value"] == 2 and severity_of(c) == "critical" for c in varying)
        rows = {(c.kwargs["min_value"], c.kwargs.get("max_value")): severity_of(c) for c in kinds[ROW_COUNT]}
        assert rows == {(1, None): "critical", (40, 4000): "warning"}
    suite = infer_suite(frame, "y", ValidateParams())
    assert suite_settings(suite) == {
        "target": "y",
        "task": "tabular",
        "text_column": None,
        "sensitive_columns": [],
        "rows": 400,
    }


def test_infer_without_a_label_has_no_label_rules() -> None:
    frame = reference().drop(columns="y")
    kinds = _by_type(infer_suite(frame, None, ValidateParams()))
    assert [c.kwargs["column"] for c in kinds["expect_column_values_to_be_in_set"]] == ["tier"]
    assert suite_settings(infer_suite(frame, None, ValidateParams()))["target"] is None


def test_infer_suite_for_text_uses_the_family_suite() -> None:
    texts = [f"message number {i} says something different each time" for i in range(30)]
    frame = pd.DataFrame({"body": texts, "label": ["a", "b", "c"] * 10})
    suite = infer_suite(frame, "label", ValidateParams(), text_column="body")
    assert suite_settings(suite)["task"] == "text" and suite_settings(suite)["text_column"] == "body"
    assert "expect_column_value_lengths_to_be_between" in _by_type(suite)
    with pytest.raises(ShipyardError, match="--target"):
        infer_suite(frame, None, ValidateParams(), text_column="body")


def test_number_check_is_answered_by_dtype_with_the_same_results() -> None:
    from tasks.validate import validate_frames

    contract = Contract(
        columns={"a": ColumnContract(type="numeric"), "b": ColumnContract(type="numeric")}, labels=None
    )
    suite = build_suite(contract, None)
    values = [1.5, math.inf, None, -math.inf, 2.0]
    by_dtype = pd.DataFrame({"a": values, "b": [1, 2, 3, 4, 5]})
    as_text = pd.DataFrame({"a": [None if v is None else str(v) for v in values], "b": list("12345")})
    results = []
    for frame in (by_dtype, as_text):
        items = validate_frames({"s": frame}, suite)["splits"]["s"]["expectations"]
        regex = {i["column"]: i for i in items if i["type"] == "expect_column_values_to_match_regex"}
        results.append(
            {c: (i["success"], i["unexpected_count"], i["unexpected_values"]) for c, i in regex.items()}
        )
    assert results[0] == results[1]
    assert results[0]["a"] == (False, 2, ["inf", "-inf"]) and results[0]["b"] == (True, 0, [])
    from great_expectations.expectations.registry import _registered_metrics

    condition = _registered_metrics["column_values.match_regex.condition"]["providers"]
    assert condition["PandasExecutionEngine"][0].__name__ == "ColumnValuesMatchRegexByDtype"


def test_json_value_writes_infinity_as_text() -> None:
    assert json_value([math.inf, -math.inf, math.nan, 1.5]) == ["inf", "-inf", None, 1.5]


ROW_COUNT = "expect_table_row_count_to_be_between"


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


def test_number_regex_accepts_finite_numbers_as_pandas_parses_them() -> None:
    import re

    pattern = re.compile(NUMBER_REGEX)
    for text in ["1", "-2.5", " 3e-05 ", "1E+20", ".5", "7.", str(1e-7), str(-1.5e300)]:
        assert pattern.search(text), text
        assert math.isfinite(float(pd.to_numeric(text)))
    for text in ["abc", "", "1,5", "nan", "True", "1 2", "0x1F", "inf", "-inf", "Infinity", str(-math.inf)]:
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
